"""Small shared test helpers: random complex data, float64 inner products, golden comparisons, layer checks."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

# Tolerances agreed for the golden fixtures (fixtures README): images/features 1e-5, loss values 1e-4 relative.
GOLDEN_RTOL = GOLDEN_ATOL = 1e-5
LOSS_RTOL = 1e-4


def random_complex(rng: np.random.Generator, shape: Sequence[int], dtype=np.complex64) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def random_mask(rng: np.random.Generator, shape: Sequence[int], binary: bool = True) -> np.ndarray:
    """Real mask; non-binary masks check that the operators do not rely on mask**2 == mask."""
    if binary:
        mask = (rng.random(shape) > 0.5).astype(np.float32)
        mask.flat[0] = 1.0  # never an all-zero mask, which would make adjointness checks vacuous
        return mask
    return rng.uniform(0.0, 2.0, shape).astype(np.float32)


def cdot(a, b) -> complex:
    """Complex inner product <a, b> = sum(conj(a) * b), accumulated in complex128."""
    a = np.asarray(a).astype(np.complex128).ravel()
    b = np.asarray(b).astype(np.complex128).ravel()
    return complex(np.vdot(a, b))


def tiny_recon_yaml(root, masks, size: Sequence[int] = (4, 24, 16, 2)) -> str:
    """Stage-2 YAML of a tiny synthetic run (5 subjects, one unrolled iteration, 4 UNet filters) for CLI tests;
    ``root`` holds the generated data, ``masks`` the mask cache."""
    t, x, y, c = size
    return (f"stage: recon\ndata:\n  source: synthetic\n  root: {root}\n  size: [{t}, {x}, {y}, {c}]\n"
            f"  subjects: 5\n  seed: 0\n  mask_cache: {masks}\nmodel:\n  num_iter: 1\n  filters: 4\n")


def max_abs_error(actual, expected) -> float:
    return float(np.max(np.abs(np.asarray(actual).astype(np.complex128) - np.asarray(expected))))


def assert_golden(actual, expected, name: str, rtol: float = GOLDEN_RTOL, atol: float = GOLDEN_ATOL) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != golden {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                               err_msg=f"{name}: max abs error {max_abs_error(actual, expected):.3g}")


def assert_loss_close(actual, expected, name: str, rtol: float = LOSS_RTOL) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=0, err_msg=name)


def _spec(value) -> tf.TensorSpec:
    # Every axis but the channel axis unknown: the layers must not depend on static spatial sizes.
    value = tf.convert_to_tensor(value)
    return tf.TensorSpec([None] * (value.shape.rank - 1) + [value.shape[-1]], value.dtype)


def check_layer(layer: keras.layers.Layer, inputs: Sequence, *, num_weights: int, tmp_path: Path,
                num_trainable: int | None = None, rtol: float = 1e-6, atol: float = 1e-6) -> np.ndarray:
    """The contract every Keras layer of the project must meet; returns the eager output.

    * weight count (and trainable count);
    * ``from_config(get_config())`` builds an equivalent layer (same config, same outputs with the same weights);
    * eager and ``tf.function`` (unknown T, X, Y: ``input_signature`` with None dims) give the same outputs;
    * a functional ``keras.Model`` around the layer survives ``.keras`` save/load with equal outputs and weights.

    Weights are set to random non-default values first, so a save/load or clone that silently re-initialises
    (e.g. ModReLU biases at 0) cannot pass.
    """
    inputs = [tf.convert_to_tensor(v) for v in inputs]
    layer(*inputs)  # build
    assert len(layer.weights) == num_weights, [w.path for w in layer.weights]
    if num_trainable is not None:
        assert len(layer.trainable_weights) == num_trainable, [w.path for w in layer.trainable_weights]
    rng = np.random.default_rng(1234)
    for w in layer.weights:
        # positive values satisfy the NonNeg constraints of tau/DC weights and keep ModReLU away from its kink
        w.assign(rng.uniform(0.05, 0.5, tuple(w.shape)).astype(w.dtype))
    eager = np.asarray(layer(*inputs))

    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(*inputs)), eager, rtol=rtol, atol=atol, err_msg="from_config")

    graph_fn = tf.function(lambda *args: layer(*args), input_signature=[_spec(v) for v in inputs])
    np.testing.assert_allclose(np.asarray(graph_fn(*inputs)), eager, rtol=rtol, atol=atol, err_msg="tf.function")

    symbolic = [keras.Input(shape=(None,) * (v.shape.rank - 2) + (v.shape[-1],), dtype=v.dtype.name,
                            batch_size=None) for v in inputs]
    model = keras.Model(symbolic, layer(*symbolic))
    path = tmp_path / f"{layer.name}.keras"
    with warnings.catch_warnings():
        # Keras 3.15 itself calls np.array(tensor, copy=False) while saving; NumPy 2 warns about it.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        model.save(path)
    loaded = keras.models.load_model(path)
    loaded_out = loaded(inputs if len(inputs) > 1 else inputs[0])
    np.testing.assert_allclose(np.asarray(loaded_out), eager, rtol=rtol, atol=atol, err_msg=".keras save/load")
    assert len(loaded.weights) == num_weights
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.path)
    return eager


def feature_loss(model, data, training: bool):
    """Stage 1's training loss of a FeatureNet on a ``{"views": [...]}`` batch (the engine's objective)."""
    from feature_learning.model import FeatureObjective

    return FeatureObjective(model.method).losses(model, data, None, training)["loss"]


def ssl_losses(model, data):
    """(img_loss, ksp_loss, x1, x2) of an SSFLRecon network on a batch of paired views (the engine's objective)."""
    from reconstruction.model import SSFLObjective

    return SSFLObjective().reconstructions(model, data)
