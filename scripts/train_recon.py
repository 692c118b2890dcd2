"""``ssfl-recon train-recon``: stage-2 feature-assisted self-supervised reconstruction."""
from __future__ import annotations

import argparse
import logging
import sys

from scripts._common import add_config_arguments, config_from_args

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue a run from its last intact checkpoint (weights, optimizer state, exact data "
                             "position); a run killed at any point loses at most train.checkpoint_every_steps steps")
    parser.add_argument("--pretrained-fe", default=None, metavar="PATH",
                        help="FE weights (stage-1 run folder, .weights.h5, or original TF checkpoint such as "
                             "weights001.tf); overrides train.pretrained_fe")


def run(args: argparse.Namespace) -> int:
    from reconstruction.train import train_recon
    from utils.training import NonFiniteLossError, read_summary

    cfg = config_from_args(args)
    if args.pretrained_fe is not None:
        cfg.train.pretrained_fe = args.pretrained_fe
    try:
        run_dir = train_recon(cfg, resume=args.resume)
    except NonFiniteLossError as err:
        print(f"ssfl-recon train-recon: error: {err}", file=sys.stderr)
        return 3
    except FileNotFoundError:
        raise
    except OSError as err:  # disk full, folder gone, ...: the last checkpoint is intact (atomic writes)
        print(f"ssfl-recon train-recon: error: {err}", file=sys.stderr)
        return 4
    stopped = read_summary(run_dir).get("stopped", "")
    if stopped.startswith("signal"):  # SIGTERM/SIGINT: checkpoint written, a clean exit
        log.info("stopped by %s after a checkpoint; continue with: ssfl-recon train-recon --config %s --resume %s",
                 stopped.split()[-1], args.config, run_dir)
        return 0
    log.info("SSFL-Recon weights: %s", run_dir / "model.weights.h5")
    return 0
