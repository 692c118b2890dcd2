"""``numerics: fast``: the UNet's complex layers on channel-stacked real tensors.

A complex tensor of C channels is carried as one real tensor of 2C channels, ``[re_0..re_{C-1}, im_0..im_{C-1}]``
(the "stacked" layout), from the UNet's input to its output. Every layer keeps its weights (same variables, shapes
and names as ``numerics: faithful``), only the arithmetic is reordered:

* convolution: one real convolution over 2C channels with the block kernel ``[[Wr, Wi], [-Wi, Wr]]`` (rows: input
  re/im, columns: output re/im) instead of four C-channel ones and two sums. Same FLOPs, one larger (more
  efficient) convolution, no separate combination passes. Concatenated inputs (decoder skips, the bottleneck
  feature) stay as they are: the block kernel's rows follow the groups' layout.
* instance norm: the per-channel statistics of all 2C channels in one pass, as a Gram matrix ``X^T X`` (a
  matrix product, no full-size temporaries), and the 2x2 whitening applied as one (2C x 2C) matrix product.
  The variances come from ``E[x x^T] - mean mean^T`` (one pass instead of two; float32 cancellation stays near
  1e-7 relative for the UNets' activations, which are centred by the previous norm up to a bias).
* ModReLU: the magnitudes of all channels by one (2C x C) product, a hand-written backward that keeps only the
  input (as the faithful layer).
* magnitude max-pooling: TensorFlow's 2D max-pooling with arg-max over (x, y) on the squared magnitudes, a
  comparison over t, one gather of the selected elements (the backward pass is a scatter); the first maximum of
  each window wins, as in the faithful layer.
* instance norm followed by ModReLU (every conv block of the UNet): one fused operation with a written-out
  backward (:func:`norm_modrelu`).

Results match ``faithful`` up to float32 rounding (tests/test_numerics_fast.py states the tolerances); they are not
bit-identical, and a near-tie in a max-pooling window can select the other element.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from utils.complex_ops import MODRELU_EPS, after_gradients, to_conv_dtype

NUMERICS = ("faithful", "fast")


def check_numerics(numerics: str, what: str = "numerics") -> None:
    """ValueError naming ``what`` unless ``numerics`` is one of :data:`NUMERICS`."""
    if numerics not in NUMERICS:
        raise ValueError(f"{what}: expected one of {list(NUMERICS)}, received {numerics!r}")


def stack(x: tf.Tensor) -> tf.Tensor:
    """Complex (…, C) -> real (…, 2C) ``[re, im]``."""
    return tf.concat([tf.math.real(x), tf.math.imag(x)], axis=-1)


def unstack(x: tf.Tensor) -> tf.Tensor:
    """Real (…, 2C) ``[re, im]`` -> complex (…, C)."""
    re, im = tf.split(x, 2, axis=-1)
    return tf.complex(re, im)


def concat(parts: Sequence[tf.Tensor]) -> tf.Tensor:
    """Channel concatenation of stacked tensors; the result has the groups' layout ``[re_a, im_a, re_b, im_b]``,
    which :func:`conv3d` and :func:`conv3d_transpose` take through their ``groups`` argument."""
    return tf.concat(list(parts), axis=-1)


def block_kernel(kernel: tf.Tensor, groups: Sequence[int] | None = None) -> tf.Tensor:
    """Real kernel (…, 2cin, 2cout) of a complex kernel (…, cin, cout, 2) for stacked inputs.

    ``groups``: channel counts of the concatenated complex inputs (default: one group of cin); the input layout is
    ``[re_g, im_g]`` per group, the output ``[re, im]``.
    """
    w_re, w_im = kernel[..., 0], kernel[..., 1]
    groups = [int(kernel.shape[-3])] if groups is None else list(groups)
    rows, start = [], 0
    for size in groups:
        g_re, g_im = w_re[..., start:start + size, :], w_im[..., start:start + size, :]
        # x_re feeds out_re through Wr and out_im through Wi; x_im feeds out_re through -Wi and out_im through Wr.
        rows += [tf.concat([g_re, g_im], axis=-1), tf.concat([-g_im, g_re], axis=-1)]
        start += size
    return tf.concat(rows, axis=-2)


def _stacked_bias(bias: tf.Tensor) -> tf.Tensor:
    return tf.concat([bias[:, 0], bias[:, 1]], axis=0)


def conv3d(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None, groups: Sequence[int] | None = None,
           conv_dtype: str | None = None) -> tf.Tensor:
    """'same' complex convolution of a stacked x (B,T,X,Y,2cin) with kernel (kt,kx,ky,cin,cout,2), optional
    complex bias (cout, 2); returns stacked (B,T,X,Y,2cout)."""
    w = block_kernel(tf.cast(kernel, x.dtype), groups)
    y = tf.nn.conv3d(to_conv_dtype(x, conv_dtype), to_conv_dtype(w, conv_dtype), strides=[1, 1, 1, 1, 1], padding="SAME")
    if conv_dtype is not None:
        y = tf.cast(y, x.dtype)
    if bias is not None:
        y = tf.nn.bias_add(y, _stacked_bias(tf.cast(bias, x.dtype)))
    return y


def conv3d_transpose(x: tf.Tensor, kernel: tf.Tensor, strides: Sequence[int], bias: tf.Tensor | None = None,
                     conv_dtype: str | None = None) -> tf.Tensor:
    """Adjoint complex convolution (``conj(W)``) of a stacked x (B,T,X,Y,2cin) with kernel (kt,kx,ky,cout,cin,2)
    and stride; returns stacked (B,T*st,X*sx,Y*sy,2cout)."""
    kernel = tf.cast(kernel, x.dtype)
    w_re, w_im = kernel[..., 0], kernel[..., 1]
    # conj(W): out_re = x_re Wr + x_im Wi, out_im = x_im Wr - x_re Wi (filter layout (…, out, in)).
    w = tf.concat([tf.concat([w_re, w_im], axis=-1), tf.concat([-w_im, w_re], axis=-1)], axis=-2)
    shape = tf.shape(x)
    cout = int(kernel.shape[-3])
    out_shape = tf.stack([shape[0], shape[1] * strides[0], shape[2] * strides[1], shape[3] * strides[2], 2 * cout])
    y = tf.nn.conv3d_transpose(to_conv_dtype(x, conv_dtype), to_conv_dtype(w, conv_dtype), out_shape, strides=[1, *strides, 1],
                               padding="SAME")
    if conv_dtype is not None:
        y = tf.cast(y, x.dtype)
    if bias is not None:
        y = tf.nn.bias_add(y, _stacked_bias(tf.cast(bias, x.dtype)))
    return y


def _pair_sum(channels: int, dtype) -> tf.Tensor:
    """(2C, C) matrix summing the re and im channel of each complex channel: ``(x * x) @ S = |z|^2``."""
    eye = tf.eye(channels, dtype=dtype)
    return tf.concat([eye, eye], axis=0)


@tf.custom_gradient
def _modrelu(x: tf.Tensor, bias: tf.Tensor):
    channels = int(bias.shape[0])
    flat = tf.reshape(x, [-1, 2 * channels])
    pair_sum = _pair_sum(channels, x.dtype)
    # |z|^2 per complex channel as a (2C x C) product: one read, no re/im slices or middle-axis reductions.
    magnitude = tf.sqrt(tf.matmul(tf.square(flat), pair_sum) + MODRELU_EPS)
    gain = tf.nn.relu(magnitude + bias) / magnitude
    y = tf.reshape(flat * tf.tile(gain, [1, 2]), tf.shape(x))

    def grad(g):
        # As utils/complex_ops.modrelu_parts: only the input is kept, the magnitude is recomputed; with
        # h = relu(m + b) / m and r = Re(conj(G) z): dL/dz = h G - b 1[m + b > 0] r z / m^3.
        (x_flat,) = after_gradients((g,), flat)
        g_flat = tf.reshape(g, [-1, 2 * channels])
        inv_m = tf.math.rsqrt(tf.matmul(tf.square(x_flat), pair_sum) + MODRELU_EPS)
        shifted = 1.0 + bias * inv_m
        active = tf.cast(shifted > 0, x.dtype)
        r = tf.matmul(g_flat * x_flat, pair_sum)
        k = -bias * active * r * (inv_m * inv_m * inv_m)
        dx = tf.tile(tf.nn.relu(shifted), [1, 2]) * g_flat + tf.tile(k, [1, 2]) * x_flat
        return tf.reshape(dx, tf.shape(x)), tf.reduce_sum(active * r * inv_m, axis=0)

    return y, grad


def modrelu(x: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``relu(|z| + b) * z / |z|`` (``|z| = sqrt(|z|^2 + 1e-9)``) on a stacked x (…, 2C); bias (C,)."""
    return _modrelu(x, tf.cast(bias, x.dtype))


