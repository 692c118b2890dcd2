"""Stage-2 training of any reconstruction method (``model.method``) in the one engine.

SSFL-Recon loads its frozen, pretrained FE-Net first (``train.pretrained_fe``) and checks after training that the
FE weights did not change; every other method is its registry row (:mod:`reconstruction.methods`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from data_loader import pipelines
from evaluation.figures import save_loss_curves
from reconstruction.baselines import count_params
from reconstruction.methods import build_method_model, get_method, method_dataset
from reconstruction.pretrained import load_feature_weights
from utils.engine import Engine
from utils.schema import ExperimentConfig
from utils.training import train_engine

log = logging.getLogger(__name__)


def build_recon_model(cfg: ExperimentConfig) -> Engine:
    """The engine of ``cfg.model.method`` with all weights created (SSFL-Recon's FE not loaded yet)."""
    return build_method_model(cfg)


def train_recon(cfg: ExperimentConfig, resume: str | None = None, verbose="auto") -> Path:
    """Trains stage 2 as configured; returns the run folder (final weights in ``model.weights.h5``)."""
    if cfg.stage != "recon":
        raise ValueError(f"config stage is {cfg.stage!r}; train-recon needs stage: recon")
    method = get_method(cfg.model.method)
    ssfl = cfg.model.method == "ssfl-recon"
    fe_before: list[np.ndarray] = []

    def before_run(model: Engine) -> None:
        log.info("%s: %d trainable parameters", cfg.model.method, count_params(model.trainable_weights))
        if not ssfl:
            return
        fe = model.network.feature_extractor
        if cfg.train.pretrained_fe:
            report = load_feature_weights(fe, cfg.train.pretrained_fe)
            log.info("pretrained FE: %s", report.summary())
        else:
            log.warning("train.pretrained_fe is empty: SSFL-Recon trains with a RANDOM, frozen feature extractor")
        fe_before.extend(np.array(v) for v in fe.weights)

    def num_train_examples() -> int:
        pipelines.ensure_synthetic_data(cfg.data)
        return pipelines.num_examples(cfg.data, "train")

    label = "stage 2 (SSFL-Recon)" if ssfl else cfg.model.method
    run_dir, model = train_engine(cfg, lambda: build_recon_model(cfg), lambda split, seed: method_dataset(
        cfg, split, seed), num_train_examples, resume=resume, verbose=verbose, label=label, views=method.views,
        before_run=before_run, plot_loss=save_loss_curves)
    if ssfl and fe_before and not resume:
        fe = model.network.feature_extractor
        changed = [v.path for v, b in zip(fe.weights, fe_before) if not np.array_equal(np.array(v), b)]
        if changed:
            raise RuntimeError(f"frozen FE weights changed during training: {changed}")
    return run_dir
