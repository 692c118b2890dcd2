"""Reading one case for ``features`` / ``reconstruct`` (:mod:`data_loader.cases`) from .npz, .h5 and .mat, and the
errors for bad input, which name the file."""
from __future__ import annotations

import numpy as np
import pytest

from data_loader.cases import load_case
from data_loader.formats import write_cmrxrecon_like, write_h5_subject
from helpers import random_complex
from utils.mri import adjoint_np, fft2c_np

T, X, Y, C = 4, 32, 24, 2


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    kspace = random_complex(rng, (T, X, Y, C))
    maps = random_complex(rng, (1, X, Y, C))
    mask = (rng.random((T, 1, Y, 1)) < 0.5).astype(np.float32)
    return kspace, maps, mask


def _numpy(case: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in case.items()}


@pytest.mark.parametrize("batched", [True, False])
def test_npz_case_forms_the_zero_filled_image(tmp_path, arrays, batched) -> None:
    kspace, maps, mask = arrays
    y = kspace * mask
    path = tmp_path / "case.npz"
    if batched:
        np.savez(path, y=y[None], mask=mask[None], smaps=maps[None])
    else:  # rank-4 arrays get the batch axis; coil maps may be called coil_maps
        np.savez(path, y=y, mask=mask, coil_maps=maps)
    case = _numpy(load_case(path))
    assert case["y"].shape == (1, T, X, Y, C) and case["mask"].shape == (1, T, 1, Y, 1)
    assert case["coil_maps"].shape == (1, 1, X, Y, C) and case["x"].shape == (1, T, X, Y, 1)
    np.testing.assert_allclose(case["y"], y[None], rtol=1e-6)
    np.testing.assert_allclose(case["x"], adjoint_np(y[None], mask[None], maps[None]), rtol=1e-5, atol=1e-5)


def test_npz_case_keeps_a_given_zero_filled_image(tmp_path, arrays) -> None:
    kspace, maps, mask = arrays
    x = random_complex(np.random.default_rng(1), (1, T, X, Y, 1))
    np.savez(tmp_path / "case.npz", y=kspace[None] * mask, mask=mask[None], smaps=maps[None], x=x)
    np.testing.assert_array_equal(np.asarray(load_case(tmp_path / "case.npz")["x"]), x)


@pytest.mark.parametrize("with_mask", [True, False])
def test_h5_case_applies_the_initial_mask(tmp_path, arrays, with_mask) -> None:
    kspace, maps, _ = arrays
    image = np.sum(np.conj(maps) * np.fft.ifft2(kspace, axes=(1, 2)), axis=-1, keepdims=True)
    initial = np.zeros((Y, T), np.uint8)
    initial[::2] = 1
    path = tmp_path / "subject.h5"
    write_h5_subject(path, kspace[None], image[None], maps[None], initial_mask=initial if with_mask else None)
    case = _numpy(load_case(path))
    expected_mask = (initial.T[:, None, :, None].astype(np.float32) if with_mask
                     else np.ones((T, 1, Y, 1), np.float32))
    np.testing.assert_array_equal(case["mask"], expected_mask[None])
    np.testing.assert_allclose(case["y"], (kspace * expected_mask)[None], rtol=1e-6)
    np.testing.assert_allclose(case["x"], adjoint_np(case["y"], case["mask"], maps[None]), rtol=1e-5, atol=1e-5)


def test_mat_case_reads_the_sampled_lines_and_estimates_maps(tmp_path) -> None:
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:X, :Y]
    body = np.exp(-((yy - X / 2) ** 2 / 60.0 + (xx - Y / 2) ** 2 / 40.0))
    coils = np.stack([np.exp(-((yy - c * X) ** 2) / 400.0) for c in range(C)], axis=-1)
    image = body[None, :, :, None] * coils[None] * (1.0 + 0.1 * rng.random((T, 1, 1, 1)))
    kspace = fft2c_np(image, axes=(1, 2)).astype(np.complex64)
    lines = np.zeros((T, Y), bool)
    lines[:, ::3] = True
    lines[:, Y // 2 - 4:Y // 2 + 4] = True
    kspace = kspace * lines[:, None, :, None]
    path = tmp_path / "cine_sax.mat"
    write_cmrxrecon_like(path, kspace[None])
    case = _numpy(load_case(path))
    np.testing.assert_array_equal(case["mask"][0, :, 0, :, 0], lines.astype(np.float32))
    np.testing.assert_allclose(case["y"][0], kspace, rtol=1e-5, atol=1e-6)
    assert case["coil_maps"].shape == (1, 1, X, Y, C) and case["x"].shape == (1, T, X, Y, 1)
    assert np.all(np.isfinite(case["coil_maps"])) and np.abs(case["coil_maps"]).max() > 0


def test_missing_file_and_unknown_format_name_the_path(tmp_path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_case(missing)
    other = tmp_path / "case.txt"
    other.write_text("y", encoding="utf-8")
    with pytest.raises(ValueError, match=r"case\.txt.*unsupported format '\.txt'"):
        load_case(other)


def test_bad_npz_files_name_the_file_and_the_problem(tmp_path, arrays) -> None:
    kspace, maps, mask = arrays
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"corrupt\.npz: not a readable \.npz"):
        load_case(corrupt)

    partial = tmp_path / "partial.npz"
    np.savez(partial, y=kspace[None])
    with pytest.raises(ValueError, match=r"partial\.npz: missing arrays \['mask', 'coil_maps'\]"):
        load_case(partial)

    nan = tmp_path / "nan.npz"
    bad = kspace.copy()
    bad[0, 0, 0, 0] = np.nan
    np.savez(nan, y=bad[None], mask=mask[None], smaps=maps[None])
    with pytest.raises(ValueError, match=r"nan\.npz: array 'y' contains NaN or Inf"):
        load_case(nan)

    coils = tmp_path / "coils.npz"
    np.savez(coils, y=kspace[None], mask=mask[None], smaps=maps[None, ..., :1])
    with pytest.raises(ValueError, match=r"coils\.npz: .*coil count mismatch"):
        load_case(coils)

    text = tmp_path / "text.npz"
    np.savez(text, y=np.array(["a"]), mask=mask[None], smaps=maps[None])
    with pytest.raises(ValueError, match=r"text\.npz: array 'y' has dtype <U1, expected numbers"):
        load_case(text)


def test_truncated_h5_and_mat_name_the_file(tmp_path, arrays) -> None:
    kspace, maps, _ = arrays
    h5 = tmp_path / "subject.h5"
    write_h5_subject(h5, kspace[None], np.ones((1, T, X, Y, 1), np.complex64), maps[None])
    h5.write_bytes(h5.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"subject\.h5"):
        load_case(h5)
    mat = tmp_path / "cine.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(ValueError, match=r"cine\.mat"):
        load_case(mat)
