"""``prepare-data`` on small synthetic trees in the real layouts (CMRxRecon 2023/2024/2025 .mat, OCMR ISMRMRD, the
original layout) -> training of both stages on the output (stage 2 with the stored prospective masks) -> ``evaluate
--protocol``; bad input. Baselines on prepared output (with prospective masks): tests/data_loader/test_prospective_masks.py."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from conftest import fixtures_dir
from data_loader import formats
from data_loader.coil_maps import coil_compress
from data_loader.masks import load_cmrxrecon_mask
from data_loader.phantom import make_subject
from data_loader.prepare import prepare, read_prospective_masks
from data_loader.real_formats import (
    line_mask,
    ocmr_geometry,
    read_cmrxrecon_masks,
    remove_readout_oversampling,
)
from scripts.cli import main
from utils.mri import fft2c_np

S, T, X, Y, C = 3, 9, 24, 16, 4  # crop X/3 x Y/2 = 8 x 8 >= SSIM's 7x7 window
_COMPOUND = np.dtype([("real", "<f4"), ("imag", "<f4")])


# ------------------------------------------------------------------------------------------------ writers
def write_mat73(path: Path, **variables: np.ndarray) -> Path:
    """MATLAB v7.3-like file: 512-byte userblock with the MATLAB header, axes reversed, complex as real/imag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            value = np.asarray(value).T  # MATLAB (column-major) axes -> what h5py sees
            if np.iscomplexobj(value):
                data = np.empty(value.shape, _COMPOUND)
                data["real"], data["imag"] = value.real, value.imag
                f.create_dataset(name, data=data).attrs["MATLAB_class"] = np.bytes_("single")
            else:
                f.create_dataset(name, data=value).attrs["MATLAB_class"] = np.bytes_("uint8")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, test".ljust(116) + b" " * 8 + b"\x00\x02IM")
    return path


def matlab_kspace(kspace: np.ndarray) -> np.ndarray:
    """(S,T,X,Y,C) -> MATLAB (kx, ky, kc, kz, t); single coil (C = 1) -> (kx, ky, kz, t)."""
    if kspace.shape[-1] == 1:
        return np.transpose(kspace[..., 0], (2, 3, 0, 1))
    return np.transpose(kspace, (2, 3, 4, 0, 1))


def phantom_kspace(seed: int, slices: int = S, nt: int = T, coils: int = C) -> np.ndarray:
    return make_subject(nt, X, Y, coils, seed=seed, snr=40.0, slices=slices)["kspace"].astype(np.complex64)


