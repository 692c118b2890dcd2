"""Per-epoch weight files, as the original writes them: ``weights{epoch:03d}`` after every epoch.

The original training scripts (``utils/callbacks.py`` of midas-tum/SSFL-Recon) add a ``ModelCheckpoint`` with
``filepath=logdir + '/weights{epoch:03d}.tf'``, ``save_weights_only=True`` and ``save_freq='epoch'``: every epoch
leaves a TF checkpoint numbered from 1, and stage 2 loads one of them (``experiments/weights020.tf``, the FE of
epoch 20). :class:`EpochWeights` does the same with Keras weight files, ``weights{epoch:03d}.weights.h5`` in the run
folder, so ``train.pretrained_fe: <stage-1 run>/weights020.weights.h5`` picks the FE of epoch 20
(:func:`utils.weights.load_weights` accepts any ``.weights.h5`` file).

The files hold what the run's final ``model.weights.h5`` holds: :func:`utils.engine.weights_owner` of the trained
model (the network of an :class:`~utils.engine.Engine`), so an epoch file and the final file load the same way.
Each file is written to a temporary name and renamed into place (:func:`utils.io.atomic_path`): a killed run never
leaves a truncated ``weightsNNN`` file. Epochs whose logged losses are not finite are not written (the NaN guard of
:mod:`utils.training` stops or skips such runs; their weights are of no use). An epoch cut short (time budget,
SIGTERM) is written too, and overwritten when a resumed run finishes that epoch.
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import keras

from utils.engine import weights_owner
from utils.io import atomic_path

log = logging.getLogger(__name__)

__all__ = ["EPOCH_WEIGHTS_PATTERN", "EpochWeights", "epoch_weights_path", "find_epoch_weights", "list_epoch_weights"]

EPOCH_WEIGHTS_PATTERN = "weights{epoch:03d}.weights.h5"
_EPOCH_FILE = re.compile(r"^weights(\d{3,})\.weights\.h5$")


def epoch_weights_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``<run_dir>/weights{epoch:03d}.weights.h5`` for the 1-based ``epoch``."""
    if isinstance(epoch, bool) or int(epoch) < 1:
        raise ValueError(f"epoch: expected a 1-based epoch number >= 1, got {epoch!r}")
    return Path(run_dir) / EPOCH_WEIGHTS_PATTERN.format(epoch=int(epoch))


def list_epoch_weights(run_dir: str | os.PathLike) -> dict[int, Path]:
    """The per-epoch weight files of a run folder, ``{epoch: path}`` in epoch order (empty when there are none)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {}
    found = {}
    for entry in run_dir.iterdir():
        match = _EPOCH_FILE.match(entry.name)
        if match and entry.is_file():
            found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


def find_epoch_weights(run_dir: str | os.PathLike, epoch: int) -> Path:
    """The weight file of ``epoch`` (1-based) in ``run_dir``; FileNotFoundError listing the epochs that exist."""
    path = epoch_weights_path(run_dir, epoch)
    if path.is_file():
        return path
    have = list(list_epoch_weights(run_dir))
    listing = f"epochs {have[0]}..{have[-1]} ({len(have)} files)" if have else "no per-epoch weight files"
    raise FileNotFoundError(f"{path}: no weights of epoch {epoch}; {run_dir} has {listing} "
                            f"(written when train.save_every_epoch is true)")


class EpochWeights(keras.callbacks.Callback):
    """Writes the network's weights after every ``every``-th epoch as ``weights{epoch:03d}.weights.h5``.

    Args:
        run_dir: the run folder.
        every: write after epochs ``every, 2 * every, ...`` (1-based; 1 = every epoch, like the original).
        keep_last: keep only the newest ``keep_last`` files of this folder (0 = keep all, like the original).
        is_chief: only the chief writes (``tf.distribute`` workers share the folder).
    """

    def __init__(self, run_dir: str | os.PathLike, every: int = 1, keep_last: int = 0, is_chief: bool = True):
        super().__init__()
        if isinstance(every, bool) or int(every) < 1:
            raise ValueError(f"every: expected an integer >= 1, got {every!r}")
        if isinstance(keep_last, bool) or int(keep_last) < 0:
            raise ValueError(f"keep_last: expected an integer >= 0 (0 = keep all), got {keep_last!r}")
        self.run_dir = Path(run_dir)
        self.every = int(every)
        self.keep_last = int(keep_last)
        self.is_chief = bool(is_chief)
        self.written: list[Path] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        number = epoch + 1  # Keras counts from 0, the original's file names from 1
        if not self.is_chief or number % self.every:
            return
        bad = sorted(k for k, v in (logs or {}).items() if _is_number(v) and not math.isfinite(float(v)))
        if bad:
            log.warning("epoch %d: %s not finite; weights%03d not written", number, bad, number)
            return
        path = epoch_weights_path(self.run_dir, number)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            weights_owner(self.model).save_weights(str(tmp))
        self.written.append(path)
        log.debug("epoch %d: weights written to %s", number, path)
        if self.keep_last:
            self._prune()

    def _prune(self) -> None:
        files = list_epoch_weights(self.run_dir)
        for old in list(files)[:-self.keep_last]:
            try:
                files[old].unlink()
            except FileNotFoundError:  # removed meanwhile; nothing to do
                pass


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
