"""Coil-map estimation (ESPIRiT, Walsh), normalisation and coil compression on the synthetic data."""
from __future__ import annotations

import numpy as np
import pytest

from data_loader.coil_maps import (coil_compress, espirit_coil_maps, map_correlation, normalize_coil_maps,
                                   sense_combine, walsh_coil_maps)
from data_loader.phantom import make_subject
from utils.mri import fft2c_np, ifft2c_np

NT, NX, NY, NC, CALIB = 4, 48, 40, 8, 24


@pytest.fixture(scope="module")
def subject():
    s = make_subject(NT, NX, NY, NC, seed=7, snr=30.0)
    # only the 24 central phase-encoding lines (plus every second line) are acquired: an initial 2x acquisition
    mask = np.zeros(NY, dtype=np.float32)
    mask[(np.arange(NY) - NY // 2) % 2 == 0] = 1
    mask[NY // 2 - CALIB // 2: NY // 2 + CALIB // 2] = 1
    s["mask"] = mask
    s["acquired"] = s["kspace"][0] * mask[None, None, :, None]  # (T, X, Y, C)
    s["truth"] = s["coil_maps"][0, 0]
    return s


@pytest.fixture(scope="module")
def espirit(subject):
    return espirit_coil_maps(subject["acquired"], calib_size=CALIB, kernel_size=6, return_eigenvalues=True)


def test_espirit_matches_true_maps(subject, espirit):
    maps, eig = espirit
    body = subject["body_mask"]
    assert maps.shape == (NX, NY, NC) and maps.dtype == np.complex64
    corr = map_correlation(maps, subject["truth"])[body]
    # achieved on this data: mean ~0.9998, min ~0.998
    assert corr.mean() > 0.99
    assert corr.min() > 0.95
    # the signal subspace gives eigenvalue ~1 in the body and the maps are normalised there
    assert np.median(eig[body]) > 0.98
    np.testing.assert_allclose(np.sum(np.abs(maps[body]) ** 2, axis=-1), 1.0, atol=1e-4)
    # no signal in the corners: eigenvalue below the crop threshold, maps set to 0
    corners = np.zeros_like(body)
    corners[:3, :3] = corners[:3, -3:] = corners[-3:, :3] = corners[-3:, -3:] = True
    assert np.all(np.abs(maps[corners]).sum(axis=-1) == 0)


def test_walsh_matches_true_maps(subject):
    body = subject["body_mask"]
    centre = np.zeros(NY, dtype=np.float32)
    centre[NY // 2 - CALIB // 2: NY // 2 + CALIB // 2] = 1
    low_res = ifft2c_np(subject["acquired"] * centre[None, None, :, None], axes=(1, 2))
    maps = walsh_coil_maps(low_res, kernel_size=5)
    corr = map_correlation(maps, subject["truth"])[body]
    # achieved: mean ~0.99
    assert corr.mean() > 0.95
    np.testing.assert_allclose(np.sum(np.abs(maps) ** 2, axis=-1), 1.0, atol=1e-4)


def test_sense_combination_reproduces_image_up_to_phase(subject, espirit):
    maps = espirit[0]
    body = subject["body_mask"]
    image = subject["image"][0]  # (T, X, Y, 1)
    clean = fft2c_np(image * subject["coil_maps"][0], axes=(1, 2))
    estimate = sense_combine(clean, maps[None])
    assert estimate.shape == image.shape
    # magnitude: the estimated maps recover the image
    err = np.linalg.norm((np.abs(estimate) - np.abs(image))[:, body]) / np.linalg.norm(np.abs(image)[:, body])
    assert err < 0.02
    # complex: with both map sets in the same phase convention the combinations agree as complex images
    truth_n = normalize_coil_maps(subject["truth"], support=body)
    est_n = normalize_coil_maps(maps, support=body)
    a = sense_combine(clean, est_n[None])[:, body]
    b = sense_combine(clean, truth_n[None])[:, body]
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.05
    # and that is not trivially true: the raw image differs from b by the maps' phase
    assert np.linalg.norm(image[:, body] - b) / np.linalg.norm(b) > 0.1


def test_normalisation_makes_maps_comparable(subject, espirit):
    body = subject["body_mask"]
    truth, est = subject["truth"], espirit[0]
    for reference in ("body", "first"):
        t = normalize_coil_maps(truth, reference=reference, support=body)
        e = normalize_coil_maps(est, reference=reference, support=body)
        assert np.linalg.norm((t - e)[body]) / np.linalg.norm(t[body]) < 0.05
    first = normalize_coil_maps(truth, reference="first")
    assert np.allclose(first[..., 0].imag, 0, atol=1e-6) and np.all(first[..., 0].real >= -1e-6)
    # a per-pixel phase change of the input does not change the normalised maps
    twisted = truth * np.exp(1j * np.linspace(0, 6, NX * NY).reshape(NX, NY, 1))
    np.testing.assert_allclose(normalize_coil_maps(twisted, support=body), normalize_coil_maps(truth, support=body),
                               atol=1e-5)
    with pytest.raises(ValueError, match="reference"):
        normalize_coil_maps(truth, reference="bogus")


def test_coil_compression_keeps_energy():
    # signal energy (white noise cannot be compressed: at 30 dB, 12 virtual coils are needed for 99 %)
    s = make_subject(3, 40, 32, 15, seed=2, snr=None)
    kspace = s["kspace"][0]
    compressed, matrix = coil_compress(kspace, 10)
    assert compressed.shape == (3, 40, 32, 10) and matrix.shape == (15, 10)
    np.testing.assert_allclose(matrix.conj().T @ matrix, np.eye(10), atol=1e-5)
    np.testing.assert_allclose(compressed, kspace @ matrix, rtol=1e-4, atol=1e-5)
    kept = np.sum(np.abs(compressed) ** 2) / np.sum(np.abs(kspace) ** 2)
    assert kept > 0.99  # achieved: 0.9946
    # compressed maps (maps @ matrix, renormalised) still describe the compressed data
    maps_v = normalize_coil_maps(s["coil_maps"][0, 0] @ matrix, reference=None)
    image = sense_combine(compressed, maps_v[None])
    body = s["body_mask"]
    ref = s["image"][0][:, body]
    assert np.linalg.norm(np.abs(image[:, body]) - np.abs(ref)) / np.linalg.norm(ref) < 0.05
    # energy is ordered: fewer virtual coils keep less, all of them keep everything
    few, _ = coil_compress(kspace, 2)
    assert np.sum(np.abs(few) ** 2) / np.sum(np.abs(kspace) ** 2) < kept
    full, _ = coil_compress(kspace, 15)
    assert np.sum(np.abs(full) ** 2) == pytest.approx(np.sum(np.abs(kspace) ** 2), rel=1e-4)
    with pytest.raises(ValueError, match="num_virtual"):
        coil_compress(kspace, 16)


def test_espirit_rejects_bad_input(subject):
    with pytest.raises(ValueError, match="smaller than the kernel"):
        espirit_coil_maps(subject["acquired"], calib_size=4, kernel_size=6)
    with pytest.raises(ValueError, match="expected"):
        espirit_coil_maps(np.zeros((2, 3, 4, 5, 6), np.complex64))
