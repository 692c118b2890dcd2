"""Argument helpers shared by the subcommands."""
from __future__ import annotations

import argparse

from utils.config import load_config
from utils.schema import ExperimentConfig


def positive_ints(text: str, count: int) -> tuple[int, ...] | None:
    """``count`` comma-separated positive integers (``"12,96,72,8"``), or None when ``text`` is not that."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        return None
    return values if len(values) == count and min(values) >= 1 else None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (see configs/ and the README's keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable; values are YAML)")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(ExperimentConfig, args.config, args.overrides)