def _whitening(v_rr, v_ii, v_ri):
    sqrt_det = tf.sqrt(v_rr * v_ii - v_ri * v_ri)
    denom = sqrt_det * tf.sqrt(v_rr + 2.0 * sqrt_det + v_ii)
    return (v_ii + sqrt_det) / denom, (v_rr + sqrt_det) / denom, -v_ri / denom


def _pair_blocks(d_rr: tf.Tensor, d_ii: tf.Tensor, d_ri: tf.Tensor) -> tf.Tensor:
    """(B, 2C, 2C) matrix ``[[diag d_rr, diag d_ri], [diag d_ri, diag d_ii]]`` of (B, C) diagonals: a 2x2 symmetric
    map per complex channel, acting on stacked rows (``row @ matrix``)."""
    rr, ii, ri = tf.linalg.diag(d_rr), tf.linalg.diag(d_ii), tf.linalg.diag(d_ri)
    return tf.concat([tf.concat([rr, ri], axis=2), tf.concat([ri, ii], axis=2)], axis=1)


def _batch(x: tf.Tensor):
    """The batch size of x: the static one when known (so shapes stay static), else the dynamic one."""
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def _matmul_rows(a: tf.Tensor, b: tf.Tensor, transpose_a: bool = False) -> tf.Tensor:
    """``tf.matmul`` of per-sample (B, N, K) rows; with a batch of one known when tracing, the plain 2D product
    (oneDNN's 2D kernel is faster than the batched one for these thin matrices)."""
    if a.shape[0] == 1 and b.shape[0] == 1:
        return tf.matmul(a[0], b[0], transpose_a=transpose_a)[None]
    return tf.matmul(a, b, transpose_a=transpose_a)


