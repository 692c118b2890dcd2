"""CRNN-MRI (Qin et al., IEEE TMI 2019) as DDEI trains it: bidirectional convolutional RNN over time and
recurrence over iterations (CRNN-i), learnable-lambda data consistency, in the artifact-removal form ``f(A^H y)``.

Source convention: DDEI (Wang & Davies, ISBI 2025), ``utils/edipo/models/crnn.py`` + ``datalayer.py`` and
``train.py``'s ``ArtifactRemovalCRNN(CRNN(num_cascades=2))``. Complex images are 2 real channels (real, imaginary).
With ``h`` hidden channels (``chans`` = 64), 3x3 2D convolutions ("same" padding, bias) applied frame by frame, ReLU
``r`` and cascade ``i = 1..num_cascades`` (superscript ``i-1`` = the previous cascade's value, zeros before the
first), the network computes from ``x^0 = A^H y``:

* BCRNN layer (cell ``H_t = r(W_i * x_t + W_h * H_{t-1} + W_ih * H^{i-1}_t)``, run forwards and backwards over
  time from ``H = 0``; the output is the sum of both directions):
  ``h0^i = BCRNN_1(x^{i-1}, h0^{i-1})``, ``h1^i = BCRNN_2(x^{i-1}, h0^i)`` (DDEI's second BCRNN reads the image again
  and takes the first one's output as its iteration hidden state);
* three CRNN-i layers ``h_{k+1}^i = r(C_k * h_k^i + C'_k * h_{k+1}^{i-1})`` for k = 1, 2, 3;
* output conv ``h -> 2`` channels and residual ``x_cnn = x^{i-1} + C_4 * h_4^i``;
* data consistency (DDEI's ``DCLayer``: k-space ``(1 - M) A x + M (lambda A x + (1 - lambda) y)``, then the inverse
  FFT) ``x^i = x_cnn - (1 - lambda) A^H (A x_cnn - y)``; for one coil with unit sensitivity this is DDEI's layer
  exactly, and for several coils it is the same mixing done per coil followed by the ``S^H`` coil combination when
  ``sum_c |S_c|^2 = 1``. ``lambda`` is unconstrained, initialised at ``log(e - 1)`` (DDEI's value) and, as in DDEI
  (one ``DCLayer`` object appended ``num_cascades`` times), shared by the cascades (``shared_dc=True``).

All convolution weights are shared by the cascades (the "-i" recurrence), so the weight count does not depend on
``num_cascades``. Initialisation follows PyTorch's ``Conv2d`` default (kernel and bias uniform in
``+-1/sqrt(fan_in)``). Defaults followed from DDEI: ``chans=64``, kernel 3, ``num_cascades=2`` (``train.py``; the
class default there is 10), lambda init ``log(e - 1)``. DDEI's wrapper ``ArtifactRemovalCRNN`` recomputes ``A^H y``
from the measurements; ``input_from_kspace=True`` does the same, ``False`` uses the ``x`` passed in.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from utils import mri
from utils.complex_layers import PACKAGE

LAMBDA_INIT = math.log(math.e - 1.0)


def _to_channels(x: tf.Tensor) -> tf.Tensor:
    """(B,T,X,Y,1) complex -> (B,T,X,Y,2) float32 (real, imaginary)."""
    return tf.concat([tf.math.real(x), tf.math.imag(x)], axis=-1)


def _to_complex(x: tf.Tensor) -> tf.Tensor:
    return tf.complex(x[..., :1], x[..., 1:2])


def _frames(x: tf.Tensor) -> tf.Tensor:
    """(B,T,X,Y,C) -> (B*T,X,Y,C)."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))


