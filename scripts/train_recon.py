"""``ssfl-recon train-recon``: stage-2 feature-assisted self-supervised reconstruction."""
from __future__ import annotations

import argparse

from reconstruction.train import train_recon
from scripts._common import add_config_arguments, config_from_args, run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue a run from its last intact checkpoint (weights, optimizer state, exact data "
                             "position); a run killed at any point loses at most train.checkpoint_every_steps steps")
    parser.add_argument("--pretrained-fe", default=None, metavar="PATH",
                        help="FE weights (stage-1 run folder, .weights.h5, or original TF checkpoint such as "
                             "weights001.tf); overrides train.pretrained_fe")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.pretrained_fe is not None:
        cfg.train.pretrained_fe = args.pretrained_fe
    return run_training("train-recon", lambda: train_recon(cfg, resume=args.resume), args.config, "SSFL-Recon weights")
