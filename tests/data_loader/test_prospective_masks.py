"""``data.masks: prospective``: the prospective masks ``prepare-data`` stores (``prospective_masks/<name>``) as the
acquisition of stage 1, stage 2 and the baselines (data_loader.prospective, data_loader.pipelines).

One tiny prepared folder per module: ``prepare("cmrxrecon2024", ...)`` of a CMRxRecon-2024-like tree written with
the helpers of test_prepare_data (T=4, X=24, Y=16, 2 coils, one slice). Patients P001-P003 carry a static line mask
``Uniform8`` (kx, ky), a time-varying line mask ``ktGaussian4`` (kx, ky, t; different per patient) and a k-t pattern
``ktRadial8`` that varies along the readout; P004 (its own CSV) has ``Uniform8`` only. train = P001, P002;
val = test = P003.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from data_loader import formats
from data_loader import pipelines as P
from data_loader.phantom import make_subject
from data_loader.prepare import prepare, read_prospective_masks
from scripts.cli import main
from test_prepare_data import X, Y, line_mask_2d, matlab_kspace, phantom_kspace, write_mat73
from utils.config import ConfigError, from_dict
from utils.schema import DataConfig
from utils.training import read_summary

T, C = 4, 2
NAMES = ("P001_cine_sax", "P002_cine_sax", "P003_cine_sax")


def kt_lines(offset: int, acc: int) -> np.ndarray:
    """(T, X, Y) uint8: every ``acc``-th ky line shifted by the frame (and ``offset``) plus 2 central lines."""
    mask = np.zeros((T, X, Y), np.uint8)
    for t in range(T):
        mask[t, :, (offset + t) % acc::acc] = 1
    mask[:, :, Y // 2 - 1:Y // 2 + 1] = 1
    return mask


def radial() -> np.ndarray:
    mask = np.zeros((T, X, Y), np.uint8)
    mask[:, np.arange(X), (np.arange(X) * Y) // X] = 1
    mask[:, X // 2 - 2:X // 2 + 2, Y // 2 - 2:Y // 2 + 2] = 1
    return mask


def matlab_mask(mask: np.ndarray) -> np.ndarray:
    """(T, X, Y) -> MATLAB (kx, ky, t)."""
    return np.transpose(mask, (1, 2, 0))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("prospective")
    tree = base / "in" / "MultiCoil" / "Cine" / "TrainingSet"
    for i, patient in enumerate(("P001", "P002", "P003", "P004")):
        write_mat73(tree / "FullSample" / patient / "cine_sax.mat",
                    kspace_full=matlab_kspace(phantom_kspace(i, slices=1, nt=T, coils=C)))
        write_mat73(tree / "Mask_Task1" / patient / "cine_sax_mask_Uniform8.mat", mask=line_mask_2d(8, i))
        if patient != "P004":
            write_mat73(tree / "Mask_Task2" / patient / "cine_sax_mask_ktGaussian4.mat",
                        mask=matlab_mask(kt_lines(i, 4)))
            write_mat73(tree / "Mask_Task2" / patient / "cine_sax_mask_ktRadial8.mat", mask=matlab_mask(radial()))
    root = base / "data"
    prepare("cmrxrecon2024", base / "in", root, split=(1, 0, 0), stage_splits=False)
    rows = {f"P00{i}": formats.SubjectRow(f"P00{i}_cine_sax", X, Y, C, T, 1) for i in range(1, 5)}
    for csv_name, patients in (("train", ("P001", "P002")), ("val", ("P003",)), ("test", ("P003",)),
                               ("odd", ("P004",))):
        formats.write_dataset_csv(root / f"{csv_name}.csv", [rows[p] for p in patients])
    stored = {name: read_prospective_masks(root / f"{name}.h5") for name in NAMES}
    assert sorted(stored[NAMES[0]]) == ["Uniform8", "ktGaussian4", "ktRadial8"]
    np.testing.assert_array_equal(stored[NAMES[1]]["ktGaussian4"], kt_lines(1, 4))
    cfg = DataConfig(source="h5", root=str(root), masks="prospective", prospective_mask="ktGaussian4",
                     mask_kind="gaussian", mask_seeds=3, min_r=2.0, max_r=3.0, start_r=2.0, train_r=[2.0, 3.0],
                     val_r=3.0, contrastive_min_gap=1.0, mask_cache=str(base / "masks"), num_parallel_calls=1)
    cfg.validate()
    images = {name: formats.read_h5_subject(root / f"{name}.h5")["image"][0] for name in NAMES}
    return {"base": base, "root": root, "cfg": cfg, "masks": stored, "images": images}


def examples(ds: tf.data.Dataset, n: int) -> list:
    """The first ``n`` elements as numpy; fails if the stream has fewer (so no loop over them can pass empty)."""
    out = [tf.nest.map_structure(lambda t: t.numpy(), el) for el in ds.take(n)]
    assert len(out) == n, f"the stream ended after {len(out)} of {n} elements"
    return out


def subject_of(reference: np.ndarray, images: dict) -> str:
    """The subject whose stored image is ``reference`` (the pipelines copy it unchanged)."""
    hits = [name for name, image in images.items() if np.array_equal(reference, image)]
    assert len(hits) == 1, hits
    return hits[0]


def lines_of(mask: np.ndarray) -> np.ndarray:
    """(T, X, Y) stored mask -> (T, 1, Y, 1) float32, the pipelines' mask layout."""
    return mask[:, :1, :, None].astype(np.float32)


