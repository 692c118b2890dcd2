"""DDEI's CRNN (reconstruction/crnn.py): shapes, layer contract, DC formula, recurrences, one Engine training step."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import check_layer, random_complex
from reconstruction.crnn import BCRNN, CRNN, LAMBDA_INIT, LambdaDC, _frames, _unframes
from utils import mri
from utils.engine import Engine, Objective

B, T, X, Y, C = 1, 4, 16, 12, 2


def _data(seed=0, coils=C, batch=B):
    rng = np.random.default_rng(seed)
    image = random_complex(rng, (batch, T, X, Y, 1))
    maps = random_complex(rng, (batch, 1, X, Y, coils))
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=-1, keepdims=True))  # sum_c |S_c|^2 = 1
    mask = (rng.random((batch, T, 1, Y, 1)) < 0.5).astype(np.float32)
    mask[:, :, :, Y // 2] = 1.0
    y = mri.forward_np(image, mask, maps).astype(np.complex64)
    x = mri.adjoint_np(y, mask, maps).astype(np.complex64)
    return image, x, y, mask, maps.astype(np.complex64)


def test_crnn_shapes_dtype_and_weights_independent_of_cascades():
    _, x, y, mask, maps = _data()
    for cascades in (1, 2, 3):
        net = CRNN(num_cascades=cascades, chans=4)
        out = net(x, y, mask, maps)
        assert out.shape == (B, T, X, Y, 1) and out.dtype == tf.complex64
        # 2 BCRNNs x 3 convs + 6 CRNN-i convs + output conv, kernel and bias each, + one shared lambda
        assert len(net.weights) == 2 * (2 * 3 + 6 + 1) + 1
    unshared = CRNN(num_cascades=3, chans=4, shared_dc=False)
    unshared.build_all()
    assert len(unshared.weights) == 26 + 3
    with pytest.raises(ValueError, match="num_cascades"):
        CRNN(num_cascades=0)


def test_crnn_layer_contract(tmp_path):
    _, x, y, mask, maps = _data(1)
    net = CRNN(num_cascades=2, chans=3, name="crnn")
    check_layer(net, [x, y, mask, maps], num_weights=27, tmp_path=tmp_path, rtol=1e-5, atol=1e-5)
    built = CRNN(chans=3)
    built.build_all()
    assert built.built and len(built.weights) == 27


def test_crnn_is_artifact_removal_of_the_adjoint():
    _, x, y, mask, maps = _data(2)
    net = CRNN(chans=4)
    out = net(x, y, mask, maps).numpy()
    np.testing.assert_array_equal(net(tf.zeros_like(x), y, mask, maps).numpy(), out)  # input is A^H y
    own = CRNN(chans=4, input_from_kspace=False)
    own.build_all()
    own.set_weights(net.get_weights())
    np.testing.assert_allclose(own(x, y, mask, maps).numpy(), out, atol=1e-5)


def test_lambda_dc_is_ddei_kspace_mixing_for_one_coil():
    image, _, y, mask, _ = _data(3, coils=1)
    maps = np.ones((B, 1, X, Y, 1), np.complex64)
    y = mri.forward_np(image, mask, maps).astype(np.complex64) * 0.7  # inconsistent data
    rng = np.random.default_rng(4)
    x = random_complex(rng, (B, T, X, Y, 1))
    dc = LambdaDC(0.3)
    out = dc(x, y, mask, maps).numpy()
    ax = mri.fft2c_np(x)
    k_dc = (1 - mask) * ax + mask * (0.3 * ax + 0.7 * y)  # DDEI's DCLayer, then the inverse FFT
    np.testing.assert_allclose(out, mri.ifft2c_np(k_dc), atol=1e-5)
    assert np.isclose(LAMBDA_INIT, np.log(np.e - 1))


def test_bcrnn_is_the_sum_of_a_forward_and_a_backward_recurrence():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 4, 2)).astype(np.float32)
    layer = BCRNN(hidden=3)
    layer.build()
    iteration = rng.standard_normal((2, 3, 5, 4, 3)).astype(np.float32)
    out = layer(x, iteration).numpy()

    def step(t, state):
        pre = layer.i2h(x[:, t]) + layer.h2h(state) + layer.ih2ih(iteration[:, t])
        return tf.nn.relu(pre)

    zero = tf.zeros((2, 5, 4, 3))
    forward, state = [], zero
    for t in range(3):
        state = step(t, state)
        forward.append(state)
    backward, state = [None] * 3, zero
    for t in reversed(range(3)):
        state = step(t, state)
        backward[t] = state
    expected = np.stack([(f + b).numpy() for f, b in zip(forward, backward)], axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # no iteration state = zeros through ih2ih (only its bias)
    np.testing.assert_allclose(layer(x, None).numpy(), layer(x, np.zeros_like(iteration)).numpy(), atol=1e-5)
    np.testing.assert_array_equal(_unframes(_frames(tf.constant(x)), tf.constant(x)).numpy(), x)


class _Supervised(Objective):
    def losses(self, network, batch, seed, training):
        recon = network(batch["x"], batch["y"], batch["mask"], batch["coil_maps"], training=training)
        return {"loss": tf.reduce_mean(mri.abs2(recon - batch["reference"]))}


def test_one_training_step_through_the_engine():
    image, x, y, mask, maps = _data(6, batch=2)
    batch = {"x": x, "y": y, "mask": mask, "coil_maps": maps, "reference": image}
    ds = tf.data.Dataset.from_tensor_slices(batch).batch(1).repeat()
    net = CRNN(chans=4)
    engine = Engine(net, _Supervised(), seed=0)
    engine.build_all()
    before = [w.numpy().copy() for w in net.weights]
    engine.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = engine.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, net.weights)]
    assert all(changed), [w.path for w, c in zip(net.weights, changed) if not c]
    recon = engine({"x": x, "y": y, "mask": mask, "coil_maps": maps})
    assert recon.shape == (2, T, X, Y, 1)
