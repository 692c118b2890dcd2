"""Reconstruction methods by name: a network, an objective and the training data each needs.

Every method trains in the one engine (:class:`utils.engine.Engine`), so distribution, mixed precision,
recompute, the NaN guard, checkpoints and exact resume work the same for all. :data:`METHODS` maps
``model.method`` to a :class:`Method` row:

| method | network | objective | training data |
|---|---|---|---|
| ``ssfl-recon`` | ``SSFLRecon`` (frozen FE features) | ``SSFLObjective`` | two re-undersampled views |
| ``supervised`` | ``UnrolledNet`` | ``SupervisedObjective`` | acquisition + reference |
| ``ssdu`` | ``UnrolledNet`` | ``SSDUObjective`` | acquisition |
| ``ei`` / ``ei-r`` / ``ddei`` | ``UnrolledNet`` | ``EIObjective`` (``ei_transform`` / rotate / ddei) | acquisition |
| ``dual-unet`` | ``DualUNetResNet`` | ``DualUNetObjective`` (supervised) | own vd-random masks + reference |
| ``t-ssdu`` / ``t-ssdu*`` | backbone | ``TSSDUObjective`` (Gaussian k-t splitting; * = 5 split inputs at test) | acquisition |
| ``phase2phase`` | backbone | ``Phase2PhaseObjective`` (even frames in, odd frames as target) | acquisition |
| ``ddei-cpab`` | backbone | ``NoisyEIObjective`` (MC + EI with DDEI's ``(cpab | rotate) | shift-time``) | acquisition |
| ``ddei-sure`` / ``ei-r-sure`` | backbone | ``NoisyEIObjective`` (SURE + EI, DDEI's transforms / rotations) | acquisition |

"backbone" (every method but SSFL-Recon, whose network is the feature-assisted UNet, and the dual-UNet) is
``model.backbone``: ``unet`` (:class:`UnrolledNet`) or ``crnn`` (:class:`reconstruction.crnn.CRNN`, DDEI's).
``model.noise_sigma`` > 0 adds Gaussian measurement noise to the acquisition every step for every method trained
on the acquisition (:class:`reconstruction.ssl_objectives.MeasurementNoise`; the SURE/EI objectives draw their own).

"Acquisition" is :func:`data_loader.pipelines.acquired_dataset`: the base mask of SSFL-Recon's pipeline
(``data.mask_kind`` at ``data.start_r``, seed 10), or masks at ``model.train_accelerations``. The dual-UNet trains,
as in its project, on variable-density random masks with acceleration 5 and 11 central lines (capped at half the
lines of a frame for small images), a different mask per frame (``model.dual_unet_masks``: a new draw per example
and epoch, or one fixed mask for the whole data set as the project), and its input is the coil-combined
zero-filled image ``A^H y`` (one complex channel: the single-coil view of the data).

Adding a method is one :class:`utils.engine.Objective` and one row here (README, "Adding a method").
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import keras

from data_loader import pipelines
from reconstruction.baselines import EIObjective, SSDUObjective, SupervisedObjective, UnrolledNet
from reconstruction.crnn import CRNN
from reconstruction.dual_unet import DualUNetObjective, DualUNetResNet
from reconstruction.model import SSFLObjective, SSFLRecon
from reconstruction.ssl_objectives import MeasurementNoise, NoisyEIObjective, Phase2PhaseObjective, TSSDUObjective
from utils.complex_layers import require_conv_dtype
from utils.engine import Engine, Objective
from utils.schema import ExperimentConfig, register_choices
from utils.training import steps_for

# the dual-UNet project's training masks
DUAL_UNET_ACCELERATION = 5.0
DUAL_UNET_CENTER_LINES = 11


# ------------------------------------------------------------------------------------------- networks
def ssfl_network(cfg: ExperimentConfig) -> SSFLRecon:
    m = cfg.model
    return SSFLRecon(m.num_iter, m.feature_method, unet=m.unet_kwargs(cfg.train.mixed_precision),
                     recompute=cfg.train.recompute, name="ssfl_recon")


def backbone_network(cfg: ExperimentConfig) -> keras.Model:
    """The baselines' network, ``model.backbone``: ``unet`` = the SSFL-Recon reconstruction network without FE
    features (trained with the true gradient of the max-pooling; ``model.pool_gradient`` is for FE-Net/SSFL-Recon),
    or ``crnn`` = DDEI's CRNN (``model.crnn_cascades``, ``model.crnn_channels``)."""
    m = cfg.model
    if m.backbone == "crnn":
        return CRNN(num_cascades=m.crnn_cascades, chans=m.crnn_channels, name="crnn")
    unet = {**m.unet_kwargs(cfg.train.mixed_precision), "pool_gradient": "complex"}
    return UnrolledNet(m.num_iter, unet=unet, recompute=cfg.train.recompute, name="unrolled_net")


