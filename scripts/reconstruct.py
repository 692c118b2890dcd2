"""``ssfl-recon reconstruct``: run a trained SSFL-Recon model on one case."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import h5py
import numpy as np

from data_loader.cases import load_case
from evaluation.figures import save_cine_gif, save_comparison_panel
from reconstruction.model import SSFLRecon
from utils.config import load_config
from utils.io import atomic_path, atomic_savez
from utils.schema import ExperimentConfig
from utils.weights import load_weights

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="SSFL-Recon weights: a stage-2 run folder, our .weights.h5, or an original "
                             "SSFL_Recon TF checkpoint")
    parser.add_argument("--feature-method", choices=("vicreg", "contrastive"), default=None,
                        help="FE type (default: from the run's config.yaml, else vicreg)")
    parser.add_argument("--num-iter", type=int, default=None,
                        help="unrolled iterations (default: from the run's config.yaml, else 2)")
    parser.add_argument("--input", required=True,
                        help=".npz with y, mask, smaps (optional x); our .h5 layout; or a CMRxRecon .mat")
    parser.add_argument("--out", required=True, help="output .npz (key 'recon', complex (B,T,X,Y,1)) or .h5")
    parser.add_argument("--png", default=None, help="optional PNG preview (frame 0 and an x-t profile)")
    parser.add_argument("--gif", default=None, help="optional animated GIF of the reconstructed cine")


def load_recon_model(weights: str, feature_method: str | None = None, num_iter: int | None = None):
    """Builds SSFL-Recon and loads weights from a run folder, a .weights.h5 file or an original checkpoint."""

    path = Path(weights)
    unet = None
    if path.is_dir() and (path / "config.yaml").is_file():
        cfg = load_config(ExperimentConfig, path / "config.yaml")
        feature_method = feature_method or cfg.model.feature_method
        num_iter = num_iter or cfg.model.num_iter
        unet = cfg.model.unet_kwargs()
    model = SSFLRecon(num_iter or 2, feature_method or "vicreg", unet=unet)
    model.build_all()
    load_weights(model, path, f"--weights (SSFL-Recon, num_iter={model.num_iter}, FE={model.feature_method})",
                 optional_prefixes=("feature_extractor/",))
    return model


def run(args: argparse.Namespace) -> int:
    model = load_recon_model(args.weights, args.feature_method, args.num_iter)
    case = load_case(args.input)
    recon = np.asarray(model(case))
    out = Path(args.out)
    if out.suffix == ".npz":
        atomic_savez(out, recon=recon)
    elif out.suffix in (".h5", ".hdf5"):
        with atomic_path(out) as tmp:
            with h5py.File(tmp, "w") as fh:
                fh.create_dataset("recon", data=recon)
    else:
        raise ValueError(f"--out {args.out!r}: expected a .npz or .h5 file name")
    zero_filled = np.asarray(case["x"])
    if args.png:
        save_comparison_panel(args.png, zero_filled[0], zero_filled[0], recon[0],
                              title=f"SSFL-Recon of {Path(args.input).name} (left: zero-filled input)")
    if args.gif:
        save_cine_gif(args.gif, recon[0])
    log.info("wrote %s %s", out, recon.shape)
    return 0
