"""Run folders, checkpoints, logging callbacks and the NaN guard shared by both training stages.

A run folder holds:

* ``config.yaml``: the resolved config.
* ``checkpoints/last.weights.h5`` (Keras weights), ``checkpoints/last.optimizer.npz`` (optimizer variables,
  including its iteration counter) and ``checkpoints/state.json`` (epoch, loss); all written atomically, the
  state file last, so an interrupted save leaves the previous checkpoint intact.
* ``weights.h5`` → final weights (``model.weights.h5``), ``loss.csv``, ``loss.png`` and ``logs/`` (TensorBoard).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
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
    """Per epoch: NaN guard, atomic checkpoint, ``loss.csv`` and ``loss.png``; progress lines with elapsed time."""

    def __init__(self, run_dir: Path, save: bool = True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.save = save
        self.non_finite: str | None = None
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
        save_checkpoint(self.run_dir, self.model, epoch + 1, logs)
        rows = [r for r in self._rows() if int(r["epoch"]) <= epoch]
        rows.append({"epoch": epoch + 1, **logs})
        keys = ["epoch"] + sorted({k for r in rows for k in r if k != "epoch"})
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
        log.info("epoch %d done (%s) — %.1f s elapsed", epoch + 1,
                 ", ".join(f"{k}={v:.5g}" for k, v in logs.items()), time.time() - self._start)


def fit(model: keras.Model, train_ds, epochs: int, steps_per_epoch: int | None, run_dir: Path,
        initial_epoch: int = 0, val_ds=None, val_steps: int | None = None, verbose: int | str = "auto",
        is_chief: bool = True) -> keras.callbacks.History:
    """``model.fit`` with the run's callbacks; raises :class:`NonFiniteLossError` on NaN/Inf."""
    logger = RunLogger(run_dir, save=is_chief)
    callbacks = [logger]
    if is_chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False))
    history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch or None,
                        initial_epoch=initial_epoch, validation_data=val_ds,
                        validation_steps=val_steps or None, callbacks=callbacks, verbose=verbose)
    if logger.non_finite:
        raise NonFiniteLossError(
            f"training stopped: {logger.non_finite}. The last good checkpoint is kept in "
            f"{run_dir / 'checkpoints'} (resume with --resume {run_dir} after lowering the learning rate)."
        )
    if is_chief:
        save_weights_atomic(model, run_dir / WEIGHTS_NAME)
    return history
