"""Training loops on tiny data: graph-mode steps, checkpoints, frozen FE, pretrained FE loading errors, the time
budget and progress lines. Exact resume (FE-Net in process, SSFL-Recon through the CLI after SIGKILL) is tested in
test_faults.py."""
from __future__ import annotations

import json
import logging
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fixtures_dir
from evaluation.figures import save_loss_curves
from feature_learning.model import FeatureNet, FeatureObjective
from reconstruction.model import SSFLObjective, SSFLRecon
from reconstruction.pretrained import load_feature_weights
from utils import mri
from utils import training
from utils.engine import Engine
from utils.training import (NonFiniteLossError, ProgressLog, fit, load_checkpoint, read_summary,
                            save_weights_atomic)

T, X, Y, C = 8, 16, 12, 2  # T=8 pools to 2 frames: VICReg needs >= 2 rows
SMALL_UNET = dict(filters=4)


def _view(rng, image, maps):
    mask = (rng.random((1, T, 1, Y, 1)) < 0.5).astype(np.float32)
    mask[:, :, :, Y // 2] = 1.0
    y = mri.forward_np(image, mask, maps).astype(np.complex64)
    x = mri.adjoint_np(y, mask, maps).astype(np.complex64)
    return {"x": x, "y": y, "mask": mask}


def _subject(rng):
    image = (rng.standard_normal((1, T, X, Y, 1)) + 1j * rng.standard_normal((1, T, X, Y, 1))).astype(np.complex64)
    maps = rng.standard_normal((1, 1, X, Y, C)) + 1j * rng.standard_normal((1, 1, X, Y, C))
    maps = (maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=-1, keepdims=True))).astype(np.complex64)
    return image, maps


def feature_data(n: int, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        image, maps = _subject(rng)
        examples.append({"views": tuple({**_view(rng, image, maps), "coil_maps": maps} for _ in range(2))})
    return tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *a: np.stack(a), *examples)).map(lambda e: e)


def recon_data(n: int, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        image, maps = _subject(rng)
        examples.append({"view1": _view(rng, image, maps), "view2": _view(rng, image, maps), "coil_maps": maps})
    return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda *a: np.stack(a), *examples))


def new_feature_model(seed: int = 0, num_iter: int = 2) -> Engine:
    """A tiny compiled FE-Net engine; ``num_iter=1`` (encoder + projector only in train mode) halves the graph to
    trace for tests that are about the training loop rather than the architecture."""
    keras.utils.set_random_seed(seed)
    network = FeatureNet(num_iter, "vicreg", unet=SMALL_UNET)
    network.build_all()
    model = Engine(network, FeatureObjective("vicreg"))
    model.build_all()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    return model


def test_feature_model_two_steps_in_graph_mode(tmp_path):
    model = new_feature_model()
    before = [np.array(v) for v in model.trainable_variables]
    history = fit(model, feature_data(2), epochs=1, steps_per_epoch=2, run_dir=tmp_path, verbose=0,
                  plot_loss=save_loss_curves)
    assert not model.run_eagerly
    assert np.isfinite(history.history["loss"][-1])
    unchanged = {v.path for b, v in zip(before, model.trainable_variables) if np.array_equal(b, np.array(v))}
    # Train mode skips the last iteration's decoder, tau and DC (as the original): exactly those stay put.
    last_decode = {v.path for v in model.trainable_variables
                   if v.path.startswith(("unet_1/bottleneck", "unet_1/decoder", "unet_1/out_layer", "tau_1", "dc_1"))}
    assert unchanged == last_decode
    assert int(model.optimizer.iterations.numpy()) == 2
    for name in ("model.weights.h5", "loss.csv", "loss.png", "config.yaml"):
        if name != "config.yaml":
            assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "checkpoints" / "state.json").read_text())["epoch"] == 1


