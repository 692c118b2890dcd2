"""Checkpoints and weight files of a run folder: checksummed atomic checkpoints with a previous one to fall back
on, checked weight loading, and the free-space check before training (the layout is described in
:mod:`utils.training`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from utils.io import atomic_path, atomic_write_bytes, atomic_write_text, fsync_file, sha256_file

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.weights.h5"


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


def metric_variables(model: keras.Model) -> list:
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
    return {f"m{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(metric_variables(model))}


def restore_metrics(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    variables = metric_variables(model)
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


_RESUMED: dict[int, dict[str, Any]] = {}  # model id -> position of its loaded checkpoint


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


def pop_resume_position(model: keras.Model) -> dict[str, Any] | None:
    """The checkpoint position :func:`load_checkpoint` recorded for ``model`` (once; None when none)."""
    return _RESUMED.pop(id(model), None)
