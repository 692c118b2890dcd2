"""CPAB diffeomorphisms (Freifeld et al., TPAMI 2017) as DDEI uses them through deepinv's ``CPABDiffeomorphism``.

Source convention: deepinv's ``CPABDiffeomorphism`` wraps ``libcpab`` (Andrewwango's fork) with
``Cpab([3, 3], zero_boundary=True, volume_perservation=True)``, draws ``theta ~ N(0, I_d)``
(``sample_transformation``, one draw for the whole batch: ``constant_batch=True``) and calls ``transform_data``.
This module follows that library's definitions:

* Tessellation: the domain ``[0, 1]^2`` (coordinate 0 along X, coordinate 1 along Y) is cut into ``n x n`` squares,
  each split into 4 triangles by its diagonals (``4 n^2`` cells; per square: top, right, bottom, left, i.e.
  libcpab's ``(centre, ul, ur)``, ``(centre, ur, lr)``, ``(centre, lr, ll)``, ``(centre, ll, ul)``; cell index
  ``4 (j + i n) + k`` for column ``j`` along coordinate 0 and row ``i`` along coordinate 1).
* Velocity field: affine in each cell, ``v(p) = A_c [p; 1]`` with ``A_c`` a 2x3 matrix. The stacked ``A`` (6 per cell)
  lies in the null space of linear constraints: continuity (both cells of a shared edge give the same velocity at
  its two vertices, hence along it), zero boundary (the normal velocity component vanishes on the domain edges:
  the x-component on x = 0, 1 and the y-component on y = 0, 1, as libcpab), and optionally volume preservation
  (``trace A_c[:, :2] = 0``, divergence-free). ``A = B theta`` with ``B`` an orthonormal basis of that null space
  (SVD, singular values <= 1e-6 count as zero, as libcpab).
* Prior: ``theta ~ N(0, I)`` (``prior="normal"``, libcpab's ``sample_transformation``, used by deepinv and DDEI), or
  libcpab's smooth prior ``sample_transformation_with_prior`` (``prior="smooth"``): in A-space each parameter is
  correlated only with the same parameter of other cells, with the squared-exponential kernel
  ``s^2 exp(-|c_i - c_j|^2 / (2 l^2))`` of the cell centres (length scale ``l = 0.1``, ``s = 1``), mapped to theta by
  ``B^T K B``. ``scale`` multiplies theta (1 = the library's).
* Integration ("closed form per cell and step", libcpab's scheme): the flow ``dp/dt = v(p)`` is integrated over
  ``t in [0, 1]`` in ``steps`` (libcpab's ``nstepsolver`` = 50) steps of ``dt = 1/steps``; each step finds the
  cell of the current point and applies that cell's exact affine flow for ``dt``,
  ``[p; 1] <- expm(dt [A_c; 0 0 0]) [p; 1]``. Within a cell this is the exact solution; the cell is re-selected at
  every step. Flowing by ``-theta`` inverts the map (exactly for the continuous flow, to O(dt) at cell crossings here).
* Resampling: as ``transform_data``, the output at pixel ``p`` is the input at ``T_theta(p)`` (pixel ``(r, c)`` is the
  point ``(r / (X-1), c / (Y-1))``), bilinear (:func:`reconstruction.transforms.bilinear_sample`, border clamping),
  the same field for every frame of a cine.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from reconstruction.transforms import Transform, as_rank5, bilinear_sample

PRIORS = ("normal", "smooth")
DEFAULT_STEPS = 50


# --------------------------------------------------------------------------------------------- tessellation
def _cell_vertices(n: int) -> np.ndarray:
    """(4 n^2, 3, 2) triangle vertices (centre first), in libcpab's order."""
    grid = np.linspace(0.0, 1.0, n + 1)
    cells = []
    for i in range(n):          # rows, along coordinate 1
        for j in range(n):      # columns, along coordinate 0
            ul, ur = (grid[j], grid[i]), (grid[j + 1], grid[i])
            ll, lr = (grid[j], grid[i + 1]), (grid[j + 1], grid[i + 1])
            centre = ((grid[j] + grid[j + 1]) / 2, (grid[i] + grid[i + 1]) / 2)
            cells += [(centre, ul, ur), (centre, ur, lr), (centre, lr, ll), (centre, ll, ul)]
    return np.asarray(cells, dtype=np.float64)


