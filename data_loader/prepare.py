"""``prepare-data``: real k-space (CMRxRecon 2023/2024, OCMR, the original preprocessed layout) -> our HDF5 layout.

For every case (one cine acquisition: patient x view x coil type): read the fully sampled k-space, keep the first
``time_window`` frames, SVD-compress to ``coils`` virtual coils, estimate ESPIRiT coil maps per slice (from the
time-averaged k-space when the centre is not fully sampled in every frame), form the coil-combined image, scale
k-space and image so that the subject's image has max magnitude 1 (as the original layout), and write
``{name}.h5`` (:func:`data_loader.formats.write_h5_subject`) plus, when the tree carries them, the prospective
masks as ``prospective_masks/<name>`` ((T, X, Y) uint8 each; ``R04`` for 2023's ``kspace_sub04``/``mask04``,
``Uniform8``/``ktGaussian8``/... for 2024's files). Split CSVs assign whole **patients** to train/val/test (and the
training patients to ``feature_train.csv``/``recon_train.csv``), so a patient never appears in two splits.

Everything is written into a temporary sibling folder that is renamed to ``out`` only when every case succeeded:
an error leaves ``out`` untouched (absent, or the empty folder it was).
"""
from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from data_loader import formats
from data_loader.coil_maps import coil_compress, espirit_coil_maps, sense_combine
from data_loader.masks import effective_acceleration, read_mask_txt
from data_loader.real_formats import (
    discover_cmrxrecon,
    line_mask,
    read_case_kspace,
    read_case_masks,
    read_ocmr,
)
from data_loader.synthetic import SPLIT_NAMES, assign_splits
from utils.io import atomic_write_text
from utils.mri import fft2c_np

logger = logging.getLogger(__name__)

SOURCES = ("cmrxrecon2023", "cmrxrecon2024", "ocmr", "original")
MASK_GROUP = "prospective_masks"


