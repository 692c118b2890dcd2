"""The inference and conversion commands end to end through ``ssfl-recon``: ``features``, ``import-original`` and
``reconstruct`` against the outputs of the original code (golden fixtures), and ``demo`` on a tiny config."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import fixtures_dir, load_golden
from PIL import Image

from helpers import assert_golden
from scripts.cli import main

WEIGHTS001 = "original/weights001.tf"


def _fixture(name: str) -> str:
    return str(fixtures_dir() / name)


def _case_npz(path: Path, golden: dict[str, np.ndarray], with_x: bool = True) -> Path:
    arrays = {"y": golden["y"], "mask": golden["mask"], "smaps": golden["smaps"]}
    if with_x:
        arrays["x"] = golden["x"]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def fe_golden() -> dict[str, np.ndarray]:
    return load_golden("fe_vicreg_pred.npz")


def test_features_of_the_original_weights_match_the_original(tmp_path, fe_golden) -> None:
    # the full pred-mode checkpoint has every variable x_out needs (weights001 lacks decoder/1, tau/1, dc/1)
    case = _case_npz(tmp_path / "case.npz", fe_golden)
    out = tmp_path / "features.npz"
    assert main(["features", "--weights", _fixture("golden/fe_vicreg_full_ckpt"), "--method", "vicreg",
                 "--input", str(case), "--out", str(out)]) == 0
    with np.load(out) as result:
        assert sorted(result.files) == ["feature_0", "feature_1", "x_out"]
        for key in ("feature_0", "feature_1", "x_out"):
            assert_golden(result[key], fe_golden[key], f"features command {key}")


def test_import_original_then_features_reproduce_the_original(tmp_path, fe_golden) -> None:
    weights, report_path = tmp_path / "fe.weights.h5", tmp_path / "report.json"
    assert main(["import-original", "--checkpoint", _fixture(WEIGHTS001), "--model", "fe-vicreg",
                 "--out", str(weights), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert sorted(report) == ["not_restored", "restored", "unused"]
    # everything the features depend on came from the checkpoint; optimizer state is never a model weight
    restored = {n for n in report["restored"] if not n.startswith("p/")}
    assert restored == {str(v) for v in fe_golden["restored_vars"]}
    assert not any(n.startswith("optimizer/") for n in report["restored"])
    assert weights.is_file()

    out = tmp_path / "features.npz"
    assert main(["features", "--weights", str(weights), "--input", str(_case_npz(tmp_path / "case.npz", fe_golden)),
                 "--out", str(out)]) == 0
    with np.load(out) as result:
        for key in ("feature_0", "feature_1"):
            assert_golden(result[key], fe_golden[key], f"imported weights {key}")


def test_import_original_refuses_an_output_name_keras_cannot_load(tmp_path, capsys) -> None:
    assert main(["import-original", "--checkpoint", _fixture(WEIGHTS001), "--model", "fe-vicreg",
                 "--out", str(tmp_path / "fe.h5")]) == 2
    assert "expected a file name ending with .weights.h5" in capsys.readouterr().err
    assert not (tmp_path / "fe.h5").exists()


def test_reconstruct_matches_the_original_and_writes_previews(tmp_path) -> None:
    golden = load_golden("ssfl_recon_pred.npz")
    # without x: the command forms A^H y itself, as the original's zero-filled input
    case = _case_npz(tmp_path / "case.npz", golden, with_x=False)
    out, png, gif = tmp_path / "recon.npz", tmp_path / "recon.png", tmp_path / "recon.gif"
    assert main(["reconstruct", "--weights", _fixture("golden/ssfl_recon_ckpt"), "--input", str(case),
                 "--out", str(out), "--png", str(png), "--gif", str(gif)]) == 0
    with np.load(out) as result:
        recon = result["recon"]
    assert recon.shape == (1, 8, 32, 24, 1) and recon.dtype == np.complex64
    assert_golden(recon, golden["x_out"], "reconstruct command x_out")
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 0
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 8

    h5_out = tmp_path / "recon.h5"
    assert main(["reconstruct", "--weights", _fixture("golden/ssfl_recon_ckpt"), "--input", str(case),
                 "--out", str(h5_out)]) == 0
    with h5py.File(h5_out, "r") as f:
        np.testing.assert_allclose(f["recon"][()], recon, rtol=1e-5, atol=1e-5)


def test_reconstruct_bad_input_is_one_line_naming_the_file(tmp_path, capsys) -> None:
    bad = tmp_path / "broken.npz"
    np.savez(bad, y=np.zeros((1, 4, 8, 8, 2), np.complex64))
    assert main(["reconstruct", "--weights", _fixture("golden/ssfl_recon_ckpt"), "--input", str(bad),
                 "--out", str(tmp_path / "r.npz")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "missing arrays" in err and "Traceback" not in err
    assert not (tmp_path / "r.npz").exists()


def _tiny_yaml(stage: str, root: Path, run_dir: Path) -> str:
    data = (f"data:\n  source: synthetic\n  root: {root / 'data'}\n  size: [4, 24, 16, 2]\n  subjects: 5\n"
            f"  seed: 0\n  mask_cache: {root / 'masks'}\n  mask_seeds: 2\n")
    data += "  min_r: 2.0\n  max_r: 4.0\n" if stage == "features" else "  start_r: 2.0\n  train_r: [2.0, 4.0]\n"
    return (f"stage: {stage}\n{data}model:\n  num_iter: 1\n  num_levels: 1\n  filters: 4\n  feature_method: vicreg\n"
            f"train:\n  epochs: 1\n  steps_per_epoch: 1\n  val_steps: 0\n  run_dir: {run_dir}\n")


@pytest.mark.slow
def test_demo_runs_both_stages_and_writes_the_report(tmp_path) -> None:
    fe_yaml, rc_yaml = tmp_path / "fe.yaml", tmp_path / "rc.yaml"
    fe_yaml.write_text(_tiny_yaml("features", tmp_path, tmp_path / "runs" / "fe"), encoding="utf-8")
    rc_yaml.write_text(_tiny_yaml("recon", tmp_path, tmp_path / "runs" / "rc"), encoding="utf-8")
    out = tmp_path / "demo"
    assert main(["demo", "--features-config", str(fe_yaml), "--recon-config", str(rc_yaml),
                 "--accelerations", "4", "--out", str(out)]) == 0

    with open(out / "eval" / "per_case.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    methods = {"zero-filled", "cg-sense", "ssfl-recon"}
    assert {r["method"] for r in rows} == methods
    assert {float(r["acc"]) for r in rows} == {4.0}
    cases = {r["case"] for r in rows}
    assert len(cases) >= 1 and len(rows) == len(cases) * len(methods)
    assert all(np.isfinite(float(r["psnr"])) for r in rows)

    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# SSFL-Recon demo report")
    for stage in ("data", "stage 1 (features)", "stage 2 (SSFL-Recon)", "evaluation", "total"):
        assert f"| {stage} |" in report
    assert "ssfl-recon" in report and "cg-sense" in report
