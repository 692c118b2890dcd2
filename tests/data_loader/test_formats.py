"""Round trips and error handling of the three file layouts, and the ``make-data`` command end to end."""
from __future__ import annotations

import csv
import filecmp
import shutil

import h5py
import numpy as np
import pytest

from data_loader import formats
from data_loader.coil_maps import map_correlation
from data_loader.masks import equispaced_mask, write_mask_txt
from data_loader.phantom import make_subject
from scripts.cli import main
from data_loader.synthetic import assign_splits, split_counts

S, T, X, Y, C = 2, 4, 24, 20, 4


@pytest.fixture(scope="module")
def subject():
    return make_subject(T, X, Y, C, seed=3, snr=30.0, slices=S)


def _write_original(root, subject, name="subj"):
    row = formats.write_original_subject(root, name, 0.5 * subject["image"], subject["coil_maps"])
    formats.write_dataset_csv(root / "train.csv", [row])
    return row


def _rewrite_csv(path, **changes):
    with open(path, newline="") as fh:
        table = list(csv.reader(fh))
    header = table[0]
    for key, value in changes.items():
        table[1][header.index(key)] = str(value)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(table)


# ------------------------------------------------------------------------------------- original layout
def test_original_roundtrip(tmp_path, subject):
    row = _write_original(tmp_path, subject)
    assert (row.filename, row.nx, row.ny, row.nc, row.nt, row.slices) == ("subj", X, Y, C, T, S)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cc_smap_15_subj.npy", "mask_GRAPPA_subj.txt", "norm_img_subj.npy", "train.csv"]
    assert (tmp_path / "train.csv").read_text().splitlines()[0] == "filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM"
    ds = formats.OriginalDataset(tmp_path, "train.csv")
    assert len(ds) == S
    stored = np.load(tmp_path / "norm_img_subj.npy")
    assert stored.dtype == np.complex64 and stored.shape == (S, T, X, Y, 1)
    assert np.abs(stored).max() == pytest.approx(1.0, abs=1e-6)  # normalised over the subject
    peak = np.abs(subject["image"]).max()
    for i in range(S):
        item = ds[i]
        assert item["name"] == "subj" and item["slice"] == i
        assert item["image"].shape == (T, X, Y, 1) and item["image"].dtype == np.complex64
        assert item["coil_maps"].shape == (1, X, Y, C)
        np.testing.assert_allclose(item["image"], subject["image"][i] / peak, atol=1e-6)
        np.testing.assert_array_equal(item["coil_maps"], subject["coil_maps"][i])
        np.testing.assert_array_equal(item["initial_mask"], equispaced_mask(Y, T, acc=2, num_center=24))
    assert ds[0]["initial_mask"].shape == (Y, T)


def test_original_accepts_authors_txt_npy_names(tmp_path, subject):
    _write_original(tmp_path, subject)
    for stem in ("norm_img_subj", "cc_smap_15_subj"):
        (tmp_path / f"{stem}.npy").rename(tmp_path / f"{stem}.txt.npy")
    # the original CSVs may carry an extension on the name; it is cut at the first dot
    _rewrite_csv(tmp_path / "train.csv", filename="subj.h5")
    ds = formats.OriginalDataset(tmp_path, tmp_path / "train.csv")
    assert ds[1]["image"].shape == (T, X, Y, 1) and ds[1]["name"] == "subj"


