"""DDEI's per-video normalisation and fixed-length time windows, as pure numpy functions.

Source convention: DDEI's ``CineNetDataTransform(time_window=12, apply_mask=True, normalize=True)``
(``utils/edipo/data/transforms.py``):

* Time window: frames ``[start, start + length)`` with ``start = random.Random(str(tuple(map(ord, fname))))
  .randint(0, 12 - length)``, i.e. a start fixed per file name (always 0 for 12-frame windows of CMRxRecon's 12-frame
  cines). :func:`ddei_window_start` reproduces that draw (with the cine's frame count in place of DDEI's literal 12);
  :func:`time_windows` cuts every window of ``length`` frames ``stride`` apart (non-overlapping by default), for
  using all frames of longer cines.
* Normalisation (``normalize_instance``): the complex image as 2 real channels, ``mean`` and ``std`` (unbiased,
  N - 1) over all real numbers of the windowed video (both channels, every frame and pixel),
  ``x_n = (x - mean) / (std + eps)`` with ``eps = 1e-11``; the mean is subtracted from the real *and* the imaginary
  part (``mean (1 + i)``). DDEI computes the statistics on the fully sampled image (its input k-space is the
  ``FullSample`` folder, masked afterwards) and then builds the k-space from the normalised image. For multi-coil
  k-space, :func:`normalise_video` maps the measurements consistently:
  ``y_n = (y - mean (1 + i) A 1) / (std + eps)`` with ``A 1 = M F (S 1)``, so ``y_n = A x_n`` whenever ``y = A x``.
  ``stats_from="zero_filled"`` takes the statistics from ``A^H y`` instead (no fully sampled data needed).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np

from utils.mri import adjoint_np, forward_np

DDEI_TIME_WINDOW = 12
DDEI_EPS = 1e-11
STATS_SOURCES = ("reference", "zero_filled")


def ddei_window_start(fname: str, num_frames: int, length: int = DDEI_TIME_WINDOW) -> int:
    """DDEI's window start of a file: ``random.Random(str(tuple(map(ord, fname)))).randint(0, T - length)``."""
    if int(length) < 1 or int(length) > int(num_frames):
        raise ValueError(f"length: expected 1 <= length <= num_frames ({num_frames}), received {length}")
    return random.Random(str(tuple(map(ord, fname)))).randint(0, int(num_frames) - int(length))


def window_starts(num_frames: int, length: int = DDEI_TIME_WINDOW, stride: int | None = None) -> list[int]:
    """Starts of every full window of ``length`` frames, ``stride`` (default ``length``) apart."""
    stride = int(length) if stride is None else int(stride)
    if int(length) < 1 or stride < 1:
        raise ValueError(f"length / stride: expected >= 1, received {length}, {stride}")
    if int(length) > int(num_frames):
        raise ValueError(f"length: {length} frames exceed the cine's {num_frames}")
    return list(range(0, int(num_frames) - int(length) + 1, stride))


def time_windows(array: np.ndarray, length: int = DDEI_TIME_WINDOW, stride: int | None = None,
                 axis: int = 0) -> np.ndarray:
    """All windows of ``length`` frames along ``axis``, stacked on a new leading axis.

    Args:
        array: any array with a time axis (e.g. (T,X,Y,C) k-space, (T,1,Y,1) mask).
        length: frames per window (DDEI: 12).
        stride: distance between window starts (default ``length``: non-overlapping); a final partial window is
            dropped.
        axis: the time axis of ``array``.

    Returns:
        (num_windows, *array.shape with ``length`` on ``axis``).
    """
    array = np.asarray(array)
    starts = window_starts(array.shape[axis], length, stride)
    return np.stack([np.take(array, np.arange(s, s + int(length)), axis=axis) for s in starts])


def video_stats(image: np.ndarray, eps: float = DDEI_EPS) -> tuple[float, float]:
    """``(mean, std + eps)`` over the real and imaginary parts of every element (unbiased std, torch's default)."""
    image = np.asarray(image)
    parts = np.stack([image.real, image.imag]).astype(np.float64) if np.iscomplexobj(image) else image
    if parts.size < 2:
        raise ValueError(f"image: need at least 2 real values for a standard deviation, received shape {image.shape}")
    return float(parts.mean()), float(parts.std(ddof=1)) + float(eps)


