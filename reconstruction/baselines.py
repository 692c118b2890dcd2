"""Baselines from related work: one unrolled network, several training algorithms.

Architecture (:class:`UnrolledNet`): the SSFL-Recon reconstruction network without FE features,
``num_iter`` iterations of ``x <- DC_i(x - tau_i * UNet_i(x) / num_iter)`` with the project's complex 2D+t UNet
(:class:`utils.unet.ComplexUNet2Dt`), non-negative ``tau_i`` (init 0.1) and a data-consistency layer from
:data:`DC_LAYERS` (gradient step ``DCGD`` as SSFL-Recon, or the CG proximal step ``DCPM``).

Training algorithms are Keras models that own a network (any layer called as ``network(x, y, mask, coil_maps,
training=...)``) and override ``train_step``/``test_step`` with ``keras.metrics.Mean`` trackers. Batches are dicts
``{"x", "y", "mask", "coil_maps", "reference"}`` of the acquired data (``data_loader.pipelines.acquired_dataset``);
calling a trainer as ``model({"x", "y", "mask", "coil_maps"})`` reconstructs with all acquired data, so every
trainer plugs into ``evaluation.evaluate.model_method``.

* :class:`SupervisedTrainer`: loss to the fully sampled reference, ``mean |x_hat - x_ref|^2`` (``"mse"``) or
  ``mean |x_hat - x_ref|`` (``"l1"``).
* :class:`SSDUTrainer` (Yaman et al., MRM 2020): per step the acquired points Omega are split into a disjoint
  data-consistency set Theta and loss set Lambda (:func:`ssdu_split`); the network sees ``y_Theta`` only and the loss
  is SSDU's normalised l1-l2 on the held-out k-space, ``||r||_2 / ||y_Lambda||_2 + ||r||_1 / ||y_Lambda||_1`` with
  ``r = A_Lambda x_hat - y_Lambda`` (norms over real and imaginary parts, as SSDU's real-valued tensors). SSDU
  defines rho = |Lambda| / |Omega| and uses 0.4; here ``split_ratio`` = |Theta| / |Omega| = 0.6 (deepinv's
  ``SplittingLoss`` convention, used by DDEI with 0.6), the same split. Test time uses all acquired data.
* :class:`EITrainer` (Chen, Tachella & Davies, ICCV 2021; DDEI: Wang & Davies, ISBI 2025): measurement consistency
  ``mean |A x1 - y|^2`` with ``x1 = f(y)``, plus ``ei_weight`` times the equivariance loss ``mean |x3 - x2|^2`` with
  ``x2 = T(x1)`` for a random transform T (:mod:`reconstruction.transforms`) and ``x3 = f(A x2)`` re-sampled with the
  same mask and coil maps. Gradients flow through ``x2`` as in the EI paper and deepinv's ``EILoss``
  (``no_grad=False``, its default, which DDEI uses). No noise is added to ``A x2`` (DDEI's noiseless setting).
"""
from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from feature_learning.model import DEFAULT_UNET, _unpack
from reconstruction.transforms import TRANSFORMS, make_transform
from utils import mri
from utils.complex_layers import PACKAGE
from utils.data_consistency import DCGD, DCPM, Scalar
from utils.unet import ComplexUNet2Dt
from utils.nan_guard import apply_finite_gradients

DC_LAYERS = {"gd": DCGD, "pm": DCPM}
SUPERVISED_LOSSES = ("mse", "l1")
SSDU_SELECTIONS = ("uniform", "gaussian")