def test_original_missing_file(tmp_path, subject):
    _write_original(tmp_path, subject)
    (tmp_path / "cc_smap_15_subj.npy").unlink()
    with pytest.raises(FileNotFoundError, match="cc_smap_15_subj.npy"):
        formats.OriginalDataset(tmp_path, "train.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        formats.OriginalDataset(tmp_path, "nope.csv")


@pytest.mark.parametrize("field,value", [("nPE", Y + 2), ("TIME_DIM", T + 1), ("COIL_DIM", 15), ("SLICE_DIM", 3)])
def test_original_csv_row_disagrees_with_arrays(tmp_path, subject, field, value):
    _write_original(tmp_path, subject)
    _rewrite_csv(tmp_path / "train.csv", **{field: value})
    with pytest.raises(ValueError) as err:
        formats.OriginalDataset(tmp_path, "train.csv")
    message = str(err.value)
    assert "train.csv" in message and "line 2" in message and field in message


def test_original_mask_wrong_size(tmp_path, subject):
    _write_original(tmp_path, subject)
    write_mask_txt(tmp_path / "mask_GRAPPA_subj.txt", np.ones((Y - 1, T), dtype=int))
    with pytest.raises(ValueError, match="mask_GRAPPA_subj.txt"):
        formats.OriginalDataset(tmp_path, "train.csv")


def test_original_nan_and_truncated_arrays(tmp_path, subject):
    _write_original(tmp_path, subject)
    path = tmp_path / "norm_img_subj.npy"
    bad = np.load(path)
    bad[1, 2, 3, 4, 0] = np.nan
    np.save(path, bad)
    ds = formats.OriginalDataset(tmp_path, "train.csv")
    ds[0]  # slice 0 is clean
    with pytest.raises(ValueError, match=r"norm_img_subj\.npy.*NaN"):
        ds[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="norm_img_subj.npy"):
        formats.OriginalDataset(tmp_path, "train.csv")


def test_original_writer_rejects_bad_input(tmp_path, subject):
    with pytest.raises(ValueError, match="coil_maps"):
        formats.write_original_subject(tmp_path, "a", subject["image"], subject["coil_maps"][:, :, :-1])
    with pytest.raises(ValueError, match="initial_mask"):
        formats.write_original_subject(tmp_path, "a", subject["image"], subject["coil_maps"],
                                       initial_mask=np.ones((Y, T + 1)))
    bad = subject["image"].copy()
    bad[0, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        formats.write_original_subject(tmp_path, "a", bad, subject["coil_maps"])
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_csv_reader_errors(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("filename,nFE,nPE,COIL_DIM,TIME_DIM\na,1,2,3,4\n")
    with pytest.raises(ValueError, match="SLICE_DIM"):
        formats.read_dataset_csv(path)
    path.write_text("filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM\na,176,132,15,25,x\n")
    with pytest.raises(ValueError, match=r"x\.csv: line 2 \(a\): SLICE_DIM"):
        formats.read_dataset_csv(path)
    path.write_text("filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM\na,1,1,1,1,1\na,1,1,1,1,1\n")
    with pytest.raises(ValueError, match="already listed"):
        formats.read_dataset_csv(path)
    # pandas-style index column and another column order are fine
    path.write_text(",SLICE_DIM,TIME_DIM,COIL_DIM,nPE,nFE,filename\n0,3,25,15,132,176,b\n")
    (row,) = formats.read_dataset_csv(path)
    assert (row.name, row.nx, row.ny, row.nc, row.nt, row.slices) == ("b", 176, 132, 15, 25, 3)


# -------------------------------------------------------------------------------------------- HDF5
def _write_h5(path, subject, **kwargs):
    mask = equispaced_mask(Y, T)
    formats.write_h5_subject(path, subject["kspace"], subject["image"], subject["coil_maps"], initial_mask=mask,
                             name="subj", seed=subject["seed"], snr=30.0, **kwargs)
    return mask


def test_h5_roundtrip(tmp_path, subject):
    path = tmp_path / "subj.h5"
    mask = _write_h5(path, subject, attrs={"noise_std": subject["noise_std"], "ejection_fraction": [0.6, 0.55]})
    data = formats.read_h5_subject(path)
    np.testing.assert_array_equal(data["kspace"], subject["kspace"])
    np.testing.assert_array_equal(data["image"], subject["image"])
    np.testing.assert_array_equal(data["coil_maps"], subject["coil_maps"])
    np.testing.assert_array_equal(data["initial_mask"], mask)
    attrs = data["attrs"]
    assert attrs["format"] == "ssfl-recon-h5" and attrs["version"] == 1
    assert attrs["name"] == "subj" and attrs["seed"] == 3 and attrs["snr"] == 30.0
    assert attrs["noise_std"] == pytest.approx(subject["noise_std"])
    np.testing.assert_allclose(attrs["ejection_fraction"], [0.6, 0.55])
    with h5py.File(path, "r") as f:
        assert f["kspace"].dtype == np.complex64 and f["initial_mask"].dtype == np.uint8
    # without a mask
    formats.write_h5_subject(tmp_path / "b.h5", subject["kspace"], subject["image"], subject["coil_maps"])
    assert formats.read_h5_subject(tmp_path / "b.h5")["initial_mask"] is None


def test_h5_missing_and_truncated(tmp_path, subject):
    with pytest.raises(FileNotFoundError, match="absent.h5"):
        formats.read_h5_subject(tmp_path / "absent.h5")
    path = tmp_path / "subj.h5"
    _write_h5(path, subject)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="subj.h5"):
        formats.read_h5_subject(path)


def _raw_h5(path, subject, **overrides):
    arrays = {"kspace": subject["kspace"], "image": subject["image"], "coil_maps": subject["coil_maps"],
              "initial_mask": equispaced_mask(Y, T).astype(np.uint8)}
    arrays.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.attrs["format"] = "ssfl-recon-h5"
        f.attrs["version"] = 1


@pytest.mark.parametrize("case,pattern", [
    ("nan_kspace", "kspace: 1 NaN/Inf"),
    ("mask_size", r"initial_mask: expected shape \(Y,T\)"),
    ("maps_coils", "coil_maps: expected shape"),
    ("image_frames", "image: expected shape"),
])
def test_h5_bad_content(tmp_path, subject, case, pattern):
    path = tmp_path / f"{case}.h5"
    if case == "nan_kspace":
        k = subject["kspace"].copy()
        k[0, 1, 2, 3, 0] = np.nan
        _raw_h5(path, subject, kspace=k)
    elif case == "mask_size":
        _raw_h5(path, subject, initial_mask=np.ones((Y + 1, T), np.uint8))
    elif case == "maps_coils":
        _raw_h5(path, subject, coil_maps=subject["coil_maps"][..., :-1])
    else:
        _raw_h5(path, subject, image=subject["image"][:, :-1])
    with pytest.raises(ValueError, match=pattern) as err:
        formats.read_h5_subject(path)
    assert path.name in str(err.value)


def test_h5_writer_rejects_bad_input(tmp_path, subject):
    k = subject["kspace"].copy()
    k[0, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="kspace: 1 NaN/Inf"):
        formats.write_h5_subject(tmp_path / "a.h5", k, subject["image"], subject["coil_maps"])
    with pytest.raises(ValueError, match="initial_mask"):
        formats.write_h5_subject(tmp_path / "a.h5", subject["kspace"], subject["image"], subject["coil_maps"],
                                 initial_mask=np.ones((T, Y)))
    assert not any(tmp_path.iterdir())


def test_h5_wrong_format_attribute(tmp_path, subject):
    path = tmp_path / "other.h5"
    _raw_h5(path, subject)
    with h5py.File(path, "a") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="format"):
        formats.read_h5_subject(path)


def test_h5_dataset_items(tmp_path, subject):
    _write_h5(tmp_path / "subj.h5", subject)
    formats.write_dataset_csv(tmp_path / "val.csv", [formats.SubjectRow("subj", X, Y, C, T, S)])
    ds = formats.H5Dataset(tmp_path, "val.csv")
    assert len(ds) == S
    item = ds[1]
    np.testing.assert_array_equal(item["kspace"], subject["kspace"][1])
    assert item["coil_maps"].shape == (1, X, Y, C) and item["initial_mask"].shape == (Y, T)
    formats.write_dataset_csv(tmp_path / "bad.csv", [formats.SubjectRow("subj", X, Y, C, T + 1, S)])
    with pytest.raises(ValueError, match="bad.csv: line 2"):
        formats.H5Dataset(tmp_path, "bad.csv")
    # items are validated slice by slice
    with h5py.File(tmp_path / "subj.h5", "a") as f:
        f["kspace"][1, 0, 0, 0, 0] = np.nan
    ds[0]
    with pytest.raises(ValueError, match=r"subj\.h5: kspace \(slice 1\): 1 NaN/Inf"):
        ds[1]


# ------------------------------------------------------------------------------------------- CMRxRecon
def test_cmrxrecon_roundtrip_and_structure(tmp_path, subject):
    path = tmp_path / "cine_sax.mat"
    formats.write_cmrxrecon_like(path, subject["kspace"])
    header = path.read_bytes()[:128]
    assert header.startswith(b"MATLAB 7.3 MAT-file") and header[-2:] == b"IM"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        ds = f["kspace_full"]
        assert ds.shape == (T, S, C, Y, X)  # MATLAB (kx, ky, kc, kz, t) reversed
        assert ds.dtype.names == ("real", "imag")
    kspace = formats.read_cmrxrecon_cine(path)
    assert kspace.shape == (S, T, X, Y, C) and kspace.dtype == np.complex64
    np.testing.assert_array_equal(kspace, subject["kspace"])


def test_cmrxrecon_subject_maps_and_images(tmp_path):
    s = make_subject(4, 48, 40, 8, seed=7, snr=30.0)
    path = tmp_path / "cine.mat"
    formats.write_cmrxrecon_like(path, s["kspace"] * 1e-3)  # raw scanner scaling is arbitrary
    out = formats.load_cmrxrecon_subject(path, calib_size=24)
    assert out["coil_maps"].shape == (1, 1, 48, 40, 8) and out["image"].shape == (1, 4, 48, 40, 1)
    body = s["body_mask"]
    assert map_correlation(out["coil_maps"][0, 0], s["coil_maps"][0, 0])[body].mean() > 0.99
    assert np.abs(out["image"]).max() == pytest.approx(1.0, abs=1e-5)
    mag, ref = np.abs(out["image"][0, ..., 0])[:, body], np.abs(s["image"][0, ..., 0])[:, body]
    mag = mag * (ref.max() / mag.max())
    assert np.linalg.norm(mag - ref) / np.linalg.norm(ref) < 0.06  # noise at 30 dB dominates the error
    np.testing.assert_allclose(out["kspace"], s["kspace"] * 1e-3 * out["scale"], rtol=1e-4, atol=1e-6)


def test_cmrxrecon_errors(tmp_path, subject):
    with pytest.raises(FileNotFoundError, match="none.mat"):
        formats.read_cmrxrecon_cine(tmp_path / "none.mat")
    path = tmp_path / "cine.mat"
    formats.write_cmrxrecon_like(path, subject["kspace"])
    with pytest.raises(ValueError, match="'kspace_sub04' not found"):
        formats.read_cmrxrecon_cine(path, key="kspace_sub04")
    bad = subject["kspace"].copy()
    bad[1, 0, 0, 0, 0] = np.nan
    formats.write_cmrxrecon_like(tmp_path / "nan.mat", bad)
    with pytest.raises(ValueError, match=r"nan\.mat: kspace_full: 1 NaN/Inf"):
        formats.read_cmrxrecon_cine(tmp_path / "nan.mat")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cine.mat"):
        formats.read_cmrxrecon_cine(path)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="junk.mat"):
        formats.read_cmrxrecon_cine(tmp_path / "junk.mat")


