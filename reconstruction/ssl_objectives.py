"""DDEI's self-supervised competitors as :class:`utils.engine.Objective` subclasses, plus measurement noise and SURE.

Source convention: DDEI's ``train.py`` (Wang & Davies, ISBI 2025) and the deepinv losses it calls. Loss values use
the project's convention (``mean |.|^2`` over complex elements, as :func:`measurement_consistency_loss`), except SURE,
which is defined per real number (see below) so that its ``-sigma^2`` term stays unbiased.

* Measurement noise (``noise_sigma``): deepinv's ``GaussianNoise`` on the real view, masked as ``DynamicMRI.noise``:
  ``y <- y + sigma M (n_re + i n_im)`` with standard-normal ``n`` drawn anew every step (:func:`add_measurement_noise`,
  :class:`MeasurementNoise` wraps any objective; the zero-filled input becomes ``A^H y``).
* t-SSDU (:class:`TSSDUObjective`): deepinv's ``SplittingLoss(split_ratio=0.6,
  mask_generator=GaussianSplittingMaskGenerator((2, T, X, Y), 0.6))`` with its MSE metric. The generator splits the
  *pointwise* k-space mask of each frame (every (kx, ky) point, pixelwise over the 2 channels): the loss set takes
  ``ceil(|Omega_t| (1 - split_ratio))`` acquired points of frame t, drawn without replacement with probabilities
  proportional to ``exp(-((kx - X//2)^2 / (2 (X/s)^2) + (ky - Y//2)^2 / (2 (Y/s)^2)))`` (``s = std_scale`` = 4), never
  from the ``center_block`` (8 x 8) around ``(X//2, Y//2)`` (rows ``X//2 - 4 .. X//2 + 3``); the rest is the input
  (data-consistency) set. The network sees ``y_1 = M_1 y`` through ``A_1 = M_1 A`` and the loss is
  ``mean |M_2 (A x_hat - y)|^2 / mean(M_2)`` (``m / m_2`` normalisation, ``mean(M_2)`` over the k-space shape).
  ``"t-ssdu"`` reconstructs from all data at test time (``eval_split_input=False``); ``"t-ssdu*"`` averages
  ``eval_samples`` (5) reconstructions from fresh splits (``eval_split_input=True``, ``eval_n_samples=5``).
* Phase2Phase (:class:`Phase2PhaseObjective`, Eldeniz et al. 2021; deepinv ``Phase2PhaseLoss``): the even frames
  (t = 0, 2, ...) are the network input, the odd frames the target: the network reconstructs the ``ceil(T/2)`` even
  frames from their data only (deepinv removes the other frames), and frame ``2k`` of the output is compared with the
  measurements of frame ``2k + 1``: ``mean |A_odd x_hat[:, :T//2] - y_odd|^2 / mean(M_2)``, ``M_2`` the odd-frame mask
  on the full time axis (with odd T the last even frame has no partner and is left out of the loss). At test time all
  frames are the input.
* SURE (:func:`sure_gaussian_loss`, deepinv ``SureGaussianLoss(sigma, tau)``; DDEI: ``tau = 0.1``): per example, on
  the real view of the k-space (m real numbers),
  ``(1/m) ||A f(y) - y||^2 - sigma^2 + (2 sigma^2 / (m tau)) b^T (A f(y + tau b) - A f(y))``, ``b ~ N(0, I)``.
  deepinv averages over every k-space number, acquired or not (``average="all"``); ``average="acquired"`` takes m
  = the acquired real numbers, the unbiased estimate of ``(1/m) ||A f(y) - A x||^2`` (the two differ by a scale and a
  constant, so they have the same minimiser). The batch mean is returned.
* DDEI with noise / SURE (:class:`NoisyEIObjective`): ``MC + EI`` (deepinv ``MCLoss`` + ``EILoss(T)``), or with
  ``mc_loss="sure"`` SURE in place of MC; as in DDEI (``InterleavedLossScheduler``) the two terms are then used on
  alternate steps (even optimizer steps SURE, odd steps EI) to save memory. The EI branch re-measures with noise:
  ``x3 = f(A T(x1) + noise)`` (deepinv's ``physics(x2)``). ``"ddei-sure"``, ``"ei-r-sure"``.
"""
from __future__ import annotations

