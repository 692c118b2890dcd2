"""Speed and memory options: hand-written gradients, real-split masking, gradient checkpointing (recompute),
float16 convolutions (mixed precision) and the ``benchmark`` command.

The hand-written backward passes must give the gradient of the unchanged forward ops; forward outputs stay
bit-identical (the golden tests cover the whole networks).
"""
from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_learning.model import FeatureNet
from reconstruction.model import SSFLRecon
from scripts.cli import main
from helpers import feature_loss, random_complex, random_mask, ssl_losses
from utils import complex_layers as cl
from utils import mri
from utils.recompute import recompute_complex

TINY_UNET = dict(filters=4)


def _gradients(fn, *args):
    """Values and gradients of a fixed random real projection of fn(*args) (complex output)."""
    rng = np.random.default_rng(7)
    with tf.GradientTape() as tape:
        tape.watch(args)
        out = fn(*args)
        probe = tf.constant(random_complex(rng, out.shape))
        loss = tf.reduce_sum(tf.math.real(tf.math.conj(probe) * out))
    return out, tape.gradient(loss, args)


def _rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ------------------------------------------------------------------------------------ reference forwards
def _modrelu_autodiff(x, bias):
    magnitude = tf.sqrt(tf.math.real(tf.math.conj(x) * x) + cl.MODRELU_EPS)
    gain = tf.nn.relu(magnitude + bias)
    return tf.cast(gain, x.dtype) * (x / tf.cast(magnitude, x.dtype))


def _instance_norm_autodiff(x, eps=1e-4):
    axes = [1, 2, 3]
    x = x - tf.reduce_mean(x, axis=axes, keepdims=True)
    re, im = tf.math.real(x), tf.math.imag(x)

    def var(v):
        return tf.reduce_mean(tf.square(v - tf.reduce_mean(v, axis=axes, keepdims=True)), axis=axes, keepdims=True)

    w_rr, w_ii, w_ri = cl._whitening(var(re) + eps, var(im) + eps, tf.reduce_mean(re * im, axis=axes, keepdims=True))
    return tf.complex(re * w_rr + im * w_ri, re * w_ri + im * w_ii)


@pytest.mark.parametrize("graph", [False, True])
def test_hand_written_gradients_match_automatic_differentiation(graph):
    rng = np.random.default_rng(0)
    x = tf.constant(random_complex(rng, (2, 3, 7, 5, 3)))
    kernel = tf.constant(rng.standard_normal((3, 3, 1, 3, 4, 2)).astype(np.float32))
    bias = tf.constant(np.array([0.4, -0.8, 0.1], np.float32))  # one negative bias switches elements off
    pairs = {
        "conv": (lambda a, k: cl.complex_conv3d(a, k, fast_grad=True),
                 lambda a, k: cl.complex_conv3d(a, k, fast_grad=False), (x, kernel)),
        "modrelu": (cl.modrelu, _modrelu_autodiff, (x, bias)),
        "instance_norm": (cl.complex_instance_norm, _instance_norm_autodiff, (x,)),
    }
    for name, (fast, reference, args) in pairs.items():
        run = tf.function(_gradients) if graph else _gradients
        y_fast, g_fast = run(fast, *args)
        y_ref, g_ref = run(reference, *args)
        np.testing.assert_array_equal(y_fast.numpy(), y_ref.numpy(), err_msg=f"{name}: forward changed")
        for i, (a, b) in enumerate(zip(g_fast, g_ref)):
            assert _rel_err(a, b) < 2e-5, f"{name}: gradient {i} differs by {_rel_err(a, b):.2e}"


def test_hand_written_gradients_pass_numerical_check():
    """Finite differences in float64 terms: tf.test.compute_gradient on a real-valued wrapper."""
    rng = np.random.default_rng(1)
    x0 = random_complex(rng, (1, 2, 4, 3, 2))
    kernel = tf.constant(rng.standard_normal((1, 3, 3, 2, 2, 2)).astype(np.float32) * 0.5)

    def wrap(fn):
        def real_fn(parts):
            z = tf.complex(parts[..., 0], parts[..., 1])
            out = fn(z)
            return tf.stack([tf.math.real(out), tf.math.imag(out)], axis=-1)
        return real_fn

    parts = tf.constant(np.stack([x0.real, x0.imag], axis=-1).astype(np.float32))
    for name, fn in {"conv": lambda z: cl.complex_conv3d(z, kernel), "modrelu": lambda z: cl.modrelu(z, tf.constant([0.3, -0.2])),
                     "instance_norm": cl.complex_instance_norm}.items():
        theoretical, numerical = tf.test.compute_gradient(wrap(fn), [parts], delta=1e-2)
        err = np.max(np.abs(theoretical[0] - numerical[0])) / np.max(np.abs(numerical[0]))
        assert err < 2e-2, f"{name}: analytic vs finite-difference gradient differ by {err:.3g}"


