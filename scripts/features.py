"""``ssfl-recon features``: FE-Net features (and the FE's output image) for one case."""
from __future__ import annotations

import argparse
import logging

import numpy as np

from data_loader.cases import load_case
from feature_learning.model import FeatureNet
from reconstruction.pretrained import load_feature_weights
from utils.io import atomic_savez

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="FE weights: our .weights.h5, a stage-1 run folder, or an original TF checkpoint")
    parser.add_argument("--method", choices=("vicreg", "contrastive"), default="vicreg", help="FE type")
    parser.add_argument("--num-iter", type=int, default=2, help="unrolled iterations of the FE-Net")
    parser.add_argument("--input", required=True,
                        help="case .npz with x (zero-filled image, (B,T,X,Y,1)), y (k-space), mask, smaps")
    parser.add_argument("--out", required=True, help="output .npz with feature_0..feature_{n-1} and x_out")


def run(args: argparse.Namespace) -> int:
    case = load_case(args.input)
    model = FeatureNet(args.num_iter, args.method)
    model.build_all()
    load_feature_weights(model, args.weights)
    out = model(case)
    atomic_savez(args.out, **{k: np.asarray(v) for k, v in out.items()})
    log.info("wrote %s (%s)", args.out, ", ".join(f"{k} {tuple(v.shape)}" for k, v in out.items()))
    return 0
