"""Faults a long training survives, measured: SIGKILL at random points then ``--resume`` (the result equals the
uninterrupted run's), SIGTERM/SIGINT (checkpoint, exit 0, resume hint), corrupted or truncated checkpoints (the
previous one is used), a failed save (the last checkpoint stays intact), one writer per run folder (lock file),
a run folder that cannot be written or lacks space, and NaN/Inf steps (``train.on_nan: stop|skip``)."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from helpers import tiny_recon_yaml
from test_training import feature_data, new_feature_model
from utils import checkpoints, run_lock, training
from utils.config import ConfigError, load_config
from utils.schema import ExperimentConfig
from utils.training import (CheckpointError, NonFiniteLossError, RunFolderError, fit, load_checkpoint,
                            read_checkpoint_state, read_summary)

TIMEOUT_S = 240  # per subprocess launch (TF import and tracing included): a hang fails, never blocks the suite


# ---------------------------------------------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return env


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                      else None)
    return arrays


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _assert_same_arrays(actual: dict, expected: dict, what: str) -> None:
    assert sorted(actual) == sorted(expected), what
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, rtol=1e-6, atol=1e-6, err_msg=f"{what}: {key}")


def _ckpt_steps(run_dir: Path) -> int:
    try:
        return int(read_checkpoint_state(run_dir)[0]["logs"]["steps"])
    except FileNotFoundError:
        return 0


STEP_LINE = re.compile(r": step (\d+)/\d+, ")  # ProgressLog's per-step line (not the watchdog's "running")


class _Launch:
    """``ssfl-recon train-recon`` as a subprocess, its output in a file (never an unread pipe)."""

    def __init__(self, config: Path, log: Path, resume: Path | None = None):
        args = [sys.executable, "-m", "scripts.cli", "train-recon", "--config", str(config)]
        if resume is not None:
            args += ["--resume", str(resume)]
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(args, cwd=REPO_ROOT, env=_env(), stdout=self._out, stderr=subprocess.STDOUT)
        self.deadline = time.monotonic() + TIMEOUT_S

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def steps_seen(self) -> int:
        found = STEP_LINE.findall(self.text())
        return int(found[-1]) if found else 0

    def wait_for_steps(self, steps: int) -> None:
        while self.steps_seen() < steps:
            assert self.proc.poll() is None, f"run ended before step {steps}:\n{self.tail()}"
            assert time.monotonic() < self.deadline, f"no step {steps} in {TIMEOUT_S} s:\n{self.tail()}"
            time.sleep(0.01)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.text().strip().splitlines()[-lines:])


def _recon_config(base: Path, data: Path, run_dir: Path) -> Path:
    config = base / f"{run_dir.name}.yaml"
    config.write_text(tiny_recon_yaml(data / "data", data / "masks") + (
        f"train:\n  epochs: 3\n  steps_per_epoch: 5\n  checkpoint_every_steps: 1\n  log_seconds: 0.1\n"
        f"  run_dir: {run_dir}\n"), encoding="utf-8")
    return config


# ------------------------------------------------------------------------ kill -9 at random points, resume
@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(tmp_path):
    """One uninterrupted reference run (in parallel, own data copy) and one run interrupted 6 times: SIGKILL
    during start-up, SIGKILL 4 times at a random moment after a random step (sometimes inside the checkpoint write),
    SIGTERM once; each interruption is followed by ``--resume``. After every SIGKILL the newest intact checkpoint
    holds all but at most one (checkpoint_every_steps: 1) of the steps the run reported; SIGTERM loses nothing and exits 0 with the resume hint; a live run's folder cannot be locked by another
    process; a killed run's stale lock is taken over. The final weights, optimizer variables (Adam moments and
    step counter) and per-epoch losses equal the reference's (1e-6; losses 1e-5)."""
    rng = np.random.default_rng(17)
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    reference = _Launch(_recon_config(tmp_path, tmp_path / "ref_data", reference_dir), tmp_path / "reference.log")
    config = _recon_config(tmp_path, tmp_path / "data", run_dir)
    launches: list[_Launch] = [reference]
    try:
        plan = ["startup"] + ["kill"] * 2 + ["term"] + ["kill"] * 2
        for i, event in enumerate(plan):
            resume = run_dir if i else None
            before = _ckpt_steps(run_dir) if i else 0
            stale_lock = (run_dir / ".lock").exists()  # left by the SIGKILLed launch (unless killed before it)
            launch = _Launch(config, tmp_path / f"launch{i}.log", resume)
            launches.append(launch)
            if event == "startup":
                time.sleep(rng.uniform(1.0, 3.0))  # importing TensorFlow / building the model / tracing
                assert launch.proc.poll() is None, launch.tail()
                launch.proc.send_signal(signal.SIGKILL)
            else:
                launch.wait_for_steps(int(rng.integers(1, 3)))
                if i == 1:  # a second process on the live run's folder is refused, naming the holder
                    with pytest.raises(run_lock.RunLockedError, match=f"PID {launch.proc.pid} on host"):
                        run_lock.acquire(run_dir)
                if event == "term":
                    launch.proc.send_signal(signal.SIGTERM)
                    assert launch.wait() == 0, launch.tail()
                    text = launch.text()
                    assert f"--resume {run_dir}" in text and "SIGTERM received" in text, launch.tail()
                    assert read_summary(run_dir)["stopped"] == "signal SIGTERM"
                    # nothing lost: every step the run did (the one in progress at SIGTERM included, which may end
                    # after the last progress line was read) is in the checkpoint
                    assert _ckpt_steps(run_dir) == read_summary(run_dir)["steps"] >= before + launch.steps_seen()
                    continue
                time.sleep(rng.uniform(0.0, 0.25))  # anywhere in the next step or its checkpoint write
                launch.proc.send_signal(signal.SIGKILL)
            launch.wait()
            seen = before + launch.steps_seen()
            # at most checkpoint_every_steps (1) lost: the last step of an epoch is reported before its checkpoint
            # (written after the epoch's validation), any other step after it
            assert _ckpt_steps(run_dir) >= seen - 1, (event, seen, launch.tail())
            if stale_lock:
                assert "no longer running: taking the lock over" in launch.text(), launch.tail()
        final = _Launch(config, tmp_path / "final.log", run_dir)
        launches.append(final)
        assert final.wait() == 0, final.tail()
        assert reference.wait() == 0, reference.tail()
    finally:
        for launch in launches:
            launch.stop()
    assert read_summary(run_dir)["steps"] == read_summary(reference_dir)["steps"] == 15
    _assert_same_arrays(_h5_arrays(run_dir / "model.weights.h5"), _h5_arrays(reference_dir / "model.weights.h5"),
                        "final weights")
    _assert_same_arrays(_npz_arrays(run_dir / "checkpoints" / "last.optimizer.npz"),
                        _npz_arrays(reference_dir / "checkpoints" / "last.optimizer.npz"), "optimizer state")
    rows = [line.split(",") for line in (run_dir / "loss.csv").read_text().split()]
    ref_rows = [line.split(",") for line in (reference_dir / "loss.csv").read_text().split()]
    assert rows[0] == ref_rows[0] and len(rows) == len(ref_rows) == 4
    np.testing.assert_allclose(np.array(rows[1:], float), np.array(ref_rows[1:], float), rtol=1e-5)
    assert not (run_dir / ".lock").exists()  # released at exit


