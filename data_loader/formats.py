"""On-disk data layouts: the original SSFL-Recon preprocessed files, our HDF5 files, and CMRxRecon 2023 cine ``.mat``.

All writers go through :mod:`utils.io` (temporary file + rename), so an interrupted run never leaves a half-written
file under the final name. All readers raise ``FileNotFoundError`` (with the path) for missing files and
``ValueError`` naming the file and the problem for everything else: unreadable or truncated files, shapes that
disagree with each other or with the CSV, wrong dtypes, NaN/Inf values, masks of the wrong size.

Array layouts follow :mod:`utils.mri` with the batch axis used for slices: image (S, T, X, Y, 1), k-space
(S, T, X, Y, C), coil maps (S, 1, X, Y, C), initial mask (Y, T). X is the readout (fully sampled) axis, Y the
phase-encoding axis. K-space is centred (DC at index n // 2) for the orthonormal ``fft2c`` of :mod:`utils.mri`.

1. Original preprocessed layout (what the authors' training code loads), all files in one folder:

   * ``norm_img_{name}.npy``: (S, T, X, Y, 1) complex64, the fully sampled coil-combined images, scaled so that
     the largest magnitude over the subject is 1. (The authors' own files are named ``norm_img_{name}.txt.npy``;
     the reader accepts both.)
   * ``cc_smap_15_{name}.npy``: (S, 1, X, Y, C) complex64 (coil-compressed, time-averaged) coil maps; the "15" is
     part of the original file name and kept whatever C is (C is given by the CSV).
   * ``mask_GRAPPA_{name}.txt``: the "initial 2x" equispaced acquisition mask, Y rows of T comma-separated 0/1.
   * split CSVs (``train.csv``, ``val.csv``, ``test.csv``, optionally ``feature_train.csv`` / ``recon_train.csv``)
     with header ``filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM`` and one row per subject: name, X, Y, C, T, S.
     As in the original loader, a file name is cut at its first dot (``subj.h5`` -> ``subj``).

2. HDF5 layout (``format = "ssfl-recon-h5"``, ``version = 1``), one file ``{name}.h5`` per subject:

   ==================  ===============  ========================================================================
   dataset             dtype            shape / meaning
   ==================  ===============  ========================================================================
   ``kspace``          complex64        (S, T, X, Y, C) fully sampled multi-coil k-space (noisy, as measured)
   ``image``           complex64        (S, T, X, Y, 1) reference image (the noise-free phantom for synthetic
                                        data)
   ``coil_maps``       complex64        (S, 1, X, Y, C) coil sensitivities, ``sum_c |s_c|^2 = 1`` in the body
   ``initial_mask``    uint8, optional  (Y, T) 0/1 initial acquisition mask
   ==================  ===============  ========================================================================

   Optional group ``prospective_masks`` (``prepare-data``): one (T, X, Y) uint8 0/1 dataset per prospective mask of
   the source files (``R04``, ``Uniform8``, ``ktGaussian8``, ...), read by :mod:`data_loader.prospective` for
   ``data.masks: prospective``.

   Root attributes: ``format`` (str, ``"ssfl-recon-h5"``), ``version`` (int, 1), ``name`` (str), ``seed`` (int,
   -1 when not synthetic), ``snr`` (float dB, NaN when unknown/noise-free), and acquisition-like metadata such as
   ``source``, ``fft`` (the transform convention), ``noise_std``, ``num_slices``, ``num_frames``, ``matrix``
   ([X, Y]), ``num_coils``, ``readout_axis``, ``phase_encoding_axis`` and, for synthetic subjects,
   ``ejection_fraction`` (per slice). Unknown extra attributes are preserved and returned by the reader.

3. CMRxRecon 2023 cine ``.mat`` (MATLAB v7.3 = HDF5 behind a 512-byte MATLAB header): MATLAB stores the
   ``kspace_full`` array as (kx, ky, kc, kz, t), which h5py sees reversed as (t, kz, kc, ky, kx) with a compound
   dtype of fields ``real`` / ``imag``. :func:`read_cmrxrecon_cine` returns it as (S = kz, T = t, X = kx, Y = ky,
   C = kc) complex64; :func:`load_cmrxrecon_subject` adds ESPIRiT coil maps and coil-combined images.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from utils.io import atomic_save, atomic_write_text

logger = logging.getLogger(__name__)

CSV_HEADER = ("filename", "nFE", "nPE", "COIL_DIM", "TIME_DIM", "SLICE_DIM")
H5_FORMAT = "ssfl-recon-h5"
H5_VERSION = 1
CMRX_KEY = "kspace_full"

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------- helpers
def _require_file(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _check_finite(array: np.ndarray, where: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{where}: {bad} NaN/Inf value(s), the first at index {first}")


def _check_shape(shape: Sequence[int], expected: Sequence[int | None], where: str, layout: str) -> None:
    """``expected`` may hold None for free axes."""
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        want = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{where}: expected shape {layout} = {want}, got {tuple(shape)}")


def _to_complex64(array: np.ndarray, where: str) -> np.ndarray:
    if not (np.iscomplexobj(array) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{where}: expected complex (or real floating) values, got dtype {array.dtype}")
    return np.asarray(array, dtype=np.complex64)


def subject_stem(filename: str) -> str:
    """Subject name of a CSV ``filename`` entry, cut at its first dot like the original loader (``a.h5`` -> ``a``)."""
    return str(filename).strip().split(".")[0]


# ----------------------------------------------------------------------------------------------- CSV
@dataclass(frozen=True)
class SubjectRow:
    """One row of a split CSV: ``filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM``.

    Attributes:
        filename: subject name (the file stem used in the data file names).
        nx: nFE, readout size X.
        ny: nPE, phase-encoding size Y.
        nc: COIL_DIM, number of coils C.
        nt: TIME_DIM, number of frames T.
        slices: SLICE_DIM, number of slices S.
        line: line number in the CSV (1 = header), 0 when not read from a file.
    """

    filename: str
    nx: int
    ny: int
    nc: int
    nt: int
    slices: int
    line: int = 0

    @property
    def name(self) -> str:
        return subject_stem(self.filename)

    def as_csv(self) -> list[Any]:
        return [self.filename, self.nx, self.ny, self.nc, self.nt, self.slices]


def write_dataset_csv(path: PathLike, rows: Iterable[SubjectRow]) -> None:
    """Writes a split CSV with the original header, atomically.

    Args:
        path: destination (e.g. ``train.csv``).
        rows: one :class:`SubjectRow` per subject.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow(row.as_csv())
    atomic_write_text(path, buffer.getvalue())


