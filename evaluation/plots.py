"""Figures of runs and data: loss curves of a training run, the synthetic phantom and k-t sampling masks.

Rendering follows :mod:`evaluation.drawing` (Agg canvas, no pyplot, atomic writes). Imported by the trainers (loss
curves) and the commands (``make-data``, ``make-masks``); never by ``utils/``.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from evaluation.drawing import (
    PathLike,
    as_cine,
    check_frame,
    grey_limit,
    max_variance_row,
    new_figure,
    save_png,
    show_image,
)


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

    fig = new_figure(6.4, 4.0)
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
    return save_png(fig, path, dpi)



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
    cine = as_cine("image", image)
    n_t, n_x, n_y = cine.shape
    maps = np.asarray(coil_maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3 or maps.shape[:2] != (n_x, n_y):
        raise ValueError(f"coil_maps must have shape (X, Y, C) or (1, X, Y, C) with X, Y = {(n_x, n_y)}, "
                         f"received {np.shape(coil_maps)}")
    if frames is None:
        frames = np.unique(np.linspace(0, n_t - 1, min(4, n_t)).round().astype(int)).tolist()
    frames = [check_frame(int(t), n_t) for t in list(frames)[:4]]
    if frame_captions is not None and len(frame_captions) < len(frames):
        raise ValueError(f"frame_captions needs {len(frames)} entries, received {len(frame_captions)}")
    if profile_x is None:
        profile_x = max_variance_row(cine)
    elif isinstance(profile_x, bool) or not isinstance(profile_x, (int, np.integer)) or not 0 <= profile_x < n_x:
        raise ValueError(f"profile_x must be an int in [0, {n_x - 1}], received {profile_x!r}")
    profile_x = int(profile_x)
    mag = np.abs(cine)
    vmax = grey_limit(mag)

    n_coils = maps.shape[-1]
    shown_coils = min(n_coils, 8)
    fig = new_figure(13.0, 9.6)
    grid = fig.add_gridspec(3, 4, height_ratios=[1.0, 0.9, 0.75])
    for k, t in enumerate(frames):
        ax = fig.add_subplot(grid[0, k])
        show_image(ax, mag[t], vmax, frame_captions[k] if frame_captions is not None else f"frame {t}")
        ax.axhline(profile_x, color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_xlabel("y (phase encoding)")
        ax.set_ylabel("x (readout)")
    ax = fig.add_subplot(grid[1, :2])
    show_image(ax, mag[:, profile_x, :].T, vmax, f"x-t profile: line x = {profile_x} (dashed) over time", aspect="auto")
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
        show_image(ax, np.abs(maps[..., c]), 1.0, f"|s_{c}|", cmap="viridis")
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(coil_grid[0, shown_coils])
    handle = show_image(ax, sos, max(1.0, float(sos.max())), "Σ_c |s_c|²", cmap="viridis")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(handle, ax=ax, shrink=0.8)
    more = f" (first {shown_coils} of {n_coils} coils shown)" if shown_coils < n_coils else ""
    fig.suptitle((title if title is not None else f"cine T={n_t}, {n_x}x{n_y}, C={n_coils}") + more)
    return save_png(fig, path, dpi)


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
    fig = new_figure(min(18.0, n * (1.6 + 0.09 * widest_nt + 1.2)), 4.6)
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
    return save_png(fig, path, dpi)
