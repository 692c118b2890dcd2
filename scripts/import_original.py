"""``ssfl-recon import-original``: convert an original TF checkpoint into our Keras weights file."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from feature_learning.model import FeatureNet
from reconstruction.model import SSFLRecon
from utils.checkpoint_import import assign_from_checkpoint
from utils.io import atomic_write_text
from utils.training import save_weights_atomic

log = logging.getLogger(__name__)
MODELS = ("fe-vicreg", "fe-contrastive", "ssfl-recon")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="original checkpoint: prefix (weights001.tf), its .index file, or a folder with a "
                             "'checkpoint' file")
    parser.add_argument("--model", required=True, choices=MODELS,
                        help="which original model the checkpoint holds")
    parser.add_argument("--num-iter", type=int, default=2, help="unrolled iterations of the original model")
    parser.add_argument("--feature-method", choices=("vicreg", "contrastive"), default="vicreg",
                        help="for --model ssfl-recon: the FE type inside the checkpoint")
    parser.add_argument("--out", required=True, help="output Keras weights file (must end with .weights.h5)")
    parser.add_argument("--report", default=None,
                        help="optional JSON file listing restored / not restored / unused variable names")


def run(args: argparse.Namespace) -> int:
    if not args.out.endswith(".weights.h5"):
        raise ValueError(f"--out {args.out!r}: expected a file name ending with .weights.h5")
    if args.model == "ssfl-recon":
        model = SSFLRecon(args.num_iter, args.feature_method)
        model.build_all()
        variables = model.original_variables()
        required = [n for n in variables if not n.startswith("feature_extractor/")]
        required += ["feature_extractor/" + n for n in model.feature_extractor.variables_used_for_features()]
    else:
        model = FeatureNet(args.num_iter, args.model.split("-", 1)[1])
        model.build_all()
        variables = model.original_variables()
        required = model.variables_used_for_features()
    report = assign_from_checkpoint(variables, args.checkpoint, required=required)
    save_weights_atomic(model, args.out)
    log.info("%s", report.summary())
    for title, names in (("not restored (kept at initialisation)", report.not_restored),
                         ("unused checkpoint values", report.unused)):
        if names:
            log.info("%s: %s", title, ", ".join(names))
    if args.report:
        atomic_write_text(args.report, json.dumps({"restored": report.restored, "not_restored":
                                                    report.not_restored, "unused": report.unused}, indent=1))
    log.info("wrote %s", Path(args.out))
    return 0