# ------------------------------------------------------------------------------------------- network
@keras.saving.register_keras_serializable(package=PACKAGE)
class UnrolledNet(keras.layers.Layer):
    """Unrolled reconstruction: ``num_iter`` times ``x <- DC_i(x - tau_i * UNet_i(x) / num_iter)``.

    Args:
        num_iter: unrolled iterations (each with its own UNet, tau and DC weight).
        unet: keyword arguments of :class:`ComplexUNet2Dt` (defaults as SSFL-Recon); no bottleneck feature.
        dc: data-consistency layer, a key of :data:`DC_LAYERS` (``"gd"``: gradient step, as SSFL-Recon).
        tau_init: initial ``tau``.
        dc_weight_init: initial DC weight.
        **kwargs: passed to ``keras.layers.Layer``.

    Call: ``net(x, y, mask, coil_maps)`` with x (B,T,X,Y,1) complex64, y (B,T,X,Y,C), mask (B,T,1,Y,1), coil maps
    (B,1,X,Y,C) → (B,T,X,Y,1) complex64.
    """

    def __init__(self, num_iter: int = 2, unet: dict | None = None, dc: str = "gd", tau_init: float = 0.1,
                 dc_weight_init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_iter) < 1:
            raise ValueError(f"num_iter: expected >= 1, received {num_iter!r}")
        if dc not in DC_LAYERS:
            raise ValueError(f"dc: expected one of {sorted(DC_LAYERS)}, received {dc!r}")
        self.num_iter = int(num_iter)
        self.unet_config = {**DEFAULT_UNET, **(unet or {})}
        self.unet_config.pop("feature_channels", None)
        self.dc = dc
        self.tau_init = float(tau_init)
        self.dc_weight_init = float(dc_weight_init)
        self.unets = [ComplexUNet2Dt(**self.unet_config, name=f"unet_{i}") for i in range(self.num_iter)]
        self.taus = [Scalar(self.tau_init, name=f"tau_{i}") for i in range(self.num_iter)]
        self.dcs = [DC_LAYERS[dc](self.dc_weight_init, name=f"dc_{i}") for i in range(self.num_iter)]

    def build(self, input_shape=None):
        for unet, tau, dc in zip(self.unets, self.taus, self.dcs):
            unet.build((None, None, None, None, 1))
            tau.build()
            dc.build()
        self.built = True

    def call(self, x, y, mask, coil_maps, training=None):
        mri.check_operator_inputs(image=x, kspace=y, mask=mask, coil_maps=coil_maps)
        for unet, tau, dc in zip(self.unets, self.taus, self.dcs):
            x = x - mri.complex_scale(tau(unet(x)), 1.0 / self.num_iter)
            x = dc(x, y, mask, coil_maps)
        return x

    def get_config(self):
        return {**super().get_config(), "num_iter": self.num_iter, "unet": self.unet_config, "dc": self.dc,
                "tau_init": self.tau_init, "dc_weight_init": self.dc_weight_init}


# ------------------------------------------------------------------------------------------- losses
def supervised_loss(recon: tf.Tensor, reference: tf.Tensor, kind: str = "mse") -> tf.Tensor:
    """``mean |recon - reference|^2`` (``"mse"``) or ``mean |recon - reference|`` (``"l1"``)."""
    if kind not in SUPERVISED_LOSSES:
        raise ValueError(f"supervised loss: expected one of {SUPERVISED_LOSSES}, received {kind!r}")
    recon = tf.convert_to_tensor(recon)
    diff = recon - tf.cast(reference, recon.dtype)
    if kind == "mse":
        return tf.reduce_mean(mri.abs2(diff))
    return tf.reduce_mean(tf.sqrt(mri.abs2(diff) + 1e-12))