def read_dataset_csv(path: PathLike) -> list[SubjectRow]:
    """Reads a split CSV (the six original columns in any order; extra columns, e.g. a pandas index, are ignored).

    Args:
        path: CSV file.

    Returns:
        list of :class:`SubjectRow` (may be empty).

    Raises:
        FileNotFoundError: missing file.
        ValueError: missing columns, a short row, a non-integer or non-positive size, an empty or duplicated name.
    """
    path = _require_file(path, "dataset CSV")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the CSV ({err})") from err
    table = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not table:
        raise ValueError(f"{path}: empty CSV, expected the header {','.join(CSV_HEADER)}")
    header = [h.strip() for h in table[0]]
    missing = [h for h in CSV_HEADER if h not in header]
    if missing:
        raise ValueError(f"{path}: header lacks column(s) {missing}; expected {','.join(CSV_HEADER)}, got {header}")
    index = {h: header.index(h) for h in CSV_HEADER}
    rows, seen = [], {}
    for line_no, cells in enumerate(table[1:], start=2):
        if len(cells) < len(header):
            raise ValueError(f"{path}: line {line_no} has {len(cells)} fields, the header has {len(header)}")
        name = cells[index["filename"]].strip()
        if not subject_stem(name):
            raise ValueError(f"{path}: line {line_no}: empty filename")
        values = []
        for field in CSV_HEADER[1:]:
            raw = cells[index[field]].strip()
            try:
                number = float(raw)
            except ValueError:
                number = float("nan")
            if not np.isfinite(number) or number != int(number) or number < 1:
                raise ValueError(f"{path}: line {line_no} ({name}): {field}={raw!r} is not a positive integer")
            values.append(int(number))
        stem = subject_stem(name)
        if stem in seen:
            raise ValueError(f"{path}: line {line_no}: subject {stem!r} already listed on line {seen[stem]}")
        seen[stem] = line_no
        rows.append(SubjectRow(name, *values, line=line_no))
    return rows


