"""Run folders, checkpoints, logging callbacks and the NaN guard shared by both training stages.

A run folder holds:

* ``config.yaml``: the resolved config.
* ``checkpoints/last.weights.h5`` (Keras weights), ``checkpoints/last.optimizer.npz`` (optimizer variables,
  including its iteration counter) and ``checkpoints/state.json`` (epoch, loss); all written atomically, the
  state file last, so an interrupted save leaves the previous checkpoint intact.
* ``model.weights.h5`` (final weights), ``loss.csv`` (per epoch, with the optimizer step count), ``loss.png``,
  ``logs/`` (TensorBoard) and ``summary.json`` (steps done, seconds, ``finished`` or ``time budget``, CPU).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from utils.io import atomic_path, atomic_savez, atomic_write_text

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.weights.h5"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the last good checkpoint is kept."""


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
    except OSError as err:
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
    if len(state) != len(optimizer.variables):
        raise ValueError(f"{source}: optimizer state has {len(state)} arrays, the optimizer has "
                         f"{len(optimizer.variables)} variables (different model or optimizer?)")
    for i, var in enumerate(optimizer.variables):
        value = state[f"v{i:04d}"]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{source}: optimizer variable {i} ({var.path}) has shape {tuple(var.shape)}, the "
                             f"checkpoint has {tuple(value.shape)}")
        var.assign(value)


def save_checkpoint(run_dir: Path, model: keras.Model, epoch: int, logs: dict[str, float]) -> None:
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    save_weights_atomic(model, ckpt / "last.weights.h5")
    atomic_savez(ckpt / "last.optimizer.npz", **optimizer_state(model.optimizer))
    atomic_write_text(ckpt / "state.json", json.dumps({"epoch": epoch, "logs": logs, "time": time.time()}))


def load_checkpoint(run_dir: Path, model: keras.Model) -> int:
    """Restores weights and optimizer state of ``run_dir``; returns the number of finished epochs."""
    ckpt = Path(run_dir) / "checkpoints"
    state_file = ckpt / "state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"--resume {str(run_dir)!r}: no checkpoint found (expected {state_file})")
    state = json.loads(state_file.read_text())
    model.load_weights(str(ckpt / "last.weights.h5"))
    with np.load(ckpt / "last.optimizer.npz") as data:
        restore_optimizer(model.optimizer, model.trainable_variables, {k: data[k] for k in data.files},
                          str(ckpt / "last.optimizer.npz"))
    return int(state["epoch"])


class RunLogger(keras.callbacks.Callback):
    """Per epoch: NaN guard, atomic checkpoint, ``loss.csv`` and ``loss.png``; progress lines with elapsed time.

    An epoch cut short by the time budget is logged and checkpointed as well; its checkpoint counts only the
    finished epochs, so ``--resume`` starts that epoch again (with the optimizer's step counter restored)."""

    def __init__(self, run_dir: Path, save: bool = True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.save = save
        self.non_finite: str | None = None
        self.partial_epoch = False  # set by TimeBudget when it stops inside an epoch
        self._start = time.time()
        self.csv_path = self.run_dir / "loss.csv"

    def _rows(self) -> list[dict[str, Any]]:
        if not self.csv_path.is_file():
            return []
        with open(self.csv_path, newline="") as fh:
            return list(csv.DictReader(fh))

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.non_finite = f"loss became {float(loss)} at batch {batch}"
            self.model.stop_training = True

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
        save_checkpoint(self.run_dir, self.model, epoch if self.partial_epoch else epoch + 1,
                        {**logs, "steps": steps})
        rows = [r for r in self._rows() if int(r["epoch"]) <= epoch]
        rows.append({"epoch": epoch + 1, "steps": steps, **logs})
        keys = ["epoch", "steps"] + sorted({k for r in rows for k in r if k not in ("epoch", "steps")})
        with atomic_path(self.csv_path) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
        try:
            from evaluation.figures import save_loss_curves

            save_loss_curves(self.run_dir / "loss.png", self.csv_path)
        except Exception as err:  # a plotting problem must not stop training
            log.warning("could not draw loss.png: %s", err)
        log.info("epoch %d %s (%s) — %.1f s elapsed", epoch + 1, "stopped by the time budget" if self.partial_epoch
                 else "done", ", ".join(f"{k}={v:.5g}" for k, v in logs.items()), time.time() - self._start)


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
        self._start = time.time()

    def on_train_begin(self, logs=None):
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
        while not self._stop.wait(min(1.0, self.every / 4)):
            now = time.time()
            if now - self._last >= self.every:
                self._last = now
                self.lines += 1
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


def fit(model: keras.Model, train_ds, epochs: int, steps_per_epoch: int | None, run_dir: Path,
        initial_epoch: int = 0, val_ds=None, val_steps: int | None = None, verbose: int | str = "auto",
        is_chief: bool = True, max_minutes: float = 0.0, log_seconds: float = 30.0,
        label: str = "training") -> keras.callbacks.History:
    """``model.fit`` with the run's callbacks; raises :class:`NonFiniteLossError` on NaN/Inf.

    ``verbose="auto"``: Keras' progress bar on a terminal, else :class:`ProgressLog` lines every ``log_seconds``.
    ``max_minutes`` > 0 stops the run when that wall time is spent (:class:`TimeBudget`). Writes ``summary.json``
    (steps done, seconds, why it stopped, CPU) into ``run_dir``."""
    from utils.machine import cpu_description

    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0
    logger = RunLogger(run_dir, save=is_chief)
    callbacks: list[keras.callbacks.Callback] = [logger]
    budget = None
    if max_minutes and max_minutes > 0:
        budget = TimeBudget(60.0 * max_minutes, logger, steps_per_epoch)
        callbacks.append(budget)
    if verbose != 1 and steps_per_epoch:
        callbacks.append(ProgressLog(label, (epochs - initial_epoch) * steps_per_epoch, log_seconds,
                                     60.0 * max_minutes))
    if is_chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False))
    first_step, start = optimizer_steps(model), time.time()
    history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch or None,
                        initial_epoch=initial_epoch, validation_data=val_ds, shuffle=False,
                        validation_steps=val_steps or None, callbacks=callbacks, verbose=verbose)
    if logger.non_finite:
        raise NonFiniteLossError(
            f"training stopped: {logger.non_finite}. The last good checkpoint is kept in "
            f"{run_dir / 'checkpoints'} (resume with --resume {run_dir} after lowering the learning rate)."
        )
    seconds = time.time() - start
    steps = optimizer_steps(model)
    summary = {"stopped": "time budget" if budget is not None and budget.stopped else "finished",
               "steps": steps, "steps_this_run": steps - first_step,
               "planned_steps": epochs * (steps_per_epoch or 0), "seconds": round(seconds, 2),
               "max_minutes": max_minutes, "cpu": cpu_description()}
    if is_chief:
        save_weights_atomic(model, run_dir / WEIGHTS_NAME)
        write_summary(run_dir, summary)
    log.info("%s: %s after %d optimizer steps (%d in this run) in %s", label, summary["stopped"], steps,
             steps - first_step, _duration(seconds))
    return history
