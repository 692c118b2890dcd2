"""``ssfl-recon make-masks``: write a k-t sampling mask in the original text format (and optionally a PNG of it).

Example::

    ssfl-recon make-masks --kind vista --ny 132 --nt 25 --acc 8 --seed 3 --out mask_VISTA_132x25_acc8_3.txt --png m.png
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from data_loader.masks import MASK_GENERATORS, effective_acceleration, generate_mask, write_mask_txt
from utils.io import atomic_path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``make-masks`` to ``parser``."""
    parser.add_argument("--kind", required=True, choices=list(MASK_GENERATORS),
                        help="mask type: vista (VISTA, Ahmad et al. 2015), equispaced (every R-th line + fully "
                             "sampled centre, same in every frame), vd-random (variable-density random lines per "
                             "frame), gaussian (CMRxRecon-style time-varying Gaussian)")
    parser.add_argument("--ny", type=int, required=True, help="number of phase-encoding lines (ky), rows of the file")
    parser.add_argument("--nt", type=int, required=True, help="number of time frames, columns of the file")
    parser.add_argument("--acc", type=float, required=True,
                        help="acceleration R (lines per frame about ny/R; an integer line spacing for equispaced)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0; equispaced ignores it)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output text file: ny rows of nt comma-separated 0/1 values (written atomically)")
    parser.add_argument("--num-center", type=int, default=None,
                        help="fully sampled central lines (equispaced, vd-random, gaussian; default: the "
                             "generator's own, e.g. 24 for equispaced)")
    parser.add_argument("--png", type=Path, default=None, help="also save a picture of the ky-t pattern to this PNG")


def save_mask_png(path: str | Path, mask: np.ndarray, title: str) -> None:
    """Saves a picture of a (ny, nt) mask (ky vertical, time horizontal, sampled = white) atomically.

    Args:
        path: PNG destination.
        mask: (ny, nt) 0/1 array.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ny, nt = mask.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + 0.25 * nt), min(10.0, 2.0 + 0.04 * ny)), dpi=100)
    try:
        ax.imshow(mask, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest", origin="lower")
        ax.set_xlabel("time frame")
        ax.set_ylabel("ky")
        ax.set_title(title)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Generates the mask described by ``args`` and writes it."""
    options = {} if args.num_center is None else {"num_center": args.num_center}
    mask = generate_mask(args.kind, args.ny, args.nt, args.acc, seed=args.seed, **options)
    write_mask_txt(args.out, mask)
    r_eff = effective_acceleration(mask)
    lines = mask.sum(axis=0)
    logger.info("wrote %s mask %dx%d (R=%g, seed %d) to %s: %d-%d lines per frame, effective acceleration %.2f, "
                "%d of %d ky lines sampled in some frame", args.kind, args.ny, args.nt, args.acc, args.seed, args.out,
                lines.min(), lines.max(), r_eff, int(mask.any(axis=1).sum()), args.ny)
    if args.png is not None:
        title = (f"{args.kind} mask {args.ny}x{args.nt}, R={args.acc:g}, seed {args.seed}\n"
                 f"effective acceleration {r_eff:.2f}")
        save_mask_png(args.png, mask, title)
        logger.info("wrote picture %s", args.png)
    return 0