# ------------------------------------------------------------------------------------- original layout
def original_file_names(name: str) -> dict[str, str]:
    """File names of one subject in the original layout (``image``, ``coil_maps``, ``mask``)."""
    from data_loader.masks import grappa_filename

    return {
        "image": f"norm_img_{name}.npy",
        "coil_maps": f"cc_smap_15_{name}.npy",
        "mask": grappa_filename(name),
    }


def _resolve_original(root: Path, file_name: str) -> Path:
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
    from data_loader.masks import equispaced_mask, write_mask_txt

    if not name or "." in name or "/" in name or "\\" in name:
        raise ValueError(f"write_original_subject: name must be a plain file stem without dots, got {name!r}")
    root = Path(root)
    image = np.asarray(image)
    if image.ndim == 4:
        image = image[..., None]
    where = f"write_original_subject({name})"
    _check_shape(image.shape, (None, None, None, None, 1), f"{where}: image", "(S,T,X,Y,1)")
    s, t, x, y, _ = image.shape
    coil_maps = np.asarray(coil_maps)
    _check_shape(coil_maps.shape, (s, 1, x, y, None), f"{where}: coil_maps", "(S,1,X,Y,C)")
    _check_finite(image, f"{where}: image")
    _check_finite(coil_maps, f"{where}: coil_maps")
    peak = float(np.abs(image).max())
    if peak == 0.0:
        raise ValueError(f"{where}: image is all zero, cannot normalise")
    image = (image / peak).astype(np.complex64)
    if initial_mask is None:
        initial_mask = equispaced_mask(y, t, acc=acc, num_center=num_center)
    initial_mask = np.asarray(initial_mask)
    _check_shape(initial_mask.shape, (y, t), f"{where}: initial_mask", "(Y,T)")

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


def _split_csv(root: Path, csv_path: PathLike) -> Path:
    """The split CSV: as given, or inside ``root`` when a relative path does not exist as given."""
    csv_path = Path(csv_path)
    if not csv_path.is_absolute() and not csv_path.exists():
        csv_path = root / csv_path
    return csv_path


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
        self.csv_path = _split_csv(self.root, csv_path)
        self.rows = read_dataset_csv(self.csv_path)
        self._paths: list[dict[str, Path]] = []
        self._masks: list[np.ndarray] = []
        self.items: list[tuple[int, int]] = []
        for i, row in enumerate(self.rows):
            paths = self._check_subject(row)
            self._paths.append(paths)
            self.items.extend((i, s) for s in range(row.slices))

    def _check_subject(self, row: SubjectRow) -> dict[str, Path]:
        from data_loader.masks import read_mask_txt

        names = original_file_names(row.name)
        paths = {key: (_resolve_original(self.root, n) if key != "mask" else self.root / n)
                 for key, n in names.items()}
        _require_file(paths["mask"], "original-layout file")
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
        _check_finite(image, f"{paths['image']} (slice {sl})")
        _check_finite(maps, f"{paths['coil_maps']} (slice {sl})")
        return {
            "image": image.astype(np.complex64),
            "coil_maps": maps.astype(np.complex64),
            "initial_mask": self._masks[subject].copy(),
            "name": row.name,
            "slice": sl,
        }


# ------------------------------------------------------------------------------------------ HDF5 layout
def _h5_attr_value(value: Any) -> Any:
    if value is None:
        return np.nan
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


