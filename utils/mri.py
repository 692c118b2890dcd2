"""Multi-coil Cartesian MRI operators (plain tf functions, plus numpy twins for data preparation).

Conventions (as in the original SSFL-Recon / merlintf code):

* image ``x``: (B, T, X, Y, 1) complex; k-space ``y``: (B, T, X, Y, C) complex;
  mask: (B, T, 1, Y, 1) real 0/1 (or anything broadcastable to the k-space); coil maps: (B, 1, X, Y, C) complex.
* ``fft2c`` is the centred, orthonormal 2D FFT over (X, Y): ``fftshift(fft2(ifftshift(x))) / sqrt(X*Y)``;
  ``ifft2c`` is its inverse (and adjoint). Both work for odd sizes.
* forward ``A x = mask * fft2c(coil_maps * x)``; adjoint ``A^H y = sum_c conj(s_c) * ifft2c(mask * y)``.
  The adjoint applies the mask again, so ``A^H`` is the exact adjoint of ``A`` for any mask values.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

_SPATIAL_AXES_NP = (2, 3)


# --------------------------------------------------------------------------------------------------- numpy
def fft2c_np(x: np.ndarray, axes: tuple[int, int] = _SPATIAL_AXES_NP) -> np.ndarray:
    """Centred orthonormal 2D FFT of a numpy array over ``axes`` (default the (X, Y) axes of (B,T,X,Y,C))."""
    scale = np.sqrt(float(x.shape[axes[0]] * x.shape[axes[1]]))
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), axes=axes), axes=axes)
    return k / scale


def ifft2c_np(k: np.ndarray, axes: tuple[int, int] = _SPATIAL_AXES_NP) -> np.ndarray:
    """Inverse of :func:`fft2c_np`."""
    scale = np.sqrt(float(k.shape[axes[0]] * k.shape[axes[1]]))
    x = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), axes=axes), axes=axes)
    return x * scale


def forward_np(image: np.ndarray, mask: np.ndarray, coil_maps: np.ndarray) -> np.ndarray:
    """numpy ``A x``: image (…,T,X,Y,1), coil maps (…,1,X,Y,C), mask broadcastable to the k-space."""
    return mask * fft2c_np(coil_maps * image, axes=(-3, -2))


def adjoint_np(kspace: np.ndarray, mask: np.ndarray, coil_maps: np.ndarray) -> np.ndarray:
    """numpy ``A^H y``: coil-combined image (…,T,X,Y,1)."""
    return np.sum(np.conj(coil_maps) * ifft2c_np(mask * kspace, axes=(-3, -2)), axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------- validation
def _describe(t) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype.name if hasattr(t.dtype, 'name') else t.dtype}"


def check_operator_inputs(image=None, kspace=None, mask=None, coil_maps=None) -> None:
    """Raises ``ValueError`` naming the argument when shapes/dtypes are wrong (static shapes only).

    Expected: image (B,T,X,Y,1) complex, kspace (B,T,X,Y,C) complex, mask real and broadcastable to the k-space,
    coil_maps (B,1,X,Y,C) complex, with the same X, Y (and C between k-space and coil maps).
    """
    def rank_check(name, t, rank, layout):
        if t is None:
            return
        if t.shape.rank is not None and t.shape.rank != rank:
            raise ValueError(f"{name}: expected rank {rank} {layout}, received {_describe(t)}")

    rank_check("image", image, 5, "(B,T,X,Y,1)")
    rank_check("kspace", kspace, 5, "(B,T,X,Y,C)")
    rank_check("mask", mask, 5, "(B,T,1,Y,1) or broadcastable to the k-space")
    rank_check("coil_maps", coil_maps, 5, "(B,1,X,Y,C)")
    for name, t in (("image", image), ("kspace", kspace), ("coil_maps", coil_maps)):
        if t is not None and not t.dtype.is_complex:
            raise ValueError(f"{name}: expected a complex tensor, received {_describe(t)}")
    if mask is not None and mask.dtype.is_complex:
        raise ValueError(f"mask: expected a real 0/1 tensor, received {_describe(mask)}")
    if image is not None and image.shape[-1] is not None and image.shape[-1] != 1:
        raise ValueError(f"image: expected 1 channel (B,T,X,Y,1), received {_describe(image)}")
    if coil_maps is not None and coil_maps.shape[1] is not None and coil_maps.shape[1] != 1:
        raise ValueError(f"coil_maps: expected a singleton time axis (B,1,X,Y,C), received {_describe(coil_maps)}")
    if kspace is not None and coil_maps is not None:
        kc, sc = kspace.shape[-1], coil_maps.shape[-1]
        if kc is not None and sc is not None and kc != sc:
            raise ValueError(
                f"kspace/coil_maps: coil count mismatch, kspace has {kc} coils ({_describe(kspace)}) but "
                f"coil_maps has {sc} ({_describe(coil_maps)})"
            )
    ref = kspace if kspace is not None else image
    if ref is not None and coil_maps is not None:
        for axis, label in ((2, "X"), (3, "Y")):
            a, b = ref.shape[axis], coil_maps.shape[axis]
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"coil_maps: {label} size {b} differs from the data's {a} "
                    f"(data {_describe(ref)}, coil_maps {_describe(coil_maps)})"
                )
    if image is not None and kspace is not None:
        for axis, label in ((0, "B"), (1, "T"), (2, "X"), (3, "Y")):
            a, b = image.shape[axis], kspace.shape[axis]
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"image: {label} size {a} differs from the k-space's {b} "
                    f"(image {_describe(image)}, kspace {_describe(kspace)})"
                )
    if mask is not None and (kspace is not None or ref is not None):
        data = kspace if kspace is not None else ref
        coils = kspace.shape[4] if kspace is not None else (coil_maps.shape[4] if coil_maps is not None else None)
        for axis in range(5):
            m = mask.shape[axis]
            d = coils if axis == 4 else data.shape[axis]
            if m is None or d is None or m == 1:
                continue
            if m != d:
                raise ValueError(
                    f"mask: not broadcastable to the k-space: axis {axis} has size {m}, k-space has {d} "
                    f"(mask {_describe(mask)}, data {_describe(data)}; expected (B,T,1,Y,1))"
                )


# -------------------------------------------------------------------------------------------------- tf
def _fft_axes_last(x: tf.Tensor) -> tf.Tensor:
    # (B,T,X,Y,C) -> (B,T,C,X,Y): tf.signal transforms the innermost two axes.
    return tf.transpose(x, perm=[0, 1, 4, 2, 3])


def _fft_axes_back(x: tf.Tensor) -> tf.Tensor:
    return tf.transpose(x, perm=[0, 1, 3, 4, 2])


def _centred(transform, x: tf.Tensor, inverse: bool) -> tf.Tensor:
    x = _fft_axes_last(x)
    shape = tf.shape(x)
    n = tf.cast(shape[-2] * shape[-1], x.dtype.real_dtype)
    x = tf.signal.ifftshift(x, axes=[-2, -1])
    x = transform(x)
    x = tf.signal.fftshift(x, axes=[-2, -1])
    scale = tf.sqrt(n) if inverse else 1.0 / tf.sqrt(n)
    x = x * tf.cast(tf.complex(scale, tf.zeros_like(scale)), x.dtype)
    return _fft_axes_back(x)


def fft2c(x: tf.Tensor) -> tf.Tensor:
    """Centred orthonormal 2D FFT over the (X, Y) axes of a (B,T,X,Y,C) complex tensor."""
    return _centred(tf.signal.fft2d, x, inverse=False)


def ifft2c(k: tf.Tensor) -> tf.Tensor:
    """Inverse (= adjoint) of :func:`fft2c`."""
    return _centred(tf.signal.ifft2d, k, inverse=True)


def apply_mask(kspace: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``mask * kspace`` for a real mask. Multiplying the real and imaginary parts separately gives the same
    values as the complex product with a zero imaginary part, about four times faster on CPU."""
    mask = tf.convert_to_tensor(mask)
    if mask.dtype.is_complex:
        return kspace * tf.cast(mask, kspace.dtype)
    mask = tf.cast(mask, kspace.dtype.real_dtype)
    return tf.complex(tf.math.real(kspace) * mask, tf.math.imag(kspace) * mask)