def dual_unet_network(cfg: ExperimentConfig) -> DualUNetResNet:
    m = cfg.model
    return DualUNetResNet(int(cfg.data.size[0]), filters=m.dual_unet_filters, num_levels=m.dual_unet_levels,
                          dropout=m.dual_unet_dropout, dropout_levels=m.dual_unet_dropout_levels,
                          output_mode=m.dual_unet_output, variant=m.dual_unet_variant,
                          data_consistency=m.dual_unet_dc, name="dual_unet")


# ------------------------------------------------------------------------------------------ objectives
def dual_unet_objective(cfg: ExperimentConfig) -> DualUNetObjective:
    m = cfg.model
    total_steps = 0
    if m.dual_unet_lr_schedule != "constant":
        if not cfg.train.steps_per_epoch:
            pipelines.ensure_synthetic_data(cfg.data)
        per_epoch = cfg.train.steps_per_epoch or steps_for(cfg, pipelines.num_examples(cfg.data, "train"))
        total_steps = per_epoch * cfg.train.epochs
    return DualUNetObjective(loss=m.supervised_loss, weight_decay=m.dual_unet_weight_decay,
                             lr_schedule=m.dual_unet_lr_schedule, total_steps=total_steps)


def ei_objective(transform: str | None) -> Callable[[ExperimentConfig], Objective]:
    def build(cfg: ExperimentConfig) -> Objective:
        return EIObjective(transform=transform or cfg.model.ei_transform, ei_weight=cfg.model.ei_weight)

    return build


def noisy_ei_objective(transform: str, mc_loss: str) -> Callable[[ExperimentConfig], Objective]:
    def build(cfg: ExperimentConfig) -> Objective:
        return NoisyEIObjective(transform=transform, ei_weight=cfg.model.ei_weight, noise_sigma=cfg.model.noise_sigma,
                                mc_loss=mc_loss, tau=cfg.model.sure_tau)

    return build


def t_ssdu_objective(test_splits: bool) -> Callable[[ExperimentConfig], Objective]:
    def build(cfg: ExperimentConfig) -> Objective:
        return TSSDUObjective(split_ratio=cfg.model.ssdu_split_ratio, eval_split_input=test_splits, eval_samples=5)

    return build


@dataclass(frozen=True)
class Method:
    """A trainable method: ``network(cfg)`` and ``objective(cfg)`` build its parts; ``data`` names its training
    data (``views``: SSFL-Recon's re-undersampled pairs, ``acquired``: acquisition + reference, ``dual-unet``: the
    dual-UNet's own masks + reference); ``views`` is the number of network passes per step (thread pools)."""

    network: Callable[[ExperimentConfig], keras.Model]
    objective: Callable[[ExperimentConfig], Objective]
    data: str
    views: int = 1


