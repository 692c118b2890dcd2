"""Baselines (supervised, SSDU, EI / EI-R / DDEI, dual-UNet), EI transforms, the acquired-data pipeline and
``ssfl-recon benchmark-methods`` on tiny data.

Transforms and SSDU splits are checked against numpy/scipy references and their defining properties; each training
algorithm takes one graph-mode step on tiny random data (T=4, 16x12, 2 coils, 4 filters); the benchmark runs end to
end once per module on 5 synthetic subjects (T=4, 24x16, 2 coils) with two methods and two optimizer steps each.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from helpers import tiny_recon_yaml
from reconstruction import transforms as tr
from reconstruction.baselines import (
    EIObjective,
    SSDUObjective,
    SupervisedObjective,
    UnrolledNet,
    count_params,
    measurement_consistency_loss,
    ssdu_loss,
    ssdu_split,
    supervised_loss,
)
from reconstruction.dual_unet import DualUNetResNet
from utils.engine import Engine
from utils import mri
from utils.config import ConfigError, load_config
from utils.schema import ExperimentConfig

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

T, X, Y, C = 4, 16, 12, 2
SMALL_UNET = dict(filters=4)


def random_complex(rng, shape) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def tiny_batch(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Acquired data of a random complex cine: mask with the centre line, y = A x, x = A^H y, reference."""
    rng = np.random.default_rng(seed)
    reference = random_complex(rng, (batch, T, X, Y, 1))
    maps = random_complex(rng, (batch, 1, X, Y, C))
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=-1, keepdims=True))
    mask = (rng.random((batch, T, 1, Y, 1)) < 0.5).astype(np.float32)
    mask[:, :, :, Y // 2 - 1:Y // 2 + 1] = 1.0
    y = mri.forward_np(reference, mask, maps).astype(np.complex64)
    x = mri.adjoint_np(y, mask, maps).astype(np.complex64)
    return {"x": x, "y": y, "mask": mask, "coil_maps": maps.astype(np.complex64), "reference": reference}


# --------------------------------------------------------------------------------------------- transforms
def test_time_shift_is_a_circular_roll_and_by_T_the_identity():
    x = random_complex(np.random.default_rng(0), (2, T, 5, 3, 1))
    np.testing.assert_array_equal(tr.time_shift(x, T).numpy(), x)
    np.testing.assert_array_equal(tr.time_shift(x, -T).numpy(), x)
    np.testing.assert_array_equal(tr.time_shift(x, 1).numpy(), np.roll(x, 1, axis=1))
    per_example = tr.time_shift(x, [1, 3]).numpy()  # one shift per batch element
    np.testing.assert_array_equal(per_example[0], np.roll(x[0], 1, axis=0))
    np.testing.assert_array_equal(per_example[1], np.roll(x[1], 3, axis=0))


def test_rotation_by_zero_is_identity_and_quarter_turns_match_rot90():
    rng = np.random.default_rng(1)
    odd = random_complex(rng, (1, 2, 7, 5, 1))  # odd, non-square
    np.testing.assert_allclose(tr.rotate(odd, 0.0).numpy(), odd, atol=1e-6)
    square = random_complex(rng, (2, 2, 6, 6, 1))
    quarter = tr.rotate(square, np.pi / 2).numpy()
    np.testing.assert_allclose(quarter, np.rot90(square, 1, axes=(2, 3)), atol=1e-5)
    full = square
    for _ in range(4):
        full = tr.rotate(full, np.pi / 2)
    np.testing.assert_allclose(full.numpy(), square, atol=1e-5)


def test_bilinear_sample_matches_scipy_map_coordinates():
    rng = np.random.default_rng(2)
    image = rng.standard_normal((1, 3, 9, 7, 1)).astype(np.float32)
    coords = np.stack([rng.uniform(-1.5, 9.5, (9, 7)), rng.uniform(-1.5, 7.5, (9, 7))], axis=-1)
    ours = tr.bilinear_sample(image, coords[None].astype(np.float32), fill="zeros").numpy()
    for t in range(3):
        ref = ndimage.map_coordinates(np.pad(image[0, t, :, :, 0], 1), [coords[..., 0] + 1, coords[..., 1] + 1],
                                      order=1, mode="constant", cval=0.0)
        np.testing.assert_allclose(ours[0, t, :, :, 0], ref, atol=1e-5)
    border = tr.bilinear_sample(image, coords[None].astype(np.float32), fill="border").numpy()
    clamped = np.stack([np.clip(coords[..., 0], 0, 8), np.clip(coords[..., 1], 0, 6)])
    ref = ndimage.map_coordinates(image[0, 0, :, :, 0], clamped, order=1, mode="nearest")
    np.testing.assert_allclose(border[0, 0, :, :, 0], ref, atol=1e-5)


def test_zero_warp_is_identity_and_random_warps_are_smooth_diffeomorphisms():
    x = random_complex(np.random.default_rng(3), (2, T, 20, 14, 1))
    np.testing.assert_allclose(tr.warp(x, tf.zeros([2, 20, 14, 2])).numpy(), x, atol=1e-6)
    field = tr.random_displacement(tf.constant([4, 2]), 3, 40, 32, max_displacement=0.05).numpy()
    assert field.shape == (3, 40, 32, 2)
    assert 0.05 < np.abs(field).max() <= 0.05 * 32 + 1e-4  # moves, but at most the requested amount
    # Jacobian of the map p -> p + u(p): small gradients and a positive determinant everywhere (invertible)
    du_dr = np.diff(field, axis=1)[:, :, :-1]
    du_dc = np.diff(field, axis=2)[:, :-1]
    assert np.abs(du_dr).max() < 0.3 and np.abs(du_dc).max() < 0.3
    det = (1 + du_dr[..., 0]) * (1 + du_dc[..., 1]) - du_dc[..., 0] * du_dr[..., 1]
    assert det.min() > 0.5


def test_random_warp_keeps_the_image_range_and_is_linear():
    rng = np.random.default_rng(4)
    image = rng.uniform(0.2, 1.3, (2, T, 24, 18, 1)).astype(np.float32)
    warped = tr.Diffeo(max_displacement=0.1)(image, tf.constant([7, 1])).numpy()
    assert not np.allclose(warped, image)
    assert warped.min() >= image.min() - 1e-6 and warped.max() <= image.max() + 1e-6
    # complex cines: the transforms act linearly, the same on real and imaginary parts
    a, b = random_complex(rng, (2, T, 24, 18, 1)), random_complex(rng, (2, T, 24, 18, 1))
    seed = tf.constant([5, 9])
    for name in ("diffeo", "rotate", "ddei"):
        transform = tr.make_transform(name)
        lhs = transform(a + 2j * b, seed).numpy()
        rhs = transform(a, seed).numpy() + 2j * transform(b, seed).numpy()
        np.testing.assert_allclose(lhs, rhs, atol=1e-4, err_msg=name)


def test_transform_algebra_picks_or_chains():
    x = random_complex(np.random.default_rng(5), (1, T, 6, 6, 1))
    identity = tr.Rotate(max_degrees=0.0)
    outcomes = set()
    for s in range(12):
        out = (tr.TimeShift() | identity)(x, tf.constant([s, 0])).numpy()
        rolls = [k for k in range(T) if np.allclose(out, np.roll(x, k, axis=1), atol=1e-6)]
        assert len(rolls) == 1  # either untouched or a pure time shift
        outcomes.add(rolls[0] == 0)
    assert outcomes == {True, False}  # both branches happen
    chained = (tr.TimeShift() * identity)(x, tf.constant([3, 3])).numpy()
    assert any(np.allclose(chained, np.roll(x, k, axis=1), atol=1e-6) for k in range(1, T))
    with pytest.raises(ValueError, match=r"unknown transform .shear.; valid transforms: time-shift, .*rotate, diffeo"):
        tr.make_transform("shear")


# --------------------------------------------------------------------------------------------- SSDU split
@pytest.mark.parametrize("selection", ["uniform", "gaussian"])
def test_ssdu_split_is_a_disjoint_partition_with_the_requested_ratio(selection):
    mask = tiny_batch(0, batch=3)["mask"]
    dc, loss = (m.numpy() for m in ssdu_split(mask, tf.constant([1, 2]), 0.6, selection, center_lines=2))
    assert set(np.unique(dc)) <= {0.0, 1.0} and set(np.unique(loss)) <= {0.0, 1.0}
    assert np.all(dc * loss == 0)
    np.testing.assert_array_equal(dc + loss, mask)
    for b in range(3):
        assert loss[b].sum() == np.round(0.4 * mask[b].sum())
    assert np.all(loss[:, :, :, Y // 2 - 1:Y // 2 + 1] == 0)  # the central lines stay in the DC set
    other, _ = ssdu_split(mask, tf.constant([1, 3]), 0.6, selection, center_lines=2)
    assert not np.array_equal(other.numpy(), dc)  # a new split per seed


def test_gaussian_ssdu_selection_holds_out_points_nearer_the_centre():
    mask = np.ones((64, 8, 1, 48, 1), np.float32)
    ky = np.abs(np.arange(48) - 24)[None, None, None, :, None]
    distances = {}
    for selection in ("uniform", "gaussian"):
        _, loss = ssdu_split(mask, tf.constant([0, 1]), 0.6, selection, center_lines=0)
        loss = loss.numpy()
        distances[selection] = float((loss * ky).sum() / loss.sum())
    assert distances["gaussian"] < 0.8 * distances["uniform"]


def test_ssdu_split_rejects_bad_arguments():
    mask = tiny_batch()["mask"]
    with pytest.raises(ValueError, match="split_ratio"):
        ssdu_split(mask, [0, 0], split_ratio=1.0)
    with pytest.raises(ValueError, match="selection: expected one of"):
        ssdu_split(mask, [0, 0], selection="poisson")


# --------------------------------------------------------------------------------------------- losses
def test_losses_match_numpy_references():
    rng = np.random.default_rng(6)
    data = tiny_batch(1)
    recon = random_complex(rng, data["reference"].shape)
    diff = recon - data["reference"]
    np.testing.assert_allclose(supervised_loss(recon, data["reference"], "mse"), np.mean(np.abs(diff) ** 2),
                               rtol=1e-5)
    np.testing.assert_allclose(supervised_loss(recon, data["reference"], "l1"), np.mean(np.abs(diff)), rtol=1e-5)
    loss_mask = data["mask"] * (rng.random(data["mask"].shape) < 0.4)
    residual = mri.forward_np(recon, loss_mask, data["coil_maps"]) - loss_mask * data["y"]
    target = loss_mask * data["y"]

    def parts(z):
        return np.concatenate([z.real, z.imag]).ravel().astype(np.float64)

    expected = (np.linalg.norm(parts(residual)) / np.linalg.norm(parts(target))
                + np.abs(parts(residual)).sum() / np.abs(parts(target)).sum())
    np.testing.assert_allclose(ssdu_loss(recon, data["y"], loss_mask, data["coil_maps"]), expected, rtol=1e-4)
    # the measurement-consistency loss vanishes at the truth and not elsewhere
    truth = measurement_consistency_loss(data["reference"], data["y"], data["mask"], data["coil_maps"])
    assert float(truth) < 1e-10
    assert float(measurement_consistency_loss(recon, data["y"], data["mask"], data["coil_maps"])) > 0.1


def test_unrolled_net_without_regulariser_is_one_gradient_dc_step():
    data = tiny_batch(2)
    net = UnrolledNet(1, unet=SMALL_UNET)
    net.build()
    net.taus[0].scalar.assign([0.0])
    net.dcs[0].weights[0].assign([0.5])
    out = net(data["x"], data["y"], data["mask"], data["coil_maps"]).numpy()
    residual = mri.forward_np(data["x"], data["mask"], data["coil_maps"]) - data["y"]
    expected = data["x"] - 0.5 * mri.adjoint_np(residual, data["mask"], data["coil_maps"])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_dual_unet_shapes_and_frame_check():
    net = DualUNetResNet(T, filters=4, num_levels=2, name="dual")
    net.build()
    x = random_complex(np.random.default_rng(7), (2, T, 17, 13, 1))  # odd sizes
    out = net(x)
    assert out.shape == x.shape and out.dtype == tf.complex64
    assert np.all(np.isfinite(out.numpy()))
    with pytest.raises(ValueError, match=f"built for {T} frames"):
        net(random_complex(np.random.default_rng(8), (1, T + 1, 8, 8, 1)))


# ------------------------------------------------------------------------------------- one step per method
def _trainers():
    def unrolled():
        return UnrolledNet(1, unet=SMALL_UNET)

    return {
        "supervised": lambda: Engine(unrolled(), SupervisedObjective(loss="l1")),
        "ssdu": lambda: Engine(unrolled(), SSDUObjective(selection="uniform", center_lines=2)),
        "ei-r": lambda: Engine(unrolled(), EIObjective(transform="rotate")),
        "ddei": lambda: Engine(unrolled(), EIObjective(transform="ddei")),
        "dual-unet": lambda: Engine(DualUNetResNet(T, filters=4, num_levels=2), SupervisedObjective()),
    }


@pytest.mark.parametrize("name", list(_trainers()))
def test_one_training_step_changes_every_weight_with_a_finite_loss(name):
    # eager here (a graph trace per method costs 8-15 s on the CI CPU); the benchmark test below trains SSDU and
    # DDEI through model.fit in graph mode
    keras.utils.set_random_seed(0)
    model = _trainers()[name]()
    model.build_all()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = [np.array(v) for v in model.trainable_variables]
    data = {k: tf.constant(v) for k, v in tiny_batch(3).items()}
    seed_before = model.step_seed(True).numpy()
    logs = model.train_step(data)
    assert np.isfinite(float(logs["loss"])) and float(logs["loss"]) > 0
    assert not np.array_equal(model.step_seed(True).numpy(), seed_before)  # new random draws every step
    unchanged = [v.path for v, b in zip(model.trainable_variables, before) if np.array_equal(np.array(v), b)]
    assert not unchanged, f"{name}: no update of {unchanged}"
    recon = model({k: data[k] for k in ("x", "y", "mask", "coil_maps")})
    assert recon.shape == data["x"].shape


def test_ei_loss_gradient_flows_through_the_transformed_image():
    # x2 = T(f(y)) is not a constant: the equivariance term alone has gradients w.r.t. the network
    model = Engine(UnrolledNet(1, unet=SMALL_UNET), EIObjective(transform="time-shift", ei_weight=1.0))
    model.build_all()
    data = {k: tf.constant(v) for k, v in tiny_batch(4).items()}
    with tf.GradientTape() as tape:
        losses = model.compute_losses(data, training=True)
    grads = tape.gradient(losses["ei_loss"], model.trainable_variables)
    assert all(g is not None for g in grads)
    assert float(losses["ei_loss"]) > 0 and np.isfinite(float(losses["mc_loss"]))


# --------------------------------------------------------------------------------------------- config
def test_config_method_keys_and_dispatch(tmp_path):
    from reconstruction.methods import get_method
    from reconstruction.train import build_recon_model

    with pytest.raises(ConfigError, match="model.method: expected one of"):
        load_config(ExperimentConfig, None, ["model.method=noise2noise"])
    with pytest.raises(ValueError, match="valid methods: ssfl-recon, supervised"):
        get_method("noise2noise")
    cfg = load_config(ExperimentConfig, None, ["stage=recon", "model.method=ssdu", "model.filters=4",
                                               "model.num_iter=1", "model.ssdu_split_ratio=0.7"])
    model = build_recon_model(cfg)
    assert isinstance(model.objective, SSDUObjective) and model.objective.split_ratio == 0.7
    assert count_params(model.trainable_weights) == count_params(model.network.trainable_weights) > 0


# --------------------------------------------------------------------------------------------- benchmark
BENCH_SECTIONS = """\
train:
  epochs: 1
  steps_per_epoch: 2
  run_dir: {out}
benchmark:
  methods: [ssdu, ddei]
  accelerations: [4, 8]
  gaussian_accelerations: [4]
  max_cases: 1
  figure_acceleration: 4
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    from scripts.cli import main

    base = tmp_path_factory.mktemp("bench")
    config = base / "bench.yaml"
    config.write_text(tiny_recon_yaml(base / "data", base / "masks") + BENCH_SECTIONS.format(out=base / "unused"),
                      encoding="utf-8")
    out = base / "out"
    assert main(["benchmark-methods", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    return {"base": base, "config": config, "out": out}


@pytest.mark.slow
def test_benchmark_writes_table_training_record_and_figure(bench):
    out: Path = bench["out"]
    training = json.loads((out / "training.json").read_text())
    assert list(training) == ["ssdu", "ddei"]
    for info in training.values():
        assert info["steps"] == 2 and info["train_seconds"] > 0 and info["params"] > 0
        assert (Path(info["run_dir"]) / "model.weights.h5").is_file()
    table = (out / "table.md").read_text()
    for family, acc in (("vista", 4), ("vista", 8), ("gaussian", 4)):
        for method in ("zero-filled", "ssdu", "ddei"):
            assert f"| {family} | {acc} | {method} |" in table
    assert f"| ssdu | {training['ssdu']['params']:,} | 2 |" in table
    summary = json.loads((out / "eval_vista" / "summary.json").read_text())
    assert np.isfinite(summary["ddei"]["8"]["psnr"][0])
    assert (out / "method_grid.png").stat().st_size > 0 and "method_grid.png" in (out / "report.md").read_text()


def test_acquired_dataset_uses_the_base_acquisition_and_own_masks(bench):
    from data_loader import pipelines
    from data_loader.masks import get_vista_mask, mask_to_tensor_layout
    from reconstruction.benchmark_methods import load_benchmark_config

    cfg = load_benchmark_config(bench["config"]).data
    data = pipelines.load_split(cfg, "train")
    example = next(iter(pipelines.acquired_dataset(cfg, "val", seed=0)))
    val = pipelines.load_split(cfg, "val")
    ny, nt = data.shape(0)[2], data.shape(0)[0]
    base = mask_to_tensor_layout(get_vista_mask(ny, nt, cfg.start_r, pipelines.BASE_MASK_SEED,
                                                cache_dir=Path(cfg.mask_cache)))
    np.testing.assert_array_equal(example["mask"].numpy(), base)
    np.testing.assert_allclose(example["y"].numpy(), base * val.kspace[0][None], atol=1e-6)
    np.testing.assert_allclose(example["x"].numpy(), mri.adjoint_np(example["y"].numpy(), base,
                                                                     val.coil_maps[0][None]), atol=1e-5)
    np.testing.assert_array_equal(example["reference"].numpy(), val.image[0][None])
    own = next(iter(pipelines.acquired_dataset(cfg, "train", seed=0, mask_kind="vd-random", accelerations=[5],
                                               num_center=11)))["mask"].numpy()[0, :, 0, :, 0]  # (T, Y)
    assert np.all(own[:, ny // 2] == 1)  # the centre is sampled in every frame
    assert len({row.tobytes() for row in own}) > 1  # a different mask per frame
    with pytest.raises(ValueError, match="accelerations"):
        pipelines.acquired_dataset(cfg, "train", accelerations=[0.5])


@pytest.mark.parametrize("name", ["benchmark.yaml", "benchmark_gpu.yaml"])
def test_shipped_benchmark_configs_load_and_give_valid_method_configs(tmp_path, name):
    from reconstruction.benchmark_methods import TRAINED, BenchmarkConfig, load_benchmark_config, method_config
    from utils.config import save_config

    path = Path(__file__).resolve().parents[2] / "configs" / name
    cfg = load_benchmark_config(path)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(BenchmarkConfig, tmp_path / "config.yaml") == cfg
    for method in (m for m in cfg.benchmark.methods if m in TRAINED):
        mcfg = method_config(cfg, method, tmp_path / method)
        assert mcfg.model.method == TRAINED[method][0] and mcfg.train.run_dir == str(tmp_path / method)
    with pytest.raises(ConfigError, match="benchmark.methods: unknown"):
        load_benchmark_config(path, ["benchmark.methods=[supervised,noise2noise]"])


def test_baselines_train_with_recompute_through_the_engine():
    # recompute lives in the shared unrolled block: an SSDU engine with it has the gradients of one without it
    data = {k: tf.constant(v) for k, v in tiny_batch(5).items()}
    grads = {}
    for recompute in (False, True):
        keras.utils.set_random_seed(3)
        model = Engine(UnrolledNet(2, unet=SMALL_UNET, recompute=recompute), SSDUObjective(center_lines=2), seed=4)
        model.build_all()
        with tf.GradientTape() as tape:
            loss = model.compute_losses(data, training=True)["loss"]
        grads[recompute] = (float(loss), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    assert grads[True][0] == pytest.approx(grads[False][0], rel=1e-6)
    assert len(grads[True][1]) == len(grads[False][1]) > 0
    for a, b in zip(grads[True][1], grads[False][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max() + 1e-12)


def test_baseline_builders_pass_training_options_to_the_network(tmp_path):
    from reconstruction.methods import build_method_model

    cfg = load_config(ExperimentConfig, None, ["stage=recon", "model.method=ssdu", "model.filters=4",
                                               "model.num_iter=1", "train.recompute=true"])
    model = build_method_model(cfg)
    assert model.network.recompute and isinstance(model.objective, SSDUObjective)
