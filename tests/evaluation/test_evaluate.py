"""`ssfl-recon evaluate` end to end on a tiny synthetic data set, its bad-input errors, and the data figures.

One module-wide run: 5 synthetic subjects of T=4, 24x16, 2 coils (3 in train.csv), a random SSFL-Recon with one
unrolled iteration and 4 filters saved with ``save_weights``, evaluated with zero-filling, CG-SENSE and the model
on the first 2 training cases at R = 4 and 8.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from PIL import Image

from data_loader import pipelines
from evaluation.figures import save_mask_figure, side_by_side
from evaluation.metrics import MetricOptions, compute_metrics
from helpers import tiny_recon_yaml
from scripts.cli import main
from utils.config import load_config
from utils.schema import ExperimentConfig

# Keras 3 itself calls np.array(tensor, copy=False) in save_weights; NumPy 2 warns about it
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

T, X, Y, C = 4, 24, 16, 2
ACCS = ("4", "8")
CASES = 2
METRIC_KEYS = ("psnr", "ssim", "nrmse", "nmse")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _metric_values(rows: list[dict]) -> list[tuple]:
    return [(r["acc"], r["case"], r["method"], *(r[k] for k in METRIC_KEYS)) for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    from reconstruction.train import build_recon_model

    base = tmp_path_factory.mktemp("evaluate")
    config = base / "tiny.yaml"
    config.write_text(tiny_recon_yaml(base / "data", base / "masks", (T, X, Y, C)), encoding="utf-8")
    cfg = load_config(ExperimentConfig, config)
    model = build_recon_model(cfg)
    # away from the initial values (tau 0.1, DC weight 1), so scores of an unloaded model could not match
    model.network.taus[0].scalar.assign([0.7])
    model.network.dcs[0].weights[0].assign([0.3])
    weights = base / "tiny.weights.h5"
    model.save_weights(str(weights))
    out = base / "out"
    common = ["evaluate", "--config", str(config), "--weights", str(weights), "--methods",
              "zero-filled,cg-sense,model", "--accelerations", ",".join(ACCS), "--split", "train", "--cases",
              str(CASES)]
    assert main([*common, "--figure-cases", "1", "--gif-cases", "1", "--out", str(out)]) == 0
    return {"base": base, "config": config, "cfg": cfg, "weights": weights, "model": model, "out": out,
            "common": common}


def test_csv_has_one_row_per_acceleration_case_and_method(setup):
    rows = _read_csv(setup["out"] / "per_case.csv")
    train_names = pipelines.load_split(setup["cfg"].data, "train").names[:CASES]
    expected = {(float(a), n, m) for a in ACCS for n in train_names for m in ("zero-filled", "cg-sense", "ssfl-recon")}
    keys = [(float(r["acc"]), r["case"], r["method"]) for r in rows]
    assert len(keys) == len(expected) == 12 and set(keys) == expected
    assert list(rows[0]) == ["acc", "case", "method", "seconds", *METRIC_KEYS]
    assert all(float(r["seconds"]) >= 0 and all(math.isfinite(float(r[k])) for k in METRIC_KEYS) for r in rows)


def test_scores_equal_metrics_recomputed_on_the_same_seeded_cases(setup):
    rows = {(float(r["acc"]), r["case"], r["method"]): r for r in _read_csv(setup["out"] / "per_case.csv")}
    model = setup["model"]
    for case in list(pipelines.eval_cases(setup["cfg"].data, "train", 8.0, seed=1234))[:CASES]:
        # zero-filled = the case's x; the model row used the saved weights (tau 0.7, not a fresh initialisation)
        inputs = {k: case[k] for k in ("x", "y", "mask", "coil_maps")}
        for method, recon in (("zero-filled", case["x"]), ("ssfl-recon", np.asarray(model(inputs)))):
            expected = compute_metrics(case["reference"], recon)["mean"]
            row = rows[(8.0, case["name"], method)]
            for key in METRIC_KEYS:
                assert float(row[key]) == pytest.approx(expected[key], rel=1e-5, abs=1e-6), (method, key)


def test_summary_is_the_mean_and_std_of_the_csv_rows(setup):
    rows = _read_csv(setup["out"] / "per_case.csv")
    summary = json.loads((setup["out"] / "summary.json").read_text())
    assert set(summary) == {"zero-filled", "cg-sense", "ssfl-recon"}
    for method, by_acc in summary.items():
        assert set(by_acc) == set(ACCS)
        for acc, entry in by_acc.items():
            mine = [r for r in rows if r["method"] == method and float(r["acc"]) == float(acc)]
            assert entry["n"] == CASES == len(mine)
            for key in (*METRIC_KEYS, "seconds"):
                values = [float(r[key]) for r in mine]
                mean = sum(values) / len(values)
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
                assert entry[key][0] == pytest.approx(mean, rel=1e-12)
                assert entry[key][1] == pytest.approx(std, rel=1e-9, abs=1e-12)


def test_markdown_table_rows(setup):
    summary = json.loads((setup["out"] / "summary.json").read_text())
    lines = (setup["out"] / "table.md").read_text().splitlines()
    assert lines[0].startswith("| R | method | PSNR (dB) | SSIM | NRMSE |")
    body = [line.split(" | ") for line in lines[2:]]
    assert [(cells[0].strip("| "), cells[1]) for cells in body] == [
        (a, m) for a in ACCS for m in ("zero-filled", "cg-sense", "ssfl-recon")]
    psnr = summary["cg-sense"]["4"]["psnr"]
    assert f"| 4 | cg-sense | {psnr[0]:.2f} ± {psnr[1]:.2f} |" in lines[3] + lines[4]
    report = (setup["out"] / "report.md").read_text()
    assert "\n".join(lines) in report


def test_cg_sense_beats_zero_filling_at_r4(setup):
    rows = _read_csv(setup["out"] / "per_case.csv")
    psnr = {(r["case"], r["method"]): float(r["psnr"]) for r in rows if r["acc"] == "4.0"}
    cases = {case for case, _ in psnr}
    assert len(cases) == CASES
    for case in cases:
        assert psnr[(case, "cg-sense")] > psnr[(case, "zero-filled")] + 0.5


def test_masks_are_deterministic_and_follow_the_seed(setup):
    again = setup["base"] / "again"
    assert main([*setup["common"], "--figure-cases", "0", "--gif-cases", "0", "--out", str(again)]) == 0
    first = _metric_values(_read_csv(setup["out"] / "per_case.csv"))
    assert _metric_values(_read_csv(again / "per_case.csv")) == first
    assert not (again / "figures").exists()
    other = setup["base"] / "other_seed"
    assert main(["evaluate", "--config", str(setup["config"]), "--methods", "zero-filled", "--accelerations", "4",
                 "--split", "train", "--cases", str(CASES), "--seed", "7", "--figure-cases", "0", "--gif-cases",
                 "0", "--out", str(other)]) == 0
    zero_filled_r4 = [v for v in first if v[0] == "4.0" and v[2] == "zero-filled"]
    assert _metric_values(_read_csv(other / "per_case.csv")) != zero_filled_r4


def test_figures_are_written_and_readable(setup):
    figures = setup["out"] / "figures"
    case = pipelines.load_split(setup["cfg"].data, "train").names[0]
    pngs = sorted(figures.rglob("*.png"))
    # --figure-cases 1: the first case only, one panel per method other than zero-filling
    assert [p.relative_to(figures).as_posix() for p in pngs] == [
        f"R{a}/{case}_{m}.png" for a in ACCS for m in ("cg-sense", "ssfl-recon")]
    for png in pngs:
        image = mpimg.imread(png)
        assert image.ndim == 3 and image.shape[1] > image.shape[0] > 300  # four columns, two rows
    scale = math.ceil(100 / Y)
    for acc in ACCS:
        with Image.open(figures / f"R{acc}" / f"{case}_ssfl-recon.gif") as gif:
            assert gif.n_frames == T
            # ground truth | zero-filled | model, 2-pixel gaps, magnified, under a 14-pixel label strip
            assert gif.size == ((3 * Y + 2 * 2) * scale, X * scale + 14)
    report = (setup["out"] / "report.md").read_text()
    assert f"](figures/R4/{case}_ssfl-recon.png)" in report and f"](figures/R8/{case}_cg-sense.gif)" in report


def test_metric_flags_reach_the_metrics(setup):
    out = setup["base"] / "flags"
    assert main(["evaluate", "--config", str(setup["config"]), "--methods", "zero-filled", "--accelerations", "4",
                 "--split", "train", "--cases", "1", "--psnr-range", "per-frame", "--crop", "12,8", "--no-ssim",
                 "--figure-cases", "0", "--gif-cases", "0", "--out", str(out)]) == 0
    row = _read_csv(out / "per_case.csv")[0]
    case = next(pipelines.eval_cases(setup["cfg"].data, "train", 4.0, seed=1234))
    options = MetricOptions(psnr_data_range="per_frame", crop=(12, 8), compute_ssim=False)
    expected = compute_metrics(case["reference"], case["x"], options)["mean"]
    default = compute_metrics(case["reference"], case["x"])["mean"]
    assert float(row["psnr"]) == pytest.approx(expected["psnr"], rel=1e-9)
    assert float(row["psnr"]) != pytest.approx(default["psnr"], rel=1e-3)
    assert float(row["nrmse"]) == pytest.approx(expected["nrmse"], rel=1e-9)
    assert math.isnan(float(row["ssim"]))
    settings = json.loads((out / "settings.json").read_text())
    assert settings["metric_options"]["crop"] == [12, 8] and settings["seed"] == 1234


# ------------------------------------------------------------------------------------------- bad input
def _fails(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ssfl-recon evaluate: error:")
    return err


def test_bad_input_is_one_clear_line(setup, capsys, tmp_path):
    base = ["evaluate", "--config", str(setup["config"]), "--out", str(tmp_path / "out")]
    missing = tmp_path / "no_such.weights.h5"
    assert str(missing) in _fails(capsys, [*base, "--weights", str(missing)])
    err = _fails(capsys, [*base, "--methods", "zero-filled,sense"])
    assert "'sense'" in err and "zero-filled, cg-sense, model" in err
    assert "--weights" in _fails(capsys, [*base, "--methods", "model"])
    assert "--accelerations" in _fails(capsys, [*base, "--accelerations", "4,x"])
    assert "--accelerations" in _fails(capsys, [*base, "--accelerations", "0.5"])
    assert "--psnr-range" in _fails(capsys, [*base, "--psnr-range", "max"])
    assert "--crop" in _fails(capsys, [*base, "--crop", "12"])
    assert "--config" in _fails(capsys, ["evaluate", "--out", str(tmp_path / "o")])
    assert "--cases" in _fails(capsys, [*base, "--cases", "0"])
    assert not (tmp_path / "out").exists()


def test_weights_of_another_model_shape_are_rejected(setup, capsys, tmp_path):
    from reconstruction.train import build_recon_model

    other = load_config(ExperimentConfig, setup["config"], ["model.num_iter=2"])
    wrong = tmp_path / "two_iter.weights.h5"
    build_recon_model(other).save_weights(str(wrong))
    err = _fails(capsys, ["evaluate", "--config", str(setup["config"]), "--weights", str(wrong), "--out",
                          str(tmp_path / "out")])
    assert str(wrong) in err and "do not fit" in err


# -------------------------------------------------------------------------------- figures of the data
def test_side_by_side_hand_computed():
    a = np.array([[[3 + 4j, 1.0]]])  # (T=1, X=1, Y=2)
    b = np.array([[[-2.0]]])
    np.testing.assert_array_equal(side_by_side([a, b], gap=1), [[[5.0, 1.0, 0.0, 2.0]]])
    with pytest.raises(ValueError, match="cines\\[1\\] must have T, X"):
        side_by_side([a, np.zeros((1, 2, 2))])


def test_make_masks_compare_png(tmp_path):
    out, png = tmp_path / "m.txt", tmp_path / "kinds.png"
    assert main(["make-masks", "--kind", "vd-random", "--ny", "48", "--nt", "10", "--acc", "4", "--seed", "1",
                 "--num-center", "4", "--out", str(out), "--compare-png", str(png)]) == 0
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[1] > 2 * image.shape[0]  # four kinds side by side
    with pytest.raises(ValueError, match="only 0 and 1"):
        save_mask_figure(tmp_path / "bad.png", {"x": np.full((4, 3), 0.5)})
    with pytest.raises(ValueError, match="no sampled"):
        save_mask_figure(tmp_path / "bad.png", {"x": np.zeros((4, 3))})
    assert not (tmp_path / "bad.png").exists()