def line_mask_2d(acc: int, seed: int) -> np.ndarray:
    """(kx, ky) 2023-style mask: every acc-th line plus the 4 central lines (same for all kx)."""
    lines = np.zeros(Y, np.uint8)
    lines[seed % acc::acc] = 1
    lines[Y // 2 - 2:Y // 2 + 2] = 1
    return np.repeat(lines[None], X, axis=0)


def tree_2023(root: Path, patients=("P001", "P002", "P003", "P004")) -> dict[str, np.ndarray]:
    """MultiCoil/Cine/TrainingSet/{FullSample,AccFactor04}/P00x/cine_sax.mat (+ cine_lax.mat for P001)."""
    truth = {}
    base = root / "MultiCoil" / "Cine" / "TrainingSet"
    for i, patient in enumerate(patients):
        views = ("sax", "lax") if i == 0 else ("sax",)
        for j, view in enumerate(views):
            k = phantom_kspace(10 * i + j)
            write_mat73(base / "FullSample" / patient / f"cine_{view}.mat", kspace_full=matlab_kspace(k))
            mask = line_mask_2d(4, i)
            sub = k * mask[None, None, :, :, None]
            write_mat73(base / "AccFactor04" / patient / f"cine_{view}.mat", kspace_sub04=matlab_kspace(sub))
            write_mat73(base / "AccFactor04" / patient / f"cine_{view}_mask.mat", mask04=mask)
            truth[f"{patient}_cine_{view}"] = k
            truth[f"{patient}_cine_{view}/mask"] = mask
    return truth


def assert_untouched(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


def read_csv_names(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return [row["filename"] for row in csv.DictReader(fh)]


# ----------------------------------------------------------------------------------- end to end (2023)
TRAIN_YAML = """\
stage: {stage}
data:
  source: h5
  root: {root}
  train_csv: {train_csv}
  mask_kind: gaussian
  mask_seeds: 3
  min_r: 2
  max_r: 3
  start_r: 2
  train_r: [2, 3]
  val_r: 3
  contrastive_min_gap: 1
  mask_cache: {cache}
model:
  num_iter: 1
  filters: 4
  num_levels: 1
train:
  epochs: 1
  steps_per_epoch: 1
  run_dir: {run_dir}
"""


@pytest.fixture(scope="module")
def prepared_2023(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("cmrx2023")
    truth = tree_2023(base / "in")
    out = base / "prepared"
    code = main(["prepare-data", "--from", "cmrxrecon2023", "--in", str(base / "in"), "--out", str(out),
                 "--coils", "2", "--time-window", "8", "--split", "0.5,0.25,0.25", "--seed", "3"])
    assert code == 0
    return {"base": base, "out": out, "truth": truth}


def test_prepared_2023_files_are_normalised_compressed_and_split_by_patient(prepared_2023):
    out, truth = prepared_2023["out"], prepared_2023["truth"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cases"] == 5 and manifest["patients"] == 4
    splits = {name: read_csv_names(out / f"{name}.csv") for name in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == sorted(k for k in truth if "/" not in k)
    owners = {name: {n.split("_")[0] for n in names} for name, names in splits.items()}
    assert not (owners["train"] & owners["val"]) and not (owners["train"] & owners["test"]) \
        and not (owners["val"] & owners["test"])
    assert [len(owners[n]) for n in ("train", "val", "test")] == [2, 1, 1]
    # P001 has two views: both in the same split
    assert sum("P001_cine_lax" in v and "P001_cine_sax" in v for v in splits.values()) == 1
    halves = [set(read_csv_names(out / f)) for f in ("feature_train.csv", "recon_train.csv")]
    assert halves[0] | halves[1] == set(splits["train"]) and not halves[0] & halves[1]

    name = "P001_cine_sax"
    subject = formats.read_h5_subject(out / f"{name}.h5")
    assert subject["kspace"].shape == (S, 8, X, Y, 2) and subject["coil_maps"].shape == (S, 1, X, Y, 2)
    np.testing.assert_allclose(np.abs(subject["image"]).max(), 1.0, rtol=1e-5)
    # the stored k-space is the SVD compression of the first 8 frames, scaled by the recorded factor
    reference, _ = coil_compress(truth[name][:, :8], 2)
    scale = subject["attrs"]["scale"]
    stored, expected = subject["kspace"], reference * scale
    # virtual coils are defined up to a phase each: compare per coil after aligning that phase
    for c in range(2):
        phase = np.vdot(expected[..., c], stored[..., c])
        phase /= abs(phase)
        np.testing.assert_allclose(stored[..., c], expected[..., c] * phase, atol=1e-4 * np.abs(expected).max())
    assert np.sum(np.abs(subject["coil_maps"]) ** 2, axis=-1).max() == pytest.approx(1.0, abs=1e-4)
    masks = read_prospective_masks(out / f"{name}.h5")
    assert list(masks) == ["R04"] and masks["R04"].shape == (8, X, Y)
    np.testing.assert_array_equal(masks["R04"], np.broadcast_to(truth[f"{name}/mask"], (8, X, Y)))
    assert subject["initial_mask"] is None  # fully sampled: retrospective masks unless --initial-mask


def test_training_both_stages_and_protocol_evaluation_on_prepared_data(prepared_2023):
    base, out = prepared_2023["base"], prepared_2023["out"]

    def config(stage, train_csv, run_dir):
        path = base / f"{run_dir}.yaml"
        path.write_text(TRAIN_YAML.format(stage=stage, root=out, train_csv=train_csv, cache=base / "masks",
                                          run_dir=base / run_dir), encoding="utf-8")
        return str(path)

    assert main(["train-features", "--config", config("features", "feature_train.csv", "fe")]) == 0
    assert (base / "fe" / "model.weights.h5").is_file()
    # stage 2 acquires with the stored prospective mask R04 (the baselines do too: test_prospective_masks.py)
    assert main(["train-recon", "--config", config("recon", "recon_train.csv", "recon"),
                 "--pretrained-fe", str(base / "fe"), "--set", "data.masks=prospective",
                 "--set", "data.prospective_mask=R04"]) == 0
    assert (base / "recon" / "model.weights.h5").is_file()
    report = base / "eval"
    assert main(["evaluate", "--weights", str(base / "recon"), "--methods", "zero-filled,model",
                 "--accelerations", "3", "--protocol", "cmrxrecon2023", "--figure-cases", "0", "--gif-cases", "0",
                 "--out", str(report)]) == 0
    with open(report / "per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    test_cases = read_csv_names(out / "test.csv")
    # S = 3 slices: the protocol scores slices 0 and 1 (MATLAB round(3/2)-1 : round(3/2))
    expected = sorted(f"{c}_slice{s}" for c in test_cases for s in (0, 1))
    assert sorted({r["case"] for r in rows}) == expected
    for row in rows:
        assert np.isfinite(float(row["psnr"])) and 0 < float(row["ssim"]) <= 1 and float(row["nmse"]) >= 0
    assert json.loads((report / "settings.json").read_text())["protocol"] == "cmrxrecon2023"


# -------------------------------------------------------------------------- 2024 / 2025 trees and masks
def test_2024_and_2025_trees_kt_masks_kus_and_initial_mask(tmp_path):
    root = tmp_path / "in" / "MultiCoil" / "Cine"
    k1, k2 = phantom_kspace(1, slices=2), phantom_kspace(2, slices=1)
    write_mat73(root / "TrainingSet" / "FullSample" / "P001" / "cine_lvot.mat", kspace_full=matlab_kspace(k1))
    uniform = line_mask_2d(4, 1)
    write_mat73(root / "TrainingSet" / "Mask_Task1" / "P001" / "cine_lvot_mask_Uniform4.mat", mask=uniform)
    rng = np.random.default_rng(0)
    kt = np.repeat((rng.random((1, Y, T)) < 0.4).astype(np.uint8), X, axis=0)  # (kx, ky, t), MATLAB 5 file
    kt[:, Y // 2 - 2:Y // 2 + 2] = 1
    (root / "TrainingSet" / "Mask_Task2" / "P001").mkdir(parents=True)
    savemat(root / "TrainingSet" / "Mask_Task2" / "P001" / "cine_lvot_mask_ktGaussian8.mat", {"mask": kt})
    radial = np.zeros((X, Y, T), np.uint8)
    radial[X // 2 - 3:X // 2 + 3, Y // 2 - 3:Y // 2 + 3] = 1  # not a line mask
    radial[np.arange(X), (np.arange(X) * Y) // X] = 1
    write_mat73(root / "TrainingSet" / "Mask_Task2" / "P001" / "cine_lvot_mask_ktRadial8.mat", mask=radial)
    # 2025: Center/scanner folders; the undersampled file without a mask file gives its own sampling pattern
    center = root / "TrainingSet" / "FullSample" / "Center001" / "UIH_30T_umr780" / "P007"
    write_mat73(center / "cine_sax.mat", kspace_full=matlab_kspace(k2))
    kus_mask = line_mask_2d(4, 2)
    under = root / "TrainingSet" / "UnderSample_Task1" / "Center001" / "UIH_30T_umr780" / "P007"
    write_mat73(under / "cine_sax_kus_Uniform4.mat", kus=matlab_kspace(k2 * kus_mask[None, None, :, :, None]))
    # validation data without fully sampled k-space are skipped
    write_mat73(root / "ValidationSet" / "UnderSample_Task1" / "P101" / "cine_sax_kus_Uniform8.mat",
                kus=matlab_kspace(k2))

    out = tmp_path / "out"
    summary = prepare("cmrxrecon2024", tmp_path / "in", out, split=(1, 1, 0))
    assert summary["cases"] == 2 and len(summary["skipped"]) == 1 and "P101" in summary["skipped"][0]
    masks = read_prospective_masks(out / "P001_cine_lvot.h5")
    assert sorted(masks) == ["Uniform4", "ktGaussian8", "ktRadial8"]
    np.testing.assert_array_equal(masks["ktGaussian8"], np.transpose(kt, (2, 0, 1)))
    np.testing.assert_array_equal(masks["ktRadial8"], np.transpose(radial, (2, 0, 1)))
    with h5py.File(out / "P001_cine_lvot.h5") as f:
        assert f["prospective_masks/ktRadial8"].attrs["cartesian_lines"] == 0
        assert f["prospective_masks/ktGaussian8"].attrs["cartesian_lines"] == 1
    kus = read_prospective_masks(out / "Center001_P007_cine_sax.h5")
    np.testing.assert_array_equal(kus["Uniform4"], np.broadcast_to(kus_mask, (T, X, Y)))

    out2 = tmp_path / "out2"
    with pytest.raises(ValueError, match="Center001_P007_cine_sax has masks"):
        prepare("cmrxrecon2024", tmp_path / "in", out2, initial_mask="ktGaussian8")
    assert_untouched(out2)
    only_p001 = tmp_path / "in_p001"
    for part in ("FullSample", "Mask_Task2"):
        shutil.copytree(root / "TrainingSet" / part / "P001", only_p001 / part / "P001")
    prepare("cmrxrecon2024", only_p001, out2, initial_mask="ktGaussian8", split=(1, 0, 0))
    subject = formats.read_h5_subject(out2 / "P001_cine_lvot.h5")
    np.testing.assert_array_equal(subject["initial_mask"], kt[0])  # (Y, T) = the mask's lines per frame


def test_single_coil_files_get_unit_maps(tmp_path):
    k = phantom_kspace(5, slices=1, coils=1)
    write_mat73(tmp_path / "in" / "SingleCoil" / "Cine" / "TrainingSet" / "FullSample" / "P001" / "cine_sax.mat",
                kspace_single_full=matlab_kspace(k))
    prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out", split=(1, 0, 0))
    subject = formats.read_h5_subject(tmp_path / "out" / "P001_cine_sax_single.h5")
    np.testing.assert_allclose(subject["coil_maps"], 1.0)
    expected = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k[..., 0], axes=(2, 3)), axes=(2, 3), norm="ortho"),
                               axes=(2, 3))
    np.testing.assert_allclose(subject["image"][..., 0], expected / np.abs(expected).max(), atol=1e-5)


def test_real_cmrxrecon_masks_match_the_line_reader():
    folder = fixtures_dir() / "cmrxrecon_masks"
    for path in sorted(folder.glob("*.mat")):
        masks = read_cmrxrecon_masks(path)
        (mask,) = masks.values()
        assert mask.shape[0] == 12 and mask.shape[2] == 204
        np.testing.assert_array_equal(line_mask(mask), load_cmrxrecon_mask(path))


def test_original_layout_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        sub = make_subject(T, X, Y, C, seed=i, snr=None)
        rows.append(formats.write_original_subject(tmp_path / "in", f"subj{i}", sub["image"], sub["coil_maps"]))
    formats.write_dataset_csv(tmp_path / "in" / "train.csv", rows)
    prepare("original", tmp_path / "in", tmp_path / "out", split=(1, 0, 1), seed=int(rng.integers(10)))
    for i in range(2):
        image = np.load(tmp_path / "in" / f"norm_img_subj{i}.npy")
        subject = formats.read_h5_subject(tmp_path / "out" / f"subj{i}.h5")
        np.testing.assert_allclose(subject["image"], image, atol=1e-5)
        np.testing.assert_allclose(subject["kspace"], fft2c_np(image * subject["coil_maps"]), atol=1e-5)
        assert subject["initial_mask"] is not None  # the mask_GRAPPA file is kept


# ---------------------------------------------------------------------------------------------- bad input
def _one_case(root: Path, patient: str = "P001", coils: int = C, **override) -> Path:
    k = phantom_kspace(3, slices=1, coils=coils)
    variables = override or {"kspace_full": matlab_kspace(k)}
    return write_mat73(root / "FullSample" / patient / "cine_sax.mat", **variables)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match=r"no cases found for --from cmrxrecon2023.*kspace_full"):
        prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out")
    assert_untouched(tmp_path / "out")
    assert main(["prepare-data", "--from", "ocmr", "--in", str(tmp_path / "in"), "--out",
                 str(tmp_path / "out")]) == 2
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        prepare("cmrxrecon2023", tmp_path / "missing", tmp_path / "out")


def test_truncated_mat_names_the_file(tmp_path):
    good = _one_case(tmp_path / "in", "P001")
    bad = _one_case(tmp_path / "in", "P002")
    bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(ValueError, match=f"{bad}.*(truncated|readable)"):
        prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out")
    assert_untouched(tmp_path / "out")
    assert good.is_file()


def test_missing_key_names_the_file_and_the_expected_variables(tmp_path):
    bad = _one_case(tmp_path / "in", kspace=np.zeros((X, Y, C, 1, T), np.complex64))
    with pytest.raises(ValueError, match=f"{bad}: no k-space variable: expected 'kspace_full'"):
        prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out")
    assert_untouched(tmp_path / "out")


def test_different_coil_counts_need_coils(tmp_path):
    _one_case(tmp_path / "in", "P001", coils=4)
    second = _one_case(tmp_path / "in", "P002", coils=3)
    with pytest.raises(ValueError, match=f"{second}: 3 coil.*has 4.*--coils"):
        prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out", split=(1, 0, 0))
    assert_untouched(tmp_path / "out")
    prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out", coils=3, split=(1, 0, 0))
    assert formats.read_h5_subject(tmp_path / "out" / "P001_cine_sax.h5")["kspace"].shape[-1] == 3
    with pytest.raises(ValueError, match="--coils 4"):
        prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out5", coils=4)
    assert_untouched(tmp_path / "out5")


def test_nan_kspace_names_the_file(tmp_path):
    k = phantom_kspace(3, slices=1)
    k[0, 1, 2, 3, 0] = np.nan
    bad = _one_case(tmp_path / "in", kspace_full=matlab_kspace(k))
    with pytest.raises(ValueError, match=f"{bad}: kspace_full: 1 NaN/Inf"):
        prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out")
    assert_untouched(tmp_path / "out")


def test_existing_output_folder_is_refused(tmp_path):
    _one_case(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        prepare("cmrxrecon2023", tmp_path / "in", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------------------------------------------- OCMR
OCMR_XML = """<?xml version="1.0"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
 <encoding>
  <encodedSpace><matrixSize><x>{ex}</x><y>{ny}</y><z>1</z></matrixSize>
   <fieldOfView_mm><x>600</x><y>300</y><z>8</z></fieldOfView_mm></encodedSpace>
  <reconSpace><matrixSize><x>{rx}</x><y>{ny}</y><z>1</z></matrixSize>
   <fieldOfView_mm><x>300</x><y>300</y><z>8</z></fieldOfView_mm></reconSpace>
  <encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{ymax}</maximum><center>{yc}</center>
   </kspace_encoding_step_1></encodingLimits>
  <trajectory>cartesian</trajectory>
 </encoding>
</ismrmrdHeader>
"""


def write_ocmr(path: Path, kspace: np.ndarray, lines: np.ndarray, asym: int, noise: float, seed: int) -> np.ndarray:
    """ISMRMRD file of (T, 2X, Y, C) oversampled k-space: two averages with noise, the first ``asym`` readout
    samples not acquired, a noise scan first; only ``lines`` (Y, T) acquired. Returns the expected average."""
    ismrmrd = pytest.importorskip("ismrmrd")
    nt, ex, ny, nc = kspace.shape
    rng = np.random.default_rng(seed)
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dset.write_xml_header(OCMR_XML.format(ex=ex, rx=ex // 2, ny=ny, ymax=ny - 1, yc=ny // 2).encode())
    noise_acq = ismrmrd.Acquisition.from_array(rng.standard_normal((nc, ex)).astype(np.complex64))
    noise_acq.flags = 1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)
    dset.append_acquisition(noise_acq)
    total = np.zeros_like(kspace, dtype=np.complex128)
    for avg in range(2):
        for t in range(nt):
            for ky in np.flatnonzero(lines[:, t]):
                line = kspace[t, asym:, ky, :].T + noise * (rng.standard_normal((nc, ex - asym))
                                                            + 1j * rng.standard_normal((nc, ex - asym)))
                total[t, asym:, ky, :] += line.T
                acq = ismrmrd.Acquisition.from_array(line.astype(np.complex64), center_sample=ex // 2 - asym)
                acq.idx.kspace_encode_step_1, acq.idx.phase, acq.idx.average = int(ky), t, avg
                dset.append_acquisition(acq)
    dset.close()
    return total / 2


def _oversampled(seed: int, nt: int = T, coils: int = C) -> np.ndarray:
    sub = make_subject(nt, X, Y, coils, seed=seed, snr=None)
    coil_images = sub["image"][0] * sub["coil_maps"][0]  # (T, X, Y, C)
    padded = np.zeros((nt, 2 * X, Y, coils), np.complex64)
    padded[:, X // 2:X // 2 + X] = coil_images  # the object fills the central half of the 2x readout FOV
    return fft2c_np(padded, axes=(1, 2))


def test_ocmr_reader_removes_oversampling_averages_and_zero_fills_the_echo(tmp_path):
    from data_loader.real_formats import read_ocmr

    kspace = _oversampled(0)
    expected = write_ocmr(tmp_path / "fs_0001.h5", kspace, np.ones((Y, T), np.uint8), asym=5, noise=0.01, seed=1)
    data = read_ocmr(tmp_path / "fs_0001.h5")
    assert data["fully_sampled"] and data["averages"] == 2
    reference = remove_readout_oversampling(expected, X, axis=1)[None]
    assert data["kspace"].shape == (1, T, X, Y, C)
    np.testing.assert_allclose(data["kspace"], reference, atol=1e-5 * np.abs(reference).max())
    geo = ocmr_geometry(OCMR_XML.format(ex=2 * X, rx=X, ny=Y, ymax=Y - 1, yc=Y // 2), tmp_path)
    assert geo == {"enc_x": 2 * X, "enc_y": Y, "recon_x": X, "center_y": Y // 2}


def test_ocmr_prepare_fully_and_prospectively_undersampled(tmp_path):
    (tmp_path / "in").mkdir()
    write_ocmr(tmp_path / "in" / "fs_0001.h5", _oversampled(0), np.ones((Y, T), np.uint8), 0, 0.01, 1)
    lines = np.zeros((Y, T), np.uint8)
    for t in range(T):
        lines[t % 3::3, t] = 1  # time-interleaved: the centre is not fully sampled in any frame
    write_ocmr(tmp_path / "in" / "us_0002.h5", _oversampled(1), lines, 0, 0.01, 2)
    prepare("ocmr", tmp_path / "in", tmp_path / "out", coils=2, split=(1, 1, 0))
    full = formats.read_h5_subject(tmp_path / "out" / "fs_0001.h5")
    under = formats.read_h5_subject(tmp_path / "out" / "us_0002.h5")
    assert full["attrs"]["fully_sampled"] == 1 and full["initial_mask"] is None
    assert under["attrs"]["fully_sampled"] == 0 and "time-averaged" in under["attrs"]["coil_maps_kind"]
    np.testing.assert_array_equal(under["initial_mask"], lines)
    assert np.abs(full["image"]).max() == pytest.approx(1.0, rel=1e-5)


def test_ocmr_without_ismrmrd_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from data_loader import real_formats

    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "ismrmrd":
            raise ImportError("no ismrmrd")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ValueError, match=r"needs the optional package 'ismrmrd'.*\[ocmr\]"):
        real_formats.read_ocmr(tmp_path / "x.h5")
