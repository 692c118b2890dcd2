"""``model.numerics: fast`` against ``faithful``: the same layers and weights with reordered float32 arithmetic.

Tolerances (never bit-identity: the fast kernels sum in another order):

* layers on random inputs: max |fast - faithful| <= 1e-5 * max |faithful| (float32 rounding of sums over at most
  a few thousand terms); their gradients within 1e-4 of the largest gradient entry;
* whole networks with the original's (dummy) weights: first-iteration features within 1e-4 of their largest
  magnitude; the final reconstruction at PSNR >= 60 dB against the faithful one. Later iterations' features: a
  near-tie in a max-pooling window turns the ~3e-7 difference of their input into another selected element (the
  fixtures README sees the same between the original's eager and graph modes), so there at most 10 % of the
  elements may move by more than 1e-4 and none by more than 1e-2 of the largest magnitude;
* network gradients (first iteration) within 1e-3 of the largest entry per variable plus 1e-5 of the largest
  entry of the network (convolution biases in front of an instance norm have a zero gradient: rounding noise).
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fixtures_dir, load_golden
from feature_learning.model import FeatureNet
from helpers import random_complex
from reconstruction.model import SSFLRecon
from utils import fast_numerics
from utils.checkpoint_import import assign_from_checkpoint
from utils.complex_layers import (
    ComplexConv3D,
    ComplexConv3DTranspose,
    ComplexInstanceNorm,
    MagnitudeMaxPool3D,
    ModReLU,
)
from utils.schema import ModelConfig
from utils.unet import ComplexUNet2Dt

LAYER_RTOL = 1e-5
LAYER_GRAD_RTOL = 1e-4
FEATURE_RTOL = 1e-4
NETWORK_GRAD_RTOL = 1e-3
NETWORK_GRAD_ATOL = 1e-5  # of the largest gradient entry of the network
LATER_FEATURE_RTOL = 1e-2  # features after an unrolled iteration (near-ties, see the features test)
LATER_FEATURES_MOVED = 0.1
MIN_PSNR_DB = 60.0


def _rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def _psnr(actual, reference) -> float:
    actual, reference = np.asarray(actual), np.asarray(reference)
    mse = np.mean(np.abs(actual - reference) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(np.max(np.abs(reference)) ** 2 / mse))


def _stacked(layer, x, **kwargs):
    return fast_numerics.unstack(layer.call_stacked(fast_numerics.stack(x), **kwargs))


def _value_and_grads(fn, x, variables):
    probe = tf.constant(random_complex(np.random.default_rng(3), fn(x).shape))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.math.real(tf.math.conj(probe) * fn(x)))
    return fn(x), tape.gradient(loss, [x, *variables])


def _layer_cases():
    rng = np.random.default_rng(0)

    def with_bias(layer, shape):
        layer.build(shape)
        for w in layer.weights:  # non-zero biases, some negative (ModReLU switches elements off)
            w.assign(rng.standard_normal(w.shape).astype(np.float32) * (0.5 if "bias" in w.path else 1.0))
        return layer

    shape = (2, 5, 9, 7, 6)
    return {
        "conv": (with_bias(ComplexConv3D(4, (1, 5, 5)), shape), shape),
        "conv_t": (with_bias(ComplexConv3D(3, (3, 1, 1)), shape), shape),
        "up_conv": (with_bias(ComplexConv3DTranspose(4, (1, 1, 1), strides=2, activation="modrelu"), shape), shape),
        "norm": (ComplexInstanceNorm(), shape),
        "modrelu": (with_bias(ModReLU(), shape), shape),
        "pool": (MagnitudeMaxPool3D(2), (2, 5, 9, 7, 3)),  # odd sizes: 'same' padding
        "pool_optox": (MagnitudeMaxPool3D(2, gradient="optox"), (1, 4, 6, 6, 3)),
    }


@pytest.mark.parametrize("case", list(_layer_cases()))
def test_layer_fast_matches_faithful_values_and_gradients(case) -> None:
    layer, shape = _layer_cases()[case]
    x = tf.constant(random_complex(np.random.default_rng(1), shape))
    faithful, g_faithful = _value_and_grads(layer, x, layer.trainable_weights)
    fast, g_fast = _value_and_grads(lambda v: _stacked(layer, v), x, layer.trainable_weights)
    assert fast.shape == faithful.shape
    assert _rel_err(fast, faithful) <= LAYER_RTOL, case
    for a, b in zip(g_fast, g_faithful):
        assert _rel_err(a, b) <= LAYER_GRAD_RTOL, case


def test_fused_norm_modrelu_matches_faithful_pair() -> None:
    """The UNet's fast path runs norm + ModReLU as one operation with a written-out backward: values and the
    gradients of input and bias as the two faithful layers (batch of 2: per-sample statistics)."""
    rng = np.random.default_rng(4)
    shape = (2, 5, 9, 7, 6)
    norm, act = ComplexInstanceNorm(), ModReLU()
    act.build(shape)
    act.bias.assign(rng.standard_normal(6).astype(np.float32) * 0.5)
    # unequal real/imaginary scales and a correlation, so the whitening is not a plain scaling
    z = random_complex(rng, shape)
    x = tf.constant((3.0 * z.real + 1.0 + 1j * (0.5 * z.imag + 0.8 * z.real - 2.0)).astype(np.complex64))
    faithful, g_faithful = _value_and_grads(lambda v: act(norm(v)), x, [act.bias])
    fast, g_fast = _value_and_grads(
        lambda v: fast_numerics.unstack(norm.call_stacked_with_modrelu(fast_numerics.stack(v), act)), x, [act.bias])
    assert _rel_err(fast, faithful) <= LAYER_RTOL
    assert float(np.mean(np.abs(np.asarray(faithful)) == 0)) > 0.05  # some elements switched off by the bias
    for a, b in zip(g_fast, g_faithful):
        assert _rel_err(a, b) <= LAYER_GRAD_RTOL


def test_conv_on_concatenated_groups_matches_complex_concat() -> None:
    rng = np.random.default_rng(2)
    a, b = (tf.constant(random_complex(rng, (1, 4, 8, 6, c))) for c in (5, 3))
    layer = ComplexConv3D(4, (1, 3, 3))
    layer.build((None, None, None, None, 8))
    faithful = layer(tf.concat([a, b], axis=-1))
    stacked = fast_numerics.concat([fast_numerics.stack(a), fast_numerics.stack(b)])
    fast = fast_numerics.unstack(layer.call_stacked(stacked, groups=[5, 3]))
    assert _rel_err(fast, faithful) <= LAYER_RTOL


def test_pool_ties_zero_windows_pick_the_first_maximum() -> None:
    # equal amplitudes with different phases: the first in (t, x, y) order wins; all-zero windows give 0
    window = np.zeros((1, 2, 2, 2, 1), np.complex64)
    window[0, 0, 1, 0, 0], window[0, 1, 0, 0, 0], window[0, 1, 1, 1, 0] = 1j, -1.0, 1.0
    x = tf.constant(np.concatenate([window, np.zeros_like(window)], axis=2))  # second window all zero
    fast = _stacked(MagnitudeMaxPool3D(2), x).numpy()
    np.testing.assert_allclose(fast.ravel(), [1j, 0], atol=1e-7)


def test_unet_fast_matches_faithful_with_feature_and_odd_sizes() -> None:
    keras.utils.set_random_seed(0)  # the weights' initialisation: a fixed draw, so a failure can be reproduced
    rng = np.random.default_rng(4)
    x = tf.constant(random_complex(rng, (1, 7, 30, 22, 1)))
    feature = tf.constant(random_complex(rng, (1, 2, 8, 6, 5)))
    faithful = ComplexUNet2Dt(filters=4, feature_channels=5)
    fast = ComplexUNet2Dt(filters=4, feature_channels=5, numerics="fast")
    for unet in (faithful, fast):
        unet.build(x.shape)
    fast.set_weights(faithful.get_weights())
    assert _rel_err(fast(x, feature), faithful(x, feature)) <= FEATURE_RTOL
    assert _rel_err(fast.encode(x)[0], faithful.encode(x)[0]) <= FEATURE_RTOL


# ---------------------------------------------------------------------------------------- whole networks
def _fe_nets() -> tuple[FeatureNet, FeatureNet]:
    """(faithful, fast) FE-Nets with weights001 and the same values for what weights001 lacks (decoder/1, ...)."""
    faithful = FeatureNet(2, "vicreg")
    faithful.build_all()
    assign_from_checkpoint(faithful.original_variables(), str(fixtures_dir() / "original" / "weights001.tf"))
    fast = FeatureNet(2, "vicreg", unet={"numerics": "fast"})
    fast.build_all()
    fast.set_weights(faithful.get_weights())
    return faithful, fast


def test_fe_net_features_fast_match_faithful_and_golden() -> None:
    g = load_golden("fe_vicreg_pred.npz")
    args = (g["x"], g["y"], g["mask"], g["smaps"])
    faithful, fast = _fe_nets()
    features_faithful, image_faithful = faithful.extract(*args)
    features_fast, image_fast = fast.extract(*args)
    # The first iteration's features: float32 rounding only.
    assert _rel_err(features_fast[0], features_faithful[0]) <= FEATURE_RTOL
    assert _rel_err(features_fast[0], g["feature_0"]) <= FEATURE_RTOL
    # The second iteration's input differs by ~3e-7 (relative); near-ties in its max-poolings then select other
    # elements (the faithful network does the same when its input moves that much): a few features move.
    later, later_fast = np.asarray(features_faithful[1]), np.asarray(features_fast[1])
    moved = np.abs(later_fast - later) > FEATURE_RTOL * np.abs(later).max()
    assert moved.mean() <= LATER_FEATURES_MOVED and _rel_err(later_fast, later) <= LATER_FEATURE_RTOL
    assert _psnr(image_fast, image_faithful) >= MIN_PSNR_DB


def _ssfl(numerics: str) -> SSFLRecon:
    model = SSFLRecon(2, "vicreg", unet={"numerics": numerics})
    model.build_all()
    assign_from_checkpoint(model.feature_extractor.original_variables(include_projector=False),
                           str(fixtures_dir() / "original" / "weights001.tf"))
    assign_from_checkpoint(model.original_variables(), str(fixtures_dir() / "golden" / "ssfl_recon_ckpt"))
    return model


def test_ssfl_reconstruction_fast_psnr_against_faithful() -> None:
    g = load_golden("ssfl_recon_pred.npz")
    args = (g["x"], g["y"], g["mask"], g["smaps"])
    faithful = _ssfl("faithful").reconstruct(*args)
    fast = _ssfl("fast").reconstruct(*args)
    assert _psnr(fast, faithful) >= MIN_PSNR_DB
    assert _psnr(fast, g["x_out"]) >= MIN_PSNR_DB


def test_network_gradients_fast_close_to_faithful() -> None:
    g = load_golden("fe_vicreg_pred.npz")
    probe = tf.constant(random_complex(np.random.default_rng(5), g["x"].shape))
    grads = {}
    for numerics, model in zip(("faithful", "fast"), _fe_nets()):
        named = {k: v for k, v in model.original_variables().items() if "projector" not in k and v.trainable}
        with tf.GradientTape() as tape:
            # the first iteration only: the second one's near-ties are covered by the features test
            encoded, skips, paddings = model.unets[0].encode(tf.constant(g["x"]))
            image = model.update(0, tf.constant(g["x"]), encoded, skips, paddings, g["y"], g["mask"], g["smaps"])
            loss = tf.reduce_sum(tf.math.real(tf.math.conj(probe) * image)) + tf.reduce_sum(tf.abs(encoded) ** 2)
        grads[numerics] = {k: gr for k, gr in zip(named, tape.gradient(loss, list(named.values()))) if gr is not None}
    assert sorted(grads["fast"]) == sorted(grads["faithful"]) and len(grads["fast"]) > 20
    # Convolution biases in front of an instance norm have a zero gradient in exact arithmetic (the norm removes
    # the mean): both modes compute rounding noise there, hence the absolute term.
    scale = max(float(np.abs(v).max()) for v in grads["faithful"].values())
    for name, expected in grads["faithful"].items():
        err = float(np.abs(np.asarray(grads["fast"][name]) - expected).max())
        assert err <= NETWORK_GRAD_RTOL * float(np.abs(expected).max()) + NETWORK_GRAD_ATOL * scale, name


def test_weights_interchangeable_between_modes(tmp_path) -> None:
    faithful, _ = _fe_nets()
    fast = FeatureNet(2, "vicreg", unet={"numerics": "fast"})
    fast.build_all()
    shapes = {k: tuple(v.shape) for k, v in faithful.original_variables().items()}
    assert {k: tuple(v.shape) for k, v in fast.original_variables().items()} == shapes
    assert [tuple(v.shape) for v in fast.weights] == [tuple(v.shape) for v in faithful.weights]
    path = tmp_path / "fe.weights.h5"
    faithful.save_weights(path)
    fast.load_weights(path)  # trained in one mode, loaded in the other
    g = load_golden("fe_vicreg_pred.npz")
    features, _ = fast.extract(g["x"], g["y"], g["mask"], g["smaps"], with_image=False)
    assert _rel_err(features[0], g["feature_0"]) <= FEATURE_RTOL
    assert fast.unets[0].get_config()["numerics"] == "fast"


def test_numerics_is_validated() -> None:
    cfg = ModelConfig(numerics="quick")
    with pytest.raises(ValueError, match=r"model\.numerics.*faithful.*fast"):
        cfg.validate()
    assert ModelConfig(numerics="fast").unet_kwargs()["numerics"] == "fast"
    with pytest.raises(ValueError, match="numerics"):
        ComplexUNet2Dt(numerics="quick")


@pytest.mark.parametrize("size", [(8, 6), (7, 6), (10, 5)])
def test_dc_gradient_step_fast_matches_faithful(size) -> None:
    """The coil-first gradient step (sign patterns for the centring shifts when X and Y are even, the plain
    operator otherwise) against the faithful DCGD: values, gradients of the image and of the weight, also when
    the sizes are only known at run time."""
    from utils.data_consistency import DCGD

    rng = np.random.default_rng(7)
    nx, ny = size
    x = tf.constant(random_complex(rng, (2, 3, nx, ny, 1)))
    y = tf.constant(random_complex(rng, (2, 3, nx, ny, 4)))
    maps = tf.constant(random_complex(rng, (2, 1, nx, ny, 4)))
    mask = tf.constant((rng.random((2, 3, 1, ny, 1)) < 0.5).astype(np.float32))
    faithful, fast = DCGD(0.7), DCGD(0.7, numerics="fast")
    expected, g_expected = _value_and_grads(lambda v: faithful(v, y, mask, maps), x, faithful.trainable_weights)
    actual, g_actual = _value_and_grads(lambda v: fast(v, y, mask, maps), x, fast.trainable_weights)
    assert _rel_err(actual, expected) <= LAYER_RTOL
    for a, b in zip(g_actual, g_expected):
        assert _rel_err(a, b) <= LAYER_GRAD_RTOL
    unknown = tf.function(fast, input_signature=[
        tf.TensorSpec([None, None, None, None, 1], tf.complex64), tf.TensorSpec([None, None, None, None, 4], tf.complex64),
        tf.TensorSpec([None, None, 1, None, 1], tf.float32), tf.TensorSpec([None, 1, None, None, 4], tf.complex64)])
    assert _rel_err(unknown(x, y, mask, maps), expected) <= LAYER_RTOL
    # a complex (weighted) mask and a rank-4 mask (no batch axis) take the plain operator
    weighted = tf.complex(mask * 0.5, mask * 0.25)
    assert _rel_err(fast(x, y, weighted, maps), faithful(x, y, weighted, maps)) <= LAYER_RTOL
    assert _rel_err(fast(x, y, mask[0], maps), faithful(x, y, mask[0], maps)) <= LAYER_RTOL