@dataclass
class CaseSource:
    """One case to prepare: its name, patient (the split unit), main file and a loader of its arrays.

    ``load()`` returns a dict with ``kspace`` (S,T,X,Y,C) and optionally ``masks`` (name -> (T,X,Y) uint8),
    ``acquisition`` ((Y,T) mask when the k-space itself is undersampled), ``coil_maps`` and ``image`` (given
    instead of estimated, original layout) and ``attrs``.
    """

    name: str
    patient: str
    path: Path
    load: Callable[[], dict[str, Any]]
    attrs: dict[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- discovery
def _cmrxrecon_cases(root: Path) -> tuple[list[CaseSource], list[str]]:
    cases, skipped = [], []
    for case in discover_cmrxrecon(root):
        if case.full is None:
            skipped.append(f"{case.name}: no fully sampled k-space (only {sorted(case.undersampled) or 'masks'})")
            continue

        def load(case=case):
            kspace = read_case_kspace(case)
            return {"kspace": kspace, "masks": read_case_masks(case, kspace.shape)}

        cases.append(CaseSource(case.name, case.patient, case.full, load,
                                {"view": case.view, "coil_type": case.coil_type}))
    return cases, skipped


def _ocmr_cases(root: Path) -> tuple[list[CaseSource], list[str]]:
    cases = []
    for path in sorted(root.rglob("*.h5")):
        def load(path=path):
            data = read_ocmr(path)
            out = {"kspace": data["kspace"], "attrs": {"averages": data["averages"],
                                                       "fully_sampled": int(data["fully_sampled"])}}
            if not data["fully_sampled"]:
                out["acquisition"] = data["mask"]
            return out

        cases.append(CaseSource(path.stem, path.stem, path, load, {}))
    return cases, []


def _original_cases(root: Path) -> tuple[list[CaseSource], list[str]]:
    rows: dict[str, formats.SubjectRow] = {}
    for csv_path in sorted(root.glob("*.csv")):
        for row in formats.read_dataset_csv(csv_path):
            rows.setdefault(row.name, row)
    cases = []
    for name, row in sorted(rows.items()):
        names = formats.original_file_names(name)

        def load(row=row, names=names):
            image = np.load(formats.resolve_original(root, names["image"]), allow_pickle=False)
            maps = np.load(formats.resolve_original(root, names["coil_maps"]), allow_pickle=False)
            where = root / names["image"]
            if image.shape != (row.slices, row.nt, row.nx, row.ny, 1) or maps.shape[:4] != (row.slices, 1, row.nx,
                                                                                               row.ny):
                raise ValueError(f"{where}: shapes {image.shape} / {maps.shape} disagree with the CSV row "
                                 f"(S,T,X,Y) = {(row.slices, row.nt, row.nx, row.ny)}")
            formats.check_finite(image, str(where))
            mask = read_mask_txt(root / names["mask"], ny=row.ny, nt=row.nt)
            kspace = fft2c_np((image * maps).astype(np.complex64), axes=(-3, -2)).astype(np.complex64)
            return {"kspace": kspace, "coil_maps": maps.astype(np.complex64), "image": image.astype(np.complex64),
                    "initial_mask": mask}

        cases.append(CaseSource(name, name, root / names["image"], load, {}))
    return cases, []


def discover(source: str, root: str | Path) -> tuple[list[CaseSource], list[str]]:
    """Cases of ``source`` under ``root`` and the reasons for skipped ones.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: unknown source, or no case at all (the message says what was expected).
    """
    root = Path(root)
    if source not in SOURCES:
        raise ValueError(f"--from: expected one of {', '.join(SOURCES)}, got {source!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"--in: input folder not found: {root}")
    if source.startswith("cmrxrecon"):
        cases, skipped = _cmrxrecon_cases(root)
        expected = ("CMRxRecon cine files with fully sampled k-space, e.g. "
                    "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat (variable kspace_full)")
    elif source == "ocmr":
        cases, skipped = _ocmr_cases(root)
        expected = "OCMR ISMRMRD files *.h5"
    else:
        cases, skipped = _original_cases(root)
        expected = "the original layout: split CSVs with norm_img_*.npy, cc_smap_15_*.npy, mask_GRAPPA_*.txt"
    if not cases:
        extra = f" ({len(skipped)} skipped: {'; '.join(skipped[:3])})" if skipped else ""
        raise ValueError(f"--in {root}: no cases found for --from {source}; expected {expected}{extra}")
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--in {root}: case names occur twice: {dupes[:5]}")
    return cases, skipped


# ---------------------------------------------------------------------------------------- processing
def estimate_coil_maps(kspace: np.ndarray, acquisition: np.ndarray | None = None,
                       calib_size: int = 24) -> tuple[np.ndarray, str]:
    """ESPIRiT maps of one slice, (X, Y, C) complex64, and how they were obtained.

    Args:
        kspace: (T, X, Y, C) k-space of one slice (zero where not acquired).
        acquisition: (Y, T) 0/1 acquisition mask, None when fully sampled.
        calib_size: side of the calibration region.

    With the central ``calib_size`` lines acquired in every frame, ESPIRiT calibrates on them (pooled over frames);
    otherwise on the time-averaged k-space ``sum_t k_t / #frames that sampled the line``, which fills the centre
    when the sampling is interleaved in time.
    """
    _, _, ny, nc = kspace.shape
    if nc == 1:
        return np.ones(kspace.shape[1:], np.complex64), "single coil (ones)"
    if acquisition is not None:
        lo = ny // 2 - min(calib_size, ny) // 2
        centre = acquisition[lo:lo + min(calib_size, ny)]
        if not centre.all():
            counts = np.maximum(acquisition.sum(axis=1), 1)  # (Y,)
            averaged = kspace.sum(axis=0) / counts[None, :, None]
            if not np.abs(averaged[:, lo:lo + min(calib_size, ny)]).any(axis=(0, 2)).all():
                logger.warning("the time-averaged k-space still misses central lines; maps may be poor")
            return espirit_coil_maps(averaged, calib_size=calib_size), "ESPIRiT (time-averaged k-space)"
    return espirit_coil_maps(kspace, calib_size=calib_size), "ESPIRiT (fully sampled centre)"


def _crop_time(data: dict[str, Any], frames: int, where: Path) -> None:
    nt = data["kspace"].shape[1]
    if nt < frames:
        raise ValueError(f"{where}: {nt} frame(s), fewer than --time-window {frames}")
    data["kspace"] = data["kspace"][:, :frames]
    for key in ("image",):
        if key in data:
            data[key] = data[key][:, :frames]
    data["masks"] = {k: v[:frames] for k, v in data.get("masks", {}).items()}
    for key in ("acquisition", "initial_mask"):
        if data.get(key) is not None:
            data[key] = data[key][:, :frames]


def process_case(case: CaseSource, coils: int | None, time_window: int | None,
                 calib_size: int = 24) -> dict[str, Any]:
    """Loads one case and returns what :func:`write_case` stores (k-space, image, maps, masks, attributes)."""
    data = case.load()
    kspace = np.asarray(data["kspace"])
    if kspace.ndim != 5:
        raise ValueError(f"{case.path}: expected k-space (S,T,X,Y,C), got shape {kspace.shape}")
    formats.check_finite(kspace, f"{case.path}: k-space")
    if time_window is not None:
        _crop_time(data, time_window, case.path)
        kspace = data["kspace"]
    nc_in = kspace.shape[-1]
    maps = data.get("coil_maps")
    if coils is not None:
        if coils > nc_in:
            raise ValueError(f"{case.path}: {nc_in} coil(s), fewer than --coils {coils}")
        if coils < nc_in:
            kspace, matrix = coil_compress(kspace, coils)
            if maps is not None:
                maps = (maps @ matrix).astype(np.complex64)
    acquisition = data.get("acquisition")
    if maps is None:
        per_slice = [estimate_coil_maps(kspace[s], acquisition, calib_size) for s in range(kspace.shape[0])]
        maps = np.stack([m for m, _ in per_slice])[:, None]
        maps_kind = per_slice[0][1]
    else:
        maps_kind = "given (original layout)"
    image = data.get("image") if coils is None or coils == nc_in else None
    if image is None:
        image = sense_combine(kspace, maps)
    peak = float(np.abs(image).max())
    if not np.isfinite(peak) or peak == 0.0:
        raise ValueError(f"{case.path}: the coil-combined image is all zero (empty k-space or coil maps?)")
    scale = np.float32(1.0 / peak)
    initial = data.get("initial_mask")
    if initial is None and acquisition is not None:
        initial = acquisition
    attrs = {"source_file": str(case.path), "patient": case.patient, "coils_in": nc_in, "coil_maps_kind": maps_kind,
             "scale": float(scale), "fully_sampled": int(acquisition is None), **case.attrs, **data.get("attrs", {})}
    return {"kspace": (kspace * scale).astype(np.complex64), "image": (image * scale).astype(np.complex64),
            "coil_maps": maps.astype(np.complex64), "initial_mask": initial, "masks": data.get("masks", {}),
            "attrs": attrs}


def write_case(path: Path, name: str, case: dict[str, Any], initial_mask: str | None = None) -> None:
    """Writes one processed case: the ``ssfl-recon-h5`` datasets plus ``prospective_masks/<name>``.

    Args:
        path: ``{name}.h5`` (inside the temporary output folder).
        name: subject name.
        case: output of :func:`process_case`.
        initial_mask: name of a prospective mask to store as ``initial_mask`` (the acquisition mask the feature
            stage uses when ``data.initial_acc > 1``); must be a Cartesian line mask.
    """
    initial = case["initial_mask"]
    if initial_mask is not None:
        if initial_mask not in case["masks"]:
            raise ValueError(f"--initial-mask {initial_mask!r}: case {name} has masks {sorted(case['masks'])}")
        initial = line_mask(case["masks"][initial_mask])
        if initial is None:
            raise ValueError(f"--initial-mask {initial_mask!r}: the mask of {name} varies along the readout "
                             "(e.g. k-t radial) and cannot be a (Y, T) line mask")
    formats.write_h5_subject(path, case["kspace"], case["image"], case["coil_maps"], initial_mask=initial, name=name,
                             attrs=case["attrs"])
    if case["masks"]:
        with h5py.File(path, "a") as f:
            group = f.create_group(MASK_GROUP)
            for key, mask in sorted(case["masks"].items()):
                ds = group.create_dataset(key, data=mask.astype(np.uint8), track_times=False)
                lines = line_mask(mask)
                ds.attrs["layout"] = "(T, X, Y)"
                ds.attrs["cartesian_lines"] = int(lines is not None)
                ds.attrs["acceleration"] = float(mask.size / max(1, int(mask.sum())))
                if lines is not None:
                    ds.attrs["line_acceleration"] = float(effective_acceleration(lines))


def read_prospective_masks(path: str | Path) -> dict[str, np.ndarray]:
    """The ``prospective_masks/<name>`` (T, X, Y) uint8 masks of a prepared file (empty dict when none)."""
    with h5py.File(path, "r") as f:
        if MASK_GROUP not in f:
            return {}
        return {k: f[MASK_GROUP][k][()] for k in f[MASK_GROUP]}


# ------------------------------------------------------------------------------------------- the run
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def temp_dir_for(out: Path) -> Path:
    """A new temporary folder next to ``out`` (which must not exist or be empty) to build the data set in."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def publish_folder(tmp: Path, out: Path, summary: dict[str, Any]) -> None:
    """Writes ``summary`` as ``manifest.json`` into the finished ``tmp`` and renames it to ``out`` (empty or absent)."""
    atomic_write_text(tmp / "manifest.json", json.dumps(summary, indent=2) + "\n")
    if out.exists():
        out.rmdir()  # empty (checked by temp_dir_for)
    os.replace(tmp, out)


def prepare(source: str, in_dir: str | Path, out_dir: str | Path, coils: int | None = None,
            time_window: int | None = None, split: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
            initial_mask: str | None = None, calib_size: int = 24, stage_splits: bool = True) -> dict[str, Any]:
    """Prepares every case under ``in_dir`` into ``out_dir`` (see the module docstring).

    Args:
        source: ``cmrxrecon2023``, ``cmrxrecon2024``, ``ocmr`` or ``original``.
        in_dir: input tree.
        out_dir: output folder (must not exist or be empty); written atomically by a final rename.
        coils: virtual coils after SVD compression (None: keep; then every case must have the same count).
        time_window: keep the first this many frames (None: all; cases may then differ in T).
        split: train/val/test fractions of the **patients**.
        seed: split seed.
        initial_mask: prospective mask name to store as ``initial_mask`` (see :func:`write_case`).
        calib_size: ESPIRiT calibration region.
        stage_splits: also write ``feature_train.csv``/``recon_train.csv`` (disjoint halves of the train patients).

    Returns:
        the summary (also written as ``manifest.json``).

    Raises:
        ValueError / FileNotFoundError: bad arguments or input, naming the file and what was expected.
    """
    for flag, value in (("--coils", coils), ("--time-window", time_window)):
        if value is not None and value < 1:
            raise ValueError(f"{flag}: expected a positive integer, got {value}")
    out = Path(out_dir)
    start = time.perf_counter()
    cases, skipped = discover(source, in_dir)
    for reason in skipped:
        logger.info("skipped %s", reason)
    tmp = temp_dir_for(out)
    rows: dict[str, formats.SubjectRow] = {}
    patients: dict[str, str] = {}
    coil_owner: tuple[int, Path] | None = None
    cases_info = []
    try:
        for i, case in enumerate(cases):
            t0 = time.perf_counter()
            result = process_case(case, coils, time_window, calib_size)
            s, t, x, y, c = result["kspace"].shape
            if coil_owner is None:
                coil_owner = (c, case.path)
            elif c != coil_owner[0]:
                raise ValueError(f"{case.path}: {c} coil(s), but {coil_owner[1]} has {coil_owner[0]}; cases must "
                                 "have equal coil counts: pass --coils N to compress every case to N virtual coils")
            write_case(tmp / f"{case.name}.h5", case.name, result, initial_mask)
            rows[case.name] = formats.SubjectRow(case.name, x, y, c, t, s)
            patients[case.name] = case.patient
            masks = sorted(result["masks"])
            cases_info.append({"name": case.name, "patient": case.patient, "file": str(case.path),
                               "shape": [s, t, x, y, c], "coils_in": result["attrs"]["coils_in"],
                               "prospective_masks": masks, "seconds": round(time.perf_counter() - t0, 3)})
            logger.info("[%d/%d] %s (patient %s): S=%d T=%d X=%d Y=%d, coils %d -> %d, masks %s, %.1f s, "
                        "peak RSS %.0f MB", i + 1, len(cases), case.name, case.patient, s, t, x, y,
                        result["attrs"]["coils_in"], c, ",".join(masks) or "none", time.perf_counter() - t0,
                        _peak_rss_mb())
        patient_names = sorted(set(patients.values()))
        by_patient = assign_splits(patient_names, split, seed)
        splits = {name: [c for c in rows if patients[c] in set(by_patient[name])] for name in SPLIT_NAMES}
        for name in SPLIT_NAMES:
            formats.write_dataset_csv(tmp / f"{name}.csv", [rows[c] for c in splits[name]])
        if stage_splits and len(by_patient["train"]) >= 2:
            half = len(by_patient["train"]) // 2
            first = set(by_patient["train"][:half])
            formats.write_dataset_csv(tmp / "feature_train.csv",
                                      [rows[c] for c in splits["train"] if patients[c] in first])
            formats.write_dataset_csv(tmp / "recon_train.csv",
                                      [rows[c] for c in splits["train"] if patients[c] not in first])
        elapsed = time.perf_counter() - start
        summary = {
            "generator": "ssfl-recon prepare-data", "source": source, "input": str(Path(in_dir).resolve()),
            "coils": coils, "time_window": time_window, "split": list(split), "seed": seed,
            "initial_mask": initial_mask, "cases": len(rows), "patients": len(patient_names),
            "skipped": skipped, "patient_splits": by_patient, "case_splits": splits, "subjects": cases_info,
            "seconds": round(elapsed, 3), "cases_per_minute": round(60.0 * len(rows) / max(elapsed, 1e-9), 3),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
        }
        publish_folder(tmp, out, summary)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("done: %d case(s) of %d patient(s) in %.1f s (%.2f cases/min, peak RSS %.0f MB) -> %s; "
                "train/val/test patients %d/%d/%d, cases %d/%d/%d%s", len(rows), len(patient_names), elapsed,
                summary["cases_per_minute"], summary["peak_rss_mb"], out,
                *(len(by_patient[n]) for n in SPLIT_NAMES), *(len(splits[n]) for n in SPLIT_NAMES),
                f", {len(skipped)} skipped" if skipped else "")
    return summary

