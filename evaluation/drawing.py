"""Drawing helpers shared by the figure modules: cine checks, the Agg figure, atomic PNG writing, image axes.

Figures are rendered off-screen with matplotlib's Agg canvas attached to a ``matplotlib.figure.Figure`` object.
pyplot is deliberately not imported: it would select a process-wide backend, keep every figure in a global registry
(memory leaks in long runs unless closed) and is not thread-safe; the object API renders with Agg regardless of the
backend the rest of the process uses. Every file is written atomically via ``utils.io.atomic_path`` (temporary name
in the same folder, then ``os.replace``), so an interrupted run never leaves a truncated image behind.

Image arguments are cines of shape (T, X, Y), complex or real, with (T, X, Y, 1) accepted too; magnitudes are shown
with X as image rows and Y as columns.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.io import atomic_path

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
MetricCaptions = Mapping[str, Mapping[str, float]]


def as_cine(name: str, images: Any) -> np.ndarray:
    """Validates a cine argument and returns it as a (T, X, Y) array (complex or real)."""
    arr = np.asarray(images)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array, received dtype {arr.dtype}")
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (T, X, Y) or (T, X, Y, 1); received shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must not have an empty axis; received shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def check_frame(frame: int, n_frames: int) -> int:
    """``frame`` as an int in ``[0, n_frames)``; ``ValueError`` otherwise."""
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < n_frames:
        raise ValueError(f"frame must be an int in [0, {n_frames - 1}], received {frame!r}")
    return int(frame)


def grey_limit(magnitude: np.ndarray) -> float:
    """Upper grey level of a magnitude image: its peak (1 for an all-zero image)."""
    peak = float(np.max(magnitude))
    # An all-zero image would give vmin == vmax, which matplotlib warns about and renders arbitrarily.
    return peak if peak > 0 else 1.0


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout Figure (inches) with an Agg canvas, without pyplot."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: PathLike, dpi: int) -> Path:
    """Writes ``fig`` as a PNG atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    logger.debug("wrote %s", path)
    return path


def show_image(ax: Any, image: np.ndarray, vmax: float, title: str, cmap: str = "gray", **kwargs: Any) -> Any:
    """``imshow`` of a magnitude in ``[0, vmax]`` without interpolation, with a small title."""
    handle = ax.imshow(image, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=9)
    return handle


def max_variance_row(images: np.ndarray) -> int:
    """Row index x whose pixels vary most over time: a line through the beating heart in a cardiac cine.

    Args:
        images: (T, X, Y) or (T, X, Y, 1) cine, complex or real.

    Returns:
        ``argmax_x sum_y var_t |images[t, x, y]|``.
    """
    mag = np.abs(as_cine("images", images))
    return int(np.argmax(np.var(mag, axis=0).sum(axis=1)))
