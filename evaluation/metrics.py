"""Image-quality metrics for reconstructed cine MRI: NRMSE, PSNR, SSIM and NMSE.

Data layout: complex images of shape (B, T, X, Y, C) (``C`` is usually 1); rank-4 arrays (B, T, X, Y) are accepted
and treated as C = 1. X is the fully sampled (readout) axis and Y the phase-encoding axis, as in the rest of the
project (masks are (B, T, 1, Y, 1)).

Definitions of the original SSFL-Recon evaluation (``evaluation/metrics.py`` of midas-tum/SSFL-Recon), reproduced by
``MetricOptions(original_batch0_only=True)``:

* Only batch element 0 and channel 0 are scored; every metric is computed per time frame and averaged over frames.
* ``nrmse_t = sqrt(mean_xy |gt_t - pred_t|^2) / (max|gt_t| - min|gt_t|)``. The error is the *complex* difference
  (phase errors count), the normaliser is the range of the ground-truth *magnitude* of that frame.
* ``psnr_t = 10 log10(R^2 / mean_xy |gt_t - pred_t|^2)`` with the complex difference. If no data range is given,
  ``R = max|gt_0|`` of frame 0 and the same R is reused for every later frame.
* ``ssim_t`` = ``skimage.metrics.structural_similarity(|gt_t|, |pred_t|, data_range=max|gt_t|)`` with scikit-image's
  defaults otherwise (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03), i.e. on magnitudes.
* The arithmetic stays in the input precision (complex64 -> float32), which is what makes the golden values of the
  fixtures bit-identical; the default mode computes in float64 (differences ~1e-7 relative on the fixtures).

Default behaviour of this module differs in one deliberate way: every batch element and every channel is evaluated
(the original silently drops all but (0, 0)). Per-frame values have shape (B, C, T), per-case values (B, C) are the
frame averages, and the reported mean is the average over cases.

CMRxRecon 2023 style evaluation (``crop="cmrxrecon"``, ``normalize="cmrxrecon"``), taken from the challenge's
``CMRxReconDemo/run4Ranking.m`` and ``Evaluation/Evaluation.py`` (github.com/CmrxRecon/CMRxRecon):

* The ranking images are ``crop(abs(img), [round(sx/3), round(sy/2), ...])``: the central third of the readout axis
  (sx = X here) and the central half of the phase-encoding axis (sy = Y), "the middle 1/6 of the image". ``round``
  is MATLAB's (half away from zero) and ``crop`` keeps the indices
  ``floor(n/2) + ceil(-c/2) ... floor(n/2) + ceil(c/2) - 1`` (0-based) of an axis of length n cropped to c.
* Scores are computed per 2-D image on magnitudes, after dividing ground truth and prediction each by their own
  maximum; PSNR and SSIM then use ``data_range = max(gt) = 1``; NMSE is per image.
* The challenge additionally keeps only the two central slices and the first three cine frames; that selection of
  data is left to the caller (this module scores every frame it is given).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Literal, Sequence, Union

import numpy as np
from skimage.metrics import structural_similarity

logger = logging.getLogger(__name__)

__all__ = [
    "MetricOptions",
    "compute_metrics",
    "center_crop",
    "cmrxrecon_crop_size",
    "frame_nrmse",
    "frame_psnr",
    "frame_ssim",
    "nmse",
    "format_metrics",
]

PsnrRange = Union[Literal["frame0", "per_frame", "global"], float]
CropSpec = Union[None, Literal["none", "cmrxrecon"], Sequence[int]]

_PSNR_RANGE_MODES = ("frame0", "per_frame", "global")
_SSIM_MIN_SIZE = 7  # scikit-image's default window is 7x7 and needs at least that many pixels per axis


@dataclasses.dataclass(frozen=True)
class MetricOptions:
    """How metrics are computed.

    Attributes:
        psnr_data_range: peak value R of the PSNR. ``"frame0"`` (original): max|gt| of frame 0 of each case, reused
            for all frames of that case; ``"per_frame"``: max|gt_t| of each frame; ``"global"``: max|gt| over the
            whole case (T, X, Y), as fastMRI does per volume; a positive float: that value everywhere.
        crop: ``None``/``"none"``: no crop; ``"cmrxrecon"``: central (round(X/3), round(Y/2)) region as in the
            CMRxRecon 2023 ranking; a pair ``(cx, cy)``: central region of that size (same centring rule). The crop
            is applied to every frame before any metric, NMSE included.
        normalize: ``"none"``: metrics on the complex images (SSIM on magnitudes); ``"cmrxrecon"``: like the
            CMRxRecon evaluation, every metric is computed on magnitudes with ground-truth and predicted frames each
            divided by their own maximum.
        compute_ssim: SSIM is the slow part; set False to skip it (its entries are then absent from the result).
        original_batch0_only: reproduce the original SSFL-Recon evaluation exactly: only batch 0 / channel 0, in the
            input's floating-point precision. Cropping and normalisation still apply if requested (the result is
            then no longer the original's).
    """

    psnr_data_range: PsnrRange = "frame0"
    crop: CropSpec = None
    normalize: Literal["none", "cmrxrecon"] = "none"
    compute_ssim: bool = True
    original_batch0_only: bool = False

    def __post_init__(self) -> None:
        rng = self.psnr_data_range
        if isinstance(rng, str):
            if rng not in _PSNR_RANGE_MODES:
                raise ValueError(
                    f"psnr_data_range must be one of {_PSNR_RANGE_MODES} or a positive float, received {rng!r}"
                )
        elif isinstance(rng, bool) or not isinstance(rng, (int, float, np.floating, np.integer)):
            raise ValueError(f"psnr_data_range must be a string mode or a positive float, received {rng!r}")
        elif not (math.isfinite(float(rng)) and float(rng) > 0):
            raise ValueError(f"psnr_data_range must be finite and > 0, received {rng!r}")
        crop = self.crop
        if crop is not None and not isinstance(crop, str):
            is_pair = isinstance(crop, (tuple, list)) and len(crop) == 2
            if not is_pair or not all(isinstance(c, (int, np.integer)) and c > 0 for c in crop):
                raise ValueError(f"crop must be None, 'none', 'cmrxrecon' or two positive ints, received {crop!r}")
        elif isinstance(crop, str) and crop not in ("none", "cmrxrecon"):
            raise ValueError(f"crop must be None, 'none', 'cmrxrecon' or two positive ints, received {crop!r}")
        if self.normalize not in ("none", "cmrxrecon"):
            raise ValueError(f"normalize must be 'none' or 'cmrxrecon', received {self.normalize!r}")


# ----------------------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------------------


def _as_rank5(name: str, array: Any) -> np.ndarray:
    """Validates one image argument and returns it as a (B, T, X, Y, C) array."""
    arr = np.asarray(array)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, received dtype {arr.dtype}")
    if arr.ndim == 4:
        arr = arr[..., np.newaxis]
    elif arr.ndim != 5:
        raise ValueError(
            f"{name} must have shape (B, T, X, Y, C) or (B, T, X, Y); received shape {arr.shape} (rank {arr.ndim})"
        )
    if 0 in arr.shape:
        raise ValueError(f"{name} must not have an empty axis; received shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return arr


def _matlab_round(value: float) -> int:
    """MATLAB's ``round``: halves go away from zero (Python's ``round`` goes to the even neighbour)."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def cmrxrecon_crop_size(nx: int, ny: int) -> tuple[int, int]:
    """Size of the CMRxRecon 2023 ranking region for an image of nx (readout) by ny (phase-encoding) pixels.

    Args:
        nx: size of the readout axis X.
        ny: size of the phase-encoding axis Y.

    Returns:
        ``(round(nx / 3), round(ny / 2))`` with MATLAB rounding, at least 1 each.
    """
    return max(1, _matlab_round(nx / 3)), max(1, _matlab_round(ny / 2))


