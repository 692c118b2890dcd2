"""``ssfl-recon make-data``: generate the built-in synthetic multi-coil cardiac cine data set.

Every subject is a :func:`data_loader.phantom.make_subject` phantom (own anatomy, motion, coils and noise, all
derived from ``--seed`` and the subject index), written in the original preprocessed layout, our HDF5 layout or
both (see :mod:`data_loader.formats`), with split CSVs over disjoint subjects. The same arguments always give the
same data.

Examples::

    ssfl-recon make-data --out data/synthetic --subjects 10
    ssfl-recon make-data --out data/synthetic_full --subjects 20 --size 25,176,132,15 --png phantom.png
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from data_loader.synthetic import SyntheticSpec, generate_dataset
from evaluation.plots import save_phantom_figure
from scripts._common import positive_ints

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int, int, int]:
    values = positive_ints(text, 4)
    if values is None:
        raise argparse.ArgumentTypeError(f"expected T,X,Y,C as four positive integers, got {text!r}")
    return values  # type: ignore[return-value]


def _split(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0 or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(
            f"expected three non-negative fractions train,val,test (not all zero), got {text!r}")
    return values  # type: ignore[return-value]


def _snr(text: str) -> float | None:
    if text.strip().lower() in ("none", "inf", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an SNR in dB or 'inf' (no noise), got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``make-data`` to ``parser``."""
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (created); subject files and split CSVs are written into it")
    parser.add_argument("--subjects", type=int, default=8, help="number of subjects (default 8)")
    parser.add_argument("--size", type=_size, default=(12, 96, 72, 8), metavar="T,X,Y,C",
                        help="frames, readout size, phase-encoding size, coils (default 12,96,72,8; the original "
                             "data are 25,176,132,15)")
    parser.add_argument("--slices", type=int, default=1, help="short-axis slices per subject (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="data set seed; subject i uses a seed derived from (seed, i) (default 0)")
    parser.add_argument("--snr", type=_snr, default=30.0, metavar="DB",
                        help="image SNR in dB: 20 log10(mean |x| in the body / noise std) of the coil-combined "
                             "image; 'inf' for noise-free k-space (default 30)")
    parser.add_argument("--layout", choices=("original", "h5", "both"), default="both",
                        help="original: norm_img_*.npy, cc_smap_15_*.npy, mask_GRAPPA_*.txt as the authors' "
                             "code loads them; h5: one {name}.h5 per subject with k-space; both (default)")
    parser.add_argument("--split", type=_split, default=(0.6, 0.2, 0.2), metavar="TRAIN,VAL,TEST",
                        help="fractions of subjects for train.csv, val.csv, test.csv (default 0.6,0.2,0.2; "
                             "disjoint subjects, every non-zero fraction gets at least one subject when possible)")
    parser.add_argument("--stage-splits", action=argparse.BooleanOptionalAction, default=True,
                        help="also split the training subjects into disjoint halves feature_train.csv and "
                             "recon_train.csv for the two training stages (default on)")
    parser.add_argument("--maps", choices=("true", "espirit"), default="true",
                        help="coil maps to store: the analytic ground truth (default) or ESPIRiT estimates "
                             "from the noisy k-space, as real preprocessing would produce")
    parser.add_argument("--acc", type=int, default=2,
                        help="line spacing of the initial equispaced mask mask_GRAPPA_* (default 2)")
    parser.add_argument("--num-center", type=int, default=24,
                        help="fully sampled centre lines of the initial mask (default 24)")
    parser.add_argument("--no-breathing", dest="breathing", action="store_false",
                        help="disable the slow breathing drift of the phantom")
    parser.add_argument("--prefix", default="synth",
                        help="subject name prefix; names are PREFIX_000, PREFIX_001, ... (default synth)")
    parser.add_argument("--png", type=Path, default=None,
                        help="also save a figure of the first subject (frames, x-t profile through the LV, phase, "
                             "blood-pool areas, coil-map magnitudes)")


def save_phantom_png(path: Path, subject: dict[str, Any], name: str) -> None:
    """Figure of one subject: four frames, an x-t profile through the LV, the phase, blood-pool areas, coil maps.

    Args:
        path: PNG destination (written atomically).
        subject: output of :func:`data_loader.phantom.make_subject`.
        name: subject name for the title.
    """
    image = subject["image"][0, ..., 0]  # (T, X, Y) of the first slice
    meta = subject["slices_meta"][0]
    nt, nx, ny = image.shape
    frames = np.unique(np.linspace(0, nt - 1, 4).round().astype(int)).tolist()
    # the profile line goes through the mean LV centre, so the x-t image shows the wall motion
    cx = min(max(int(round(float(meta["heart_center"][:, 0].mean()))), 0), nx - 1)
    snr = subject["snr"]
    save_phantom_figure(
        path, image, subject["coil_maps"][0], profile_x=cx, frames=frames,
        frame_captions=[f"frame {t} (contraction {meta['contraction'][t]:.2f})" for t in frames],
        curves={"LV blood pool": meta["lv_area"], "RV blood pool": meta["rv_area"]},
        curves_title=f"blood-pool area (LV EF {meta['ejection_fraction']:.0%})", curves_ylabel="area (pixels)",
        title=f"synthetic cine subject {name}: T={nt}, {nx}x{ny}, C={subject['coil_maps'].shape[-1]}, "
              f"SNR {'inf' if snr is None else f'{snr:g} dB'}")


def spec_from_args(args: argparse.Namespace) -> SyntheticSpec:
    return SyntheticSpec(out=args.out, subjects=args.subjects, size=tuple(args.size), slices=args.slices,
                         seed=args.seed, snr=args.snr, layout=args.layout, split=tuple(args.split),
                         stage_splits=args.stage_splits, maps=args.maps, acc=args.acc, num_center=args.num_center,
                         breathing=args.breathing, prefix=args.prefix)


def run(args: argparse.Namespace) -> int:
    """Generates the data set described by ``args``; returns 0."""
    def draw(subject: dict[str, Any], name: str) -> None:
        if args.png is not None:
            save_phantom_png(args.png, subject, name)
            logger.info("wrote %s", args.png)

    generate_dataset(spec_from_args(args), on_first_subject=draw)
    return 0