def ssdu_split(mask: tf.Tensor, seed, split_ratio: float = 0.6, selection: str = "gaussian",
               center_lines: int = 4, std_scale: float = 4.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Splits an acquired k-t mask into disjoint data-consistency and loss masks (SSDU).

    The loss set takes ``round((1 - split_ratio) * |Omega|)`` acquired (t, ky) points of each example, drawn without
    replacement among the acquired points outside the ``center_lines`` central ky lines (those always stay in the
    DC set, SSDU's ``small_acs_block``): uniformly, or with weights ``exp(-(ky - ky_c)^2 / (2 (Y / std_scale)^2))``
    (SSDU's Gaussian selection along ky). Drawn with the Gumbel top-k trick, so the count is exact.

    Args:
        mask: (B,T,1,Y,1) 0/1 float acquired mask Omega.
        seed: stateless seed, shape (2,) int.
        split_ratio: |Theta| / |Omega|, the fraction kept for data consistency (0.6 = SSDU's rho 0.4).
        selection: ``"uniform"`` or ``"gaussian"``.
        center_lines: central ky lines kept in the DC set in every frame.
        std_scale: Gaussian width ``Y / std_scale``.

    Returns:
        (dc_mask Theta, loss_mask Lambda), both (B,T,1,Y,1) float32, disjoint, summing to ``mask``.
    """
    if not 0.0 < float(split_ratio) < 1.0:
        raise ValueError(f"split_ratio: expected a number in (0, 1), received {split_ratio}")
    if selection not in SSDU_SELECTIONS:
        raise ValueError(f"selection: expected one of {SSDU_SELECTIONS}, received {selection!r}")
    if int(center_lines) < 0:
        raise ValueError(f"center_lines: expected >= 0, received {center_lines}")
    if not float(std_scale) > 0:
        raise ValueError(f"std_scale: expected > 0, received {std_scale}")
    mask = tf.cast(mask, tf.float32)
    if mask.shape.rank is not None and mask.shape.rank != 5:
        raise ValueError(f"mask: expected (B,T,1,Y,1), received shape {tuple(mask.shape)}")
    shape = tf.shape(mask)
    batch, frames, lines = shape[0], shape[1], shape[3]
    flat = tf.reshape(mask, tf.stack([batch, frames * lines]))
    ky = tf.cast(tf.range(lines), tf.float32)
    centre = tf.cast(lines // 2, tf.float32)
    start = tf.cast(lines // 2 - int(center_lines) // 2, tf.float32)
    in_centre = (ky >= start) & (ky < start + float(int(center_lines)))
    eligible_line = tf.tile(tf.logical_not(in_centre)[None, :], tf.stack([frames, 1]))  # (T, Y)
    eligible = (flat > 0.5) & tf.reshape(eligible_line, [1, -1])
    if selection == "gaussian":
        sigma = tf.cast(lines, tf.float32) / float(std_scale)
        log_weight = -((ky - centre) ** 2) / (2.0 * sigma ** 2)
    else:
        log_weight = tf.zeros_like(ky)
    log_weight = tf.reshape(tf.tile(log_weight[None, :], tf.stack([frames, 1])), [1, -1])
    uniform = tf.random.stateless_uniform(tf.shape(flat), seed=tf.cast(seed, tf.int64), minval=1e-7, maxval=1.0)
    keys = log_weight - tf.math.log(-tf.math.log(uniform))  # Gumbel-perturbed log weights
    keys = tf.where(eligible, keys, tf.fill(tf.shape(keys), -float("inf")))
    acquired = tf.reduce_sum(flat, axis=1)
    available = tf.reduce_sum(tf.cast(eligible, tf.float32), axis=1)
    count = tf.minimum(tf.round((1.0 - float(split_ratio)) * acquired), available)
    count = tf.cast(count, tf.int32)
    ordered = tf.sort(keys, axis=1, direction="DESCENDING")
    threshold = tf.gather(ordered, tf.maximum(count - 1, 0), axis=1, batch_dims=1)
    chosen = eligible & (keys >= threshold[:, None]) & (count > 0)[:, None]
    loss_mask = tf.reshape(tf.cast(chosen, tf.float32), tf.shape(mask))
    return mask - loss_mask, loss_mask


def ssdu_loss(recon: tf.Tensor, kspace: tf.Tensor, loss_mask: tf.Tensor, coil_maps: tf.Tensor) -> tf.Tensor:
    """SSDU's normalised l1-l2 loss on the held-out k-space: ``||r||_2/||y_L||_2 + ||r||_1/||y_L||_1``."""
    recon, kspace, coil_maps = (tf.convert_to_tensor(v) for v in (recon, kspace, coil_maps))
    loss_mask = tf.convert_to_tensor(loss_mask, tf.float32)
    target = mri.apply_mask(kspace, loss_mask)
    residual = mri.forward(recon, loss_mask, coil_maps) - target

    def parts(z):
        return tf.concat([tf.math.real(z), tf.math.imag(z)], axis=-1)

    r, t = parts(residual), parts(target)
    l2 = tf.norm(tf.reshape(r, [-1])) / (tf.norm(tf.reshape(t, [-1])) + 1e-12)
    l1 = tf.reduce_sum(tf.abs(r)) / (tf.reduce_sum(tf.abs(t)) + 1e-12)
    return l2 + l1


def measurement_consistency_loss(recon, kspace, mask, coil_maps) -> tf.Tensor:
    """``mean |A x - y|^2`` over the k-space tensor (deepinv's ``MCLoss`` with its MSE metric)."""
    recon, kspace, coil_maps = (tf.convert_to_tensor(v) for v in (recon, kspace, coil_maps))
    mask = tf.convert_to_tensor(mask, tf.float32)
    return tf.reduce_mean(mri.abs2(mri.forward(recon, mask, coil_maps) - mri.apply_mask(kspace, mask)))


# ------------------------------------------------------------------------------------------- trainers
class ReconTrainer(keras.Model):
    """Base of the training algorithms: owns ``network`` and the seed of its random draws; subclasses define
    :meth:`compute_losses` returning ``{"loss": total, ...}`` with the names in ``loss_names``.

    Args:
        network: the reconstruction network (``network(x, y, mask, coil_maps, training=...)``).
        seed: seed of the per-step random draws (mask splits, transforms); the draws of a training step are keyed by
            ``(seed, optimizer iterations)``, so a resumed run (optimizer state restored) draws what it would have.
        **kwargs: passed to ``keras.Model``.
    """

    loss_names: tuple[str, ...] = ("loss",)

    def __init__(self, network: keras.layers.Layer, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.seed = int(seed)
        self.trackers = [keras.metrics.Mean(name=n) for n in self.loss_names]

    def build_all(self) -> None:
        self.network.build(None)
        self.built = True

    def build(self, input_shape=None):
        self.build_all()

    def call(self, inputs, training=None):
        x, y, mask, coil_maps = _unpack(inputs)
        return self.network(x, y, mask, coil_maps, training=training)

    @staticmethod
    def _batch(data) -> dict:
        if isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        return data

    def reconstruct(self, x, y, mask, coil_maps, training=None) -> tf.Tensor:
        return self.network(x, y, mask, coil_maps, training=training)

    def step_seed(self, training: bool) -> tf.Tensor:
        """(2,) int64 stateless seed of this step's random draws: ``(seed, optimizer iterations)`` in training, a
        fixed one otherwise (validation losses comparable between epochs)."""
        optimizer = getattr(self, "optimizer", None)
        step = optimizer.iterations if (training and optimizer is not None) else -1
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])

    def compute_losses(self, data: dict, training: bool) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def train_step(self, data):
        data = self._batch(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(data, training=True)
        variables = self.trainable_variables
        grads = tape.gradient(losses["loss"], variables)
        pairs = self.adjust_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        apply_finite_gradients(self, pairs, losses["loss"])  # NaN/Inf steps are not applied
        return self._track(losses)

    def adjust_gradients(self, pairs: list) -> list:
        """(gradient, variable) pairs before they are applied; subclasses add e.g. weight decay."""
        return pairs

    def test_step(self, data):
        return self._track(self.compute_losses(self._batch(data), training=False))

    def _track(self, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        for tracker in self.trackers:
            tracker.update_state(losses[tracker.name])
        return {t.name: t.result() for t in self.trackers}

    @property
    def metrics(self):
        return list(self.trackers)

    def get_config(self):
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SupervisedTrainer(ReconTrainer):
    """Supervised training to the fully sampled reference (the oracle; also the dual-UNet's training).

    Args:
        network: reconstruction network.
        loss: ``"mse"`` or ``"l1"`` (:func:`supervised_loss`).
    """

    def __init__(self, network, loss: str = "mse", **kwargs):
        if loss not in SUPERVISED_LOSSES:
            raise ValueError(f"loss: expected one of {SUPERVISED_LOSSES}, received {loss!r}")
        super().__init__(network, **kwargs)
        self.loss_kind = loss

    def compute_losses(self, data, training):
        recon = self.reconstruct(data["x"], data["y"], data["mask"], data["coil_maps"], training=training)
        return {"loss": supervised_loss(recon, data["reference"], self.loss_kind)}

    def get_config(self):
        return {**super().get_config(), "loss": self.loss_kind}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SSDUTrainer(ReconTrainer):
    """SSDU: k-space splitting into a DC part and a held-out loss part, drawn anew every step.

    Args:
        network: reconstruction network.
        split_ratio, selection, center_lines, std_scale: see :func:`ssdu_split`.
    """

    loss_names = ("loss", "held_out_fraction")

    def __init__(self, network, split_ratio: float = 0.6, selection: str = "gaussian", center_lines: int = 4,
                 std_scale: float = 4.0, **kwargs):
        ssdu_split(tf.ones([1, 1, 1, 8, 1]), [0, 0], split_ratio, selection, center_lines, std_scale)  # validates
        super().__init__(network, **kwargs)
        self.split_ratio = float(split_ratio)
        self.selection = selection
        self.center_lines = int(center_lines)
        self.std_scale = float(std_scale)

    def compute_losses(self, data, training):
        y, mask, maps = data["y"], data["mask"], data["coil_maps"]
        dc_mask, loss_mask = ssdu_split(mask, self.step_seed(training), self.split_ratio, self.selection,
                                        self.center_lines, self.std_scale)
        y_dc = mri.apply_mask(y, dc_mask)
        recon = self.reconstruct(mri.adjoint(y_dc, dc_mask, maps), y_dc, dc_mask, maps, training=training)
        held_out = tf.reduce_sum(loss_mask) / tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32)), 1.0)
        return {"loss": ssdu_loss(recon, y, loss_mask, maps), "held_out_fraction": held_out}

    def get_config(self):
        return {**super().get_config(), "split_ratio": self.split_ratio, "selection": self.selection,
                "center_lines": self.center_lines, "std_scale": self.std_scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class EITrainer(ReconTrainer):
    """Equivariant imaging: measurement consistency + ``ei_weight`` x equivariance under random transforms.

    Args:
        network: reconstruction network.
        transform: a key of :data:`reconstruction.transforms.TRANSFORMS` (``rotate`` for EI-R, ``ddei`` for DDEI).
        ei_weight: weight of the equivariance loss (1, deepinv's default).
    """

    loss_names = ("loss", "mc_loss", "ei_loss")

    def __init__(self, network, transform: str = "ddei", ei_weight: float = 1.0, **kwargs):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform: expected one of {list(TRANSFORMS)}, received {transform!r}")
        if not (math.isfinite(float(ei_weight)) and float(ei_weight) >= 0):
            raise ValueError(f"ei_weight: expected a non-negative number, received {ei_weight!r}")
        super().__init__(network, **kwargs)
        self.transform_name = transform
        self.transform = make_transform(transform)
        self.ei_weight = float(ei_weight)

    def compute_losses(self, data, training):
        x, y, mask, maps = data["x"], data["y"], data["mask"], data["coil_maps"]
        x1 = self.reconstruct(x, y, mask, maps, training=training)
        mc = measurement_consistency_loss(x1, y, mask, maps)
        x2 = self.transform(x1, self.step_seed(training))
        y2 = mri.forward(x2, mask, maps)
        x3 = self.reconstruct(mri.adjoint(y2, mask, maps), y2, mask, maps, training=training)
        ei = tf.reduce_mean(mri.abs2(x3 - x2))
        return {"loss": mc + self.ei_weight * ei, "mc_loss": mc, "ei_loss": ei}

    def get_config(self):
        return {**super().get_config(), "transform": self.transform_name, "ei_weight": self.ei_weight}


def count_params(variables: list[Any]) -> int:
    """Number of scalars in ``variables``."""
    return int(sum(math.prod(int(d) for d in v.shape) for v in variables))
