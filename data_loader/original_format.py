"""The original SSFL-Recon preprocessed layout (what the authors' training code loads), all files in one folder.

* ``norm_img_{name}.npy``: (S, T, X, Y, 1) complex64, the fully sampled coil-combined images, scaled so that
  the largest magnitude over the subject is 1. (The authors' own files are named ``norm_img_{name}.txt.npy``;
  the reader accepts both.)
* ``cc_smap_15_{name}.npy``: (S, 1, X, Y, C) complex64 (coil-compressed, time-averaged) coil maps; the "15" is
  part of the original file name and kept whatever C is (C is given by the CSV).
* ``mask_GRAPPA_{name}.txt``: the "initial 2x" equispaced acquisition mask, Y rows of T comma-separated 0/1.
* split CSVs (``train.csv``, ``val.csv``, ``test.csv``, optionally ``feature_train.csv`` / ``recon_train.csv``)
  with header ``filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM`` and one row per subject: name, X, Y, C, T, S.
  As in the original loader, a file name is cut at its first dot (``subj.h5`` -> ``subj``).
"""
from __future__ import annotations

import tokenize
from pathlib import Path
from typing import Any

import numpy as np

from data_loader.csv_format import (
    PathLike,
    SubjectRow,
    check_finite,
    check_shape,
    read_dataset_csv,
    require_file,
    resolve_split_csv,
)
from data_loader.masks import equispaced_mask, grappa_filename, read_mask_txt, write_mask_txt
from utils.io import atomic_save


def original_file_names(name: str) -> dict[str, str]:
    """File names of one subject in the original layout (``image``, ``coil_maps``, ``mask``)."""
    return {
        "image": f"norm_img_{name}.npy",
        "coil_maps": f"cc_smap_15_{name}.npy",
        "mask": grappa_filename(name),
    }


def resolve_original(root: Path, file_name: str) -> Path:
    """The authors saved ``np.save('x.txt', ...)`` and got ``x.txt.npy``; accept that spelling too."""
    path = root / file_name
    if path.is_file():
        return path
    alt = root / file_name.replace(".npy", ".txt.npy")
    if alt.is_file():
        return alt
    raise FileNotFoundError(f"original-layout file not found: {path} (nor {alt.name})")


def write_original_subject(root: PathLike, name: str, image: np.ndarray, coil_maps: np.ndarray,
                           initial_mask: np.ndarray | None = None, acc: int = 2,
                           num_center: int = 24) -> SubjectRow:
    """Writes one subject in the original preprocessed layout (three files in ``root``).

    Args:
        root: output folder.
        name: subject name (file stem, no dots or path separators).
        image: (S, T, X, Y, 1) or (S, T, X, Y) complex fully sampled images; rescaled here so that
            max |image| over the subject is 1.
        coil_maps: (S, 1, X, Y, C) complex coil maps.
        initial_mask: (Y, T) 0/1 initial acquisition mask; default the equispaced ``acc``-fold mask with
            ``num_center`` central lines (the original's "initial 2x GRAPPA" mask).
        acc: line spacing of the default mask.
        num_center: fully sampled centre lines of the default mask.

    Returns:
        the CSV row of the subject.

    Raises:
        ValueError: inconsistent shapes, NaN/Inf, an all-zero image or a bad name.
    """
    if not name or "." in name or "/" in name or "\\" in name:
        raise ValueError(f"write_original_subject: name must be a plain file stem without dots, got {name!r}")
    root = Path(root)
    image = np.asarray(image)
    if image.ndim == 4:
        image = image[..., None]
    where = f"write_original_subject({name})"
    check_shape(image.shape, (None, None, None, None, 1), f"{where}: image", "(S,T,X,Y,1)")
    s, t, x, y, _ = image.shape
    coil_maps = np.asarray(coil_maps)
    check_shape(coil_maps.shape, (s, 1, x, y, None), f"{where}: coil_maps", "(S,1,X,Y,C)")
    check_finite(image, f"{where}: image")
    check_finite(coil_maps, f"{where}: coil_maps")
    peak = float(np.abs(image).max())
    if peak == 0.0:
        raise ValueError(f"{where}: image is all zero, cannot normalise")
    image = (image / peak).astype(np.complex64)
    if initial_mask is None:
        initial_mask = equispaced_mask(y, t, acc=acc, num_center=num_center)
    initial_mask = np.asarray(initial_mask)
    check_shape(initial_mask.shape, (y, t), f"{where}: initial_mask", "(Y,T)")

    names = original_file_names(name)
    atomic_save(root / names["image"], lambda p: np.save(p, image))
    atomic_save(root / names["coil_maps"], lambda p: np.save(p, coil_maps.astype(np.complex64)))
    write_mask_txt(root / names["mask"], initial_mask)
    return SubjectRow(name, x, y, coil_maps.shape[-1], t, s)


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as err:  # a damaged header
        raise ValueError(f"{path}: cannot read the .npy file (truncated or not a numpy array?): {err}") from err


