"""CMRxRecon scoring protocols against an independent numpy/scikit-image reference of the challenge scripts."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from data_loader.formats import SubjectRow
from evaluation import protocols


def reference_scores(gt_case: np.ndarray, pred_case: np.ndarray) -> dict[str, float]:
    """run4Ranking.m + Evaluation.py written out: frames 1:3, abs, MATLAB crop, each image / its max, skimage."""
    nt, nx, ny = gt_case.shape
    cx, cy = int(math.floor(nx / 3 + 0.5)), int(math.floor(ny / 2 + 0.5))
    # MATLAB crop: indices floor(n/2) + ceil(-c/2) + (0 .. c-1)
    x0, y0 = nx // 2 + math.ceil(-cx / 2), ny // 2 + math.ceil(-cy / 2)
    psnr, ssim, nmse = [], [], []
    for t in range(min(3, nt)):
        gt = np.abs(gt_case[t])[x0:x0 + cx, y0:y0 + cy].astype(np.float64)
        pred = np.abs(pred_case[t])[x0:x0 + cx, y0:y0 + cy].astype(np.float64)
        g, p = gt / gt.max(), pred / pred.max()
        psnr.append(peak_signal_noise_ratio(g, p, data_range=g.max()))
        ssim.append(structural_similarity(g, p, data_range=g.max()))
        nmse.append(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2)
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "nmse": float(np.mean(nmse))}


def _case(rng, nt=5, nx=31, ny=22):
    gt = (rng.standard_normal((nt, nx, ny)) + 1j * rng.standard_normal((nt, nx, ny))).astype(np.complex64)
    pred = gt + 0.3 * (rng.standard_normal(gt.shape) + 1j * rng.standard_normal(gt.shape)).astype(np.complex64)
    return gt, pred


@pytest.mark.parametrize("protocol", protocols.PROTOCOLS)
@pytest.mark.parametrize("shape", [(5, 31, 22), (2, 30, 20), (12, 64, 41)])
def test_score_case_matches_the_challenge_reference(protocol, shape):
    rng = np.random.default_rng(sum(shape))
    gt, pred = _case(rng, *shape)
    got = protocols.score_case(gt[None, ..., None], pred[None, ..., None], protocol)
    want = reference_scores(gt, pred)
    for key in ("psnr", "ssim", "nmse"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert len(got["per_image"]) == min(3, shape[0])
    assert got["nrmse"] == pytest.approx(np.mean([math.sqrt(s["nmse"]) for s in got["per_image"]]))


def test_scores_ignore_global_scale_and_phase_and_perfect_recon_is_perfect():
    rng = np.random.default_rng(0)
    gt, pred = _case(rng)
    base = protocols.score_case(gt, pred, "cmrxrecon2023")
    scaled = protocols.score_case(gt, 3.7 * np.exp(1j * 0.4) * pred, "cmrxrecon2023")
    for key in ("psnr", "ssim", "nmse"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-9)
    perfect = protocols.score_case(gt, gt * 2.0, "cmrxrecon2024")
    assert perfect["psnr"] == math.inf and perfect["ssim"] == pytest.approx(1.0) and perfect["nmse"] == 0.0
    # only the first three frames count: corrupting frame 4 changes nothing
    changed = pred.copy()
    changed[4] = 0
    assert protocols.score_case(gt, changed, "cmrxrecon2023")["psnr"] == base["psnr"]


def test_rss_over_coils_for_multichannel_images():
    rng = np.random.default_rng(1)
    coils = (rng.standard_normal((4, 30, 20, 3)) + 1j * rng.standard_normal((4, 30, 20, 3)))
    rss = np.sqrt(np.sum(np.abs(coils) ** 2, axis=-1))
    np.testing.assert_allclose(protocols.protocol_images(coils, "cmrxrecon2024"),
                               protocols.protocol_images(rss, "cmrxrecon2024"))


@pytest.mark.parametrize("protocol", protocols.PROTOCOLS)
def test_central_slices_follow_matlab_round(protocol):
    for sz in range(1, 14):
        if sz < 3:
            want = list(range(sz))
        else:
            r = int(np.floor(sz / 2 + 0.5))  # MATLAB round (halves away from zero)
            want = [r - 2, r - 1]  # 1-based round(sz/2)-1 : round(sz/2)
        assert protocols.selected_slices(sz, protocol) == want, sz
    assert protocols.selected_slices(5, protocol) == [1, 2] and protocols.selected_slices(7, protocol) == [2, 3]


def test_select_cases_keeps_the_scored_slices_in_csv_order():
    rows = [SubjectRow("a", 30, 20, 2, 4, 1), SubjectRow("b", 30, 20, 2, 4, 5), SubjectRow("c", 30, 20, 2, 4, 3)]
    cases = [{"name": f"{r.name}_slice{s}"} for r in rows for s in range(r.slices)]
    kept = [c["name"] for c in protocols.select_cases(iter(cases), rows, "cmrxrecon2023")]
    assert kept == ["a_slice0", "b_slice1", "b_slice2", "c_slice0", "c_slice1"]
    with pytest.raises(ValueError, match="more evaluation cases"):
        list(protocols.select_cases(iter(cases + [{"name": "extra"}]), rows, "cmrxrecon2023"))


def test_bad_protocol_and_small_images_are_clear_errors():
    with pytest.raises(ValueError, match="--protocol: expected one of cmrxrecon2023, cmrxrecon2024"):
        protocols.selected_slices(3, "fastmri")
    small = np.ones((3, 12, 12), np.complex64)
    with pytest.raises(ValueError, match="smaller than SSIM's 7x7 window"):
        protocols.score_case(small, small, "cmrxrecon2023")
    with pytest.raises(ValueError, match="differs from the reference"):
        protocols.score_case(small, small[:2], "cmrxrecon2023")
