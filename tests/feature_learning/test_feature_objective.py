"""Stage 1's objective (feature_learning/model.py FeatureObjective) in the engine, on a tiny FE-Net."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from feature_learning.losses import get_feature_loss
from feature_learning.model import FeatureNet, FeatureObjective
from helpers import random_complex, random_mask
from utils.engine import Engine

T, X, Y, C = 4, 16, 12, 2
TINY = dict(filters=4)


def _views(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    maps = random_complex(rng, (1, 1, X, Y, C))
    views = []
    for _ in range(n):
        mask = random_mask(rng, (1, T, 1, Y, 1))
        y = random_complex(rng, (1, T, X, Y, C)) * mask
        views.append({"x": tf.constant(random_complex(rng, (1, T, X, Y, 1))), "y": tf.constant(y),
                      "mask": tf.constant(mask), "coil_maps": tf.constant(maps)})
    return {"views": views}


@pytest.mark.parametrize("method, variant", [("vicreg", "original"), ("contrastive", "standard")])
def test_loss_is_the_feature_loss_of_the_embeddings(method, variant):
    keras.utils.set_random_seed(0)
    network = FeatureNet(1, method, unet=TINY)
    network.build_all()
    objective = FeatureObjective(method, variant)
    batch = _views(network.num_views)
    views = [tuple(v[k] for k in ("x", "y", "mask", "coil_maps")) for v in batch["views"]]
    want = get_feature_loss(method, variant)(network.embed(views, training=False))
    got = objective.losses(network, batch, None, training=False)["loss"]
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_engine_infers_features_and_checks_the_views():
    keras.utils.set_random_seed(1)
    network = FeatureNet(2, "vicreg", unet=TINY)
    network.build_all()
    engine = Engine(network, FeatureObjective("vicreg"))
    engine.build_all()
    out = engine(_views(1)["views"][0])
    assert sorted(out) == ["feature_0", "feature_1", "x_out"] and out["x_out"].shape == (1, T, X, Y, 1)
    with pytest.raises(ValueError, match="vicreg needs 2 views, received 3"):
        engine.compute_losses(_views(3), training=False)
    with pytest.raises(ValueError, match="method: expected one of"):
        FeatureObjective("simclr")


def test_shipped_fe_weights_load_into_the_network_and_its_engine(tmp_path):
    # the weight file layout is the network's: files written before the engine existed still load, and an engine
    # writes the same layout
    from conftest import REPO_ROOT
    from reconstruction.pretrained import load_feature_weights
    from utils.weights import load_weights

    shipped = REPO_ROOT / "dummy_weights" / "fe_vicreg_synthetic.weights.h5"
    network = FeatureNet(2, "vicreg")
    network.build_all()
    report = load_feature_weights(network, str(shipped))
    assert not report.not_restored and len(report.restored) == len(network.original_variables())
    engine = Engine(network, FeatureObjective("vicreg"))
    engine.build_all()
    engine.save_weights(tmp_path / "again.weights.h5")
    other = Engine(FeatureNet(2, "vicreg"), FeatureObjective("vicreg"))
    other.build_all()
    load_weights(other, tmp_path / "again.weights.h5")
    for a, b in zip(other.network.weights, network.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