import math


import tensorflow as tf

from reconstruction.transforms import TRANSFORMS, make_transform
from utils import mri
from utils.engine import Objective, unpack_inputs

SURE_AVERAGES = ("all", "acquired")
MC_LOSSES = ("mc", "sure")


# ------------------------------------------------------------------------------------------- plain ops
def _seeds(seed, n: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def _complex_normal(shape, seed) -> tf.Tensor:
    parts = tf.random.stateless_normal(tf.concat([[2], shape], axis=0), seed=tf.cast(seed, tf.int64))
    return tf.complex(parts[0], parts[1])


def add_measurement_noise(kspace: tf.Tensor, mask: tf.Tensor, sigma: float, seed) -> tf.Tensor:
    """``y + sigma M (n_re + i n_im)``, standard-normal ``n`` (deepinv's masked ``GaussianNoise``)."""
    if float(sigma) == 0.0:
        return kspace
    noise = _complex_normal(tf.shape(kspace), seed)
    return kspace + mri.apply_mask(mri.complex_scale(noise, float(sigma)), mask)


def noisy_batch(batch: dict, sigma: float, seed) -> dict:
    """``batch`` with noisy ``y`` and the zero-filled ``x = A^H y`` of it (other keys unchanged)."""
    if float(sigma) == 0.0:
        return batch
    y = add_measurement_noise(batch["y"], batch["mask"], sigma, seed)
    return {**batch, "y": y, "x": mri.adjoint(y, batch["mask"], batch["coil_maps"])}


def gaussian_split(mask: tf.Tensor, size_x, seed, split_ratio: float = 0.6, std_scale: float = 4.0,
                   center_block: tuple[int, int] = (8, 8)) -> tuple[tf.Tensor, tf.Tensor]:
    """deepinv's ``GaussianSplittingMaskGenerator`` for dynamic data (module docstring), per example and frame.

    Args:
        mask: (B,T,1,Y,1) or (B,T,X,Y,1) 0/1 acquired mask (broadcast over X to pointwise).
        size_x: X (readout size).
        seed: stateless seed (2,).
        split_ratio: fraction kept for the input (0.6); ``ceil(n (1 - split_ratio))`` points go to the loss set.
        std_scale: the Gaussian's std is ``size / std_scale`` along each axis.
        center_block: (kx, ky) size of the central block never held out.

    Returns:
        (input_mask M_1, loss_mask M_2), both (B,T,X,Y,1) float32, disjoint, summing to the pointwise mask.
    """
    if not 0.0 < float(split_ratio) < 1.0:
        raise ValueError(f"split_ratio: expected a number in (0, 1), received {split_ratio}")
    if not float(std_scale) > 0:
        raise ValueError(f"std_scale: expected > 0, received {std_scale}")
    block = tuple(int(b) for b in center_block)
    if len(block) != 2 or min(block) < 0:
        raise ValueError(f"center_block: expected two sizes >= 0, received {center_block}")
    mask = tf.cast(mask, tf.float32)
    if mask.shape.rank is not None and mask.shape.rank != 5:
        raise ValueError(f"mask: expected (B,T,1,Y,1) or (B,T,X,Y,1), received shape {tuple(mask.shape)}")
    shape = tf.shape(mask)
    batch, frames, lines = shape[0], shape[1], shape[3]
    size_x = tf.cast(size_x, tf.int32)
    full = mask * tf.ones(tf.stack([batch, frames, size_x, lines, 1]), tf.float32)
    kx = tf.cast(tf.range(size_x), tf.float32)[:, None]
    ky = tf.cast(tf.range(lines), tf.float32)[None, :]
    cx, cy = tf.cast(size_x // 2, tf.float32), tf.cast(lines // 2, tf.float32)
    sx = tf.cast(size_x, tf.float32) / float(std_scale)
    sy = tf.cast(lines, tf.float32) / float(std_scale)
    log_weight = -((kx - cx) ** 2 / (2 * sx ** 2) + (ky - cy) ** 2 / (2 * sy ** 2))  # (X, Y)
    in_block = ((kx >= cx - block[0] // 2) & (kx < cx + block[0] // 2)
                & (ky >= cy - block[1] // 2) & (ky < cy + block[1] // 2))
    flat = tf.reshape(full, tf.stack([batch, frames, size_x * lines]))
    eligible = (flat > 0.5) & tf.reshape(tf.logical_not(in_block), [1, 1, -1])
    uniform = tf.random.stateless_uniform(tf.shape(flat), seed=tf.cast(seed, tf.int64), minval=1e-7, maxval=1.0)
    keys = tf.reshape(log_weight, [1, 1, -1]) - tf.math.log(-tf.math.log(uniform))  # Gumbel top-k = sampling
    keys = tf.where(eligible, keys, tf.fill(tf.shape(keys), -float("inf")))      # without replacement
    acquired = tf.reduce_sum(flat, axis=-1)
    wanted = tf.math.ceil(acquired * (1.0 - float(split_ratio)) - 1e-4)  # float slack so 10 * 0.4 is 4
    count = tf.cast(tf.minimum(wanted, tf.reduce_sum(tf.cast(eligible, tf.float32), axis=-1)), tf.int32)
    ordered = tf.sort(keys, axis=-1, direction="DESCENDING")
    threshold = tf.gather(ordered, tf.maximum(count - 1, 0)[..., None], axis=-1, batch_dims=2)
    chosen = eligible & (keys >= threshold) & (count > 0)[..., None]
    loss_mask = tf.reshape(tf.cast(chosen, tf.float32), tf.shape(full))
    return full - loss_mask, loss_mask


def phase2phase_split(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """deepinv's ``Phase2PhaseSplittingMaskGenerator``: (even-frame mask, odd-frame mask) on the full time axis."""
    mask = tf.cast(mask, tf.float32)
    even = tf.cast(tf.math.floormod(tf.range(tf.shape(mask)[1]), 2) == 0, tf.float32)
    even = tf.reshape(even, [1, -1, 1, 1, 1])
    return mask * even, mask * (1.0 - even)


def splitting_loss(recon: tf.Tensor, kspace: tf.Tensor, loss_mask: tf.Tensor, coil_maps: tf.Tensor) -> tf.Tensor:
    """``mean |M_2 (A x - y)|^2 / mean(M_2)`` (deepinv ``SplittingLoss`` with MSE, ``normalize_loss=True``)."""
    loss_mask = tf.cast(loss_mask, tf.float32)
    residual = mri.forward(recon, loss_mask, coil_maps) - mri.apply_mask(kspace, loss_mask)
    fraction = tf.reduce_mean(loss_mask * tf.ones_like(tf.math.real(kspace)))
    return tf.reduce_mean(mri.abs2(residual)) / tf.maximum(fraction, 1e-12)


def mc_loss(recon, kspace, mask, coil_maps) -> tf.Tensor:
    """``mean |A x - y|^2`` over the k-space (deepinv's ``MCLoss``, project convention)."""
    return tf.reduce_mean(mri.abs2(mri.forward(recon, mask, coil_maps) - mri.apply_mask(kspace, mask)))


def sure_gaussian_loss(measured_recon: tf.Tensor, measured_perturbed: tf.Tensor, kspace: tf.Tensor,
                       probe: tf.Tensor, mask: tf.Tensor, sigma: float, tau: float,
                       average: str = "all") -> tf.Tensor:
    """SURE for Gaussian noise from precomputed network outputs (module docstring), batch mean.

    Args:
        measured_recon: ``A f(y)`` (B,T,X,Y,C) complex.
        measured_perturbed: ``A f(y + tau b)``.
        kspace: ``y``.
        probe: ``b``, complex with standard-normal real and imaginary parts (masked or not: only acquired entries
            matter, the others multiply zeros).
        mask: acquired mask (for ``average="acquired"``).
        sigma: noise std per real number; tau: the Monte-Carlo step.
        average: ``"all"`` (deepinv) or ``"acquired"``.
    """
    if average not in SURE_AVERAGES:
        raise ValueError(f"average: expected one of {SURE_AVERAGES}, received {average!r}")
    axes = [1, 2, 3, 4]
    real_like = tf.ones_like(tf.math.real(kspace))
    if average == "all":
        count = 2.0 * tf.reduce_sum(real_like, axis=axes)
    else:
        count = 2.0 * tf.reduce_sum(tf.cast(mask, tf.float32) * real_like, axis=axes)
    count = tf.maximum(count, 1.0)
    fidelity = tf.reduce_sum(mri.abs2(measured_recon - kspace), axis=axes) / count
    inner = tf.math.real(tf.math.conj(probe) * (measured_perturbed - measured_recon))  # b^T d on the real view
    divergence = tf.reduce_sum(inner, axis=axes) / (count * float(tau))
    sigma2 = float(sigma) ** 2
    return tf.reduce_mean(fidelity - sigma2 + 2.0 * sigma2 * divergence)


# ------------------------------------------------------------------------------------------- objectives
class MeasurementNoise(Objective):
    """Any objective trained on noisy measurements: ``y + sigma M n`` drawn per step, ``x = A^H y`` (DDEI's
    ``--noise``). Inference is the wrapped objective's (noise at test time is the data's business).

    Args:
        objective: the wrapped :class:`Objective`.
        sigma: noise std per real number (0 = the wrapped objective unchanged).
    """

    def __init__(self, objective: Objective, sigma: float):
        if not (math.isfinite(float(sigma)) and float(sigma) >= 0):
            raise ValueError(f"sigma: expected a non-negative number, received {sigma!r}")
        self.objective = objective
        self.sigma = float(sigma)
        self.loss_names = objective.loss_names

    def losses(self, network, batch, seed, training):
        noise_seed, inner_seed = _seeds(seed, 2)
        return self.objective.losses(network, noisy_batch(batch, self.sigma, noise_seed), inner_seed, training)

    def infer(self, network, inputs, training=None):
        return self.objective.infer(network, inputs, training=training)

    def adjust_gradients(self, grads, variables, optimizer):
        return self.objective.adjust_gradients(grads, variables, optimizer)

    def get_config(self):
        return {**super().get_config(), "objective": self.objective.get_config(), "sigma": self.sigma}


class TSSDUObjective(Objective):
    """t-SSDU: SSDU with deepinv's Gaussian splitting of the k-t points and its MSE splitting loss.

    Args:
        split_ratio: fraction of the acquired points kept as input (DDEI: 0.6).
        std_scale, center_block: see :func:`gaussian_split` (deepinv defaults 4, (8, 8)).
        eval_split_input: test-time reconstruction averages ``eval_samples`` split inputs (``"t-ssdu*"``) instead
            of using all data (``"t-ssdu"``).
        eval_samples: splits averaged at test time (DDEI: 5).
    """

    loss_names = ("loss", "held_out_fraction")

    def __init__(self, split_ratio: float = 0.6, std_scale: float = 4.0, center_block: tuple[int, int] = (8, 8),
                 eval_split_input: bool = False, eval_samples: int = 5):
        gaussian_split(tf.ones([1, 1, 1, 4, 1]), 4, [0, 0], split_ratio, std_scale, center_block)  # validates
        if int(eval_samples) < 1:
            raise ValueError(f"eval_samples: expected >= 1, received {eval_samples}")
        self.split_ratio = float(split_ratio)
        self.std_scale = float(std_scale)
        self.center_block = tuple(int(b) for b in center_block)
        self.eval_split_input = bool(eval_split_input)
        self.eval_samples = int(eval_samples)

    def split(self, y, mask, seed):
        return gaussian_split(mask, tf.shape(y)[2], seed, self.split_ratio, self.std_scale, self.center_block)

    def _split_recon(self, network, y, mask, maps, seed, training):
        input_mask, loss_mask = self.split(y, mask, seed)
        y1 = mri.apply_mask(y, input_mask)
        return network(mri.adjoint(y1, input_mask, maps), y1, input_mask, maps, training=training), loss_mask

    def losses(self, network, batch, seed, training):
        y, mask, maps = batch["y"], batch["mask"], batch["coil_maps"]
        recon, loss_mask = self._split_recon(network, y, mask, maps, seed, training)
        acquired = tf.reduce_sum(tf.cast(mask, tf.float32) * tf.ones_like(loss_mask))
        held_out = tf.reduce_sum(loss_mask) / tf.maximum(acquired, 1.0)
        return {"loss": splitting_loss(recon, y, loss_mask, maps), "held_out_fraction": held_out}

    def infer(self, network, inputs, training=None):
        x, y, mask, maps = unpack_inputs(inputs)
        if not self.eval_split_input:
            return network(x, y, mask, maps, training=training)
        total = 0.0
        for sample in range(self.eval_samples):  # fixed seeds: the test-time reconstruction is deterministic
            recon, _ = self._split_recon(network, y, mask, maps, tf.constant([sample, -2], tf.int64), training)
            total = total + recon
        return mri.complex_scale(total, 1.0 / self.eval_samples)

    def get_config(self):
        return {**super().get_config(), "split_ratio": self.split_ratio, "std_scale": self.std_scale,
                "center_block": list(self.center_block), "eval_split_input": self.eval_split_input,
                "eval_samples": self.eval_samples}


class Phase2PhaseObjective(Objective):
    """Phase2Phase: reconstruct the even frames from their data, compare with the odd frames' measurements."""

    loss_names = ("loss",)

    def losses(self, network, batch, seed, training):
        y, mask, maps = batch["y"], tf.cast(batch["mask"], tf.float32), batch["coil_maps"]
        y_even, mask_even = y[:, ::2], mask[:, ::2]
        y_odd, mask_odd = y[:, 1::2], mask[:, 1::2]
        recon = network(mri.adjoint(y_even, mask_even, maps), y_even, mask_even, maps, training=training)
        pairs = tf.shape(y_odd)[1]
        residual = mri.forward(recon[:, :pairs], mask_odd, maps) - mri.apply_mask(y_odd, mask_odd)
        _, loss_mask = phase2phase_split(mask)
        fraction = tf.reduce_mean(loss_mask * tf.ones_like(tf.math.real(y[..., :1])))  # mean(M_2), full T
        return {"loss": tf.reduce_mean(mri.abs2(residual)) / tf.maximum(fraction, 1e-12)}


class NoisyEIObjective(Objective):
    """DDEI's EI family with measurement noise: MC or SURE, plus equivariance under a random transform.

    Args:
        transform: a key of :data:`reconstruction.transforms.TRANSFORMS` (DDEI: ``"ddei-cpab"``; EI-R: ``"rotate"``).
        ei_weight: weight of the equivariance term (deepinv's default 1).
        noise_sigma: std per real number of the noise added to ``y`` each step and to the EI re-measurement.
        mc_loss: ``"mc"`` (``mean |A x1 - y|^2``) or ``"sure"`` (:func:`sure_gaussian_loss`).
        tau: SURE's Monte-Carlo step (DDEI: 0.1; deepinv's default 0.01).
        sure_average: ``"all"`` (deepinv) or ``"acquired"``.
        interleave: alternate the two terms between steps (None: True with SURE and a non-zero ``ei_weight``, as
            DDEI's ``InterleavedLossScheduler``).
    """

    loss_names = ("loss", "mc_loss", "ei_loss")

    def __init__(self, transform: str = "ddei-cpab", ei_weight: float = 1.0, noise_sigma: float = 0.0,
                 mc_loss: str = "sure", tau: float = 0.1, sure_average: str = "all", interleave: bool | None = None):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform: expected one of {list(TRANSFORMS)}, received {transform!r}")
        if mc_loss not in MC_LOSSES:
            raise ValueError(f"mc_loss: expected one of {MC_LOSSES}, received {mc_loss!r}")
        if sure_average not in SURE_AVERAGES:
            raise ValueError(f"sure_average: expected one of {SURE_AVERAGES}, received {sure_average!r}")
        for name, value in (("ei_weight", ei_weight), ("noise_sigma", noise_sigma)):
            if not (math.isfinite(float(value)) and float(value) >= 0):
                raise ValueError(f"{name}: expected a non-negative number, received {value!r}")
        if not (math.isfinite(float(tau)) and float(tau) > 0):
            raise ValueError(f"tau: expected a positive number, received {tau!r}")
        self.transform_name = transform
        self.transform = make_transform(transform)
        self.ei_weight = float(ei_weight)
        self.noise_sigma = float(noise_sigma)
        self.mc_kind = mc_loss
        self.tau = float(tau)
        self.sure_average = sure_average
        default = mc_loss == "sure" and self.ei_weight > 0
        self.interleave = default if interleave is None else bool(interleave)

    def _mc(self, network, x1, y, mask, maps, seed, training):
        if self.mc_kind == "mc":
            return mc_loss(x1, y, mask, maps)
        probe = _complex_normal(tf.shape(y), seed)
        y_perturbed = y + mri.apply_mask(mri.complex_scale(probe, self.tau), mask)
        x_perturbed = network(mri.adjoint(y_perturbed, mask, maps), y_perturbed, mask, maps, training=training)
        return sure_gaussian_loss(mri.forward(x1, mask, maps), mri.forward(x_perturbed, mask, maps), y, probe, mask,
                                  self.noise_sigma, self.tau, self.sure_average)

    def _ei(self, network, x1, mask, maps, seed, training):
        transform_seed, noise_seed = _seeds(seed, 2)
        x2 = self.transform(x1, transform_seed)
        y2 = add_measurement_noise(mri.forward(x2, mask, maps), mask, self.noise_sigma, noise_seed)
        x3 = network(mri.adjoint(y2, mask, maps), y2, mask, maps, training=training)
        return tf.reduce_mean(mri.abs2(x3 - x2))

    def losses(self, network, batch, seed, training):
        noise_seed, mc_seed, ei_seed = _seeds(seed, 3)
        batch = noisy_batch(batch, self.noise_sigma, noise_seed)
        x, y, mask, maps = batch["x"], batch["y"], batch["mask"], batch["coil_maps"]
        x1 = network(x, y, mask, maps, training=training)
        if not (self.interleave and training):
            mc = self._mc(network, x1, y, mask, maps, mc_seed, training)
            ei = self._ei(network, x1, mask, maps, ei_seed, training) if self.ei_weight > 0 else tf.zeros([])
            return {"loss": mc + self.ei_weight * ei, "mc_loss": mc, "ei_loss": ei}
        # DDEI's InterleavedLossScheduler: even steps the MC/SURE term, odd steps the EI term (one branch is run)
        first = tf.equal(tf.math.floormod(tf.cast(seed, tf.int64)[1], 2), 0)
        zero = tf.zeros([])

        def mc_step():
            mc = self._mc(network, x1, y, mask, maps, mc_seed, training)
            return mc, mc, zero

        def ei_step():
            ei = self._ei(network, x1, mask, maps, ei_seed, training)
            return self.ei_weight * ei, zero, ei

        total, mc, ei = tf.cond(first, mc_step, ei_step)
        return {"loss": total, "mc_loss": mc, "ei_loss": ei}

    def get_config(self):
        return {**super().get_config(), "transform": self.transform_name, "ei_weight": self.ei_weight,
                "noise_sigma": self.noise_sigma, "mc_loss": self.mc_kind, "tau": self.tau,
                "sure_average": self.sure_average, "interleave": self.interleave}
