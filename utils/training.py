"""Run folders, checkpoints, logging callbacks, the NaN guard and fault handling shared by both training stages.

A run folder holds:

* ``config.yaml``: the resolved config; ``.lock``: the process writing the folder (:mod:`utils.run_lock`).
* ``checkpoints/last.weights.h5`` (Keras weights), ``checkpoints/last.optimizer.npz`` (optimizer variables,
  including its iteration counter, and the epoch's running loss means) and ``checkpoints/state.json`` (epoch, step
  within the epoch, data stream position, loss, and the SHA-256 of both files); ``prev.*`` and
  ``prev.state.json``: the checkpoint before. Written every ``train.checkpoint_every_steps`` steps and at the end of
  every epoch: new files go to temporary names first, then the current ones become ``prev.*``, then the new ones
  are renamed into place and ``state.json`` is written last, so a killed or failed save always leaves an intact
  checkpoint (at worst the previous one). On resume a file whose checksum differs from its state (truncated,
  corrupted) is reported and the previous checkpoint is used.
* ``model.weights.h5`` (final weights), ``loss.csv`` (per epoch, with the optimizer step count), ``loss.png``,
  ``logs/`` (TensorBoard) and ``summary.json`` (steps done, seconds, ``finished``, ``time budget`` or
  ``signal SIGTERM``/``SIGINT``, skipped non-finite steps, CPU).

Resume is exact: the data pipelines are stateless functions of (seed, stream position), and :func:`fit` takes a
dataset factory ``position -> dataset`` that starts the stream at the checkpoint's position, so a run killed at any
point and resumed reproduces the uninterrupted run's weights and optimizer state.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from utils import nan_guard
from utils.io import atomic_path, atomic_write_bytes, atomic_write_text, fsync_file, sha256_file

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.weights.h5"


ON_NAN = ("stop", "skip")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the last good checkpoint is kept."""


class RunFolderError(ValueError):
    """The run folder cannot hold the run (not writable, too little free space): raised before training starts
    (a ValueError: the CLI prints it as one line)."""


class CheckpointError(ValueError):
    """No intact checkpoint in a run folder (every candidate is missing, truncated or corrupted)."""


def stored_weight_shapes(path: str | os.PathLike) -> list[tuple[int, ...]]:
    """Sorted shapes of the model variables in a Keras ``.weights.h5`` file (the optimizer state that
    ``save_weights`` of a compiled model adds is left out); ValueError naming the file if it is unreadable."""
    import h5py

    shapes: list[tuple[int, ...]] = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and not name.startswith("optimizer/"):
            shapes.append(tuple(item.shape))

    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(visit)
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as err:  # truncated or corrupted HDF5
        raise ValueError(f"{str(path)!r} is not a readable .weights.h5 file: {err}") from err
    return sorted(shapes)


def load_weights_checked(model: keras.Model, path: str | os.PathLike, what: str) -> None:
    """``model.load_weights(path)`` that also fails when the file holds MORE variables than the model.

    Keras loads a file with extra variables (e.g. of a model with more unrolled iterations) without a word; this
    compares the stored variable shapes with the model's first. ``what`` names the source in error messages.
    """
    stored = stored_weight_shapes(path)
    wanted = sorted(tuple(int(d) for d in v.shape) for v in model.weights)
    if stored != wanted:
        raise ValueError(f"{what} {str(path)!r} do not fit {type(model).__name__} '{model.name}': the file holds "
                         f"{len(stored)} variables, the model has {len(wanted)} (or their shapes differ); check "
                         "num_iter, feature method and UNet size")
    try:
        model.load_weights(str(path))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{what} {str(path)!r} do not fit {type(model).__name__} '{model.name}': {err}") from err


def save_weights_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(str(tmp))


def optimizer_state(optimizer: keras.optimizers.Optimizer) -> dict[str, np.ndarray]:
    return {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}


def restore_optimizer(optimizer: keras.optimizers.Optimizer, variables: list, state: dict[str, np.ndarray],
                      source: str) -> None:
    if not optimizer.built:
        optimizer.build(variables)
    state = {k: v for k, v in state.items() if k.startswith("v")}
    if len(state) != len(optimizer.variables):
        raise ValueError(f"{source}: optimizer state has {len(state)} arrays, the optimizer has "
                         f"{len(optimizer.variables)} variables (different model or optimizer?)")
    for i, var in enumerate(optimizer.variables):
        value = state[f"v{i:04d}"]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{source}: optimizer variable {i} ({var.path}) has shape {tuple(var.shape)}, the "
                             f"checkpoint has {tuple(value.shape)}")
        var.assign(value)