# ------------------------------------------------------------------------ in-process: signals, exact position
def _stream(n: int = 6, bad: tuple[int, ...] = ()) -> tf.data.Dataset:
    """An endless stream of ``n`` distinct examples (NaN in the examples of ``bad``)."""
    data = list(feature_data(n, seed=4).as_numpy_iterator())
    for i in bad:
        data[i] = tf.nest.map_structure(lambda a: a * np.nan if np.iscomplexobj(a) else a, data[i])
    stacked = tf.nest.map_structure(lambda *a: np.stack(a), *data)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat()


class _SendSignal(keras.callbacks.Callback):
    def __init__(self, at_step: int, signum: int):
        super().__init__()
        self.at_step, self.signum = at_step, signum

    def on_train_batch_begin(self, batch, logs=None):
        if training.optimizer_steps(self.model) == self.at_step:
            os.kill(os.getpid(), self.signum)  # arrives while the step runs


@pytest.mark.slow
def test_sigint_finishes_the_step_checkpoints_and_resumes_mid_epoch_exactly(tmp_path, monkeypatch):
    # SIGTERM takes the same path; it is sent to a CLI run in the SIGKILL test above
    signum = signal.SIGINT
    ds = _stream()
    straight = new_feature_model()
    fit(straight, lambda pos: ds.skip(pos), epochs=2, steps_per_epoch=3, run_dir=tmp_path / "straight", verbose=0)

    model = new_feature_model()
    original_fit = keras.Model.fit

    def fit_with_signal(self, *args, callbacks=None, **kwargs):
        return original_fit(self, *args, callbacks=[*callbacks, _SendSignal(4, signum)], **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit_with_signal)
    fit(model, lambda pos: ds.skip(pos), epochs=2, steps_per_epoch=3, run_dir=tmp_path / "split", verbose=0)
    monkeypatch.undo()
    name = signal.Signals(signum).name
    assert read_summary(tmp_path / "split")["stopped"] == f"signal {name}"
    assert signal.getsignal(signum) is not None and int(model.optimizer.iterations.numpy()) == 5  # step 5 finished
    state, _ = read_checkpoint_state(tmp_path / "split")
    assert (state["epoch"], state["step_in_epoch"], state["batches"]) == (1, 2, 5)

    resumed = new_feature_model(seed=9)
    assert load_checkpoint(tmp_path / "split", resumed) == 1
    fit(resumed, lambda pos: ds.skip(pos), epochs=2, steps_per_epoch=3, run_dir=tmp_path / "split", initial_epoch=1,
        verbose=0)
    assert int(resumed.optimizer.iterations.numpy()) == 6
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6, err_msg=a.path)
    for a, b in zip(straight.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6, err_msg=a.path)
    # the resumed epoch's loss is the mean over all its steps, as in the uninterrupted run
    rows = (tmp_path / "split" / "loss.csv").read_text().split()
    ref = (tmp_path / "straight" / "loss.csv").read_text().split()
    np.testing.assert_allclose(np.array([r.split(",") for r in rows[1:]], float),
                               np.array([r.split(",") for r in ref[1:]], float), rtol=1e-5)