def center_crop(images: np.ndarray, size: Sequence[int], axes: Sequence[int] = (2, 3)) -> np.ndarray:
    """Central crop with the centring rule of the MATLAB ``crop`` used by CMRxRecon.

    An axis of length n cropped to c keeps the 0-based indices ``floor(n/2) + ceil(-c/2)`` up to (excluding)
    ``floor(n/2) + ceil(-c/2) + c``, so the image centre ``floor(n/2)`` (the FFT centre) stays the centre.

    Args:
        images: array of any rank, e.g. (B, T, X, Y, C).
        size: target length for each axis in ``axes``.
        axes: the axes to crop (default X and Y of a (B, T, X, Y, C) array).

    Returns:
        A view of ``images`` with the cropped axes.

    Raises:
        ValueError: if a target length is not in [1, n].
    """
    if len(size) != len(axes):
        raise ValueError(f"size has {len(size)} entries but axes has {len(axes)}")
    index: list[slice] = [slice(None)] * images.ndim
    for axis, c in zip(axes, size):
        n = images.shape[axis]
        if not 1 <= c <= n:
            raise ValueError(f"crop size {c} along axis {axis} must be within [1, {n}] (images shape {images.shape})")
        start = n // 2 + math.ceil(-c / 2)
        index[axis] = slice(start, start + c)
    return images[tuple(index)]


