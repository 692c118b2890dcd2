"""Mirrored-strategy run for tests/utils/test_distribute.py, in its own process.

The two logical CPU devices must be configured before TensorFlow runs any op, which the pytest process has long
done. Usage: ``python tests/_distribute_worker.py FEATURES_YAML RECON_YAML OUT_DIR``.

1. ``ssfl-recon train-features`` and ``train-recon`` with ``--set train.distribute=mirrored`` on 2 replicas
   (the YAML files give 1 epoch of 2 steps on dummy data; recon uses the stage-1 run as pretrained FE).
2. A single-device reference of the same two steps: the same initial weights (same seed), the same examples
   (step ``s`` takes pipeline elements ``2s`` and ``2s + 1``, one per replica), per example the model's own
   training loss and its gradient, the two gradients averaged and applied by an identical Adam optimizer. BatchNorm
   (the FE projector) uses each example's own batch statistics, as each replica does, and its moving statistics
   become the mean of the two per-example updates (MEAN aggregation, utils/distribute.py).
3. ``OUT_DIR/result.npz``: for ``fe`` and ``recon`` the weights and optimizer variables of the distributed run
   (read back from its run folder) and of the reference, the initial weights, the largest averaged gradient per
   trainable weight, the kind of each optimizer variable, the reference per-example losses and the logged loss.
"""
from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

REPLICAS = 2
MOVING_STATISTICS = ("moving_mean", "moving_variance")


def averaged_steps(model, loss_fn, examples) -> tuple[list[float], dict[int, np.ndarray]]:
    """One optimizer step per ``REPLICAS`` examples with the mean of their gradients.

    Returns the per-example losses and, per trainable variable (by ``id``), the elementwise largest magnitude of
    its averaged gradient over the steps.
    """
    stats = [v for v in model.non_trainable_variables if v.name in MOVING_STATISTICS]
    variables = model.trainable_variables
    losses, largest = [], {id(v): np.zeros(v.shape, np.float32) for v in variables}
    for step in range(len(examples) // REPLICAS):
        start = [v.numpy() for v in stats]
        total, updated = None, []
        for example in examples[step * REPLICAS:(step + 1) * REPLICAS]:
            for var, value in zip(stats, start):
                var.assign(value)
            with tf.GradientTape() as tape:
                loss = loss_fn(example)
            grads = tape.gradient(loss, variables)
            losses.append(float(loss))
            updated.append([v.numpy() for v in stats])
            total = grads if total is None else [None if a is None else a + b for a, b in zip(total, grads)]
        for var, *values in zip(stats, *updated):
            var.assign(np.mean(values, axis=0))
        mean = [None if g is None else g / REPLICAS for g in total]
        model.optimizer.apply_gradients([(g, v) for g, v in zip(mean, variables) if g is not None])
        for g, v in zip(mean, variables):
            if g is not None:
                largest[id(v)] = np.maximum(largest[id(v)], np.abs(g.numpy()))
    return losses, largest


def collect(prefix: str, run_dir: Path, distributed, reference, initial: list[np.ndarray],
            stepped: tuple[list[float], dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
    distributed.load_weights(str(run_dir / "model.weights.h5"))
    losses, largest = stepped
    out = {f"{prefix}:losses": np.array(losses)}
    for i, (a, b) in enumerate(zip(distributed.weights, reference.weights)):
        # same variable up to Keras' auto-numbered layer names (complex_conv3d_18 vs _24)
        assert re.sub(r"\d+", "", a.path) == re.sub(r"\d+", "", b.path) and a.shape == b.shape, (a.path, b.path)
        out[f"{prefix}:dist:w{i:04d}"], out[f"{prefix}:ref:w{i:04d}"] = a.numpy(), b.numpy()
        out[f"{prefix}:init:w{i:04d}"] = initial[i]
        if id(b) in largest:
            out[f"{prefix}:grad:w{i:04d}"] = largest[id(b)]
    with np.load(run_dir / "checkpoints" / "last.optimizer.npz") as saved:
        # the checkpoint's optimizer arrays are v0000...; other keys are run-position bookkeeping
        assert len([k for k in saved.files if k.startswith("v")]) == len(reference.optimizer.variables)
        for i, var in enumerate(reference.optimizer.variables):
            out[f"{prefix}:dist:o{i:04d}"], out[f"{prefix}:ref:o{i:04d}"] = saved[f"v{i:04d}"], var.numpy()
            # momentum, velocity, iteration or learning_rate
            out[f"{prefix}:kind:o{i:04d}"] = np.array(var.path.rsplit("/", 1)[-1].rsplit("_", 1)[-1])
    with open(run_dir / "loss.csv", newline="") as fh:
        out[f"{prefix}:logged_loss"] = np.array(float(list(csv.DictReader(fh))[-1]["loss"]))
    return out


def main(features_yaml: str, recon_yaml: str, out_dir: str) -> int:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

    import keras

    from data_loader import pipelines
    from feature_learning.train import build_feature_model
    from helpers import feature_loss, ssl_losses
    from utils.training import compile_model
    from reconstruction.pretrained import load_feature_weights
    from reconstruction.train import build_recon_model
    from scripts.cli import main as cli
    from utils.config import load_config
    from utils.schema import ExperimentConfig

    out = Path(out_dir)
    fe_run, recon_run = out / "fe_run", out / "recon_run"
    mirrored = ["--set", "train.distribute=mirrored"]
    if cli(["train-features", "--config", features_yaml, *mirrored, "--set", f"train.run_dir={fe_run}"]):
        return 1
    if cli(["train-recon", "--config", recon_yaml, *mirrored, "--set", f"train.run_dir={recon_run}",
            "--pretrained-fe", str(fe_run)]):
        return 1

    num_examples = 2 * REPLICAS  # two steps
    cfg = load_config(ExperimentConfig, features_yaml)
    keras.utils.set_random_seed(cfg.train.seed)
    fe = build_feature_model(cfg)
    compile_model(fe, cfg)
    initial = [v.numpy() for v in fe.weights]
    stream = pipelines.feature_dataset(cfg.data, cfg.model.feature_method, "train", seed=cfg.train.seed)
    stepped = averaged_steps(fe, lambda e: feature_loss(fe.network, e, True),
                             list(stream.take(num_examples)))
    result = collect("fe", fe_run, build_feature_model(cfg), fe, initial, stepped)

    cfg = load_config(ExperimentConfig, recon_yaml)
    keras.utils.set_random_seed(cfg.train.seed)
    recon = build_recon_model(cfg)
    load_feature_weights(recon.network.feature_extractor, str(fe_run))
    compile_model(recon, cfg)
    initial = [v.numpy() for v in recon.weights]
    stream = pipelines.recon_dataset(cfg.data, "train", seed=cfg.train.seed, batch_size=cfg.train.batch_size)

    def recon_loss(example):
        img, ksp, _, _ = ssl_losses(recon.network, example)
        return img + ksp

    stepped = averaged_steps(recon, recon_loss, list(stream.take(num_examples)))
    result.update(collect("recon", recon_run, build_recon_model(cfg), recon, initial, stepped))
    np.savez(out / "result.npz", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
