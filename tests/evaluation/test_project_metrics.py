"""The dual-UNet project's PSNR (peak 1) and SSIM (evaluation/project_metrics.py) against numpy / scikit-image."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from evaluation.project_metrics import dual_unet_metrics, dual_unet_psnr, dual_unet_ssim, get_metric_definitions


def _volumes(shape=(12, 17, 13), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0.0, 1.0, size=shape)
    recon = np.clip(reference + 0.1 * rng.normal(size=shape), 0.0, 1.0)
    return recon, reference


def _skimage_reference(recon: np.ndarray, reference: np.ndarray) -> float:
    # bme1312/utils.py compute_ssim, verbatim arguments
    return structural_similarity(reference, recon, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=reference.max() - reference.min())


def test_psnr_is_peak_one_over_the_volume() -> None:
    recon, reference = _volumes()
    want = 20 * math.log10(1.0) - 10 * np.log10(np.mean(np.abs(recon - reference) ** 2) + 1e-8)
    assert dual_unet_psnr(recon, reference) == pytest.approx(want, abs=1e-12)
    # the peak is 1 whatever the data hold: scaling both images by 10 lowers the PSNR by 20 dB
    assert dual_unet_psnr(10 * recon, 10 * reference) == pytest.approx(want - 20.0, abs=1e-4)  # up to the 1e-8
    assert dual_unet_psnr(reference + 0.1, reference) == pytest.approx(-10 * math.log10(0.01 + 1e-8), abs=1e-12)
    assert dual_unet_psnr(reference, reference) == pytest.approx(80.0)  # bounded by the 1e-8


def test_psnr_on_magnitudes_or_complex() -> None:
    _, reference = _volumes()
    rotated = reference * np.exp(1j * 0.3)  # same magnitude, other phase
    assert dual_unet_psnr(rotated, reference) == pytest.approx(80.0)
    want = -10 * np.log10(np.mean(np.abs(rotated - reference) ** 2) + 1e-8)
    assert dual_unet_psnr(rotated, reference, magnitude=False) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("shape", [(12, 17, 13), (11, 11, 11), (20, 24, 16)])
def test_ssim_equals_scikit_image(shape) -> None:
    recon, reference = _volumes(shape, seed=sum(shape))
    assert dual_unet_ssim(recon, reference) == pytest.approx(_skimage_reference(recon, reference), abs=1e-10)
    assert dual_unet_ssim(reference, reference) == pytest.approx(1.0, abs=1e-12)


def test_ssim_takes_magnitudes_and_the_reference_range() -> None:
    recon, reference = _volumes()
    phase = np.exp(1j * np.linspace(0, 1, reference.size)).reshape(reference.shape)
    assert dual_unet_ssim(recon * phase, reference) == pytest.approx(_skimage_reference(recon, reference), abs=1e-10)
    shifted = reference + 2.0  # data range = max - min of the reference, so this is not a rescaling
    assert dual_unet_ssim(recon + 2.0, shifted) == pytest.approx(_skimage_reference(recon + 2.0, shifted), abs=1e-10)


def test_batch_layout_matches_the_per_case_functions() -> None:
    recon, reference = _volumes((2, 12, 14, 13, 1), seed=3)
    result = dual_unet_metrics(reference, recon)
    assert result["per_case"]["psnr"].shape == (2, 1)
    for b in range(2):
        assert result["per_case"]["psnr"][b, 0] == pytest.approx(dual_unet_psnr(recon[b, ..., 0],
                                                                                 reference[b, ..., 0]))
        assert result["per_case"]["ssim"][b, 0] == pytest.approx(_skimage_reference(recon[b, ..., 0],
                                                                                    reference[b, ..., 0]), abs=1e-10)
    assert result["mean"]["psnr"] == pytest.approx(np.mean(result["per_case"]["psnr"]))
    rank4 = dual_unet_metrics(reference[..., 0], recon[..., 0], compute_ssim=False)
    assert set(rank4["per_case"]) == {"psnr"}
    np.testing.assert_allclose(rank4["per_case"]["psnr"], result["per_case"]["psnr"])
    assert get_metric_definitions("dual-unet") is dual_unet_metrics


def test_errors_name_the_problem() -> None:
    recon, reference = _volumes()
    with pytest.raises(ValueError, match="shapes differ"):
        dual_unet_psnr(recon[:-1], reference)
    with pytest.raises(ValueError, match=">= 11 samples"):
        dual_unet_ssim(recon[:8], reference[:8])
    with pytest.raises(ValueError, match="NaN"):
        dual_unet_psnr(np.full_like(reference, np.nan), reference)
    with pytest.raises(ValueError, match=r"\(B, T, X, Y\)"):
        dual_unet_metrics(reference, recon)
    with pytest.raises(ValueError, match="expected one of \\['dual-unet'\\]"):
        get_metric_definitions("fastmri")


def test_evaluate_scores_with_the_project_definitions(tmp_path) -> None:
    import csv

    from evaluation.evaluate import evaluate

    rng = np.random.default_rng(5)
    shape = (1, 12, 14, 13, 1)
    cases = []
    for i in range(2):
        reference = (rng.uniform(0, 1, shape) * np.exp(1j * rng.uniform(-1, 1, shape))).astype(np.complex64)
        cases.append({"name": f"case{i}", "reference": reference, "x": reference * 0.5, "y": None, "mask": None,
                      "coil_maps": None})

    def noisy(case):
        return case["reference"] + np.complex64(0.05)

    evaluate(lambda acc: iter(cases), {"noisy": noisy}, [4.0], tmp_path, figure_cases=0, gif_cases=0,
             protocol="dual-unet")
    with open(tmp_path / "per_case.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] == "noisy"]
    assert len(rows) == 2
    for row, case in zip(rows, cases):
        want = dual_unet_metrics(case["reference"], noisy(case))["mean"]
        assert float(row["psnr"]) == pytest.approx(want["psnr"], rel=1e-6)
        assert float(row["ssim"]) == pytest.approx(want["ssim"], rel=1e-6)