def forward(image: tf.Tensor, mask: tf.Tensor, coil_maps: tf.Tensor) -> tf.Tensor:
    """Multi-coil forward operator ``A x = mask * fft2c(coil_maps * x)``: (B,T,X,Y,1) -> (B,T,X,Y,C)."""
    return apply_mask(fft2c(image * coil_maps), mask)


def adjoint(kspace: tf.Tensor, mask: tf.Tensor, coil_maps: tf.Tensor) -> tf.Tensor:
    """Multi-coil adjoint ``A^H y = sum_c conj(s_c) * ifft2c(mask * y)``: (B,T,X,Y,C) -> (B,T,X,Y,1)."""
    coil_images = ifft2c(apply_mask(kspace, mask))
    return tf.reduce_sum(coil_images * tf.math.conj(coil_maps), axis=-1, keepdims=True)


def normal(image: tf.Tensor, mask: tf.Tensor, coil_maps: tf.Tensor) -> tf.Tensor:
    """``A^H A x``."""
    return adjoint(forward(image, mask, coil_maps), mask, coil_maps)


def abs2(z: tf.Tensor) -> tf.Tensor:
    """``|z|^2`` of a complex tensor as ``Re(conj(z) z)`` (the original's form, so losses stay bit-equal)."""
    return tf.math.real(tf.math.conj(z) * z)


