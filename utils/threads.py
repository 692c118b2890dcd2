"""CPU thread pools of the TensorFlow runtime for a training step (config key ``train.threads``).

TensorFlow gives every op up to ``intra`` threads and runs up to ``inter`` ops at once, both the number of cores by
default. A self-supervised step holds two or three views that pass through the network independently, so on a CPU
the views' ops run side by side and each asks for every core: the cores are oversubscribed. ``auto`` gives each
view its share instead (``intra = cores // views``, ``inter = max(cores, views)``) when no GPU is visible; with a
GPU, with one view, or under XLA (``train.jit_compile``), TensorFlow's defaults stay. The README ("Speed") has the measured effect on the 2-core CI
machine; inference of one example (one stream) is faster with TensorFlow's defaults, so ``reconstruct`` and
``evaluate`` never change them.

Settings: ``auto``; ``tf`` (TensorFlow's defaults); ``"INTRA,INTER"`` (non-negative integers, 0 = TensorFlow's
default for that pool). The pools can only be set before TensorFlow runs its first op; later requests (e.g. a
second run in one Python process) keep the current pools and log a warning.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def parse(setting: str, name: str = "train.threads") -> tuple[int, int] | str:
    """``"auto"``/``"tf"`` as they are, ``"I,J"`` as (I, J); ValueError naming the setting (``name``) otherwise."""
    text = str(setting).strip().lower()
    if text in ("auto", "tf"):
        return text
    parts = text.split(",")
    try:
        intra, inter = (int(p) for p in parts)
    except ValueError:
        intra = inter = -1
    if len(parts) != 2 or intra < 0 or inter < 0:
        raise ValueError(f"{name}: expected 'auto', 'tf' or 'INTRA,INTER' (two non-negative integers, "
                         f"0 = TensorFlow's default), got {setting!r}")
    return intra, inter


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve(setting: str, streams: int, cores: int | None = None, has_gpu: bool | None = None) -> tuple[int, int]:
    """(intra, inter) for ``setting`` and ``streams`` independent views per step (0 = TensorFlow's default)."""
    parsed = parse(setting)
    if parsed == "tf":
        return 0, 0
    if parsed != "auto":
        return parsed
    cores = cores or os.cpu_count() or 1
    if streams <= 1 or (_has_gpu() if has_gpu is None else has_gpu):
        return 0, 0
    return max(1, cores // streams), max(cores, streams)


def training_streams(views: int, jit_compile: bool) -> int:
    """Independent streams of a training step: its views, or 1 under XLA (one compiled cluster that parallelises
    inside itself with the intra-op threads; splitting the cores made it 2x slower in our benchmark)."""
    return 1 if jit_compile else views


def configure(setting: str, streams: int) -> dict[str, int]:
    """Sets TensorFlow's CPU thread pools for ``setting`` (see module docstring); returns the pools in use
    (0 = TensorFlow's default)."""
    import tensorflow as tf

    intra, inter = resolve(setting, streams)
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    if (intra, inter) != current:
        try:
            threading.set_intra_op_parallelism_threads(intra)
            threading.set_inter_op_parallelism_threads(inter)
        except RuntimeError:
            log.warning("train.threads=%s asks for intra=%d, inter=%d but TensorFlow is already running; keeping "
                        "intra=%d, inter=%d (0 = default)", setting, intra, inter, *current)
            intra, inter = current
    if intra or inter:
        log.info("CPU thread pools: intra-op %s, inter-op %s", intra or "default", inter or "default")
    return {"intra_op_threads": intra, "inter_op_threads": inter}
