"""Functional complex ops on (real, imaginary) parts: convolutions, ModReLU, instance norm, padding.

Plain ``tf`` functions below the Keras layers of :mod:`utils.complex_layers` (which re-exports them). The forward
passes keep the original's operation order bit for bit (see that module's docstring for the semantics); the
hand-written backward passes give the same gradients up to float32 rounding at a fraction of the memory traffic.
"""
from __future__ import annotations

import functools
from typing import Sequence

import tensorflow as tf

MODRELU_EPS = 1e-9


CONV_DTYPES = (None, "float16", "bfloat16")


@functools.lru_cache(maxsize=None)
def conv_dtype_available(conv_dtype: str) -> bool:
    """Whether this machine's TensorFlow kernels run a 3D convolution in ``conv_dtype`` (``float16``/``bfloat16``).

    GPUs do; on a CPU it depends on the kernels: oneDNN limited to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) has no
    float16/bfloat16 convolution primitive and fails at run time. Runs one tiny convolution eagerly (so call it
    after the thread pools are chosen)."""
    try:
        with tf.init_scope():
            one = tf.ones([1, 1, 1, 1, 1], conv_dtype)
            tf.nn.conv3d(one, one, strides=[1, 1, 1, 1, 1], padding="SAME").numpy()
    except (tf.errors.OpError, TypeError, ValueError):
        return False
    return True


def require_conv_dtype(conv_dtype: str | None, what: str = "train.mixed_precision") -> None:
    """ValueError naming ``what`` when this machine cannot run ``conv_dtype`` convolutions."""
    if conv_dtype and conv_dtype != "none" and not conv_dtype_available(conv_dtype):
        from utils.machine import cpu_description

        raise ValueError(f"{what}={conv_dtype}: this machine's TensorFlow kernels have no {conv_dtype} 3D convolution "
                         f"(CPU: {cpu_description()}); use a GPU or mixed_precision none")


def _check_conv_dtype(conv_dtype: str | None) -> None:
    if conv_dtype not in CONV_DTYPES:
        raise ValueError(f"conv_dtype: expected one of {list(CONV_DTYPES)}, received {conv_dtype!r}")


def after_gradients(gradients: Sequence[tf.Tensor], *tensors: tf.Tensor) -> list[tf.Tensor]:
    """``tensors`` behind a control dependency on the incoming ``gradients``.

    The graph executor runs an op as soon as its inputs exist, so backward-pass work that needs only forward
    values (x - y, squares, masks, ...) would run during the forward pass and its results would stay in memory
    until the backward pass. Gating them on the incoming gradient keeps them short-lived.
    """
    with tf.control_dependencies(list(gradients)):
        return [tf.identity(t) for t in tensors]


def to_conv_dtype(t: tf.Tensor, conv_dtype: str | None) -> tf.Tensor:
    """``t`` in the convolutions' type (mixed precision), unchanged for float32 (``conv_dtype`` None)."""
    return t if conv_dtype is None else tf.cast(t, conv_dtype)


def _conv_same(a: tf.Tensor, w: tf.Tensor, conv_dtype: str | None = None) -> tf.Tensor:
    """'same' real convolution; with ``conv_dtype`` its inputs are rounded to that type and the result is
    returned in float32, so the complex combination that follows stays in float32 (mixed precision)."""
    out = tf.nn.conv3d(to_conv_dtype(a, conv_dtype), to_conv_dtype(w, conv_dtype), strides=[1, 1, 1, 1, 1], padding="SAME")
    return out if conv_dtype is None else tf.cast(out, a.dtype)


def _conv_parts_forward(x_re, x_im, kernel, conv_dtype):
    w_re, w_im = kernel[..., 0], kernel[..., 1]

    def conv(a, w):
        return _conv_same(a, w, conv_dtype)

    return conv(x_re, w_re) - conv(x_im, w_im), conv(x_im, w_re) + conv(x_re, w_im)