def complex_scale(x: tf.Tensor, scale) -> tf.Tensor:
    """Multiplies a complex tensor by a real scalar/tensor."""
    scale = tf.cast(scale, x.dtype.real_dtype)
    return x * tf.complex(scale, tf.zeros_like(scale))


# ------------------------------------------------------------------------------ numerics: fast (coil-first)
def _checkerboard(nx: tf.Tensor, ny: tf.Tensor, dtype) -> tf.Tensor:
    """(X, Y) of (-1)^(x + y)."""
    parity = (tf.range(nx)[:, None] + tf.range(ny)[None, :]) % 2
    return tf.cast(1 - 2 * parity, dtype)


def _gradient_step_even(x, kspace, mask, coil_maps, weight):
    shape = tf.shape(x)
    b, t, nx, ny = shape[0], shape[1], shape[2], shape[3]
    real = x.dtype.real_dtype
    n = tf.cast(nx * ny, real)
    # For even X and Y, fftshift(F(ifftshift(v))) = s * F(c * v) with the checkerboard c = (-1)^(x+y) and
    # s = (-1)^((X+Y)/2) c, so the shifts become sign patterns folded into the coil maps and the masks.
    board = _checkerboard(nx, ny, real)
    sign = board * tf.cast(1 - 2 * (((nx + ny) // 2) % 2), real)
    maps = tf.transpose(coil_maps, [0, 1, 4, 2, 3]) * tf.complex(board, tf.zeros_like(board))  # (B,1,C,X,Y)
    mask = tf.transpose(tf.cast(mask, real), [0, 1, 4, 2, 3])  # (B,T,1,1|X,Y)
    to_kspace = mask * sign * tf.math.rsqrt(n)  # mask * s / sqrt(N)
    to_image = mask * sign * tf.sqrt(n)  # mask * s * sqrt(N): s, mask and the scale of ifft2c
    image = tf.reshape(x, [b, t, 1, nx, ny])
    residual = (tf.signal.fft2d(maps * image) * tf.complex(to_kspace, tf.zeros_like(to_kspace))
                - tf.transpose(kspace, [0, 1, 4, 2, 3]))
    coil_images = tf.signal.ifft2d(residual * tf.complex(to_image, tf.zeros_like(to_image)))
    update = tf.reduce_sum(coil_images * tf.math.conj(maps), axis=2)  # (B,T,X,Y)
    return x - complex_scale(tf.reshape(update, shape), weight)


def gradient_step(x: tf.Tensor, kspace: tf.Tensor, mask: tf.Tensor, coil_maps: tf.Tensor, weight,
                  numerics: str = "faithful") -> tf.Tensor:
    """``x - weight * A^H (A x - y)``: one gradient step on the data term (:class:`utils.data_consistency.DCGD`).

    ``faithful``: the composition of :func:`forward` and :func:`adjoint` (the original's operations). ``fast``:
    coil-first, equal up to float32 rounding: the coils go in front of (X, Y) once (no transposes around every
    transform), and for even X and Y the centring shifts are sign patterns folded into the coil maps and the mask
    (no rolls, no separate scaling); odd sizes, complex masks and masks of another rank than 5 take the plain
    composition.
    """
    def plain():
        return x - complex_scale(adjoint(forward(x, mask, coil_maps) - kspace, mask, coil_maps), weight)

    if numerics == "faithful":
        return plain()
    mask = tf.convert_to_tensor(mask)
    if mask.dtype.is_complex or mask.shape.rank != 5:
        return plain()
    nx, ny = x.shape[2], x.shape[3]
    if nx is not None and ny is not None:
        if nx % 2 or ny % 2:
            return plain()
        return _gradient_step_even(x, kspace, mask, coil_maps, weight)
    shape = tf.shape(x)
    even = tf.logical_and(shape[2] % 2 == 0, shape[3] % 2 == 0)
    return tf.cond(even, lambda: _gradient_step_even(x, kspace, mask, coil_maps, weight), plain)
