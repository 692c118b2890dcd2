"""Reading one case (k-space, mask, coil maps, optional zero-filled image) for inference commands.

Formats:

* ``.npz`` with ``y`` (B,T,X,Y,C) complex, ``mask`` (B,T,1,Y,1) (or anything broadcastable), ``smaps`` (or
  ``coil_maps``) (B,1,X,Y,C) complex and optional ``x`` (B,T,X,Y,1); rank-4 arrays without the batch axis are
  accepted and get one.
* ``.h5`` in our layout (see the README) with an ``initial_mask`` or the full k-space (then the mask is all ones).
* CMRxRecon ``.mat`` v7.3 k-space (coil maps estimated when absent).
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_loader.cmrx_format import read_cmrxrecon_cine
from data_loader.coil_maps import espirit_coil_maps
from data_loader.h5_format import read_h5_subject
from utils import mri


def _batch(a: np.ndarray, rank: int = 5) -> np.ndarray:
    return a[None] if a.ndim == rank - 1 else a


def _finite(name: str, a: np.ndarray, path: str) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: array '{name}' contains NaN or Inf values")


def _numeric(name: str, a, dtype, source: str) -> np.ndarray:
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{source}: array '{name}' has dtype {a.dtype}, expected numbers")
    return a.astype(dtype)


def case_from_arrays(y, mask, coil_maps, x=None, source: str = "case") -> dict[str, tf.Tensor]:
    y = _batch(_numeric("y", y, np.complex64, source))
    coil_maps = _batch(_numeric("smaps", coil_maps, np.complex64, source))
    mask = _numeric("mask", mask, np.float32, source)
    if mask.ndim == 4:
        mask = mask[None]
    for name, arr in (("y", y), ("mask", mask), ("smaps", coil_maps)):
        _finite(name, arr, source)
    tensors = {"y": tf.constant(y), "mask": tf.constant(mask), "coil_maps": tf.constant(coil_maps)}
    try:
        mri.check_operator_inputs(kspace=tensors["y"], mask=tensors["mask"], coil_maps=tensors["coil_maps"])
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    if x is None:
        x_t = mri.adjoint(tensors["y"], tensors["mask"], tensors["coil_maps"])
    else:
        x = _batch(_numeric("x", x, np.complex64, source))
        _finite("x", x, source)
        x_t = tf.constant(x)
        try:
            mri.check_operator_inputs(image=x_t, kspace=tensors["y"])
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err
    return {"x": x_t, **tensors}


def load_case(path: str | Path) -> dict[str, tf.Tensor]:
    """Loads a case for ``features`` / ``reconstruct``; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise ValueError(f"{path}: not a readable .npz file ({err})") from err
        maps_key = "smaps" if "smaps" in arrays else "coil_maps"
        missing = [k for k in ("y", "mask", maps_key) if k not in arrays]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; expected y, mask, smaps (and optional x), "
                             f"found {sorted(arrays)}")
        return case_from_arrays(arrays["y"], arrays["mask"], arrays[maps_key], arrays.get("x"), str(path))
    if suffix in (".h5", ".hdf5"):
        subject = read_h5_subject(path)
        kspace = subject["kspace"][0]
        mask = subject.get("initial_mask")
        if mask is None:
            mask_t = np.ones((1, kspace.shape[0], 1, kspace.shape[2], 1), np.float32)
        else:
            mask_t = np.asarray(mask, np.float32).T[None, :, None, :, None]
        return case_from_arrays(kspace[None] * mask_t, mask_t, subject["coil_maps"][0][None], source=str(path))
    if suffix == ".mat":
        kspace = read_cmrxrecon_cine(path)[0]  # first slice (T,X,Y,C)
        mask = (np.abs(kspace).sum(axis=(1, 3)) > 0).astype(np.float32)  # (T, Y)
        maps = espirit_coil_maps(kspace.mean(axis=0))
        return case_from_arrays(kspace[None], mask[None, :, None, :, None], np.asarray(maps)[None, None],
                                source=str(path))
    raise ValueError(f"input {str(path)!r}: unsupported format {suffix!r}; expected .npz, .h5 or .mat")
