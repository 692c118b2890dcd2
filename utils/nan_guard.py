"""Non-finite steps are never applied: the one-line hook every ``train_step`` calls instead of
``optimizer.apply_gradients``.

:func:`apply_finite_gradients` applies the update only when the loss and every gradient are finite (with a
``LossScaleOptimizer`` only the loss is checked: overflowing scaled gradients are its own business, it lowers the
scale and skips the step itself). A skipped step leaves weights, optimizer moments and the iteration counter as
they were and adds one to the model's skip counter, which :class:`utils.training.RunLogger` reads after every step
(with ``skip`` it also puts back what the step's forward pass changed: non-trainable variables such as BatchNorm
statistics, and the running loss means):
``train.on_nan: stop`` ends the run keeping the last good checkpoint, ``skip`` goes on and counts the step in
``summary.json``.

The counter is a variable created by :func:`attach` (called by :func:`utils.training.fit` before Keras traces the
step) and kept outside the model, so weight files do not change. Models without a counter (a bare
``model.fit``), and data-parallel training with more than one replica, apply every update as before (the guard
is single-replica: a per-replica decision would make the replicas' collectives disagree).
"""
from __future__ import annotations

import weakref

import keras
import tensorflow as tf

_COUNTERS: dict[int, tf.Variable] = {}


def attach(model: keras.Model) -> tf.Variable | None:
    """The skip counter of ``model`` (created on first use; None when the guard is off for it). If the model's
    train function was traced before the counter existed, it is dropped so that the next ``fit`` traces again."""
    key = id(model)
    if key in _COUNTERS:
        return _COUNTERS[key]
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1:
        return None
    counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="non_finite_steps")
    _COUNTERS[key] = counter
    weakref.finalize(model, _COUNTERS.pop, key, None)
    if getattr(model, "train_function", None) is not None:
        model.train_function = None
    return counter


def skipped_steps(model: keras.Model) -> int:
    """Non-finite steps skipped so far by ``model`` (0 when it has no counter)."""
    counter = _COUNTERS.get(id(model))
    return int(counter.numpy()) if counter is not None else 0


def apply_finite_gradients(model: keras.Model, grads_and_vars, loss) -> None:
    """``model.optimizer.apply_gradients(grads_and_vars)`` if ``loss`` and the gradients are finite, else nothing
    but ``skip counter += 1``. Pairs whose gradient is None are dropped."""
    pairs = [(g, v) for g, v in grads_and_vars if g is not None]
    counter = _COUNTERS.get(id(model))
    if counter is None:
        model.optimizer.apply_gradients(pairs)
        return
    checks = [tf.reduce_all(tf.math.is_finite(tf.cast(loss, tf.float32)))]
    if not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        for g, _ in pairs:
            g = tf.convert_to_tensor(g)
            g = tf.math.abs(g) if g.dtype.is_complex else g
            checks.append(tf.reduce_all(tf.math.is_finite(tf.cast(g, tf.float32))))
    finite = tf.reduce_all(tf.stack(checks))

    def apply():
        model.optimizer.apply_gradients(pairs)
        return tf.constant(0, tf.int64)

    def skip():
        counter.assign_add(1)
        return tf.constant(1, tf.int64)

    tf.cond(finite, apply, skip)