# -------------------------------------------------------------------------------------------- make-data
def test_split_counts_and_assignment():
    assert split_counts(10, (0.6, 0.2, 0.2)) == [6, 2, 2]
    assert split_counts(3, (0.6, 0.2, 0.2)) == [1, 1, 1]
    assert split_counts(4, (1, 0, 0)) == [4, 0, 0]
    assert sum(split_counts(7, (0.5, 0.3, 0.2))) == 7
    names = [f"s{i}" for i in range(9)]
    splits = assign_splits(names, (0.6, 0.2, 0.2), seed=1)
    assert sorted(sum(splits.values(), [])) == names
    assert splits == assign_splits(names, (0.6, 0.2, 0.2), seed=1)
    assert splits != assign_splits(names, (0.6, 0.2, 0.2), seed=2)


def test_make_data_end_to_end(tmp_path):
    out, png = tmp_path / "data", tmp_path / "phantom.png"
    args = ["make-data", "--out", str(out), "--subjects", "4", "--size", "4,32,24,4", "--seed", "5",
            "--snr", "25"]
    assert main(args + ["--png", str(png)]) == 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    splits = {}
    for split in ("train", "val", "test", "feature_train", "recon_train"):
        splits[split] = [r.name for r in formats.read_dataset_csv(out / f"{split}.csv")]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == [f"synth_{i:03d}" for i in range(4)]
    assert len(splits["train"]) == 2 and len(splits["val"]) == 1 and len(splits["test"]) == 1
    assert sorted(splits["feature_train"] + splits["recon_train"]) == splits["train"]
    assert not set(splits["feature_train"]) & set(splits["recon_train"])
    ds = formats.OriginalDataset(out, "train.csv")
    item = ds[0]
    assert item["image"].shape == (4, 32, 24, 1) and item["coil_maps"].shape == (1, 32, 24, 4)
    assert np.abs(np.load(out / f"norm_img_{item['name']}.npy")).max() == pytest.approx(1.0, abs=1e-6)
    h5 = formats.read_h5_subject(out / f"{splits['test'][0]}.h5")
    assert h5["kspace"].shape == (1, 4, 32, 24, 4) and h5["attrs"]["snr"] == 25.0
    assert formats.H5Dataset(out, "val.csv")[0]["kspace"].shape == (4, 32, 24, 4)
    # deterministic per seed: a second run gives byte-identical files
    again = tmp_path / "again"
    assert main(args + ["--out", str(again)]) == 0
    for path in out.iterdir():
        assert filecmp.cmp(path, again / path.name, shallow=False), path.name
    # other layouts / bad arguments
    h5_only = tmp_path / "h5only"
    assert main(["make-data", "--out", str(h5_only), "--subjects", "1", "--size", "3,16,16,2", "--layout", "h5",
                 "--split", "1,0,0"]) == 0
    assert sorted(p.name for p in h5_only.glob("*.npy")) == []
    assert (h5_only / "synth_000.h5").is_file()
    assert main(["make-data", "--out", str(tmp_path / "x"), "--subjects", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["make-data", "--out", str(tmp_path / "x"), "--size", "4,32,24"])
    shutil.rmtree(again)
