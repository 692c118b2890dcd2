"""The CMRxRecon challenges' scoring protocols for cine reconstructions (``ssfl-recon evaluate --protocol``).

What the challenges score (``CMRxReconDemo/run4Ranking.m`` of CMRxRecon 2023 and 2024, ``Evaluation/Evaluation.py``):

* **Slices**: the central two, MATLAB ``round(sz/2)-1 : round(sz/2)`` (1-based), i.e. 0-based
  ``r-2, r-1`` with ``r = round(sz/2)`` (MATLAB rounding, halves away from zero). 2024 keeps every slice when
  ``sz < 3``; the 2023 script has no rule for that case (it would index slice 0) and the 2024 rule is used here.
* **Frames**: the first three (``1:3``), or all when the cine is shorter.
* **Image**: magnitude (2024: root-sum-of-squares over coils; a coil-combined reconstruction has one channel, so
  it is the magnitude), centre crop to ``(round(sx/3), round(sy/2))`` with the MATLAB ``crop`` centring
  (:func:`evaluation.metrics.center_crop`), X = readout, Y = phase encoding.
* **Per 2-D image** (slice, frame): ground truth and prediction are each divided by their own maximum; then
  ``PSNR = 10 log10(max(gt)^2 / mean((gt - pred)^2))`` (= scikit-image ``peak_signal_noise_ratio`` with
  ``data_range = gt.max() = 1``), ``SSIM`` = scikit-image ``structural_similarity(gt, pred, data_range=1)``
  (7x7 uniform window) and ``NMSE = ||gt - pred||^2 / ||gt||^2``. A case's score is the mean over its images.

Our evaluation cases are single slices (``name_slice{s}``), so the slice rule selects cases (:func:`selected_slices`,
:func:`select_cases`) and the frame/crop/normalisation rules score one case (:func:`score_case`). The NRMSE column of
the report is ``sqrt(NMSE)`` per image under a protocol.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from skimage.metrics import structural_similarity

from evaluation.metrics import center_crop, cmrxrecon_crop_size

PROTOCOLS = ("cmrxrecon2023", "cmrxrecon2024")
NUM_FRAMES = 3


def _check(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol: expected one of {', '.join(PROTOCOLS)} (or none), got {protocol!r}")


def _matlab_round(value: float) -> int:
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def selected_slices(num_slices: int, protocol: str) -> list[int]:
    """0-based slices the protocol scores out of ``num_slices``."""
    _check(protocol)
    if num_slices < 1:
        raise ValueError(f"num_slices: expected >= 1, got {num_slices}")
    if num_slices < 3:
        return list(range(num_slices))
    r = _matlab_round(num_slices / 2)
    return [r - 2, r - 1]


def selected_frames(num_frames: int) -> list[int]:
    """0-based frames scored: the first three (all of a shorter cine)."""
    return list(range(min(NUM_FRAMES, num_frames)))


def protocol_images(images: np.ndarray, protocol: str) -> np.ndarray:
    """The scored magnitude images of one slice: (T, X, Y[, C]) complex -> (T', X', Y') float64.

    Frames 0..2, root-sum-of-squares over the channel axis (magnitude for one channel), centre crop
    (round(X/3), round(Y/2)).
    """
    _check(protocol)
    images = np.asarray(images)
    if images.ndim == 4:
        mag = np.sqrt(np.sum(np.abs(images.astype(np.complex128)) ** 2, axis=-1))
    elif images.ndim == 3:
        mag = np.abs(images.astype(np.complex128))
    else:
        raise ValueError(f"protocol images: expected (T, X, Y) or (T, X, Y, C), got shape {images.shape}")
    mag = mag[selected_frames(mag.shape[0])]
    return center_crop(mag, cmrxrecon_crop_size(mag.shape[1], mag.shape[2]), axes=(1, 2))


def image_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM, NMSE of one 2-D magnitude image pair after dividing each by its own maximum."""
    gt = np.asarray(gt, np.float64)
    pred = np.asarray(pred, np.float64)
    g_max, p_max = gt.max(), pred.max()
    if g_max <= 0 or p_max <= 0:
        return {"psnr": float("nan"), "ssim": float("nan"), "nmse": float("nan")}
    g, p = gt / g_max, pred / p_max
    mse = float(np.mean((g - p) ** 2))
    psnr = float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)
    ssim = float(structural_similarity(g, p, data_range=1.0))
    nmse = float(np.sum((g - p) ** 2) / np.sum(g**2))
    return {"psnr": psnr, "ssim": ssim, "nmse": nmse}


def score_case(reference: np.ndarray, recon: np.ndarray, protocol: str) -> dict[str, Any]:
    """Scores one case (one slice) under ``protocol``.

    Args:
        reference: (1, T, X, Y, 1) or (T, X, Y[, 1]) fully sampled image.
        recon: the reconstruction, same shape.
        protocol: ``cmrxrecon2023`` or ``cmrxrecon2024``.

    Returns:
        ``psnr``, ``ssim``, ``nmse``, ``nrmse`` (= sqrt(NMSE)) means over the scored frames, and ``per_image``
        (list of per-frame dicts).

    Raises:
        ValueError: shapes differ, or the crop is smaller than SSIM's 7x7 window.
    """
    reference, recon = np.asarray(reference), np.asarray(recon)
    if reference.shape != recon.shape:
        raise ValueError(f"recon shape {recon.shape} differs from the reference {reference.shape}")
    if reference.ndim == 5:
        if reference.shape[0] != 1:
            raise ValueError(f"score_case: one case at a time, got batch {reference.shape[0]}")
        reference, recon = reference[0], recon[0]
    gt, pred = protocol_images(reference, protocol), protocol_images(recon, protocol)
    if min(gt.shape[1:]) < 7:
        raise ValueError(f"protocol {protocol}: the centre crop {gt.shape[1:]} is smaller than SSIM's 7x7 window "
                         "(images need X >= 20 and Y >= 13)")
    per_image = [image_scores(g, p) for g, p in zip(gt, pred)]
    out: dict[str, Any] = {k: float(np.mean([s[k] for s in per_image])) for k in ("psnr", "ssim", "nmse")}
    out["nrmse"] = float(np.mean([math.sqrt(s["nmse"]) for s in per_image]))
    out["per_image"] = per_image
    return out


def case_slices(rows: Sequence[Any]) -> list[tuple[str, int, int]]:
    """(subject, slice, number of slices) of every evaluation case of a split, in case order (CSV rows)."""
    return [(row.name, s, row.slices) for row in rows for s in range(row.slices)]


def select_cases(cases: Iterable[dict], rows: Sequence[Any], protocol: str) -> Iterator[dict]:
    """The evaluation cases whose slice the protocol scores (cases come one per (subject, slice) in CSV order)."""
    _check(protocol)
    layout = case_slices(rows)
    for index, case in enumerate(cases):
        if index >= len(layout):
            raise ValueError(f"more evaluation cases than the split CSV lists ({len(layout)} slices)")
        _, sl, count = layout[index]
        if sl in selected_slices(count, protocol):
            yield case