def _crop_size(options: MetricOptions, nx: int, ny: int) -> tuple[int, int] | None:
    if options.crop is None or options.crop == "none":
        return None
    if options.crop == "cmrxrecon":
        return cmrxrecon_crop_size(nx, ny)
    cx, cy = (int(c) for c in options.crop)  # type: ignore[union-attr]
    return cx, cy


# ----------------------------------------------------------------------------------------------------------------------
# Per-frame primitives
# ----------------------------------------------------------------------------------------------------------------------


def _frame_mse(gt_frame: np.ndarray, pred_frame: np.ndarray) -> np.floating:
    # Same operation order as the original (1/(m*n) times the sum) so float32 results are bit-identical.
    m, n = gt_frame.shape
    return 1 / (m * n) * np.sum(np.abs(gt_frame - pred_frame) ** 2)


def frame_nrmse(gt_frame: np.ndarray, pred_frame: np.ndarray) -> float:
    """NRMSE of one 2-D frame, normalised by the range of the ground-truth magnitude.

    Args:
        gt_frame: (X, Y) complex or real ground truth.
        pred_frame: (X, Y) prediction.

    Returns:
        ``sqrt(mean |gt - pred|^2) / (max|gt| - min|gt|)``; NaN when the ground truth is constant in magnitude.
    """
    mag = np.abs(gt_frame)
    denom = np.max(mag) - np.min(mag)
    rmse = np.sqrt(_frame_mse(gt_frame, pred_frame))
    if denom == 0:
        return float("nan")
    return rmse / denom


def frame_psnr(gt_frame: np.ndarray, pred_frame: np.ndarray, data_range: float) -> float:
    """PSNR of one 2-D frame in dB, on the complex difference.

    Args:
        gt_frame: (X, Y) complex or real ground truth.
        pred_frame: (X, Y) prediction.
        data_range: peak value R.

    Returns:
        ``10 log10(R^2 / mean |gt - pred|^2)``; +inf when the frames are identical, NaN when R is 0.
    """
    mse = _frame_mse(gt_frame, pred_frame)
    if data_range == 0:
        return float("nan")
    if mse == 0:
        return float("inf")
    return 10 * np.log10(data_range**2 / mse)


