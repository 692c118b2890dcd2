"""Complex-valued Keras layers for 2D+t (3D) networks.

Weights are real Keras variables (a trailing axis of 2 holds the real and imaginary parts, the layout of the
original TF checkpoints); complex arithmetic happens in ``tf`` ops. Inputs and outputs are complex tensors of
layout (B, T, X, Y, C).

Semantics follow the original merlintf/optox layers (see the fixtures README):

* ``ComplexConv3D``: complex multiply-accumulate with kernel ``W`` (cross-correlation, as ``tf.nn.conv3d``).
* ``ComplexConv3DTranspose``: the adjoint of a complex convolution, i.e. a transposed convolution with ``conj(W)``.
  With kernel (1,1,1) and stride 2 the values land on even indices; odd positions get only the bias.
* ``ModReLU``: ``relu(|z| + b) * z / |z|`` with ``|z| = sqrt(|z|^2 + 1e-9)`` and a per-channel bias ``b``.
* ``ComplexInstanceNorm``: per sample and channel, subtract the mean over (t, x, y) and whiten the 2x2
  real/imaginary covariance (biased variances + eps on the diagonal); no affine parameters.
* ``MagnitudeMaxPool3D``: in each window keep the complex value of largest ``re^2 + im^2``; the first maximum in
  (t, x, y) row-major window order wins, an all-zero window gives 0; 'same' padding gives ceil(n / stride).
"""
from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from utils import fast_numerics
from utils.complex_ops import (  # noqa: F401  (re-exported: the functional ops are part of this module's API)
    CONV_DTYPES, MODRELU_EPS, _check_conv_dtype, _instance_norm_grad, _whitening, complex_conv3d,
    complex_conv3d_parts, complex_conv3d_transpose, complex_conv3d_transpose_parts, complex_instance_norm,
    conv_dtype_available, crop_padding, instance_norm_parts, join, modrelu, modrelu_parts, pad_to_multiple,
    padding_to_multiple, require_conv_dtype, split,
)

PACKAGE = "ssfl"


# Gradients of MagnitudeMaxPool3D: the true complex derivative, or the original's (optox) real-part-only routing.
POOL_GRADIENTS = ("complex", "optox")


def _triple(value, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"{name}: expected an int or 3 ints (t, x, y), received {value!r}")
    return value


def _check_complex_input(layer: keras.layers.Layer, x: tf.Tensor, rank: int = 5) -> None:
    if not x.dtype.is_complex:
        raise ValueError(
            f"{layer.__class__.__name__} '{layer.name}': expected a complex input of layout (B,T,X,Y,C), "
            f"received dtype {x.dtype.name} with shape {tuple(x.shape)}"
        )
    if x.shape.rank is not None and x.shape.rank != rank:
        raise ValueError(
            f"{layer.__class__.__name__} '{layer.name}': expected rank {rank} (B,T,X,Y,C), "
            f"received shape {tuple(x.shape)}"
        )