def test_baseline_acquisition_is_the_stored_mask(prepared):
    cfg, stored = prepared["cfg"], prepared["masks"]
    seen = set()
    for ex in examples(P.acquired_dataset(cfg, "train", repeat=False), 2):
        name = subject_of(ex["reference"][0], prepared["images"])
        seen.add(name)
        np.testing.assert_array_equal(ex["mask"][0], lines_of(stored[name]["ktGaussian4"]))
        assert np.all(ex["y"][0][np.broadcast_to(ex["mask"][0] == 0, ex["y"][0].shape)] == 0)  # only acquired k
    assert seen == set(NAMES[:2])
    # empty data.prospective_mask: the first stored mask in name order ("Uniform8" < "ktGaussian4" < "ktRadial8")
    first = dataclasses.replace(cfg, prospective_mask="")
    ex = examples(P.acquired_dataset(first, "val", repeat=False), 1)[0]
    np.testing.assert_array_equal(ex["mask"][0], lines_of(stored[NAMES[2]]["Uniform8"]))
    # masks drawn at given accelerations (model.train_accelerations) stay inside the acquisition
    for ex in examples(P.acquired_dataset(cfg, "train", accelerations=[2.0], mask_kind="vd-random",
                                             num_center=2), 4):
        acquired = lines_of(stored[subject_of(ex["reference"][0], prepared["images"])]["ktGaussian4"])
        assert np.all(ex["mask"][0] <= acquired) and ex["mask"][0].sum() < acquired.sum()


def test_recon_and_feature_views_are_subsets_of_the_stored_mask(prepared):
    cfg, stored = prepared["cfg"], prepared["masks"]
    for ex in examples(P.recon_dataset(cfg, "train"), 6):
        acquired = lines_of(stored[subject_of(ex["reference"][0], prepared["images"])]["ktGaussian4"])
        m1, m2 = ex["view1"]["mask"][0], ex["view2"]["mask"][0]
        assert np.all(m1 <= acquired) and np.all(m2 <= acquired)
        assert m1.sum() < acquired.sum() and m2.sum() < acquired.sum()  # re-undersampled
        assert not np.array_equal(m1, m2)
    # retrospective masks are generated instead: the same config's base mask is not the stored one
    retro = dataclasses.replace(cfg, masks="retrospective")
    ex = examples(P.acquired_dataset(retro, "val", repeat=False), 1)[0]
    assert not np.array_equal(ex["mask"][0], lines_of(stored[NAMES[2]]["ktGaussian4"]))
    # stage 1: the stored mask is the initial acquisition M_0 of both views
    for ex in examples(P.feature_dataset(cfg, "vicreg", "train"), 4):
        v1, v2 = ex["views"]
        matches = [name for name in NAMES[:2]
                   if np.all(v1["mask"][0] <= lines_of(stored[name]["ktGaussian4"]))
                   and np.all(v2["mask"][0] <= lines_of(stored[name]["ktGaussian4"]))]
        assert matches and not np.array_equal(v1["mask"], v2["mask"])


