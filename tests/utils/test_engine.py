"""The one training engine (utils/engine.py): network + objective, weights of the network, hooks."""
from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from utils.engine import Engine, Objective, unpack_inputs, weights_owner


class Affine(keras.Model):
    """y = w * x + b on real inputs: a network small enough to check the engine's arithmetic by hand."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")

    def build(self, input_shape=None):
        self.dense.build((None, 1))
        self.built = True

    def call(self, x, training=None):
        return self.dense(x)


class SquaredError(Objective):
    loss_names = ("loss", "mean_prediction")

    def __init__(self, decay: float = 0.0, schedule=None):
        self.decay, self.schedule = decay, schedule

    def losses(self, network, batch, seed, training):
        prediction = network(batch["x"], training=training)
        return {"loss": tf.reduce_mean((prediction - batch["t"]) ** 2), "mean_prediction": tf.reduce_mean(prediction)}

    def infer(self, network, inputs, training=None):
        return network(inputs["x"], training=training)

    def adjust_gradients(self, grads, variables, optimizer):
        return [g + self.decay * v for g, v in zip(grads, variables)]

    def learning_rate(self, peak):
        return self.schedule(peak) if self.schedule else peak


def _batch():
    return {"x": tf.constant([[1.0], [2.0]]), "t": tf.constant([[3.0], [5.0]])}


def test_train_step_is_sgd_on_the_objective_with_its_gradient_hook():
    # loss = mean((w x + b - t)^2) at w = 1, b = 0: predictions 1, 2; residuals -2, -3
    # dL/dw = mean(2 r x) = (2*-2*1 + 2*-3*2) / 2 = -8, dL/db = mean(2 r) = -5; decay 0.5 adds 0.5 * (w, b)
    engine = Engine(Affine(), SquaredError(decay=0.5))
    engine.build_all()
    engine.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = engine.train_step(_batch())
    assert float(logs["loss"]) == pytest.approx(6.5) and float(logs["mean_prediction"]) == pytest.approx(1.5)
    w, b = (float(np.ravel(v)[0]) for v in engine.network.dense.weights)
    assert w == pytest.approx(1.0 - 0.1 * (-8.0 + 0.5 * 1.0)) and b == pytest.approx(0.0 - 0.1 * (-5.0 + 0.0))
    assert float(engine.test_step(_batch())["loss"]) >= 0  # the trackers are the objective's loss names
    assert [m.name for m in engine.metrics] == ["loss", "mean_prediction"]


def test_non_finite_step_is_not_applied_when_guarded():
    from utils import nan_guard

    engine = Engine(Affine(), SquaredError())
    engine.build_all()
    engine.compile(optimizer=keras.optimizers.SGD(0.1))
    counter = nan_guard.attach(engine)
    before = [v.numpy().copy() for v in engine.trainable_variables]
    engine.train_step({"x": tf.constant([[np.nan]]), "t": tf.constant([[1.0]])})
    assert int(counter.numpy()) == 1
    for a, b in zip(before, engine.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_objective_learning_rate_becomes_the_optimizers_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay
    engine = Engine(Affine(), SquaredError(schedule=lambda peak: schedule(peak, decay_steps=1, decay_rate=0.5)))
    engine.build_all()
    engine.compile(optimizer=keras.optimizers.Adam(0.2))
    assert float(engine.optimizer.learning_rate) == pytest.approx(0.2)
    engine.train_step(_batch())
    assert float(engine.optimizer.learning_rate) == pytest.approx(0.1)
    scaled = Engine(Affine(), SquaredError(schedule=lambda peak: schedule(peak, decay_steps=1, decay_rate=0.5)))
    scaled.build_all()
    scaled.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.2)))
    assert isinstance(scaled.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaled.optimizer.inner_optimizer.get_config()["learning_rate"], dict)  # a schedule


def test_weights_file_is_the_networks_whatever_the_objective(tmp_path):
    engine = Engine(Affine(), SquaredError())
    engine.build_all()
    engine.compile(optimizer=keras.optimizers.Adam(0.1))
    engine.train_step(_batch())
    engine.save_weights(tmp_path / "engine.weights.h5")
    engine.network.save_weights(tmp_path / "network.weights.h5")
    with h5py.File(tmp_path / "engine.weights.h5") as a, h5py.File(tmp_path / "network.weights.h5") as b:
        assert sorted(a.keys()) == sorted(b.keys()) and "optimizer" not in a
    other = Affine()
    other.build()
    other.load_weights(tmp_path / "engine.weights.h5")
    for x, y in zip(other.weights, engine.network.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert weights_owner(engine) is engine.network and weights_owner(other) is other


def test_bad_objectives_and_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="objective: expected an Objective"):
        Engine(Affine(), object())

    class Forgetful(SquaredError):
        def losses(self, network, batch, seed, training):
            return {"loss": super().losses(network, batch, seed, training)["loss"]}

    engine = Engine(Affine(), Forgetful())
    engine.build_all()
    with pytest.raises(ValueError, match=r"Forgetful.losses returned no \['mean_prediction'\]"):
        engine.compute_losses(_batch(), training=False)
    with pytest.raises(ValueError, match=r"inputs: missing keys \['mask'\]"):
        unpack_inputs({"x": 1, "y": 2, "coil_maps": 3})


def test_step_seed_changes_every_step_and_is_fixed_in_validation():
    engine = Engine(Affine(), SquaredError(), seed=7)
    engine.build_all()
    engine.compile(optimizer=keras.optimizers.SGD(0.0))
    first = engine.step_seed(True).numpy()
    engine.train_step(_batch())
    assert first.tolist() == [7, 0] and engine.step_seed(True).numpy().tolist() == [7, 1]
    assert engine.step_seed(False).numpy().tolist() == [7, -1]