# ------------------------------------------------------------------------ checksums and the previous checkpoint
@pytest.fixture(scope="module")
def _trained_run(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A run folder with two epoch checkpoints (last.* after epoch 2, prev.* after epoch 1), trained once."""
    run = tmp_path_factory.mktemp("two_checkpoints")
    model = new_feature_model()
    fit(model, feature_data(2), epochs=2, steps_per_epoch=2, run_dir=run, verbose=0)
    return run, [np.asarray(w) for w in model.weights]


@pytest.fixture
def two_checkpoints(_trained_run, tmp_path) -> tuple[Path, list[np.ndarray]]:
    """A fresh copy of the run folder's checkpoints under ``tmp_path`` and the final weights."""
    shutil.copytree(_trained_run[0] / "checkpoints", tmp_path / "checkpoints")
    return tmp_path / "checkpoints", _trained_run[1]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda c: _truncate(c / "last.weights.h5"), "last.weights.h5 is truncated"),
    (lambda c: _flip_byte(c / "last.weights.h5"), "last.weights.h5 is corrupted"),
    (lambda c: _flip_byte(c / "last.optimizer.npz"), "last.optimizer.npz is corrupted"),
    (lambda c: (c / "last.optimizer.npz").unlink(), "last.optimizer.npz is missing"),
    (lambda c: _truncate(c / "state.json"), "state.json is unreadable or truncated"),
    (lambda c: (c / "state.json").write_text("[]"), "state.json is unreadable"),
])
def test_damaged_checkpoint_is_reported_and_the_previous_one_used(tmp_path, two_checkpoints, caplog, damage,
                                                                  message):
    ckpt, _ = two_checkpoints
    shutil.copy(ckpt / "prev.weights.h5", tmp_path / "epoch1.weights.h5")
    damage(ckpt)
    model = new_feature_model(seed=3)
    with caplog.at_level(logging.WARNING, logger="utils.training"):
        assert load_checkpoint(tmp_path, model) == 1  # the previous checkpoint: end of epoch 1
    assert message in caplog.text and "using the previous checkpoint" in caplog.text
    assert int(model.optimizer.iterations.numpy()) == 2
    expected = new_feature_model(seed=4)
    expected.load_weights(str(tmp_path / "epoch1.weights.h5"))
    for a, b in zip(expected.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=a.path)


def test_no_intact_checkpoint_is_a_clear_error(tmp_path, two_checkpoints):
    ckpt, _ = two_checkpoints
    _truncate(ckpt / "last.weights.h5")
    _flip_byte(ckpt / "prev.optimizer.npz")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint: .*last.weights.h5 is truncated.*"
                                              r"prev.optimizer.npz is corrupted"):
        load_checkpoint(tmp_path, new_feature_model())


