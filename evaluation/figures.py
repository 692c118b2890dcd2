"""Figures of reconstructions: comparison panels, cine GIFs, method grids and side-by-side comparison GIFs.

Rendering follows :mod:`evaluation.drawing` (Agg canvas, no pyplot, atomic writes). The run and data figures (loss
curves, the synthetic phantom, k-t masks) are drawn by :mod:`evaluation.plots`; they are re-exported here, so
``from evaluation.figures import save_loss_curves`` keeps working.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evaluation.drawing import (
    MetricCaptions,
    PathLike,
    as_cine,
    check_frame,
    grey_limit,
    max_variance_row,
    new_figure,
    save_png,
    show_image,
)
from evaluation.plots import save_loss_curves, save_mask_figure, save_phantom_figure
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

_ERROR_CMAP = "inferno"


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def _check_same_shape(reference_name: str, reference: np.ndarray, name: str, other: np.ndarray) -> None:
    if other.shape != reference.shape:
        raise ValueError(
            f"{name} must have the shape of {reference_name}: expected {reference.shape}, received {other.shape}"
        )


def _check_scale(error_scale: float) -> float:
    if not (isinstance(error_scale, (int, float, np.floating)) and math.isfinite(error_scale) and error_scale > 0):
        raise ValueError(f"error_scale must be a finite number > 0, received {error_scale!r}")
    return float(error_scale)


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
    gt_c = as_cine("gt", gt)
    zf_c = as_cine("zero_filled", zero_filled)
    rc_c = as_cine("recon", recon)
    _check_same_shape("gt", gt_c, "zero_filled", zf_c)
    _check_same_shape("gt", gt_c, "recon", rc_c)
    n_t, n_x, n_y = gt_c.shape
    frame = check_frame(frame, n_t)
    scale = _check_scale(error_scale)
    if profile_x is None:
        profile_x = max_variance_row(gt_c)
    elif isinstance(profile_x, bool) or not isinstance(profile_x, (int, np.integer)) or not 0 <= profile_x < n_x:
        raise ValueError(f"profile_x must be an int in [0, {n_x - 1}], received {profile_x!r}")
    profile_x = int(profile_x)

    mags = {"gt": np.abs(gt_c), "zf": np.abs(zf_c), "recon": np.abs(rc_c)}
    error = np.abs(rc_c - gt_c) * scale
    vmax = grey_limit(mags["gt"])
    columns = [
        ("gt", "Ground truth", mags["gt"]),
        ("zf", _caption("Zero-filled", metrics, "zero_filled"), mags["zf"]),
        ("recon", _caption(recon_label, metrics, "recon"), mags["recon"]),
        ("error", f"|recon − gt| × {scale:g}", error),
    ]

    fig = new_figure(width=3.0 * 4, height=6.4)
    axes = fig.subplots(2, 4)
    for col, (key, label, cine) in enumerate(columns):
        cmap = _ERROR_CMAP if key == "error" else "gray"
        top, bottom = axes[0, col], axes[1, col]
        handle = show_image(top, cine[frame], vmax, label, cmap=cmap)
        top.set_xlabel("y")
        top.set_ylabel("x")
        # (T, Y) profile transposed so that time runs left to right, as in the usual x-t figures of cine papers
        show_image(bottom, cine[:, profile_x, :].T, vmax, f"y–t profile at x = {profile_x}", cmap=cmap, aspect="auto")
        bottom.set_xlabel("time frame t")
        bottom.set_ylabel("y")
        if key == "gt":
            top.axhline(profile_x, color="tab:orange", linestyle="--", linewidth=1.0)
        if key == "error":
            fig.colorbar(handle, ax=[top, bottom], shrink=0.8, label="magnitude (same scale as images)")
    fig.suptitle(title if title is not None else f"Frame {frame} of {n_t}; profile row x = {profile_x}")
    return save_png(fig, path, dpi)


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
    cine = as_cine("images", images)
    _check_gif_timing(fps, scale)
    mag = np.abs(cine).astype(np.float64)
    if vmax is None:
        vmax = grey_limit(mag)
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
    gt_c = as_cine("gt", gt)
    if not recons:
        raise ValueError("recons must name at least one method")
    methods = {}
    for name, images in recons.items():
        cine = as_cine(f"recons[{name!r}]", images)
        _check_same_shape("gt", gt_c, f"recons[{name!r}]", cine)
        methods[str(name)] = cine
    frame = check_frame(frame, gt_c.shape[0])
    scale = _check_scale(error_scale)
    gt_frame = gt_c[frame]
    vmax = grey_limit(np.abs(gt_frame))

    n_rows = 1 + len(methods)
    fig = new_figure(2 * 3.0, 2.8 * n_rows)
    axes = np.atleast_2d(fig.subplots(n_rows, 2))
    show_image(axes[0, 0], np.abs(gt_frame), vmax, "Ground truth")
    axes[0, 1].set_axis_off()
    for row, (name, cine) in enumerate(methods.items(), start=1):
        show_image(axes[row, 0], np.abs(cine[frame]), vmax, _caption(name, metrics, name))
        handle = show_image(axes[row, 1], np.abs(cine[frame] - gt_frame) * scale, vmax, f"{name}: error × {scale:g}",
                       cmap=_ERROR_CMAP)
        fig.colorbar(handle, ax=axes[row, 1], shrink=0.8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title if title is not None else f"Frame {frame}")
    return save_png(fig, path, dpi)


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
    mags = [np.abs(as_cine(f"cines[{i}]", c)).astype(np.float64) for i, c in enumerate(cines)]
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
    vmax = grey_limit(np.abs(as_cine("cines[0]", arrays[0])))
    grey = _grey_frames(strip, vmax, scale)
    if labels:
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