def _norm_statistics(flat: tf.Tensor, epsilon: float):
    """Mean (B,1,2C), the variances (v_rr, v_ii, v_ri) (each (B,C), epsilon added to the diagonal) and the
    whitening matrix (B,2C,2C) of a stacked (B,N,2C) tensor: one reduction and one Gram-matrix product."""
    channels = int(flat.shape[-1]) // 2
    n = tf.cast(tf.shape(flat)[1], flat.dtype)
    mean = tf.reduce_mean(flat, axis=1, keepdims=True)
    gram = _matmul_rows(flat, flat, transpose_a=True) / n
    m = mean[:, 0]
    diag = tf.linalg.diag_part(gram) - tf.square(m)  # biased variances E[x^2] - E[x]^2
    cross = tf.linalg.diag_part(gram[:, :channels, channels:]) - m[:, :channels] * m[:, channels:]
    variances = (diag[:, :channels] + epsilon, diag[:, channels:] + epsilon, cross)
    return mean, variances, _pair_blocks(*_whitening(*variances))


def instance_norm(x: tf.Tensor, epsilon: float = 1e-4) -> tf.Tensor:
    """Complex instance norm (centre over (T,X,Y), whiten the 2x2 covariance) of a stacked x (B,T,X,Y,2C).

    Statistics by one Gram-matrix product, the whitening by another: both are (N x 2C)-by-(2C x 2C) products,
    memory-bound single passes; their gradients (automatic differentiation) are products of the same kind.
    The UNet calls :func:`norm_modrelu` instead (a norm is always followed by a ModReLU there).
    """
    shape = tf.shape(x)
    flat = tf.reshape(x, [_batch(x), -1, shape[-1]])  # (B, N, 2C)
    mean, _, matrix = _norm_statistics(flat, epsilon)
    return tf.reshape(_matmul_rows(flat - mean, matrix), shape)


