"""``ssfl-recon prepare-data``: convert real k-space (CMRxRecon 2023/2024 ``.mat``, OCMR ISMRMRD ``.h5``, the original
preprocessed layout) into our HDF5 layout with split CSVs by patient (see :mod:`data_loader.prepare`).

The output folder is directly usable as ``data.root`` with ``data.source: h5``.

Examples::

    ssfl-recon prepare-data --from cmrxrecon2023 --in CMRxRecon/MultiCoil/Cine/TrainingSet --out data/cmrx \\
        --coils 8 --time-window 12
    ssfl-recon prepare-data --from ocmr --in ocmr_data --out data/ocmr --coils 8 --split 0.7,0.15,0.15 --seed 1
    ssfl-recon prepare-data --from cine-npz --in cine.npz --out data/cine --split 114,29,57
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from data_loader.cine_npz import PROJECT_SPLIT, prepare_cine_npz
from data_loader.prepare import SOURCES, prepare

CINE_NPZ = "cine-npz"  # the dual-UNet project's magnitude cines (data_loader/cine_npz.py)

logger = logging.getLogger(__name__)


def _split(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) < 0 or sum(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected three non-negative fractions train,val,test (not all zero), got {text!r}")
    return values  # type: ignore[return-value]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``prepare-data`` to ``parser``."""
    parser.add_argument("--from", dest="source", choices=(*SOURCES, CINE_NPZ), required=True,
                        help="input layout: cmrxrecon2023 / cmrxrecon2024 (cine .mat trees, MultiCoil and SingleCoil, "
                             "sax/lax/lvot; 2025 Center folders too), ocmr (ISMRMRD .h5, needs the [ocmr] extra) or "
                             "original (norm_img_*.npy, cc_smap_15_*.npy, mask_GRAPPA_*.txt + CSVs) or cine-npz (the dual-UNet "
                             "project's cine.npz: [N, T, X, Y] magnitudes, single coil; --in is the file)")
    parser.add_argument("--in", dest="in_dir", type=Path, required=True, help="input folder (searched recursively)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (must not exist or be empty); written only when every case succeeded")
    parser.add_argument("--coils", type=_positive, default=None, metavar="N",
                        help="SVD-compress every case to N virtual coils (default: keep; then all cases need the "
                             "same coil count)")
    parser.add_argument("--time-window", type=_positive, default=None, metavar="T",
                        help="keep the first T frames of every cine (default: all)")
    parser.add_argument("--split", type=_split, default=None, metavar="TRAIN,VAL,TEST",
                        help="fractions (or weights) of the patients for train/val/test (default 0.8,0.1,0.1; "
                             "whole patients; cine-npz: the project's 114,29,57)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--initial-mask", default=None, metavar="NAME",
                        help="store this prospective mask (e.g. R04, Uniform8) as initial_mask, the acquisition "
                             "mask stage 1 uses with data.initial_acc > 1 (default: none for fully sampled data)")
    parser.add_argument("--calib", type=_positive, default=24,
                        help="ESPIRiT calibration region side in k-space samples (default 24)")


def run(args: argparse.Namespace) -> int:
    """Runs the conversion; returns 0."""
    if args.source == CINE_NPZ:
        prepare_cine_npz(args.in_dir, args.out, split=args.split or PROJECT_SPLIT, seed=args.seed)
        return 0
    prepare(args.source, args.in_dir, args.out, coils=args.coils, time_window=args.time_window,
            split=args.split or (0.8, 0.1, 0.1), seed=args.seed, initial_mask=args.initial_mask,
            calib_size=args.calib)
    return 0
