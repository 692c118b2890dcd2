"""Training gradients of FE-Net (VICReg, contrastive) and SSFL-Recon against the original code, in both pooling
gradient modes (``model.pool_gradient``): ``optox`` (what the original's GPU op computed) and ``complex`` (the true
derivative).

Fixtures ``golden/*_grads.npz`` (fixtures README, "Gradient fixtures"): one training step's loss and the gradient of
every trainable variable, keyed by the original checkpoint names. Tolerances from that README: per variable
``max|g - g_fix| <= tau * max|g_fix|`` with tau = 1e-2 for the feature models and 1e-4 for SSFL-Recon; the loss at
rtol 1e-5; the biases that feed a normalisation have zero gradient in exact arithmetic and are checked against
``1e-4 * max |g_fix|`` over all variables instead. Gradients are computed eagerly, as the fixtures were.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import fixtures_dir, load_golden
from feature_learning.model import FeatureNet
from helpers import feature_loss, ssl_losses
from reconstruction.model import SSFLRecon
from utils.checkpoint_import import assign_from_checkpoint
from utils.complex_layers import MagnitudeMaxPool3D

MODES = ("optox", "complex")
TAU = {"fe_vicreg": 1e-2, "fe_contrastive": 1e-2, "ssfl_recon": 1e-4}
NORM_FED_BIASES = {"fe_vicreg": 18, "fe_contrastive": 18, "ssfl_recon": 20}  # counts stated in the fixtures README


def _norm_fed(name: str) -> bool:
    """Conv/Dense biases followed by a normalisation (ops 0 and 3 of every block, the projector's Dense layers);
    not the output conv of SSFL-Recon (``recon_unet/{i}/ops/3/bias``)."""
    if re.fullmatch(r"recon_unet/\d+/ops/3/bias", name):
        return False
    return bool(re.search(r"/(0|3)/bias$", name) or re.fullmatch(r"p/\d+/(1|4)/bias", name))


def _views(g, n: int) -> list[dict]:
    return [{"x": g[f"x{j}"], "y": g[f"y{j}"], "mask": g[f"mask{j}"], "coil_maps": g[f"smaps{j}"]}
            for j in range(1, n + 1)]


def _model_and_loss(name: str, mode: str):
    """(model, variables keyed by original name, graph-mode loss function) for one fixture."""
    weights001 = str(fixtures_dir() / "original" / "weights001.tf")
    unet = {"pool_gradient": mode}
    if name.startswith("fe_"):
        method = name[3:]
        model = FeatureNet(2, method, unet=unet)
        model.build_all()
        assign_from_checkpoint(model.original_variables(), weights001)
        data = {"views": _views(load_golden(f"{name}_train.npz"), model.num_views)}
        variables = model.original_variables()

        def loss_fn():
            return feature_loss(model, data, True)
    else:
        model = SSFLRecon(2, "vicreg", unet=unet)
        model.build_all()
        assign_from_checkpoint(model.feature_extractor.original_variables(include_projector=False), weights001)
        assign_from_checkpoint(model.original_variables(), str(fixtures_dir() / "golden" / "ssfl_recon_ckpt"))
        g = load_golden("ssfl_recon_train_loss.npz")
        data = {"view1": {"x": g["x1"], "y": g["y1"], "mask": g["mask1"]},
                "view2": {"x": g["x2"], "y": g["y2"], "mask": g["mask2"]}, "coil_maps": g["smaps"]}
        variables = model.original_variables()

        def loss_fn():
            img, ksp, _, _ = ssl_losses(model, data)
            return img + ksp
    return model, variables, loss_fn


@pytest.fixture(scope="module", params=[(n, m) for n in TAU for m in MODES], ids=lambda p: f"{p[0]}-{p[1]}")
def computed(request):
    name, mode = request.param
    model, variables, loss_fn = _model_and_loss(name, mode)
    fixture = load_golden(f"{name}_grads.npz")
    names = [str(n) for n in fixture["var_names"]]
    missing = [n for n in names if n not in variables]
    assert not missing, f"fixture variables without a model variable: {missing[:5]}"
    targets = [variables[n] for n in names]

    # eager, as the fixtures were made (graph mode differs from eager by <= 3e-3 of max|g| for the feature models and
    # 2.2e-5 for SSFL-Recon, inside the tolerances; tests/utils/test_training.py trains in graph mode)
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, targets)
    return name, mode, model, names, float(loss), [None if g is None else g.numpy() for g in grads], fixture


def test_loss_matches_golden(computed) -> None:
    name, _, _, _, loss, _, fixture = computed
    np.testing.assert_allclose(loss, float(fixture["loss"]), rtol=1e-5, err_msg=name)


def test_every_trainable_variable_is_in_the_fixture(computed) -> None:
    # the fixture lists the original's trainable variables; ours has more only where the original model had none
    # (FE-Net's last decoder, tau and DC, unused in train mode): those get no gradient
    name, _, model, names, _, grads, _ = computed
    assert all(g is not None for g in grads), name
    ours = {v.path for v in model.trainable_variables}
    by_name = (model.original_variables() if name.startswith("fe_") else model.original_variables())
    mapped = {by_name[n].path for n in names}
    assert mapped <= ours
    extra = ours - mapped
    if name.startswith("fe_"):
        assert extra and all(p.startswith(("unet_1/bottleneck", "unet_1/decoder", "unet_1/out_layer", "tau_1", "dc_1"))
                             for p in extra), sorted(extra)[:5]
    else:
        assert extra == set(), sorted(extra)[:5]


def test_gradients_match_golden(computed) -> None:
    name, mode, _, names, _, grads, fixture = computed
    expected = {n: fixture[f"grad_{mode}/{n}"] for n in names}
    overall = max(float(np.max(np.abs(e))) for e in expected.values())
    norm_fed = [n for n in names if _norm_fed(n)]
    assert len(norm_fed) == NORM_FED_BIASES[name], norm_fed
    failures = []
    for n, g in zip(names, grads):
        assert g.shape == expected[n].shape, (n, g.shape, expected[n].shape)
        if n in norm_fed:
            if np.max(np.abs(g)) > 1e-4 * overall:
                failures.append(f"{n}: |g| = {np.max(np.abs(g)):.3g} > 1e-4 * {overall:.3g} (should be ~0)")
            continue
        scale = float(np.max(np.abs(expected[n])))
        error = float(np.max(np.abs(g - expected[n])))
        if error > TAU[name] * scale:
            failures.append(f"{n}: max|g - g_fix| = {error:.3g} > {TAU[name]} * {scale:.3g}")
    assert not failures, f"{name} ({mode}): {len(failures)} of {len(names)} variables differ:\n" + "\n".join(failures[:10])


# The variable whose gradient the two modes change most (fixtures README), per fixture.
MOST_CHANGED = {"fe_vicreg": "dc/0/weight", "fe_contrastive": "tau/0/scalar",
                "ssfl_recon": "recon_unet/0/ops/0/0/0/kernel"}


def test_the_two_modes_differ_where_the_fixtures_say(computed) -> None:
    # so the switch cannot be a no-op: our gradient is within tolerance of its own mode's fixture and far from the
    # other mode's (dc/0/weight of VICReg: -190.9 with optox, +62.8 with the true gradient)
    name, mode, _, names, _, grads, fixture = computed
    key = MOST_CHANGED[name]
    grad = grads[names.index(key)]
    other = "complex" if mode == "optox" else "optox"
    mine, theirs = fixture[f"grad_{mode}/{key}"], fixture[f"grad_{other}/{key}"]
    scale = float(np.max(np.abs(mine)))
    assert np.max(np.abs(grad - mine)) <= TAU[name] * scale
    assert np.max(np.abs(grad - theirs)) > 0.1 * scale, (name, mode, float(np.max(np.abs(grad - theirs))), scale)


def test_pool_gradient_routes_only_the_real_part_in_optox_mode() -> None:
    # one window of 8 elements, the third the largest: complex mode passes the whole upstream gradient, optox its
    # real part only; both to the selected element and nowhere else
    x = np.zeros((1, 2, 2, 2, 1), np.complex64)
    x.flat[:] = [0.1, 0.2 + 0.1j, 3.0 - 1.0j, 0.5j, -0.3, 0.0, 1.0, 0.2]
    upstream = tf.constant([[[[[2.0 - 5.0j]]]]], tf.complex64)
    for mode, expected in (("complex", 2.0 - 5.0j), ("optox", 2.0 + 0.0j)):
        layer = MagnitudeMaxPool3D(2, gradient=mode)
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = layer(xt)
            loss = tf.math.real(tf.reduce_sum(tf.math.conj(upstream) * out))
        np.testing.assert_allclose(out.numpy().ravel(), [3.0 - 1.0j])
        grad = tape.gradient(loss, xt).numpy().ravel()
        want = np.zeros(8, np.complex64)
        want[2] = expected
        np.testing.assert_allclose(grad, want, err_msg=mode)
        assert MagnitudeMaxPool3D.from_config(layer.get_config()).gradient == mode
    with pytest.raises(ValueError, match="gradient: expected one of"):
        MagnitudeMaxPool3D(2, gradient="real")
