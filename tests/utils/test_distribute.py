"""Distributed training: strategy choice and chief role, MirroredStrategy == averaged single-device steps,
MultiWorkerMirroredStrategy with two local worker processes (TF_CONFIG)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import REPO_ROOT
from feature_learning.train import build_feature_model
from utils.training import steps_for
from utils import distribute
from utils.config import ConfigError, load_config
from utils.schema import ExperimentConfig

TIMEOUT_S = 400
# Adam moves every weight by about the learning rate per step whatever its gradient, and so also moves rounding
# differences: 1e-4 keeps those far below the 1e-5 tolerance while two steps move the weights 20x beyond it.
LEARNING_RATE = 1e-4
BN_MOMENTUM = 0.99  # Keras' BatchNormalization default (the projector's)
ZERO_GRADIENT = 1e-5  # gradients below this fraction of the model's largest are rounding noise
# Tiny and fast: one unrolled iteration, one UNet level; T=4 pools to 2 frames (VICReg needs >= 2 rows).
TINY = {
    "data": {"dummy": True, "size": [4, 16, 12, 2], "subjects": 4, "seed": 3},
    "model": {"num_iter": 1, "num_levels": 1, "filters": 4},
    "train": {"epochs": 1, "steps_per_epoch": 2, "learning_rate": LEARNING_RATE, "seed": 7},
}


def write_config(path: Path, stage: str) -> Path:
    path.write_text(yaml.safe_dump({"stage": stage, **TINY}))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------------------ strategy / chief
def test_config_switch_is_validated():
    assert load_config(ExperimentConfig, None, ["train.distribute=mirrored"]).train.distribute == "mirrored"
    with pytest.raises(ConfigError, match="multi_worker"):
        load_config(ExperimentConfig, None, ["train.distribute=horovod"])
    with pytest.raises(ValueError, match="none"):
        distribute.get_strategy("horovod")


def _strategy_in(cluster: dict, task_type: str | None, task_id: int | None):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return SimpleNamespace(cluster_resolver=resolver)


def test_chief_is_the_chief_task_else_worker_zero():
    assert distribute.is_chief(tf.distribute.get_strategy())
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    assert [distribute.is_chief(_strategy_in(workers, "worker", i)) for i in range(3)] == [True, False, False]
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    assert distribute.is_chief(_strategy_in(with_chief, "chief", 0))
    assert not any(distribute.is_chief(_strategy_in(with_chief, "worker", i)) for i in range(2))


def test_one_replica_changes_nothing():
    strategy = distribute.get_strategy("none")
    loss = tf.constant(3.0)
    assert distribute.replica_share(loss) is loss
    assert distribute.steps_for_examples(5, strategy) == 5 and distribute.steps_for_examples(0, strategy) == 0
    dataset = tf.data.Dataset.range(3)
    assert distribute.distribute_dataset(strategy, lambda: dataset) is dataset
    cfg = load_config(ExperimentConfig, None, ["train.batch_size=2"])
    assert steps_for(cfg, 12) == 6 and steps_for(cfg, 12, replicas=3) == 2


# ------------------------------------------------------------------------------------------ mirrored
@pytest.fixture(scope="module")
def mirrored(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Runs tests/_distribute_worker.py (2 logical CPU replicas) once; returns its folder and result."""
    out = tmp_path_factory.mktemp("mirrored")
    features, recon = write_config(out / "features.yaml", "features"), write_config(out / "recon.yaml", "recon")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "_distribute_worker.py"), str(features),
                           str(recon), str(out)], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, _tail(proc.stdout + proc.stderr)
    with np.load(out / "result.npz") as data:
        return out, {k: data[k] for k in data.files}


def _arrays(result: dict[str, np.ndarray], prefix: str, kind: str, first: str) -> dict[str, np.ndarray]:
    """``{index: array}`` of the keys ``prefix:kind:first*`` (``fe:dist:w0003``: weight 3 of the FE-Net run)."""
    head = f"{prefix}:{kind}:"
    return {k[len(head):]: v for k, v in result.items() if k.startswith(head + first)}