def _metric_variables(model: keras.Model) -> list:
    try:
        return list(model.metrics_variables)
    except Exception:  # a model without metrics
        return []


def metric_state(model: keras.Model) -> dict[str, np.ndarray]:
    """The running loss means of the epoch in progress (``m0000`` …), saved with a mid-epoch checkpoint.

    Not under a multi-replica strategy: reading a sync-on-read metric there is a collective that only the chief
    (the writer) would join, which deadlocks the other workers; a resumed distributed run restarts the means."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        return {}
    return {f"m{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(_metric_variables(model))}


def _restore_metrics(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    variables = _metric_variables(model)
    values = [state[k] for k in sorted(k for k in state if k.startswith("m"))]
    if len(values) == len(variables):
        for var, value in zip(variables, values):
            if tuple(var.shape) == tuple(np.shape(value)):
                var.assign(value)


CHECKPOINT_FILES = {"weights": ".weights.h5", "optimizer": ".optimizer.npz"}


def _temp_name(folder: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=".new.", suffix=suffix, dir=folder)
    os.close(fd)
    return Path(tmp)


def save_checkpoint(run_dir: Path, model: keras.Model, epoch: int, logs: dict[str, float],
                    position: dict[str, int] | None = None) -> None:
    """Writes ``checkpoints/last.*`` and ``state.json`` (the one before becomes ``prev.*``), never leaving a
    half-written checkpoint: on any error (disk full …) the current checkpoint stays as it was.

    ``position``: ``step_in_epoch`` (optimizer steps done in ``epoch``, 0 at an epoch's end), ``batches`` (steps
    taken from the data stream since the run began) and ``nan_skipped`` (non-finite steps skipped)."""
    ckpt = Path(run_dir) / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        try:
            temps["weights"] = _temp_name(ckpt, CHECKPOINT_FILES["weights"])
            model.save_weights(str(temps["weights"]))
            temps["optimizer"] = _temp_name(ckpt, CHECKPOINT_FILES["optimizer"])
            np.savez(temps["optimizer"], **optimizer_state(model.optimizer), **metric_state(model))
            files = {}
            for role, tmp in temps.items():
                fsync_file(tmp)
                files[role] = {"name": f"last{CHECKPOINT_FILES[role]}", "sha256": sha256_file(tmp),
                               "bytes": tmp.stat().st_size}
        except OSError as err:
            raise OSError(err.errno, f"could not write a checkpoint into {ckpt} ({err}); the previous checkpoint "
                                     "is intact") from err
        state = {"epoch": int(epoch), "logs": logs, "time": time.time(), "files": files,
                 "step_in_epoch": 0, "batches": None, "nan_skipped": 0, **(position or {})}
        state_file, prev_state = ckpt / "state.json", ckpt / "prev.state.json"
        if state_file.is_file():
            atomic_write_bytes(prev_state, state_file.read_bytes())
            for suffix in CHECKPOINT_FILES.values():
                if (ckpt / f"last{suffix}").is_file():
                    os.replace(ckpt / f"last{suffix}", ckpt / f"prev{suffix}")
        for role, tmp in temps.items():
            os.replace(tmp, ckpt / files[role]["name"])
        atomic_write_text(state_file, json.dumps(state))
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def _intact_state(ckpt: Path, state_name: str) -> tuple[dict | None, dict[str, Path], str]:
    """(state, files by role, "") of ``state_name`` when every file it names is present with its checksum (looked
    for under the ``last.*`` and ``prev.*`` names, since a save may be cut between renames), else (None, {}, why)."""
    path = ckpt / state_name
    if not path.is_file():
        return None, {}, f"{path} is missing"
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError("no 'epoch'")
    except (OSError, ValueError) as err:
        return None, {}, f"{path} is unreadable or truncated ({err})"
    files = state.get("files")
    if not files:  # a checkpoint written before checksums were recorded
        return state, {role: ckpt / f"last{suffix}" for role, suffix in CHECKPOINT_FILES.items()}, ""
    found: dict[str, Path] = {}
    for role, entry in files.items():
        suffix = CHECKPOINT_FILES.get(role, "")
        candidates = [ckpt / entry["name"], ckpt / f"last{suffix}", ckpt / f"prev{suffix}"]
        for candidate in dict.fromkeys(candidates):
            if candidate.is_file() and candidate.stat().st_size == entry.get("bytes", candidate.stat().st_size) \
                    and sha256_file(candidate) == entry["sha256"]:
                found[role] = candidate
                break
        else:
            name = ckpt / (("prev" if state_name.startswith("prev") else "last") + suffix)
            what = "missing" if not name.is_file() else (
                f"truncated ({name.stat().st_size} of {entry['bytes']} bytes)"
                if entry.get("bytes") is not None and name.stat().st_size < entry["bytes"]
                else "corrupted (its SHA-256 differs from the one recorded)")
            return None, {}, f"{name} is {what} (recorded in {path})"
    return state, found, ""


def read_checkpoint_state(run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Path]]:
    """The newest intact checkpoint of ``run_dir``: (state, {"weights": path, "optimizer": path}).

    Raises:
        FileNotFoundError: no checkpoint at all.
        CheckpointError: checkpoints exist but none is intact (the message says what is wrong with each).
    """
    ckpt = Path(run_dir) / "checkpoints"
    if not (ckpt / "state.json").is_file() and not (ckpt / "prev.state.json").is_file():
        raise FileNotFoundError(f"--resume {str(run_dir)!r}: no checkpoint found (expected {ckpt / 'state.json'})")
    problems = []
    for name in ("state.json", "prev.state.json"):
        state, files, why = _intact_state(ckpt, name)
        if state is not None:
            if problems:
                log.warning("checkpoint of %s: %s; using the previous checkpoint (epoch %s, %s optimizer steps)",
                            run_dir, "; ".join(problems), state.get("epoch"), state.get("logs", {}).get("steps"))
            return state, files
        if name == "state.json" or (ckpt / name).is_file():
            problems.append(why)
    raise CheckpointError(f"--resume {str(run_dir)!r}: no intact checkpoint: {'; '.join(problems)}")


_RESUMED: dict[int, dict[str, Any]] = {}


def load_checkpoint(run_dir: Path, model: keras.Model) -> int:
    """Restores weights and optimizer state of ``run_dir``'s newest intact checkpoint; returns the number of
    finished epochs (the position within the epoch is kept for :func:`fit`, see :func:`resume_position`)."""
    state, files = read_checkpoint_state(run_dir)
    try:
        model.load_weights(str(files["weights"]))
        with np.load(files["optimizer"]) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"--resume {str(run_dir)!r}: checkpoint {files['weights'].parent} cannot be "
                              f"loaded: {err}") from err
    restore_optimizer(model.optimizer, model.trainable_variables, arrays, str(files["optimizer"]))
    position = resume_position(state)
    position["metrics"] = {k: v for k, v in arrays.items() if k.startswith("m")}
    _RESUMED[id(model)] = position
    weakref.finalize(model, _RESUMED.pop, id(model), None)  # an id is reused once the model is gone
    return int(state["epoch"])


def resume_position(state: dict[str, Any]) -> dict[str, Any]:
    """``epoch``, ``step_in_epoch``, ``batches`` (None for checkpoints of older versions) and ``nan_skipped`` of
    a checkpoint state."""
    return {"epoch": int(state["epoch"]), "step_in_epoch": int(state.get("step_in_epoch") or 0),
            "batches": None if state.get("batches") is None else int(state["batches"]),
            "nan_skipped": int(state.get("nan_skipped") or 0)}


def checkpoint_bytes(model: keras.Model) -> int:
    """Bytes of one checkpoint (weights and optimizer variables), a little overestimated."""
    variables = list(model.weights) + list(getattr(model.optimizer, "variables", []) or [])
    return int(sum(np.prod(v.shape) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
                   for v in variables) * 1.1) + (1 << 20)


def check_run_folder(run_dir: Path, model: keras.Model | None = None) -> None:
    """Before training: ``run_dir`` can be created and written, and holds room for the checkpoints (the last,
    the previous and one being written: 3 x :func:`checkpoint_bytes`, plus the final weights).

    Raises:
        RunFolderError: naming the folder and what is wrong.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=run_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunFolderError(f"run folder {str(run_dir)!r} is not writable ({err.strerror or err}); choose "
                             "another train.run_dir or fix its permissions") from err
    if model is None:
        return
    need = 4 * checkpoint_bytes(model)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunFolderError(f"run folder {str(run_dir)!r}: {free / 2**20:.1f} MiB free on its disk, the "
                             f"checkpoints need about {need / 2**20:.1f} MiB (3 checkpoints and the final weights); "
                             "free some space or choose another train.run_dir")