def write_h5_subject(path: PathLike, kspace: np.ndarray, image: np.ndarray, coil_maps: np.ndarray,
                     initial_mask: np.ndarray | None = None, name: str | None = None, seed: int | None = None,
                     snr: float | None = None, attrs: Mapping[str, Any] | None = None) -> None:
    """Writes one subject in the ``ssfl-recon-h5`` layout (see the module docstring), atomically.

    Args:
        path: destination ``{name}.h5``.
        kspace: (S, T, X, Y, C) complex fully sampled k-space.
        image: (S, T, X, Y, 1) complex reference image.
        coil_maps: (S, 1, X, Y, C) complex coil maps.
        initial_mask: optional (Y, T) 0/1 mask.
        name: subject name (default: the file stem).
        seed: generator seed of synthetic data (stored as -1 when None).
        snr: SNR in dB (stored as NaN when None).
        attrs: extra root attributes (str, numbers, or lists/arrays of numbers).

    Raises:
        ValueError: inconsistent shapes, NaN/Inf, or a mask that is not 0/1.
    """
    path = Path(path)
    kspace, image, coil_maps = np.asarray(kspace), np.asarray(image), np.asarray(coil_maps)
    where = f"write_h5_subject({path.name})"
    _check_shape(kspace.shape, (None,) * 5, f"{where}: kspace", "(S,T,X,Y,C)")
    s, t, x, y, c = kspace.shape
    _check_shape(image.shape, (s, t, x, y, 1), f"{where}: image", "(S,T,X,Y,1)")
    _check_shape(coil_maps.shape, (s, 1, x, y, c), f"{where}: coil_maps", "(S,1,X,Y,C)")
    for label, arr in (("kspace", kspace), ("image", image), ("coil_maps", coil_maps)):
        _check_finite(arr, f"{where}: {label}")
    if initial_mask is not None:
        initial_mask = np.asarray(initial_mask)
        _check_shape(initial_mask.shape, (y, t), f"{where}: initial_mask", "(Y,T)")
        if not np.all((initial_mask == 0) | (initial_mask == 1)):
            raise ValueError(f"{where}: initial_mask must hold only 0 and 1")

    def writer(tmp: Path) -> None:
        # no object timestamps: the same inputs give byte-identical files
        with h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=kspace.astype(np.complex64), track_times=False)
            f.create_dataset("image", data=image.astype(np.complex64), track_times=False)
            f.create_dataset("coil_maps", data=coil_maps.astype(np.complex64), track_times=False)
            if initial_mask is not None:
                f.create_dataset("initial_mask", data=initial_mask.astype(np.uint8), track_times=False)
            f.attrs["format"] = H5_FORMAT
            f.attrs["version"] = H5_VERSION
            f.attrs["name"] = name if name is not None else path.stem
            f.attrs["seed"] = -1 if seed is None else int(seed)
            f.attrs["snr"] = np.nan if snr is None else float(snr)
            f.attrs["num_slices"], f.attrs["num_frames"] = s, t
            f.attrs["matrix"] = np.array([x, y])
            f.attrs["num_coils"] = c
            f.attrs["fft"] = "centred orthonormal fft2c over (X, Y); DC at index n // 2"
            f.attrs["readout_axis"] = "X"
            f.attrs["phase_encoding_axis"] = "Y"
            for key, value in (attrs or {}).items():
                f.attrs[key] = _h5_attr_value(value)

    atomic_save(path, writer)


