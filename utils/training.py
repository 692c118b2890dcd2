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
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from utils import distribute, nan_guard, run_lock, threads
from utils.config import save_config
from utils.epoch_weights import EpochWeights
from utils.checkpoints import (WEIGHTS_NAME, CheckpointError, NonFiniteLossError, RunFolderError,  # noqa: F401
                               check_run_folder, load_checkpoint, load_weights_checked, metric_variables,
                               pop_resume_position, read_checkpoint_state, restore_metrics, save_checkpoint,
                               save_weights_atomic)
from utils.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

ON_NAN = ("stop", "skip")


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
            restore_metrics(self.model, self._resume_metrics)
        self._resume_metrics = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.on_nan == "skip":  # what the forward pass changes: loss means, BatchNorm statistics
            variables = metric_variables(self.model) + list(self.model.non_trainable_variables)
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
        plot_loss: Callable[[Path, Path], Any] | None = None, epoch_weights: bool = False,
        keep_epoch_weights: int = 0) -> keras.callbacks.History:
    """``model.fit`` with the run's callbacks; raises :class:`NonFiniteLossError` on NaN/Inf (``on_nan="stop"``)
    or skips such steps (``"skip"``: the update is not applied, the count goes to ``summary.json``).

    ``train_ds``: a dataset, or a factory ``position -> dataset`` giving the training stream from ``position``
    optimizer steps on (the run's stream is one endless stream over all epochs). After :func:`load_checkpoint` on
    ``model``, a factory is started at the checkpoint's position and an epoch cut short resumes at its next step:
    the run then goes on exactly as if never interrupted. A plain dataset starts from its beginning.

    ``checkpoint_every_steps`` > 0 also writes a checkpoint every that many steps (besides every epoch's end).
    SIGTERM/SIGINT stop the run after the step in progress with a checkpoint (``summary.json``: ``signal …``).
    ``verbose="auto"``: Keras' progress bar on a terminal, else :class:`ProgressLog` lines every ``log_seconds``.
    ``max_minutes`` > 0 stops the run when that wall time is spent (:class:`TimeBudget`). ``epoch_weights``: also
    the network's weights after every epoch as ``weights{epoch:03d}.weights.h5`` (:mod:`utils.epoch_weights`; the
    newest ``keep_epoch_weights``, 0 = all). Writes ``summary.json``
    (steps done, seconds, why it stopped, CPU) into ``run_dir``."""
    from utils.machine import cpu_description

    run_dir = Path(run_dir)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0
    start = pop_resume_position(model)
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
    if is_chief and epoch_weights:
        callbacks.append(EpochWeights(run_dir, keep_last=keep_epoch_weights))
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


# ------------------------------------------------------------------------------------------- a training run
def compile_model(model: keras.Model, cfg: Any) -> None:
    """Adam at ``train.learning_rate`` (a ``LossScaleOptimizer`` around it for float16), built for the model's
    variables so that a checkpoint's optimizer state can be restored before the first step."""
    optimizer = keras.optimizers.Adam(cfg.train.learning_rate)
    if cfg.train.mixed_precision == "float16":  # scale the loss so small float16 gradients do not underflow
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=cfg.train.jit_compile)
    model.optimizer.build(model.trainable_variables)