METHODS: dict[str, Method] = {
    "ssfl-recon": Method(ssfl_network, lambda cfg: SSFLObjective(cfg.model.recon_loss), "views", views=2),
    "supervised": Method(backbone_network, lambda cfg: SupervisedObjective(cfg.model.supervised_loss), "acquired"),
    "ssdu": Method(backbone_network, lambda cfg: SSDUObjective(
        cfg.model.ssdu_split_ratio, cfg.model.ssdu_split, cfg.model.ssdu_center_lines), "acquired"),
    "ei": Method(backbone_network, ei_objective(None), "acquired"),
    "ei-r": Method(backbone_network, ei_objective("rotate"), "acquired"),
    "ddei": Method(backbone_network, ei_objective("ddei"), "acquired"),
    "dual-unet": Method(dual_unet_network, dual_unet_objective, "dual-unet"),
    "t-ssdu": Method(backbone_network, t_ssdu_objective(False), "acquired"),
    "t-ssdu*": Method(backbone_network, t_ssdu_objective(True), "acquired"),
    "phase2phase": Method(backbone_network, lambda cfg: Phase2PhaseObjective(), "acquired"),
    "ddei-cpab": Method(backbone_network, noisy_ei_objective("ddei-cpab", "mc"), "acquired"),
    "ddei-sure": Method(backbone_network, noisy_ei_objective("ddei-cpab", "sure"), "acquired"),
    "ei-r-sure": Method(backbone_network, noisy_ei_objective("rotate", "sure"), "acquired"),
}
METHOD_NAMES = tuple(METHODS)
register_choices("model.method", METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"model.method: unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def build_objective(cfg: ExperimentConfig) -> Objective:
    """The objective of ``cfg.model.method``; with ``model.noise_sigma`` > 0 and training on the acquisition, on
    noisy measurements (objectives that draw their own noise, the SURE/EI family, excepted)."""
    method = get_method(cfg.model.method)
    objective = method.objective(cfg)
    if cfg.model.noise_sigma > 0:
        if method.data != "acquired":
            raise ValueError(f"model.noise_sigma: measurement noise is for the methods trained on the acquisition, "
                             f"not {cfg.model.method!r}")
        if not isinstance(objective, NoisyEIObjective):
            objective = MeasurementNoise(objective, cfg.model.noise_sigma)
    return objective


def build_method_model(cfg: ExperimentConfig) -> Engine:
    """The engine of ``cfg.model.method`` (network + objective) with all weights created (ready for loading)."""
    method = get_method(cfg.model.method)
    if cfg.model.backbone != "unet" and method.network is not backbone_network:
        raise ValueError(f"model.backbone: {cfg.model.backbone!r} is for the baselines; {cfg.model.method!r} has its "
                         "own network (use model.backbone: unet)")
    require_conv_dtype(cfg.train.mixed_precision)
    engine = Engine(method.network(cfg), build_objective(cfg), seed=cfg.train.seed,
                    name=cfg.model.method.replace("-", "_").replace("*", "_star"))
    engine.build_all()
    return engine


def method_dataset(cfg: ExperimentConfig, split: str, seed: int):
    """Training/validation stream of ``cfg.model.method`` (see :class:`Method`), ``train.batch_size`` examples per
    replica in training, 1 in validation."""
    kind = get_method(cfg.model.method).data
    batch = cfg.train.batch_size if split == "train" else 1
    if kind == "views":
        return pipelines.recon_dataset(cfg.data, split, seed=seed, batch_size=batch)
    if kind == "dual-unet":
        if cfg.model.dual_unet_masks == "fixed":  # one mask (seed 10) for the whole data set, as the project
            data = dataclasses.replace(cfg.data, start_r=DUAL_UNET_ACCELERATION)
            return pipelines.acquired_dataset(data, split, seed=seed, batch_size=batch, mask_kind="vd-random",
                                              num_center=DUAL_UNET_CENTER_LINES)
        return pipelines.acquired_dataset(cfg.data, split, seed=seed, batch_size=batch, mask_kind="vd-random",
                                          accelerations=[DUAL_UNET_ACCELERATION], num_center=DUAL_UNET_CENTER_LINES)
    return pipelines.acquired_dataset(cfg.data, split, seed=seed, batch_size=batch,
                                      accelerations=cfg.model.train_accelerations or None)
