"""The ``ssfl-recon`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module under ``scripts/`` with two functions:
``add_arguments(parser)`` (every option with a help text) and ``run(args) -> int``. Modules are imported only when
their subcommand runs, so ``ssfl-recon --help`` stays fast and does not import TensorFlow; before a subcommand's
module is imported, TensorFlow is imported quietly (:func:`utils.machine.import_tensorflow`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from utils.machine import import_tensorflow

# subcommand -> (module under scripts/, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-data": ("make_data", "generate the built-in synthetic multi-coil cardiac cine data set"),
    "prepare-data": ("prepare_data", "convert real k-space (CMRxRecon 2023/2024 .mat, OCMR ISMRMRD .h5, original "
                                     "layout) into the HDF5 layout with split CSVs by patient"),
    "make-masks": ("make_masks", "generate k-t sampling masks (VISTA, equispaced, variable-density random, "
                                 "Gaussian) in the original text format"),
    "train-features": ("train_features", "stage 1: self-supervised feature learning (VICReg / contrastive)"),
    "train-recon": ("train_recon", "stage 2: feature-assisted self-supervised reconstruction (SSFL-Recon)"),
    "import-original": ("import_original", "convert an original SSFL-Recon TF checkpoint to Keras weights"),
    "features": ("features", "compute FE-Net features of one case"),
    "reconstruct": ("reconstruct", "reconstruct one case with a trained SSFL-Recon model"),
    "evaluate": ("evaluate", "score a trained model, zero-filling and CG-SENSE on a data split at several R"),
    "benchmark": ("benchmark", "time and measure the memory of a training or inference step (FE-Net, SSFL-Recon)"),
    "benchmark-methods": ("benchmark_methods", "train SSFL-Recon and the baselines with an equal budget and compare"),
    "demo": ("demo", "the main job: synthetic data, stage 1, stage 2, evaluation and report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssfl-recon",
        description="Self-supervised feature learning and reconstruction of undersampled cardiac cine MRI.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    # Lazy on purpose: the command modules import TensorFlow, Keras and the models (measured 3.7 s for all of them
    # against 0.06 s for this module), which `ssfl-recon --help` and a mistyped command should not wait for.
    module = importlib.import_module(f"scripts.{module_name}")
    parser = argparse.ArgumentParser(prog=f"ssfl-recon {name}", description=help_text)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    # Split at the first non-option word: that is the subcommand, the rest belongs to it.
    command_index = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command_index is None:
        top.parse_args(argv)
        top.print_help()
        return 0 if any(a in ("-h", "--help") for a in argv) else 2
    name = argv[command_index]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    top_args = top.parse_args(argv[:command_index])
    # before any command module imports TensorFlow: its C++ log level, and no CUDA start-up lines without a GPU
    import_tensorflow()
    parser, module = _command_parser(name)
    args = parser.parse_args(argv[command_index + 1:])
    logging.basicConfig(
        level=logging.DEBUG if (args.verbose or top_args.verbose) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Bad input: one clear line, no traceback.
        print(f"ssfl-recon {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