class ComplexGlorotUniform(keras.initializers.Initializer):
    """Glorot-uniform init for a (…, cin, cout, 2) complex kernel: real and imaginary parts each get half the
    variance of a real Glorot kernel, so the complex weight has the usual variance 2 / (fan_in + fan_out)."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        receptive = int(np.prod(shape[:-3])) if len(shape) > 3 else 1
        fan_in, fan_out = shape[-3] * receptive, shape[-2] * receptive
        limit = math.sqrt(6.0 / (fan_in + fan_out)) / math.sqrt(2.0)
        return keras.random.uniform(shape, -limit, limit, dtype=dtype or "float32", seed=self.seed)

    def get_config(self):
        return {"seed": self.seed}



@keras.saving.register_keras_serializable(package=PACKAGE)
class ModReLU(keras.layers.Layer):
    """Modulus ReLU for complex tensors: ``relu(|z| + b) * z / |z|``.

    Args:
        bias_init: initial value of the per-channel bias ``b``.
        **kwargs: passed to ``keras.layers.Layer``.

    Input/output: complex (B, T, X, Y, C); weight ``bias`` of shape (C,).
    """

    def __init__(self, bias_init: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.bias_init = bias_init

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias", shape=(int(input_shape[-1]),),
            initializer=keras.initializers.Constant(self.bias_init), trainable=True,
        )

    def call(self, x):
        return join(*self.call_parts(*split(x)))

    def call_parts(self, re, im):
        """The layer on (real, imaginary) parts (used inside the UNet, which avoids complex round trips)."""
        return modrelu_parts(re, im, tf.cast(self.bias, re.dtype))

    def call_stacked(self, x):
        """The layer on a channel-stacked real tensor ``[re, im]`` (``numerics: fast``, utils/fast_numerics.py)."""
        return fast_numerics.modrelu(x, self.bias)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bias_init": self.bias_init}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ComplexConv3D(keras.layers.Layer):
    """3D complex convolution (cross-correlation) with 'same' zero padding and stride 1.

    Args:
        filters: number of output channels.
        kernel_size: (kt, kx, ky) or an int.
        use_bias: add a complex per-channel bias.
        kernel_initializer: initializer of the (kt, kx, ky, cin, cout, 2) real kernel.
        **kwargs: passed to ``keras.layers.Layer``.

    Input: complex (B, T, X, Y, cin). Output: complex (B, T, X, Y, filters).
    Weights: ``kernel`` (kt, kx, ky, cin, filters, 2) and ``bias`` (filters, 2), last axis = (real, imag).
    """

    def __init__(self, filters: int, kernel_size: int | Sequence[int] = 3, use_bias: bool = True,
                 kernel_initializer="complex_glorot", conv_dtype: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"filters: expected a positive integer, received {filters!r}")
        _check_conv_dtype(conv_dtype)
        self.conv_dtype = conv_dtype
        self.filters = int(filters)
        self.kernel_size = _triple(kernel_size, "kernel_size")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer

    def _initializer(self):
        if self.kernel_initializer == "complex_glorot":
            return ComplexGlorotUniform()
        return keras.initializers.get(self.kernel_initializer)

    def build(self, input_shape):
        cin = input_shape[-1]
        if cin is None:
            raise ValueError(f"{self.name}: the channel axis of the input must be known, received {input_shape}")
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, int(cin), self.filters, 2), initializer=self._initializer()
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters, 2), initializer="zeros")

    def call(self, x):
        _check_complex_input(self, x)
        return join(*self.call_parts(*split(x)))

    def call_parts(self, re, im):
        """The layer on (real, imaginary) parts; adding the bias part-wise equals the complex addition."""
        y_re, y_im = complex_conv3d_parts(re, im, tf.cast(self.kernel, re.dtype), conv_dtype=self.conv_dtype)
        if self.use_bias:
            bias = tf.cast(self.bias, re.dtype)
            y_re, y_im = y_re + bias[:, 0], y_im + bias[:, 1]
        return y_re, y_im

    def call_stacked(self, x, groups=None):
        """The layer on a channel-stacked real tensor (``numerics: fast``); ``groups``: channel counts of
        concatenated stacked inputs (see :func:`utils.fast_numerics.conv3d`)."""
        return fast_numerics.conv3d(x, self.kernel, self.bias if self.use_bias else None, groups, self.conv_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
            "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
            "conv_dtype": self.conv_dtype,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ComplexConv3DTranspose(ComplexConv3D):
    """3D complex transposed convolution: the adjoint of :class:`ComplexConv3D` (it applies ``conj(W)``).

    Args:
        filters: number of output channels.
        kernel_size: (kt, kx, ky) or an int.
        strides: up-sampling factors (t, x, y); output size = input size * stride ('same' padding).
        use_bias: add a complex per-channel bias.
        activation: ``"modrelu"`` (own per-channel bias, as the original up-convolutions) or None.
        **kwargs: passed to :class:`ComplexConv3D`.

    Input: complex (B, T, X, Y, cin). Output: complex (B, T*st, X*sx, Y*sy, filters).
    Weights: ``kernel`` (kt, kx, ky, filters, cin, 2) (TF transposed-conv layout), ``bias`` (filters, 2),
    and ``activation.bias`` (filters,) when the activation is ModReLU.
    """

    def __init__(self, filters: int, kernel_size: int | Sequence[int] = 1, strides: int | Sequence[int] = 2,
                 use_bias: bool = True, activation: str | None = None, **kwargs):
        super().__init__(filters, kernel_size, use_bias=use_bias, **kwargs)
        self.strides = _triple(strides, "strides")
        if activation not in (None, "modrelu"):
            raise ValueError(f"activation: expected 'modrelu' or None, received {activation!r}")
        self.activation_name = activation
        self.activation = ModReLU(name="activation") if activation == "modrelu" else None

    def build(self, input_shape):
        cin = input_shape[-1]
        if cin is None:
            raise ValueError(f"{self.name}: the channel axis of the input must be known, received {input_shape}")
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, self.filters, int(cin), 2), initializer=self._initializer()
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters, 2), initializer="zeros")
        if self.activation is not None:
            self.activation.build((*input_shape[:-1], self.filters))

    def call(self, x):
        _check_complex_input(self, x)
        return join(*self.call_parts(*split(x)))

    def call_parts(self, re, im):
        shape = tf.shape(re)
        out_shape = tf.stack([
            shape[0], shape[1] * self.strides[0], shape[2] * self.strides[1], shape[3] * self.strides[2],
            self.filters,
        ])
        y_re, y_im = complex_conv3d_transpose_parts(re, im, tf.cast(self.kernel, re.dtype), out_shape,
                                                    self.strides, self.conv_dtype)
        if self.use_bias:
            bias = tf.cast(self.bias, re.dtype)
            y_re, y_im = y_re + bias[:, 0], y_im + bias[:, 1]
        if self.activation is not None:
            y_re, y_im = self.activation.call_parts(y_re, y_im)
        return y_re, y_im

    def call_stacked(self, x, groups=None):
        if groups is not None and len(groups) > 1:
            raise ValueError(f"{self.name}: a transposed convolution takes one input group, received {groups}")
        y = fast_numerics.conv3d_transpose(x, self.kernel, self.strides, self.bias if self.use_bias else None,
                                           self.conv_dtype)
        return y if self.activation is None else self.activation.call_stacked(y)

    def compute_output_shape(self, input_shape):
        spatial = [None if n is None else n * s for n, s in zip(input_shape[1:4], self.strides)]
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides, "activation": self.activation_name}



@keras.saving.register_keras_serializable(package=PACKAGE)
class ComplexInstanceNorm(keras.layers.Layer):
    """Complex instance normalisation by 2x2 whitening of (real, imag) per sample and channel.

    Args:
        epsilon: added to the biased variances of the real and imaginary parts.
        **kwargs: passed to ``keras.layers.Layer``.

    Input/output: complex (B, T, X, Y, C); statistics over (T, X, Y). No weights.
    """

    def __init__(self, epsilon: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        _check_complex_input(self, x)
        return join(*self.call_parts(*split(x)))

    def call_parts(self, re, im):
        return instance_norm_parts(re, im, self.epsilon)

    def call_stacked(self, x):
        return fast_numerics.instance_norm(x, self.epsilon)

    def call_stacked_with_modrelu(self, x, activation: "ModReLU"):
        """This norm followed by the ModReLU ``activation`` as one fused operation on a stacked tensor
        (``numerics: fast``; :func:`utils.fast_numerics.norm_modrelu`)."""
        return fast_numerics.norm_modrelu(x, activation.bias, self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MagnitudeMaxPool3D(keras.layers.Layer):
    """Complex max-pooling by magnitude ('same' padding: output size ceil(n / stride)).

    Args:
        pool_size: window (t, x, y).
        strides: strides (t, x, y); defaults to ``pool_size``. Only ``strides == pool_size`` is supported
            (non-overlapping windows, as in the original UNets).
        **kwargs: passed to ``keras.layers.Layer``.

        gradient: ``complex`` (the true derivative: the whole complex upstream gradient goes to the selected
            element) or ``optox`` (what the original's GPU op computed and the published models were trained with:
            only the real part of the upstream gradient reaches the selected element, its imaginary part is zero;
            optox ``tensorflow/optotf/maxpooling/__init__.py`` passes ``tf.math.imag`` of a real tensor). The
            forward pass is the same.

    Input: complex (B, T, X, Y, C). Output: complex (B, ceil(T/st), ceil(X/sx), ceil(Y/sy), C).
    The gradient flows to the selected element only (the first maximum of each window).
    """

    def __init__(self, pool_size: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
                 gradient: str = "complex", **kwargs):
        super().__init__(**kwargs)
        if gradient not in POOL_GRADIENTS:
            raise ValueError(f"gradient: expected one of {list(POOL_GRADIENTS)}, received {gradient!r}")
        self.gradient = gradient
        self.pool_size = _triple(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _triple(strides, "strides")
        if self.strides != self.pool_size:
            raise ValueError(
                f"strides: only non-overlapping pooling (strides == pool_size) is supported, received "
                f"pool_size={self.pool_size}, strides={self.strides}"
            )

    def call(self, x):
        _check_complex_input(self, x)
        return join(*self.call_parts(*split(x)))

    def call_parts(self, re, im):
        pt, px, py = self.pool_size
        shape = tf.shape(re)
        b, t, nx, ny, c = shape[0], shape[1], shape[2], shape[3], shape[4]
        out_t, out_x, out_y = -(-t // pt), -(-nx // px), -(-ny // py)
        # 'same' padding as TF/optox: the extra samples go at the end of each axis.
        paddings = [[0, 0], [0, out_t * pt - t], [0, out_x * px - nx], [0, out_y * py - ny], [0, 0]]
        re = tf.pad(re, paddings)
        im = tf.pad(im, paddings)

        def windows(v):
            v = tf.reshape(v, [b, out_t, pt, out_x, px, out_y, py, c])
            v = tf.transpose(v, [0, 1, 3, 5, 7, 2, 4, 6])
            return tf.reshape(v, [b, out_t, out_x, out_y, c, pt * px * py])

        re_w, im_w = windows(re), windows(im)
        amplitude = re_w * re_w + im_w * im_w
        n = pt * px * py
        is_max = tf.equal(amplitude, tf.reduce_max(amplitude, axis=-1, keepdims=True))
        # Earlier window positions get larger scores, so argmax picks the first maximum deterministically.
        order = tf.range(n, 0, -1, dtype=tf.int32)
        first = tf.argmax(tf.where(is_max, order, tf.zeros_like(order)), axis=-1, output_type=tf.int32)
        select = tf.one_hot(first, n, dtype=re_w.dtype)
        out_im = tf.reduce_sum(im_w * select, axis=-1)
        if self.gradient == "optox":
            out_im = tf.stop_gradient(out_im)  # the imaginary part of the upstream gradient is dropped
        return tf.reduce_sum(re_w * select, axis=-1), out_im

    def call_stacked(self, x):
        return fast_numerics.max_pool(x, self.pool_size, self.gradient)

    def compute_output_shape(self, input_shape):
        out = [None if n is None else -(-n // s) for n, s in zip(input_shape[1:4], self.pool_size)]
        return (input_shape[0], *out, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "gradient": self.gradient}


keras.saving.get_custom_objects()["complex_glorot"] = ComplexGlorotUniform