class RunLogger(keras.callbacks.Callback):
    """Per step: NaN guard, signal check and a checkpoint every ``every`` steps; per epoch: atomic checkpoint,
    ``loss.csv`` and ``loss.png``; progress lines with elapsed time.

    Every checkpoint records its exact position (epoch, step within the epoch, steps taken from the data stream),
    so an epoch cut short (time budget, SIGTERM/SIGINT, SIGKILL after a step checkpoint) resumes at its next step.
    ``start``: the position restored by :func:`load_checkpoint` (None for a new run).
    """

    def __init__(self, run_dir: Path, save: bool = True, steps_per_epoch: int | None = None, every: int = 0,
                 on_nan: str = "stop", start: dict[str, Any] | None = None,
                 plot_loss: Callable[[Path, Path], Any] | None = None):
        super().__init__()
        self.plot_loss = plot_loss  # (png path, csv path) -> None; plotting lives above utils (evaluation.figures)
        if on_nan not in ON_NAN:
            raise ValueError(f"on_nan: expected one of {list(ON_NAN)}, got {on_nan!r}")
        self.run_dir = Path(run_dir)
        self.save = save
        self.steps_per_epoch = steps_per_epoch
        self.every = int(every or 0)
        self.on_nan = on_nan
        start = start or {}
        self.batches = int(start.get("batches") or 0)
        self.nan_skipped = int(start.get("nan_skipped") or 0)
        self._offset = int(start.get("step_in_epoch") or 0)  # steps already done in the first epoch
        self._resume_metrics = start.get("metrics") if self._offset else None
        self._last_saved = self.batches
        self.step_in_epoch = 0
        self.epoch = 0
        self.non_finite: str | None = None
        self.partial_epoch = False  # set by TimeBudget when it stops inside an epoch (kept for callers)
        self.stop_signal: str | None = None  # "SIGTERM"/"SIGINT" once one arrived
        self._guard_seen = 0
        self._snapshot: list[np.ndarray] | None = None
        self._start = time.time()
        self.csv_path = self.run_dir / "loss.csv"

    def _rows(self) -> list[dict[str, Any]]:
        if not self.csv_path.is_file():
            return []
        with open(self.csv_path, newline="") as fh:
            return list(csv.DictReader(fh))

    def on_train_begin(self, logs=None):
        self._guard_seen = nan_guard.skipped_steps(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.step_in_epoch, self._offset = self._offset, 0
        if self._resume_metrics:  # the running loss means of the epoch's steps done before the resume
            _restore_metrics(self.model, self._resume_metrics)
        self._resume_metrics = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.on_nan == "skip":  # what the forward pass changes: loss means, BatchNorm statistics
            variables = _metric_variables(self.model) + list(self.model.non_trainable_variables)
            self._snapshot = [(v, np.asarray(v.numpy())) for v in variables]

    def _position(self, finished: bool) -> dict[str, int]:
        return {"step_in_epoch": 0 if finished else self.step_in_epoch, "batches": self.batches,
                "nan_skipped": self.nan_skipped}

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        self.step_in_epoch += 1
        skipped = nan_guard.skipped_steps(self.model)
        if skipped != self._guard_seen:
            self._guard_seen = skipped
            step = optimizer_steps(self.model) + 1
            if self.on_nan == "stop":
                self.non_finite = f"non-finite loss or gradients at optimizer step {step} (batch {batch + 1} of " \
                                  f"epoch {self.epoch + 1}; the update was not applied)"
                self.model.stop_training = True
                return
            self.nan_skipped += 1
            log.warning("non-finite loss or gradients at optimizer step %d (epoch %d, batch %d): update skipped "
                        "(train.on_nan: skip; %d skipped so far)", step, self.epoch + 1, batch + 1, self.nan_skipped)
            for var, value in self._snapshot or []:  # the step leaves no trace in loss means or statistics
                var.assign(value)
        else:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.non_finite = f"loss became {float(loss)} at batch {batch + 1} of epoch {self.epoch + 1}"
                self.model.stop_training = True
                return
        if self.stop_signal:
            self.model.stop_training = True  # on_epoch_end writes the checkpoint
            return
        if (self.save and self.every and self.batches - self._last_saved >= self.every
                and not (self.steps_per_epoch and self.step_in_epoch >= self.steps_per_epoch)):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            self._save(self.epoch, {**logs, "steps": optimizer_steps(self.model)}, finished=False)

    def _save(self, epoch: int, logs: dict[str, Any], finished: bool) -> None:
        save_checkpoint(self.run_dir, self.model, epoch + 1 if finished else epoch, logs, self._position(finished))
        self._last_saved = self.batches

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        bad = [k for k, v in logs.items() if not math.isfinite(v)]
        if bad or self.non_finite:
            self.non_finite = self.non_finite or f"{bad} not finite at epoch {epoch + 1}: {logs}"
            self.model.stop_training = True
            return  # keep the last good checkpoint
        if not self.save:
            return
        steps = optimizer_steps(self.model)
        finished = not self.steps_per_epoch or self.step_in_epoch >= self.steps_per_epoch
        self.partial_epoch = not finished
        self._save(epoch, {**logs, "steps": steps}, finished)
        rows = [r for r in self._rows() if int(r["epoch"]) <= epoch]
        rows.append({"epoch": epoch + 1, "steps": steps, **logs})
        keys = ["epoch", "steps"] + sorted({k for r in rows for k in r if k not in ("epoch", "steps")})
        with atomic_path(self.csv_path) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
        if self.plot_loss is not None:
            try:
                self.plot_loss(self.run_dir / "loss.png", self.csv_path)
            except Exception as err:  # a plotting problem must not stop training
                log.warning("could not draw loss.png: %s", err)
        why = "done" if finished else (f"stopped by {self.stop_signal}" if self.stop_signal
                                       else "stopped by the time budget")
        log.info("epoch %d %s (%s) — %.1f s elapsed", epoch + 1, why,
                 ", ".join(f"{k}={v:.5g}" for k, v in logs.items()), time.time() - self._start)


def optimizer_steps(model: keras.Model) -> int:
    """Optimizer steps taken so far (restored with a checkpoint, so it counts across resumes)."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    return int(iterations.numpy()) if iterations is not None else 0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``max_seconds`` of wall time have passed (checked after every step, so the step in
    progress always finishes); ``run_logger`` is told when that happens inside an epoch."""

    def __init__(self, max_seconds: float, run_logger: RunLogger | None = None, steps_per_epoch: int | None = None):
        super().__init__()
        self.max_seconds = float(max_seconds)
        self.run_logger = run_logger
        self.steps_per_epoch = steps_per_epoch
        self.stopped = False
        self._start: float | None = None

    def on_train_begin(self, logs=None):
        if self._start is None:  # a resumed epoch and the epochs after it are two model.fit calls: one budget
            self._start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped or time.time() - self._start < self.max_seconds:
            return
        self.stopped = True
        self.model.stop_training = True
        if self.run_logger is not None and (self.steps_per_epoch is None or batch + 1 < self.steps_per_epoch):
            self.run_logger.partial_epoch = True
        log.info("time budget of %s spent after %d optimizer steps: stopping after this step",
                 _duration(self.max_seconds), optimizer_steps(self.model))


WATCHDOG_MIN_SECONDS = 1.0


class ProgressLog(keras.callbacks.Callback):
    """Without a terminal: a log line after the first step and then at least every ``every`` seconds, with the
    step, the loss, steps/s and the ETA of the run (bounded by the time budget, if any). Rates and ETA are measured
    from the end of the first step, which includes tracing the graph (its line shows ``ETA ?`` and 0 steps/s).

    After a step, a line is written when the next step would otherwise end more than ``every`` seconds after the
    last line (judged by the mean step time); a watchdog thread covers steps longer than ``every`` (the first step
    traces the graph), writing a "still running" line whenever ``every`` seconds pass without one."""

    def __init__(self, label: str, total_steps: int, every: float = 30.0, max_seconds: float = 0.0,
                 watchdog: bool = True):
        super().__init__()
        self.label = label
        self.total_steps = total_steps
        self.every = float(every)
        self.max_seconds = float(max_seconds)
        self.watchdog = watchdog
        self.lines = 0
        self._done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_train_begin(self, logs=None):
        if not getattr(self, "_started", False):  # once for the two model.fit calls of a mid-epoch resume
            self._started = True
            self._start = self._last = self._first_end = time.time()
            self._first = optimizer_steps(self.model)
            self._done = 0
        if self.watchdog:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="progress-watchdog", daemon=True)
            self._thread.start()

    def on_train_end(self, logs=None):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        # at least WATCHDOG_MIN_SECONDS between "running" lines, whatever ``every`` is (no flood for tiny intervals)
        every = max(self.every, WATCHDOG_MIN_SECONDS)
        while not self._stop.wait(min(1.0, every / 4)):
            now = time.time()
            if now - self._last >= every:
                self._last = now
                self.lines += 1
                if self._done >= self.total_steps:
                    log.info("%s: all %d steps done, finishing (checkpoint, validation), elapsed %s", self.label,
                             self.total_steps, _duration(now - self._start))
                else:
                    log.info("%s: step %d/%d running, elapsed %s", self.label, self._done + 1, self.total_steps,
                             _duration(now - self._start))

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        done = self._done = optimizer_steps(self.model) - self._first
        elapsed = now - self._start
        if done <= 1:
            self._first_end = now  # the first step includes tracing: rates are measured after it
        step_time = (now - self._first_end) / (done - 1) if done > 1 else elapsed
        if done > 1 and now - self._last + step_time <= self.every:
            return
        self._last = now
        rate = 1.0 / step_time if done > 1 and step_time > 0 else 0.0
        remaining = (self.total_steps - done) / rate if rate > 0 else float("inf")
        if self.max_seconds:
            remaining = min(remaining, max(0.0, self.max_seconds - elapsed))
        loss = (logs or {}).get("loss")
        loss_text = f"loss {float(loss):.5g}, " if loss is not None else ""
        eta = _duration(remaining) if math.isfinite(remaining) else "?"
        log.info("%s: step %d/%d, %s%.3g steps/s, elapsed %s, ETA %s", self.label, done, self.total_steps,
                 loss_text, rate, _duration(elapsed), eta)
        self.lines += 1


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(summary, indent=1))


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``summary.json`` of a finished run (steps, seconds, why it stopped, CPU); empty if there is none."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class _StopSignals:
    """While training: SIGTERM and SIGINT ask the run to stop after the step in progress (a second SIGINT
    interrupts at once, as usual). Only in the main thread; the previous handlers come back afterwards."""

    def __init__(self, logger: RunLogger):
        self.logger = logger
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.logger.stop_signal:
            raise KeyboardInterrupt
        if not self.logger.stop_signal:
            self.logger.stop_signal = name
            log.warning("%s received: stopping after the step in progress and writing a checkpoint", name)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


