"""CPAB diffeomorphisms (reconstruction/cpab.py) and deepinv's ShiftTime (reconstruction/transforms.py)."""
import numpy as np
import pytest
import tensorflow as tf

from reconstruction import cpab
from reconstruction import transforms as tr


def _smooth_cine(batch=2, frames=2, size_x=24, size_y=20):
    r = np.linspace(0, 1, size_x)[:, None]
    c = np.linspace(0, 1, size_y)[None, :]
    frame = np.cos(2.0 * r) * np.sin(1.5 * c + 0.3) + 1j * (r * c)
    return np.broadcast_to(frame[None, None, :, :, None], (batch, frames, size_x, size_y, 1)).astype(np.complex64)


def test_basis_is_orthonormal_and_satisfies_the_constraints():
    for zero_boundary, volume in ((True, True), (True, False), (False, False)):
        basis = cpab.cpab_basis(3, zero_boundary, volume)
        np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-10)
        constraints = cpab._constraints(3, zero_boundary, volume)
        assert np.abs(constraints @ basis).max() < 1e-8
    # continuous piecewise-linear fields on 13 vertices (26 numbers), the boundary's tangential components free
    assert cpab.cpab_basis(3, True, False).shape == (216, 34)
    assert cpab.cpab_basis(3, False, False).shape[1] == 50


def test_velocity_is_continuous_across_every_cell_edge_and_tangential_on_the_border():
    theta = cpab.sample_theta([3, 4], 2)
    matrices = cpab.velocity_matrices(theta, cpab.cpab_basis(3, True, True)).numpy()
    verts = cpab._cell_vertices(3)
    rng = np.random.default_rng(0)
    checked = 0
    for a in range(len(verts)):
        for b in range(a + 1, len(verts)):
            shared = [v for v in verts[a] if any(np.allclose(v, w) for w in verts[b])]
            if len(shared) != 2:
                continue
            for s in rng.random(3):  # points along the shared edge: both cells' affine maps agree
                p = np.append(s * shared[0] + (1 - s) * shared[1], 1.0)
                np.testing.assert_allclose(matrices[:, a] @ p, matrices[:, b] @ p, atol=1e-5)
                checked += 1
    assert checked == 3 * (36 + 12)  # 4 diagonals in each of 9 squares + 12 edges between squares
    border = tf.constant([[[0.0, 0.3], [1.0, 0.7], [0.4, 0.0], [0.6, 1.0]]] * 2)
    v = cpab.velocity(border, tf.constant(matrices), 3).numpy()
    np.testing.assert_allclose([v[:, 0, 0], v[:, 1, 0], v[:, 2, 1], v[:, 3, 1]], 0.0, atol=1e-5)


def test_volume_preserving_fields_are_divergence_free():
    matrices = cpab.velocity_matrices(cpab.sample_theta([1, 1], 3), cpab.cpab_basis(3, True, True)).numpy()
    np.testing.assert_allclose(matrices[..., 0, 0] + matrices[..., 1, 1], 0.0, atol=1e-5)


def test_zero_velocity_is_the_identity():
    x = _smooth_cine()
    theta = tf.zeros([2, cpab.cpab_basis(3, True, True).shape[1]])
    np.testing.assert_allclose(cpab.cpab_warp(x, theta).numpy(), x, atol=1e-5)


def test_negated_velocity_inverts_the_map_and_the_warp():
    theta = cpab.sample_theta([5, 6], 2, scale=1.5)
    basis = cpab.cpab_basis(3, True, True)
    points = tf.tile(cpab.unit_grid(33, 33)[None], [2, 1, 1])
    forward = cpab.integrate(points, cpab.velocity_matrices(theta, basis), 3)
    assert np.abs((forward - points).numpy()).max() > 0.02  # it moves
    back = cpab.integrate(forward, cpab.velocity_matrices(-theta, basis), 3)
    np.testing.assert_allclose(back.numpy(), points.numpy(), atol=2e-3)
    # on images: warp by theta then -theta gives the smooth image back in the interior
    x = _smooth_cine()
    restored = cpab.cpab_warp(cpab.cpab_warp(x, theta), -theta).numpy()
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    np.testing.assert_allclose(restored[inner], x[inner], atol=2e-2)