def _attr_to_python(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_h5_subject(path: PathLike) -> dict[str, Any]:
    """Reads and validates one ``ssfl-recon-h5`` subject file.

    Args:
        path: ``{name}.h5``.

    Returns:
        dict with ``kspace`` (S,T,X,Y,C), ``image`` (S,T,X,Y,1), ``coil_maps`` (S,1,X,Y,C) complex64,
        ``initial_mask`` (Y,T) int64 or None, and ``attrs`` (all root attributes as Python values).

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable/truncated HDF5, wrong ``format`` or newer ``version``, a missing dataset, shapes or
            dtypes that disagree, NaN/Inf values, or a mask that is not 0/1 of size (Y, T).
    """
    path = _require_file(path, "HDF5 subject file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _attr_to_python(v) for k, v in f.attrs.items()}
            if attrs.get("format") != H5_FORMAT:
                raise ValueError(f"{path}: attribute format={attrs.get('format')!r}, expected {H5_FORMAT!r}")
            version = attrs.get("version")
            if not isinstance(version, int) or version > H5_VERSION:
                raise ValueError(f"{path}: unsupported version {version!r} (this reader knows {H5_VERSION})")
            data = {}
            for key in ("kspace", "image", "coil_maps"):
                if key not in f:
                    raise ValueError(f"{path}: dataset {key!r} missing (found {sorted(f.keys())})")
                data[key] = f[key][()]
            data["initial_mask"] = f["initial_mask"][()] if "initial_mask" in f else None
    except ValueError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path}: unreadable HDF5 file (truncated or corrupt?): {err}") from err

    kspace = _to_complex64(data["kspace"], f"{path}: kspace")
    _check_shape(kspace.shape, (None,) * 5, f"{path}: kspace", "(S,T,X,Y,C)")
    s, t, x, y, c = kspace.shape
    image = _to_complex64(data["image"], f"{path}: image")
    _check_shape(image.shape, (s, t, x, y, 1), f"{path}: image", "(S,T,X,Y,1)")
    maps = _to_complex64(data["coil_maps"], f"{path}: coil_maps")
    _check_shape(maps.shape, (s, 1, x, y, c), f"{path}: coil_maps", "(S,1,X,Y,C)")
    for label, arr in (("kspace", kspace), ("image", image), ("coil_maps", maps)):
        _check_finite(arr, f"{path}: {label}")
    mask = data["initial_mask"]
    if mask is not None:
        _check_shape(mask.shape, (y, t), f"{path}: initial_mask", "(Y,T)")
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"{path}: initial_mask must hold only 0 and 1")
        mask = mask.astype(np.int64)
    return {"kspace": kspace, "image": image, "coil_maps": maps, "initial_mask": mask, "attrs": attrs}


class H5Dataset:
    """(subject, slice) items of a split CSV whose subjects are ``{root}/{name}.h5`` files.

    Construction checks that every file exists and that its k-space shape agrees with the CSV; items are dicts like
    those of :class:`OriginalDataset` plus ``kspace`` (T, X, Y, C); only the item's slice is read, and it is
    validated (shapes, finite values, 0/1 mask) on access.

    Args:
        root: folder with the ``.h5`` files.
        csv_path: split CSV (relative paths are also looked up in ``root``).
    """

    def __init__(self, root: PathLike, csv_path: PathLike):
        self.root = Path(root)
        self.csv_path = _split_csv(self.root, csv_path)
        self.rows = read_dataset_csv(self.csv_path)
        self.items: list[tuple[int, int]] = []
        for i, row in enumerate(self.rows):
            path = _require_file(self.root / f"{row.name}.h5", "HDF5 subject file")
            try:
                with h5py.File(path, "r") as f:
                    shape = f["kspace"].shape if "kspace" in f else None
            except OSError as err:
                raise ValueError(f"{path}: unreadable HDF5 file (truncated or corrupt?): {err}") from err
            want = (row.slices, row.nt, row.nx, row.ny, row.nc)
            if shape != want:
                raise ValueError(
                    f"{csv_path}: line {row.line} ({row.name}): CSV sizes (S,T,X,Y,C) = {want} disagree with "
                    f"{path} kspace shape {shape}"
                )
            self.items.extend((i, s) for s in range(row.slices))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject, sl = self.items[index]
        row = self.rows[subject]
        path = _require_file(self.root / f"{row.name}.h5", "HDF5 subject file")
        # read only this slice: a full-size subject is ~70 MB per slice of k-space
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("kspace", "image", "coil_maps") if k not in f]
                if missing:
                    raise ValueError(f"{path}: dataset(s) {missing} missing")
                arrays = {k: f[k][sl] for k in ("kspace", "image", "coil_maps")}
                mask = f["initial_mask"][()] if "initial_mask" in f else None
        except ValueError:
            raise
        except (OSError, KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f"{path}: unreadable HDF5 file (truncated or corrupt?): {err}") from err
        t, x, y, c = row.nt, row.nx, row.ny, row.nc
        expected = {"kspace": ((t, x, y, c), "(T,X,Y,C)"), "image": ((t, x, y, 1), "(T,X,Y,1)"),
                    "coil_maps": ((1, x, y, c), "(1,X,Y,C)")}
        out: dict[str, Any] = {}
        for key, (shape, layout) in expected.items():
            where = f"{path}: {key} (slice {sl})"
            arr = _to_complex64(arrays[key], where)
            _check_shape(arr.shape, shape, where, layout)
            _check_finite(arr, where)
            out[key] = arr
        if mask is not None:
            _check_shape(mask.shape, (y, t), f"{path}: initial_mask", "(Y,T)")
            if not np.all((mask == 0) | (mask == 1)):
                raise ValueError(f"{path}: initial_mask must hold only 0 and 1")
            mask = mask.astype(np.int64)
        out.update(initial_mask=mask, name=row.name, slice=sl)
        return out


