"""The dual-UNet project's ``cine.npz`` as a data source: read it, convert it to our single-coil layout, write it
as HDF5 subjects with split CSVs so it goes through the normal pipelines (``data.source: h5``).

The layout, from "Deep Learning for Dynamic MRI Reconstruction" (github.com/XiongWenye/Deep-Learning-Dynamic-MRI-
Reconstruction, ``train.py`` ``process_data``): ``np.load('./cine.npz')['dataset']``, one array of shape
(N, T, H, W) = (200, 20, 192, 192), fully sampled magnitude images (real; the network ends in a sigmoid and the
PSNR takes peak 1, so values in [0, 1]). The project simulates the acquisition from them: ``image2kspace`` (a
centred 2-D FFT over (H, W)), a mask that keeps whole rows of H per frame (``mask[b, f, lines, :] = 1``, so H is
the phase-encoding axis and W the readout), and splits the N slices at random into 114 / 29 / 57 for
train / val / test (``torch.utils.data.random_split``).

Our layout (:mod:`utils.mri`): image (S, T, X, Y, 1) complex, X the readout and Y the phase-encoding axis, so by
default (``pe_axis="H"``) X = W and Y = H (each frame is stored transposed) and our masks, which select Y lines,
undersample the rows the project's masks do. Each of the N slices is one subject with S = 1: the image with zero
phase, coil maps of ones (one coil) and k-space ``fft2c(image)`` (centred, orthonormal; the project's FFT is not
normalised, which only scales the k-space).
"""
from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from data_loader import formats
from data_loader.prepare import publish_folder, temp_dir_for
from data_loader.synthetic import assign_splits
from utils.mri import fft2c_np

logger = logging.getLogger(__name__)

__all__ = ["CINE_NPZ_KEY", "PROJECT_SPLIT", "cine_to_single_coil", "prepare_cine_npz", "read_cine_npz"]

CINE_NPZ_KEY = "dataset"  # np.load('./cine.npz')['dataset']
PROJECT_SPLIT = (114, 29, 57)  # random_split(dataset, [114, 29, 57]) of the project's 200 slices
PE_AXES = ("H", "W")


