"""Random geometric transforms of cine images for equivariant imaging (EI, EI-R, DDEI), in plain TF ops.

Images are (B, T, X, Y, C) tensors, complex or real; every transform acts on each example of the batch with its own
random parameters and is linear in the image (so it commutes with taking real and imaginary parts).

Plain functions (deterministic given their parameters):

* :func:`time_shift`: circular shift along T (``out[:, t] = x[:, (t - s) mod T]``); a cine covers one periodic
  heartbeat, so wrapping is the natural boundary (deepinv's ``ShiftTime`` defaults to reflective padding; its
  ``"wrap"`` mode is this one).
* :func:`rotate`: in-plane rotation about the image centre ``((X-1)/2, (Y-1)/2)`` in pixel units, bilinear
  interpolation, zeros outside the field of view (as torchvision's ``rotate`` used by deepinv's ``Rotate``).
* :func:`warp` + :func:`random_displacement`: a smooth random diffeomorphism. A random velocity field on a coarse
  ``grid_size`` x ``grid_size`` grid is upsampled bicubically to (X, Y) and integrated by scaling and squaring
  (``u <- u + u o (id + u)``, ``steps`` times, from ``v / 2**steps``), which gives an invertible, smooth map when the
  field is smooth; the image is resampled bilinearly with border clamping, so every output pixel is a convex
  combination of input pixels and the image range is kept. DDEI uses deepinv's CPAB diffeomorphisms (continuous
  piecewise-affine velocity fields); this is a dependency-free stand-in with the same purpose.
* :func:`bilinear_sample`: the shared resampler (same coordinates for every frame and channel).
* :func:`shift_time` / :class:`ShiftTime`: deepinv's ``ShiftTime`` (the time transform of DDEI's ``train.py``). A
  shift by ``s`` frames with reflective padding is ``out[t] = x[R(t - s)]`` with the mirror fold
  ``R(j) = m if m <= T-1 else 2(T-1) - m``, ``m = j mod 2(T-1)`` (deepinv pads ``[flip(x)[:T-1], x, flip(x)[1:]]``,
  rolls and crops, reducing the shift modulo ``2T - 2`` first, which is this fold); ``padding="circular"`` is
  deepinv's ``"wrap"``, ``torch.roll``: ``out[t] = x[(t - s) mod T]``. The shift is drawn uniformly in
  ``{-T, ..., T-1}`` (deepinv: ``randperm(2T) - T``, first element), 0 included. T = 1 is the identity.
* :class:`reconstruction.cpab.CPAB` (``"cpab"``): DDEI's CPAB diffeomorphism (:mod:`reconstruction.cpab`).

Random transforms (:class:`Transform` objects, called as ``transform(x, seed)`` with a stateless seed of shape (2,))
compose as in deepinv: ``a | b`` applies ``a`` or ``b`` with probability 1/2 each, ``a * b`` applies ``a`` then
``b``. :data:`TRANSFORMS` maps the names used in configs to factories; DDEI's ``(diffeo | rotate) | time-shift``
(Wang & Davies, ISBI 2025, their ``train.py``) therefore applies a time shift with probability 1/2, and a diffeomorphism
or a rotation with probability 1/4 each; ``ddei-chain`` is the other reading, ``(diffeo | rotate) * time-shift``.
``ddei-cpab`` is DDEI's exact choice, ``(cpab | rotate) | shift-time``: CPAB diffeomorphisms and deepinv's
reflective time shift in place of the smooth warp and the circular shift.
"""
from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from utils.schema import register_choices

__all__ = [
    "TRANSFORMS",
    "Chain",
    "Diffeo",
    "OneOf",
    "Rotate",
    "SHIFT_PADDINGS",
    "ShiftTime",
    "TimeShift",
    "Transform",
    "bilinear_sample",
    "make_transform",
    "random_displacement",
    "reflect_index",
    "rotate",
    "shift_time",
    "time_shift",
    "warp",
]

FILL_MODES = ("zeros", "border")
SHIFT_PADDINGS = ("reflect", "circular")


# --------------------------------------------------------------------------------------------- plain ops
def as_rank5(name: str, x) -> tf.Tensor:
    """``x`` as a tensor; ValueError unless it is (B,T,X,Y,C)."""
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank != 5:
        raise ValueError(f"{name}: expected a (B,T,X,Y,C) tensor, received shape {tuple(x.shape)}")
    return x


