"""Figures: reconstruction panels, cine GIFs, loss curves, method grids, the synthetic phantom and k-t masks.

All figures are rendered off-screen with matplotlib's Agg canvas attached to a ``matplotlib.figure.Figure`` object.
pyplot is deliberately not imported: it would select a process-wide backend, keep every figure in a global registry
(memory leaks in long runs unless closed) and is not thread-safe; the object API renders with Agg regardless of the
backend the rest of the process uses. Every file is written atomically via ``utils.io.atomic_path`` (temporary name
in the same folder, then ``os.replace``), so an interrupted run never leaves a truncated image behind.

Image arguments are cines of shape (T, X, Y), complex or real, with (T, X, Y, 1) accepted too; magnitudes are shown
with X as image rows and Y as columns.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from utils.io import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "save_comparison_panel",
    "save_cine_gif",
    "save_loss_curves",
    "save_method_grid",
    "save_comparison_gif",
    "save_phantom_figure",
    "save_mask_figure",
    "max_variance_row",
    "side_by_side",
]

PathLike = Union[str, os.PathLike]
MetricCaptions = Mapping[str, Mapping[str, float]]

_ERROR_CMAP = "inferno"


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def _as_cine(name: str, images: Any) -> np.ndarray:
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


def _check_same_shape(reference_name: str, reference: np.ndarray, name: str, other: np.ndarray) -> None:
    if other.shape != reference.shape:
        raise ValueError(
            f"{name} must have the shape of {reference_name}: expected {reference.shape}, received {other.shape}"
        )


def _check_frame(frame: int, n_frames: int) -> int:
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < n_frames:
        raise ValueError(f"frame must be an int in [0, {n_frames - 1}], received {frame!r}")
    return int(frame)


def _check_scale(error_scale: float) -> float:
    if not (isinstance(error_scale, (int, float, np.floating)) and math.isfinite(error_scale) and error_scale > 0):
        raise ValueError(f"error_scale must be a finite number > 0, received {error_scale!r}")
    return float(error_scale)


def _grey_limit(magnitude: np.ndarray) -> float:
    peak = float(np.max(magnitude))
    # An all-zero image would give vmin == vmax, which matplotlib warns about and renders arbitrarily.
    return peak if peak > 0 else 1.0


def _caption(label: str, metrics: MetricCaptions | None, key: str) -> str:
    if not metrics or key not in metrics:
        return label
    values = metrics[key]
    parts = []
    if "psnr" in values:
        parts.append(f"PSNR {values['psnr']:.2f} dB")
    if "ssim" in values:
        parts.append(f"SSIM {values['ssim']:.3f}")
    return f"{label}\n{', '.join(parts)}" if parts else label


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: PathLike, dpi: int) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    logger.debug("wrote %s", path)
    return path


def _show(ax: Any, image: np.ndarray, vmax: float, title: str, cmap: str = "gray", **kwargs: Any) -> Any:
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
    mag = np.abs(_as_cine("images", images))
    return int(np.argmax(np.var(mag, axis=0).sum(axis=1)))


# ----------------------------------------------------------------------------------------------------------------------
# Public figure writers
# ----------------------------------------------------------------------------------------------------------------------


def save_comparison_panel(
    path: PathLike,
    gt: np.ndarray,
    zero_filled: np.ndarray,
    recon: np.ndarray,
    frame: int = 0,
    profile_x: int | None = None,
    title: str | None = None,
    metrics: MetricCaptions | None = None,
    error_scale: float = 5.0,
    dpi: int = 120,
    recon_label: str = "Reconstruction",
) -> Path:
    """Writes a PNG comparing ground truth, zero-filled input and reconstruction for one frame, with y-t profiles.

    Top row: |gt|, |zero-filled|, |recon| of ``frame`` on one grey scale (0 to max|gt| of the cine) and the error
    map ``|recon - gt| * error_scale`` on the same scale. Bottom row: the line ``x = profile_x`` over time (y-t
    image, time on the horizontal axis) for the same four images; the line is marked on the ground truth.

    Args:
        path: destination PNG.
        gt: ground truth cine, (T, X, Y) or (T, X, Y, 1).
        zero_filled: zero-filled reconstruction, same shape.
        recon: reconstruction, same shape.
        frame: time frame shown in the top row.
        profile_x: row of the y-t profile; default: ``max_variance_row(gt)``.
        title: figure title; default names the frame and the profile row.
        metrics: optional captions, ``{"zero_filled": {"psnr": .., "ssim": ..}, "recon": {...}}``.
        error_scale: amplification of the error map.
        dpi: resolution of the PNG.
        recon_label: caption of the reconstruction column (e.g. the method's name).

    Returns:
        The path written.

    Raises:
        ValueError: shapes differ or are not (T, X, Y[, 1]), non-finite values, frame or profile_x out of range.
    """
    gt_c = _as_cine("gt", gt)
    zf_c = _as_cine("zero_filled", zero_filled)
    rc_c = _as_cine("recon", recon)
    _check_same_shape("gt", gt_c, "zero_filled", zf_c)
    _check_same_shape("gt", gt_c, "recon", rc_c)
    n_t, n_x, n_y = gt_c.shape
    frame = _check_frame(frame, n_t)
    scale = _check_scale(error_scale)
    if profile_x is None:
        profile_x = max_variance_row(gt_c)
    elif isinstance(profile_x, bool) or not isinstance(profile_x, (int, np.integer)) or not 0 <= profile_x < n_x:
        raise ValueError(f"profile_x must be an int in [0, {n_x - 1}], received {profile_x!r}")
    profile_x = int(profile_x)

    mags = {"gt": np.abs(gt_c), "zf": np.abs(zf_c), "recon": np.abs(rc_c)}
    error = np.abs(rc_c - gt_c) * scale
    vmax = _grey_limit(mags["gt"])
    columns = [
        ("gt", "Ground truth", mags["gt"]),
        ("zf", _caption("Zero-filled", metrics, "zero_filled"), mags["zf"]),
        ("recon", _caption(recon_label, metrics, "recon"), mags["recon"]),
        ("error", f"|recon − gt| × {scale:g}", error),
    ]

    fig = _new_figure(width=3.0 * 4, height=6.4)
    axes = fig.subplots(2, 4)
    for col, (key, label, cine) in enumerate(columns):
        cmap = _ERROR_CMAP if key == "error" else "gray"
        top, bottom = axes[0, col], axes[1, col]
        handle = _show(top, cine[frame], vmax, label, cmap=cmap)
        top.set_xlabel("y")
        top.set_ylabel("x")
        # (T, Y) profile transposed so that time runs left to right, as in the usual x-t figures of cine papers
        _show(bottom, cine[:, profile_x, :].T, vmax, f"y–t profile at x = {profile_x}", cmap=cmap, aspect="auto")
        bottom.set_xlabel("time frame t")
        bottom.set_ylabel("y")
        if key == "gt":
            top.axhline(profile_x, color="tab:orange", linestyle="--", linewidth=1.0)
        if key == "error":
            fig.colorbar(handle, ax=[top, bottom], shrink=0.8, label="magnitude (same scale as images)")
    fig.suptitle(title if title is not None else f"Frame {frame} of {n_t}; profile row x = {profile_x}")
    return _save_png(fig, path, dpi)


def save_cine_gif(
    path: PathLike,
    images: np.ndarray,
    fps: float = 10,
    scale: int = 1,
    vmax: float | None = None,
) -> Path:
    """Writes an animated, looping GIF of the magnitude of a cine.

    All frames share one grey scale (0 to ``vmax``), so intensity changes over the cardiac cycle stay visible.
    Pillow (a dependency of matplotlib) stores identical consecutive frames once with their durations added, so a
    cine with repeated frames plays correctly but reports fewer frames.

    Args:
        path: destination GIF.
        images: cine, (T, X, Y) or (T, X, Y, 1), complex or real.
        fps: frames per second (GIF timing has 10 ms resolution).
        scale: integer nearest-neighbour magnification of every frame.
        vmax: magnitude mapped to white; default max|images|.

    Returns:
        The path written.

    Raises:
        ValueError: bad shape, non-finite values, fps <= 0, scale < 1 or vmax <= 0.
    """
    cine = _as_cine("images", images)
    _check_gif_timing(fps, scale)
    mag = np.abs(cine).astype(np.float64)
    if vmax is None:
        vmax = _grey_limit(mag)
    elif not (math.isfinite(vmax) and vmax > 0):
        raise ValueError(f"vmax must be a finite number > 0, received {vmax!r}")
    return _write_gif(path, _grey_frames(mag, vmax, scale), fps)


def _check_gif_timing(fps: float, scale: int) -> None:
    if not (isinstance(fps, (int, float, np.number)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, received {fps!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, received {scale!r}")


def _grey_frames(magnitude: np.ndarray, vmax: float, scale: int) -> np.ndarray:
    """(T, X, Y) magnitudes as uint8 grey levels (0 to ``vmax``), magnified ``scale`` times."""
    grey = np.clip(np.rint(magnitude / vmax * 255.0), 0, 255).astype(np.uint8)
    if scale > 1:
        grey = grey.repeat(scale, axis=1).repeat(scale, axis=2)
    return grey


def _write_gif(path: PathLike, grey: np.ndarray, fps: float) -> Path:
    """Writes the (T, H, W) uint8 frames as a looping GIF (atomically)."""
    frames = [Image.fromarray(np.ascontiguousarray(f)) for f in grey]
    duration_ms = max(10, int(round(1000.0 / fps)))
    path = Path(path)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    logger.debug("wrote %s (%d frames)", path, len(frames))
    return path


def _read_loss_table(source: PathLike | Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """Reads a Keras CSVLogger file or a dict of columns into float arrays of equal length."""
    if isinstance(source, Mapping):
        table = {str(k): list(v) for k, v in source.items()}
        origin = "dict"
    else:
        origin = str(source)
        with open(source, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows or not rows[0]:
            raise ValueError(f"loss table {origin} is empty (expected a header like epoch,loss,val_loss)")
        header = [h.strip() for h in rows[0]]
        body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
        table = {h: [] for h in header}
        for line_no, row in enumerate(body, start=2):
            if len(row) != len(header):
                raise ValueError(f"{origin} line {line_no} has {len(row)} fields, the header has {len(header)}")
            for h, cell in zip(header, row):
                table[h].append(cell)
    lengths = {k: len(v) for k, v in table.items()}
    if not table or max(lengths.values(), default=0) == 0:
        raise ValueError(f"loss table {origin} has no rows")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns of the loss table {origin} differ in length: {lengths}")
    columns: dict[str, np.ndarray] = {}
    for key, values in table.items():
        try:
            # Keras writes empty cells when a value is missing for an epoch (e.g. validation every n epochs).
            columns[key] = np.array([np.nan if str(v).strip() == "" else float(v) for v in values], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"column {key!r} of the loss table {origin} is not numeric: {exc}") from None
    return columns


def save_loss_curves(
    path: PathLike,
    csv_path_or_dict: PathLike | Mapping[str, Sequence[float]],
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Plots the loss curves of a run (epoch vs every loss column) to a PNG.

    Columns whose name contains "loss" are plotted (all non-epoch columns if none does); validation columns
    (``val_`` prefix) are dashed in the colour of their training counterpart. The y axis is logarithmic when every
    plotted finite value is positive. Missing values (empty CSV cells, NaN) are skipped and the remaining points of
    that column are joined.

    Args:
        path: destination PNG.
        csv_path_or_dict: a ``loss.csv`` with header ``epoch,loss,val_loss,...`` (Keras ``CSVLogger``), or a dict
            column name -> sequence of numbers; without an ``epoch`` column the row index is used.
        title: figure title; default "Training losses".
        dpi: resolution of the PNG.

    Returns:
        The path written.

    Raises:
        ValueError: empty table, ragged or non-numeric columns, or no column to plot.
        FileNotFoundError: the CSV does not exist.
    """
    columns = _read_loss_table(csv_path_or_dict)
    n_rows = len(next(iter(columns.values())))
    epochs = columns.pop("epoch", np.arange(n_rows, dtype=np.float64))
    names = [k for k in columns if "loss" in k.lower()] or list(columns)
    if not names:
        raise ValueError("the loss table has no column to plot besides 'epoch'")
    finite = np.concatenate([columns[k][np.isfinite(columns[k])] for k in names])
    log_y = finite.size > 0 and bool(np.all(finite > 0))

    fig = _new_figure(6.4, 4.0)
    ax = fig.subplots()
    colours: dict[str, Any] = {}
    for name in sorted(names, key=lambda n: (n.startswith("val_"), n)):
        base = name[4:] if name.startswith("val_") else name
        style = "--" if name.startswith("val_") else "-"
        # Missing values are dropped rather than left as NaN, so a loss validated every n epochs is still a line.
        keep = np.isfinite(columns[name]) & np.isfinite(epochs)
        (line,) = ax.plot(epochs[keep], columns[name][keep], style, marker=".", label=name, color=colours.get(base))
        colours.setdefault(base, line.get_color())
    if log_y:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)" if log_y else "loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title if title is not None else "Training losses")
    return _save_png(fig, path, dpi)


