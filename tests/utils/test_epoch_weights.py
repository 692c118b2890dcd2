"""Per-epoch weight files (utils/epoch_weights.py): names, contents, pruning, chief-only, and stage-2 loading."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from utils.engine import Engine, Objective
from utils.epoch_weights import EpochWeights, epoch_weights_path, find_epoch_weights, list_epoch_weights


class _Mse(Objective):
    def losses(self, network, batch, seed, training):
        return {"loss": tf.reduce_mean(tf.square(network(batch["x"]) - batch["t"]))}


def _network() -> keras.Sequential:
    net = keras.Sequential([keras.layers.Dense(3)])
    net.build((None, 4))
    return net


def _dataset() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices({"x": x, "t": x[:, :3] * 2.0}).batch(4)


class _Snapshots(keras.callbacks.Callback):
    """The network's weights at the end of every epoch (runs after EpochWeights)."""

    def __init__(self):
        super().__init__()
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.network.get_weights()])


def _fit(tmp_path, epochs: int, **kwargs) -> tuple[Engine, _Snapshots]:
    keras.utils.set_random_seed(0)
    engine = Engine(_network(), _Mse())
    engine.compile(optimizer=keras.optimizers.Adam(0.1))
    snapshots = _Snapshots()
    engine.fit(_dataset(), epochs=epochs, verbose=0, callbacks=[EpochWeights(tmp_path, **kwargs), snapshots])
    return engine, snapshots


def test_every_epoch_writes_the_network_weights_1_based(tmp_path) -> None:
    _, snapshots = _fit(tmp_path, 3)
    files = list_epoch_weights(tmp_path)
    assert list(files) == [1, 2, 3]
    assert [p.name for p in files.values()] == ["weights001.weights.h5", "weights002.weights.h5",
                                                "weights003.weights.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in files.values()]  # no temp files left
    for epoch, path in files.items():
        net = _network()
        net.load_weights(str(path))  # the file holds the network (weights_owner), not the engine
        for got, want in zip(net.get_weights(), snapshots.weights[epoch - 1]):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(snapshots.weights[0][0], snapshots.weights[2][0])  # training moved the weights


def test_every_and_keep_last(tmp_path) -> None:
    _fit(tmp_path / "every2", 5, every=2)
    assert list(list_epoch_weights(tmp_path / "every2")) == [2, 4]
    _fit(tmp_path / "keep2", 4, keep_last=2)
    assert list(list_epoch_weights(tmp_path / "keep2")) == [3, 4]


def test_workers_write_nothing(tmp_path) -> None:
    _fit(tmp_path, 2, is_chief=False)
    assert list_epoch_weights(tmp_path) == {}


def test_non_finite_epoch_is_not_written(tmp_path) -> None:
    callback = EpochWeights(tmp_path)
    callback.set_model(Engine(_network(), _Mse()))
    callback.on_epoch_end(0, {"loss": float("nan"), "val_loss": 1.0})
    callback.on_epoch_end(1, {"loss": 1.0, "val_loss": 1.0})
    assert list(list_epoch_weights(tmp_path)) == [2]


def test_paths_and_errors(tmp_path) -> None:
    assert epoch_weights_path(tmp_path, 20).name == "weights020.weights.h5"
    assert epoch_weights_path(tmp_path, 1234).name == "weights1234.weights.h5"
    with pytest.raises(ValueError, match="1-based"):
        epoch_weights_path(tmp_path, 0)
    with pytest.raises(ValueError, match="every"):
        EpochWeights(tmp_path, every=0)
    with pytest.raises(ValueError, match="keep_last"):
        EpochWeights(tmp_path, keep_last=-1)
    with pytest.raises(FileNotFoundError, match="no per-epoch weight files"):
        find_epoch_weights(tmp_path, 20)
    _fit(tmp_path, 2)
    assert find_epoch_weights(tmp_path, 2) == tmp_path / "weights002.weights.h5"
    with pytest.raises(FileNotFoundError, match=r"epochs 1\.\.2 \(2 files\)"):
        find_epoch_weights(tmp_path, 20)


def test_stage2_accepts_an_epoch_file_as_pretrained_fe(tmp_path) -> None:
    # train.pretrained_fe / --weights go through utils.weights: an epoch file is a plain '.weights.h5' source
    from utils.weights import load_weights, resolve_weights

    _, snapshots = _fit(tmp_path, 2)
    path = tmp_path / "weights001.weights.h5"
    source = resolve_weights(str(path))
    assert (source.kind, source.path) == ("keras", path)
    fresh = Engine(_network(), _Mse())
    load_weights(fresh, str(path))
    for got, want in zip(fresh.network.get_weights(), snapshots.weights[0]):
        np.testing.assert_array_equal(got, want)