class OriginalDataset:
    """(subject, slice) items of a split CSV in the original preprocessed layout.

    Construction checks every subject: its three files exist, and the array shapes and the mask size agree with
    the CSV row (errors name the file, the CSV line and the disagreeing field). Arrays are memory-mapped and read
    per item; each loaded item is checked for NaN/Inf.

    Items (``dataset[i]``) are dicts with ``image`` (T, X, Y, 1) complex64, ``coil_maps`` (1, X, Y, C)
    complex64, ``initial_mask`` (Y, T) int64, ``name`` and ``slice``.

    Args:
        root: folder with the subject files.
        csv_path: split CSV; a relative path is looked up in ``root`` when it does not exist as given.
    """

    def __init__(self, root: PathLike, csv_path: PathLike):
        self.root = Path(root)
        self.csv_path = resolve_split_csv(self.root, csv_path)
        self.rows = read_dataset_csv(self.csv_path)
        self._paths: list[dict[str, Path]] = []
        self._masks: list[np.ndarray] = []
        self.items: list[tuple[int, int]] = []
        for i, row in enumerate(self.rows):
            paths = self._check_subject(row)
            self._paths.append(paths)
            self.items.extend((i, s) for s in range(row.slices))

    def _check_subject(self, row: SubjectRow) -> dict[str, Path]:
        names = original_file_names(row.name)
        paths = {key: (resolve_original(self.root, n) if key != "mask" else self.root / n)
                 for key, n in names.items()}
        require_file(paths["mask"], "original-layout file")
        where = f"{self.csv_path}: line {row.line} ({row.name})"
        fields = {"SLICE_DIM": row.slices, "TIME_DIM": row.nt, "nFE": row.nx, "nPE": row.ny, "COIL_DIM": row.nc}
        layouts = {
            "image": (("SLICE_DIM", "TIME_DIM", "nFE", "nPE", None), "(S,T,X,Y,1)", 1),
            "coil_maps": (("SLICE_DIM", None, "nFE", "nPE", "COIL_DIM"), "(S,1,X,Y,C)", 1),
        }
        for key, (axes, layout, fixed) in layouts.items():
            arr = _open_npy(paths[key])
            if arr.ndim != 5:
                raise ValueError(f"{paths[key]}: expected a 5-D array {layout}, got shape {arr.shape} ({where})")
            for axis, field in enumerate(axes):
                want = fixed if field is None else fields[field]
                if arr.shape[axis] != want:
                    label = field or f"axis {axis}"
                    raise ValueError(
                        f"{where}: {label}={want} disagrees with {paths[key]} of shape {arr.shape} {layout}"
                    )
            if not (np.iscomplexobj(arr) or np.issubdtype(arr.dtype, np.floating)):
                raise ValueError(f"{paths[key]}: expected complex values, got dtype {arr.dtype}")
        try:
            mask = read_mask_txt(paths["mask"], ny=row.ny, nt=row.nt)
        except ValueError as err:
            raise ValueError(f"{where}: bad initial mask: {err}") from err
        self._masks.append(mask)
        return paths

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject, sl = self.items[index]
        row, paths = self.rows[subject], self._paths[subject]
        image = np.array(_open_npy(paths["image"])[sl])
        maps = np.array(_open_npy(paths["coil_maps"])[sl])
        check_finite(image, f"{paths['image']} (slice {sl})")
        check_finite(maps, f"{paths['coil_maps']} (slice {sl})")
        return {
            "image": image.astype(np.complex64),
            "coil_maps": maps.astype(np.complex64),
            "initial_mask": self._masks[subject].copy(),
            "name": row.name,
            "slice": sl,
        }
