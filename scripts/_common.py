"""Argument helpers shared by the subcommands."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from utils.config import load_config
from utils.schema import ExperimentConfig
from utils.training import NonFiniteLossError, read_summary


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


def load_registries() -> None:
    """Imports the registries of methods, transforms and losses, which declare their names to the config schema
    (``utils.schema.register_choices``), so a config names a wrong one before anything runs."""
    # imported here, not at the top: loading every method, network and transform takes about 3.7 s, which only the
    # commands that read a config should pay (make-data, make-masks, prepare-data do not)
    import reconstruction.methods  # noqa: F401


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    load_registries()
    return load_config(ExperimentConfig, args.config, args.overrides)


def run_training(command: str, train: Callable[[], Path], config: str, weights_label: str) -> int:
    """Runs ``train()`` (returns the run folder) for the CLI ``command``: exit 3 on a non-finite loss, 4 on an OS
    error (disk full, ...: the last checkpoint is intact), 0 with a resume hint after SIGTERM/SIGINT."""
    log = logging.getLogger(f"scripts.{command.replace('-', '_')}")
    try:
        run_dir = train()
    except NonFiniteLossError as err:
        print(f"ssfl-recon {command}: error: {err}", file=sys.stderr)
        return 3
    except FileNotFoundError:
        raise
    except OSError as err:  # disk full, folder gone, ...: the last checkpoint is intact (atomic writes)
        print(f"ssfl-recon {command}: error: {err}", file=sys.stderr)
        return 4
    stopped = read_summary(run_dir).get("stopped", "")
    if stopped.startswith("signal"):  # SIGTERM/SIGINT: checkpoint written, a clean exit
        log.info("stopped by %s after a checkpoint; continue with: ssfl-recon %s --config %s --resume %s",
                 stopped.split()[-1], command, config, run_dir)
        return 0
    log.info("%s: %s", weights_label, run_dir / "model.weights.h5")
    return 0