@tf.autograph.experimental.do_not_convert
def norm_modrelu(x: tf.Tensor, bias: tf.Tensor, epsilon: float = 1e-4) -> tf.Tensor:
    """:func:`modrelu` of :func:`instance_norm` of a stacked x (B,T,X,Y,2C) as one operation; bias (C,).

    Forward: z = (x - mean) W (whitening), ``|z|^-1`` from one (2C x C) product, the ModReLU gain
    ``relu(1 + b / |z|)`` for both parts from one (C x 2C) product with the bias in the matrix, y = z * gain.
    Backward (written out): only z and ``1/|z|`` are kept; with ``t = 1[1 + b/|z| > 0] Re(conj(g) z) / |z|``
    the ModReLU part is ``dz = gain g - (b t / |z|^2) z`` and ``dL/db = sum t``; the norm part is
    ``dx = (dz - mean(dz)) W + c P`` with c = z W^-1 (no copy of x is kept) and P the 2x2 maps of the
    statistics' gradients, as the faithful layer's backward.
    """
    channels = int(bias.shape[0])
    shape = tf.shape(x)
    flat = tf.reshape(x, [_batch(x), -1, 2 * channels])
    return tf.reshape(_norm_modrelu(flat, tf.cast(bias, x.dtype), epsilon), shape)


def _norm_modrelu(flat: tf.Tensor, bias: tf.Tensor, epsilon: float) -> tf.Tensor:
    channels = int(bias.shape[0])
    dtype = flat.dtype
    pair_sum = _pair_sum(channels, dtype)  # (2C, C)
    to_pair = tf.transpose(pair_sum)  # (C, 2C): one value per complex channel to its re and im
    ones = tf.ones([2 * channels], dtype)

    def gain_pre_relu(inv_m, bias):  # 1 + b/|z| for both parts: (N', C) @ (C, 2C) + 1 (a fused matmul + bias)
        return tf.nn.bias_add(tf.matmul(inv_m, to_pair * tf.tile(bias, [2])), ones)

    @tf.custom_gradient
    def op(flat, bias):
        mean, variances, matrix = _norm_statistics(flat, epsilon)
        z = tf.reshape(_matmul_rows(flat - mean, matrix), [-1, 2 * channels])  # (B*N, 2C)
        inv_m = tf.math.rsqrt(tf.nn.bias_add(tf.matmul(tf.square(z), pair_sum), tf.fill([channels], MODRELU_EPS)))
        y = tf.reshape(z * tf.nn.relu(gain_pre_relu(inv_m, bias)), tf.shape(flat))

        def grad(g):
            z_kept, inv_kept = after_gradients((g,), z, inv_m)
            g = tf.reshape(g, [-1, 2 * channels])
            # ModReLU: t = 1[1 + b/|z| > 0] Re(conj(g) z) / |z|
            scaled = inv_kept * bias
            r = tf.matmul(g * z_kept, pair_sum)
            t = r * inv_kept * tf.cast(scaled > -1.0, dtype)
            d_bias = tf.reduce_sum(t, axis=0)
            dz = g * tf.nn.relu(gain_pre_relu(inv_kept, bias)) - z_kept * tf.matmul(t * scaled * inv_kept, to_pair)
            # instance norm: the statistics' gradients through the (tiny) whitening function
            batch = _batch(flat)
            dz = tf.reshape(dz, [batch, -1, 2 * channels])
            z_b = tf.reshape(z_kept, [batch, -1, 2 * channels])
            with tf.GradientTape() as tape:  # the whitening once, for its values and its gradient
                tape.watch(variances)
                w = _whitening(*variances)
            v_rr, v_ii, v_ri = variances
            w_rr, w_ii, w_ri = w
            # W^-1 = Sigma^(1/2) = Sigma W per channel: [[v_rr w_rr + v_ri w_ri, .], [., v_ri w_ri + v_ii w_ii]]
            inverse = _pair_blocks(v_rr * w_rr + v_ri * w_ri, v_ri * w_ri + v_ii * w_ii, v_rr * w_ri + v_ri * w_ii)
            h = tf.matmul(_matmul_rows(dz, z_b, transpose_a=True), inverse)  # sum over N of dz c^T, (B,2C,2C)
            d_w = (tf.linalg.diag_part(h[:, :channels, :channels]), tf.linalg.diag_part(h[:, channels:, channels:]),
                   tf.linalg.diag_part(h[:, :channels, channels:]) + tf.linalg.diag_part(h[:, channels:, :channels]))
            a_rr, a_ii, a_ri = tape.gradient(w, variances, output_gradients=list(d_w))
            n = tf.cast(tf.shape(flat)[1], dtype)
            stats = tf.matmul(inverse, _pair_blocks(2.0 * a_rr / n, 2.0 * a_ii / n, a_ri / n))  # c P = z (W^-1 P)
            dx = _matmul_rows(dz - tf.reduce_mean(dz, axis=1, keepdims=True), matrix) + _matmul_rows(z_b, stats)
            return dx, d_bias

        return y, grad

    return op(flat, bias)


