"""Tests of utils.complex_layers and the UNet's building blocks.

* golden: stand-alone blocks and every intermediate of the original encoder/decoder (layers_only.npz);
* references: complex convolution against a numpy loop over a padded array, transposed convolution as the exact
  adjoint of a strided complex convolution;
* semantics: magnitude max-pooling ties/zeros/odd sizes, padding to multiples and cropping back;
* gradients: numeric vs autodiff Jacobians (float64) of every layer with custom complex math;
* the Keras layer contract (config round trip, weight count, tf.function, .keras save/load) via helpers.check_layer.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_golden
from helpers import assert_golden, cdot, check_layer, max_abs_error, random_complex
from utils.complex_layers import (
    ComplexConv3D,
    ComplexConv3DTranspose,
    ComplexInstanceNorm,
    MagnitudeMaxPool3D,
    ModReLU,
    complex_conv3d,
    complex_conv3d_transpose,
    crop_padding,
    pad_to_multiple,
)
from utils.data_consistency import DCGD
from utils.mri import complex_scale
from utils.unet import ComplexUNet2Dt


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return load_golden("layers_only.npz")


def _complex_kernel(kernel: np.ndarray) -> np.ndarray:
    return kernel[..., 0] + 1j * kernel[..., 1]


def _same_padding(n: int, k: int, s: int) -> tuple[int, int, int]:
    """TF 'SAME': output ceil(n / s); the extra padding sample goes after the data."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def numpy_complex_conv3d(x: np.ndarray, kernel: np.ndarray, strides=(1, 1, 1)) -> np.ndarray:
    """Reference complex cross-correlation, 'SAME' padding: x (B,T,X,Y,cin), kernel (kt,kx,ky,cin,cout,2)."""
    w = _complex_kernel(kernel.astype(np.float64))
    sizes = [_same_padding(n, k, s) for n, k, s in zip(x.shape[1:4], w.shape[:3], strides)]
    padded = np.pad(x.astype(np.complex128), [(0, 0)] + [(before, after) for _, before, after in sizes] + [(0, 0)])
    outs = [o for o, _, _ in sizes]
    result = np.zeros((x.shape[0], *outs, w.shape[-1]), np.complex128)
    for a in range(w.shape[0]):
        for b in range(w.shape[1]):
            for c in range(w.shape[2]):
                window = padded[:, a: a + strides[0] * (outs[0] - 1) + 1: strides[0],
                                b: b + strides[1] * (outs[1] - 1) + 1: strides[1],
                                c: c + strides[2] * (outs[2] - 1) + 1: strides[2], :]
                result += np.einsum("btxyi,io->btxyo", window, w[a, b, c])
    return result


def _build(layer, shape):
    layer.build(shape)
    return layer


# ---------------------------------------------------------------------------------------------------------------------
# Golden stand-alone blocks
# ---------------------------------------------------------------------------------------------------------------------