def normalise_video(kspace: np.ndarray, mask: np.ndarray, coil_maps: np.ndarray, reference: np.ndarray | None = None,
                    stats_from: str = "reference", subtract_mean: bool = True,
                    eps: float = DDEI_EPS) -> dict[str, Any]:
    """DDEI's per-video instance normalisation of one cine (or a batch normalised as one video).

    Args:
        kspace: (…,T,X,Y,C) complex acquired k-space ``y``.
        mask: broadcastable to ``kspace`` ((…,T,1,Y,1)).
        coil_maps: (…,1,X,Y,C) complex.
        reference: (…,T,X,Y,1) fully sampled image; needed with ``stats_from="reference"`` (DDEI's choice).
        stats_from: ``"reference"`` or ``"zero_filled"`` (``A^H y``).
        subtract_mean: subtract ``mean (1 + i)`` (DDEI) or only divide by the std.
        eps: added to the std.

    Returns:
        ``{"kspace", "reference" (or None), "zero_filled", "mean", "std"}``: the normalised arrays (same dtypes),
        ``zero_filled = A^H y_n``, and the statistics (``std`` includes ``eps``), so that ``x = x_n std + mean (1+i)``
        undoes it.
    """
    if stats_from not in STATS_SOURCES:
        raise ValueError(f"stats_from: expected one of {STATS_SOURCES}, received {stats_from!r}")
    kspace, mask, coil_maps = np.asarray(kspace), np.asarray(mask), np.asarray(coil_maps)
    if stats_from == "reference" and reference is None:
        raise ValueError("reference: needed with stats_from='reference' (DDEI's statistics of the fully sampled "
                         "image); pass it or use stats_from='zero_filled'")
    source = reference if stats_from == "reference" else adjoint_np(kspace, mask, coil_maps)
    mean, std = video_stats(source, eps=0.0)
    std += float(eps)
    mean = mean if subtract_mean else 0.0
    offset = np.complex64(mean * (1 + 1j))
    image_shape = kspace.shape[:-1] + (1,)
    constant = forward_np(np.ones(image_shape, kspace.dtype), mask, coil_maps)  # A 1
    kspace_n = ((kspace - offset * constant) / std).astype(kspace.dtype)
    reference_n = None if reference is None else ((np.asarray(reference) - offset) / std).astype(reference.dtype)
    return {"kspace": kspace_n, "reference": reference_n,
            "zero_filled": adjoint_np(kspace_n, mask, coil_maps).astype(kspace.dtype), "mean": mean, "std": std}


def window_and_normalise(name: str, image: np.ndarray, kspace: np.ndarray | None, coil_maps: np.ndarray,
                         initial_mask: np.ndarray | None, time_window: int = 0,
                         normalisation: str = "none") -> list[dict[str, Any]]:
    """One stored example as the examples training sees (``data.time_window``, ``data.video_normalisation``).

    Args:
        name: example name (windows are named ``{name}_t{start}``); errors name it.
        image: (T,X,Y,1) fully sampled image. kspace: (T,X,Y,C) fully sampled k-space, or None (simulated later
            from the image). coil_maps: (1,X,Y,C). initial_mask: (Y,T) stored acquisition mask, or None.
        time_window: frames per window (0: the whole cine); every full, non-overlapping window is an example.
        normalisation: ``none``, ``reference`` (DDEI: statistics of the fully sampled image) or ``zero_filled``
            (statistics of ``A^H y`` under the stored acquisition mask, which the example must have).

    Returns:
        list of ``{"name", "image", "kspace", "initial_mask"}`` (coil maps are unchanged).
    """
    frames = int(image.shape[0])
    if time_window and int(time_window) > frames:
        raise ValueError(f"{name}: data.time_window {time_window} exceeds its {frames} frames")
    starts = window_starts(frames, int(time_window)) if time_window else [0]
    length = int(time_window) if time_window else frames
    out = []
    for start in starts:
        frames_slice = slice(start, start + length)
        entry = {"name": f"{name}_t{start}" if time_window else name, "image": image[frames_slice],
                 "kspace": None if kspace is None else kspace[frames_slice],
                 "initial_mask": None if initial_mask is None else np.asarray(initial_mask)[:, frames_slice]}
        if normalisation != "none":
            entry = _normalised(entry, coil_maps, normalisation)
        out.append(entry)
    return out


def _normalised(entry: dict[str, Any], coil_maps: np.ndarray, normalisation: str) -> dict[str, Any]:
    image = entry["image"]
    if normalisation == "zero_filled":
        if entry["initial_mask"] is None or entry["kspace"] is None:
            raise ValueError(f"{entry['name']}: data.video_normalisation 'zero_filled' needs the stored acquisition "
                             "mask and k-space (HDF5 initial_mask); use 'reference'")
        mask = np.transpose(np.asarray(entry["initial_mask"], np.float32))[:, None, :, None]  # (T,1,Y,1)
        mean, std = video_stats(adjoint_np(entry["kspace"] * mask, mask, coil_maps), eps=0.0)
    else:
        mean, std = video_stats(image, eps=0.0)
    std += DDEI_EPS
    offset = np.complex64(mean * (1 + 1j))
    kspace = entry["kspace"]
    if kspace is not None:  # fully sampled: y_n = (y - mean (1 + i) F(S 1)) / std = F S x_n
        ones = np.ones(image.shape, kspace.dtype)
        kspace = ((kspace - offset * forward_np(ones, np.ones((1, 1, 1, 1), np.float32), coil_maps)) / std)
        kspace = kspace.astype(np.complex64)
    return {**entry, "image": ((image - offset) / std).astype(np.complex64), "kspace": kspace}


def denormalise(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Inverse of the image part of :func:`normalise_video`: ``x_n std + mean (1 + i)``."""
    image = np.asarray(image)
    return (image * std + mean * (1 + 1j)).astype(image.dtype)