def test_save_cut_between_renames_still_finds_a_complete_checkpoint(tmp_path, two_checkpoints):
    ckpt, final_weights = two_checkpoints
    # as if killed after moving last.* to prev.* but before the new files were renamed in: state.json names
    # last.* whose bytes now live under prev.*
    for suffix in (".weights.h5", ".optimizer.npz"):
        os.replace(ckpt / f"last{suffix}", ckpt / f"prev{suffix}")
    resumed = new_feature_model(seed=3)
    assert load_checkpoint(tmp_path, resumed) == 2
    for a, b in zip(final_weights, resumed.weights):
        np.testing.assert_array_equal(np.asarray(b), a, err_msg=b.path)


def test_failed_save_disk_full_keeps_the_last_checkpoint(tmp_path, two_checkpoints, monkeypatch):
    ckpt, _ = two_checkpoints
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training.np, "savez", full)
    model = new_feature_model(seed=2)
    with pytest.raises(OSError, match="could not write a checkpoint .*No space left.*previous checkpoint is intact"):
        training.save_checkpoint(tmp_path, model, 3, {"loss": 1.0})
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before  # no temporary file left, nothing changed
    assert load_checkpoint(tmp_path, new_feature_model(seed=3)) == 2


# ------------------------------------------------------------------------ run folder: writable, space, lock
def test_run_folder_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    # the tests run as root, for whom chmod does not stop writes: a path under a FILE stands for a folder that
    # cannot be created, and a failing mkstemp (EROFS) for a read-only mount
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(RunFolderError, match="a_file/run' is not writable"):
        training.check_run_folder(tmp_path / "a_file" / "run")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoints.tempfile, "mkstemp", read_only)
    with pytest.raises(RunFolderError, match="'.*ro_run' is not writable \\(Read-only file system\\)"):
        training.check_run_folder(tmp_path / "ro_run")


def test_too_little_free_space_is_refused_before_training(tmp_path, monkeypatch):
    model = new_feature_model()
    need = 4 * checkpoints.checkpoint_bytes(model)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 * need, 9 * need,
                                                                                         need - 1))
    with pytest.raises(RunFolderError, match=r"MiB free on its disk, the checkpoints need about"):
        training.check_run_folder(tmp_path, model)


def test_train_features_refuses_an_unwritable_run_dir(tmp_path):
    from feature_learning.train import train_features

    (tmp_path / "a_file").write_text("x")
    cfg = ExperimentConfig()
    cfg.data.dummy = True
    cfg.train.run_dir = str(tmp_path / "a_file" / "run")
    cfg.model.filters = 4
    cfg.model.num_iter = 1
    with pytest.raises(RunFolderError, match="not writable"):
        train_features(cfg)


def test_run_lock_live_stale_foreign_and_garbage_holders(tmp_path, caplog):
    lock = tmp_path / ".lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                    "started": run_lock._start_ticks(sleeper.pid), "boot": run_lock._boot_id()}))
        with pytest.raises(run_lock.RunLockedError, match=f"in use by PID {sleeper.pid} on host "
                                                          f"'{socket.gethostname()}'"):
            run_lock.acquire(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    with caplog.at_level(logging.WARNING, logger="utils.run_lock"):
        assert run_lock.acquire(tmp_path) == lock  # the holder is gone: taken over with a warning
    assert f"locked by PID {sleeper.pid}" in caplog.text and "no longer running" in caplog.text
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert run_lock.acquire(tmp_path) == lock  # the same process may take it again
    run_lock.release(tmp_path)
    assert not lock.exists()

    lock.write_text(json.dumps({"pid": 1, "host": "another-host.example", "started": 1, "boot": "x"}))
    with pytest.raises(run_lock.RunLockedError, match="another host"):
        run_lock.acquire(tmp_path)
    lock.write_text("{trunc")
    with caplog.at_level(logging.WARNING, logger="utils.run_lock"):
        run_lock.acquire(tmp_path)
    assert "unreadable" in caplog.text
    run_lock.release(tmp_path)


# ------------------------------------------------------------------------ NaN/Inf: stop or skip
@pytest.mark.slow
def test_on_nan_skip_leaves_the_step_out_and_counts_it(tmp_path):
    # examples 0..5 with example 2 NaN; skipping it must equal training on the stream without it
    bad = _stream(bad=(2,))
    model = new_feature_model()
    history = fit(model, lambda pos: bad.skip(pos), epochs=2, steps_per_epoch=3, run_dir=tmp_path / "skip",
                  verbose=0, on_nan="skip")
    assert int(model.optimizer.iterations.numpy()) == 5
    summary = read_summary(tmp_path / "skip")
    assert (summary["stopped"], summary["nan_skipped"], summary["steps"]) == ("finished", 1, 5)
    assert all(np.isfinite(v) for v in history.history["loss"])

    good = list(_stream().take(6).as_numpy_iterator())
    clean = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(
        lambda *a: np.stack(a), *[good[i] for i in (0, 1, 3, 4, 5)]))
    expected = new_feature_model()
    fit(expected, clean, epochs=1, steps_per_epoch=5, run_dir=tmp_path / "clean", verbose=0)
    for a, b in zip(expected.weights, model.weights):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6, err_msg=a.path)
    # epoch 1's logged loss is the mean of its two finite steps
    assert np.isfinite(float((tmp_path / "skip" / "loss.csv").read_text().split()[1].split(",")[2]))


