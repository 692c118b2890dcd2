"""``ssfl-recon train-features``: stage-1 self-supervised feature learning (VICReg or contrastive)."""
from __future__ import annotations

import argparse
import logging

from scripts._common import add_config_arguments, config_from_args

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue a run from its last checkpoint (weights, optimizer state, epoch)")


def run(args: argparse.Namespace) -> int:
    from feature_learning.train import train_features

    cfg = config_from_args(args)
    run_dir = train_features(cfg, resume=args.resume)
    log.info("FE weights: %s", run_dir / "model.weights.h5")
    return 0