def time_shift(x: tf.Tensor, shifts) -> tf.Tensor:
    """Circular shift along T by ``shifts`` frames per example: ``out[b, t] = x[b, (t - shifts[b]) mod T]``.

    Args:
        x: (B,T,X,Y,C) tensor.
        shifts: int scalar or (B,) ints (any sign).
    """
    x = as_rank5("x", x)
    num_frames = tf.shape(x)[1]
    shifts = tf.cast(shifts, tf.int32)
    shifts = tf.broadcast_to(tf.reshape(shifts, [-1]), [tf.shape(x)[0]])
    index = tf.math.floormod(tf.range(num_frames)[None, :] - shifts[:, None], num_frames)
    return tf.gather(x, index, axis=1, batch_dims=1)


def reflect_index(index: tf.Tensor, num_frames) -> tf.Tensor:
    """Mirror fold of integer frame indices into ``[0, T-1]`` without repeating the edge frames (numpy's
    ``"reflect"``): ``m = index mod 2(T-1)``, ``m`` if ``m <= T-1`` else ``2(T-1) - m``; 0 when T = 1."""
    num_frames = tf.cast(num_frames, tf.int32)
    period = tf.maximum(2 * (num_frames - 1), 1)
    folded = tf.math.floormod(tf.cast(index, tf.int32), period)
    return tf.where(folded > num_frames - 1, period - folded, folded)


def shift_time(x: tf.Tensor, shifts, padding: str = "reflect") -> tf.Tensor:
    """deepinv's ``ShiftTime``: shift along T by ``shifts`` frames per example with reflective (default) or circular
    padding: ``out[b, t] = x[b, R(t - shifts[b])]`` with ``R`` = :func:`reflect_index` or ``mod T``.

    Args:
        x: (B,T,X,Y,C) tensor.
        shifts: int scalar or (B,) ints (any sign).
        padding: ``"reflect"`` (deepinv's default) or ``"circular"`` (deepinv's ``"wrap"``, = :func:`time_shift`).
    """
    if padding not in SHIFT_PADDINGS:
        raise ValueError(f"padding: expected one of {SHIFT_PADDINGS}, received {padding!r}")
    if padding == "circular":
        return time_shift(x, shifts)
    x = as_rank5("x", x)
    num_frames = tf.shape(x)[1]
    shifts = tf.broadcast_to(tf.reshape(tf.cast(shifts, tf.int32), [-1]), [tf.shape(x)[0]])
    index = reflect_index(tf.range(num_frames)[None, :] - shifts[:, None], num_frames)
    return tf.gather(x, index, axis=1, batch_dims=1)


def _as_real_channels(x: tf.Tensor) -> tuple[tf.Tensor, bool]:
    if x.dtype.is_complex:
        return tf.concat([tf.math.real(x), tf.math.imag(x)], axis=-1), True
    return x, False


def _from_real_channels(x: tf.Tensor, was_complex: bool, dtype) -> tf.Tensor:
    if not was_complex:
        return x
    half = tf.shape(x)[-1] // 2
    return tf.cast(tf.complex(x[..., :half], x[..., half:]), dtype)