def fit(model: keras.Model, train_ds, epochs: int, steps_per_epoch: int | None, run_dir: Path,
        initial_epoch: int = 0, val_ds=None, val_steps: int | None = None, verbose: int | str = "auto",
        is_chief: bool = True, max_minutes: float = 0.0, log_seconds: float = 30.0,
        label: str = "training", checkpoint_every_steps: int = 0, on_nan: str = "stop",
        plot_loss: Callable[[Path, Path], Any] | None = None) -> keras.callbacks.History:
    """``model.fit`` with the run's callbacks; raises :class:`NonFiniteLossError` on NaN/Inf (``on_nan="stop"``)
    or skips such steps (``"skip"``: the update is not applied, the count goes to ``summary.json``).

    ``train_ds``: a dataset, or a factory ``position -> dataset`` giving the training stream from ``position``
    optimizer steps on (the run's stream is one endless stream over all epochs). After :func:`load_checkpoint` on
    ``model``, a factory is started at the checkpoint's position and an epoch cut short resumes at its next step:
    the run then goes on exactly as if never interrupted. A plain dataset starts from its beginning.

    ``checkpoint_every_steps`` > 0 also writes a checkpoint every that many steps (besides every epoch's end).
    SIGTERM/SIGINT stop the run after the step in progress with a checkpoint (``summary.json``: ``signal …``).
    ``verbose="auto"``: Keras' progress bar on a terminal, else :class:`ProgressLog` lines every ``log_seconds``.
    ``max_minutes`` > 0 stops the run when that wall time is spent (:class:`TimeBudget`). Writes ``summary.json``
    (steps done, seconds, why it stopped, CPU) into ``run_dir``."""
    from utils.machine import cpu_description

    run_dir = Path(run_dir)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0
    start = _RESUMED.pop(id(model), None)
    if start is not None and int(start["epoch"]) != int(initial_epoch):
        start = None  # the caller chose another starting point
    offset = int(start["step_in_epoch"]) if start else 0
    if steps_per_epoch and offset >= steps_per_epoch:
        offset = 0
        start = {**start, "step_in_epoch": 0}
    if callable(train_ds) and not isinstance(train_ds, keras.utils.PyDataset):
        make_ds = train_ds
        position = int(start["batches"]) if start and start.get("batches") is not None else 0
    else:
        make_ds, position = (lambda skip: train_ds), 0
        if offset:  # a plain dataset cannot be positioned: the cut epoch starts again (as before)
            offset, start = 0, {**start, "step_in_epoch": 0, "metrics": None}
    nan_guard.attach(model)
    logger = RunLogger(run_dir, save=is_chief, steps_per_epoch=steps_per_epoch, every=checkpoint_every_steps,
                       on_nan=on_nan, start=start, plot_loss=plot_loss)
    logger.batches = position
    logger._last_saved = position
    callbacks: list[keras.callbacks.Callback] = [logger]
    budget = None
    if max_minutes and max_minutes > 0:
        budget = TimeBudget(60.0 * max_minutes, logger, steps_per_epoch)
        callbacks.append(budget)
    if verbose != 1 and steps_per_epoch:
        callbacks.append(ProgressLog(label, (epochs - initial_epoch) * steps_per_epoch - offset, log_seconds,
                                     60.0 * max_minutes))
    if is_chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False))
    first_step, first_skipped, begin = optimizer_steps(model), logger.nan_skipped, time.time()
    common = dict(validation_data=val_ds, shuffle=False, validation_steps=val_steps or None, callbacks=callbacks,
                  verbose=verbose)
    history = None
    with _StopSignals(logger):
        if offset and steps_per_epoch and initial_epoch < epochs:
            # the rest of the cut epoch, then the epochs after it (Keras runs steps_per_epoch steps per epoch)
            log.info("resuming epoch %d at step %d of %d", initial_epoch + 1, offset + 1, steps_per_epoch)
            history = model.fit(make_ds(position), epochs=initial_epoch + 1, initial_epoch=initial_epoch,
                                steps_per_epoch=steps_per_epoch - offset, **common)
            position += steps_per_epoch - offset
            initial_epoch += 1
        if initial_epoch < epochs and not (history is not None and model.stop_training):
            more = model.fit(make_ds(position), epochs=epochs, initial_epoch=initial_epoch,
                             steps_per_epoch=steps_per_epoch or None, **common)
            if history is not None:
                for key, values in more.history.items():
                    history.history.setdefault(key, []).extend(values)
                history.epoch += more.epoch
            else:
                history = more
    if logger.non_finite:
        raise NonFiniteLossError(
            f"training stopped: {logger.non_finite}. The last good checkpoint is kept in "
            f"{run_dir / 'checkpoints'} (resume with --resume {run_dir} after lowering the learning rate, or set "
            "train.on_nan: skip to skip such steps)."
        )
    seconds = time.time() - begin
    steps = optimizer_steps(model)
    stopped = (f"signal {logger.stop_signal}" if logger.stop_signal
               else "time budget" if budget is not None and budget.stopped else "finished")
    summary = {"stopped": stopped, "steps": steps, "steps_this_run": steps - first_step,
               "planned_steps": epochs * (steps_per_epoch or 0), "seconds": round(seconds, 2),
               "max_minutes": max_minutes, "nan_skipped": logger.nan_skipped,
               "nan_skipped_this_run": logger.nan_skipped - first_skipped, "cpu": cpu_description()}
    if is_chief:
        save_weights_atomic(model, run_dir / WEIGHTS_NAME)
        write_summary(run_dir, summary)
    log.info("%s: %s after %d optimizer steps (%d in this run) in %s", label, summary["stopped"], steps,
             steps - first_step, _duration(seconds))
    if logger.stop_signal:
        log.info("%s: checkpoint written; continue with --resume %s", label, run_dir)
    return history if history is not None else keras.callbacks.History()
