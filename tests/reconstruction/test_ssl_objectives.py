"""DDEI's competitors (reconstruction/ssl_objectives.py) and DDEI's video windows (data_loader/video_windows.py)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_loader import video_windows as vw
from helpers import random_complex
from reconstruction import ssl_objectives as so
from reconstruction.crnn import CRNN
from utils import mri
from utils.engine import Engine

T, X, Y, C = 4, 16, 12, 2


class Scale(keras.layers.Layer):
    """``w * x`` (w init 1): a linear stand-in network with one weight."""

    def build(self, input_shape=None):
        self.w = self.add_weight(name="w", shape=(1,), initializer="ones")
        self.built = True

    def build_all(self):
        self.build(None)

    def call(self, x, y, mask, coil_maps, training=None):
        return mri.complex_scale(x, self.w[0])


def _batch(seed=0, batch=2, frames=T, coils=C):
    rng = np.random.default_rng(seed)
    image = random_complex(rng, (batch, frames, X, Y, 1))
    maps = random_complex(rng, (batch, 1, X, Y, coils))
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=-1, keepdims=True))
    mask = (rng.random((batch, frames, 1, Y, 1)) < 0.5).astype(np.float32)
    mask[:, :, :, Y // 2 - 1:Y // 2 + 1] = 1.0
    y = mri.forward_np(image, mask, maps).astype(np.complex64)
    return {"x": mri.adjoint_np(y, mask, maps).astype(np.complex64), "y": y, "mask": mask,
            "coil_maps": maps.astype(np.complex64), "reference": image}


def _tensors(batch):
    return {k: tf.constant(v) for k, v in batch.items()}


def _net():
    net = Scale()
    net.build_all()
    return net


# ------------------------------------------------------------------------------------------- masks
def test_gaussian_split_is_a_pointwise_partition_with_deepinv_counts():
    mask = _batch()["mask"]
    full = np.broadcast_to(mask, (2, T, X, Y, 1))
    dc, loss = (m.numpy() for m in so.gaussian_split(mask, X, [1, 2], split_ratio=0.6, center_block=(4, 4)))
    assert dc.shape == loss.shape == (2, T, X, Y, 1)
    assert set(np.unique(dc)) <= {0.0, 1.0} and set(np.unique(loss)) <= {0.0, 1.0}
    np.testing.assert_array_equal(dc * loss, 0.0)  # disjoint
    np.testing.assert_array_equal(dc + loss, full)  # together the acquired points
    per_frame = full.sum(axis=(2, 3, 4))
    np.testing.assert_array_equal(loss.sum(axis=(2, 3, 4)), np.ceil(per_frame * 0.4 - 1e-4))
    np.testing.assert_array_equal(loss[:, :, X // 2 - 2:X // 2 + 2, Y // 2 - 2:Y // 2 + 2], 0.0)  # centre kept
    # points of one ky line differ: the split is pointwise in (kx, ky), not line-wise
    assert np.any(loss.std(axis=2) > 0)
    again = so.gaussian_split(mask, X, [1, 2], split_ratio=0.6, center_block=(4, 4))[1].numpy()
    np.testing.assert_array_equal(again, loss)
    assert not np.array_equal(so.gaussian_split(mask, X, [1, 3], center_block=(4, 4))[1].numpy(), loss)


def test_gaussian_split_prefers_points_near_the_centre():
    mask = np.ones((1, 1, 1, 32, 1), np.float32)
    hits = np.zeros((32, 32))
    for seed in range(30):
        hits += so.gaussian_split(mask, 32, [seed, 0], split_ratio=0.9, center_block=(0, 0))[1].numpy()[0, 0, ..., 0]
    radius = np.hypot(*np.meshgrid(np.arange(32) - 16, np.arange(32) - 16, indexing="ij"))
    assert hits[radius < 5].mean() > 5 * hits[radius > 12].mean()


def test_phase2phase_split_even_and_odd_frames():
    mask = _batch()["mask"]
    even, odd = (m.numpy() for m in so.phase2phase_split(mask))
    np.testing.assert_array_equal(even * odd, 0.0)
    np.testing.assert_array_equal(even + odd, mask)
    np.testing.assert_array_equal(even[:, 1::2], 0.0)
    np.testing.assert_array_equal(odd[:, ::2], 0.0)


# ------------------------------------------------------------------------------------------- losses
def test_t_ssdu_loss_against_numpy():
    batch, net = _batch(1), _net()
    objective = so.TSSDUObjective(split_ratio=0.6, center_block=(2, 2))
    seed = tf.constant([3, 7], tf.int64)
    losses = objective.losses(net, _tensors(batch), seed, training=True)
    dc, loss_mask = (m.numpy() for m in objective.split(tf.constant(batch["y"]), batch["mask"], seed))
    y, maps = batch["y"], batch["coil_maps"]
    recon = mri.adjoint_np(dc * y, dc, maps)  # the network is the identity on A_1^H y_1
    residual = loss_mask * (mri.forward_np(recon, 1.0, maps) - y)
    fraction = np.mean(np.broadcast_to(loss_mask, y.shape))
    expected = np.mean(np.abs(residual) ** 2) / fraction
    np.testing.assert_allclose(losses["loss"].numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(losses["held_out_fraction"].numpy(),
                               loss_mask.sum() / np.broadcast_to(batch["mask"], dc.shape).sum(), rtol=1e-6)
    # inference: all data, or (t-ssdu*) the mean of 5 split reconstructions
    inputs = {k: tf.constant(batch[k]) for k in ("x", "y", "mask", "coil_maps")}
    np.testing.assert_allclose(objective.infer(net, inputs).numpy(), batch["x"], atol=1e-6)
    star = so.TSSDUObjective(eval_split_input=True, eval_samples=3, center_block=(2, 2))
    manual = np.mean([mri.adjoint_np(m * y, m, maps) for m in
                      (star.split(tf.constant(y), batch["mask"], tf.constant([s, -2], tf.int64))[0].numpy()
                       for s in range(3))], axis=0)
    np.testing.assert_allclose(star.infer(net, inputs).numpy(), manual, atol=1e-5)


@pytest.mark.parametrize("frames", [4, 5])
def test_phase2phase_loss_against_numpy(frames):
    batch, net = _batch(2, frames=frames), _net()
    loss = so.Phase2PhaseObjective().losses(net, _tensors(batch), tf.constant([0, 0], tf.int64), training=True)["loss"]
    y, mask, maps = batch["y"], batch["mask"], batch["coil_maps"]
    recon = mri.adjoint_np(y[:, ::2], mask[:, ::2], maps)  # even frames only
    pairs = frames // 2
    residual = mri.forward_np(recon[:, :pairs], mask[:, 1::2], maps) - mask[:, 1::2] * y[:, 1::2]
    odd_mask = mask.copy()
    odd_mask[:, ::2] = 0.0
    expected = np.mean(np.abs(residual) ** 2) / odd_mask.mean()
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4)


def test_sure_formula_against_numpy():
    rng = np.random.default_rng(3)
    shape = (2, T, X, Y, C)
    mask = (rng.random((2, T, 1, Y, 1)) < 0.5).astype(np.float32)
    y, a1, a2, b = (random_complex(rng, shape) for _ in range(4))
    a1, a2, y = a1 * mask, a2 * mask, y * mask
    sigma, tau = 0.3, 0.1
    for average in ("all", "acquired"):
        got = so.sure_gaussian_loss(a1, a2, y, b, mask, sigma, tau, average).numpy()
        m = 2 * (np.prod(shape[1:]) if average == "all" else np.broadcast_to(mask, shape).sum(axis=(1, 2, 3, 4)))
        per = (np.sum(np.abs(a1 - y) ** 2, axis=(1, 2, 3, 4)) / m - sigma ** 2
               + 2 * sigma ** 2 / (m * tau) * np.sum((b.conj() * (a2 - a1)).real, axis=(1, 2, 3, 4)))
        np.testing.assert_allclose(got, per.mean(), rtol=1e-4)


def test_sure_estimates_the_error_to_the_noiseless_measurements():
    # f(y) = alpha A^H y with one unit-sensitivity coil: SURE ("acquired") is unbiased for mean |A f(y) - A x|^2
    batch = _batch(4, batch=1, frames=8, coils=1)
    batch["coil_maps"] = np.ones_like(batch["coil_maps"])
    clean = mri.forward_np(batch["reference"], batch["mask"], batch["coil_maps"]).astype(np.complex64)
    batch["y"] = clean
    sigma, alpha = 0.5, 0.7
    net = _net()
    net.w.assign([alpha])
    objective = so.NoisyEIObjective("rotate", ei_weight=0.0, noise_sigma=sigma, mc_loss="sure", tau=0.01,
                                    sure_average="acquired")
    estimates, truths = [], []
    for step in range(20):
        seed = tf.constant([5, step], tf.int64)
        estimates.append(objective.losses(net, _tensors(batch), seed, training=True)["mc_loss"].numpy())
        noisy = so.noisy_batch({k: tf.constant(v) for k, v in batch.items()}, sigma, so._seeds(seed, 3)[0])
        recon = net(noisy["x"], noisy["y"], noisy["mask"], noisy["coil_maps"])
        measured = mri.forward(recon, batch["mask"], batch["coil_maps"]).numpy()
        acquired = 2 * np.broadcast_to(batch["mask"], clean.shape).sum()
        truths.append(np.sum(np.abs(measured - clean) ** 2) / acquired)
    assert abs(np.mean(estimates) - np.mean(truths)) < 0.05 * np.mean(truths)
    assert np.mean(truths) > 0.05  # a non-trivial target (the noise term alone is alpha^2 sigma^2 = 0.12)


def test_noisy_ei_interleaves_sure_and_ei_as_ddei():
    batch, net = _tensors(_batch(5)), _net()
    objective = so.NoisyEIObjective("shift-time", ei_weight=2.0, noise_sigma=0.1, mc_loss="sure")
    assert objective.interleave
    both = objective.losses(net, batch, tf.constant([1, 4], tf.int64), training=False)
    even = objective.losses(net, batch, tf.constant([1, 4], tf.int64), training=True)
    odd = objective.losses(net, batch, tf.constant([1, 5], tf.int64), training=True)
    np.testing.assert_allclose(even["loss"].numpy(), both["mc_loss"].numpy(), rtol=1e-5)
    assert even["ei_loss"].numpy() == 0.0 and odd["mc_loss"].numpy() == 0.0
    np.testing.assert_allclose(odd["loss"].numpy(), 2.0 * odd["ei_loss"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(both["loss"].numpy(), both["mc_loss"].numpy() + 2.0 * both["ei_loss"].numpy(),
                               rtol=1e-5)
    plain = so.NoisyEIObjective("rotate", noise_sigma=0.0, mc_loss="mc")
    assert not plain.interleave
    losses = plain.losses(net, batch, tf.constant([0, 0], tf.int64), training=True)
    y, mask, maps = (batch[k].numpy() for k in ("y", "mask", "coil_maps"))
    expected_mc = np.mean(np.abs(mri.forward_np(mri.adjoint_np(y, mask, maps), mask, maps) - y) ** 2)
    np.testing.assert_allclose(losses["mc_loss"].numpy(), expected_mc, rtol=1e-4)
    with pytest.raises(ValueError, match="mc_loss"):
        so.NoisyEIObjective(mc_loss="l2")


def test_measurement_noise_is_masked_with_sigma_per_real_number():
    batch = _batch(6)
    noisy = so.noisy_batch({k: tf.constant(v) for k, v in batch.items()}, 0.2, tf.constant([1, 1], tf.int64))
    noise = noisy["y"].numpy() - batch["y"]
    acquired = np.broadcast_to(batch["mask"], noise.shape) > 0
    np.testing.assert_array_equal(noise[~acquired], 0.0)
    parts = np.concatenate([noise[acquired].real, noise[acquired].imag])
    assert abs(parts.std() - 0.2) < 0.02 and abs(parts.mean()) < 0.02
    np.testing.assert_allclose(noisy["x"].numpy(), mri.adjoint_np(noisy["y"].numpy(), batch["mask"],
                                                                  batch["coil_maps"]), atol=1e-5)
    wrapped = so.MeasurementNoise(so.Phase2PhaseObjective(), 0.2)
    assert wrapped.loss_names == ("loss",)
    assert np.isfinite(wrapped.losses(_net(), _tensors(batch), tf.constant([0, 0], tf.int64), True)["loss"].numpy())


def test_objectives_train_through_the_engine():
    # graph mode of every objective (the CRNN's own Engine step is in test_crnn.py; a linear net keeps this fast)
    batch = _batch(7, batch=1)
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    for objective in (so.TSSDUObjective(center_block=(2, 2), eval_split_input=True, eval_samples=2),
                      so.MeasurementNoise(so.Phase2PhaseObjective(), 0.05),
                      so.NoisyEIObjective("ddei-cpab", noise_sigma=0.05, mc_loss="sure")):
        net = Scale()
        engine = Engine(net, objective, seed=0)
        engine.build_all()
        before = [w.numpy().copy() for w in net.weights]
        engine.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = engine.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # both interleaved branches
        assert all(np.isfinite(v[0]) for v in history.history.values())
        assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, net.weights))
        assert engine.predict(ds.map(lambda b: {k: b[k] for k in ("x", "y", "mask", "coil_maps")}), steps=1,
                              verbose=0).shape == (1, T, X, Y, 1)


def test_registry_rows_follow_the_backbone_and_noise_keys():
    from reconstruction.methods import METHODS, build_method_model
    from utils.config import load_config
    from utils.schema import ExperimentConfig

    base = ["stage=recon", "model.backbone=crnn", "model.crnn_channels=8", "model.crnn_cascades=1",
            "model.noise_sigma=0.1"]
    engine = build_method_model(load_config(ExperimentConfig, None, base + ["model.method=t-ssdu*"]))
    assert isinstance(engine.network, CRNN) and engine.network.chans == 8
    assert isinstance(engine.objective, so.MeasurementNoise) and engine.objective.objective.eval_split_input
    engine = build_method_model(load_config(ExperimentConfig, None, base + ["model.method=ddei-sure"]))
    objective = engine.objective  # draws its own noise: not wrapped
    assert objective.mc_kind == "sure" and objective.noise_sigma == 0.1 and objective.tau == 0.1
    engine = build_method_model(load_config(ExperimentConfig, None, ["stage=recon", "model.method=phase2phase",
                                                                      "model.filters=4", "model.num_iter=1"]))
    assert type(engine.network).__name__ == "UnrolledNet"
    assert isinstance(engine.objective, so.Phase2PhaseObjective)
    for name in ("t-ssdu", "t-ssdu*", "phase2phase", "ddei-cpab", "ddei-sure", "ei-r-sure"):
        assert METHODS[name].data == "acquired"
    with pytest.raises(ValueError, match="model.backbone: 'crnn' is for the baselines"):
        build_method_model(load_config(ExperimentConfig, None, base[:3] + ["model.method=ssfl-recon"]))


# ------------------------------------------------------------------------------------------- video windows
def test_time_windows_and_ddei_start():
    frames = np.arange(30).reshape(30, 1)
    windows = vw.time_windows(frames, length=12)
    assert windows.shape == (2, 12, 1) and windows[1, 0, 0] == 12
    assert vw.time_windows(frames, length=12, stride=6).shape == (4, 12, 1)
    assert vw.time_windows(np.zeros((2, 12, 3)), axis=1).shape == (1, 2, 12, 3)
    assert vw.ddei_window_start("P001/cine_sax.mat", 12) == 0  # 12-frame cines: always the whole cine
    start = vw.ddei_window_start("P001/cine_sax.mat", 30)
    assert start == vw.ddei_window_start("P001/cine_sax.mat", 30) and 0 <= start <= 18
    with pytest.raises(ValueError, match="length"):
        vw.time_windows(frames[:5], length=12)


def test_normalise_video_is_consistent_with_the_operator():
    batch = _batch(8, batch=1)
    y, mask, maps, ref = batch["y"][0], batch["mask"][0], batch["coil_maps"][0], batch["reference"][0]
    out = vw.normalise_video(y, mask, maps, reference=ref)
    parts = np.stack([ref.real, ref.imag])
    assert math.isclose(out["mean"], parts.mean(), rel_tol=1e-6)
    assert math.isclose(out["std"], parts.std(ddof=1) + 1e-11, rel_tol=1e-6)
    normed = np.stack([out["reference"].real, out["reference"].imag])
    assert abs(normed.mean()) < 1e-5 and abs(normed.std(ddof=1) - 1) < 1e-4
    np.testing.assert_allclose(out["kspace"], mri.forward_np(out["reference"], mask, maps), atol=1e-4)
    np.testing.assert_allclose(vw.denormalise(out["reference"], out["mean"], out["std"]), ref, atol=1e-5)
    zero_filled = vw.normalise_video(y, mask, maps, stats_from="zero_filled", subtract_mean=False)
    np.testing.assert_allclose(zero_filled["kspace"] * zero_filled["std"], y, atol=1e-4)
    with pytest.raises(ValueError, match="reference"):
        vw.normalise_video(y, mask, maps)
