"""Tests of the synthetic cardiac cine phantom, the analytic coil array and the noisy subject generator."""
from __future__ import annotations

import numpy as np
import pytest

from data_loader.coil_maps import sense_combine
from data_loader.phantom import analytic_coil_maps, make_phantom, make_subject
from utils.mri import fft2c_np


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_ejection_fraction_in_range_and_lv_area_periodic(seed):
    ph = make_phantom(16, 64, 56, seed=seed)
    ef = ph["ejection_fraction"]
    assert 0.5 <= ef <= 0.7
    area = ph["lv_area"]
    assert area.shape == (16,)
    # the rendered areas follow the model: measured EF close to (and not above) the model EF
    measured = (area.max() - area.min()) / area.max()
    assert measured == pytest.approx(ph["ejection_fraction_frames"])
    assert ef - 0.08 < measured <= ef + 0.02
    # periodic over the cycle: the first harmonic dominates the non-constant part of the area curve
    spectrum = np.abs(np.fft.rfft(area - area.mean())) ** 2
    assert spectrum[1] / spectrum[1:].sum() > 0.7
    # area is smallest where the contraction curve peaks (end-systole)
    assert np.corrcoef(area, ph["contraction"])[0, 1] < -0.95
    # the RV contracts too
    rv = ph["rv_area"]
    assert (rv.max() - rv.min()) / rv.max() > 0.2


def test_image_range_dtype_and_support():
    ph = make_phantom(6, 40, 32, seed=11)
    img = ph["image"]
    assert img.shape == (6, 40, 32) and img.dtype == np.complex64
    mag = np.abs(img)
    assert mag.max() <= 1.0 + 1e-6
    assert mag.max() == pytest.approx(1.0, abs=1e-6)
    body = ph["body_mask"]
    assert body.shape == (40, 32) and 0.3 < body.mean() < 0.9
    # nothing outside the torso (one-pixel antialiasing ramp aside)
    from scipy import ndimage

    outside = ~ndimage.binary_dilation(body, iterations=1)
    assert mag[:, outside].max() < 1e-6
    # phase is not constant (smooth background phase)
    assert np.std(np.angle(img[0][body])) > 0.05


def test_heart_centre_is_blood_and_breathing_is_small():
    ph = make_phantom(12, 64, 48, seed=5, breathing=True)
    centre = ph["heart_center"]
    assert centre.shape == (12, 2)
    x, y = np.round(centre[0]).astype(int)
    assert ph["body_mask"][x, y]
    assert np.abs(ph["image"][0, x, y]) > 0.6  # LV blood pool is bright
    drift = np.linalg.norm(ph["breathing_shift"], axis=1)
    assert 0 < drift.max() < 3.0
    still = make_phantom(12, 64, 48, seed=5, breathing=False)
    assert np.allclose(still["heart_center"], still["heart_center"][0])
    assert np.allclose(still["breathing_shift"], 0.0)


def test_determinism_and_subjects_differ():
    a = make_subject(4, 32, 28, 4, seed=21)
    b = make_subject(4, 32, 28, 4, seed=21)
    c = make_subject(4, 32, 28, 4, seed=22)
    for key in ("image", "coil_maps", "kspace"):
        np.testing.assert_array_equal(a[key], b[key])
    assert np.abs(a["image"] - c["image"]).max() > 0.1
    assert np.abs(a["coil_maps"] - c["coil_maps"]).max() > 0.1
    assert a["slices_meta"][0]["ejection_fraction"] != c["slices_meta"][0]["ejection_fraction"]
    # the phantom of a subject is make_phantom with the same seed
    np.testing.assert_array_equal(a["image"][0, ..., 0], make_phantom(4, 32, 28, seed=21)["image"])


@pytest.mark.parametrize("size", [(3, 33, 27, 3), (5, 31, 40, 1)])
def test_odd_sizes_and_forward_model(size):
    nt, nx, ny, nc = size
    s = make_subject(nt, nx, ny, nc, seed=3, snr=None, slices=2)
    assert s["image"].shape == (2, nt, nx, ny, 1)
    assert s["coil_maps"].shape == (2, 1, nx, ny, nc)
    assert s["kspace"].shape == (2, nt, nx, ny, nc)
    assert s["kspace"].dtype == np.complex64 and s["noise_std"] == 0.0
    clean = fft2c_np(s["image"] * s["coil_maps"])
    np.testing.assert_allclose(s["kspace"], clean, atol=1e-5)
    # sum_c |s_c|^2 = 1, so coil combination of noise-free data returns the image
    np.testing.assert_allclose(sense_combine(s["kspace"], s["coil_maps"]), s["image"], atol=1e-5)
    # slices differ (the ventricles shrink towards the apex) but share the anatomy
    assert not np.allclose(s["image"][0], s["image"][1])


def test_analytic_coil_maps_normalised_inside_body():
    maps, body = analytic_coil_maps(48, 40, 8, seed=4)
    assert maps.shape == (48, 40, 8) and maps.dtype == np.complex64
    assert body.dtype == bool and body.any()
    np.testing.assert_allclose(np.sum(np.abs(maps[body]) ** 2, axis=-1), 1.0, atol=1e-5)
    # real coil profiles: each coil is strong somewhere and weak elsewhere, with spatially varying phase
    mag = np.abs(maps[body])
    assert np.all(mag.max(axis=0) > 0.5) and np.all(mag.min(axis=0) < 0.3)
    phase_spread = np.abs(np.exp(1j * np.angle(maps[body])).mean(axis=0))
    assert np.all(phase_spread < 0.98)
    again, _ = analytic_coil_maps(48, 40, 8, seed=4)
    np.testing.assert_array_equal(maps, again)


def test_subject_maps_normalised_in_phantom_body():
    s = make_subject(2, 36, 30, 6, seed=9)
    body = s["body_mask"]
    np.testing.assert_array_equal(body, s["slices_meta"][0]["body_mask"])
    np.testing.assert_allclose(np.sum(np.abs(s["coil_maps"][0, 0][body]) ** 2, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("snr", [10.0, 25.0])
def test_noise_matches_snr_definition(snr):
    s = make_subject(6, 48, 40, 8, seed=13, snr=snr)
    body = s["body_mask"]
    signal = np.mean(np.abs(s["image"][..., 0])[:, :, body])
    sigma = s["noise_std"]
    assert sigma == pytest.approx(signal / 10 ** (snr / 20), rel=1e-6)
    noise = s["kspace"] - fft2c_np(s["image"] * s["coil_maps"])
    # E|n|^2 = sigma^2, split evenly between real and imaginary parts; ~9e4 samples: a few % tolerance
    assert np.sqrt(np.mean(np.abs(noise) ** 2)) == pytest.approx(sigma, rel=0.02)
    assert np.var(noise.real) == pytest.approx(sigma**2 / 2, rel=0.04)
    assert np.var(noise.imag) == pytest.approx(sigma**2 / 2, rel=0.04)
    assert abs(np.mean(noise)) < 0.02 * sigma
    # the definition holds on the coil-combined image: its noise std is sigma too
    img_noise = sense_combine(s["kspace"], s["coil_maps"]) - s["image"]
    measured_snr = 20 * np.log10(signal / np.sqrt(np.mean(np.abs(img_noise[..., 0][:, :, body]) ** 2)))
    assert measured_snr == pytest.approx(snr, abs=0.3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sizes"):
        make_phantom(0, 16, 16, seed=0)
    with pytest.raises(ValueError, match="ncoils"):
        analytic_coil_maps(16, 16, 0)
    with pytest.raises(ValueError, match="slices"):
        make_subject(2, 16, 16, 2, seed=0, slices=0)