def test_real_split_mask_multiply_is_exact():
    rng = np.random.default_rng(2)
    k = random_complex(rng, (1, 4, 6, 5, 3))
    for binary in (True, False):
        m = random_mask(rng, (1, 4, 1, 5, 1), binary=binary)
        np.testing.assert_array_equal(mri.apply_mask(tf.constant(k), tf.constant(m)).numpy(), k * m)


def test_recompute_complex_gives_the_same_gradient_with_variables():
    rng = np.random.default_rng(3)
    x = tf.constant(random_complex(rng, (1, 3, 6, 5, 2)))
    kernel = tf.Variable(rng.standard_normal((1, 3, 3, 2, 2, 2)).astype(np.float32))

    def block(z):
        return cl.modrelu(cl.complex_instance_norm(cl.complex_conv3d(z, kernel)), 0.2)

    @tf.function
    def grads(recompute):
        with tf.GradientTape() as tape:
            out = recompute_complex(block)(x)[0] if recompute else block(x)
            loss = tf.reduce_sum(tf.abs(out))
        return loss, tape.gradient(loss, [kernel])[0]

    loss_a, g_a = grads(False)
    loss_b, g_b = grads(True)
    assert float(loss_a) == float(loss_b)
    assert _rel_err(g_b, g_a) < 1e-5
    with pytest.raises(ValueError, match="complex"):
        recompute_complex(block)(tf.zeros([1, 3, 6, 5, 2]))


def _views(rng, n, t=8, x=16, y=12, c=2):
    out = []
    for _ in range(n):
        out.append((tf.constant(random_complex(rng, (1, t, x, y, 1))), tf.constant(random_complex(rng, (1, t, x, y, c))),
                    tf.constant(random_mask(rng, (1, t, 1, y, 1))), tf.constant(random_complex(rng, (1, 1, x, y, c)))))
    return out


def _loss_and_grads(kind: str, recompute: bool, views):
    keras.utils.set_random_seed(11)
    if kind == "fe":
        model = FeatureNet(2, "vicreg", unet=TINY_UNET, recompute=recompute)
        model.build_all()

        def loss_fn():
            return feature_loss(model, {"views": views}, True)
    else:
        model = SSFLRecon(2, "vicreg", unet=TINY_UNET, recompute=recompute)
        model.build_all()
        data = {"view1": dict(zip(("x", "y", "mask"), views[0][:3])),
                "view2": dict(zip(("x", "y", "mask"), views[1][:3])), "coil_maps": views[0][3]}

        def loss_fn():
            img, ksp, _, _ = ssl_losses(model, data)
            return img + ksp

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        return loss, tape.gradient(loss, model.trainable_variables)

    loss, grads = step()
    return float(loss), [None if g is None else g.numpy() for g in grads]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ssfl"])  # the same utils.recompute path serves FE-Net; one model keeps it cheap
def test_recompute_keeps_loss_and_gradients(kind):
    views = _views(np.random.default_rng(4), 2)
    loss_a, grads_a = _loss_and_grads(kind, False, views)
    loss_b, grads_b = _loss_and_grads(kind, True, views)
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    assert [g is None for g in grads_a] == [g is None for g in grads_b]
    # Compare against the overall gradient scale: conv biases before an instance norm have a zero gradient
    # in exact arithmetic, so their (rounding-noise) values cannot be compared relative to themselves.
    scale = max(np.max(np.abs(g)) for g in grads_a if g is not None)
    worst = max(np.max(np.abs(a - b)) for a, b in zip(grads_a, grads_b) if a is not None) / scale
    # The recomputed forward may round differently in the last bit (graph optimisation differs); the VICReg loss
    # of this tiny case (4 pooled frames per view) amplifies that, SSFL-Recon's loss does not.
    assert worst < (2e-4 if kind == "fe" else 1e-5)


needs_fp16_conv = pytest.mark.skipif(
    not (cl.conv_dtype_available("float16") and cl.conv_dtype_available("bfloat16")),
    reason="this CPU's kernels have no float16/bfloat16 3D convolution (oneDNN limited to AVX2)")


