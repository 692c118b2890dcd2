"""The one training engine: a Keras model made of a network and an objective.

Every method of the project trains through :class:`Engine`: FE-Net (stage 1), SSFL-Recon (stage 2) and the
baselines differ only in the *network* (a Keras layer or model holding every weight) and the *objective* (how a
batch becomes losses). The engine owns what a training step needs once for all of them:

* ``train_step``: the objective's losses under a ``GradientTape``, the float16 loss scale of a
  ``LossScaleOptimizer`` (``train.mixed_precision``), the replica share of a ``tf.distribute`` strategy, the
  objective's gradient hook (e.g. decoupled weight decay), and the NaN guard (:func:`utils.nan_guard.
  apply_finite_gradients`: a non-finite step is never applied);
* ``test_step``: the same losses without gradients (validation);
* one ``keras.metrics.Mean`` per loss name, so ``fit`` logs every term;
* the per-step random seed ``(seed, optimizer iterations)`` handed to the objective, so a resumed run (optimizer
  state restored) draws the same masks and transforms as an uninterrupted one.

Recompute (gradient checkpointing) and the convolution dtype are properties of the network's unrolled block
(:mod:`utils.unrolled`), so they too exist once.

Weights: the network is what a weights file holds. :func:`utils.weights.load_weights` and the final
``model.weights.h5`` of a run address ``engine.network``, so a file has the same layout whichever objective
trained it (training checkpoints hold the whole engine and its optimizer).

Adding a method is one :class:`Objective` subclass and one registry row (``reconstruction/methods.py``).
"""
from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from utils.distribute import replica_share
from utils.nan_guard import apply_finite_gradients

PACKAGE = "ssfl_recon"
INPUT_KEYS = ("x", "y", "mask", "coil_maps")