def test_the_displacement_field_is_smooth():
    theta = cpab.sample_theta([7, 8], 1)
    size = 41
    coords = cpab.cpab_coords(theta, size, size).numpy()[0]
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1)
    displacement = coords - grid
    # neighbouring pixels move alike: a Lipschitz field, no jumps at the cell edges
    jump = max(np.abs(np.diff(displacement, axis=0)).max(), np.abs(np.diff(displacement, axis=1)).max())
    assert jump < 0.25 * np.abs(displacement).max() + 1e-6
    # with a finer integration the map barely changes (the scheme converges)
    fine = cpab.cpab_coords(theta, size, size, steps=200).numpy()[0]
    assert np.abs(fine - coords).max() < 0.05 * np.abs(displacement).max() + 1e-3


def test_transform_is_seeded_shared_over_the_batch_and_registered():
    x = _smooth_cine(batch=2)
    t = tr.make_transform("cpab")
    a, b = t(x, tf.constant([1, 2])).numpy(), t(x, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0], a[1], atol=1e-6)  # constant_batch: one draw for all examples
    assert not np.allclose(a, x, atol=1e-3)
    smooth = cpab.CPAB(prior="smooth", constant_batch=False)(x, tf.constant([1, 2])).numpy()
    assert smooth.shape == x.shape and not np.allclose(smooth[0], smooth[1], atol=1e-4)
    ddei = tr.make_transform("ddei-cpab")(x, tf.constant([4, 4]))
    assert ddei.shape == x.shape and ddei.dtype == tf.complex64
    with pytest.raises(ValueError, match="prior"):
        cpab.CPAB(prior="gp")


def _reflect_reference(x, shift):
    """deepinv's roll_reflect_1d along axis 1, written out."""
    frames = x.shape[1]
    by = shift % (2 * frames - 2)
    if by > frames - 1:
        by -= 2 * frames - 2
    flipped = x[:, ::-1]
    padded = np.concatenate([flipped[:, :frames - 1], x, flipped[:, 1:]], axis=1)
    return np.roll(padded, by, axis=1)[:, frames - 1:2 * frames - 1]


@pytest.mark.parametrize("frames", [1, 2, 5, 6])
def test_shift_time_reflect_matches_deepinv_and_circular_is_a_roll(frames):
    x = np.arange(2 * frames * 3).reshape(2, frames, 3, 1, 1).astype(np.float32)
    for shift in range(-frames, frames):
        got = tr.shift_time(x, shift).numpy()
        expected = x if frames == 1 else _reflect_reference(x, shift)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(tr.shift_time(x, shift, "circular").numpy(), np.roll(x, shift, axis=1))
    per_example = tr.shift_time(x, [1, -1]).numpy()
    np.testing.assert_array_equal(per_example[1], tr.shift_time(x, -1).numpy()[1])


def test_shift_time_draws_cover_minus_t_to_t_minus_one():
    x = np.arange(4).reshape(1, 4, 1, 1, 1).astype(np.float32) * np.ones((1, 1, 1, 1, 1), np.float32)
    seen = set()
    for seed in range(60):
        out = tr.ShiftTime()(x, tf.constant([seed, 0])).numpy().ravel()
        for shift in range(-4, 4):
            if np.array_equal(out, _reflect_reference(x, shift).ravel()):
                seen.add(shift % 6 if shift % 6 <= 3 else shift % 6 - 6)
    assert len(seen) >= 5
    assert tr.make_transform("shift-time").padding == "reflect"
    assert tr.make_transform("shift-time-circular").padding == "circular"
    with pytest.raises(ValueError, match="padding"):
        tr.ShiftTime("wrap")
