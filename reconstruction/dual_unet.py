"""Dual-UNet + 3D ResNet: the supervised design of the "Deep Learning for Dynamic MRI Reconstruction" project
(ShanghaiTech BME1312, github.com/XiongWenye/Deep-Learning-Dynamic-MRI-Reconstruction), with real-valued Keras layers.

Design (as that project's ``train.py``):

* The zero-filled complex cine (B,T,X,Y) is split into real and imaginary parts; each part, with the frames stacked
  as channels (B,X,Y,T), goes through its own 2D UNet: ``num_levels`` levels of [conv 3x3 (no bias), BatchNorm,
  LeakyReLU(0.1)] x 2 with max-pooling, dropout 0.3 on the encoder outputs, a bottleneck block followed by channel
  + spatial attention (CBAM-like: a shared two-layer MLP with reduction 4 on the average- and max-pooled channels,
  then a 7x7 conv + BatchNorm on the channel-wise mean and max, sigmoid gates), transposed-conv up-sampling with
  skip connections, and a 3x3 conv + LeakyReLU + 1x1 conv head.
* A 3D residual network fuses the two outputs over (t, x, y): stem conv (3,7,7) with stride (1,2,2), BatchNorm,
  ReLU, max-pool 3 (stride 1), one basic residual block (two 3x3x3 convs + BatchNorm, identity shortcut), bilinear
  up-sampling back to (X, Y) and a 1x1x1 conv.

Deviations, because the benchmark scores complex images (phase errors count in PSNR/NRMSE) and the synthetic phantom
has a smooth background phase: the project's UNets and ResNet end in a sigmoid and the ResNet sees the magnitude of
the two UNet outputs, so its output is a magnitude image in [0, 1]; here the heads are linear and the ResNet takes
and returns the (real, imaginary) pair, so the output is a complex image. The project's ResNet puts the frames on
the channel axis with a depth of one; here its convolutions run over (t, x, y) with the two parts as channels, which
is the "3D network for temporal fusion" the project describes and works for any T. The UNets keep frames as
channels, so the network is built for a fixed number of frames.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from utils.complex_layers import PACKAGE


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
        self.conv_1 = keras.layers.Conv2D(self.filters, 3, padding="same", use_bias=False, name="conv_1")
        self.norm_1 = keras.layers.BatchNormalization(name="norm_1")
        self.conv_2 = keras.layers.Conv2D(self.filters, 3, padding="same", use_bias=False, name="conv_2")
        self.norm_2 = keras.layers.BatchNormalization(name="norm_2")
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
        self.spatial_conv = keras.layers.Conv2D(1, 7, padding="same", use_bias=False, name="spatial_conv")
        self.spatial_norm = keras.layers.BatchNormalization(name="spatial_norm")
        self.act = keras.layers.LeakyReLU(negative_slope=0.1)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(1, channels // self.reduction)
        self.mlp_1 = keras.layers.Dense(hidden, use_bias=False, name="mlp_1")
        self.mlp_2 = keras.layers.Dense(channels, use_bias=False, name="mlp_2")
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
        dropout: dropout rate on the encoder outputs (0.3).
    Call: (B,X,Y,C) float32, any X, Y (zero-padded to a multiple of 2**num_levels, cropped back) → (B,X,Y,out).
    """

    def __init__(self, out_channels: int, filters: int = 64, num_levels: int = 4, dropout: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        if int(num_levels) < 1 or int(filters) < 1 or int(out_channels) < 1:
            raise ValueError(f"out_channels, filters, num_levels: expected >= 1, received {out_channels}, "
                             f"{filters}, {num_levels}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), received {dropout}")
        self.out_channels = int(out_channels)
        self.filters = int(filters)
        self.num_levels = int(num_levels)
        self.dropout = float(dropout)
        f = self.filters
        self.encoders = [ConvBlock2D(f * 2 ** level, name=f"encoder_{level}") for level in range(self.num_levels)]
        self.drop = keras.layers.Dropout(self.dropout)
        self.pool = keras.layers.MaxPooling2D(2)
        self.bottleneck = ConvBlock2D(f * 2 ** self.num_levels, name="bottleneck")
        self.attention = ChannelSpatialAttention(name="attention")
        self.ups = [keras.layers.Conv2DTranspose(f * 2 ** level, 2, strides=2, name=f"up_{level}")
                    for level in range(self.num_levels - 1, -1, -1)]
        self.decoders = [ConvBlock2D(f * 2 ** level, name=f"decoder_{level}")
                         for level in range(self.num_levels - 1, -1, -1)]
        self.pre_out = keras.layers.Conv2D(f, 3, padding="same", name="pre_out")
        self.out = keras.layers.Conv2D(self.out_channels, 1, name="out")
        self.act = keras.layers.LeakyReLU(negative_slope=0.1)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        factor = 2 ** self.num_levels
        self.call(tf.zeros([1, factor, factor, channels]))

    def call(self, x, training=None):
        x, paddings = _pad_to_multiple(x, 2 ** self.num_levels)
        skips = []
        for encoder in self.encoders:
            x = self.drop(encoder(x, training=training), training=training)
            skips.append(x)
            x = self.pool(x)
        x = self.attention(self.bottleneck(x, training=training), training=training)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(tf.concat([up(x), skip], axis=-1), training=training)
        x = self.out(self.act(self.pre_out(x)))
        return _crop(x, paddings)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "filters": self.filters,
                "num_levels": self.num_levels, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TemporalResNet3D(keras.layers.Layer):
    """3D residual fusion network over (t, x, y).

    Args:
        out_channels: output channels.
        planes: channels of the stem and residual block (32 in the project's ``resnet18`` stem).
    Call: (B,T,X,Y,C) float32 → (B,T,X,Y,out_channels).
    """

    def __init__(self, out_channels: int = 2, planes: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.planes = int(planes)
        p = self.planes
        self.stem = keras.layers.Conv3D(p, (3, 7, 7), strides=(1, 2, 2), padding="same", use_bias=False,
                                        name="stem")
        self.stem_norm = keras.layers.BatchNormalization(name="stem_norm")
        self.pool = keras.layers.MaxPooling3D(3, strides=1, padding="same")
        self.conv_1 = keras.layers.Conv3D(p, 3, padding="same", use_bias=False, name="block_conv_1")
        self.norm_1 = keras.layers.BatchNormalization(name="block_norm_1")
        self.conv_2 = keras.layers.Conv3D(p, 3, padding="same", use_bias=False, name="block_conv_2")
        self.norm_2 = keras.layers.BatchNormalization(name="block_norm_2")
        self.out = keras.layers.Conv3D(self.out_channels, 1, name="out")

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
        return self.out(h)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "planes": self.planes}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DualUNetResNet(keras.layers.Layer):
    """Dual 2D UNets (real and imaginary part, frames as channels) + 3D ResNet temporal fusion.

    Args:
        num_frames: T (the UNets take the frames as channels).
        filters: first-level UNet channels (64 in the project).
        num_levels: UNet levels (4 in the project).
        dropout: UNet dropout rate (0.3).
        resnet_planes: ResNet channels (32).

    Call: ``net(x, y=None, mask=None, coil_maps=None, training=None)`` with the zero-filled image x (B,T,X,Y,1)
    complex64 (the other arguments are accepted for a common network interface and ignored: no data consistency)
    → (B,T,X,Y,1) complex64.
    """

    def __init__(self, num_frames: int, filters: int = 64, num_levels: int = 4, dropout: float = 0.3,
                 resnet_planes: int = 32, **kwargs):
        super().__init__(**kwargs)
        if int(num_frames) < 1:
            raise ValueError(f"num_frames: expected >= 1, received {num_frames}")
        self.num_frames = int(num_frames)
        self.filters = int(filters)
        self.num_levels = int(num_levels)
        self.dropout = float(dropout)
        self.resnet_planes = int(resnet_planes)
        unet = dict(out_channels=self.num_frames, filters=self.filters, num_levels=self.num_levels,
                    dropout=self.dropout)
        self.unet_real = AttentionUNet2D(**unet, name="unet_real")
        self.unet_imag = AttentionUNet2D(**unet, name="unet_imag")
        self.resnet = TemporalResNet3D(2, self.resnet_planes, name="resnet")

    def build(self, input_shape=None):
        self.unet_real.build((None, None, None, self.num_frames))
        self.unet_imag.build((None, None, None, self.num_frames))
        self.resnet.build((None, None, None, None, 2))
        self.built = True

    def call(self, x, y=None, mask=None, coil_maps=None, training=None):
        if x.shape.rank is not None and (x.shape.rank != 5 or x.shape[-1] not in (None, 1)):
            raise ValueError(f"x: expected a (B,T,X,Y,1) complex image, received shape {tuple(x.shape)}")
        if x.shape[1] is not None and x.shape[1] != self.num_frames:
            raise ValueError(f"x: this dual-UNet was built for {self.num_frames} frames (frames are UNet channels), "
                             f"received {x.shape[1]} (shape {tuple(x.shape)})")
        frames_last = tf.transpose(x[..., 0], [0, 2, 3, 1])  # (B,X,Y,T)
        real = self.unet_real(tf.math.real(frames_last), training=training)
        imag = self.unet_imag(tf.math.imag(frames_last), training=training)
        parts = tf.stack([tf.transpose(real, [0, 3, 1, 2]), tf.transpose(imag, [0, 3, 1, 2])], axis=-1)
        fused = self.resnet(parts, training=training)
        return tf.complex(fused[..., :1], fused[..., 1:])

    def get_config(self):
        return {**super().get_config(), "num_frames": self.num_frames, "filters": self.filters,
                "num_levels": self.num_levels, "dropout": self.dropout, "resnet_planes": self.resnet_planes}
