"""Dual-UNet + 3D ResNet (reconstruction/dual_unet.py): that it learns, and the project's recipe as options.

The learning test trains the benchmark's design (tiny: 4 filters, 2 levels) for 30 steps on one phantom cine with
an R = 4 variable-density mask and checks that the loss falls below the zero-filled input's loss and the PSNR
beats zero-filling, with margins. The design that preceded the fix started at a loss thousands of times the
input's (a large offset from the linear fusion head) and could not reach full resolution (see the module
docstring); the identity-start test pins the first of these.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_loader.masks import mask_to_tensor_layout, vd_random_mask
from data_loader.phantom import make_phantom
from reconstruction.baselines import supervised_loss
from utils.engine import Engine
from reconstruction.dual_unet import (
    AttentionUNet2D,
    DualUNetResNet,
    DualUNetObjective,
    WarmupCosine,
    project_psnr,
    project_ssim,
)
from utils import mri
from utils.config import ConfigError, load_config
from utils.schema import ExperimentConfig

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

T, X, Y = 4, 32, 32
TINY = dict(filters=4, num_levels=2)


def phantom_case(seed: int = 3, acc: float = 4.0) -> dict[str, tf.Tensor]:
    """One single-coil phantom cine (1,T,X,Y,1), a vd-random mask at ``acc`` and its zero-filled image."""
    reference = make_phantom(T, X, Y, seed=seed)["image"][None, ..., None].astype(np.complex64)
    mask = mask_to_tensor_layout(vd_random_mask(Y, T, acc=acc, num_center=4, seed=seed)).astype(np.float32)
    maps = np.ones((1, 1, X, Y, 1), np.complex64)
    y = mri.forward_np(reference, mask, maps).astype(np.complex64)
    x = mri.adjoint_np(y, mask, maps).astype(np.complex64)
    return {k: tf.constant(v) for k, v in
            {"x": x, "y": y, "mask": mask, "coil_maps": maps, "reference": reference}.items()}


def psnr(recon, reference) -> float:
    recon, reference = np.asarray(recon), np.asarray(reference)
    return float(10 * np.log10(np.max(np.abs(reference)) ** 2 / np.mean(np.abs(recon - reference) ** 2)))


def trainer(**network_kwargs) -> Engine:
    keras.utils.set_random_seed(0)
    model = Engine(DualUNetResNet(T, **{**TINY, **network_kwargs}), DualUNetObjective())
    model.build_all()
    return model


# --------------------------------------------------------------------------------------------- learning
def test_starts_as_the_identity_at_the_input_loss():
    # the root cause of "does not learn": the linear fusion head summed non-negative ReLU features into an offset
    # of several units (training loss 4800x the input's); the residual network with near-zero heads starts at x
    case = phantom_case()
    model = trainer()
    out = model.network(case["x"], training=True)
    input_loss = float(supervised_loss(case["x"], case["reference"]))
    assert float(supervised_loss(out, case["reference"])) == pytest.approx(input_loss, rel=0.02)
    assert float(tf.reduce_max(tf.abs(out - case["x"]))) < 0.05 * float(tf.reduce_max(tf.abs(case["x"])))


def test_thirty_steps_beat_the_input_loss_and_zero_filling():
    case = phantom_case()
    model = trainer()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    step = tf.function(model.train_step)
    input_loss = float(supervised_loss(case["x"], case["reference"]))
    losses = [float(step(case)["loss"]) for _ in range(30)]
    model.trackers[0].reset_state()
    last = float(model.compute_losses(case, training=True)["loss"])
    assert np.all(np.isfinite(losses))
    assert last < 0.85 * input_loss, (input_loss, losses)  # measured: 0.75 x (0.67 x with part_inputs='own')
    recon = model({k: case[k] for k in ("x", "y", "mask", "coil_maps")}, training=False)
    zero_filled = psnr(case["x"], case["reference"])
    # measured: +1.2 dB (17.7 against 16.5 dB; 'own': +1.4 dB)
    assert psnr(recon, case["reference"]) > zero_filled + 0.5, (psnr(recon, case["reference"]), zero_filled)


# --------------------------------------------------------------------------------------------- options
def test_dropout_follows_the_project_levels():
    unet = AttentionUNet2D(T, filters=2, num_levels=4, dropout=0.3)  # default levels: the project's 1, 2, 4
    unet.build((None, None, None, T))
    seen = []
    drop = unet.drop

    def record(x, training=None):
        seen.append(int(x.shape[-1]))
        return drop(x, training=training)

    unet.drop = record
    unet(tf.zeros([1, 16, 16, T]), training=True)
    assert seen == [2, 4, 16]  # channels 2 * 2**level for levels 0, 1, 3 (not 2, not the bottleneck)
    with pytest.raises(ValueError, match="dropout_levels"):
        AttentionUNet2D(T, dropout_levels=[-1])


@pytest.mark.parametrize("variant", ["dual-resnet", "dual", "single-resnet"])
@pytest.mark.parametrize("mode", ["complex", "magnitude", "sigmoid"])
def test_output_modes_and_variants(mode, variant):
    case = phantom_case()
    keras.utils.set_random_seed(1)
    net = DualUNetResNet(T, output_mode=mode, variant=variant, **TINY)
    net.build()
    out = net(case["x"], training=False).numpy()
    assert out.shape == case["x"].shape and out.dtype == np.complex64 and np.all(np.isfinite(out))
    if mode == "complex":
        assert np.abs(out.imag).max() > 1e-3
    else:
        assert net.output_is_magnitude and np.all(out.imag == 0) and np.all(out.real >= 0)
    if mode == "sigmoid":
        upper = np.sqrt(2.0) if variant == "dual" else 1.0  # |(sigmoid, sigmoid)| without the ResNet's sigmoid
        assert out.real.max() <= upper + 1e-6
    names = {w.path.split("/")[1] for w in net.weights}
    assert ("resnet" in names) == (variant != "dual")
    assert len(net.unets) == (1 if variant == "single-resnet" else 2)
    clone = DualUNetResNet.from_config(net.get_config())
    assert (clone.output_mode, clone.variant, clone.dropout_levels) == (mode, variant, (0, 1, 3))


def test_part_inputs():
    # complex modes: each UNet sees the real and imaginary parts (the aliasing of one part depends on both);
    # the project's sigmoid network: each UNet its own part
    case = phantom_case()
    for mode, kwargs, channels in (("complex", {}, 2 * T), ("sigmoid", {}, T),
                                   ("complex", {"part_inputs": "own"}, T)):
        net = DualUNetResNet(T, output_mode=mode, **TINY, **kwargs)
        net.build()
        first = net.unets[0].encoders[0].conv_1.kernel
        assert first.shape[2] == channels, (mode, kwargs)
        assert net(case["x"], training=False).shape == case["x"].shape
        assert DualUNetResNet.from_config(net.get_config()).part_inputs == net.part_inputs
    with pytest.raises(ValueError, match="part_inputs: expected one of"):
        DualUNetResNet(T, part_inputs="mixed")


def test_magnitude_modes_train_against_the_magnitude_reference():
    case = phantom_case()
    rotated = {**case, "reference": case["reference"] * tf.constant(np.exp(1.3j), tf.complex64)}  # other phase
    model = trainer(output_mode="magnitude")
    loss = float(model.compute_losses(case, training=False)["loss"])
    assert float(model.compute_losses(rotated, training=False)["loss"]) == pytest.approx(loss, rel=1e-5)
    complex_model = trainer()
    assert float(complex_model.compute_losses(rotated, training=False)["loss"]) > 2 * float(
        complex_model.compute_losses(case, training=False)["loss"])


def test_data_consistency_option_restores_the_acquired_lines():
    # single coil, w = 1: x - A^H(A x - y) has exactly the acquired k-space on the mask
    case = phantom_case()
    args = (case["x"], case["y"], case["mask"], case["coil_maps"])
    keras.utils.set_random_seed(2)
    net = DualUNetResNet(T, data_consistency=True, **TINY)
    net.build()
    out = net(*args, training=True)
    np.testing.assert_allclose(mri.forward_np(out.numpy(), case["mask"].numpy(), case["coil_maps"].numpy()),
                               case["y"].numpy(), atol=1e-4)
    # with a ResNet: a second step between the UNets and the ResNet
    assert {"dc", "dc_unets"} <= {w.path.split("/")[1] for w in net.trainable_weights}
    assert DualUNetResNet.from_config(net.get_config()).data_consistency
    no_resnet = DualUNetResNet(T, data_consistency=True, variant="dual", **TINY)
    no_resnet.build()
    assert no_resnet.dc_unets is None and no_resnet.dc is not None
    with pytest.raises(ValueError, match="data_consistency: needs output_mode"):
        DualUNetResNet(T, output_mode="sigmoid", data_consistency=True)
    with pytest.raises(ConfigError, match="model.dual_unet_dc"):
        load_config(ExperimentConfig, None, ["model.dual_unet_dc=true", "model.dual_unet_output=sigmoid"])


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(1e-4, total_steps=200)  # warm-up: int(0.05 * 200) = 10 steps
    lr = [float(schedule(s)) for s in range(201)]
    assert lr[0] == pytest.approx(1e-7, rel=1e-4)
    assert lr[5] == pytest.approx(1e-7 + 5 * (1e-4 - 1e-7) / 10, rel=1e-4)
    assert lr[10] == pytest.approx(1e-4, rel=1e-5)
    assert lr[105] == pytest.approx(0.5e-4, rel=1e-4)
    assert lr[200] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(lr[:11]) > 0) and np.all(np.diff(lr[10:]) <= 0)
    assert WarmupCosine.from_config(schedule.get_config()).warmup_steps == 10


def test_trainer_installs_the_schedule_and_validates():
    model = Engine(DualUNetResNet(T, **TINY), DualUNetObjective(lr_schedule="warmup-cosine", total_steps=40))
    model.build_all()
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-6, rel=1e-4)  # step 0: 1e-3 x peak
    with pytest.raises(ValueError, match="total_steps"):
        DualUNetObjective(lr_schedule="warmup-cosine")
    with pytest.raises(ValueError, match="lr_schedule: expected one of"):
        DualUNetObjective(lr_schedule="step")
    with pytest.raises(ValueError, match="output_mode: expected one of"):
        DualUNetResNet(T, output_mode="phase")


def test_weight_decay_is_pytorch_adams_coupled_l2():
    # with SGD the update difference of weight_decay=w against 0 is exactly lr * w * v
    case = phantom_case()
    updated = []
    for decay in (0.0, 0.5):
        model = trainer(dropout=0.0)
        model.objective.weight_decay = decay
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [np.array(v) for v in model.trainable_variables]
        model.train_step(case)
        updated.append([np.array(v) for v in model.trainable_variables])
    for b, plain, decayed in zip(before, *updated):
        np.testing.assert_allclose(plain - decayed, 0.1 * 0.5 * b, rtol=1e-3, atol=1e-6)


def test_project_metrics():
    rng = np.random.default_rng(0)
    reference = rng.random((12, 16, 16)).astype(np.float32)
    assert project_psnr(reference + 0.1, reference) == pytest.approx(20.0, abs=1e-4)  # peak 1, MSE 0.01
    assert project_ssim(reference, reference) == pytest.approx(1.0, abs=1e-9)
    noisy = reference + 0.3 * rng.standard_normal(reference.shape).astype(np.float32)
    assert 0.0 < project_ssim(noisy, reference) < 0.9
    with pytest.raises(ValueError, match="11 samples"):
        project_ssim(reference[:4], reference[:4])


# --------------------------------------------------------------------------------------------- config
def test_config_keys_and_the_original_recipe_file():
    for key, bad in (("dual_unet_output", "phase"), ("dual_unet_variant", "triple"),
                     ("dual_unet_lr_schedule", "step"), ("dual_unet_masks", "mixed")):
        with pytest.raises(ConfigError, match=f"model.{key}: expected one of"):
            load_config(ExperimentConfig, None, [f"model.{key}={bad}"])
    with pytest.raises(ConfigError, match="model.dual_unet_dropout"):
        load_config(ExperimentConfig, None, ["model.dual_unet_dropout=1.5"])
    cfg = load_config(ExperimentConfig, "configs/dual_unet_original.yaml")
    m = cfg.model
    assert (m.method, m.dual_unet_output, m.dual_unet_weight_decay, m.dual_unet_lr_schedule) == (
        "dual-unet", "sigmoid", 1e-4, "warmup-cosine")
    assert (m.dual_unet_filters, m.dual_unet_levels, m.dual_unet_dropout, m.dual_unet_dropout_levels) == (
        64, 4, 0.3, [0, 1, 3])
    assert (cfg.train.batch_size, cfg.train.learning_rate, m.dual_unet_masks) == (10, 1e-4, "fixed")


def test_builder_and_fixed_masks(tmp_path):
    from reconstruction.methods import build_method_model, method_dataset

    root, masks = tmp_path / "data", tmp_path / "masks"
    sets = ["stage=recon", "model.method=dual-unet", f"data.root={root}", f"data.mask_cache={masks}",
            "data.size=[4,24,40,2]", "data.subjects=5", "model.dual_unet_filters=4", "model.dual_unet_levels=2",
            "train.epochs=2", "model.dual_unet_lr_schedule=warmup-cosine", "model.dual_unet_weight_decay=1e-4",
            "model.dual_unet_variant=dual"]
    cfg = load_config(ExperimentConfig, None, sets)
    model = build_method_model(cfg)  # generates the data: one pass of the 3 training examples, 2 epochs
    objective = model.objective
    assert isinstance(objective, DualUNetObjective) and objective.total_steps == 6 and objective.weight_decay == 1e-4
    assert model.network.variant == "dual" and model.network.resnet is None

    def masks_of(kind):
        cfg.model.dual_unet_masks = kind
        stream = iter(method_dataset(cfg, "train", 0))
        return [np.asarray(next(stream)["mask"]) for _ in range(4)]

    fixed, random = masks_of("fixed"), masks_of("random")
    assert all(np.array_equal(m, fixed[0]) for m in fixed)
    assert not all(np.array_equal(m, random[0]) for m in random)
    lines = fixed[0][0, :, 0, :, 0]  # (T, Y): R = 5 of 40 lines -> 8 per frame, a different draw per frame
    assert np.all(lines.sum(axis=1) == 8) and not np.array_equal(lines[0], lines[1])


# --------------------------------------------------------------------------------------------- benchmark family
def test_benchmark_vd_random_family_is_parsed_and_validated():
    from reconstruction.benchmark_methods import load_benchmark_config

    cfg = load_benchmark_config("configs/benchmark.yaml")
    assert cfg.benchmark.vd_random_accelerations == [5.0]  # the dual-UNet's own R
    assert load_benchmark_config("configs/benchmark.yaml", ["benchmark.vd_random_accelerations=[]"]
                                 ).benchmark.vd_random_accelerations == []  # empty: no such family
    for bad in ("[0.5]", "[5, 5]", "[.inf]"):
        with pytest.raises(ConfigError, match="benchmark.vd_random_accelerations: expected distinct finite R"):
            load_benchmark_config("configs/benchmark.yaml", [f"benchmark.vd_random_accelerations={bad}"])
    with pytest.raises(ConfigError, match="vd_random_accelerations"):
        load_benchmark_config("configs/benchmark.yaml", ["benchmark.vd_random_accelerations=[five]"])


def test_vd_random_eval_cases_use_the_training_mask_rule(tmp_path):
    from data_loader import pipelines
    from data_loader.datasets import acquired_mask
    from data_loader.eval_cases import case_seed_of
    from reconstruction.methods import DUAL_UNET_ACCELERATION, DUAL_UNET_CENTER_LINES

    cfg = load_config(ExperimentConfig, None, ["stage=recon", f"data.root={tmp_path / 'data'}",
                                               f"data.mask_cache={tmp_path / 'masks'}", "data.size=[4,24,40,2]",
                                               "data.subjects=5"]).data
    pipelines.ensure_synthetic_data(cfg)
    cases = list(pipelines.eval_cases(cfg, "test", DUAL_UNET_ACCELERATION, mask_kind="vd-random", seed=7,
                                      num_center=DUAL_UNET_CENTER_LINES))
    assert cases
    for index, case in enumerate(cases):
        lines = case["mask"][0, :, 0, :, 0]  # (T, Y): 40 / 5 = 8 lines per frame, 11 central capped at 4
        assert np.all(lines.sum(axis=1) == 8) and np.all(lines[:, 18:22] == 1)
        expected = acquired_mask("vd-random", 40, 4, DUAL_UNET_ACCELERATION, case_seed_of(7, index), None,
                                  DUAL_UNET_CENTER_LINES)
        np.testing.assert_array_equal(lines, expected.T)
    with pytest.raises(ValueError, match="num_center"):  # the generator's default (11) does not fit 8 lines
        next(pipelines.eval_cases(cfg, "test", DUAL_UNET_ACCELERATION, mask_kind="vd-random"))