def assert_same_weights(dist: dict[str, np.ndarray], ref: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                        what: str) -> list[str]:
    """Weights of a distributed run == the reference's within 1e-5; returns the keys compared.

    Weights whose gradient is zero in exact arithmetic (a bias right before an instance norm or BatchNorm, the last
    BatchNorm's beta under the shift-invariant VICReg loss) get rounding noise, below 1e-6 of the largest gradient
    where every other weight has more than 1e-4 (``grads``: largest averaged gradient per trainable weight). Adam
    turns any noise into +-learning-rate steps, so these weights differ between any two runs and are left out. A
    BatchNorm moving mean follows the batch mean of its input, which includes such a bias: its tolerance grows by
    (1 - momentum) times their largest difference.
    """
    largest = max(float(g.max()) for g in grads.values())
    noise = {k for k, g in grads.items() if 0 < g.max() < ZERO_GRADIENT * largest}
    assert all(g.max() > 10 * ZERO_GRADIENT * largest for k, g in grads.items() if k not in noise and g.max())
    assert sum(dist[k].size for k in noise) < 0.1 * sum(a.size for a in dist.values())
    drift = max((float(np.max(np.abs(dist[k] - ref[k]))) for k in noise), default=0.0)
    assert drift <= 4.04 * LEARNING_RATE  # each run moved them by two Adam steps at most
    compared = sorted(set(dist) - noise)
    for k in compared:
        atol = 1e-5 if k in grads else 1e-5 + (1 - BN_MOMENTUM) * drift
        np.testing.assert_allclose(dist[k], ref[k], rtol=0, atol=atol, err_msg=f"{what} weight {k}")
    return compared


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["fe", "recon"])
def test_mirrored_two_steps_equal_single_device_with_averaged_gradients(mirrored, prefix):
    """FE-Net (VICReg, BatchNorm in the projector) and SSFL-Recon, each trained for two steps on two replicas with
    ``train.distribute=mirrored`` through the CLI, against the single-device reference of _distribute_worker.py
    (per-example gradients averaged, identical Adam, per-example BatchNorm statistics)."""
    _, result = mirrored
    dist, ref, initial, grads = (_arrays(result, prefix, kind, "w") for kind in ("dist", "ref", "init", "grad"))
    compared = assert_same_weights(dist, ref, grads, prefix)
    # Not vacuous: two Adam steps moved the weights far beyond the tolerance.
    moved = [k for k in compared if np.max(np.abs(ref[k] - initial[k])) > LEARNING_RATE]
    assert len(moved) >= 8, moved
    # Adam is nearly invariant to a gradient scale: the weights would barely notice gradients summed instead of
    # averaged over the replicas. Its moments would (first moment 2x, second 4x too large). Tolerance 1e-3 of the
    # largest moment: the FE's second-step gradient passes through BatchNorm over two similar rows (max-pooled
    # frames), which turns rounding differences of the first step into ~1e-4 relative gradient differences.
    dist, ref, kinds = (_arrays(result, prefix, kind, "o") for kind in ("dist", "ref", "kind"))
    for kind in ("momentum", "velocity", "iteration"):
        keys = [k for k, v in kinds.items() if str(v) == kind]
        scale = max(float(np.max(np.abs(ref[k]))) for k in keys)
        assert scale > 0, kind
        for k in keys:
            np.testing.assert_allclose(dist[k], ref[k], rtol=0, atol=1e-3 * scale, err_msg=f"{prefix} {kind} {k}")
    assert [int(ref[k]) for k, v in kinds.items() if str(v) == "iteration"] == [2]
    # The logged loss is the mean over all replicas' examples, not one replica's.
    losses = result[f"{prefix}:losses"]
    assert losses.shape == (4,) and np.ptp(losses) > 1e-3 * np.mean(np.abs(losses))
    np.testing.assert_allclose(result[f"{prefix}:logged_loss"], np.mean(losses), rtol=1e-5)


def test_mirrored_runs_write_one_checkpoint(mirrored):
    out, _ = mirrored
    for run in ("fe_run", "recon_run"):
        assert sorted(p.name for p in (out / run / "checkpoints").iterdir()) == [
            "last.optimizer.npz", "last.weights.h5", "state.json"]
        assert json.loads((out / run / "checkpoints" / "state.json").read_text())["epoch"] == 1
        config = yaml.safe_load((out / run / "config.yaml").read_text())
        assert config["train"]["distribute"] == "mirrored"


# ------------------------------------------------------------------------------------------ multi-worker
def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_two_processes_chief_writes_one_checkpoint(mirrored, tmp_path):
    """Two worker processes on localhost ports (TF_CONFIG) train the FE-Net for two steps through
    ``ssfl-recon train-features --set train.distribute=multi_worker``; both finish, only worker 0 (the chief)
    writes its run folder, with one checkpoint, and its weights equal the mirrored run's reference."""
    config = write_config(tmp_path / "features.yaml", "features")
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    runs = [tmp_path / f"run_{i}" for i in range(2)]
    logs = [tmp_path / f"worker_{i}.log" for i in range(2)]
    procs = []
    for i, (run, log) in enumerate(zip(runs, logs)):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        with open(log, "w") as out:  # a file, not a pipe: an unread pipe would block the worker when it fills
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "scripts.cli", "train-features", "--config", str(config),
                 "--set", "train.distribute=multi_worker", "--set", f"train.run_dir={run}"],
                cwd=REPO_ROOT, env=_env(TF_CONFIG=tf_config), stdout=out, stderr=subprocess.STDOUT))
    # A worker that fails leaves the other waiting in a collective: stop both then.
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        time.sleep(0.2)
    outputs = [log.read_text() for log in logs]
    for i, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"worker {i} (exit {proc.returncode}):\n{_tail(output)}"
    assert "2 replicas in all" in outputs[1]

    chief, worker = runs
    assert not worker.exists(), sorted(str(p) for p in worker.rglob("*"))
    assert sorted(p.name for p in (chief / "checkpoints").iterdir()) == [
        "last.optimizer.npz", "last.weights.h5", "state.json"]
    assert json.loads((chief / "checkpoints" / "state.json").read_text())["epoch"] == 1
    assert (chief / "model.weights.h5").is_file() and (chief / "config.yaml").is_file()

    # Worker i takes elements i, i + 2, ...: step s sees elements 2s and 2s + 1, as the mirrored run does.
    cfg = load_config(ExperimentConfig, config)
    model = build_feature_model(cfg)
    model.load_weights(str(chief / "model.weights.h5"))
    _, result = mirrored
    ref, grads = _arrays(result, "fe", "ref", "w"), _arrays(result, "fe", "grad", "w")
    assert len(ref) == len(model.weights)
    assert_same_weights({f"w{i:04d}": v.numpy() for i, v in enumerate(model.weights)}, ref, grads, "multi-worker")
