"""Tests of utils.mri (centred FFT, multi-coil operators, input checks) and utils.data_consistency.

Numerics are checked three ways: against numpy (np.fft and an explicit centred DFT matrix), against the golden
outputs of the original code (ops.npz), and by operator identities (adjointness, self-adjoint positive normal
operator, normal equations solved by DCPM/CG-SENSE). Odd sizes are used throughout because the centring of
fftshift/ifftshift only differs from a plain shift for odd lengths.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_golden
from helpers import assert_golden, cdot, check_layer, random_complex, random_mask
from utils import mri
from utils.data_consistency import DCGD, DCPM, Scalar, cg_sense, conjugate_gradient

# (B, T, X, Y, C): one even case (the fixtures' layout) and odd sizes in both spatial axes.
SHAPES = [(1, 2, 8, 6, 2), (2, 5, 13, 11, 3), (1, 3, 7, 4, 1)]
REAL = {np.complex64: np.float32, np.complex128: np.float64}
# float64 identities hold to round-off; complex64 ones to single precision of sums over a few hundred terms.
IDENTITY_RTOL = {np.complex64: 2e-5, np.complex128: 1e-12}


@pytest.fixture(scope="module")
def ops_golden() -> dict[str, np.ndarray]:
    return load_golden("ops.npz")


def _problem(shape, dtype=np.complex64, seed=0, binary_mask=True, normalize_maps=True):
    """Random image, k-space, mask (B,T,1,Y,1) and coil maps (B,1,X,Y,C) of the given (B,T,X,Y,C) layout."""
    b, t, x, y, c = shape
    rng = np.random.default_rng(seed)
    image = random_complex(rng, (b, t, x, y, 1), dtype)
    kspace = random_complex(rng, (b, t, x, y, c), dtype)
    mask = random_mask(rng, (b, t, 1, y, 1), binary=binary_mask).astype(REAL[dtype])
    maps = random_complex(rng, (b, 1, x, y, c), np.complex128)
    if normalize_maps:
        # sum_c |s_c|^2 = 1 as in the fixtures: then ||A|| <= 1 and the CG solves below are well conditioned
        maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=-1, keepdims=True))
    return image, kspace, mask, maps.astype(dtype)


def _centred_dft_matrix(n: int) -> np.ndarray:
    # Independent of fftshift code: D[j, m] = exp(-2 pi i (j - c)(m - c) / n) / sqrt(n) with c = n // 2.
    idx = np.arange(n) - n // 2
    return np.exp(-2j * np.pi * np.outer(idx, idx) / n) / np.sqrt(n)


def _numpy_fft2c(x: np.ndarray) -> np.ndarray:
    axes = (2, 3)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), axes=axes), axes=axes)
    return k / np.sqrt(x.shape[2] * x.shape[3])


# ---------------------------------------------------------------------------------------------------------------------
# Centred FFT
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_fft2c_matches_numpy_and_explicit_dft(shape, dtype) -> None:
    x = random_complex(np.random.default_rng(1), shape, dtype)
    reference = _numpy_fft2c(x.astype(np.complex128))
    dft_x, dft_y = _centred_dft_matrix(shape[2]), _centred_dft_matrix(shape[3])
    explicit = np.einsum("ja,kb,ntabc->ntjkc", dft_x, dft_y, x.astype(np.complex128))
    np.testing.assert_allclose(reference, explicit, rtol=1e-10, atol=1e-10)  # the reference itself is right
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    out = mri.fft2c(tf.constant(x)).numpy()
    assert out.dtype == dtype
    np.testing.assert_allclose(out, reference, rtol=tol, atol=tol)
    np.testing.assert_allclose(mri.fft2c_np(x), reference, rtol=tol, atol=tol)
    # the inverse against numpy's inverse transform
    inverse = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x.astype(np.complex128), axes=(2, 3)), axes=(2, 3)),
                              axes=(2, 3)) * np.sqrt(shape[2] * shape[3])
    np.testing.assert_allclose(mri.ifft2c(tf.constant(x)).numpy(), inverse, rtol=tol, atol=tol)
    np.testing.assert_allclose(mri.ifft2c_np(x), inverse, rtol=tol, atol=tol)


@pytest.mark.parametrize("parity", ["even", "odd"])
def test_fft2c_matches_golden(ops_golden, parity: str) -> None:
    x = ops_golden[f"fft_in_{parity}"]
    assert_golden(mri.fft2c(tf.constant(x)), ops_golden[f"FFT2c_np_{parity}"], f"FFT2c_{parity}")
    assert_golden(mri.ifft2c(tf.constant(x)), ops_golden[f"IFFT2c_np_{parity}"], f"IFFT2c_{parity}")
    # the original's complex64 layer outputs too (they agree with its numpy version to ~1e-7)
    assert_golden(mri.fft2c(tf.constant(x)), ops_golden[f"FFT2c_layer_{parity}"], f"FFT2c_layer_{parity}")
    assert_golden(mri.ifft2c(tf.constant(x)), ops_golden[f"IFFT2c_layer_{parity}"], f"IFFT2c_layer_{parity}")
    # numpy twins in double precision agree with the original's numpy FFT to round-off
    np.testing.assert_allclose(mri.fft2c_np(x.astype(np.complex128)), ops_golden[f"FFT2c_np_{parity}"],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mri.ifft2c_np(x.astype(np.complex128)), ops_golden[f"IFFT2c_np_{parity}"],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_fft2c_round_trip_and_unitarity(shape, dtype) -> None:
    rng = np.random.default_rng(2)
    x, k = random_complex(rng, shape, dtype), random_complex(rng, shape, dtype)
    tol = IDENTITY_RTOL[dtype]
    np.testing.assert_allclose(mri.ifft2c(mri.fft2c(tf.constant(x))).numpy(), x, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(mri.fft2c(mri.ifft2c(tf.constant(x))).numpy(), x, rtol=tol, atol=tol * 10)
    # adjointness <F x, k> = <x, F^H k> (F^H = ifft2c), and orthonormal scaling ||F x|| = ||x||
    fx, fhk = mri.fft2c(tf.constant(x)).numpy(), mri.ifft2c(tf.constant(k)).numpy()
    lhs, rhs = cdot(fx, k), cdot(x, fhk)
    assert abs(lhs - rhs) <= tol * max(abs(lhs), 1.0) * 10
    np.testing.assert_allclose(np.linalg.norm(fx), np.linalg.norm(x), rtol=tol)


# ---------------------------------------------------------------------------------------------------------------------
# Multi-coil operators
# ---------------------------------------------------------------------------------------------------------------------


def test_forward_adjoint_match_golden(ops_golden) -> None:
    g = ops_golden
    assert_golden(mri.forward(tf.constant(g["img"]), g["mask"], g["smaps"]), g["MulticoilForwardOp_out"], "forward")
    assert_golden(mri.adjoint(tf.constant(g["y"]), g["mask"], g["smaps"]), g["MulticoilAdjointOp_out"], "adjoint")
    # the numpy twins (used for data preparation) agree too
    assert_golden(mri.forward_np(g["img"], g["mask"], g["smaps"]), g["MulticoilForwardOp_out"], "forward_np")
    assert_golden(mri.adjoint_np(g["y"], g["mask"], g["smaps"]), g["MulticoilAdjointOp_out"], "adjoint_np")


def test_dcgd_matches_golden(ops_golden) -> None:
    g = ops_golden
    assert float(g["dc_weight"][0]) == 1.0
    dc = DCGD(weight_init=1.0)
    out = dc(tf.constant(g["dc_x_in"]), g["y"], g["mask"], g["smaps"])
    assert_golden(out, g["dc_out"], "dc_out")


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("binary_mask", [True, False])
def test_forward_adjoint_are_adjoint(shape, dtype, binary_mask) -> None:
    # <A x, y> = <x, A^H y> for random x, y, mask and (non-normalised) coil maps; the adjoint applies the mask
    # again, so this must hold for non-binary masks as well.
    x, y, mask, maps = _problem(shape, dtype, seed=3, binary_mask=binary_mask, normalize_maps=False)
    ax = mri.forward(tf.constant(x), mask, maps).numpy()
    ahy = mri.adjoint(tf.constant(y), mask, maps).numpy()
    assert ax.shape == y.shape and ahy.shape == x.shape
    lhs, rhs = cdot(ax, y), cdot(x, ahy)
    scale = np.linalg.norm(ax) * np.linalg.norm(y)
    assert abs(lhs - rhs) <= IDENTITY_RTOL[dtype] * scale, (lhs, rhs)
    # and the numpy twins agree with the tf operators
    np.testing.assert_allclose(mri.forward_np(x, mask, maps), ax, rtol=1e-4, atol=IDENTITY_RTOL[dtype] * 10)
    np.testing.assert_allclose(mri.adjoint_np(y, mask, maps), ahy, rtol=1e-4, atol=IDENTITY_RTOL[dtype] * 100)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_normal_operator_is_self_adjoint_and_positive(dtype) -> None:
    shape = (2, 5, 13, 11, 3)
    x, _, mask, maps = _problem(shape, dtype, seed=4, normalize_maps=False)
    z = random_complex(np.random.default_rng(5), x.shape, dtype)
    nx = mri.normal(tf.constant(x), mask, maps).numpy()
    nz = mri.normal(tf.constant(z), mask, maps).numpy()
    lhs, rhs = cdot(nx, z), cdot(x, nz)
    assert abs(lhs - rhs) <= IDENTITY_RTOL[dtype] * np.linalg.norm(nx) * np.linalg.norm(z)
    # <x, A^H A x> = ||A x||^2: real and non-negative
    quad = cdot(x, nx)
    ax = mri.forward(tf.constant(x), mask, maps).numpy()
    assert abs(quad.imag) <= IDENTITY_RTOL[dtype] * abs(quad)
    np.testing.assert_allclose(quad.real, np.linalg.norm(ax) ** 2, rtol=IDENTITY_RTOL[dtype] * 10)
    assert quad.real > 0
    # normal() is exactly adjoint(forward())
    np.testing.assert_allclose(nx, mri.adjoint(mri.forward(tf.constant(x), mask, maps), mask, maps).numpy(),
                               rtol=0, atol=0)


def test_complex_scale_multiplies_by_a_real_factor() -> None:
    g = load_golden("layers_only.npz")
    out = mri.complex_scale(tf.constant(g["complex_abs_in"]), 0.3)
    assert_golden(out, g["complex_scale_out_x0.3"], "complex_scale")
    np.testing.assert_array_equal(out.numpy(), g["complex_scale_out_x0.3"])  # bit-exact today


# ---------------------------------------------------------------------------------------------------------------------
# Data consistency
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [1.0, 0.37])
def test_dcgd_equals_explicit_gradient_step(weight: float) -> None:
    x, y, mask, maps = _problem((2, 5, 13, 11, 3), np.complex64, seed=6, normalize_maps=False)
    out = DCGD(weight_init=weight)(tf.constant(x), y, mask, maps).numpy()
    x64, y64, maps64 = (v.astype(np.complex128) for v in (x, y, maps))
    w = float(np.float32(weight))
    expected = x64 - w * mri.adjoint_np(mri.forward_np(x64, mask, maps64) - y64, mask, maps64)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # weight_scale multiplies the stored weight: (w/2) * 2 is the same step
    scaled = DCGD(weight_init=weight / 2, weight_scale=2.0)(tf.constant(x), y, mask, maps).numpy()
    np.testing.assert_allclose(scaled, out, rtol=1e-6, atol=1e-6)


def _normal_equation_residual(z, x, y, mask, maps, lam):
    """|| (A^H A + lam I) z - (A^H y + lam x) || / || A^H y + lam x ||, in complex128 numpy."""
    z, x, y, maps = (v.astype(np.complex128) for v in (z, x, y, maps))
    lhs = mri.adjoint_np(mri.forward_np(z, mask, maps), mask, maps) + lam * z
    rhs = mri.adjoint_np(y, mask, maps) + lam * x
    return np.linalg.norm(lhs - rhs) / np.linalg.norm(rhs)


@pytest.mark.parametrize("dtype,cg_tol,tol", [(np.complex64, 1e-10, 1e-5), (np.complex128, 1e-30, 1e-9)])
def test_dcpm_solves_the_normal_equations(dtype, cg_tol, tol) -> None:
    x, y, mask, maps = _problem((2, 5, 13, 11, 3), dtype, seed=7)
    weight = 0.5  # lambda = 2; with ||A|| <= 1 the system has condition number <= 1.5, so 10 CG steps suffice
    # DCPM's default tol (squared residual 1e-10) stops CG near 1e-7 relative; double precision needs a lower one
    z = DCPM(weight_init=weight, tol=cg_tol)(tf.constant(x), y, mask, maps).numpy()
    assert z.dtype == dtype and z.shape == x.shape
    assert _normal_equation_residual(z, x, y, mask, maps, 1.0 / weight) < tol
    # it is not the trivial answer: DCPM moved the input
    assert np.linalg.norm(z - x) > 0.1 * np.linalg.norm(x)


def test_dcpm_fixed_point_is_a_least_squares_solution() -> None:
    dtype = np.complex128
    x_true, _, mask, maps = _problem((1, 3, 9, 7, 2), dtype, seed=8)
    y = mri.forward_np(x_true, mask, maps)  # noiseless: x_true solves A^H A x = A^H y
    dc = DCPM(weight_init=5.0, num_iters=30)
    np.testing.assert_allclose(dc(tf.constant(x_true), y, mask, maps).numpy(), x_true, rtol=1e-9, atol=1e-9)

    def ls_residual(v):
        return np.linalg.norm(mri.adjoint_np(mri.forward_np(v, mask, maps) - y, mask, maps))

    # proximal-point iterations from zero drive the least-squares residual A^H(Ax - y) down monotonically
    x = np.zeros_like(x_true)
    residuals = [ls_residual(x)]
    for _ in range(8):
        x = dc(tf.constant(x), y, mask, maps).numpy()
        residuals.append(ls_residual(x))
    assert all(b <= a * (1 + 1e-9) for a, b in zip(residuals, residuals[1:])), residuals
    assert residuals[-1] < 0.05 * residuals[0], residuals


@pytest.mark.parametrize("dtype,cg_tol,tol", [(np.complex64, 1e-10, 1e-5), (np.complex128, 1e-30, 1e-10)])
def test_cg_sense_recovers_fully_sampled_image(dtype, cg_tol, tol) -> None:
    rng = np.random.default_rng(9)
    image = random_complex(rng, (2, 3, 9, 7, 1), dtype)
    maps = random_complex(rng, (2, 1, 9, 7, 4), np.complex128)
    # sum_c |s_c|^2 in [0.5, 1.5]: A^H A is a non-trivial diagonal (condition number 3), so CG has work to do
    maps *= np.sqrt(rng.uniform(0.5, 1.5, (2, 1, 9, 7, 1)) / np.sum(np.abs(maps) ** 2, -1, keepdims=True))
    maps = maps.astype(dtype)
    mask = np.ones((2, 3, 1, 7, 1), REAL[dtype])
    kspace = mri.forward_np(image, mask, maps).astype(dtype)
    recon = cg_sense(tf.constant(kspace), mask, maps, num_iters=30, tol=cg_tol).numpy()
    np.testing.assert_allclose(recon, image, rtol=tol, atol=tol * np.abs(image).max())
    # the zero-filled adjoint alone is not the image (the maps are not normalised), so CG did the work
    assert np.abs(mri.adjoint_np(kspace, mask, maps) - image).max() > 0.1


def test_conjugate_gradient_stops_on_converged_batch_elements() -> None:
    # batch element 0 starts at the solution (zero residual): it must stay there, not become NaN (0/0)
    rhs = tf.constant(random_complex(np.random.default_rng(10), (2, 2, 3, 3, 1), np.complex128))
    x0 = tf.concat([rhs[:1] / 2.0, tf.zeros_like(rhs[1:])], axis=0)
    out = conjugate_gradient(lambda v: v * 2.0, rhs, x0, num_iters=5).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, rhs.numpy() / 2.0, rtol=1e-12, atol=1e-12)


def test_scalar_scales_by_its_value() -> None:
    x = random_complex(np.random.default_rng(11), (1, 2, 3, 3, 1))
    layer = Scalar(init=0.1, train_scale=3.0)
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), np.float32(0.1) * 3.0 * x, rtol=1e-6)


def test_dc_layers_meet_the_layer_contract(tmp_path) -> None:
    x, y, mask, maps = _problem((1, 3, 7, 5, 2), np.complex64, seed=12)
    check_layer(DCGD(0.7, name="dcgd"), [x, y, mask, maps], num_weights=1, num_trainable=1, tmp_path=tmp_path)
    check_layer(DCPM(0.7, num_iters=4, name="dcpm"), [x, y, mask, maps], num_weights=1, num_trainable=1,
                tmp_path=tmp_path, rtol=1e-5, atol=1e-5)
    check_layer(Scalar(0.1, name="scalar"), [x], num_weights=1, num_trainable=1, tmp_path=tmp_path)


def test_dc_weight_is_frozen_when_not_trainable() -> None:
    dc = DCGD(trainable=False)
    dc.build()
    assert dc.trainable_weights == [] and len(dc.non_trainable_weights) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Graph mode with unknown shapes
# ---------------------------------------------------------------------------------------------------------------------


def _signature(*dtypes):
    return [tf.TensorSpec([None] * 5, d) for d in dtypes]


def test_operators_in_tf_function_with_unknown_shapes() -> None:
    c64, f32 = tf.complex64, tf.float32
    fft = tf.function(mri.fft2c, input_signature=_signature(c64))
    ifft = tf.function(mri.ifft2c, input_signature=_signature(c64))
    fwd = tf.function(mri.forward, input_signature=_signature(c64, f32, c64))
    adj = tf.function(mri.adjoint, input_signature=_signature(c64, f32, c64))
    dcgd, dcpm = DCGD(0.8), DCPM(0.8, num_iters=5)
    dcgd_fn = tf.function(lambda *a: dcgd(*a), input_signature=_signature(c64, c64, f32, c64))
    dcpm_fn = tf.function(lambda *a: dcpm(*a), input_signature=_signature(c64, c64, f32, c64))
    sense = tf.function(lambda k, m, s: cg_sense(k, m, s, num_iters=5), input_signature=_signature(c64, f32, c64))
    # one traced function serves several odd and even sizes: nothing depends on static shapes
    for seed, shape in enumerate([(2, 5, 13, 11, 3), (1, 2, 8, 6, 2), (1, 1, 3, 5, 1)]):
        x, y, mask, maps = _problem(shape, np.complex64, seed=20 + seed)
        pairs = [
            (fft(x), mri.fft2c(tf.constant(x))),
            (ifft(y), mri.ifft2c(tf.constant(y))),
            (fwd(x, mask, maps), mri.forward(tf.constant(x), mask, maps)),
            (adj(y, mask, maps), mri.adjoint(tf.constant(y), mask, maps)),
            (dcgd_fn(x, y, mask, maps), dcgd(tf.constant(x), y, mask, maps)),
            (dcpm_fn(x, y, mask, maps), dcpm(tf.constant(x), y, mask, maps)),
            (sense(y, mask, maps), cg_sense(tf.constant(y), mask, maps, num_iters=5)),
        ]
        for graph, eager in pairs:
            assert graph.shape == eager.shape
            np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)
    assert fwd.experimental_get_tracing_count() == 1  # traced once for all sizes


# ---------------------------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------------------------


def _zeros(shape, dtype=tf.complex64):
    return tf.zeros(shape, dtype)


GOOD = dict(image=(1, 4, 8, 6, 1), kspace=(1, 4, 8, 6, 3), mask=(1, 4, 1, 6, 1), coil_maps=(1, 1, 8, 6, 3))


def _inputs(**changes):
    shapes = {**GOOD, **{k: v for k, v in changes.items() if not k.endswith("_dtype")}}
    dtypes = {"image": tf.complex64, "kspace": tf.complex64, "mask": tf.float32, "coil_maps": tf.complex64}
    dtypes.update({k[: -len("_dtype")]: v for k, v in changes.items() if k.endswith("_dtype")})
    return {name: None if shape is None else _zeros(shape, dtypes[name]) for name, shape in shapes.items()}


def test_check_operator_inputs_accepts_valid_inputs() -> None:
    mri.check_operator_inputs(**_inputs())
    mri.check_operator_inputs(**_inputs(kspace=None))  # image + coil maps only
    mri.check_operator_inputs(**_inputs(mask=(1, 4, 8, 6, 3)))  # a full-size mask broadcasts too
    mri.check_operator_inputs(**_inputs(mask=(1, 1, 1, 6, 1)))  # one mask for all frames
    mri.check_operator_inputs(**_inputs(mask=(1, 4, 1, 6, 3)))  # one mask per coil

    # unknown dims (graph mode) are not errors
    @tf.function(input_signature=[tf.TensorSpec([None] * 5, tf.complex64), tf.TensorSpec([None] * 5, tf.float32)])
    def graph_check(kspace, mask):
        mri.check_operator_inputs(kspace=kspace, mask=mask)
        return kspace

    graph_check(_zeros(GOOD["kspace"]), tf.zeros(GOOD["mask"]))


BAD_CASES = {
    # case: (changes, argument named in the message, shapes that the message must show)
    "image_rank": (dict(image=(1, 4, 8, 6)), "image", [(1, 4, 8, 6)]),
    "kspace_rank": (dict(kspace=(4, 8, 6, 3)), "kspace", [(4, 8, 6, 3)]),
    "mask_rank": (dict(mask=(4, 1, 6, 1)), "mask", [(4, 1, 6, 1)]),
    "coil_maps_rank": (dict(coil_maps=(1, 8, 6, 3)), "coil_maps", [(1, 8, 6, 3)]),
    "coil_count": (dict(coil_maps=(1, 1, 8, 6, 4)), "coil_maps", [(1, 4, 8, 6, 3), (1, 1, 8, 6, 4)]),
    "mask_y": (dict(mask=(1, 4, 1, 5, 1)), "mask", [(1, 4, 1, 5, 1), (1, 4, 8, 6, 3)]),
    "mask_t": (dict(mask=(1, 3, 1, 6, 1)), "mask", [(1, 3, 1, 6, 1)]),
    "kspace_real": (dict(kspace_dtype=tf.float32), "kspace", [(1, 4, 8, 6, 3)]),
    "image_real": (dict(image_dtype=tf.float32), "image", [(1, 4, 8, 6, 1)]),
    "coil_maps_real": (dict(coil_maps_dtype=tf.float32), "coil_maps", [(1, 1, 8, 6, 3)]),
    "mask_complex": (dict(mask_dtype=tf.complex64), "mask", [(1, 4, 1, 6, 1)]),
    "image_channels": (dict(image=(1, 4, 8, 6, 2)), "image", [(1, 4, 8, 6, 2)]),
    "coil_maps_time": (dict(coil_maps=(1, 4, 8, 6, 3)), "coil_maps", [(1, 4, 8, 6, 3)]),
    "coil_maps_x": (dict(coil_maps=(1, 1, 9, 6, 3)), "coil_maps", [(1, 1, 9, 6, 3), (1, 4, 8, 6, 3)]),
    "coil_maps_y": (dict(coil_maps=(1, 1, 8, 7, 3)), "coil_maps", [(1, 1, 8, 7, 3), (1, 4, 8, 6, 3)]),
    "coil_maps_x_vs_image": (dict(kspace=None, coil_maps=(1, 1, 9, 6, 3)), "coil_maps",
                             [(1, 1, 9, 6, 3), (1, 4, 8, 6, 1)]),
    # regressions: the first version skipped the mask's coil axis and never compared image with k-space
    "mask_coils": (dict(mask=(1, 4, 1, 6, 2)), "mask", [(1, 4, 1, 6, 2), (1, 4, 8, 6, 3)]),
    "mask_coils_vs_maps": (dict(kspace=None, mask=(1, 4, 1, 6, 2)), "mask", [(1, 4, 1, 6, 2)]),
    "image_x_vs_kspace": (dict(image=(1, 4, 9, 6, 1)), "image", [(1, 4, 9, 6, 1), (1, 4, 8, 6, 3)]),
    "image_t_vs_kspace": (dict(image=(1, 5, 8, 6, 1)), "image", [(1, 5, 8, 6, 1), (1, 4, 8, 6, 3)]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_check_operator_inputs_rejects_bad_inputs(case: str) -> None:
    changes, argument, shapes = BAD_CASES[case]
    with pytest.raises(ValueError) as info:
        mri.check_operator_inputs(**_inputs(**changes))
    message = str(info.value)
    assert argument in message, message
    for shape in shapes:
        assert str(shape) in message, message
