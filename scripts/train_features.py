"""``ssfl-recon train-features``: stage-1 self-supervised feature learning (VICReg or contrastive)."""
from __future__ import annotations

import argparse

from feature_learning.train import train_features
from scripts._common import add_config_arguments, config_from_args, run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue a run from its last intact checkpoint (weights, optimizer state, exact data "
                             "position); a run killed at any point loses at most train.checkpoint_every_steps steps")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    return run_training("train-features", lambda: train_features(cfg, resume=args.resume), args.config, "FE weights")