def steps_for(cfg: Any, num_examples: int, replicas: int = 1) -> int:
    """Optimizer steps per epoch: the configured number, else one pass over the split at the global batch size
    (``replicas`` × batch size)."""
    return cfg.train.steps_per_epoch or max(1, num_examples // max(1, cfg.train.batch_size * replicas))


def start_runtime(cfg: Any, views: int):
    """What a trainer does first, before TensorFlow runs an op (thread pools and ``multi_worker`` need an untouched
    runtime): CPU thread pools for ``views`` independent streams per step, the strategy, and the seed. Returns
    (strategy, whether this process is the chief)."""
    threads.configure(cfg.train.threads, threads.training_streams(views, cfg.train.jit_compile))
    strategy = distribute.get_strategy(cfg.train.distribute)
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(cfg.train.seed)
    return strategy, chief


def start_run(cfg: Any, model: keras.Model, resume: str | None, chief: bool = True) -> tuple[Path, int | None]:
    """Compiles ``model``, restores it on ``--resume`` and writes the config (``chief`` only); returns (run folder,
    first epoch), the epoch being None when the run has already finished. Call it inside the model's strategy
    scope.

    The chief first checks that the folder is writable with room for the checkpoints and takes its lock
    (:mod:`utils.run_lock`: a second process on the same folder stops with an error naming the holder). A resume
    of a folder whose run was killed before its first checkpoint starts at step 0 (with a warning); the exact
    position within an epoch is restored by :func:`load_checkpoint` for :func:`fit`."""
    run_dir = Path(resume or cfg.train.run_dir)
    # killed before its first checkpoint: a resume of the config's own run folder starts at step 0
    own_folder = bool(resume) and run_dir.resolve() == Path(cfg.train.run_dir).resolve()
    if resume and not run_dir.is_dir() and not own_folder:
        raise FileNotFoundError(f"--resume {str(run_dir)!r}: no such run folder")
    if chief:
        check_run_folder(run_dir)
        run_lock.acquire(run_dir)
    compile_model(model, cfg)
    distribute.prepare_for_fit(model)
    if chief:
        check_run_folder(run_dir, model)
    initial_epoch = 0
    if resume:
        has_checkpoint = any((run_dir / "checkpoints" / n).is_file() for n in ("state.json", "prev.state.json"))
        if has_checkpoint or not (own_folder or (run_dir / "config.yaml").is_file()):
            initial_epoch = load_checkpoint(run_dir, model)
        else:
            log.warning("--resume %s: the run stopped before its first checkpoint: starting at step 0", run_dir)
    if initial_epoch >= cfg.train.epochs:
        log.info("run %s already finished %d epochs", run_dir, initial_epoch)
        if chief and not (run_dir / WEIGHTS_NAME).is_file():  # killed between the last checkpoint and the end
            save_weights_atomic(model, run_dir / WEIGHTS_NAME)
        return run_dir, None
    if chief:
        save_config(cfg, run_dir / "config.yaml")
    return run_dir, initial_epoch


def train_engine(cfg: Any, build: Callable[[], keras.Model], dataset: Callable[[str, int], Any],
                 num_train_examples: Callable[[], int], resume: str | None = None, verbose: int | str = "auto",
                 label: str = "training", views: int = 1, before_run: Callable[[keras.Model], Any] | None = None,
                 plot_loss: Callable[[Path, Path], Any] | None = None) -> tuple[Path, keras.Model]:
    """One training run of any method: runtime, strategy scope, run folder, resume, the data streams and
    :func:`fit`. Returns (run folder, trained model).

    Args:
        cfg: the experiment config (``train`` section: epochs, steps, distribution, budget, ...).
        build: returns the built :class:`utils.engine.Engine` (called inside the strategy scope).
        dataset: ``(split, seed) -> tf.data.Dataset`` of per-replica batches for ``"train"`` and ``"val"``.
        num_train_examples: number of training examples (steps per epoch when ``train.steps_per_epoch`` is 0;
            called after the training stream exists, so synthetic data may be generated by then).
        resume: run folder to continue.
        label: name in log lines.
        views: independent network passes per step (sizes the CPU thread pools).
        before_run: called with the built model before compiling (e.g. loading frozen pretrained weights).
        plot_loss: ``(loss.csv, loss.png)`` plotter called after every epoch.
    """
    strategy, chief = start_runtime(cfg, views)
    with distribute.model_scope(strategy):
        model = build()
    if before_run is not None:
        before_run(model)
    with distribute.model_scope(strategy):
        run_dir, initial_epoch = start_run(cfg, model, resume, chief)
    if initial_epoch is None:
        return run_dir, model
    replicas = distribute.replicas(strategy)

    # a resumed run starts the stream where its checkpoint left it (``position`` steps of all replicas)
    def train_ds(position: int):
        return distribute.distribute_dataset(
            strategy, lambda: dataset("train", cfg.train.seed).skip(position * replicas))

    val_ds = None
    if cfg.train.val_steps:
        val_ds = distribute.distribute_dataset(strategy, lambda: dataset("val", cfg.train.seed + 1))
    steps = steps_for(cfg, num_train_examples(), replicas)
    log.info("%s: %d epochs x %d steps, run folder %s", label, cfg.train.epochs, steps, run_dir)
    start = time.time()
    fit(model, train_ds, cfg.train.epochs, steps, run_dir, initial_epoch=initial_epoch, val_ds=val_ds,
        val_steps=distribute.steps_for_examples(cfg.train.val_steps, strategy), verbose=verbose, is_chief=chief,
        max_minutes=cfg.train.max_minutes, log_seconds=cfg.train.log_seconds, label=label,
        checkpoint_every_steps=cfg.train.checkpoint_every_steps, on_nan=cfg.train.on_nan, plot_loss=plot_loss,
        epoch_weights=cfg.train.save_every_epoch, keep_epoch_weights=cfg.train.keep_epoch_weights)
    log.info("%s finished in %.1f s", label, time.time() - start)
    return run_dir, model