def bilinear_sample(x: tf.Tensor, coords: tf.Tensor, fill: str = "zeros") -> tf.Tensor:
    """Samples every frame and channel of ``x`` at the same real-valued pixel positions, bilinearly.

    Args:
        x: (B,T,X,Y,C) real or complex tensor.
        coords: (B,X',Y',2) float positions (row along X, column along Y) in pixel units; output pixel (i, j) takes
            the value of ``x`` at ``coords[b, i, j]``.
        fill: ``"zeros"`` (neighbours outside the image count as 0) or ``"border"`` (positions are clamped to the
            image, so outputs are convex combinations of input pixels).

    Returns:
        (B,T,X',Y',C) tensor of the dtype of ``x``.
    """
    if fill not in FILL_MODES:
        raise ValueError(f"fill: expected one of {FILL_MODES}, received {fill!r}")
    x = as_rank5("x", x)
    dtype = x.dtype
    values, was_complex = _as_real_channels(x)
    real_dtype = values.dtype
    shape = tf.shape(values)
    batch, frames, size_x, size_y, channels = shape[0], shape[1], shape[2], shape[3], shape[4]
    # (B,T,X,Y,C) -> (B,X,Y,T*C): one gather serves every frame and channel
    flat = tf.reshape(tf.transpose(values, [0, 2, 3, 1, 4]), tf.stack([batch, size_x, size_y, frames * channels]))
    coords = tf.cast(coords, real_dtype)
    rows, cols = coords[..., 0], coords[..., 1]
    max_x = tf.cast(size_x - 1, real_dtype)
    max_y = tf.cast(size_y - 1, real_dtype)
    if fill == "border":
        rows = tf.clip_by_value(rows, 0.0, max_x)
        cols = tf.clip_by_value(cols, 0.0, max_y)
    r0, c0 = tf.floor(rows), tf.floor(cols)
    wr, wc = rows - r0, cols - c0
    batch_index = tf.broadcast_to(tf.reshape(tf.range(batch), [-1, 1, 1]), tf.shape(rows))

    def corner(r, c, weight):
        inside = (r >= 0.0) & (r <= max_x) & (c >= 0.0) & (c <= max_y)
        ri = tf.cast(tf.clip_by_value(r, 0.0, max_x), tf.int32)
        ci = tf.cast(tf.clip_by_value(c, 0.0, max_y), tf.int32)
        gathered = tf.gather_nd(flat, tf.stack([batch_index, ri, ci], axis=-1))
        weight = tf.where(inside, weight, tf.zeros_like(weight))
        return gathered * weight[..., None]

    out = (corner(r0, c0, (1 - wr) * (1 - wc)) + corner(r0, c0 + 1, (1 - wr) * wc)
           + corner(r0 + 1, c0, wr * (1 - wc)) + corner(r0 + 1, c0 + 1, wr * wc))
    out_shape = tf.shape(out)
    out = tf.reshape(out, tf.stack([batch, out_shape[1], out_shape[2], frames, channels]))
    out = tf.transpose(out, [0, 3, 1, 2, 4])
    return _from_real_channels(out, was_complex, dtype)


def _pixel_grid(size_x, size_y, dtype=tf.float32) -> tf.Tensor:
    """(X, Y, 2) pixel positions (row, column)."""
    rows = tf.range(tf.cast(size_x, dtype), dtype=dtype)
    cols = tf.range(tf.cast(size_y, dtype), dtype=dtype)
    grid_r, grid_c = tf.meshgrid(rows, cols, indexing="ij")
    return tf.stack([grid_r, grid_c], axis=-1)


def rotate(x: tf.Tensor, angles) -> tf.Tensor:
    """Rotates every frame of each example by ``angles`` (radians, counter-clockwise in the (X, Y) index plane).

    The rotation centre is ``((X-1)/2, (Y-1)/2)``; bilinear interpolation with zeros outside the image. On a
    square image, a rotation by pi/2 is ``np.rot90(x, 1, axes=(2, 3))`` up to rounding.

    Args:
        x: (B,T,X,Y,C) real or complex tensor.
        angles: scalar or (B,) angles in radians.
    """
    x = as_rank5("x", x)
    shape = tf.shape(x)
    angles = tf.broadcast_to(tf.reshape(tf.cast(angles, tf.float32), [-1]), [shape[0]])
    grid = _pixel_grid(shape[2], shape[3])
    centre = tf.stack([tf.cast(shape[2] - 1, tf.float32), tf.cast(shape[3] - 1, tf.float32)]) / 2.0
    offset = grid - centre  # (X,Y,2) output positions relative to the centre
    cos, sin = tf.cos(angles)[:, None, None], tf.sin(angles)[:, None, None]
    # inverse map: output offset (a, b) takes the input at (cos a + sin b, -sin a + cos b); at +pi/2 that is
    # out[r, c] = x[c, N-1-r], the convention of np.rot90(k=1)
    src_r = cos * offset[None, ..., 0] + sin * offset[None, ..., 1]
    src_c = -sin * offset[None, ..., 0] + cos * offset[None, ..., 1]
    coords = tf.stack([src_r, src_c], axis=-1) + centre
    return bilinear_sample(x, coords, fill="zeros")


def warp(x: tf.Tensor, displacement: tf.Tensor, fill: str = "border") -> tf.Tensor:
    """Resamples ``x`` at ``p + displacement[p]`` for every pixel ``p`` (the same field for every frame).

    Args:
        x: (B,T,X,Y,C) real or complex tensor.
        displacement: (B,X,Y,2) float displacement (rows, columns) in pixels.
        fill: see :func:`bilinear_sample` (``"border"`` keeps the image range).
    """
    x = as_rank5("x", x)
    shape = tf.shape(x)
    grid = _pixel_grid(shape[2], shape[3], displacement.dtype)
    return bilinear_sample(x, grid[None] + displacement, fill=fill)