def read_cine_npz(path: str | os.PathLike, key: str = CINE_NPZ_KEY) -> np.ndarray:
    """Reads the (N, T, H, W) magnitude array of a ``cine.npz``.

    Args:
        path: the ``.npz`` file.
        key: array name inside it (the project's is ``dataset``).

    Returns:
        (N, T, H, W) float32 array.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ``.npz`` archive, no array ``key`` (the message lists the names it has), an array that
            is not 4-D, not real-valued or holds NaN/Inf. Values outside [0, 1] are only warned about (the
            project's peak-1 PSNR assumes [0, 1]).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such cine.npz file (expected an .npz archive with the array "
                                f"{key!r} of shape [N, T, H, W])")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, expected an .npz archive with the array {key!r}")
    with archive:
        if key not in archive.files:
            raise ValueError(f"{path}: no array {key!r} (it has {sorted(archive.files)}); the dual-UNet project's "
                             f"cine.npz stores its [N, T, H, W] magnitudes under {CINE_NPZ_KEY!r}")
        try:
            data = archive[key]
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: array {key!r} is unreadable (truncated file?): {err}") from err
    if data.ndim != 4 or min(data.shape, default=0) < 1:
        raise ValueError(f"{path}: array {key!r} has shape {data.shape}; expected [N, T, H, W] magnitudes "
                         "(the project's is [200, 20, 192, 192])")
    if np.iscomplexobj(data) or not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise ValueError(f"{path}: array {key!r} has dtype {data.dtype}; expected real magnitudes (float)")
    data = data.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: array {key!r} holds NaN or Inf")
    low, high = float(data.min()), float(data.max())
    if low < 0.0 or high > 1.0:
        logger.warning("%s: values in [%g, %g]; the dual-UNet project's data are magnitudes in [0, 1] (its PSNR "
                       "takes peak 1)", path, low, high)
    return data


def cine_to_single_coil(magnitudes: np.ndarray, pe_axis: str = "H") -> dict[str, np.ndarray]:
    """Our single-coil arrays of (N, T, H, W) magnitudes.

    Args:
        magnitudes: (N, T, H, W) real images.
        pe_axis: the project's axis that becomes our phase-encoding axis Y: ``"H"`` (default; the project's masks
            select rows of H) or ``"W"`` (no transpose: X = H, Y = W).

    Returns:
        ``image`` (N, T, X, Y, 1) complex64 with zero phase, ``coil_maps`` (N, 1, X, Y, 1) complex64 ones and
        ``kspace`` (N, T, X, Y, 1) complex64 = ``fft2c(coil_maps * image)``.
    """
    if pe_axis not in PE_AXES:
        raise ValueError(f"pe_axis: expected one of {list(PE_AXES)}, got {pe_axis!r}")
    magnitudes = np.asarray(magnitudes)
    if magnitudes.ndim != 4:
        raise ValueError(f"magnitudes: expected [N, T, H, W], got shape {magnitudes.shape}")
    frames = np.swapaxes(magnitudes, 2, 3) if pe_axis == "H" else magnitudes
    image = frames.astype(np.complex64)[..., None]
    n, _, x, y, _ = image.shape
    coil_maps = np.ones((n, 1, x, y, 1), np.complex64)
    kspace = fft2c_np(image * coil_maps).astype(np.complex64)
    return {"image": image, "coil_maps": coil_maps, "kspace": kspace}


def prepare_cine_npz(in_path: str | os.PathLike, out_dir: str | os.PathLike, key: str = CINE_NPZ_KEY,
                     split: Sequence[float] = PROJECT_SPLIT, seed: int = 0, pe_axis: str = "H",
                     prefix: str = "cine") -> dict[str, Any]:
    """Writes a ``cine.npz`` as our HDF5 layout: one ``{prefix}_{i:03d}.h5`` per slice, split CSVs, a manifest.

    The folder is built under a temporary name and renamed into place at the end, so a failed run leaves no
    partial data set. Train with ``data.source: h5``, ``data.root: out_dir`` (single coil: ``data.size`` is
    unused; masks select Y lines, see the module docstring).

    Args:
        in_path: the ``cine.npz``.
        out_dir: output folder (must not exist or be empty).
        key: array name in the archive.
        split: train/val/test weights of the slices (default the project's 114 / 29 / 57 counts; with N = 200
            exactly those counts).
        seed: seed of the random split (the project's own split used torch's unseeded generator).
        pe_axis: see :func:`cine_to_single_coil`.
        prefix: subject name prefix.

    Returns:
        the summary also written as ``manifest.json`` (source, shape, splits, value range).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: output folder exists and is not empty; choose a new folder")
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError(f"split: expected three non-negative train/val/test weights, got {list(split)}")
    magnitudes = read_cine_npz(in_path, key)
    n, t, height, width = magnitudes.shape
    names = [f"{prefix}_{i:03d}" for i in range(n)]
    tmp = temp_dir_for(out)
    try:
        rows = {}
        for i, name in enumerate(names):
            case = cine_to_single_coil(magnitudes[i:i + 1], pe_axis)
            _, _, x, y, c = case["kspace"].shape
            formats.write_h5_subject(tmp / f"{name}.h5", case["kspace"], case["image"], case["coil_maps"], name=name,
                                     attrs={"source": "cine.npz (dual-UNet project)", "source_file": str(in_path),
                                            "source_index": i, "source_key": key, "pe_axis": pe_axis})
            rows[name] = formats.SubjectRow(name, x, y, c, t, 1)
        splits = assign_splits(names, split, seed)
        for split_name, members in splits.items():
            formats.write_dataset_csv(tmp / f"{split_name}.csv", [rows[m] for m in members])
        summary = {"generator": "ssfl-recon prepare_cine_npz", "source": "cine-npz",
                   "input": str(Path(in_path).resolve()), "key": key, "shape_nthw": [n, t, height, width],
                   "layout": "one subject per slice: (S=1, T, X, Y, C=1), zero phase, coil maps of ones",
                   "pe_axis": pe_axis, "split": list(split), "seed": seed,
                   "value_range": [float(magnitudes.min()), float(magnitudes.max())],
                   "case_splits": splits}
        publish_folder(tmp, out, summary)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("cine.npz %s: %d slices of %d frames, %dx%d -> %s (train/val/test %d/%d/%d)", in_path, n, t, height,
                width, out, *(len(splits[s]) for s in ("train", "val", "test")))
    return summary