def _constraints(n: int, zero_boundary: bool, volume_preservation: bool) -> np.ndarray:
    verts = _cell_vertices(n)
    num_cells = len(verts)
    rows = []
    keys = [{tuple(np.round(v, 12)) for v in cell} for cell in verts]
    for a in range(num_cells):
        for b in range(a + 1, num_cells):
            shared = keys[a] & keys[b]
            if len(shared) != 2:
                continue
            for vertex in sorted(shared):
                homogeneous = np.array([vertex[0], vertex[1], 1.0])
                for k in range(2):  # each velocity component equal on the shared edge
                    row = np.zeros(6 * num_cells)
                    row[6 * a + 3 * k: 6 * a + 3 * k + 3] = homogeneous
                    row[6 * b + 3 * k: 6 * b + 3 * k + 3] = -homogeneous
                    rows.append(row)
    if zero_boundary:
        for c in range(num_cells):
            for vertex in verts[c]:
                homogeneous = np.array([vertex[0], vertex[1], 1.0])
                for k in range(2):  # normal component: x on x = 0, 1; y on y = 0, 1
                    if np.isclose(vertex[k], 0.0) or np.isclose(vertex[k], 1.0):
                        row = np.zeros(6 * num_cells)
                        row[6 * c + 3 * k: 6 * c + 3 * k + 3] = homogeneous
                        rows.append(row)
    if volume_preservation:
        for c in range(num_cells):
            row = np.zeros(6 * num_cells)
            row[6 * c + 0] = row[6 * c + 4] = 1.0  # a00 + a11
            rows.append(row)
    return np.asarray(rows)


