"""Baselines from related work: one unrolled network, several training objectives.

Architecture (:class:`UnrolledNet`): the SSFL-Recon reconstruction network without FE features,
``num_iter`` iterations of ``x <- DC_i(x - tau_i * UNet_i(x) / num_iter)`` with the project's complex 2D+t UNet
(:class:`utils.unet.ComplexUNet2Dt`), non-negative ``tau_i`` (init 0.1) and a data-consistency layer from
:data:`DC_LAYERS` (gradient step ``DCGD`` as SSFL-Recon, or the CG proximal step ``DCPM``).

Training objectives (:class:`utils.engine.Objective`) turn a batch into losses for :class:`utils.engine.Engine`,
which trains any network called as ``network(x, y, mask, coil_maps, training=...)``. Batches are dicts
``{"x", "y", "mask", "coil_maps", "reference"}`` of the acquired data (``data_loader.pipelines.acquired_dataset``);
calling an engine as ``engine({"x", "y", "mask", "coil_maps"})`` reconstructs with all acquired data, so every
method plugs into ``evaluation.evaluate.model_method``.

* :class:`SupervisedObjective`: loss to the fully sampled reference, ``mean |x_hat - x_ref|^2`` (``"mse"``) or
  ``mean |x_hat - x_ref|`` (``"l1"``).
* :class:`SSDUObjective` (Yaman et al., MRM 2020): per step the acquired points Omega are split into a disjoint
  data-consistency set Theta and loss set Lambda (:func:`ssdu_split`); the network sees ``y_Theta`` only and the loss
  is SSDU's normalised l1-l2 on the held-out k-space, ``||r||_2 / ||y_Lambda||_2 + ||r||_1 / ||y_Lambda||_1`` with
  ``r = A_Lambda x_hat - y_Lambda`` (norms over real and imaginary parts, as SSDU's real-valued tensors). SSDU
  defines rho = |Lambda| / |Omega| and uses 0.4; here ``split_ratio`` = |Theta| / |Omega| = 0.6 (deepinv's
  ``SplittingLoss`` convention, used by DDEI with 0.6), the same split. Test time uses all acquired data.
* :class:`EIObjective` (Chen, Tachella & Davies, ICCV 2021; DDEI: Wang & Davies, ISBI 2025): measurement consistency
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

from reconstruction.transforms import TRANSFORMS, make_transform
from utils import mri
from utils.complex_layers import PACKAGE
from utils.data_consistency import DCGD, DCPM, Scalar
from utils.engine import Objective
from utils.schema import register_choices
from utils.unet import ComplexUNet2Dt
from utils.unrolled import DEFAULT_UNET, residual_update, run_iteration

DC_LAYERS = {"gd": DCGD, "pm": DCPM}
SUPERVISED_LOSSES = ("mse", "l1")
SSDU_SELECTIONS = ("uniform", "gaussian")
register_choices("model.supervised_loss", SUPERVISED_LOSSES)
register_choices("model.ssdu_split", SSDU_SELECTIONS)


# ------------------------------------------------------------------------------------------- network
@keras.saving.register_keras_serializable(package=PACKAGE)
class UnrolledNet(keras.Model):
    """Unrolled reconstruction: ``num_iter`` times ``x <- DC_i(x - tau_i * UNet_i(x) / num_iter)``.

    Args:
        num_iter: unrolled iterations (each with its own UNet, tau and DC weight).
        unet: keyword arguments of :class:`ComplexUNet2Dt` (defaults as SSFL-Recon); no bottleneck feature.
        dc: data-consistency layer, a key of :data:`DC_LAYERS` (``"gd"``: gradient step, as SSFL-Recon).
        tau_init: initial ``tau``.
        dc_weight_init: initial DC weight.
        recompute: gradient checkpointing of each iteration in training (:func:`utils.unrolled.run_iteration`).
        **kwargs: passed to ``keras.Model``.

    Call: ``net(x, y, mask, coil_maps)`` with x (B,T,X,Y,1) complex64, y (B,T,X,Y,C), mask (B,T,1,Y,1), coil maps
    (B,1,X,Y,C) → (B,T,X,Y,1) complex64.
    """

    def __init__(self, num_iter: int = 2, unet: dict | None = None, dc: str = "gd", tau_init: float = 0.1,
                 dc_weight_init: float = 1.0, recompute: bool = False, **kwargs):
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
        self.recompute = bool(recompute)
        self.unets = [ComplexUNet2Dt(**self.unet_config, name=f"unet_{i}") for i in range(self.num_iter)]
        self.taus = [Scalar(self.tau_init, name=f"tau_{i}") for i in range(self.num_iter)]
        # the gradient step follows model.numerics (the CG proximal step has one implementation)
        dc_options = {"numerics": self.unet_config.get("numerics", "faithful")} if dc == "gd" else {}
        self.dcs = [DC_LAYERS[dc](self.dc_weight_init, name=f"dc_{i}", **dc_options) for i in range(self.num_iter)]

    def build(self, input_shape=None):
        for unet, tau, dc in zip(self.unets, self.taus, self.dcs):
            unet.build((None, None, None, None, 1))
            tau.build()
            dc.build()
        self.built = True

    def call(self, x, y, mask, coil_maps, training=None):
        mri.check_operator_inputs(image=x, kspace=y, mask=mask, coil_maps=coil_maps)
        for unet, tau, dc in zip(self.unets, self.taus, self.dcs):
            def iteration(x, unet=unet, tau=tau, dc=dc):
                return residual_update(x, unet(x), tau, dc, self.num_iter, y, mask, coil_maps)

            x = run_iteration(iteration, x, bool(self.recompute and training))
        return x

    def get_config(self):
        return {**super().get_config(), "num_iter": self.num_iter, "unet": self.unet_config, "dc": self.dc,
                "tau_init": self.tau_init, "dc_weight_init": self.dc_weight_init, "recompute": self.recompute}


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


# ----------------------------------------------------------------------------------------- objectives
class SupervisedObjective(Objective):
    """Supervised training to the fully sampled reference (the oracle; also the dual-UNet's training).

    Args:
        loss: ``"mse"`` or ``"l1"`` (:func:`supervised_loss`).
    """

    def __init__(self, loss: str = "mse"):
        if loss not in SUPERVISED_LOSSES:
            raise ValueError(f"loss: expected one of {SUPERVISED_LOSSES}, received {loss!r}")
        self.loss_kind = loss

    def losses(self, network, batch, seed, training):
        recon = network(batch["x"], batch["y"], batch["mask"], batch["coil_maps"], training=training)
        return {"loss": supervised_loss(recon, batch["reference"], self.loss_kind)}

    def get_config(self):
        return {**super().get_config(), "loss": self.loss_kind}


class SSDUObjective(Objective):
    """SSDU: k-space splitting into a DC part and a held-out loss part, drawn anew every step.

    Args:
        split_ratio, selection, center_lines, std_scale: see :func:`ssdu_split`.
    """

    loss_names = ("loss", "held_out_fraction")

    def __init__(self, split_ratio: float = 0.6, selection: str = "gaussian", center_lines: int = 4,
                 std_scale: float = 4.0):
        ssdu_split(tf.ones([1, 1, 1, 8, 1]), [0, 0], split_ratio, selection, center_lines, std_scale)  # validates
        self.split_ratio = float(split_ratio)
        self.selection = selection
        self.center_lines = int(center_lines)
        self.std_scale = float(std_scale)

    def losses(self, network, batch, seed, training):
        y, mask, maps = batch["y"], batch["mask"], batch["coil_maps"]
        dc_mask, loss_mask = ssdu_split(mask, seed, self.split_ratio, self.selection, self.center_lines,
                                        self.std_scale)
        y_dc = mri.apply_mask(y, dc_mask)
        recon = network(mri.adjoint(y_dc, dc_mask, maps), y_dc, dc_mask, maps, training=training)
        held_out = tf.reduce_sum(loss_mask) / tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32)), 1.0)
        return {"loss": ssdu_loss(recon, y, loss_mask, maps), "held_out_fraction": held_out}

    def get_config(self):
        return {**super().get_config(), "split_ratio": self.split_ratio, "selection": self.selection,
                "center_lines": self.center_lines, "std_scale": self.std_scale}


class EIObjective(Objective):
    """Equivariant imaging: measurement consistency + ``ei_weight`` x equivariance under random transforms.

    Args:
        transform: a key of :data:`reconstruction.transforms.TRANSFORMS` (``rotate`` for EI-R, ``ddei`` for DDEI).
        ei_weight: weight of the equivariance loss (1, deepinv's default).
    """

    loss_names = ("loss", "mc_loss", "ei_loss")

    def __init__(self, transform: str = "ddei", ei_weight: float = 1.0):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform: expected one of {list(TRANSFORMS)}, received {transform!r}")
        if not (math.isfinite(float(ei_weight)) and float(ei_weight) >= 0):
            raise ValueError(f"ei_weight: expected a non-negative number, received {ei_weight!r}")
        self.transform_name = transform
        self.transform = make_transform(transform)
        self.ei_weight = float(ei_weight)

    def losses(self, network, batch, seed, training):
        x, y, mask, maps = batch["x"], batch["y"], batch["mask"], batch["coil_maps"]
        x1 = network(x, y, mask, maps, training=training)
        mc = measurement_consistency_loss(x1, y, mask, maps)
        x2 = self.transform(x1, seed)
        y2 = mri.forward(x2, mask, maps)
        x3 = network(mri.adjoint(y2, mask, maps), y2, mask, maps, training=training)
        ei = tf.reduce_mean(mri.abs2(x3 - x2))
        return {"loss": mc + self.ei_weight * ei, "mc_loss": mc, "ei_loss": ei}

    def get_config(self):
        return {**super().get_config(), "transform": self.transform_name, "ei_weight": self.ei_weight}


def count_params(variables: list[Any]) -> int:
    """Number of scalars in ``variables``."""
    return int(sum(math.prod(int(d) for d in v.shape) for v in variables))
