"""The dual-UNet project's cine.npz as a data source (data_loader/cine_npz.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_loader import formats
from data_loader.cine_npz import cine_to_single_coil, prepare_cine_npz, read_cine_npz
from utils.mri import fft2c_np, ifft2c_np
from utils.schema import DataConfig

N, T, H, W = 6, 4, 10, 7  # odd sizes on purpose


def _magnitudes(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(N, T, H, W)).astype(np.float32)


def _npz(tmp_path, **arrays) -> str:
    path = tmp_path / "cine.npz"
    np.savez(path, **arrays)
    return str(path)


def test_read_returns_the_dataset_array(tmp_path) -> None:
    data = _magnitudes()
    got = read_cine_npz(_npz(tmp_path, dataset=data.astype(np.float64)))
    assert got.dtype == np.float32 and got.shape == (N, T, H, W)
    np.testing.assert_array_equal(got, data)


def test_read_errors_name_file_and_expectation(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.npz.*'dataset'"):
        read_cine_npz(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=r"no array 'dataset' \(it has \['images'\]\)"):
        read_cine_npz(_npz(tmp_path, images=_magnitudes()))
    with pytest.raises(ValueError, match=r"shape \(4, 10, 7\); expected \[N, T, H, W\]"):
        read_cine_npz(_npz(tmp_path, dataset=_magnitudes()[0]))
    with pytest.raises(ValueError, match="complex64; expected real magnitudes"):
        read_cine_npz(_npz(tmp_path, dataset=_magnitudes().astype(np.complex64)))
    bad = _magnitudes()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        read_cine_npz(_npz(tmp_path, dataset=bad))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="garbage.npz"):
        read_cine_npz(garbage)


def test_single_coil_layout() -> None:
    data = _magnitudes()
    case = cine_to_single_coil(data)
    assert case["image"].shape == (N, T, W, H, 1) and case["image"].dtype == np.complex64  # X = W, Y = H
    np.testing.assert_array_equal(case["image"][..., 0].real, np.swapaxes(data, 2, 3))
    assert not np.any(case["image"].imag)  # zero phase
    np.testing.assert_array_equal(case["coil_maps"], np.ones((N, 1, W, H, 1), np.complex64))
    np.testing.assert_allclose(case["kspace"], fft2c_np(case["image"]), atol=1e-6)
    np.testing.assert_allclose(ifft2c_np(case["kspace"]).real, case["image"].real, atol=1e-6)
    # the project's mask keeps rows of H; with pe_axis "H" those are our Y lines: masking Y index j of our k-space
    # equals masking row j of the project's (centred) k-space
    project_k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(data, axes=(-2, -1))), axes=(-2, -1))
    rows = np.zeros(H, bool)
    rows[[1, 4, 5]] = True
    ours = np.swapaxes(case["kspace"][..., 0] * rows[None, None, None, :], 2, 3) * np.sqrt(H * W)
    np.testing.assert_allclose(ours, project_k * rows[None, None, :, None], atol=1e-4)
    untransposed = cine_to_single_coil(data, pe_axis="W")
    assert untransposed["image"].shape == (N, T, H, W, 1)
    with pytest.raises(ValueError, match="pe_axis"):
        cine_to_single_coil(data, pe_axis="T")


def test_prepare_writes_h5_subjects_that_the_pipelines_load(tmp_path) -> None:
    from data_loader import pipelines

    data = _magnitudes(1)
    out = tmp_path / "prepared"
    summary = prepare_cine_npz(_npz(tmp_path, dataset=data), out, split=(4, 1, 1), seed=3)
    splits = summary["case_splits"]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    assert sorted(sum(splits.values(), [])) == [f"cine_{i:03d}" for i in range(N)]  # disjoint, complete
    assert json.loads((out / "manifest.json").read_text())["shape_nthw"] == [N, T, H, W]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared")]  # temporary folder renamed

    rows = formats.read_dataset_csv(out / "train.csv")
    assert [(r.nx, r.ny, r.nc, r.nt, r.slices) for r in rows] == [(W, H, 1, T, 1)] * 4
    subject = formats.read_h5_subject(out / "cine_002.h5")
    np.testing.assert_array_equal(subject["image"][0, ..., 0].real, data[2].swapaxes(1, 2))

    cfg = DataConfig(source="h5", root=str(out))
    train = pipelines.load_split(cfg, "train")
    assert train.names == splits["train"]
    for name, image, kspace in zip(train.names, train.image, train.kspace):
        index = int(name.split("_")[1])
        np.testing.assert_array_equal(np.abs(image[..., 0]), data[index].swapaxes(1, 2))
        np.testing.assert_allclose(kspace, fft2c_np(image, axes=(1, 2)), atol=1e-6)
    assert pipelines.num_examples(cfg, "val") == 1

    with pytest.raises(ValueError, match="not empty"):
        prepare_cine_npz(_npz(tmp_path, dataset=data), out)


def test_project_split_counts_for_200_slices() -> None:
    from data_loader.cine_npz import PROJECT_SPLIT
    from data_loader.synthetic import assign_splits

    splits = assign_splits([f"s{i}" for i in range(200)], PROJECT_SPLIT, seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [114, 29, 57]


def test_prepare_data_command_reads_cine_npz(tmp_path) -> None:
    from scripts.cli import main

    data = _magnitudes(2)
    out = tmp_path / "cli_out"
    assert main(["prepare-data", "--from", "cine-npz", "--in", _npz(tmp_path, dataset=data), "--out", str(out),
                 "--split", "4,1,1", "--seed", "1"]) == 0
    counts = [len(formats.read_dataset_csv(out / f"{s}.csv")) for s in ("train", "val", "test")]
    assert counts == [4, 1, 1]
    subject = formats.read_h5_subject(out / "cine_005.h5")
    np.testing.assert_array_equal(np.abs(subject["image"][0, ..., 0]), data[5].swapaxes(1, 2))