def frame_ssim(gt_frame: np.ndarray, pred_frame: np.ndarray, data_range: float | None = None) -> float:
    """SSIM of one 2-D frame on magnitudes (scikit-image defaults: 7x7 uniform window, sample covariance).

    Args:
        gt_frame: (X, Y) complex or real ground truth; both axes need at least 7 pixels.
        pred_frame: (X, Y) prediction.
        data_range: dynamic range passed to scikit-image; defaults to max|gt_frame| (the original's choice).

    Returns:
        The mean SSIM over the frame; NaN when the data range is 0 (all-zero ground truth).
    """
    gt_mag = np.abs(gt_frame)
    pred_mag = np.abs(pred_frame)
    if data_range is None:
        data_range = np.max(gt_mag)
    if data_range == 0:
        return float("nan")
    return structural_similarity(gt_mag, pred_mag, data_range=data_range)


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """fastMRI-style normalised MSE over a whole array: ``||gt - pred||^2 / ||gt||^2`` (complex-aware).

    Args:
        gt: ground truth of any shape, e.g. one case (T, X, Y).
        pred: prediction of the same shape.

    Returns:
        The NMSE as a float (float64 arithmetic); NaN when gt is all zeros.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"pred must have the shape of gt {gt.shape}, received {pred.shape}")
    num = float(np.sum(np.abs(gt.astype(np.complex128) - pred.astype(np.complex128)) ** 2))
    den = float(np.sum(np.abs(gt.astype(np.complex128)) ** 2))
    if den == 0:
        return float("nan")
    return num / den


# ----------------------------------------------------------------------------------------------------------------------
# Whole-array evaluation
# ----------------------------------------------------------------------------------------------------------------------


def _psnr_range(options: MetricOptions, gt_case: np.ndarray, t: int, frame0_range: Any) -> Any:
    mode = options.psnr_data_range
    if not isinstance(mode, str):
        return mode
    if mode == "frame0":
        return frame0_range
    if mode == "per_frame":
        return np.max(np.abs(gt_case[t]))
    return np.max(np.abs(gt_case))


def _normalize_cmrxrecon(case: np.ndarray) -> np.ndarray:
    """Magnitude of a (T, X, Y) case with each frame divided by its own maximum (all-zero frames stay zero)."""
    mag = np.abs(case)
    peak = np.max(mag, axis=(1, 2), keepdims=True)
    return np.divide(mag, peak, out=np.zeros_like(mag), where=peak > 0)


def compute_metrics(
    gt: np.ndarray,
    pred: np.ndarray,
    options: MetricOptions | None = None,
) -> dict[str, Any]:
    """Scores a prediction against the ground truth, frame by frame, for every batch element and channel.

    Args:
        gt: ground truth, (B, T, X, Y, C) or (B, T, X, Y); complex or real, finite.
        pred: prediction, same shape as ``gt``.
        options: see ``MetricOptions``; defaults to ``MetricOptions()`` (all cases, original definitions).

    Returns:
        A dict with
        ``"per_frame"``: {"nrmse", "psnr", "ssim"} -> arrays (B', C', T) (SSIM only if computed);
        ``"per_case"``: {"nrmse", "psnr", "ssim", "nmse"} -> arrays (B', C'), the frame means (NMSE is over the
        whole case volume (T, X, Y));
        ``"mean"``: the same keys -> Python floats, averages over cases;
        ``"psnr_data_range"``: the R used per frame, (B', C', T);
        ``"shape"``: the evaluated (B', C', T, X', Y') after selection and crop; ``"options"``: the options as dict.
        B' = B and C' = C, or 1 and 1 with ``original_batch0_only``. A frame with zero error has PSNR +inf, so a
        mean that includes it is +inf; undefined values (constant or all-zero ground truth) are NaN.

    Raises:
        ValueError: wrong rank, mismatched shapes, non-finite values, or frames too small for SSIM.
    """
    options = MetricOptions() if options is None else options
    gt5 = _as_rank5("gt", gt)
    pred5 = _as_rank5("pred", pred)
    if np.shape(gt) != np.shape(pred):
        raise ValueError(f"pred must have the same shape as gt: expected {np.shape(gt)}, received {np.shape(pred)}")

    full_b, full_c = gt5.shape[0], gt5.shape[-1]
    if options.original_batch0_only:
        gt5, pred5 = gt5[:1, ..., :1], pred5[:1, ..., :1]
        if full_b > 1 or full_c > 1:
            logger.info("original_batch0_only: scoring batch 0 / channel 0 of %d x %d cases", full_b, full_c)
    else:
        # float64 arithmetic, so results do not depend on the input precision
        gt5 = gt5.astype(np.complex128 if np.iscomplexobj(gt5) or np.iscomplexobj(pred5) else np.float64)
        pred5 = pred5.astype(gt5.dtype)

    crop = _crop_size(options, gt5.shape[2], gt5.shape[3])
    if crop is not None:
        gt5 = center_crop(gt5, crop)
        pred5 = center_crop(pred5, crop)

    n_b, n_t, n_x, n_y, n_c = gt5.shape
    if options.compute_ssim and min(n_x, n_y) < _SSIM_MIN_SIZE:
        raise ValueError(
            f"gt frames of {n_x}x{n_y} pixels (after crop) are too small for SSIM's {_SSIM_MIN_SIZE}x{_SSIM_MIN_SIZE} "
            "window; use larger images or MetricOptions(compute_ssim=False)"
        )

    names = ("nrmse", "psnr", "ssim") if options.compute_ssim else ("nrmse", "psnr")
    per_frame = {name: np.full((n_b, n_c, n_t), np.nan) for name in names}
    per_case = {name: np.full((n_b, n_c), np.nan) for name in (*names, "nmse")}
    out_range = np.full((n_b, n_c, n_t), np.nan)
    for b in range(n_b):
        for c in range(n_c):
            # Slicing [b, :, :, :, c] keeps the original's memory layout per frame, which matters for bit-exact sums.
            gt_case = gt5[b, :, :, :, c]
            pred_case = pred5[b, :, :, :, c]
            if options.normalize == "cmrxrecon":
                gt_case = _normalize_cmrxrecon(gt_case)
                pred_case = _normalize_cmrxrecon(pred_case)
            frame0_range = np.max(np.abs(gt_case[0]))
            values: dict[str, list[Any]] = {name: [] for name in names}
            for t in range(n_t):
                g, p = gt_case[t], pred_case[t]
                rng = _psnr_range(options, gt_case, t, frame0_range)
                out_range[b, c, t] = rng
                values["nrmse"].append(frame_nrmse(g, p))
                values["psnr"].append(frame_psnr(g, p, rng))
                if options.compute_ssim:
                    values["ssim"].append(frame_ssim(g, p))
            for name in names:
                per_frame[name][b, c] = values[name]
                # np.mean over the list of NumPy scalars is the original's reduction (float32 stays float32).
                with np.errstate(invalid="ignore"):
                    per_case[name][b, c] = np.mean(values[name])
            per_case["nmse"][b, c] = nmse(gt_case, pred_case)

    undefined = int(np.isnan(per_frame["nrmse"]).sum())
    if undefined:
        logger.warning("NRMSE undefined (constant ground-truth magnitude) in %d frame(s)", undefined)
    with np.errstate(invalid="ignore"):
        mean = {name: float(np.mean(v)) for name, v in per_case.items()}
    return {
        "per_frame": per_frame,
        "per_case": per_case,
        "mean": mean,
        "psnr_data_range": out_range,
        "shape": (n_b, n_c, n_t, n_x, n_y),
        "options": dataclasses.asdict(options),
    }


def format_metrics(result: dict[str, Any], keys: Sequence[str] = ("psnr", "ssim", "nrmse", "nmse")) -> str:
    """One-line summary of ``compute_metrics``' means, e.g. for logs or figure titles.

    Args:
        result: the dict returned by ``compute_metrics``.
        keys: which means to include, in order (missing ones are skipped).

    Returns:
        A string like ``"PSNR 31.20 dB, SSIM 0.9412, NRMSE 0.0321, NMSE 0.0042"``.
    """
    parts = []
    for key in keys:
        if key not in result["mean"]:
            continue
        value = result["mean"][key]
        if key == "psnr":
            parts.append(f"PSNR {value:.2f} dB")
        else:
            parts.append(f"{key.upper()} {value:.4f}")
    return ", ".join(parts)