@needs_fp16_conv
def test_float16_convolutions_agree_with_float32():
    """Mixed precision (conv_dtype float16) vs float32 on CPU: same weights, outputs within float16 accuracy."""
    rng = np.random.default_rng(5)
    (x, y, mask, maps), = _views(rng, 1)
    outputs = []
    for conv_dtype in (None, "float16"):
        keras.utils.set_random_seed(12)
        model = SSFLRecon(2, "vicreg", unet={**TINY_UNET, "conv_dtype": conv_dtype})
        model.build_all()
        outputs.append(model({"x": x, "y": y, "mask": mask, "coil_maps": maps}).numpy())
    assert outputs[1].dtype == np.complex64
    err = np.linalg.norm(outputs[1] - outputs[0]) / np.linalg.norm(outputs[0])
    assert 0 < err < 1e-2, f"float16 convolutions: relative difference {err:.3g}"


@pytest.mark.slow
@needs_fp16_conv
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_training_steps(precision):
    """bfloat16 trains directly; float16 goes through dynamic loss scaling, which halves the scale and skips the
    update when the scaled float16 gradients overflow (the original loss is a sum of order 1e5 here)."""
    from utils.training import compile_model
    from reconstruction.train import build_recon_model
    from utils.schema import ExperimentConfig

    cfg = ExperimentConfig(stage="recon")
    cfg.model.filters = 4
    cfg.train.mixed_precision = precision
    model = build_recon_model(cfg)
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, cl.ComplexConv3D)]
    assert convs and all(layer.conv_dtype == precision for layer in convs)
    compile_model(model, cfg)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "float16")
    (x1, y1, m1, maps), (x2, y2, m2, _) = _views(np.random.default_rng(6), 2)
    data = {"view1": {"x": x1, "y": y1, "mask": m1}, "view2": {"x": x2, "y": y2, "mask": m2}, "coil_maps": maps}
    before = [v.numpy() for v in model.trainable_variables]
    step = tf.function(model.train_step)
    scale_before = float(model.optimizer.dynamic_scale) if scaled else None
    logs = step(data)
    assert np.isfinite(float(logs["loss"]))
    changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    if scaled and changed == 0:  # overflow: the step was skipped and the scale lowered
        assert float(model.optimizer.dynamic_scale) < scale_before
        while changed == 0 and float(model.optimizer.dynamic_scale) > 2.0 ** -20:
            step(data)
            changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    assert changed > len(before) // 2


@pytest.mark.parametrize("model_name,mode", [("fe-vicreg", "train"), ("ssfl-recon", "infer")])
def test_benchmark_command_writes_json(tmp_path, capsys, model_name, mode):
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--model", model_name, "--mode", mode, "--size", "8,16,12,2", "--steps", "2",
                 "--warmup", "1", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["model"] == model_name and result["mode"] == mode and result["size"] == [8, 16, 12, 2]
    assert len(result["steps_s"]) == 2 and result["step_s"] == float(np.median(result["steps_s"]))
    assert result["peak_rss_gib"] >= result["rss_before_gib"] > 0
    assert result["params"] > 0
    from utils.machine import cpu_description

    assert result["cpu"] == cpu_description() and result["onednn"] == os.environ.get("TF_ENABLE_ONEDNN_OPTS")


def test_unavailable_conv_dtype_is_a_clear_error(monkeypatch):
    from reconstruction.train import build_recon_model
    from utils.schema import ExperimentConfig

    from utils import complex_ops

    monkeypatch.setattr(complex_ops, "conv_dtype_available", lambda dtype: False)
    cfg = ExperimentConfig(stage="recon")
    cfg.train.mixed_precision = "bfloat16"
    with pytest.raises(ValueError, match="train.mixed_precision=bfloat16: this machine's TensorFlow kernels have no"):
        build_recon_model(cfg)


def test_benchmark_rejects_bad_size(capsys):
    assert main(["benchmark", "--size", "8,16,12"]) == 2
    assert "--size" in capsys.readouterr().err


def test_benchmark_rejects_bad_threads(capsys):
    assert main(["benchmark", "--size", "8,16,12,2", "--threads", "two"]) == 2
    assert "--threads: expected 'auto', 'tf' or 'INTRA,INTER'" in capsys.readouterr().err