# ------------------------------------------------------------------------------------ CMRxRecon .mat
_MAT_HEADER_SIZE = 512


def _matlab_header() -> bytes:
    """The 128-byte MATLAB 7.3 header (fixed date, so written files are reproducible), padded to the userblock."""
    text = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    head = text.encode("ascii").ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
    return head.ljust(_MAT_HEADER_SIZE, b"\x00")


def write_cmrxrecon_like(path: PathLike, kspace: np.ndarray, key: str = CMRX_KEY) -> None:
    """Writes k-space as a CMRxRecon-style MATLAB v7.3 file (for tests and demos), atomically.

    The structure mirrors the real files: a 512-byte userblock holding the MATLAB header before the HDF5
    superblock, one dataset ``key`` with MATLAB's reversed axis order (t, kz, kc, ky, kx), a compound
    ``real``/``imag`` float32 dtype and the ``MATLAB_class`` attribute.

    Args:
        path: destination ``.mat`` file.
        kspace: (S, T, X, Y, C) complex k-space in our layout.
        key: dataset name.
    """
    kspace = np.asarray(kspace)
    _check_shape(kspace.shape, (None,) * 5, f"write_cmrxrecon_like({Path(path).name}): kspace", "(S,T,X,Y,C)")
    matlab_order = np.transpose(kspace, (1, 0, 4, 3, 2))  # -> (t, kz, kc, ky, kx)
    compound = np.empty(matlab_order.shape, dtype=np.dtype([("real", "<f4"), ("imag", "<f4")]))
    compound["real"] = matlab_order.real
    compound["imag"] = matlab_order.imag

    def writer(tmp: Path) -> None:
        with h5py.File(tmp, "w", userblock_size=_MAT_HEADER_SIZE) as f:
            ds = f.create_dataset(key, data=compound, track_times=False)
            ds.attrs["MATLAB_class"] = np.bytes_("single")
        with open(tmp, "r+b") as fh:
            fh.write(_matlab_header())

    atomic_save(path, writer)


