"""Tests of evaluation.metrics: golden values of the original code, hand-computed cases, options and validation."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from evaluation.metrics import (
    MetricOptions,
    center_crop,
    cmrxrecon_crop_size,
    compute_metrics,
    format_metrics,
    frame_nrmse,
    frame_psnr,
    nmse,
)
from conftest import load_golden

ORIGINAL = MetricOptions(original_batch0_only=True)


def _cine(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return load_golden("ops.npz")


# ---------------------------------------------------------------------------------------------------------------------
# Golden values of the original implementation
# ---------------------------------------------------------------------------------------------------------------------


def test_original_mode_reproduces_golden_values(golden: dict[str, np.ndarray]) -> None:
    result = compute_metrics(golden["metric_gt"], golden["metric_pred"], ORIGINAL)
    for key in ("nrmse", "psnr", "ssim"):
        np.testing.assert_allclose(result["mean"][key], float(golden[key]), rtol=1e-6, atol=0)
    np.testing.assert_allclose(result["per_frame"]["psnr"][0, 0], golden["psnr_frames"], rtol=1e-6, atol=0)
    assert result["per_frame"]["psnr"].shape == (1, 1, 8)


def test_default_mode_matches_golden_within_1e6(golden: dict[str, np.ndarray]) -> None:
    result = compute_metrics(golden["metric_gt"], golden["metric_pred"])
    for key in ("nrmse", "psnr", "ssim"):
        np.testing.assert_allclose(result["mean"][key], float(golden[key]), rtol=1e-6, atol=0)
        assert result["per_case"][key].shape == (1, 1)
    np.testing.assert_allclose(result["per_frame"]["psnr"][0, 0], golden["psnr_frames"], rtol=1e-6, atol=0)


def test_golden_definition_written_out_in_numpy(golden: dict[str, np.ndarray]) -> None:
    """The documented definitions, written independently, reproduce the golden values (guards the docs)."""
    gt = golden["metric_gt"][0, :, :, :, 0].astype(np.complex128)
    pred = golden["metric_pred"][0, :, :, :, 0].astype(np.complex128)
    mse = np.mean(np.abs(gt - pred) ** 2, axis=(1, 2))
    mag = np.abs(gt)
    nrmse_t = np.sqrt(mse) / (mag.max(axis=(1, 2)) - mag.min(axis=(1, 2)))
    psnr_t = 10 * np.log10(mag[0].max() ** 2 / mse)
    ssim_t = [structural_similarity(mag[t], np.abs(pred[t]), data_range=mag[t].max()) for t in range(gt.shape[0])]
    np.testing.assert_allclose(nrmse_t.mean(), golden["nrmse"], rtol=1e-6)
    np.testing.assert_allclose(psnr_t, golden["psnr_frames"], rtol=1e-6)
    np.testing.assert_allclose(np.mean(ssim_t), golden["ssim"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------------------------------


def test_constant_offset_gives_known_nrmse_and_psnr() -> None:
    rng = np.random.default_rng(0)
    gt = _cine(rng, (1, 3, 9, 8, 1))
    offset = 0.25
    result = compute_metrics(gt, gt + offset, MetricOptions(compute_ssim=False))
    mag = np.abs(gt[0, :, :, :, 0].astype(np.complex128))
    expected_nrmse = offset / (mag.max(axis=(1, 2)) - mag.min(axis=(1, 2)))
    expected_psnr = 20 * np.log10(mag[0].max() / offset)  # frame 0's peak for every frame
    np.testing.assert_allclose(result["per_frame"]["nrmse"][0, 0], expected_nrmse, rtol=1e-6)
    np.testing.assert_allclose(result["per_frame"]["psnr"][0, 0], np.full(3, expected_psnr), rtol=1e-6)
    np.testing.assert_allclose(result["mean"]["nrmse"], expected_nrmse.mean(), rtol=1e-6)


def test_identical_inputs() -> None:
    rng = np.random.default_rng(1)
    gt = _cine(rng, (2, 3, 8, 8, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero RuntimeWarning leaks out
        result = compute_metrics(gt, gt.copy())
    assert np.all(result["per_frame"]["nrmse"] == 0)
    np.testing.assert_allclose(result["per_frame"]["ssim"], 1.0)
    assert np.all(np.isposinf(result["per_frame"]["psnr"]))
    assert math.isinf(result["mean"]["psnr"]) and result["mean"]["psnr"] > 0
    assert result["mean"]["nmse"] == 0.0
    assert result["mean"]["ssim"] == pytest.approx(1.0)


def test_every_batch_element_and_channel_is_evaluated() -> None:
    rng = np.random.default_rng(2)
    gt = _cine(rng, (2, 3, 8, 8, 2))
    pred = gt.copy()
    pred[1, :, :, :, 0] += 0.1  # only batch 1, channel 0 is wrong
    result = compute_metrics(gt, pred)
    psnr = result["per_case"]["psnr"]
    assert psnr.shape == (2, 2)
    assert np.isposinf(psnr[0, 0]) and np.isposinf(psnr[0, 1]) and np.isposinf(psnr[1, 1])
    assert np.isfinite(psnr[1, 0])
    assert result["per_case"]["nrmse"][1, 0] > 0
    assert result["per_case"]["ssim"][1, 0] < 1
    assert result["per_case"]["nmse"][1, 0] > 0
    np.testing.assert_allclose(result["mean"]["nrmse"], result["per_case"]["nrmse"].mean())
    assert result["per_frame"]["ssim"].shape == (2, 2, 3)

    # The original only looks at batch 0 / channel 0 and would report a perfect score here.
    original = compute_metrics(gt, pred, ORIGINAL)
    assert original["per_case"]["psnr"].shape == (1, 1)
    assert math.isinf(original["mean"]["psnr"])
    assert original["mean"]["nrmse"] == 0.0


def test_case_values_equal_single_case_evaluation() -> None:
    rng = np.random.default_rng(3)
    gt = _cine(rng, (3, 2, 8, 9, 1))
    pred = gt + 0.3 * _cine(rng, gt.shape)
    batch = compute_metrics(gt, pred)
    for b in range(3):
        single = compute_metrics(gt[b:b + 1], pred[b:b + 1])
        for key in ("nrmse", "psnr", "ssim", "nmse"):
            np.testing.assert_allclose(batch["per_case"][key][b, 0], single["mean"][key], rtol=1e-12)


def test_rank4_input_is_rank5_with_one_channel() -> None:
    rng = np.random.default_rng(4)
    gt = _cine(rng, (2, 2, 8, 8))
    pred = gt + 0.2
    r4 = compute_metrics(gt, pred)
    r5 = compute_metrics(gt[..., None], pred[..., None])
    for key in r5["mean"]:
        assert r4["mean"][key] == r5["mean"][key]
    assert r4["per_case"]["psnr"].shape == (2, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------------


def _two_frames_with_different_peaks() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    gt = _cine(rng, (1, 2, 8, 8, 1))
    gt[0, 1] *= 3.0  # frame 1 is much brighter than frame 0
    pred = gt + 0.1 * _cine(rng, gt.shape)
    return gt, pred


def _numpy_psnr(gt: np.ndarray, pred: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    g = gt[0, :, :, :, 0].astype(np.complex128)
    p = pred[0, :, :, :, 0].astype(np.complex128)
    mse = np.mean(np.abs(g - p) ** 2, axis=(1, 2))
    return 10 * np.log10(peaks**2 / mse)


def test_psnr_data_range_options_against_numpy() -> None:
    gt, pred = _two_frames_with_different_peaks()
    mag = np.abs(gt[0, :, :, :, 0].astype(np.complex128))
    cases = {
        "frame0": np.full(2, mag[0].max()),
        "per_frame": mag.max(axis=(1, 2)),
        "global": np.full(2, mag.max()),
        2.5: np.full(2, 2.5),
    }
    for mode, peaks in cases.items():
        result = compute_metrics(gt, pred, MetricOptions(psnr_data_range=mode, compute_ssim=False))
        np.testing.assert_allclose(result["per_frame"]["psnr"][0, 0], _numpy_psnr(gt, pred, peaks), rtol=1e-10)
        np.testing.assert_allclose(result["psnr_data_range"][0, 0], peaks, rtol=1e-6)
    frame0 = compute_metrics(gt, pred, MetricOptions(compute_ssim=False))["per_frame"]["psnr"][0, 0, 1]
    per_frame = compute_metrics(gt, pred, MetricOptions("per_frame", compute_ssim=False))["per_frame"]["psnr"][0, 0, 1]
    assert per_frame > frame0  # the brighter frame gains from its own peak


def test_nmse_against_numpy() -> None:
    rng = np.random.default_rng(6)
    gt = _cine(rng, (2, 3, 8, 8, 1))
    pred = gt + 0.5 * _cine(rng, gt.shape)
    result = compute_metrics(gt, pred, MetricOptions(compute_ssim=False))
    for b in range(2):
        g = gt[b].astype(np.complex128)
        p = pred[b].astype(np.complex128)
        expected = np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2
        np.testing.assert_allclose(result["per_case"]["nmse"][b, 0], expected, rtol=1e-10)
    assert nmse(gt, pred) == pytest.approx(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2, rel=1e-5)
    assert math.isnan(nmse(np.zeros(4), np.ones(4)))


def test_cmrxrecon_crop_size_and_centring() -> None:
    # Real CMRxRecon cine matrix sizes: 448 or 512 readout, 204 phase encodes.
    assert cmrxrecon_crop_size(448, 204) == (149, 102)
    assert cmrxrecon_crop_size(512, 204) == (171, 102)
    assert cmrxrecon_crop_size(32, 24) == (11, 12)
    assert cmrxrecon_crop_size(9, 5) == (3, 3)  # MATLAB rounds 2.5 up, Python's round would give 2
    # MATLAB crop keeps floor(n/2)+ceil(-c/2) ... (0-based): n=32,c=11 -> 11..21 ; n=24,c=12 -> 6..17
    x = np.arange(32)[None, None, :, None, None] * 100 + np.arange(24)[None, None, None, :, None]
    cropped = center_crop(x, (11, 12))
    assert cropped.shape == (1, 1, 11, 12, 1)
    assert cropped[0, 0, 0, 0, 0] == 11 * 100 + 6
    assert cropped[0, 0, -1, -1, 0] == 21 * 100 + 17
    with pytest.raises(ValueError, match="crop size"):
        center_crop(x, (40, 12))


def test_cmrxrecon_crop_ignores_errors_outside_the_central_region() -> None:
    rng = np.random.default_rng(7)
    gt = _cine(rng, (1, 2, 32, 24, 1))
    pred = gt.copy()
    pred[:, :, :5] += 1.0  # error only in the first 5 readout rows, outside the central third (rows 11..21)
    pred[:, :, :, -3:] += 1.0  # and in the last phase-encoding columns, outside 6..17
    full = compute_metrics(gt, pred)
    cropped = compute_metrics(gt, pred, MetricOptions(crop="cmrxrecon"))
    assert full["mean"]["nrmse"] > 0
    assert cropped["mean"]["nrmse"] == 0.0 and cropped["mean"]["nmse"] == 0.0
    assert cropped["shape"] == (1, 1, 2, 11, 12)
    explicit = compute_metrics(gt, pred, MetricOptions(crop=(11, 12)))
    assert explicit["mean"] == cropped["mean"]


def test_cmrxrecon_normalisation_removes_global_scale() -> None:
    rng = np.random.default_rng(8)
    gt = _cine(rng, (1, 2, 8, 8, 1))
    result = compute_metrics(gt, 3.0 * gt, MetricOptions(normalize="cmrxrecon"))
    assert result["mean"]["nmse"] == pytest.approx(0.0, abs=1e-12)
    assert result["mean"]["ssim"] == pytest.approx(1.0)
    np.testing.assert_allclose(result["psnr_data_range"], 1.0)


def test_format_metrics() -> None:
    text = format_metrics({"mean": {"psnr": 31.234, "ssim": 0.94123, "nrmse": 0.0321}})
    assert text == "PSNR 31.23 dB, SSIM 0.9412, NRMSE 0.0321"


def test_frame_primitives_edge_cases() -> None:
    flat = np.ones((8, 8))
    assert math.isnan(frame_nrmse(flat, flat + 1))  # constant ground truth: the range is 0
    assert math.isnan(frame_psnr(np.zeros((8, 8)), np.ones((8, 8)), 0.0))
    assert frame_psnr(flat, flat, 1.0) == math.inf


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


def test_shape_mismatch_names_argument_and_shapes() -> None:
    gt = np.zeros((1, 2, 8, 8, 1), np.complex64)
    with pytest.raises(ValueError, match=r"pred.*\(1, 2, 8, 8, 1\).*\(1, 2, 8, 7, 1\)"):
        compute_metrics(gt, np.zeros((1, 2, 8, 7, 1), np.complex64))
    with pytest.raises(ValueError, match="pred"):
        compute_metrics(gt, np.zeros((1, 2, 8, 8), np.complex64))  # rank 4 vs rank 5 is not silently accepted


def test_wrong_rank_names_argument() -> None:
    with pytest.raises(ValueError, match=r"gt must have shape \(B, T, X, Y, C\).*\(2, 8, 8\)"):
        compute_metrics(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="pred"):
        compute_metrics(np.zeros((1, 1, 8, 8, 1)), np.zeros((1, 1, 1, 8, 8, 1)))


def test_non_finite_values_rejected() -> None:
    gt = np.ones((1, 1, 8, 8, 1))
    bad = gt.copy()
    bad[0, 0, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="pred contains 1 non-finite"):
        compute_metrics(gt, bad)
    with pytest.raises(ValueError, match="gt contains"):
        compute_metrics(bad * np.inf, gt)


def test_too_small_for_ssim() -> None:
    gt = np.ones((1, 1, 6, 8, 1)) + np.arange(8)
    with pytest.raises(ValueError, match="too small for SSIM"):
        compute_metrics(gt, gt)
    result = compute_metrics(gt, gt + 0.5, MetricOptions(compute_ssim=False))
    assert "ssim" not in result["mean"]
    assert result["mean"]["psnr"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"psnr_data_range": "max"},
        {"psnr_data_range": -1.0},
        {"psnr_data_range": float("nan")},
        {"psnr_data_range": True},
        {"crop": "center"},
        {"crop": (10,)},
        {"crop": (0, 5)},
        {"crop": 5},
        {"normalize": "minmax"},
    ],
)
def test_invalid_options(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MetricOptions(**kwargs)
