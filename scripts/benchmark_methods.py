"""``ssfl-recon benchmark-methods``: train every method with an equal budget and compare them on held-out subjects."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from reconstruction.benchmark_methods import load_benchmark_config, run_benchmark
from scripts._common import add_config_arguments

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --config: stage-2 sections shared by all methods + a benchmark: section, e.g. configs/benchmark.yaml
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: train.run_dir of the config)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch Keras progress lines")


def run(args: argparse.Namespace) -> int:
    cfg = load_benchmark_config(args.config, args.overrides)
    out = Path(args.out or cfg.train.run_dir)
    run_benchmark(cfg, out, verbose=0 if args.quiet else 2)
    log.info("table: %s, report: %s", out / "table.md", out / "report.md")
    return 0
