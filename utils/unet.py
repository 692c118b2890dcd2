"""One complex 2D+t UNet, configured for every use in the project.

The feature encoder/decoder of stage 1 and the feature-assisted UNet of stage 2 are the same network: stage 1 uses
:meth:`ComplexUNet2Dt.encode` for its features and :meth:`ComplexUNet2Dt.decode` for the residual update; stage 2
sets ``feature_channels`` so an external feature is concatenated to the encoder output at the bottleneck.

Layer order (and the operator indices used by the checkpoint importer) per encoder level, with
``layers_per_level = L``: for each of the L layers ``[conv(kernel_2d), norm, ModReLU, conv(kernel_t), norm,
ModReLU]``, then magnitude max-pooling. The bottleneck has the same conv blocks with ``filters * 2**levels``
channels followed by an up-convolution (transposed (1,1,1) conv, stride ``pool_size``, ModReLU). Decoder levels
(deepest first) concatenate ``[upsampled, skip]`` and apply ``[conv(kernel_t), norm, ModReLU, conv(kernel_2d),
norm, ModReLU]`` blocks, then an up-convolution except on the last level; a (1,1,1) conv gives the output.
Inputs are zero-padded on (t, x, y) to a multiple of ``pool_size ** num_levels`` (leading side gets floor(pad/2))
and the output is cropped back, with shapes computed in-graph so any T, X, Y works in graph mode.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from utils import fast_numerics
from utils.complex_layers import (
    PACKAGE,
    ComplexConv3D,
    ComplexConv3DTranspose,
    ComplexInstanceNorm,
    MagnitudeMaxPool3D,
    ModReLU,
    crop_padding,
    join,
    pad_to_multiple,
    split,
)
from utils.fast_numerics import check_numerics


class _Stage(keras.layers.Layer):
    """A list of layers applied in order (kept as a list so weight paths carry the original op indices)."""

    def __init__(self, ops: list[keras.layers.Layer], **kwargs):
        super().__init__(**kwargs)
        self.ops = ops

    def call(self, x):
        for op in self.ops:
            x = op(x)
        return x

    def call_parts(self, re, im):
        for op in self.ops:
            re, im = _call_parts(op, re, im)
        return re, im

    def call_stacked(self, x, groups=None):
        return _run_stacked(self.ops, x, groups)


def _call_parts(layer: keras.layers.Layer, re: tf.Tensor, im: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``layer.call_parts`` (builds the layer first when needed: call_parts bypasses Keras' ``__call__``)."""
    if not layer.built:
        layer.build(re.shape)
    return layer.call_parts(re, im)


def _call_stacked(layer: keras.layers.Layer, x: tf.Tensor, groups=None) -> tf.Tensor:
    """``layer.call_stacked`` (``numerics: fast``); ``groups`` (concatenated inputs) only for convolutions."""
    if not layer.built:
        raise ValueError(f"{layer.name}: build the UNet before calling it with numerics 'fast'")
    if isinstance(layer, ComplexConv3D):
        return layer.call_stacked(x, groups)
    if groups is not None:
        raise ValueError(f"{layer.name}: concatenated inputs must go to a convolution first")
    return layer.call_stacked(x)


def _run_stacked(ops: Sequence[keras.layers.Layer], x: tf.Tensor, groups=None) -> tf.Tensor:
    """``ops`` applied in order with ``numerics: fast``; each instance norm followed by a ModReLU runs as one
    fused operation (:meth:`ComplexInstanceNorm.call_stacked_with_modrelu`)."""
    i = 0
    while i < len(ops):
        op = ops[i]
        if isinstance(op, ComplexInstanceNorm) and i + 1 < len(ops) and isinstance(ops[i + 1], ModReLU):
            if groups is not None:
                raise ValueError(f"{op.name}: concatenated inputs must go to a convolution first")
            x = op.call_stacked_with_modrelu(x, ops[i + 1])
            i += 2
        else:
            x = _call_stacked(op, x, groups)
            i += 1
        groups = None
    return x