def _make_fast_grad_conv(conv_dtype: str | None):
    def cast(t):
        return to_conv_dtype(t, conv_dtype)

    @tf.custom_gradient
    def conv(x_re: tf.Tensor, x_im: tf.Tensor, kernel: tf.Tensor):
        y = _conv_parts_forward(x_re, x_im, kernel, conv_dtype)

        def grad(g_re, g_im):
            # Both gradients are complex products of two bilinear maps; Gauss's trick computes each with three
            # real (transposed) convolutions instead of four: (a+ib)(c+id) = (k1 - k3) + i(k1 + k2) with
            # k1 = c(a+b), k2 = a(d-c), k3 = b(c+d).
            g_re = tf.zeros_like(y[0]) if g_re is None else g_re
            g_im = tf.zeros_like(y[1]) if g_im is None else g_im
            a_re, a_im, w_re, w_im = after_gradients((g_re, g_im), x_re, x_im, kernel[..., 0], kernel[..., 1])
            in_shape = tf.shape(a_re)
            w_shape = tf.shape(w_re)

            def back_input(a, w):
                out = tf.raw_ops.Conv3DBackpropInputV2(input_sizes=in_shape, filter=cast(w), out_backprop=cast(a),
                                                       strides=[1, 1, 1, 1, 1], padding="SAME")
                return tf.cast(out, a_re.dtype)

            def back_filter(a, b):
                out = tf.raw_ops.Conv3DBackpropFilterV2(input=cast(a), filter_sizes=w_shape, out_backprop=cast(b),
                                                        strides=[1, 1, 1, 1, 1], padding="SAME")
                return tf.cast(out, kernel.dtype)

            # dL/dx = conv^T(g, conj(W)): a = g_re, b = g_im, c = w_re, d = -w_im
            k1 = back_input(g_re + g_im, w_re)
            k2 = back_input(g_re, -w_im - w_re)
            k3 = back_input(g_im, w_re - w_im)
            # dL/dW = corr(conj(x), g): a = x_re, b = -x_im, c = g_re, d = g_im
            f1 = back_filter(a_re - a_im, g_re)
            f2 = back_filter(a_re, g_im - g_re)
            f3 = back_filter(-a_im, g_re + g_im)
            return k1 - k3, k1 + k2, tf.stack([f1 - f3, f1 + f2], axis=-1)

        return y, grad

    return conv


_FAST_GRAD_CONVS = {dtype: _make_fast_grad_conv(dtype) for dtype in CONV_DTYPES}


