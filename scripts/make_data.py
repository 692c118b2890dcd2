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
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scripts._common import positive_ints

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


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


def subject_seed(seed: int, index: int) -> int:
    """Seed of subject ``index`` of the data set with seed ``seed`` (independent streams per subject)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Subjects per split: largest-remainder rounding, then at least one per non-zero fraction when n allows.

    Args:
        n: number of subjects.
        fractions: non-negative weights per split.

    Returns:
        counts summing to n.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    frac = frac / frac.sum()
    raw = frac * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((frac > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def assign_splits(names: list[str], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Randomly (per seed) assigns subjects to disjoint train/val/test lists (each sorted by name)."""
    counts = split_counts(len(names), fractions)
    order = np.random.default_rng(seed).permutation(len(names))
    out, start = {}, 0
    for split, count in zip(SPLIT_NAMES, counts):
        out[split] = sorted(names[i] for i in order[start:start + count])
        start += count
    return out


def save_phantom_png(path: Path, subject: dict[str, Any], name: str) -> None:
    """Figure of one subject: four frames, an x-t profile through the LV, the phase, blood-pool areas, coil maps.

    Args:
        path: PNG destination (written atomically).
        subject: output of :func:`data_loader.phantom.make_subject`.
        name: subject name for the title.
    """
    from evaluation.figures import save_phantom_figure

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


def run(args: argparse.Namespace) -> int:
    """Generates the data set described by ``args``; returns 0."""
    from data_loader import formats
    from data_loader.coil_maps import espirit_coil_maps, sense_combine
    from data_loader.masks import equispaced_mask
    from data_loader.phantom import make_subject
    from utils.io import atomic_write_text
    from utils.mri import fft2c_np

    if args.subjects < 1:
        raise ValueError(f"--subjects must be >= 1, got {args.subjects}")
    if args.slices < 1:
        raise ValueError(f"--slices must be >= 1, got {args.slices}")
    if args.prefix != Path(args.prefix).name or "." in args.prefix or not args.prefix:
        raise ValueError(f"--prefix must be a plain name without dots or separators, got {args.prefix!r}")
    nt, nx, ny, nc = args.size
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # made once up front: a bad --acc/--num-center fails before any subject is generated
    initial_mask = equispaced_mask(ny, nt, acc=args.acc, num_center=args.num_center)
    names = [f"{args.prefix}_{i:03d}" for i in range(args.subjects)]
    rows: dict[str, formats.SubjectRow] = {}
    manifest_subjects = []
    logger.info("generating %d subject(s) of T=%d X=%d Y=%d C=%d, %d slice(s), SNR %s, layout %s -> %s",
                args.subjects, nt, nx, ny, nc, args.slices, args.snr, args.layout, out)
    for i, name in enumerate(names):
        start = time.perf_counter()
        seed = subject_seed(args.seed, i)
        subject = make_subject(nt, nx, ny, nc, seed=seed, snr=args.snr, breathing=args.breathing,
                               slices=args.slices)
        kspace = subject["kspace"]
        if args.maps == "espirit":
            maps = np.stack([espirit_coil_maps(kspace[s]) for s in range(args.slices)])[:, None]
            # reference in the phase convention of the estimated maps, so that kspace ~ fft2c(maps * image)
            reference = sense_combine(fft2c_np(subject["image"] * subject["coil_maps"]), maps)
        else:
            maps = subject["coil_maps"]
            reference = subject["image"]
        if args.layout in ("original", "both"):
            # the authors' norm_img is the coil-combined fully sampled (noisy) image; mimic that
            measured = sense_combine(kspace, maps)
            rows[name] = formats.write_original_subject(out, name, measured, maps, initial_mask=initial_mask)
        if args.layout in ("h5", "both"):
            ef = [m["ejection_fraction"] for m in subject["slices_meta"]]
            formats.write_h5_subject(
                out / f"{name}.h5", kspace, reference, maps, initial_mask=initial_mask, name=name, seed=seed,
                snr=args.snr,
                attrs={"source": "ssfl-recon synthetic cardiac cine phantom (data_loader.phantom)",
                       "noise_std": subject["noise_std"], "ejection_fraction": ef, "coil_maps_kind": args.maps,
                       "dataset_seed": int(args.seed), "subject_index": i},
            )
            rows.setdefault(name, formats.SubjectRow(name, nx, ny, nc, nt, args.slices))
        if i == 0 and args.png is not None:
            save_phantom_png(args.png, subject, name)
            logger.info("wrote %s", args.png)
        meta = subject["slices_meta"][0]
        manifest_subjects.append({"name": name, "seed": seed, "ejection_fraction": meta["ejection_fraction"],
                                  "noise_std": subject["noise_std"]})
        logger.info("[%d/%d] %s (seed %d, LV EF %.2f) in %.2f s", i + 1, args.subjects, name, seed,
                    meta["ejection_fraction"], time.perf_counter() - start)

    splits = assign_splits(names, args.split, args.seed)
    for split, members in splits.items():
        formats.write_dataset_csv(out / f"{split}.csv", [rows[n] for n in members])
        logger.info("%s.csv: %d subject(s)", split, len(members))
    if args.stage_splits and len(splits["train"]) >= 2:
        half = len(splits["train"]) // 2
        formats.write_dataset_csv(out / "feature_train.csv", [rows[n] for n in splits["train"][:half]])
        formats.write_dataset_csv(out / "recon_train.csv", [rows[n] for n in splits["train"][half:]])
        logger.info("feature_train.csv / recon_train.csv: %d / %d subject(s)", half, len(splits["train"]) - half)
    elif args.stage_splits:
        logger.warning("fewer than 2 training subjects: feature_train.csv / recon_train.csv not written")
    manifest = {
        "generator": "ssfl-recon make-data",
        "seed": args.seed, "size": {"T": nt, "X": nx, "Y": ny, "C": nc}, "slices": args.slices,
        "snr_db": args.snr, "layout": args.layout, "maps": args.maps, "breathing": args.breathing,
        "initial_mask": {"kind": "equispaced", "acc": args.acc, "num_center": args.num_center},
        "splits": splits, "subjects": manifest_subjects,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    logger.info("done: %s", out)
    return 0
