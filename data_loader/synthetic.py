"""The built-in synthetic multi-coil cardiac cine data set: generation into a folder, with split CSVs.

Every subject is a :func:`data_loader.phantom.make_subject` phantom (own anatomy, motion, coils and noise, all
derived from the data set seed and the subject index), written in the original preprocessed layout, our HDF5 layout
or both (see :mod:`data_loader.formats`), with split CSVs over disjoint subjects and a ``manifest.json``. The same
arguments always give the same data. ``ssfl-recon make-data`` (``scripts/make_data.py``) is the command line of
:func:`generate_dataset`; :func:`ensure_synthetic_data` writes the data set of a config (``data.source:
synthetic``) unless it is already there; ``prepare-data`` shares the splits.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from data_loader import formats
from data_loader.coil_maps import espirit_coil_maps, sense_combine
from data_loader.masks import equispaced_mask
from data_loader.phantom import make_subject
from data_loader.store import SPLITS, data_size, split_csv_path
from utils.io import atomic_write_text
from utils.mri import fft2c_np
from utils.schema import DataConfig

logger = logging.getLogger(__name__)

SPLIT_NAMES = SPLITS  # the splits the pipelines read
# stamp of the data set written for a config (ensure_synthetic_data)
_STAMP_NAME = ".ssfl_synthetic.json"
_STAMP_VERSION = 1


@dataclass
class SyntheticSpec:
    """What :func:`generate_dataset` writes (the options of ``make-data``, same defaults).

    out: folder (created). subjects: number of subjects. size: (T, X, Y, C). slices: short-axis slices per subject.
    seed: data set seed. snr: image SNR in dB (None = noise-free). layout: ``original``, ``h5`` or ``both``.
    split: train/val/test fractions. stage_splits: also write ``feature_train.csv``/``recon_train.csv`` (halves of
    the training subjects). maps: ``true`` (analytic) or ``espirit`` (estimated) coil maps. acc / num_center: the
    initial equispaced mask. breathing: slow breathing drift. prefix: subject names ``PREFIX_000`` ...
    """

    out: Path
    subjects: int = 8
    size: tuple[int, int, int, int] = (12, 96, 72, 8)
    slices: int = 1
    seed: int = 0
    snr: float | None = 30.0
    layout: str = "both"
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    stage_splits: bool = True
    maps: str = "true"
    acc: int = 2
    num_center: int = 24
    breathing: bool = True
    prefix: str = "synth"

    def validate(self) -> None:
        if self.subjects < 1:
            raise ValueError(f"--subjects must be >= 1, got {self.subjects}")
        if self.slices < 1:
            raise ValueError(f"--slices must be >= 1, got {self.slices}")
        if self.prefix != Path(self.prefix).name or "." in self.prefix or not self.prefix:
            raise ValueError(f"--prefix must be a plain name without dots or separators, got {self.prefix!r}")
        if self.layout not in ("original", "h5", "both"):
            raise ValueError(f"--layout must be original, h5 or both, got {self.layout!r}")
        if self.maps not in ("true", "espirit"):
            raise ValueError(f"--maps must be true or espirit, got {self.maps!r}")


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


def generate_dataset(spec: SyntheticSpec,
                     on_first_subject: Callable[[dict[str, Any], str], None] | None = None) -> dict[str, list[str]]:
    """Generates the data set of ``spec`` into ``spec.out``; returns the splits (split -> subject names).

    ``on_first_subject(subject, name)`` is called with the first generated subject (e.g. to draw it)."""
    spec.validate()
    nt, nx, ny, nc = spec.size
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    # made once up front: a bad acc/num_center fails before any subject is generated
    initial_mask = equispaced_mask(ny, nt, acc=spec.acc, num_center=spec.num_center)
    names = [f"{spec.prefix}_{i:03d}" for i in range(spec.subjects)]
    rows: dict[str, formats.SubjectRow] = {}
    manifest_subjects = []
    logger.info("generating %d subject(s) of T=%d X=%d Y=%d C=%d, %d slice(s), SNR %s, layout %s -> %s",
                spec.subjects, nt, nx, ny, nc, spec.slices, spec.snr, spec.layout, out)
    for i, name in enumerate(names):
        start = time.perf_counter()
        seed = subject_seed(spec.seed, i)
        subject = make_subject(nt, nx, ny, nc, seed=seed, snr=spec.snr, breathing=spec.breathing,
                               slices=spec.slices)
        kspace = subject["kspace"]
        if spec.maps == "espirit":
            maps = np.stack([espirit_coil_maps(kspace[s]) for s in range(spec.slices)])[:, None]
            # reference in the phase convention of the estimated maps, so that kspace ~ fft2c(maps * image)
            reference = sense_combine(fft2c_np(subject["image"] * subject["coil_maps"]), maps)
        else:
            maps = subject["coil_maps"]
            reference = subject["image"]
        if spec.layout in ("original", "both"):
            # the authors' norm_img is the coil-combined fully sampled (noisy) image; mimic that
            measured = sense_combine(kspace, maps)
            rows[name] = formats.write_original_subject(out, name, measured, maps, initial_mask=initial_mask)
        if spec.layout in ("h5", "both"):
            ef = [m["ejection_fraction"] for m in subject["slices_meta"]]
            formats.write_h5_subject(
                out / f"{name}.h5", kspace, reference, maps, initial_mask=initial_mask, name=name, seed=seed,
                snr=spec.snr,
                attrs={"source": "ssfl-recon synthetic cardiac cine phantom (data_loader.phantom)",
                       "noise_std": subject["noise_std"], "ejection_fraction": ef, "coil_maps_kind": spec.maps,
                       "dataset_seed": int(spec.seed), "subject_index": i},
            )
            rows.setdefault(name, formats.SubjectRow(name, nx, ny, nc, nt, spec.slices))
        if i == 0 and on_first_subject is not None:
            on_first_subject(subject, name)
        meta = subject["slices_meta"][0]
        manifest_subjects.append({"name": name, "seed": seed, "ejection_fraction": meta["ejection_fraction"],
                                  "noise_std": subject["noise_std"]})
        logger.info("[%d/%d] %s (seed %d, LV EF %.2f) in %.2f s", i + 1, spec.subjects, name, seed,
                    meta["ejection_fraction"], time.perf_counter() - start)

    splits = assign_splits(names, spec.split, spec.seed)
    for split, members in splits.items():
        formats.write_dataset_csv(out / f"{split}.csv", [rows[n] for n in members])
        logger.info("%s.csv: %d subject(s)", split, len(members))
    if spec.stage_splits and len(splits["train"]) >= 2:
        half = len(splits["train"]) // 2
        formats.write_dataset_csv(out / "feature_train.csv", [rows[n] for n in splits["train"][:half]])
        formats.write_dataset_csv(out / "recon_train.csv", [rows[n] for n in splits["train"][half:]])
        logger.info("feature_train.csv / recon_train.csv: %d / %d subject(s)", half, len(splits["train"]) - half)
    elif spec.stage_splits:
        logger.warning("fewer than 2 training subjects: feature_train.csv / recon_train.csv not written")
    manifest = {
        "generator": "ssfl-recon make-data",
        "seed": spec.seed, "size": {"T": nt, "X": nx, "Y": ny, "C": nc}, "slices": spec.slices,
        "snr_db": spec.snr, "layout": spec.layout, "maps": spec.maps, "breathing": spec.breathing,
        "initial_mask": {"kind": "equispaced", "acc": spec.acc, "num_center": spec.num_center},
        "splits": splits, "subjects": manifest_subjects,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    logger.info("done: %s", out)
    return splits


# ----------------------------------------------------------------------------- data set of a config
def _stamp(cfg: DataConfig) -> dict[str, Any]:
    snr = float(cfg.snr_db)
    return {"version": _STAMP_VERSION, "size": [int(v) for v in cfg.size], "subjects": int(cfg.subjects),
            "seed": int(cfg.seed), "snr_db": snr if math.isfinite(snr) else None}


def ensure_synthetic_data(cfg: DataConfig) -> Path:
    """Generates the synthetic data set into ``data.root`` unless it is already there with the same parameters.

    Only for ``data.source == "synthetic"`` (and not in dummy mode); otherwise returns ``data.root`` untouched.
    The data set is current when the three split CSVs exist and the stamp file ``.ssfl_synthetic.json`` in the
    folder records the same ``size``, ``subjects``, ``seed`` and ``snr_db``; else ``make-data`` (both layouts,
    one slice per subject) writes it again and the stamp is written last, so an interrupted generation is redone.

    Args:
        cfg: data config.

    Returns:
        the data folder.
    """
    root = Path(cfg.root).expanduser()
    if cfg.source != "synthetic" or cfg.dummy:
        return root
    wanted = _stamp(cfg)
    stamp_path = root / _STAMP_NAME
    csvs = [split_csv_path(cfg, s) for s in SPLITS]
    if all(p.is_file() for p in csvs) and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text(encoding="utf-8")) == wanted:
                logger.debug("synthetic data in %s are current", root)
                return root
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable stamp (%s); regenerating", stamp_path, err)
    if any(p.is_file() for p in csvs):
        logger.warning("%s holds a data set made with other parameters (or no stamp); regenerating it with %s",
                       root, wanted)
    start = time.perf_counter()
    generate_dataset(SyntheticSpec(out=root, subjects=wanted["subjects"], size=data_size(cfg),
                                   seed=wanted["seed"], snr=wanted["snr_db"], layout="both"))
    missing = [str(p) for p in csvs if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the synthetic generator did not write the configured split CSV(s) {missing} "
                                "(data.train_csv/val_csv/test_csv must name files make-data writes)")
    atomic_write_text(stamp_path, json.dumps(wanted, indent=2) + "\n")
    logger.info("synthetic data written to %s in %.1f s", root, time.perf_counter() - start)
    return root