def _unframes(x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """(B*T,X,Y,C) -> (B,T,X,Y,C) with B, T of ``like``."""
    shape, lead = tf.shape(x), tf.shape(like)
    return tf.reshape(x, tf.concat([lead[:2], shape[1:]], axis=0))


def _conv(filters: int, in_channels: int, kernel_size: int, name: str) -> keras.layers.Conv2D:
    """3x3 'same' conv with PyTorch's Conv2d default initialisation (uniform +-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
    return keras.layers.Conv2D(
        filters, kernel_size, padding="same", name=name,
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound))


@keras.saving.register_keras_serializable(package=PACKAGE)
class LambdaDC(keras.layers.Layer):
    """DDEI's learnable-lambda data consistency: ``x - (1 - lambda) A^H (A x - y)`` (see the module docstring).

    Args:
        lambda_init: initial ``lambda`` (DDEI: ``log(e - 1)``); 0 replaces the acquired samples, 1 ignores them.
        **kwargs: passed to ``keras.layers.Layer``.

    Call: ``layer(x, y, mask, coil_maps)`` with x (B,T,X,Y,1) complex64 -> (B,T,X,Y,1).
    """

    def __init__(self, lambda_init: float = LAMBDA_INIT, **kwargs):
        super().__init__(**kwargs)
        self.lambda_init = float(lambda_init)

    def build(self, input_shape=None):
        self.lam = self.add_weight(name="lambda", shape=(1,),
                                   initializer=keras.initializers.Constant(self.lambda_init))
        self.built = True

    def call(self, x, y, mask, coil_maps):
        residual = mri.forward(x, mask, coil_maps) - y
        return x - mri.complex_scale(mri.adjoint(residual, mask, coil_maps), 1.0 - self.lam[0])

    def get_config(self):
        return {**super().get_config(), "lambda_init": self.lambda_init}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BCRNN(keras.layers.Layer):
    """Bidirectional convolutional RNN over time with an iteration hidden state (DDEI's ``BCRNNlayer``).

    Args:
        hidden: hidden channels.
        in_channels: input channels (2: real, imaginary).
        kernel_size: square kernel size.
        **kwargs: passed to ``keras.layers.Layer``.

    Call: ``layer(x, hidden_iteration)`` with x (B,T,X,Y,in) and ``hidden_iteration`` (B,T,X,Y,hidden) or None
    (zeros: only the bias of its convolution remains) -> (B,T,X,Y,hidden), forward plus backward pass.
    """

    def __init__(self, hidden: int = 64, in_channels: int = 2, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)
        self.in_channels = int(in_channels)
        self.kernel_size = int(kernel_size)
        self.i2h = _conv(self.hidden, self.in_channels, self.kernel_size, "i2h")
        self.h2h = _conv(self.hidden, self.hidden, self.kernel_size, "h2h")
        self.ih2ih = _conv(self.hidden, self.hidden, self.kernel_size, "ih2ih")

    def build(self, input_shape=None):
        self.i2h.build((None, None, None, self.in_channels))
        self.h2h.build((None, None, None, self.hidden))
        self.ih2ih.build((None, None, None, self.hidden))
        self.built = True

    def call(self, x, hidden_iteration=None):
        # the input and iteration terms do not depend on the time recurrence: one batched conv over all frames
        drive = _unframes(self.i2h(_frames(x)), x)
        if hidden_iteration is None:
            drive = drive + self.ih2ih.bias
        else:
            drive = drive + _unframes(self.ih2ih(_frames(hidden_iteration)), hidden_iteration)
        drive = tf.transpose(drive, [1, 0, 2, 3, 4])  # (T,B,X,Y,h) for scan
        initial = tf.zeros_like(drive[0])

        def cell(state, inputs):
            return tf.nn.relu(inputs + self.h2h(state))

        forward = tf.scan(cell, drive, initializer=initial)
        backward = tf.scan(cell, drive, initializer=initial, reverse=True)
        return tf.transpose(forward + backward, [1, 0, 2, 3, 4])

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "in_channels": self.in_channels,
                "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CRNN(keras.Model):
    """CRNN-MRI in DDEI's artifact-removal form (module docstring): ``num_cascades`` recurrent cascades with data
    consistency, complex cine in, complex cine out.

    Args:
        num_cascades: cascades (iterations) sharing all weights (DDEI trains with 2).
        chans: hidden channels (DDEI: 64).
        kernel_size: convolution kernel size (DDEI: 3).
        lambda_init: initial data-consistency lambda (DDEI: ``log(e - 1)``).
        shared_dc: one lambda for all cascades (DDEI) or one per cascade.
        input_from_kspace: start from ``A^H y`` recomputed from ``y`` and ``mask`` (DDEI's ``ArtifactRemovalCRNN``)
            instead of the ``x`` passed in.
        **kwargs: passed to ``keras.Model`` (a model, so that its weights are saved on their own).

    Call: ``net(x, y, mask, coil_maps, training=None)`` with x (B,T,X,Y,1) complex64, y (B,T,X,Y,C) complex64, mask
    (B,T,1,Y,1) or (B,T,X,Y,1) float32, coil maps (B,1,X,Y,C) complex64 -> (B,T,X,Y,1) complex64.
    """

    def __init__(self, num_cascades: int = 2, chans: int = 64, kernel_size: int = 3,
                 lambda_init: float = LAMBDA_INIT, shared_dc: bool = True, input_from_kspace: bool = True, **kwargs):
        super().__init__(**kwargs)
        if int(num_cascades) < 1:
            raise ValueError(f"num_cascades: expected >= 1, received {num_cascades!r}")
        if int(chans) < 1 or int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"chans / kernel_size: expected >= 1 and an odd kernel, received {chans!r}, "
                             f"{kernel_size!r}")
        self.num_cascades = int(num_cascades)
        self.chans = int(chans)
        self.kernel_size = int(kernel_size)
        self.lambda_init = float(lambda_init)
        self.shared_dc = bool(shared_dc)
        self.input_from_kspace = bool(input_from_kspace)
        k, h = self.kernel_size, self.chans
        self.bcrnn = BCRNN(h, 2, k, name="bcrnn")
        self.bcrnn2 = BCRNN(h, 2, k, name="bcrnn2")
        self.convs_x = [_conv(h, h, k, f"conv{j}_x") for j in (1, 2, 3)]
        self.convs_h = [_conv(h, h, k, f"conv{j}_h") for j in (1, 2, 3)]
        self.conv_out = _conv(2, h, k, "conv4_x")
        num_dc = 1 if self.shared_dc else self.num_cascades
        self.dcs = [LambdaDC(self.lambda_init, name=f"dc_{i}") for i in range(num_dc)]

    def build(self, input_shape=None):
        self.bcrnn.build()
        self.bcrnn2.build()
        for conv in self.convs_x + self.convs_h + [self.conv_out]:
            conv.build((None, None, None, self.chans))
        for dc in self.dcs:
            dc.build()
        self.built = True

    def build_all(self) -> None:
        self.build(None)

    def call(self, x, y, mask, coil_maps, training=None):
        mri.check_operator_inputs(image=x, kspace=y, mask=mask, coil_maps=coil_maps)
        if self.input_from_kspace:
            x = mri.adjoint(y, mask, coil_maps)
        image = _to_channels(x)
        hidden0 = None
        previous = [None, None, None]  # h2, h3, h4 of the previous cascade
        for cascade in range(self.num_cascades):
            hidden0 = self.bcrnn(image, hidden0)
            features = self.bcrnn2(image, hidden0)
            flat = _frames(features)
            for j, (conv_x, conv_h) in enumerate(zip(self.convs_x, self.convs_h)):
                recurrent = conv_h.bias if previous[j] is None else conv_h(previous[j])
                flat = tf.nn.relu(conv_x(flat) + recurrent)
                previous[j] = flat
            image = image + _unframes(self.conv_out(flat), image)
            dc = self.dcs[0 if self.shared_dc else cascade]
            image = _to_channels(dc(_to_complex(image), y, mask, coil_maps))
        return _to_complex(image)

    def get_config(self):
        return {**super().get_config(), "num_cascades": self.num_cascades, "chans": self.chans,
                "kernel_size": self.kernel_size, "lambda_init": self.lambda_init, "shared_dc": self.shared_dc,
                "input_from_kspace": self.input_from_kspace}
