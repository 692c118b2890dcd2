"""``ssfl-recon make-masks``: write a k-t sampling mask in the original text format (and optionally pictures).

Examples::

    ssfl-recon make-masks --kind vista --ny 132 --nt 25 --acc 8 --seed 3 --out mask_VISTA_132x25_acc8_3.txt --png m.png
    ssfl-recon make-masks --kind vista --ny 132 --nt 25 --acc 8 --out m.txt --compare-png all_kinds.png
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from data_loader.masks import MASK_GENERATORS, effective_acceleration, generate_mask, write_mask_txt
from evaluation.plots import save_mask_figure

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
    parser.add_argument("--png", type=Path, default=None,
                        help="also save a picture of the ky-t pattern and the fraction of frames sampling each ky")
    parser.add_argument("--compare-png", type=Path, default=None,
                        help="also save a picture comparing every mask kind (" + ", ".join(MASK_GENERATORS)
                             + ") at the same ny, nt, R and seed (--num-center applies to the kinds that have it)")


def save_mask_png(path: str | Path, mask: np.ndarray, title: str) -> None:
    """Saves a picture of a (ny, nt) mask (ky vertical, time horizontal, sampled = white) atomically.

    Args:
        path: PNG destination.
        mask: (ny, nt) 0/1 array.
        title: figure title (the panel caption adds R_eff and lines per frame).
    """
    save_mask_figure(path, {title: mask})


def compare_kinds(ny: int, nt: int, acc: float, seed: int, num_center: int | None = None,
                  known: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One mask of every registered kind at the same size, acceleration and seed.

    Args:
        ny: phase-encoding lines.
        nt: frames.
        acc: acceleration.
        seed: seed (equispaced ignores it).
        num_center: fully sampled centre lines for the kinds that take it (default: each generator's own).
        known: masks already generated with these settings, by kind (not generated again).

    Returns:
        kind -> (ny, nt) mask, in the order of :data:`data_loader.masks.MASK_GENERATORS`.
    """
    masks = {}
    for kind in MASK_GENERATORS:
        if known and kind in known:
            masks[kind] = known[kind]
            continue
        options = {} if num_center is None or kind == "vista" else {"num_center": num_center}
        try:
            masks[kind] = generate_mask(kind, ny, nt, acc, seed=seed, **options)
        except ValueError as err:
            raise ValueError(f"--compare-png: cannot make a {kind} mask with these settings: {err}") from err
    return masks


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
        save_mask_png(args.png, mask, f"{args.kind} mask {args.ny}x{args.nt}, R={args.acc:g}, seed {args.seed}")
        logger.info("wrote picture %s", args.png)
    if args.compare_png is not None:
        masks = compare_kinds(args.ny, args.nt, args.acc, args.seed, args.num_center, known={args.kind: mask})
        save_mask_figure(args.compare_png, masks,
                         title=f"k-t masks, {args.ny} ky lines x {args.nt} frames, R={args.acc:g}, seed {args.seed}")
        logger.info("wrote comparison picture %s", args.compare_png)
    return 0