def test_resume_without_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path, new_feature_model())


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = new_feature_model(num_iter=1)
    fit(model, feature_data(2), epochs=1, steps_per_epoch=2, run_dir=tmp_path, verbose=0)
    good = (tmp_path / "checkpoints" / "last.weights.h5").read_bytes()
    bad = feature_data(2).map(lambda e: tf.nest.map_structure(
        lambda t: t * tf.cast(np.nan, t.dtype) if t.dtype.is_complex else t, e))
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        fit(model, bad, epochs=2, steps_per_epoch=2, run_dir=tmp_path, initial_epoch=1, verbose=0)
    assert (tmp_path / "checkpoints" / "last.weights.h5").read_bytes() == good
    assert json.loads((tmp_path / "checkpoints" / "state.json").read_text())["epoch"] == 1


def _recon_model(tmp_path, fe_source=None, num_iter: int = 2):
    keras.utils.set_random_seed(1)
    network = SSFLRecon(num_iter, "vicreg", unet=SMALL_UNET)
    network.build_all()
    if fe_source:
        load_feature_weights(network.feature_extractor, fe_source)
    model = Engine(network, SSFLObjective())
    model.build_all()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_ssfl_two_steps_train_only_non_fe_weights(tmp_path):
    # one unrolled iteration in both stages (the FE run's weights must fit the SSFL model's FE)
    fe = new_feature_model(seed=5, num_iter=1)
    fit(fe, feature_data(1), epochs=1, steps_per_epoch=1, run_dir=tmp_path / "fe", verbose=0)
    model = _recon_model(tmp_path, str(tmp_path / "fe"), num_iter=1)
    fe_before = [np.array(v) for v in model.network.feature_extractor.weights]
    np.testing.assert_array_equal(fe_before[0], np.array(fe.weights[0]))
    trainable_before = [np.array(v) for v in model.trainable_variables]
    history = fit(model, recon_data(2), epochs=1, steps_per_epoch=2, run_dir=tmp_path / "recon", verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert not any(v.trainable for v in model.network.feature_extractor.weights if "moving" not in v.path) or \
        len(model.network.feature_extractor.trainable_variables) == 0
    for before, var in zip(fe_before, model.network.feature_extractor.weights):
        np.testing.assert_array_equal(before, np.array(var), err_msg=f"FE weight {var.path} changed")
    changed = [not np.array_equal(b, np.array(v)) for b, v in zip(trainable_before, model.trainable_variables)]
    assert sum(changed) > 0.9 * len(changed)


def test_pretrained_fe_errors(tmp_path):
    fe = FeatureNet(2, "vicreg", unet=SMALL_UNET)
    fe.build_all()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_feature_weights(fe, str(tmp_path / "missing_run"))
    other = FeatureNet(2, "vicreg", unet=dict(filters=6))
    other.build_all()
    save_weights_atomic(other, tmp_path / "other.weights.h5")
    with pytest.raises(ValueError, match="do not fit"):
        load_feature_weights(fe, str(tmp_path / "other.weights.h5"))
    three = FeatureNet(3, "vicreg")
    three.build_all()
    weights001 = fixtures_dir() / "original" / "weights001.tf"
    with pytest.raises(ValueError, match="encoder/2/"):
        load_feature_weights(three, str(weights001))


def test_pretrained_fe_from_original_checkpoint_restores_used_variables():
    fe = FeatureNet(2, "vicreg")
    fe.build_all()
    report = load_feature_weights(fe, str(fixtures_dir() / "original" / "weights001.tf"))
    assert set(fe.variables_used_for_features()) <= set(report.restored)


# ---------------------------------------------------------------------------------------------------------------------
# Wall-clock budget (train.max_minutes) and progress lines without a terminal
# ---------------------------------------------------------------------------------------------------------------------


def test_time_budget_stops_after_the_step_in_progress_and_reports(tmp_path):
    model = new_feature_model(num_iter=1)
    # a budget of ~1 microsecond is spent by the first step: exactly one step runs, the rest of the plan is skipped
    fit(model, feature_data(2), epochs=3, steps_per_epoch=2, run_dir=tmp_path, verbose=0, max_minutes=1e-8)
    assert int(model.optimizer.iterations.numpy()) == 1
    summary = read_summary(tmp_path)
    assert summary["stopped"] == "time budget"
    assert (summary["steps"], summary["steps_this_run"], summary["planned_steps"]) == (1, 1, 6)
    assert summary["cpu"] and summary["seconds"] > 0
    assert (tmp_path / "model.weights.h5").is_file()
    # the cut epoch is checkpointed but not counted as finished: --resume starts it again with the step counter kept
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 0 and state["logs"]["steps"] == 1
    resumed = new_feature_model(seed=5, num_iter=1)
    assert load_checkpoint(tmp_path, resumed) == 0
    assert int(resumed.optimizer.iterations.numpy()) == 1
    for a, b in zip(model.weights, resumed.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=a.path)  # a save/load round trip


def test_unspent_budget_lets_the_run_finish_with_progress_lines_without_a_terminal(tmp_path, caplog):
    # under pytest stdout is not a terminal: verbose="auto" gives log lines instead of Keras' bar
    model = new_feature_model(num_iter=1)
    with caplog.at_level(logging.INFO, logger="utils.training"):
        fit(model, feature_data(2), epochs=2, steps_per_epoch=2, run_dir=tmp_path, max_minutes=60, log_seconds=1e-6,
            label="stage 1 (test)")
    summary = read_summary(tmp_path)
    assert summary["stopped"] == "finished" and summary["steps"] == 4 == summary["planned_steps"]
    assert json.loads((tmp_path / "checkpoints" / "state.json").read_text())["epoch"] == 2
    lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    assert len(lines) == 4, lines  # one per step with an interval shorter than a step
    assert lines[0].startswith("stage 1 (test): step 1/4, loss ")
    assert lines[-1].startswith("stage 1 (test): step 4/4, ") and lines[-1].endswith("ETA 0m00s")


def test_progress_log_writes_at_least_every_interval(monkeypatch, caplog):
    # steps ending at these (fake) times, 30 s interval: a line after the first step, then whenever the next step
    # (at the mean step time) would end more than 30 s after the last line
    now = {"t": 0.0, "steps": 0}
    monkeypatch.setattr(training.time, "time", lambda: now["t"])
    monkeypatch.setattr(training, "optimizer_steps", lambda model: now["steps"])
    progress = ProgressLog("stage 2", total_steps=7, every=30.0, max_seconds=120.0, watchdog=False)
    progress.on_train_begin()
    with caplog.at_level(logging.INFO, logger="utils.training"):
        for step, t in enumerate([5, 10, 20, 31, 45, 62, 70], start=1):
            now.update(t=float(t), steps=step)
            progress.on_train_batch_end(step - 1, {"loss": 1.0})
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(",")[0] for m in messages] == ["stage 2: step 1/7", "stage 2: step 4/7", "stage 2: step 6/7"]
    # the first step (tracing) gives no rate; later rates count the steps after it: at 62 s, 5 steps in 57 s, and
    # ETA = min(1 remaining step / rate, what is left of the 120 s budget)
    assert messages[0].endswith("0 steps/s, elapsed 0m05s, ETA 1m55s")  # no rate yet: only the budget bounds it
    assert messages[2] == "stage 2: step 6/7, loss 1, 0.0877 steps/s, elapsed 1m02s, ETA 0m11s"
    now.update(t=115.0, steps=7)
    progress.every = 1.0
    with caplog.at_level(logging.INFO, logger="utils.training"):
        progress.on_train_batch_end(6, {"loss": 1.0})
    assert caplog.records[-1].getMessage().endswith("ETA 0m00s")  # all steps done


def test_progress_watchdog_reports_a_long_step(caplog):
    # no step ends for 2.6 s with the watchdog's 1 s floor (a 1e-3 s interval must not flood the log): it says
    # the step is still running about once a second
    progress = ProgressLog("stage 1", total_steps=3, every=1e-3)
    progress.set_model(new_feature_model())
    with caplog.at_level(logging.INFO, logger="utils.training"):
        progress.on_train_begin()
        time.sleep(2.6)
        progress.on_train_end()
    running = [r.getMessage() for r in caplog.records if "running" in r.getMessage()]
    assert 2 <= len(running) <= 3 and running[0].startswith("stage 1: step 1/3 running, elapsed ")
    assert progress._thread is None