def read_cmrxrecon_cine(path: PathLike, key: str = CMRX_KEY) -> np.ndarray:
    """Reads CMRxRecon 2023 cine k-space into our layout.

    MATLAB v7.3 files are read with h5py (axes (t, kz, kc, ky, kx), compound ``real``/``imag`` or complex dtype);
    older v5 ``.mat`` files fall back to ``scipy.io.loadmat`` (axes (kx, ky, kc, kz, t)). Single-coil arrays
    (one axis fewer, no kc) get C = 1.

    Args:
        path: ``.mat`` file (e.g. ``cine_sax.mat``).
        key: variable name (``kspace_full`` for fully sampled data, ``kspace_sub04`` etc. for undersampled).

    Returns:
        (S, T, X, Y, C) complex64 k-space (S = kz, T = t, X = kx, Y = ky, C = kc).

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable/truncated file, missing variable, unexpected dtype or rank, NaN/Inf values.
    """
    path = _require_file(path, "CMRxRecon .mat file")
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                if key not in f:
                    raise ValueError(f"{path}: variable {key!r} not found (found {sorted(f.keys())})")
                raw = f[key][()]
        except ValueError:
            raise
        except (OSError, KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f"{path}: unreadable MATLAB v7.3/HDF5 file (truncated or corrupt?): {err}") from err
        order5, order4 = (1, 0, 4, 3, 2), (1, 0, 3, 2)
    else:
        from scipy.io import loadmat

        try:
            content = loadmat(path, variable_names=[key])
        except Exception as err:  # scipy raises a variety of types for non-MAT or damaged files
            raise ValueError(f"{path}: not a readable .mat file (v7.3/HDF5 or v5): {err}") from err
        if key not in content:
            raise ValueError(f"{path}: variable {key!r} not found")
        raw = content[key]
        order5, order4 = (3, 4, 0, 1, 2), (2, 3, 0, 1)
    if raw.dtype.names is not None:
        if not {"real", "imag"} <= set(raw.dtype.names):
            raise ValueError(f"{path}: {key!r} has compound fields {raw.dtype.names}, expected 'real' and 'imag'")
        data = raw["real"].astype(np.float32) + 1j * raw["imag"].astype(np.float32)
    elif np.iscomplexobj(raw) or np.issubdtype(raw.dtype, np.floating):
        data = raw
    else:
        raise ValueError(f"{path}: {key!r} has dtype {raw.dtype}, expected complex k-space")
    if data.ndim == 5:
        data = np.transpose(data, order5)
    elif data.ndim == 4:
        data = np.transpose(data, order4)[..., None]
    else:
        raise ValueError(
            f"{path}: {key!r} has shape {raw.shape}; expected 5 axes (t,kz,kc,ky,kx) or 4 (t,kz,ky,kx) as h5py "
            "sees them"
        )
    data = np.ascontiguousarray(data, dtype=np.complex64)
    _check_finite(data, f"{path}: {key}")
    return data


def load_cmrxrecon_subject(path: PathLike, key: str = CMRX_KEY, coil_maps: np.ndarray | None = None,
                           calib_size: int | Sequence[int] = 24, num_virtual: int | None = None,
                           normalize: bool = True, **espirit_kwargs: Any) -> dict[str, Any]:
    """CMRxRecon cine k-space plus coil maps and coil-combined images, ready for the HDF5 or original layout.

    Args:
        path: ``.mat`` file.
        key: k-space variable (should be fully sampled at least in the calibration centre).
        coil_maps: (S, 1, X, Y, C) maps to use; when None they are estimated per slice with ESPIRiT from the
            time-averaged calibration centre.
        calib_size: ESPIRiT calibration region (int or (cx, cy)).
        num_virtual: optional SVD coil compression (per subject) to this many virtual coils before estimation.
        normalize: scale k-space so that max |image| over the subject is 1 (the factor is returned).
        **espirit_kwargs: passed to :func:`data_loader.coil_maps.espirit_coil_maps`.

    Returns:
        dict with ``kspace`` (S,T,X,Y,C), ``coil_maps`` (S,1,X,Y,C), ``image`` (S,T,X,Y,1) complex64 (coil
        combination ``sum conj(s) m / sum |s|^2``) and ``scale`` (the factor applied to the k-space).
    """
    from data_loader.coil_maps import coil_compress, espirit_coil_maps, sense_combine

    kspace = read_cmrxrecon_cine(path, key=key)
    if num_virtual is not None:
        if coil_maps is not None:
            raise ValueError("load_cmrxrecon_subject: give either coil_maps or num_virtual, not both")
        kspace, _ = coil_compress(kspace, num_virtual)
    s, t, x, y, c = kspace.shape
    if coil_maps is None:
        maps = np.stack([espirit_coil_maps(kspace[i], calib_size=calib_size, **espirit_kwargs) for i in range(s)])
        coil_maps = maps[:, None]
        logger.info("%s: estimated ESPIRiT maps for %d slice(s)", Path(path).name, s)
    coil_maps = np.asarray(coil_maps, dtype=np.complex64)
    _check_shape(coil_maps.shape, (s, 1, x, y, c), f"{path}: coil_maps", "(S,1,X,Y,C)")
    image = sense_combine(kspace, coil_maps)
    scale = 1.0
    if normalize:
        peak = float(np.abs(image).max())
        if peak > 0:
            scale = 1.0 / peak
            kspace = kspace * np.float32(scale)
            image = image * np.float32(scale)
    return {"kspace": kspace, "coil_maps": coil_maps, "image": image, "scale": scale}
