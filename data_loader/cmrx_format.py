"""CMRxRecon 2023 cine ``.mat`` files (MATLAB v7.3 = HDF5 behind a 512-byte MATLAB header): read and write.

``kspace_full`` array as (kx, ky, kc, kz, t), which h5py sees reversed as (t, kz, kc, ky, kx) with a compound
dtype of fields ``real`` / ``imag``. :func:`read_cmrxrecon_cine` returns it as (S = kz, T = t, X = kx, Y = ky,
C = kc) complex64; :func:`load_cmrxrecon_subject` adds ESPIRiT coil maps and coil-combined images.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
from scipy.io import loadmat

from data_loader.coil_maps import coil_compress, espirit_coil_maps, sense_combine
from data_loader.csv_format import PathLike, check_finite, check_shape, require_file
from utils.io import atomic_save

logger = logging.getLogger(__name__)

CMRX_KEY = "kspace_full"

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
    check_shape(kspace.shape, (None,) * 5, f"write_cmrxrecon_like({Path(path).name}): kspace", "(S,T,X,Y,C)")
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
    path = require_file(path, "CMRxRecon .mat file")
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
    check_finite(data, f"{path}: {key}")
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
    check_shape(coil_maps.shape, (s, 1, x, y, c), f"{path}: coil_maps", "(S,1,X,Y,C)")
    image = sense_combine(kspace, coil_maps)
    scale = 1.0
    if normalize:
        peak = float(np.abs(image).max())
        if peak > 0:
            scale = 1.0 / peak
            kspace = kspace * np.float32(scale)
            image = image * np.float32(scale)
    return {"kspace": kspace, "coil_maps": coil_maps, "image": image, "scale": scale}