def test_on_nan_stop_does_not_apply_the_step_and_keeps_the_checkpoint(tmp_path):
    bad = _stream(bad=(4,))
    model = new_feature_model()
    with pytest.raises(NonFiniteLossError, match="non-finite loss or gradients at optimizer step 5.*last good "
                                                 "checkpoint.*train.on_nan: skip"):
        fit(model, lambda pos: bad.skip(pos), epochs=2, steps_per_epoch=3, run_dir=tmp_path, verbose=0,
            checkpoint_every_steps=1)
    assert all(np.isfinite(np.asarray(w)).all() for w in model.trainable_weights)  # the update was not applied
    state, _ = read_checkpoint_state(tmp_path)
    assert (state["logs"]["steps"], state["epoch"], state["step_in_epoch"]) == (4, 1, 1)


@pytest.mark.parametrize("text, message", [
    ("checkpoint_every_steps: -1", "train.checkpoint_every_steps: expected an integer >= 0"),
    ("checkpoint_every_steps: 2.5", "train.checkpoint_every_steps"),
    ("on_nan: ignore", "train.on_nan: expected 'stop' or 'skip', got 'ignore'"),
])
def test_fault_config_keys_are_validated(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  {text}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ExperimentConfig, path)


def test_every_train_step_skips_a_non_finite_update():
    """The one-line hook of FE-Net, SSFL-Recon and the baselines' train steps (eager, tiny): a NaN batch changes
    no trainable weight, no optimizer variable, and adds one to the skip counter; a finite batch trains."""
    from test_baselines import _trainers, tiny_batch
    from test_training import recon_data
    from reconstruction.model import SSFLObjective, SSFLRecon
    from utils import nan_guard
    from utils.engine import Engine

    def feature_net():
        return new_feature_model()

    def ssfl():
        keras.utils.set_random_seed(1)
        model = Engine(SSFLRecon(1, "vicreg", unet=dict(filters=4)), SSFLObjective())
        model.build_all()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    def baseline(name):
        def make():
            keras.utils.set_random_seed(0)
            if name == "dual-unet":  # its own trainer (weight decay in the gradient)
                from reconstruction.dual_unet import DualUNetObjective, DualUNetResNet
                model = Engine(DualUNetResNet(4, filters=4, num_levels=2), DualUNetObjective(weight_decay=1e-4))
            else:
                model = _trainers()[name]()
            model.build_all()
            model.compile(optimizer=keras.optimizers.Adam(1e-2))
            return model
        return make

    batches = {"feature-net": lambda: next(iter(feature_data(1))),
               "ssfl-recon": lambda: next(iter(recon_data(1)))}
    builders = {"feature-net": feature_net, "ssfl-recon": ssfl,
                **{name: baseline(name) for name in ("supervised", "ssdu", "ei-r", "dual-unet")}}
    for name, build in builders.items():
        model = build()
        model.optimizer.build(model.trainable_variables)
        counter = nan_guard.attach(model)
        good = batches[name]() if name in batches else {k: tf.constant(v) for k, v in tiny_batch(3).items()}
        bad = tf.nest.map_structure(lambda t: t * tf.cast(np.nan, t.dtype) if t.dtype.is_complex else t, good)
        weights = [np.array(v) for v in model.trainable_variables]
        slots = [np.array(v) for v in model.optimizer.variables]
        model.train_step(bad)
        assert int(counter.numpy()) == 1, name
        for v, b in zip(model.trainable_variables, weights):
            np.testing.assert_array_equal(np.array(v), b, err_msg=f"{name}: {v.path}")
        for v, b in zip(model.optimizer.variables, slots):
            np.testing.assert_array_equal(np.array(v), b, err_msg=f"{name}: {v.path}")
        model.train_step(good)
        assert int(counter.numpy()) == 1 and int(model.optimizer.iterations.numpy()) == 1, name
        assert any(not np.array_equal(np.array(v), b) for v, b in zip(model.trainable_variables, weights)), name
