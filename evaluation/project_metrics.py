"""The dual-UNet project's PSNR and SSIM, as metric options beside the SSFL-Recon ones (:mod:`evaluation.metrics`).

Definitions of "Deep Learning for Dynamic MRI Reconstruction" (github.com/XiongWenye/Deep-Learning-Dynamic-MRI-
Reconstruction, ``bme1312/utils.py``; called per test case in ``train.py``'s ``test_models`` on the network's
magnitude output and the magnitude label, both (T, X, Y) = (20, 192, 192) float arrays in [0, 1]):

* ``compute_psnr(recon, target)`` with its default ``peak='normalized'``: the peak is 1 for float images (255 for
  uint8), whatever the data hold, and ``psnr = 20 log10(peak) - 10 log10(mse + 1e-8)`` with
  ``mse = mean |recon - target|^2`` over the whole (T, X, Y) volume (not per frame).
* ``compute_ssim(recon, target)``: ``skimage.metrics.structural_similarity(target, recon, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=target.max() - target.min())`` on the whole volume, which
  scikit-image treats as ONE 3-D image: an 11 x 11 x 11 Gaussian window (sigma 1.5 truncated at 3.5 sigma) that
  also spans 11 frames, population covariances, K1 = 0.01, K2 = 0.03, and the mean over the voxels at least 5 from
  every border. Every axis needs at least 11 samples.

Here the SSIM is computed with ``scipy.ndimage.gaussian_filter`` as scikit-image does (reflecting borders), in
float64 (the project computed the PSNR in its tensors' float32; the difference is below 1e-5 dB); the tests
compare it with scikit-image. Our reconstructions are complex: by default both metrics take magnitudes, as the
project's images are magnitudes (``magnitude=False`` scores the PSNR on the complex difference instead).

:func:`dual_unet_metrics` scores a batch in the layout of :func:`evaluation.metrics.compute_metrics` ((B, T, X, Y,
C) or (B, T, X, Y)); :func:`get_metric_definitions` looks a definition set up by name.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from scipy import ndimage

__all__ = ["DEFINITIONS", "dual_unet_metrics", "dual_unet_psnr", "dual_unet_ssim", "get_metric_definitions"]

PEAK = 1.0  # compute_psnr(peak='normalized') on float images
MSE_EPS = 1e-8  # added to the MSE "to avoid math error in log(x) when x=0"
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's truncation of the Gaussian window
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_WINDOW = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1  # 11 samples per axis


def _pair(recon: Any, reference: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    recon, reference = np.asarray(recon), np.asarray(reference)
    if recon.shape != reference.shape:
        raise ValueError(f"{where}: recon and reference shapes differ: {recon.shape} vs {reference.shape}")
    for name, arr in (("recon", recon), ("reference", reference)):
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{where}: {name} must be numeric, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: {name} holds NaN or Inf")
    return recon, reference


def dual_unet_psnr(recon: Any, reference: Any, magnitude: bool = True) -> float:
    """The project's PSNR of one case: peak 1, ``-10 log10(mean |recon - reference|^2 + 1e-8)`` over the volume.

    Args:
        recon: reconstruction, any shape (one case, e.g. (T, X, Y)); real or complex.
        reference: ground truth of the same shape.
        magnitude: compare magnitudes (default; the project's images are magnitudes) or complex values.

    Returns:
        PSNR in dB (finite: the 1e-8 bounds it by 80 dB).
    """
    recon, reference = _pair(recon, reference, "dual_unet_psnr")
    if magnitude:
        diff = np.abs(recon).astype(np.float64) - np.abs(reference).astype(np.float64)
    else:
        diff = recon.astype(np.complex128) - reference.astype(np.complex128)
    mse = float(np.mean(np.abs(diff) ** 2))
    return 20.0 * math.log10(PEAK) - 10.0 * math.log10(mse + MSE_EPS)


def dual_unet_ssim(recon: Any, reference: Any) -> float:
    """The project's SSIM of one case: the magnitude volume as one N-D image (see the module docstring).

    Args:
        recon: reconstruction, (T, X, Y) (any rank works; every axis needs >= 11 samples); real or complex.
        reference: ground truth of the same shape; its max - min is the data range.

    Returns:
        mean SSIM; NaN when the reference is constant (zero data range, as scikit-image gives).
    """
    recon, reference = _pair(recon, reference, "dual_unet_ssim")
    if min(reference.shape, default=0) < SSIM_WINDOW:
        raise ValueError(f"dual_unet_ssim: every axis needs >= {SSIM_WINDOW} samples for the {SSIM_WINDOW}-sample "
                         f"Gaussian window (the project's cases are 20 x 192 x 192), got {reference.shape}")
    x = np.abs(reference).astype(np.float64)
    y = np.abs(recon).astype(np.float64)
    data_range = float(x.max() - x.min())

    def blur(image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image, SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE)

    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux  # population covariances (use_sample_covariance=False)
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (SSIM_WINDOW - 1) // 2
    inner = ssim_map[tuple(slice(pad, n - pad) for n in ssim_map.shape)]
    return float(inner.mean(dtype=np.float64))


def _cases(name: str, array: Any) -> np.ndarray:
    """(B, T, X, Y, C) view of a (B, T, X, Y, C) or (B, T, X, Y) array."""
    array = np.asarray(array)
    if array.ndim == 4:
        return array[..., None]
    if array.ndim != 5:
        raise ValueError(f"{name}: expected (B, T, X, Y) or (B, T, X, Y, C), got shape {array.shape}")
    return array


def dual_unet_metrics(gt: Any, pred: Any, magnitude: bool = True, compute_ssim: bool = True) -> dict[str, Any]:
    """The project's PSNR and SSIM of every case (batch element and channel) of a batch.

    Args:
        gt: ground truth, (B, T, X, Y, C) or (B, T, X, Y); real or complex.
        pred: prediction, the same shape.
        magnitude: PSNR on magnitudes (default) or on the complex difference (SSIM is always on magnitudes).
        compute_ssim: False skips the SSIM (it needs >= 11 samples per axis).

    Returns:
        ``{"per_case": {"psnr": (B, C), "ssim": (B, C)}, "mean": {"psnr": float, "ssim": float},
        "definitions": "dual-unet"}`` (``ssim`` only when computed).
    """
    gt5, pred5 = _cases("gt", gt), _cases("pred", pred)
    if gt5.shape != pred5.shape:
        raise ValueError(f"pred must have the same shape as gt: expected {np.shape(gt)}, received {np.shape(pred)}")
    names = ("psnr", "ssim") if compute_ssim else ("psnr",)
    per_case = {name: np.full((gt5.shape[0], gt5.shape[-1]), np.nan) for name in names}
    for b in range(gt5.shape[0]):
        for c in range(gt5.shape[-1]):
            per_case["psnr"][b, c] = dual_unet_psnr(pred5[b, ..., c], gt5[b, ..., c], magnitude=magnitude)
            if compute_ssim:
                per_case["ssim"][b, c] = dual_unet_ssim(pred5[b, ..., c], gt5[b, ..., c])
    with np.errstate(invalid="ignore"):
        mean = {name: float(np.mean(values)) for name, values in per_case.items()}
    return {"per_case": per_case, "mean": mean, "definitions": "dual-unet"}


DEFINITIONS: dict[str, Callable[..., dict[str, Any]]] = {"dual-unet": dual_unet_metrics}


def get_metric_definitions(name: str) -> Callable[..., dict[str, Any]]:
    """The scoring function of a named definition set (``dual-unet``); ValueError listing the valid names."""
    try:
        return DEFINITIONS[name]
    except KeyError:
        raise ValueError(f"metric definitions {name!r}: expected one of {sorted(DEFINITIONS)}") from None