def max_pool(x: tf.Tensor, pool_size: Sequence[int], gradient: str = "complex") -> tf.Tensor:
    """Magnitude max-pooling of a stacked x (B,T,X,Y,2C) over non-overlapping windows ('same' padding at the
    end); the first maximum in (t, x, y) window order wins, an all-zero window gives 0; ``gradient`` as
    :class:`~utils.complex_layers.MagnitudeMaxPool3D`.

    The (x, y) part of each window by TensorFlow's 2D max-pooling with arg-max on the squared magnitudes (frames
    as batch; its kernel keeps the first maximum in row-major order), then the t part by comparing the
    frames' maxima (an earlier frame wins a tie); the selected elements are gathered from x, so the backward
    pass scatters the upstream gradient to them and nothing else.
    """
    pt, px, py = (int(p) for p in pool_size)
    shape = tf.shape(x)
    channels = int(x.shape[-1]) // 2
    pads = [-(-shape[i + 1] // p) * p - shape[i + 1] for i, p in enumerate((pt, px, py))]
    x = tf.pad(x, [[0, 0], [0, pads[0]], [0, pads[1]], [0, pads[2]], [0, 0]])
    b, t, nx, ny = shape[0], shape[1] + pads[0], shape[2] + pads[1], shape[3] + pads[2]
    amplitude = tf.matmul(tf.reshape(tf.square(x), [-1, 2 * channels]), _pair_sum(channels, x.dtype))
    peak, index = tf.nn.max_pool_with_argmax(tf.reshape(amplitude, [b * t, nx, ny, channels]), [1, px, py, 1],
                                             [1, px, py, 1], "VALID", include_batch_in_index=True)
    # index: flat position in (B*T, X, Y, C); frames of one window are pt consecutive entries along t.
    windows = tf.stack([b, t // pt, pt, nx // px, ny // py, channels])
    peak, index = tf.reshape(peak, windows), tf.reshape(index, windows)
    best, chosen = peak[:, :, 0], index[:, :, 0]
    for frame in range(1, pt):
        later = peak[:, :, frame] > best  # strictly larger: the earlier frame keeps a tie
        best = tf.where(later, peak[:, :, frame], best)
        chosen = tf.where(later, index[:, :, frame], chosen)
    position = (chosen // channels) * (2 * channels) + chosen % channels  # the real part in the stacked x
    flat = tf.reshape(x, [-1])
    real, imag = tf.gather(flat, position), tf.gather(flat, position + channels)
    if gradient == "optox":  # the imaginary part of the upstream gradient is dropped
        imag = tf.stop_gradient(imag)
    return tf.concat([real, imag], axis=-1)