def test_benchmark_table_names_the_thread_pools():
    from scripts.benchmark import markdown

    row = {"model": "fe-vicreg", "mode": "train", "size": [12, 96, 72, 8], "exec": "graph", "step_s": 0.5,
           "peak_rss_gib": 1.25, "intra_op_threads": 1, "inter_op_threads": 2}
    default = {**row, "intra_op_threads": 0, "inter_op_threads": 0, "recompute": True}
    lines = markdown([row, default]).splitlines()
    assert lines[2] == "| fe-vicreg | train | 12,96,72,8 | graph | faithful | threads 1/2 | 0.500 | 1.25 |  |"
    assert lines[3] == "| fe-vicreg | train | 12,96,72,8 | graph | faithful | recompute | 0.500 | 1.25 |  |"
    assert len(lines) == 4  # no CPU recorded, no CPU line
    named = markdown([{**row, "cpu": "Some CPU, AVX2/FMA, 2 cores"}]).splitlines()
    assert named[-1] == "CPU: Some CPU, AVX2/FMA, 2 cores."


def test_benchmark_numerics_sweep_pairs_modes_and_prints_ratios():
    from scripts.benchmark import markdown, sweep_grid

    grid = sweep_grid("numerics")
    assert [(g["model"], g["mode"], g["numerics"], g.get("paired", False)) for g in grid[:3]] == [
        ("fe-vicreg", "train", "faithful", False), ("fe-vicreg", "train", "fast", False),
        ("fe-vicreg", "train", "faithful", True)]
    assert {(g["model"], g["mode"], g["size"]) for g in grid} == {
        ("fe-vicreg", "train", "12,96,72,8"), ("ssfl-recon", "train", "12,96,72,8"),
        ("ssfl-recon", "infer", "25,176,132,15")}
    row = {"model": "ssfl-recon", "mode": "train", "size": [12, 96, 72, 8], "exec": "graph", "step_s": 2.0,
           "peak_rss_gib": 2.0, "numerics": "faithful"}
    paired = {**row, "paired": {"faithful_step_s": 2.2, "fast_step_s": 1.32, "fast_over_faithful": 0.6,
                                "fast_over_faithful_min": 0.55}}
    lines = markdown([row, {**row, "numerics": "fast", "step_s": 1.0, "peak_rss_gib": 1.5}, paired]).splitlines()
    assert lines[3] == "| ssfl-recon | train | 12,96,72,8 | graph | fast | - | 1.000 | 1.50 |  |"
    assert lines[4] == "| ssfl-recon | train | 12,96,72,8 | graph | faithful | alternating with fast | 2.000 | 2.00 |  |"
    assert lines[-1] == ("| ssfl-recon | train | 12,96,72,8 | graph | fast / faithful | 0.50 | 0.60 (fastest steps "
                         "0.55) | 0.75 |")


def test_benchmark_fast_numerics_paired_run_times_both(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--model", "ssfl-recon", "--mode", "infer", "--size", "8,16,12,2", "--steps", "2",
                 "--warmup", "1", "--numerics", "fast", "--paired", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["numerics"] == "fast" and result["step_s"] == pytest.approx(result["paired"]["fast_step_s"])
    paired = result["paired"]
    assert paired["faithful_step_s"] > 0 and paired["fast_step_s"] > 0
    assert paired["fast_over_faithful"] == pytest.approx(paired["fast_step_s"] / paired["faithful_step_s"])


def test_benchmark_gpu_sweep_needs_a_gpu(capsys, tmp_path):
    from scripts.benchmark import sweep_grid

    grid = sweep_grid("gpu")
    assert {g["mixed_precision"] for g in grid} == {"none", "bfloat16", "float16"}
    assert {(g["model"], g["mode"]) for g in grid} == {(m, s) for m in ("fe-vicreg", "ssfl-recon")
                                                       for s in ("train", "infer")}
    assert all(g["distribute"] == "mirrored" and g["size"] == "25,176,132,15" for g in grid)
    if not tf.config.list_physical_devices("GPU"):
        assert main(["benchmark", "--sweep", "gpu", "--out", str(tmp_path)]) == 2
        assert "--sweep gpu: no GPU is visible to TensorFlow" in capsys.readouterr().err
        assert not any(tmp_path.iterdir())


def test_ablate_names_are_checked():
    from scripts.benchmark import parse_ablate

    assert parse_ablate("norm, dc") == ["norm", "dc"] and parse_ablate("") == []
    with pytest.raises(ValueError, match=r"--ablate: expected a comma-separated subset of"):
        parse_ablate("norm,conv")


def test_ablated_benchmark_runs_in_its_own_process(tmp_path):
    # --ablate patches layer classes for the whole process, so it is exercised in a child process
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "ablate.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.cli", "benchmark", "--model", "ssfl-recon", "--mode",
                           "infer", "--size", "8,16,12,2", "--steps", "1", "--warmup", "1", "--ablate",
                           "norm,modrelu,pool,dc", "--json", str(out)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["ablate"] == ["norm", "modrelu", "pool", "dc"] and result["step_s"] > 0