def _golden_blocks(g) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (our output, golden output) for every stand-alone block of layers_only.npz."""
    out = {}
    out["maxpool"] = (MagnitudeMaxPool3D((2, 2, 2))(g["maxpool_in"]), g["maxpool_out"])
    out["instance_norm"] = (ComplexInstanceNorm()(g["cin_in"]), g["cin_out"])
    modrelu = _build(ModReLU(), g["modrelu_in"].shape)
    modrelu.bias.assign(g["modrelu_bias"])
    out["modrelu"] = (modrelu(g["modrelu_in"]), g["modrelu_out"])
    conv = _build(ComplexConv3D(4, g["conv_kernel"].shape[:3]), g["conv_in"].shape)
    conv.kernel.assign(g["conv_kernel"])
    conv.bias.assign(g["conv_bias"])
    out["conv"] = (conv(g["conv_in"]), g["conv_out"])
    for name in ("convT", "convT_k3"):
        # the stand-alone transposed convs of the fixture have no activation (no activation bias stored)
        layer = _build(ComplexConv3DTranspose(4, g[f"{name}_kernel"].shape[:3], strides=2), g[f"{name}_in"].shape)
        layer.kernel.assign(g[f"{name}_kernel"])
        layer.bias.assign(g[f"{name}_bias"])
        out[name] = (layer(g[f"{name}_in"]), g[f"{name}_out"])
    return {k: (np.asarray(ours), ref) for k, (ours, ref) in out.items()}


def test_standalone_blocks_match_golden(golden) -> None:
    for name, (ours, ref) in _golden_blocks(golden).items():
        assert_golden(ours, ref, name)


# ---------------------------------------------------------------------------------------------------------------------
# Golden UNet intermediates (encoder/0 and decoder/0 of the feature model)
# ---------------------------------------------------------------------------------------------------------------------


def _original_name(key: str) -> str:
    """Stored weight key -> ComplexUNet2Dt.original_variables() name: `w.encoder.0.encoder.1.3.kernel` ->
    `encoder/1/3/kernel`, `w.decoder.0.bottleneck.6.activation.bias` -> `bottleneck/6/activation/bias`."""
    for prefix in ("w.encoder.0.", "w.decoder.0."):
        if key.startswith(prefix):
            return key[len(prefix):].replace(".", "/")
    raise KeyError(key)


@pytest.fixture(scope="module")
def golden_unet(golden) -> ComplexUNet2Dt:
    unet = ComplexUNet2Dt()
    unet.build((None, None, None, None, 1))
    variables = unet.original_variables()
    keys = [k for k in golden if k.startswith(("w.encoder.0.", "w.decoder.0."))]
    # every UNet variable has a stored weight and vice versa
    assert sorted(_original_name(k) for k in keys) == sorted(variables)
    for key in keys:
        variables[_original_name(key)].assign(golden[key])
    return unet


def _stages(unet: ComplexUNet2Dt):
    """(golden prefix, ops) for every stage, in execution order."""
    yield from ((f"encoder.0.encoder.{level}", stage.ops) for level, stage in enumerate(unet.encoder))
    yield "decoder.0.bottleneck", unet.bottleneck.ops
    yield from ((f"decoder.0.decoder.{j}", stage.ops) for j, stage in enumerate(unet.decoder))


def _stage_input(golden, prefix: str) -> np.ndarray:
    if prefix == "encoder.0.encoder.0":
        return golden["encoder.0.padded_in"]
    if prefix == "encoder.0.encoder.1":
        return golden["encoder.0.encoder.0.6.out"]
    if prefix == "decoder.0.bottleneck":
        return golden["encoder.0.encoder.1.6.out"]
    return golden[f"{prefix}.concat_in"]


def test_unet_each_op_matches_golden_in_isolation(golden, golden_unet) -> None:
    # Each op fed the golden output of its predecessor: a failure points at exactly one op.
    checked = 0
    for prefix, ops in _stages(golden_unet):
        x = _stage_input(golden, prefix)
        for i, op in enumerate(ops):
            out = op(tf.constant(x))
            assert_golden(out, golden[f"{prefix}.{i}.out"], f"{prefix}.{i} ({type(op).__name__})")
            x = golden[f"{prefix}.{i}.out"]
            checked += 1
    assert checked == 7 + 7 + 7 + 7 + 6
    out = golden_unet.out_layer(tf.constant(golden["decoder.0.decoder.1.5.out"]))
    assert_golden(out, golden["decoder.0.out"], "out_layer")


def test_unet_chained_intermediates_match_golden(golden, golden_unet) -> None:
    # The same intermediates computed from x alone, wiring skips and concatenations as the UNet does.
    x, paddings = pad_to_multiple(tf.constant(golden["x"]), golden_unet.pad_factors)
    assert_golden(x, golden["encoder.0.padded_in"], "padded_in")
    skips = []
    for prefix, ops in _stages(golden_unet):
        if prefix.startswith("decoder.0.decoder"):
            x = tf.concat([x, skips.pop()], axis=-1)
            assert_golden(x, golden[f"{prefix}.concat_in"], f"{prefix}.concat_in")
        for i, op in enumerate(ops):
            if prefix.startswith("encoder") and i == len(ops) - 1:
                skips.append(x)  # the skip is the input of the max-pool
            x = op(x)
            assert_golden(x, golden[f"{prefix}.{i}.out"], f"{prefix}.{i}")
    out = crop_padding(golden_unet.out_layer(x), paddings)
    assert_golden(out, golden["decoder.0.out"], "decoder.0.out")
    # and the UNet's own encode/decode give the same feature and output
    encoded, skips, paddings = golden_unet.encode(tf.constant(golden["x"]))
    assert_golden(encoded, golden["encoder.0.encoder.1.6.out"], "encode(x)")
    assert_golden(golden_unet.decode(encoded, skips, paddings), golden["decoder.0.out"], "decode(encode(x))")


def test_first_unrolled_update_matches_golden(golden, golden_unet) -> None:
    # x - tau * UNet(x) / num_iter, then one DC gradient step; y/mask/coil maps are those of the FE fixtures
    # (layers_only.npz stores the same x).
    fe = load_golden("fe_vicreg_pred.npz")
    np.testing.assert_array_equal(fe["x"], golden["x"])
    tau = float(golden["w.tau.0.scalar"][0])
    x_tau = tf.constant(golden["x"]) - complex_scale(complex_scale(tf.constant(golden["decoder.0.out"]), tau), 0.5)
    assert_golden(x_tau, golden["x_after_tau0"], "x_after_tau0")
    dc = DCGD()
    dc.build()
    dc._weight.assign(golden["w.dc.0.weight"])
    assert_golden(dc(x_tau, fe["y"], fe["mask"], fe["smaps"]), golden["x_after_dc0"], "x_after_dc0")


# ---------------------------------------------------------------------------------------------------------------------
# Convolutions against references
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (1, 5, 5), (3, 1, 1), (2, 3, 4)])
def test_complex_conv3d_matches_numpy_reference(kernel_size) -> None:
    rng = np.random.default_rng(0)
    x = random_complex(rng, (2, 4, 5, 7, 3))
    kernel = rng.standard_normal((*kernel_size, 3, 2, 2)).astype(np.float32)
    reference = numpy_complex_conv3d(x, kernel)
    np.testing.assert_allclose(complex_conv3d(tf.constant(x), tf.constant(kernel)).numpy(), reference,
                               rtol=1e-5, atol=1e-5)
    layer = _build(ComplexConv3D(2, kernel_size), x.shape)
    layer.kernel.assign(kernel)
    bias = rng.standard_normal((2, 2)).astype(np.float32)
    layer.bias.assign(bias)
    np.testing.assert_allclose(layer(x).numpy(), reference + _complex_kernel(bias), rtol=1e-5, atol=1e-5)


def test_numpy_reference_agrees_with_golden_conv(golden) -> None:
    # validates the reference itself (and its 'SAME' padding) on the original's conv
    reference = numpy_complex_conv3d(golden["conv_in"], golden["conv_kernel"]) + _complex_kernel(golden["conv_bias"])
    np.testing.assert_allclose(reference, golden["conv_out"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,strides", [((1, 1, 1), (2, 2, 2)), ((3, 3, 3), (2, 2, 2)),
                                                 ((2, 3, 1), (1, 2, 3)), ((3, 5, 5), (1, 1, 1))])
def test_transposed_conv_is_adjoint_of_strided_conv(kernel_size, strides) -> None:
    # convT(y) with kernel W (kt,kx,ky,filters,cin) must equal F^H y where F is the strided complex conv with the
    # same array read as a (kt,kx,ky,in=filters,out=cin) kernel: <F x, y> = <x, convT(y)>.
    rng = np.random.default_rng(1)
    y = random_complex(rng, (2, 3, 4, 3, 3), np.complex128)
    filters = 2
    layer = ComplexConv3DTranspose(filters, kernel_size, strides=strides, use_bias=False)
    layer.build(y.shape)
    kernel = rng.standard_normal(tuple(layer.kernel.shape)).astype(np.float32)
    layer.kernel.assign(kernel)
    convt_y = layer(tf.constant(y)).numpy()
    assert convt_y.shape == (2, 3 * strides[0], 4 * strides[1], 3 * strides[2], filters)
    x = random_complex(rng, convt_y.shape, np.complex128)
    fx = numpy_complex_conv3d(x, kernel, strides)
    assert fx.shape == y.shape
    lhs, rhs = cdot(fx, y), cdot(x, convt_y)
    assert abs(lhs - rhs) <= 1e-10 * np.linalg.norm(fx) * np.linalg.norm(y), (lhs, rhs)
    # the functional form agrees with the layer
    out_shape = tf.constant(convt_y.shape)
    np.testing.assert_allclose(complex_conv3d_transpose(tf.constant(y), tf.constant(kernel, tf.float64), out_shape,
                                                        strides).numpy(), convt_y, rtol=1e-12, atol=1e-12)


def test_pointwise_up_convolution_fills_only_even_positions() -> None:
    # (1,1,1) kernel, stride 2: values land on even (t, x, y) indices; every other position holds only the bias
    rng = np.random.default_rng(2)
    x = random_complex(rng, (1, 2, 3, 2, 3))
    layer = _build(ComplexConv3DTranspose(2, (1, 1, 1), strides=2), x.shape)
    layer.kernel.assign(rng.standard_normal(tuple(layer.kernel.shape)).astype(np.float32))
    bias = np.array([[0.5, -0.25], [1.5, 2.0]], np.float32)
    layer.bias.assign(bias)
    out = layer(x).numpy()
    w = _complex_kernel(layer.kernel.numpy())[0, 0, 0]  # (filters, cin)
    expected_even = np.einsum("btxyi,oi->btxyo", x, np.conj(w)) + _complex_kernel(bias)
    np.testing.assert_allclose(out[:, ::2, ::2, ::2], expected_even, rtol=1e-5, atol=1e-5)
    odd = np.ones(out.shape, bool)
    odd[:, ::2, ::2, ::2] = False
    np.testing.assert_array_equal(out[odd].reshape(-1, 2), np.broadcast_to(_complex_kernel(bias), (odd.sum() // 2, 2)))


# ---------------------------------------------------------------------------------------------------------------------
# Magnitude max-pooling semantics
# ---------------------------------------------------------------------------------------------------------------------


def test_maxpool_first_maximum_wins_on_ties() -> None:
    pool = MagnitudeMaxPool3D(2)
    # window positions in (t, x, y) row-major order: index = 4 t + 2 x + y
    x = np.zeros((1, 2, 2, 2, 2), np.complex64)
    x[0, 0, 1, 0, 0] = 5.0            # index 2
    x[0, 1, 0, 0, 0] = 3.0 + 4.0j     # index 4, same magnitude, later
    x[0, 0, 0, 1, 1] = -5.0j          # index 1
    x[0, 1, 1, 1, 1] = 4.0 - 3.0j     # index 7, same magnitude, later
    out = pool(x).numpy()
    assert out.shape == (1, 1, 1, 1, 2)
    assert out[0, 0, 0, 0, 0] == 5.0 and out[0, 0, 0, 0, 1] == -5.0j
    # swapping the positions swaps the winner: it is the order, not the value, that decides
    y = np.zeros_like(x)
    y[0, 0, 1, 0, 0], y[0, 1, 0, 0, 0] = 3.0 + 4.0j, 5.0
    assert pool(y).numpy()[0, 0, 0, 0, 0] == 3.0 + 4.0j


def test_maxpool_zero_windows_odd_sizes_and_complex_output() -> None:
    rng = np.random.default_rng(3)
    x = random_complex(rng, (2, 5, 7, 3, 2))
    x[:, :2, :2, :2, :] = 0  # first window of every channel is all zero
    out = MagnitudeMaxPool3D((2, 2, 2))(x).numpy()
    assert out.shape == (2, 3, 4, 2, 2)  # ceil(5/2), ceil(7/2), ceil(3/2)
    assert np.all(out[:, 0, 0, 0, :] == 0)
    # brute force: for each window (zero-padded at the end) the element of largest |z| (first on ties)
    padded = np.pad(x, [(0, 0), (0, 1), (0, 1), (0, 1), (0, 0)])
    for b, t, i, j, c in np.ndindex(out.shape):
        window = padded[b, 2 * t: 2 * t + 2, 2 * i: 2 * i + 2, 2 * j: 2 * j + 2, c].ravel()
        amplitude = window.real.astype(np.float32) ** 2 + window.imag.astype(np.float32) ** 2
        assert out[b, t, i, j, c] == window[np.argmax(amplitude)]
    # anisotropic window (1, 2, 3) on odd sizes
    out = MagnitudeMaxPool3D((1, 2, 3))(x).numpy()
    assert out.shape == (2, 5, 4, 1, 2)
    np.testing.assert_array_equal(np.abs(out[:, :, 0, 0]), np.abs(x[:, :, :2, :3]).reshape(2, 5, 6, 2).max(axis=2))


def test_maxpool_rejects_overlapping_windows_and_real_input() -> None:
    with pytest.raises(ValueError, match="strides"):
        MagnitudeMaxPool3D(pool_size=2, strides=1)
    with pytest.raises(ValueError, match="complex"):
        MagnitudeMaxPool3D(2)(tf.zeros((1, 2, 2, 2, 1)))


# ---------------------------------------------------------------------------------------------------------------------
# Padding to multiples
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,factors,expected", [
    ((1, 25, 13, 11, 2), (4, 4, 4), [[1, 2], [1, 2], [0, 1]]),
    ((2, 8, 32, 24, 1), (4, 4, 4), [[0, 0], [0, 0], [0, 0]]),
    ((1, 3, 5, 7, 1), (2, 8, 1), [[0, 1], [1, 2], [0, 0]]),
])
def test_pad_to_multiple_and_crop_round_trip(shape, factors, expected) -> None:
    x = random_complex(np.random.default_rng(4), shape)
    padded, paddings = pad_to_multiple(tf.constant(x), factors)
    np.testing.assert_array_equal(paddings.numpy(), expected)
    (t0, t1), (x0, x1), (y0, y1) = expected
    assert padded.shape == (shape[0], shape[1] + t0 + t1, shape[2] + x0 + x1, shape[3] + y0 + y1, shape[4])
    assert all(n % f == 0 for n, f in zip(padded.shape[1:4], factors))
    inner = padded.numpy()[:, t0: t0 + shape[1], x0: x0 + shape[2], y0: y0 + shape[3]]
    np.testing.assert_array_equal(inner, x)
    assert np.abs(padded.numpy()).sum() == pytest.approx(np.abs(x).sum(), rel=1e-6)  # the rest is zeros
    np.testing.assert_array_equal(crop_padding(padded, paddings).numpy(), x)


def test_pad_and_crop_in_graph_with_unknown_shapes() -> None:
    @tf.function(input_signature=[tf.TensorSpec([None] * 5, tf.complex64)])
    def round_trip(x):
        padded, paddings = pad_to_multiple(x, (4, 4, 4))
        return crop_padding(padded * 2.0, paddings), tf.shape(padded)

    for shape in [(1, 25, 13, 11, 1), (2, 3, 4, 5, 2)]:
        x = random_complex(np.random.default_rng(5), shape)
        out, padded_shape = round_trip(x)
        np.testing.assert_array_equal(out.numpy(), 2 * x)
        assert all(n % 4 == 0 for n in padded_shape.numpy()[1:4])


@pytest.mark.parametrize("shape", [(1, 5, 13, 11, 1), (2, 25, 6, 7, 1)])
def test_unet_keeps_odd_shapes(shape) -> None:
    unet = ComplexUNet2Dt(filters=2)
    x = random_complex(np.random.default_rng(6), shape)
    out = unet(x)
    assert out.shape == shape and out.dtype == tf.complex64
    assert np.all(np.isfinite(out.numpy()))


# ---------------------------------------------------------------------------------------------------------------------
# Gradients (float64, numeric vs autodiff Jacobians w.r.t. real and imaginary parts)
# ---------------------------------------------------------------------------------------------------------------------


def _check_jacobian(fn, *args, delta=1e-6, tol=1e-6) -> None:
    theoretical, numerical = tf.test.compute_gradient(fn, [tf.constant(a, tf.float64) for a in args], delta=delta)
    for th, nu in zip(theoretical, numerical):
        assert np.abs(th).max() > 0  # a zero Jacobian would make the comparison vacuous
        np.testing.assert_allclose(th, nu, rtol=tol, atol=tol)


def _real_out(z: tf.Tensor) -> tf.Tensor:
    return tf.concat([tf.math.real(z), tf.math.imag(z)], axis=-1)


def _layer_fn(layer):
    return lambda re, im: _real_out(layer(tf.complex(re, im)))


def test_modrelu_gradient() -> None:
    rng = np.random.default_rng(7)
    x = random_complex(rng, (1, 2, 3, 2, 3), np.complex128)
    layer = _build(ModReLU(), x.shape)
    # biases chosen so that some outputs are cut to zero but no |z| + b sits within delta of the kink
    layer.bias.assign(np.array([0.3, -0.8, -1.2], np.float32))
    assert np.any(np.abs(x[..., 1:]) < 0.8) and np.all(np.abs(np.abs(x) - [0.0, 0.8, 1.2]) > 1e-3)
    _check_jacobian(_layer_fn(layer), x.real, x.imag)

    # the bias gradient: d/db sum Re(conj(c) relu(|z| + b) z/|z|) = sum over active elements of Re(conj(c) z/|z|)
    c = random_complex(rng, x.shape, np.complex128)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.math.real(tf.math.conj(c) * layer(tf.constant(x))))
    grad = tape.gradient(loss, layer.bias).numpy()
    magnitude = np.sqrt(np.abs(x) ** 2 + 1e-9)
    active = magnitude + layer.bias.numpy() > 0
    expected = np.sum(np.real(np.conj(c) * x / magnitude) * active, axis=(0, 1, 2, 3))
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_instance_norm_gradient() -> None:
    x = random_complex(np.random.default_rng(8), (1, 2, 3, 2, 2), np.complex128) + (0.5 + 0.2j)
    _check_jacobian(_layer_fn(ComplexInstanceNorm()), x.real, x.imag)


def test_instance_norm_whitens() -> None:
    # per channel: zero mean, identity real/imag covariance (up to eps), for a strongly correlated input
    rng = np.random.default_rng(9)
    re = rng.standard_normal((2, 3, 8, 6, 2))
    x = (re + 1j * (0.8 * re + 0.1 * rng.standard_normal(re.shape)) + 3.0).astype(np.complex128)
    out = ComplexInstanceNorm(epsilon=0.0)(x).numpy()
    for b, ch in np.ndindex(2, 2):
        v = out[b, ..., ch].ravel()
        assert abs(v.mean()) < 1e-12
        np.testing.assert_allclose(np.cov(np.stack([v.real, v.imag]), bias=True), np.eye(2), atol=1e-9)


def test_conv_gradients() -> None:
    rng = np.random.default_rng(10)
    # tiny shapes: the autodiff Jacobian costs one backward pass per real output
    x = random_complex(rng, (1, 3, 2, 3, 2), np.complex128)
    kernel = rng.standard_normal((3, 1, 2, 2, 2, 2))
    layer = _build(ComplexConv3D(2, (3, 1, 2)), x.shape)
    layer.bias.assign(rng.standard_normal((2, 2)).astype(np.float32))
    _check_jacobian(_layer_fn(layer), x.real, x.imag)
    _check_jacobian(lambda k: _real_out(complex_conv3d(tf.constant(x), k)), kernel)


def test_transposed_conv_gradients() -> None:
    rng = np.random.default_rng(11)
    x = random_complex(rng, (1, 2, 1, 2, 2), np.complex128)
    layer = _build(ComplexConv3DTranspose(2, (2, 1, 3), strides=(2, 2, 1), activation="modrelu"), x.shape)
    layer.bias.assign(rng.standard_normal((2, 2)).astype(np.float32))
    _check_jacobian(_layer_fn(layer), x.real, x.imag)
    kernel = rng.standard_normal(tuple(layer.kernel.shape))
    out_shape = tf.constant([1, 4, 2, 2, 2])
    _check_jacobian(lambda k: _real_out(complex_conv3d_transpose(tf.constant(x), k, out_shape, (2, 2, 1))), kernel)


def test_maxpool_gradient() -> None:
    rng = np.random.default_rng(12)
    x = random_complex(rng, (1, 3, 4, 3, 2), np.complex128)
    pool = MagnitudeMaxPool3D(2)
    _check_jacobian(_layer_fn(pool), x.real, x.imag)

    # the gradient reaches the real and imaginary parts of the selected element only
    re, im = tf.Variable(x.real), tf.Variable(x.imag)
    with tf.GradientTape() as tape:
        out = pool(tf.complex(re, im))
        loss = tf.reduce_sum(tf.math.real(out)) + 2.0 * tf.reduce_sum(tf.math.imag(out))
    grad_re, grad_im = (g.numpy() for g in tape.gradient(loss, [re, im]))
    selected = np.zeros(x.shape, bool)
    padded = np.pad(np.abs(x), [(0, 0), (0, 1), (0, 0), (0, 1), (0, 0)])
    for _, t, i, j, c in np.ndindex(tuple(out.shape)):
        window = padded[0, 2 * t: 2 * t + 2, 2 * i: 2 * i + 2, 2 * j: 2 * j + 2, c]
        dt, di, dj = np.unravel_index(np.argmax(window), window.shape)
        selected[0, 2 * t + dt, 2 * i + di, 2 * j + dj, c] = True
    np.testing.assert_array_equal(grad_re, selected.astype(float))
    np.testing.assert_array_equal(grad_im, 2.0 * selected)


# ---------------------------------------------------------------------------------------------------------------------
# Keras layer contract
# ---------------------------------------------------------------------------------------------------------------------


LAYER_CASES = {
    # name: (factory, input shape (odd sizes), weights, trainable weights)
    "modrelu": (lambda: ModReLU(bias_init=0.1, name="modrelu"), (1, 3, 5, 7, 3), 1, 1),
    "conv": (lambda: ComplexConv3D(4, (3, 1, 2), name="conv"), (1, 3, 5, 7, 3), 2, 2),
    "conv_no_bias": (lambda: ComplexConv3D(2, 3, use_bias=False, name="conv_no_bias"), (1, 3, 5, 7, 3), 1, 1),
    "conv_t": (lambda: ComplexConv3DTranspose(2, (1, 1, 1), strides=2, activation="modrelu", name="conv_t"),
               (1, 3, 5, 7, 3), 3, 3),
    "conv_t_plain": (lambda: ComplexConv3DTranspose(2, (3, 3, 1), strides=(1, 2, 2), name="conv_t_plain"),
                     (1, 3, 5, 7, 3), 2, 2),
    "instance_norm": (lambda: ComplexInstanceNorm(epsilon=1e-3, name="instance_norm"), (1, 3, 5, 7, 3), 0, 0),
    "maxpool": (lambda: MagnitudeMaxPool3D((1, 2, 2), name="maxpool"), (1, 3, 5, 7, 3), 0, 0),
    # 2 levels x 6 + bottleneck 6 + up-conv 3 + decoder (6 + 3) + 6 + out conv 2 = 38
    "unet": (lambda: ComplexUNet2Dt(filters=2, name="unet"), (1, 5, 7, 6, 1), 38, 38),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_contract(case: str, tmp_path) -> None:
    factory, shape, num_weights, num_trainable = LAYER_CASES[case]
    x = random_complex(np.random.default_rng(13), shape)
    out = check_layer(factory(), [x], num_weights=num_weights, num_trainable=num_trainable, tmp_path=tmp_path,
                      rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(out))