def save_method_grid(
    path: PathLike,
    gt: np.ndarray,
    recons: Mapping[str, np.ndarray],
    frame: int = 0,
    error_scale: float = 5.0,
    metrics: MetricCaptions | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Writes a PNG grid comparing several methods on one frame: one row per method, image and error map.

    The first row shows the ground truth; each following row shows a method's magnitude image and its error map
    ``|recon - gt| * error_scale``, all on the grey scale 0 to max|gt[frame]|.

    Args:
        path: destination PNG.
        gt: ground truth cine, (T, X, Y) or (T, X, Y, 1).
        recons: method name -> cine of the same shape (insertion order is the row order).
        frame: time frame shown.
        error_scale: amplification of the error maps.
        metrics: optional captions per method name, ``{name: {"psnr": .., "ssim": ..}}``.
        title: figure title; default names the frame.
        dpi: resolution of the PNG.

    Returns:
        The path written.

    Raises:
        ValueError: no methods, shapes differ or are not (T, X, Y[, 1]), non-finite values, frame out of range.
    """
    gt_c = _as_cine("gt", gt)
    if not recons:
        raise ValueError("recons must name at least one method")
    methods = {}
    for name, images in recons.items():
        cine = _as_cine(f"recons[{name!r}]", images)
        _check_same_shape("gt", gt_c, f"recons[{name!r}]", cine)
        methods[str(name)] = cine
    frame = _check_frame(frame, gt_c.shape[0])
    scale = _check_scale(error_scale)
    gt_frame = gt_c[frame]
    vmax = _grey_limit(np.abs(gt_frame))

    n_rows = 1 + len(methods)
    fig = _new_figure(2 * 3.0, 2.8 * n_rows)
    axes = np.atleast_2d(fig.subplots(n_rows, 2))
    _show(axes[0, 0], np.abs(gt_frame), vmax, "Ground truth")
    axes[0, 1].set_axis_off()
    for row, (name, cine) in enumerate(methods.items(), start=1):
        _show(axes[row, 0], np.abs(cine[frame]), vmax, _caption(name, metrics, name))
        handle = _show(axes[row, 1], np.abs(cine[frame] - gt_frame) * scale, vmax, f"{name}: error × {scale:g}",
                       cmap=_ERROR_CMAP)
        fig.colorbar(handle, ax=axes[row, 1], shrink=0.8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title if title is not None else f"Frame {frame}")
    return _save_png(fig, path, dpi)


def side_by_side(cines: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Concatenates cines of equal (T, X) along Y with ``gap`` zero columns between them.

    Args:
        cines: cines of shape (T, X, Y_i) or (T, X, Y_i, 1), complex or real, with the same T and X.
        gap: number of zero columns between two cines.

    Returns:
        (T, X, sum Y_i + gap * (n - 1)) magnitude array (float64).
    """
    if not cines:
        raise ValueError("cines must contain at least one cine")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be an int >= 0, received {gap!r}")
    mags = [np.abs(_as_cine(f"cines[{i}]", c)).astype(np.float64) for i, c in enumerate(cines)]
    n_t, n_x = mags[0].shape[:2]
    for i, mag in enumerate(mags[1:], start=1):
        if mag.shape[:2] != (n_t, n_x):
            raise ValueError(f"cines[{i}] must have T, X = {(n_t, n_x)} like cines[0], received {mag.shape[:2]}")
    parts = []
    for i, mag in enumerate(mags):
        if i and gap:
            parts.append(np.zeros((n_t, n_x, gap)))
        parts.append(mag)
    return np.concatenate(parts, axis=2)


def save_comparison_gif(
    path: PathLike,
    cines: Mapping[str, np.ndarray],
    fps: float = 10,
    scale: int = 2,
    gap: int = 2,
    labels: bool = True,
) -> Path:
    """Writes an animated GIF that plays several cines side by side (e.g. ground truth | zero-filled | method).

    All cines share the grey scale of the first one (0 to its max magnitude), so a method's intensity errors stay
    visible. With ``labels`` a black strip above the images carries each cine's name in Pillow's default font
    (shortened to the width of its cine).

    Args:
        path: destination GIF.
        cines: name -> cine (T, X, Y) or (T, X, Y, 1); same T and X for all (insertion order = left to right).
        fps: frames per second.
        scale: integer nearest-neighbour magnification.
        gap: zero columns between two cines (before magnification).
        labels: draw the names above the cines.

    Returns:
        The path written.

    Raises:
        ValueError: no cine, shapes that do not fit, non-finite values, bad fps/scale/gap.
    """
    if not cines:
        raise ValueError("cines must name at least one cine")
    names = [str(n) for n in cines]
    arrays = list(cines.values())
    strip = side_by_side(arrays, gap)
    _check_gif_timing(fps, scale)
    vmax = _grey_limit(np.abs(_as_cine("cines[0]", arrays[0])))
    grey = _grey_frames(strip, vmax, scale)
    if labels:
        from PIL import ImageDraw, ImageFont

        font = ImageFont.load_default()
        header = 14
        label_strip = Image.new("L", (grey.shape[2], header), 0)
        draw = ImageDraw.Draw(label_strip)
        left = 0
        for name, cine in zip(names, arrays):
            width = np.asarray(cine).shape[2] * scale
            # names wider than their cine are shortened rather than drawn over the neighbour's
            while name and draw.textlength(name, font=font) > width - 2:
                name = name[:-1]
            draw.text((left + 2, 1), name, fill=255, font=font)
            left += width + gap * scale
        label_pixels = np.asarray(label_strip)
        grey = np.concatenate([np.broadcast_to(label_pixels, (grey.shape[0], *label_pixels.shape)), grey], axis=1)
    return _write_gif(path, grey, fps)


def save_phantom_figure(
    path: PathLike,
    image: np.ndarray,
    coil_maps: np.ndarray,
    profile_x: int | None = None,
    frames: Sequence[int] | None = None,
    frame_captions: Sequence[str] | None = None,
    curves: Mapping[str, Sequence[float]] | None = None,
    curves_title: str = "",
    curves_ylabel: str = "",
    title: str | None = None,
    dpi: int = 80,
) -> Path:
    """Figure of one synthetic (or any) multi-coil cine: frames, x-t profile, phase, curves and coil maps.

    Row 1: |image| of up to four frames (default: spread over the cycle) with the profile line dashed. Row 2: the
    x-t profile (line ``x = profile_x`` over time, time left to right), the phase of the first shown frame relative
    to its mean phase where |image| exceeds 5 % of its maximum, and optional curves over time (e.g. blood-pool
    areas). Row 3: |s_c| of every coil (at most 8 shown) and ``sum_c |s_c|^2``.

    Args:
        path: destination PNG.
        image: cine (T, X, Y) or (T, X, Y, 1), complex.
        coil_maps: (X, Y, C), (1, X, Y, C) coil sensitivities.
        profile_x: row of the x-t profile; default ``max_variance_row(image)``.
        frames: frame indices of row 1 (at most 4 used).
        frame_captions: one caption per shown frame (default "frame t").
        curves: label -> T values, drawn against the frame index.
        curves_title: title of the curves panel.
        curves_ylabel: y label of the curves panel.
        title: figure title.
        dpi: resolution.

    Returns:
        The path written.

    Raises:
        ValueError: bad shapes, coil maps that do not match X, Y, out-of-range frame or profile row.
    """
    cine = _as_cine("image", image)
    n_t, n_x, n_y = cine.shape
    maps = np.asarray(coil_maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3 or maps.shape[:2] != (n_x, n_y):
        raise ValueError(f"coil_maps must have shape (X, Y, C) or (1, X, Y, C) with X, Y = {(n_x, n_y)}, "
                         f"received {np.shape(coil_maps)}")
    if frames is None:
        frames = np.unique(np.linspace(0, n_t - 1, min(4, n_t)).round().astype(int)).tolist()
    frames = [_check_frame(int(t), n_t) for t in list(frames)[:4]]
    if frame_captions is not None and len(frame_captions) < len(frames):
        raise ValueError(f"frame_captions needs {len(frames)} entries, received {len(frame_captions)}")
    if profile_x is None:
        profile_x = max_variance_row(cine)
    elif isinstance(profile_x, bool) or not isinstance(profile_x, (int, np.integer)) or not 0 <= profile_x < n_x:
        raise ValueError(f"profile_x must be an int in [0, {n_x - 1}], received {profile_x!r}")
    profile_x = int(profile_x)
    mag = np.abs(cine)
    vmax = _grey_limit(mag)

    n_coils = maps.shape[-1]
    shown_coils = min(n_coils, 8)
    fig = _new_figure(13.0, 9.6)
    grid = fig.add_gridspec(3, 4, height_ratios=[1.0, 0.9, 0.75])
    for k, t in enumerate(frames):
        ax = fig.add_subplot(grid[0, k])
        _show(ax, mag[t], vmax, frame_captions[k] if frame_captions is not None else f"frame {t}")
        ax.axhline(profile_x, color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_xlabel("y (phase encoding)")
        ax.set_ylabel("x (readout)")
    ax = fig.add_subplot(grid[1, :2])
    _show(ax, mag[:, profile_x, :].T, vmax, f"x-t profile: line x = {profile_x} (dashed) over time", aspect="auto")
    ax.set_xlabel("time frame")
    ax.set_ylabel("y (phase encoding)")
    ax = fig.add_subplot(grid[1, 2])
    first = cine[frames[0]]
    inside = np.abs(first) > 0.05 * vmax
    # relative to the mean phase the smooth background phase does not wrap at +-pi, and its variation is visible
    relative = np.angle(first * np.exp(-1j * np.angle(np.sum(first[inside])))) if inside.any() else np.angle(first)
    phase = np.where(inside, relative, np.nan)
    limit = float(np.nanmax(np.abs(phase))) if inside.any() else np.pi
    handle = ax.imshow(phase, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_title(f"phase of frame {frames[0]} minus its mean (rad)", fontsize=9)
    ax.set_xlabel("y (phase encoding)")
    ax.set_ylabel("x (readout)")
    fig.colorbar(handle, ax=ax, shrink=0.8)
    if curves:
        ax = fig.add_subplot(grid[1, 3])
        for (label, values), marker in zip(curves.items(), "osd^v<>"):
            ax.plot(np.arange(len(values)), np.asarray(values, dtype=np.float64), marker=marker, label=label)
        ax.set_title(curves_title, fontsize=9)
        ax.set_xlabel("time frame")
        ax.set_ylabel(curves_ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    coil_grid = grid[2, :].subgridspec(1, shown_coils + 1)
    sos = np.sum(np.abs(maps) ** 2, axis=-1)
    for c in range(shown_coils):
        ax = fig.add_subplot(coil_grid[0, c])
        _show(ax, np.abs(maps[..., c]), 1.0, f"|s_{c}|", cmap="viridis")
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(coil_grid[0, shown_coils])
    handle = _show(ax, sos, max(1.0, float(sos.max())), "Σ_c |s_c|²", cmap="viridis")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(handle, ax=ax, shrink=0.8)
    more = f" (first {shown_coils} of {n_coils} coils shown)" if shown_coils < n_coils else ""
    fig.suptitle((title if title is not None else f"cine T={n_t}, {n_x}x{n_y}, C={n_coils}") + more)
    return _save_png(fig, path, dpi)


def _as_mask_2d(name: str, mask: Any) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2 or 0 in arr.shape or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric (ny, nt) array, received shape {arr.shape}, dtype {arr.dtype}")
    if not np.all(np.isin(arr, (0, 1))):
        raise ValueError(f"{name} must contain only 0 and 1")
    return arr.astype(np.float64)


def save_mask_figure(
    path: PathLike,
    masks: Mapping[str, np.ndarray],
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Pictures of k-t sampling masks: per mask the ky-t pattern and the fraction of frames sampling each ky.

    Each mask gets a pair of panels sharing the ky axis: the (ny, nt) pattern (sampled = white, ky upwards, time
    to the right) and a profile of ``mean_t mask[ky, t]`` (1 = sampled in every frame). The caption gives the
    effective acceleration ``ny * nt / sum(mask)``, the lines per frame and how many ky lines are sampled at all.

    Args:
        path: destination PNG.
        masks: caption -> (ny, nt) 0/1 mask (insertion order = left to right).
        title: figure title.
        dpi: resolution.

    Returns:
        The path written.

    Raises:
        ValueError: no masks, a mask that is not a 2-D 0/1 array or has no sample.
    """
    if not masks:
        raise ValueError("masks must name at least one mask")
    arrays = {str(k): _as_mask_2d(f"masks[{k!r}]", v) for k, v in masks.items()}
    for name, mask in arrays.items():
        if not mask.any():
            raise ValueError(f"masks[{name!r}] has no sampled k-t point")
    n = len(arrays)
    widest_nt = max(m.shape[1] for m in arrays.values())
    fig = _new_figure(min(18.0, n * (1.6 + 0.09 * widest_nt + 1.2)), 4.6)
    grid = fig.add_gridspec(1, 2 * n, width_ratios=[3, 1] * n)
    for k, (name, mask) in enumerate(arrays.items()):
        ny, nt = mask.shape
        per_frame = mask.sum(axis=0).astype(int)
        r_eff = ny * nt / mask.sum()
        covered = int(mask.any(axis=1).sum())
        ax = fig.add_subplot(grid[0, 2 * k])
        ax.imshow(mask, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest", origin="lower",
                  extent=(-0.5, nt - 0.5, -0.5, ny - 0.5))
        lines = f"{per_frame.min()}" if per_frame.min() == per_frame.max() else f"{per_frame.min()}–{per_frame.max()}"
        ax.set_title(f"{name}\nR_eff {r_eff:.2f}, {lines} lines/frame\n{covered}/{ny} ky lines sampled", fontsize=9)
        ax.set_xlabel("time frame")
        ax.set_ylabel("ky (line index)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        density = fig.add_subplot(grid[0, 2 * k + 1], sharey=ax)
        density.plot(mask.mean(axis=1), np.arange(ny), color="tab:blue", linewidth=1.0)
        density.set_xlim(0, 1.05)
        density.set_xlabel("fraction\nof frames", fontsize=8)
        density.tick_params(labelleft=False, labelsize=7)
        density.grid(True, alpha=0.3)
    if title is not None:
        fig.suptitle(title)
    return _save_png(fig, path, dpi)