def _compose_field(field: tf.Tensor) -> tf.Tensor:
    """``u + u o (id + u)``: the displacement of the map (id + u) applied twice."""
    as_image = tf.transpose(field, [0, 3, 1, 2])[..., None]  # (B,2,X,Y,1): the 2 components as "frames"
    moved = bilinear_sample(as_image, _pixel_grid(tf.shape(field)[1], tf.shape(field)[2], field.dtype)[None] + field,
                            fill="border")
    return field + tf.transpose(moved[..., 0], [0, 2, 3, 1])


def random_displacement(seed, batch, size_x, size_y, grid_size: int = 4, max_displacement: float = 0.05,
                        steps: int = 6) -> tf.Tensor:
    """Smooth random diffeomorphic displacement fields, (B, X, Y, 2) float32 in pixels.

    A velocity field with standard-normal values on a ``grid_size`` x ``grid_size`` grid is upsampled bicubically to
    (X, Y), scaled so its largest vector is ``max_displacement * min(X, Y)`` times a uniform factor in (0, 1], and
    integrated by scaling and squaring with ``steps`` squarings.

    Args:
        seed: stateless seed, shape (2,) int.
        batch, size_x, size_y: output size.
        grid_size: control grid size (>= 2); fewer points give smoother warps.
        max_displacement: largest velocity as a fraction of the smaller image side.
        steps: squaring steps (the field is divided by ``2**steps`` first).
    """
    if int(grid_size) < 2:
        raise ValueError(f"grid_size: expected >= 2, received {grid_size}")
    if not (math.isfinite(float(max_displacement)) and float(max_displacement) >= 0):
        raise ValueError(f"max_displacement: expected a non-negative number, received {max_displacement}")
    if int(steps) < 0:
        raise ValueError(f"steps: expected >= 0, received {steps}")
    seed = tf.cast(seed, tf.int64)
    keys = tf.random.experimental.stateless_split(seed, 2)
    coarse = tf.random.stateless_normal(tf.stack([batch, int(grid_size), int(grid_size), 2]), seed=keys[0])
    velocity = tf.image.resize(coarse, tf.stack([size_x, size_y]), method="bicubic")
    peak = tf.reduce_max(tf.norm(velocity, axis=-1), axis=[1, 2], keepdims=True)[..., None]
    strength = tf.random.stateless_uniform(tf.stack([batch, 1, 1, 1]), seed=keys[1], minval=1e-3, maxval=1.0)
    side = tf.cast(tf.minimum(size_x, size_y), tf.float32)
    velocity = velocity / tf.maximum(peak, 1e-12) * strength * float(max_displacement) * side
    field = velocity / float(2 ** int(steps))
    for _ in range(int(steps)):
        field = _compose_field(field)
    return field