def unpack_inputs(inputs: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(x, y, mask, coil_maps)`` from a dict with those keys or a 4-sequence; ValueError naming what is missing."""
    if isinstance(inputs, dict):
        missing = [k for k in INPUT_KEYS if k not in inputs]
        if missing:
            raise ValueError(f"inputs: missing keys {missing}; expected {list(INPUT_KEYS)}")
        return tuple(inputs[k] for k in INPUT_KEYS)
    if len(inputs) != 4:
        raise ValueError(f"inputs: expected (x, y, mask, coil_maps), received {len(inputs)} tensors")
    return tuple(inputs)


def unwrap_batch(data: Any) -> Any:
    """The batch element ``fit`` hands to a step: Keras wraps a single input in a 1-tuple."""
    if isinstance(data, (tuple, list)) and len(data) == 1:
        return data[0]
    return data


class Objective:
    """How a batch becomes losses. Subclasses set ``loss_names`` (the first is the optimised total, ``"loss"``)
    and implement :meth:`losses`.

    Objectives hold no weights (every trainable variable lives in the network); they may hold Python settings
    and stateless random draws keyed by the ``seed`` the engine passes.
    """

    loss_names: tuple[str, ...] = ("loss",)

    def losses(self, network: keras.layers.Layer, batch: Any, seed: tf.Tensor, training: bool) -> dict[str, Any]:
        """``{"loss": total, <other loss_names>: term, ...}`` for one batch.

        Args:
            network: the engine's network.
            batch: one element of the training (or validation) dataset, Keras' 1-tuple removed.
            seed: (2,) int64 stateless seed of this step's random draws.
            training: True in ``train_step`` (BatchNorm/dropout in training mode), False in ``test_step``.
        """
        raise NotImplementedError

    def infer(self, network: keras.layers.Layer, inputs: Any, training: bool | None = None) -> Any:
        """What ``engine(inputs)`` returns: by default the reconstruction ``network(x, y, mask, coil_maps)``."""
        return network(*unpack_inputs(inputs), training=training)

    def learning_rate(self, peak: float) -> Any:
        """The optimizer's learning rate for a configured ``peak``: a float or a Keras schedule (default: ``peak``)."""
        return peak

    def adjust_gradients(self, grads: Sequence[Any], variables: Sequence[Any],
                         optimizer: keras.optimizers.Optimizer) -> list[Any]:
        """Hook between the tape and the optimizer (default: the gradients unchanged)."""
        return list(grads)

    def get_config(self) -> dict[str, Any]:
        return {"class": type(self).__name__}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Engine(keras.Model):
    """A network trained by an objective.

    Args:
        network: layer or model holding every weight; built by :meth:`build_all` (its own ``build_all()`` when it
            has one, else ``build(None)``).
        objective: an :class:`Objective`.
        seed: seed of the per-step random draws (mask splits, transforms, noise).
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Call: ``engine(inputs)`` = ``objective.infer(network, inputs)`` (a reconstruction, or FE features).
    Training: ``engine.fit`` on the objective's dataset (see the objective's docstring for the batch layout).
    """

    def __init__(self, network: keras.layers.Layer, objective: Objective, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(objective, Objective):
            raise TypeError(f"objective: expected an Objective, received {type(objective).__name__}")
        self.network = network
        self.objective = objective
        self.seed = int(seed)
        self.trackers = [keras.metrics.Mean(name=n) for n in objective.loss_names]

    # --------------------------------------------------------------------------------------------- building
    def build_all(self) -> None:
        """Creates every weight of the network (once)."""
        if not self.network.built:
            if hasattr(self.network, "build_all"):
                self.network.build_all()
            else:
                self.network.build(None)
        self.built = True

    def build(self, input_shape=None):
        self.build_all()

    def call(self, inputs, training=None):
        return self.objective.infer(self.network, inputs, training=training)

    def compile(self, optimizer="adam", **kwargs):
        """``keras.Model.compile`` with the objective's learning rate (:meth:`Objective.learning_rate`, e.g. a
        warm-up + cosine schedule) in place of the optimizer's constant one."""
        optimizer = keras.optimizers.get(optimizer)
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer wraps the real one
        config = inner.get_config()
        if isinstance(config.get("learning_rate"), (int, float)):  # not a schedule already
            rate = self.objective.learning_rate(float(config["learning_rate"]))
            if not isinstance(rate, (int, float)):
                config["learning_rate"] = rate
                rebuilt = type(inner).from_config(config)
                optimizer = keras.optimizers.LossScaleOptimizer(rebuilt) if inner is not optimizer else rebuilt
        super().compile(optimizer=optimizer, **kwargs)

    # ------------------------------------------------------------------------------- weights = the network's
    def save_weights(self, filepath, overwrite=True, **kwargs):
        """Writes the network's weights (the layout does not depend on the objective or on compiling)."""
        return self.network.save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        """Reads a file written by :meth:`save_weights` (or the network's own ``save_weights``)."""
        return self.network.load_weights(filepath, **kwargs)

    # ---------------------------------------------------------------------------------------------- steps
    def step_seed(self, training: bool) -> tf.Tensor:
        """(2,) int64 seed of this step's draws: ``(seed, optimizer iterations)`` in training, a fixed one otherwise
        (validation losses comparable between epochs)."""
        optimizer = getattr(self, "optimizer", None)
        step = optimizer.iterations if (training and optimizer is not None) else -1
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])

    def compute_losses(self, data: Any, training: bool) -> dict[str, Any]:
        """The objective's losses of one batch (checked to name every tracked loss)."""
        losses = self.objective.losses(self.network, unwrap_batch(data), self.step_seed(training), training)
        missing = [n for n in self.objective.loss_names if n not in losses]
        if missing:
            raise ValueError(f"{type(self.objective).__name__}.losses returned no {missing}")
        return losses

    def train_step(self, data):
        with tf.GradientTape() as tape:
            losses = self.compute_losses(data, training=True)
            loss = losses["loss"]
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
            share = replica_share(scaled)  # the optimizer sums the replicas' gradients
        variables = self.trainable_variables
        grads = tape.gradient(share, variables)
        grads = self.objective.adjust_gradients(grads, variables, self.optimizer)
        apply_finite_gradients(self, zip(grads, variables), loss)  # NaN/Inf steps are not applied
        return self._track(losses)

    def test_step(self, data):
        return self._track(self.compute_losses(data, training=False))

    def _track(self, losses: dict[str, Any]) -> dict[str, Any]:
        for tracker in self.trackers:
            tracker.update_state(losses[tracker.name])
        return {t.name: t.result() for t in self.trackers}

    @property
    def metrics(self):
        return list(self.trackers)

    def get_config(self):
        return {**super().get_config(), "network": type(self.network).__name__,
                "objective": self.objective.get_config(), "seed": self.seed}


def weights_owner(model: keras.Model) -> keras.layers.Layer:
    """What a weights file of ``model`` holds: the network of an :class:`Engine`, else the model itself."""
    return model.network if isinstance(model, Engine) else model
