"""Our HDF5 layout (``format = "ssfl-recon-h5"``, ``version = 1``), one file ``{name}.h5`` per subject.

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

Writes are atomic (:func:`utils.io.atomic_save`); the readers name the file in every error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from data_loader.csv_format import (
    PathLike,
    check_finite,
    check_shape,
    read_dataset_csv,
    require_file,
    resolve_split_csv,
    to_complex64,
)
from utils.io import atomic_save

H5_FORMAT = "ssfl-recon-h5"
H5_VERSION = 1


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
    check_shape(kspace.shape, (None,) * 5, f"{where}: kspace", "(S,T,X,Y,C)")
    s, t, x, y, c = kspace.shape
    check_shape(image.shape, (s, t, x, y, 1), f"{where}: image", "(S,T,X,Y,1)")
    check_shape(coil_maps.shape, (s, 1, x, y, c), f"{where}: coil_maps", "(S,1,X,Y,C)")
    for label, arr in (("kspace", kspace), ("image", image), ("coil_maps", coil_maps)):
        check_finite(arr, f"{where}: {label}")
    if initial_mask is not None:
        initial_mask = np.asarray(initial_mask)
        check_shape(initial_mask.shape, (y, t), f"{where}: initial_mask", "(Y,T)")
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
    path = require_file(path, "HDF5 subject file")
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

    kspace = to_complex64(data["kspace"], f"{path}: kspace")
    check_shape(kspace.shape, (None,) * 5, f"{path}: kspace", "(S,T,X,Y,C)")
    s, t, x, y, c = kspace.shape
    image = to_complex64(data["image"], f"{path}: image")
    check_shape(image.shape, (s, t, x, y, 1), f"{path}: image", "(S,T,X,Y,1)")
    maps = to_complex64(data["coil_maps"], f"{path}: coil_maps")
    check_shape(maps.shape, (s, 1, x, y, c), f"{path}: coil_maps", "(S,1,X,Y,C)")
    for label, arr in (("kspace", kspace), ("image", image), ("coil_maps", maps)):
        check_finite(arr, f"{path}: {label}")
    mask = data["initial_mask"]
    if mask is not None:
        check_shape(mask.shape, (y, t), f"{path}: initial_mask", "(Y,T)")
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
        self.csv_path = resolve_split_csv(self.root, csv_path)
        self.rows = read_dataset_csv(self.csv_path)
        self.items: list[tuple[int, int]] = []
        for i, row in enumerate(self.rows):
            path = require_file(self.root / f"{row.name}.h5", "HDF5 subject file")
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
        path = require_file(self.root / f"{row.name}.h5", "HDF5 subject file")
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
            arr = to_complex64(arrays[key], where)
            check_shape(arr.shape, shape, where, layout)
            check_finite(arr, where)
            out[key] = arr
        if mask is not None:
            check_shape(mask.shape, (y, t), f"{path}: initial_mask", "(Y,T)")
            if not np.all((mask == 0) | (mask == 1)):
                raise ValueError(f"{path}: initial_mask must hold only 0 and 1")
            mask = mask.astype(np.int64)
        out.update(initial_mask=mask, name=row.name, slice=sl)
        return out