def test_errors_name_the_file_and_the_masks(prepared):
    cfg, root = prepared["cfg"], prepared["root"]
    odd = dataclasses.replace(cfg, train_csv="odd.csv")
    with pytest.raises(ValueError, match=r"P004_cine_sax\.h5: .*no prospective mask 'ktGaussian4'; it has "
                                         r"\['Uniform8'\]"):
        P.acquired_dataset(odd, "train")
    radial = dataclasses.replace(cfg, prospective_mask="ktRadial8")
    with pytest.raises(ValueError, match=r"P00\d_cine_sax\.h5: prospective mask 'ktRadial8' is not a Cartesian "
                                         r"line mask.*\['Uniform8', 'ktGaussian4', 'ktRadial8'\]"):
        P.recon_dataset(radial, "train")
    with pytest.raises(ValueError, match="not a Cartesian line mask"):
        P.feature_dataset(radial, "vicreg", "train")
    # a file without any prospective mask (e.g. synthetic or fully sampled OCMR data)
    bare = root / "bare"
    bare.mkdir()
    sub = make_subject(T, X, Y, C, seed=9, snr=None)
    formats.write_h5_subject(bare / "P009_cine_sax.h5", sub["kspace"], sub["image"], sub["coil_maps"])
    formats.write_dataset_csv(bare / "train.csv", [formats.SubjectRow("P009_cine_sax", X, Y, C, T, 1)])
    with pytest.raises(ValueError, match=r"P009_cine_sax\.h5.*it has none"):
        P.recon_dataset(dataclasses.replace(cfg, root=str(bare)), "train")
    # config keys
    with pytest.raises(ConfigError, match=r"data\.masks: expected 'retrospective' or 'prospective', got 'prospektive'"):
        from_dict(DataConfig, {"source": "h5", "masks": "prospektive"})
    with pytest.raises(ConfigError, match=r"data\.masks: 'prospective'.*data\.source 'h5', got 'synthetic'"):
        from_dict(DataConfig, {"masks": "prospective"})
    with pytest.raises(ConfigError, match=r"data\.prospective_mask"):
        from_dict(DataConfig, {"source": "h5", "masks": "prospective", "prospective_mask": "a/b"})
    # evaluation keeps retrospective masks: it works whatever the stored masks are
    case = next(P.eval_cases(radial, "test", 3.0, mask_kind="gaussian"))
    assert case["name"] == NAMES[2]


TRAIN_YAML = """\
stage: recon
data:
  source: h5
  root: {root}
  masks: prospective
  prospective_mask: ktGaussian4
  mask_kind: gaussian
  mask_seeds: 3
  start_r: 2
  train_r: [2, 3]
  val_r: 3
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


@pytest.mark.parametrize("method", ["ssfl-recon", "ssdu"])
def test_one_training_step_with_prospective_masks(prepared, method):
    base = prepared["base"]
    run_dir = base / f"run_{method}"
    path = base / f"{method}.yaml"
    path.write_text(TRAIN_YAML.format(root=prepared["root"], cache=base / "masks", run_dir=run_dir), encoding="utf-8")
    assert main(["train-recon", "--config", str(path), "--set", f"model.method={method}"]) == 0
    assert (run_dir / "model.weights.h5").is_file()
    saved = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert "masks: prospective" in saved and "prospective_mask: ktGaussian4" in saved
    assert read_summary(run_dir)["steps"] == 1