# ----------------------------------------------------------------------------------------- random transforms
def _split(seed, n: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


class Transform:
    """A random transform of (B,T,X,Y,C) cines: ``transform(x, seed)``; ``|`` picks one of two at random (p = 1/2),
    ``*`` chains (left first), as deepinv's transform algebra."""

    name = "transform"

    def __call__(self, x: tf.Tensor, seed) -> tf.Tensor:
        x = as_rank5("x", x)
        return self.apply(x, seed)

    def apply(self, x: tf.Tensor, seed) -> tf.Tensor:
        raise NotImplementedError

    def __or__(self, other: "Transform") -> "Transform":
        return OneOf(self, other)

    def __mul__(self, other: "Transform") -> "Transform":
        return Chain(self, other)

    def __repr__(self) -> str:
        return self.name


class TimeShift(Transform):
    """Circular time shift by a uniform random number of frames in 1..T-1 per example (identity when T = 1)."""

    name = "time-shift"

    def apply(self, x, seed):
        shape = tf.shape(x)
        frames = shape[1]
        draw = tf.random.stateless_uniform(shape[:1], seed=tf.cast(seed, tf.int64), minval=0,
                                           maxval=tf.maximum(frames - 1, 1), dtype=tf.int32)
        shifts = tf.where(frames > 1, draw + 1, tf.zeros_like(draw))
        return time_shift(x, shifts)


class ShiftTime(Transform):
    """deepinv's ``ShiftTime`` (DDEI's time transform): :func:`shift_time` by a shift drawn uniformly in
    ``{-T, ..., T-1}`` per example (0 included, as ``randperm(2T) - T``).

    Args:
        padding: ``"reflect"`` (deepinv's default) or ``"circular"``.
    """

    def __init__(self, padding: str = "reflect"):
        if padding not in SHIFT_PADDINGS:
            raise ValueError(f"padding: expected one of {SHIFT_PADDINGS}, received {padding!r}")
        self.padding = padding
        self.name = "shift-time" if padding == "reflect" else "shift-time-circular"

    def apply(self, x, seed):
        shape = tf.shape(x)
        frames = shape[1]
        shifts = tf.random.stateless_uniform(shape[:1], seed=tf.cast(seed, tf.int64), minval=0, maxval=2 * frames,
                                             dtype=tf.int32) - frames
        return shift_time(x, shifts, self.padding)


class Rotate(Transform):
    """In-plane rotation by a uniform random angle in [-max_degrees, max_degrees] per example."""

    name = "rotate"

    def __init__(self, max_degrees: float = 180.0):
        if not (math.isfinite(float(max_degrees)) and 0 <= float(max_degrees) <= 180):
            raise ValueError(f"max_degrees: expected a number in [0, 180], received {max_degrees}")
        self.max_degrees = float(max_degrees)

    def apply(self, x, seed):
        limit = math.radians(self.max_degrees)
        angles = tf.random.stateless_uniform(tf.shape(x)[:1], seed=tf.cast(seed, tf.int64), minval=-limit,
                                             maxval=limit)
        return rotate(x, angles)


class Diffeo(Transform):
    """Smooth random diffeomorphic warp (:func:`random_displacement`), the same for every frame of an example."""

    name = "diffeo"

    def __init__(self, grid_size: int = 4, max_displacement: float = 0.05, steps: int = 6):
        self.grid_size = int(grid_size)
        self.max_displacement = float(max_displacement)
        self.steps = int(steps)

    def apply(self, x, seed):
        shape = tf.shape(x)
        field = random_displacement(seed, shape[0], shape[2], shape[3], self.grid_size, self.max_displacement,
                                    self.steps)
        return warp(x, field, fill="border")


class OneOf(Transform):
    """``first`` or ``second`` with probability 1/2 each (one draw per batch; both are computed, one is kept)."""

    def __init__(self, first: Transform, second: Transform):
        self.first, self.second = first, second
        self.name = f"({first!r} | {second!r})"

    def apply(self, x, seed):
        choice_key, key_a, key_b = _split(seed, 3)
        pick_first = tf.random.stateless_uniform([], seed=choice_key) < 0.5
        # both branches are cheap next to the network; selecting avoids a tf.cond around stateless random ops
        return tf.where(pick_first, self.first.apply(x, key_a), self.second.apply(x, key_b))


class Chain(Transform):
    """``first`` then ``second``."""

    def __init__(self, first: Transform, second: Transform):
        self.first, self.second = first, second
        self.name = f"({first!r} * {second!r})"

    def apply(self, x, seed):
        key_a, key_b = _split(seed, 2)
        return self.second.apply(self.first.apply(x, key_a), key_b)


def _cpab() -> Transform:
    from reconstruction.cpab import CPAB  # cpab imports this module's resampler

    return CPAB()


TRANSFORMS: dict[str, Callable[[], Transform]] = {
    "time-shift": TimeShift,
    # deepinv's ShiftTime: reflective padding (its default) or circular
    "shift-time": ShiftTime,
    "shift-time-circular": lambda: ShiftTime("circular"),
    "rotate": Rotate,
    "diffeo": Diffeo,
    # CPAB diffeomorphism as deepinv's CPABDiffeomorphism (3x3 tessellation, zero boundary, volume preserving)
    "cpab": _cpab,
    # DDEI (Wang & Davies 2025): EILoss((diffeo | rotate) | time_shift) with deepinv's random-choice "|"
    "ddei": lambda: (Diffeo() | Rotate()) | TimeShift(),
    # the chained reading: a spatial transform (diffeo or rotation) followed by a time shift
    "ddei-chain": lambda: (Diffeo() | Rotate()) * TimeShift(),
    # DDEI's train.py exactly: (CPABDiffeomorphism | Rotate) | ShiftTime (reflective)
    "ddei-cpab": lambda: (_cpab() | Rotate()) | ShiftTime(),
}


register_choices("model.ei_transform", TRANSFORMS)


def make_transform(name: str) -> Transform:
    """The random transform registered under ``name`` in :data:`TRANSFORMS`."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; valid transforms: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name]()