@functools.lru_cache(maxsize=16)
def cpab_basis(tessellation: int = 3, zero_boundary: bool = True, volume_preservation: bool = True) -> np.ndarray:
    """(6 * 4 n^2, d) orthonormal basis of the constrained velocity fields (float64, read-only)."""
    if int(tessellation) < 1:
        raise ValueError(f"tessellation: expected >= 1 cells per side, received {tessellation}")
    constraints = _constraints(int(tessellation), bool(zero_boundary), bool(volume_preservation))
    _, singular, vh = np.linalg.svd(constraints)
    rank = int(np.sum(singular > 1e-6))
    basis = vh[rank:].T.copy()
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=16)
def _smooth_prior_factor(tessellation: int, zero_boundary: bool, volume_preservation: bool,
                         length_scale: float, output_variance: float) -> np.ndarray:
    """Cholesky factor of libcpab's smooth prior covariance in theta space."""
    basis = cpab_basis(tessellation, zero_boundary, volume_preservation)
    centres = _cell_vertices(tessellation).mean(axis=1)
    sq_dist = np.sum((centres[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
    kernel = output_variance ** 2 * np.exp(-sq_dist / (2 * length_scale ** 2))
    cov_a = np.kron(kernel, np.eye(6))  # only parameter k of cell i with parameter k of cell j
    cov_theta = basis.T @ cov_a @ basis
    cov_theta = (cov_theta + cov_theta.T) / 2 + 1e-9 * np.eye(len(cov_theta))
    return np.linalg.cholesky(cov_theta)


# --------------------------------------------------------------------------------------------- plain ops
def cell_index(points: tf.Tensor, tessellation: int) -> tf.Tensor:
    """libcpab's ``findcellidx`` in 2D: (..., 2) points in [0, 1]^2 (clamped) -> (...,) int32 triangle index."""
    n = int(tessellation)
    points = tf.clip_by_value(points, 0.0, 1.0 - 1e-7)
    scaled = points * float(n)
    cell = tf.minimum(tf.floor(scaled), float(n - 1))
    local = scaled - cell
    x, y = local[..., 0], local[..., 1]
    col, row = tf.cast(cell[..., 0], tf.int32), tf.cast(cell[..., 1], tf.int32)
    below_anti = (1.0 - x) < y
    triangle = tf.where(x < y, tf.where(below_anti, 2, 3), tf.where(below_anti, 1, 0))
    return 4 * (col + row * n) + triangle


def velocity_matrices(theta: tf.Tensor, basis: np.ndarray) -> tf.Tensor:
    """(B, d) parameters -> (B, nC, 2, 3) per-cell affine velocity matrices ``A = B theta``."""
    theta = tf.convert_to_tensor(theta, tf.float32)
    basis = tf.constant(basis, tf.float32)
    flat = tf.matmul(theta, basis, transpose_b=True)  # (B, 6 nC)
    return tf.reshape(flat, tf.stack([tf.shape(theta)[0], -1, 2, 3]))


def velocity(points: tf.Tensor, matrices: tf.Tensor, tessellation: int) -> tf.Tensor:
    """Velocity ``A_c(p) [p; 1]`` at (B, P, 2) points for (B, nC, 2, 3) matrices -> (B, P, 2)."""
    chosen = tf.gather(matrices, cell_index(points, tessellation), axis=1, batch_dims=1)  # (B,P,2,3)
    return tf.einsum("bpij,bpj->bpi", chosen[..., :2], points) + chosen[..., 2]


def integrate(points: tf.Tensor, matrices: tf.Tensor, tessellation: int, steps: int = DEFAULT_STEPS) -> tf.Tensor:
    """``T(p)``: the flow of the CPA field for unit time, by per-cell closed-form steps (module docstring).

    Args:
        points: (B, P, 2) float32 points of [0, 1]^2.
        matrices: (B, nC, 2, 3) velocity matrices (:func:`velocity_matrices`).
        tessellation: cells per side.
        steps: integration steps (libcpab's ``nstepsolver``).
    """
    if int(steps) < 1:
        raise ValueError(f"steps: expected >= 1, received {steps}")
    shape = tf.shape(matrices)
    square = tf.concat([matrices, tf.zeros(tf.stack([shape[0], shape[1], 1, 3]), matrices.dtype)], axis=2)
    step_maps = tf.linalg.expm(square / float(steps))[:, :, :2, :]  # exact affine flow for dt, per cell

    def step(i, p):
        chosen = tf.gather(step_maps, cell_index(p, tessellation), axis=1, batch_dims=1)
        return i + 1, tf.einsum("bpij,bpj->bpi", chosen[..., :2], p) + chosen[..., 2]

    # a loop op, not `steps` copies of the step in the graph
    _, points = tf.while_loop(lambda i, p: i < int(steps), step, (tf.constant(0), points))
    return points


def unit_grid(size_x, size_y) -> tf.Tensor:
    """(X*Y, 2) pixel positions mapped to [0, 1]^2 (row r -> r/(X-1), column c -> c/(Y-1)), row-major."""
    def axis(n):
        n_f = tf.cast(n, tf.float32)
        return tf.range(n_f) / tf.maximum(n_f - 1.0, 1.0)

    rows, cols = tf.meshgrid(axis(size_x), axis(size_y), indexing="ij")
    return tf.reshape(tf.stack([rows, cols], axis=-1), [-1, 2])


def cpab_coords(theta: tf.Tensor, size_x, size_y, tessellation: int = 3, zero_boundary: bool = True,
                volume_preservation: bool = True, steps: int = DEFAULT_STEPS) -> tf.Tensor:
    """(B, X, Y, 2) pixel positions ``T_theta(p)`` sampled by :func:`cpab_warp` (rows, columns in pixels)."""
    basis = cpab_basis(int(tessellation), bool(zero_boundary), bool(volume_preservation))
    theta = tf.convert_to_tensor(theta, tf.float32)
    batch = tf.shape(theta)[0]
    grid = unit_grid(size_x, size_y)
    points = tf.tile(grid[None], tf.stack([batch, 1, 1]))
    # the sampling positions are constants of the training step (no gradient to theta, as deepinv's transforms)
    moved = tf.stop_gradient(integrate(points, velocity_matrices(theta, basis), tessellation, steps))
    extent = tf.stack([tf.cast(size_x, tf.float32) - 1.0, tf.cast(size_y, tf.float32) - 1.0])
    return tf.reshape(moved * extent, tf.stack([batch, size_x, size_y, 2]))


def cpab_warp(x: tf.Tensor, theta: tf.Tensor, tessellation: int = 3, zero_boundary: bool = True,
              volume_preservation: bool = True, steps: int = DEFAULT_STEPS) -> tf.Tensor:
    """Applies the CPAB diffeomorphism ``theta`` (B, d) to every frame of (B,T,X,Y,C) ``x``: ``out(p) = x(T(p))``."""
    x = as_rank5("x", x)
    shape = tf.shape(x)
    coords = cpab_coords(theta, shape[2], shape[3], tessellation, zero_boundary, volume_preservation, steps)
    return bilinear_sample(x, coords, fill="border")


def sample_theta(seed, batch, tessellation: int = 3, zero_boundary: bool = True, volume_preservation: bool = True,
                 prior: str = "normal", scale: float = 1.0, length_scale: float = 0.1,
                 output_variance: float = 1.0) -> tf.Tensor:
    """(batch, d) float32 parameters from the prior (module docstring), drawn with a stateless ``seed``."""
    if prior not in PRIORS:
        raise ValueError(f"prior: expected one of {PRIORS}, received {prior!r}")
    basis = cpab_basis(int(tessellation), bool(zero_boundary), bool(volume_preservation))
    dim = basis.shape[1]
    draw = tf.random.stateless_normal(tf.stack([batch, dim]), seed=tf.cast(seed, tf.int64))
    if prior == "smooth":
        factor = _smooth_prior_factor(int(tessellation), bool(zero_boundary), bool(volume_preservation),
                                      float(length_scale), float(output_variance))
        draw = tf.matmul(draw, tf.constant(factor, tf.float32), transpose_b=True)
    return draw * float(scale)


# --------------------------------------------------------------------------------------------- transform
class CPAB(Transform):
    """Random CPAB diffeomorphism, deepinv's ``CPABDiffeomorphism`` (DDEI's spatial transform).

    Args:
        tessellation: squares per side (deepinv's ``n_tesselation`` = 3); 4 triangles each.
        zero_boundary: zero normal velocity on the image border (deepinv: True).
        volume_preservation: divergence-free fields (deepinv: True).
        prior: ``"normal"`` (theta ~ N(0, I), deepinv) or ``"smooth"`` (libcpab's squared-exponential prior).
        scale: factor on theta (1 = deepinv).
        steps: integration steps (libcpab: 50).
        constant_batch: one draw for the whole batch (deepinv's default) or one per example.

    Call: ``transform(x, seed)`` with x (B,T,X,Y,C) real or complex -> same shape and dtype.
    """

    name = "cpab"

    def __init__(self, tessellation: int = 3, zero_boundary: bool = True, volume_preservation: bool = True,
                 prior: str = "normal", scale: float = 1.0, steps: int = DEFAULT_STEPS, constant_batch: bool = True):
        if prior not in PRIORS:
            raise ValueError(f"prior: expected one of {PRIORS}, received {prior!r}")
        if not (math.isfinite(float(scale)) and float(scale) >= 0):
            raise ValueError(f"scale: expected a non-negative number, received {scale}")
        if int(steps) < 1:
            raise ValueError(f"steps: expected >= 1, received {steps}")
        self.tessellation = int(tessellation)
        self.zero_boundary = bool(zero_boundary)
        self.volume_preservation = bool(volume_preservation)
        self.prior = prior
        self.scale = float(scale)
        self.steps = int(steps)
        self.constant_batch = bool(constant_batch)
        cpab_basis(self.tessellation, self.zero_boundary, self.volume_preservation)  # validates, caches

    def sample(self, seed, batch) -> tf.Tensor:
        """(batch, d) parameters of this transform's prior."""
        draws = 1 if self.constant_batch else batch
        theta = sample_theta(seed, draws, self.tessellation, self.zero_boundary, self.volume_preservation,
                             self.prior, self.scale)
        return tf.tile(theta, tf.stack([batch, 1])) if self.constant_batch else theta

    def apply(self, x, seed):
        theta = self.sample(seed, tf.shape(x)[0])
        return cpab_warp(x, theta, self.tessellation, self.zero_boundary, self.volume_preservation, self.steps)