def _conv_block(filters: int, kernel_size, conv_dtype: str | None) -> list[keras.layers.Layer]:
    return [ComplexConv3D(filters, kernel_size, conv_dtype=conv_dtype), ComplexInstanceNorm(), ModReLU()]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ComplexUNet2Dt(keras.layers.Layer):
    """Complex 2D+t UNet with separable (1,k,k) spatial and (k,1,1) temporal convolutions.

    Args:
        filters: channels of the first level (doubled per level).
        num_levels: number of down-sampling levels.
        layers_per_level: conv blocks (spatial + temporal) per level.
        kernel_size_2d: spatial kernel, e.g. (1, 5, 5).
        kernel_size_t: temporal kernel, e.g. (3, 1, 1).
        pool_size: down/up-sampling factors (t, x, y).
        output_channels: channels of the output convolution.
        feature_channels: channels of an external feature concatenated at the bottleneck (0: none).
        conv_dtype: None (float32) or "float16"/"bfloat16" for the convolutions (mixed precision).
        pool_gradient: gradient of the magnitude max-poolings: ``complex`` (true derivative) or ``optox`` (the
            original's; see :class:`~utils.complex_layers.MagnitudeMaxPool3D`). The forward pass is the same.
        numerics: ``faithful`` (the original's operation order, bit for bit) or ``fast`` (the same network with
            reordered arithmetic on channel-stacked real tensors, utils/fast_numerics.py: equal up to float32
            rounding, not bit for bit). The weights are the same in both.
        **kwargs: passed to ``keras.layers.Layer``.

    Call: ``unet(x)`` or ``unet(x, feature)`` with x complex (B,T,X,Y,C) and feature complex
    (B, T', X', Y', feature_channels) at the bottleneck resolution; returns complex (B,T,X,Y,output_channels).
    """

    def __init__(self, filters: int = 12, num_levels: int = 2, layers_per_level: int = 1,
                 kernel_size_2d: Sequence[int] = (1, 5, 5), kernel_size_t: Sequence[int] = (3, 1, 1),
                 pool_size: Sequence[int] = (2, 2, 2), output_channels: int = 1, feature_channels: int = 0,
                 conv_dtype: str | None = None, pool_gradient: str = "complex", numerics: str = "faithful",
                 **kwargs):
        super().__init__(**kwargs)
        check_numerics(numerics)
        if num_levels < 1 or layers_per_level < 1 or filters < 1:
            raise ValueError(
                f"filters, num_levels, layers_per_level must be >= 1, received {filters}, {num_levels}, "
                f"{layers_per_level}"
            )
        self.filters = int(filters)
        self.num_levels = int(num_levels)
        self.layers_per_level = int(layers_per_level)
        self.kernel_size_2d = tuple(int(k) for k in kernel_size_2d)
        self.kernel_size_t = tuple(int(k) for k in kernel_size_t)
        self.pool_size = tuple(int(p) for p in pool_size)
        self.output_channels = int(output_channels)
        self.feature_channels = int(feature_channels)
        self.conv_dtype = conv_dtype
        self.pool_gradient = pool_gradient
        self.numerics = numerics
        self.pad_factors = tuple(p ** self.num_levels for p in self.pool_size)

        self.encoder = []
        for level in range(self.num_levels):
            ops = []
            for _ in range(self.layers_per_level):
                ops += _conv_block(self.filters * 2 ** level, self.kernel_size_2d, conv_dtype)
                ops += _conv_block(self.filters * 2 ** level, self.kernel_size_t, conv_dtype)
            ops.append(MagnitudeMaxPool3D(self.pool_size, gradient=pool_gradient))
            self.encoder.append(_Stage(ops, name=f"encoder_{level}"))

        ops = []
        for _ in range(self.layers_per_level):
            ops += _conv_block(self.filters * 2 ** self.num_levels, self.kernel_size_2d, conv_dtype)
            ops += _conv_block(self.filters * 2 ** self.num_levels, self.kernel_size_t, conv_dtype)
        ops.append(self._up(self.filters * 2 ** (self.num_levels - 1)))
        self.bottleneck = _Stage(ops, name="bottleneck")

        self.decoder = []
        for level in range(self.num_levels - 1, -1, -1):
            ops = []
            for _ in range(self.layers_per_level):
                ops += _conv_block(self.filters * 2 ** level, self.kernel_size_t, conv_dtype)
                ops += _conv_block(self.filters * 2 ** level, self.kernel_size_2d, conv_dtype)
            if level > 0:
                ops.append(self._up(self.filters * 2 ** (level - 1)))
            self.decoder.append(_Stage(ops, name=f"decoder_{self.num_levels - 1 - level}"))
        self.out_layer = ComplexConv3D(self.output_channels, (1, 1, 1), conv_dtype=conv_dtype, name="out_layer")

    def _up(self, filters: int) -> ComplexConv3DTranspose:
        return ComplexConv3DTranspose(filters, (1, 1, 1), strides=self.pool_size, activation="modrelu",
                                      conv_dtype=self.conv_dtype)

    @property
    def bottleneck_channels(self) -> int:
        """Channels of the encoder output (the feature passed between the stages)."""
        return self.filters * 2 ** (self.num_levels - 1)

    # Inside the network the layers exchange (real, imaginary) parts (``call_parts``): every layer works on the
    # parts anyway, and skipping the complex round trip between layers saves two memory passes per layer and
    # direction. Values are the same bit for bit.
    def encode(self, x: tf.Tensor) -> tuple[tf.Tensor, list, tf.Tensor]:
        """Pads ``x`` and runs the encoder. Returns (bottleneck input (complex), skips (opaque), paddings)."""
        x, paddings = pad_to_multiple(x, self.pad_factors)
        if self.numerics == "fast":
            x = fast_numerics.stack(x)
            skips = []
            for stage in self.encoder:
                x = _run_stacked(stage.ops[:-1], x)
                skips.append(x)
                x = _call_stacked(stage.ops[-1], x)
            return fast_numerics.unstack(x), skips, paddings
        parts = split(x)
        skips = []
        for stage in self.encoder:
            for op in stage.ops[:-1]:
                parts = _call_parts(op, *parts)
            skips.append(parts)
            parts = _call_parts(stage.ops[-1], *parts)
        return join(*parts), skips, paddings

    def decode(self, encoded: tf.Tensor, skips: list[tf.Tensor], paddings: tf.Tensor,
               feature: tf.Tensor | None = None) -> tf.Tensor:
        """Bottleneck (with the optional external feature), decoder, output conv, crop."""
        if self.feature_channels and feature is None:
            raise ValueError(f"{self.name}: this UNet expects a bottleneck feature with "
                             f"{self.feature_channels} channels, received none")
        if not self.feature_channels and feature is not None:
            raise ValueError(f"{self.name}: feature_channels=0 but a feature was passed")
        if self.numerics == "fast":
            return self._decode_stacked(encoded, skips, paddings, feature)
        re, im = split(encoded)
        if self.feature_channels:
            f_re, f_im = split(feature)
            re, im = tf.concat([re, f_re], axis=-1), tf.concat([im, f_im], axis=-1)
        re, im = self.bottleneck.call_parts(re, im)
        for stage, (skip_re, skip_im) in zip(self.decoder, reversed(skips)):
            re, im = stage.call_parts(tf.concat([re, skip_re], axis=-1), tf.concat([im, skip_im], axis=-1))
        return crop_padding(join(*_call_parts(self.out_layer, re, im)), paddings)

    def _decode_stacked(self, encoded, skips, paddings, feature):
        x, groups = fast_numerics.stack(encoded), None
        if self.feature_channels:
            groups = [int(encoded.shape[-1]), self.feature_channels]
            x = fast_numerics.concat([x, fast_numerics.stack(feature)])
        x = self.bottleneck.call_stacked(x, groups)
        previous = self.bottleneck
        for stage, skip in zip(self.decoder, reversed(skips)):
            upsampled = previous.ops[-1].filters
            groups = [upsampled, int(stage.ops[0].kernel.shape[-3]) - upsampled]
            x = stage.call_stacked(fast_numerics.concat([x, skip]), groups)
            previous = stage
        return crop_padding(fast_numerics.unstack(_call_stacked(self.out_layer, x)), paddings)

    def call(self, x, feature=None):
        encoded, skips, paddings = self.encode(x)
        return self.decode(encoded, skips, paddings, feature)

    def build(self, input_shape):
        # Build by tracing on a zero input of a padded size; weights depend only on channel counts.
        if not self.built:
            b = 1
            spatial = [f for f in self.pad_factors]
            x = tf.zeros([b, *spatial, int(input_shape[-1])], tf.complex64)
            feature = None
            if self.feature_channels:
                feature = tf.zeros([b, 1, 1, 1, self.feature_channels], tf.complex64)
            self._trace_complex(x, feature)
            # The encoder's stage containers are never called (the skip is taken before the pooling); unbuilt,
            # Keras' fit under a tf.distribute strategy would try to build the model on a training batch.
            for stage in self.encoder:
                stage.built = True

    def _trace_complex(self, x: tf.Tensor, feature: tf.Tensor | None) -> None:
        """Runs the network once through the layers' Keras ``__call__`` so they are built inside their parents'
        name scopes (call_parts bypasses ``__call__``); weight paths stay ``unet/bottleneck/...``."""
        x, _ = pad_to_multiple(x, self.pad_factors)
        skips = []
        for stage in self.encoder:
            for op in stage.ops[:-1]:
                x = op(x)
            skips.append(x)
            x = stage.ops[-1](x)
        if feature is not None:
            x = tf.concat([x, feature], axis=-1)
        x = self.bottleneck(x)
        for stage, skip in zip(self.decoder, reversed(skips)):
            x = stage(tf.concat([x, skip], axis=-1))
        self.out_layer(x)

    def get_config(self):
        return {
            **super().get_config(), "filters": self.filters, "num_levels": self.num_levels,
            "layers_per_level": self.layers_per_level, "kernel_size_2d": self.kernel_size_2d,
            "kernel_size_t": self.kernel_size_t, "pool_size": self.pool_size,
            "output_channels": self.output_channels, "feature_channels": self.feature_channels,
            "conv_dtype": self.conv_dtype, "pool_gradient": self.pool_gradient,
            "numerics": self.numerics,
        }

    def original_variables(self) -> dict[str, keras.Variable]:
        """Variables keyed by their path in the original merlintf UNet (e.g. ``encoder/0/3/kernel``).

        Keys: ``encoder/{level}/{op}/…``, ``bottleneck/{op}/…``, ``decoder/{j}/{op}/…`` (j = 0 deepest),
        ``out_layer/…``; ``{op}/activation/bias`` for the ModReLU of an up-convolution.
        """
        out: dict[str, keras.Variable] = {}

        def add(prefix: str, layer: keras.layers.Layer):
            if isinstance(layer, ComplexConv3DTranspose):
                out[f"{prefix}/kernel"] = layer.kernel
                out[f"{prefix}/bias"] = layer.bias
                if layer.activation is not None:
                    out[f"{prefix}/activation/bias"] = layer.activation.bias
            elif isinstance(layer, ComplexConv3D):
                out[f"{prefix}/kernel"] = layer.kernel
                if layer.use_bias:
                    out[f"{prefix}/bias"] = layer.bias
            elif isinstance(layer, ModReLU):
                out[f"{prefix}/bias"] = layer.bias

        for level, stage in enumerate(self.encoder):
            for i, op in enumerate(stage.ops):
                add(f"encoder/{level}/{i}", op)
        for i, op in enumerate(self.bottleneck.ops):
            add(f"bottleneck/{i}", op)
        for j, stage in enumerate(self.decoder):
            for i, op in enumerate(stage.ops):
                add(f"decoder/{j}/{i}", op)
        add("out_layer", self.out_layer)
        return out