def split(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(real, imaginary) parts of a complex tensor."""
    return tf.math.real(x), tf.math.imag(x)


def join(re: tf.Tensor, im: tf.Tensor) -> tf.Tensor:
    return tf.complex(re, im)


def complex_conv3d_parts(x_re: tf.Tensor, x_im: tf.Tensor, kernel: tf.Tensor, fast_grad: bool = True,
                         conv_dtype: str | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`complex_conv3d` on (real, imaginary) parts; returns the parts of the result."""
    _check_conv_dtype(conv_dtype)
    if fast_grad:
        return tuple(_FAST_GRAD_CONVS[conv_dtype](x_re, x_im, kernel))
    return _conv_parts_forward(x_re, x_im, kernel, conv_dtype)


# The functions with hand-written gradients are plain graph code: autograph must not convert them (it would
# unwrap tf.custom_gradient and return the (value, gradient function) pair).
@tf.autograph.experimental.do_not_convert
def complex_conv3d(x: tf.Tensor, kernel: tf.Tensor, fast_grad: bool = True,
                   conv_dtype: str | None = None) -> tf.Tensor:
    """Complex 'same' cross-correlation of x (B,T,X,Y,cin) with kernel (kt,kx,ky,cin,cout,2).

    Forward: four real convolutions combined as ``(rr - ii) + i (ir + ri)``. A single convolution on stacked
    [re, im] channels has the same cost but sums in another order; keeping the original's order makes results
    bit-identical to the published code, which matters because magnitude max-pooling turns 1e-7 differences
    at near-ties into visibly different features.

    Backward (``fast_grad``): three real convolutions per gradient instead of four (Gauss's complex product), the
    same gradient up to float32 rounding; ``fast_grad=False`` differentiates the forward ops as they are.
    ``conv_dtype`` ("float16"/"bfloat16") runs the real convolutions in that type (mixed precision); the
    complex sums, and everything outside the convolutions, stay float32.
    """
    return join(*complex_conv3d_parts(tf.math.real(x), tf.math.imag(x), kernel, fast_grad, conv_dtype))


def complex_conv3d_transpose(x: tf.Tensor, kernel: tf.Tensor, output_shape: tf.Tensor,
                             strides: Sequence[int], conv_dtype: str | None = None) -> tf.Tensor:
    """Adjoint of :func:`complex_conv3d` with stride: transposed convolution with ``conj(W)``.

    x (B,T,X,Y,cin), kernel (kt,kx,ky,cout,cin,2) (TF transposed-conv layout), output_shape (B,T',X',Y',cout);
    ``conv_dtype`` as in :func:`complex_conv3d`.
    """
    return join(*complex_conv3d_transpose_parts(tf.math.real(x), tf.math.imag(x), kernel, output_shape, strides,
                                                conv_dtype))


def complex_conv3d_transpose_parts(x_re, x_im, kernel, output_shape, strides, conv_dtype=None):
    """:func:`complex_conv3d_transpose` on (real, imaginary) parts."""
    _check_conv_dtype(conv_dtype)
    w_re, w_im = kernel[..., 0], kernel[..., 1]

    def conv_t(a, w):
        out = tf.nn.conv3d_transpose(to_conv_dtype(a, conv_dtype), to_conv_dtype(w, conv_dtype), output_shape,
                                     strides=[1, *strides, 1], padding="SAME")
        return out if conv_dtype is None else tf.cast(out, a.dtype)

    # (x_re + i x_im) * (w_re - i w_im)
    return conv_t(x_re, w_re) + conv_t(x_im, w_im), conv_t(x_im, w_re) - conv_t(x_re, w_im)


@tf.autograph.experimental.do_not_convert
def modrelu(x: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``relu(|z| + b) * z / |z|`` with ``|z| = sqrt(|z|^2 + 1e-9)``; x (…, C) complex, bias (C,) or scalar."""
    return join(*modrelu_parts(tf.math.real(x), tf.math.imag(x), bias))


@tf.autograph.experimental.do_not_convert
@tf.custom_gradient
def modrelu_parts(re: tf.Tensor, im: tf.Tensor, bias: tf.Tensor):
    """:func:`modrelu` on (real, imaginary) parts.

    The forward keeps the original's values bit for bit: ``re*re + im*im`` equals ``Re(conj(z) z)`` and
    ``(g + 0i)(a + ib) = ga + igb``, so working on the parts changes nothing but the cost. The backward is written
    out: with ``m = |z|``, ``h = relu(m + b) / m``, ``r = Re(conj(G) z)`` it is
    ``dL/dz = h G - b 1[m + b > 0] r z / m^3`` and ``dL/db = sum 1[m + b > 0] r / m``.
    """
    magnitude = tf.sqrt((re * re + im * im) + MODRELU_EPS)
    gain = tf.nn.relu(magnitude + bias)
    y = (gain * (re / magnitude), gain * (im / magnitude))

    def grad(g_re, g_im):
        g_re = tf.zeros_like(re) if g_re is None else g_re
        g_im = tf.zeros_like(im) if g_im is None else g_im
        # Only the input is kept for the backward pass: the magnitude is recomputed once the gradient arrives.
        x_re, x_im = after_gradients((g_re, g_im), re, im)
        inv_m = tf.math.rsqrt(tf.square(x_re) + tf.square(x_im) + MODRELU_EPS)
        shifted = 1.0 + bias * inv_m  # (m + b) / m
        active = tf.cast(shifted > 0, shifted.dtype)
        h = tf.nn.relu(shifted)  # g / m
        r = g_re * x_re + g_im * x_im
        k = -bias * active * r * (inv_m * inv_m * inv_m)
        per_channel = tf.reduce_sum(tf.reshape(active * r * inv_m, [-1, tf.shape(re)[-1]]), axis=0)
        db = tf.reduce_sum(per_channel) if bias.shape.rank == 0 else per_channel
        return h * g_re + k * x_re, h * g_im + k * x_im, db

    return y, grad


_NORM_AXES = [1, 2, 3]


def _whitening(v_rr: tf.Tensor, v_ii: tf.Tensor, v_ri: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Closed-form inverse square root (w_rr, w_ii, w_ri) of the SPD matrix [[v_rr, v_ri], [v_ri, v_ii]]; the
    order of the operations follows the original so results are bit-equal."""
    sqrt_det = tf.sqrt(v_rr * v_ii - v_ri * v_ri)
    denom = sqrt_det * tf.sqrt(v_rr + 2.0 * sqrt_det + v_ii)
    return (v_ii + sqrt_det) / denom, (v_rr + sqrt_det) / denom, -v_ri / denom


@tf.autograph.experimental.do_not_convert
def complex_instance_norm(x: tf.Tensor, epsilon: float = 1e-4) -> tf.Tensor:
    """Complex instance normalisation of x (B,T,X,Y,C): centre over (T,X,Y), whiten the 2x2 covariance."""
    return join(*instance_norm_parts(tf.math.real(x), tf.math.imag(x), epsilon))


@tf.autograph.experimental.do_not_convert
def instance_norm_parts(re: tf.Tensor, im: tf.Tensor, epsilon: float = 1e-4) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`complex_instance_norm` on (real, imaginary) parts.

    The mean is taken of the complex tensor, as in the original: TF reduces complex numbers in another order than
    their parts, and the results differ in the last bits at large sizes. The backward pass is written out
    (:func:`_instance_norm_grad`): automatic differentiation broadcasts every per-channel statistic back to
    full size, which dominated the layer's cost.
    """
    @tf.custom_gradient
    def norm(re, im):
        mean = tf.reduce_mean(tf.complex(re, im), axis=_NORM_AXES, keepdims=True)
        re = re - tf.math.real(mean)
        im = im - tf.math.imag(mean)

        def variance(v):
            return tf.reduce_mean(tf.square(v - tf.reduce_mean(v, axis=_NORM_AXES, keepdims=True)),
                                  axis=_NORM_AXES, keepdims=True)

        v_rr = variance(re) + epsilon
        v_ii = variance(im) + epsilon
        v_ri = tf.reduce_mean(re * im, axis=_NORM_AXES, keepdims=True)
        w_rr, w_ii, w_ri = _whitening(v_rr, v_ii, v_ri)
        y = (re * w_rr + im * w_ri, re * w_ri + im * w_ii)

        def grad(g_re, g_im):
            g_re = tf.zeros_like(re) if g_re is None else g_re
            g_im = tf.zeros_like(im) if g_im is None else g_im
            return _instance_norm_grad(g_re, g_im, re, im, (v_rr, v_ii, v_ri), (w_rr, w_ii, w_ri))

        return y, grad

    return tuple(norm(re, im))


def _instance_norm_grad(g_re, g_im, re, im, variances, weights):
    """Gradient of :func:`instance_norm_parts` w.r.t. its input parts, from the centred parts ``re``, ``im``.

    y = W c with c = x - mean(x) and W = Sigma^(-1/2)(v_rr, v_ii, v_ri). The statistics' gradients come from
    differentiating the tiny per-channel function W(v); their effect on every element is
    d v_rr / d re = 2 re / N, d v_ii / d im = 2 im / N, d v_ri = (im d re + re d im) / N; the centring
    subtracts the mean of the gradient.
    """
    w_rr, w_ii, w_ri = weights
    d_wrr = tf.reduce_sum(g_re * re, axis=_NORM_AXES, keepdims=True)
    d_wii = tf.reduce_sum(g_im * im, axis=_NORM_AXES, keepdims=True)
    d_wri = tf.reduce_sum(g_re * im + g_im * re, axis=_NORM_AXES, keepdims=True)
    with tf.GradientTape() as tape:
        tape.watch(variances)
        w = _whitening(*variances)
    a_rr, a_ii, a_ri = tape.gradient(w, variances, output_gradients=[d_wrr, d_wii, d_wri])
    shape = tf.shape(re)
    n = tf.cast(shape[1] * shape[2] * shape[3], re.dtype)
    p_rr, p_ii, q = 2.0 * a_rr / n, 2.0 * a_ii / n, a_ri / n
    d_re = g_re * w_rr + g_im * w_ri + re * p_rr + im * q
    d_im = g_re * w_ri + g_im * w_ii + im * p_ii + re * q
    return (d_re - tf.reduce_mean(d_re, axis=_NORM_AXES, keepdims=True),
            d_im - tf.reduce_mean(d_im, axis=_NORM_AXES, keepdims=True))


def padding_to_multiple(shape: tf.Tensor, factors: Sequence[int]) -> tf.Tensor:
    """Paddings (3, 2) for the (t, x, y) axes of a (B,T,X,Y,C) shape so each becomes a multiple of ``factors``.

    The leading side gets floor(pad / 2), as in the original UNets (T=25 -> 28 pads 1 before and 2 after).
    """
    sizes = shape[1:4]
    factors_t = tf.constant(list(factors), dtype=sizes.dtype)
    total = (-sizes) % factors_t
    before = total // 2
    return tf.stack([before, total - before], axis=1)


def pad_to_multiple(x: tf.Tensor, factors: Sequence[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Zero-pads the (t, x, y) axes of ``x`` to multiples of ``factors``; returns (padded, paddings)."""
    paddings = padding_to_multiple(tf.shape(x), factors)
    full = tf.concat([tf.zeros([1, 2], paddings.dtype), paddings, tf.zeros([1, 2], paddings.dtype)], axis=0)
    return tf.pad(x, full), paddings


def crop_padding(x: tf.Tensor, paddings: tf.Tensor) -> tf.Tensor:
    """Undoes :func:`pad_to_multiple` on (t, x, y) given its paddings."""
    shape = tf.shape(x)
    begin = tf.concat([[0], paddings[:, 0], [0]], axis=0)
    size = tf.concat([[shape[0]], shape[1:4] - paddings[:, 0] - paddings[:, 1], [shape[4]]], axis=0)
    return tf.slice(x, begin, size)
