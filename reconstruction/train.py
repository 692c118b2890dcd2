"""Stage-2 training: SSFL-Recon with a frozen, pretrained FE-Net."""
from __future__ import annotations

import logging
import time
from evaluation.figures import save_loss_curves
from pathlib import Path

import numpy as np

from feature_learning.train import start_run, start_runtime, steps_for
from reconstruction.model import SSFLRecon
from reconstruction.pretrained import load_feature_weights
from utils import distribute
from utils.complex_layers import require_conv_dtype
from utils.schema import ExperimentConfig
from utils.training import fit

log = logging.getLogger(__name__)


def build_recon_model(cfg: ExperimentConfig) -> SSFLRecon:
    if cfg.model.method != "ssfl-recon":  # baselines (reconstruction/methods.py)
        from reconstruction.methods import build_method_model

        return build_method_model(cfg)
    m = cfg.model
    require_conv_dtype(cfg.train.mixed_precision)
    model = SSFLRecon(m.num_iter, m.feature_method, unet=m.unet_kwargs(cfg.train.mixed_precision),
                      loss_variant=m.recon_loss, recompute=cfg.train.recompute, name="ssfl_recon")
    model.build_all()
    return model


def train_recon(cfg: ExperimentConfig, resume: str | None = None, verbose="auto") -> Path:
    """Trains stage 2 as configured; returns the run folder (final weights in ``model.weights.h5``)."""
    from data_loader import pipelines

    if cfg.model.method != "ssfl-recon":  # baselines (reconstruction/methods.py)
        from reconstruction.methods import train_method

        return train_method(cfg, resume=resume, verbose=verbose)
    if cfg.stage != "recon":
        raise ValueError(f"config stage is {cfg.stage!r}; train-recon needs stage: recon")
    strategy, chief = start_runtime(cfg, views=2)  # the step reconstructs two views
    with distribute.model_scope(strategy):
        model = build_recon_model(cfg)
    if cfg.train.pretrained_fe:
        report = load_feature_weights(model.feature_extractor, cfg.train.pretrained_fe)
        log.info("pretrained FE: %s", report.summary())
    else:
        log.warning("train.pretrained_fe is empty: SSFL-Recon trains with a RANDOM, frozen feature extractor")
    fe_before = [np.array(v) for v in model.feature_extractor.weights]
    with distribute.model_scope(strategy):
        run_dir, initial_epoch = start_run(cfg, model, resume, chief)
    if initial_epoch is None:
        return run_dir
    pipelines.ensure_synthetic_data(cfg.data)
    # batch_size examples per replica; a resumed run starts the stream where its checkpoint left it
    def train_ds(position: int):
        return distribute.distribute_dataset(strategy, lambda: pipelines.recon_dataset(
            cfg.data, "train", seed=cfg.train.seed, batch_size=cfg.train.batch_size).skip(
                position * distribute.replicas(strategy)))

    val_ds = None
    if cfg.train.val_steps:
        val_ds = distribute.distribute_dataset(strategy, lambda: pipelines.recon_dataset(
            cfg.data, "val", seed=cfg.train.seed + 1))
    steps = steps_for(cfg, pipelines.num_examples(cfg.data, "train"), distribute.replicas(strategy))
    log.info("stage 2: %d epochs x %d steps, run folder %s", cfg.train.epochs, steps, run_dir)
    start = time.time()
    fit(model, train_ds, cfg.train.epochs, steps, run_dir, initial_epoch=initial_epoch, val_ds=val_ds,
        val_steps=distribute.steps_for_examples(cfg.train.val_steps, strategy), verbose=verbose, is_chief=chief,
        max_minutes=cfg.train.max_minutes, log_seconds=cfg.train.log_seconds, label="stage 2 (SSFL-Recon)",
        checkpoint_every_steps=cfg.train.checkpoint_every_steps, on_nan=cfg.train.on_nan,
        plot_loss=save_loss_curves)
    if not resume:
        changed = [v.path for v, b in zip(model.feature_extractor.weights, fe_before)
                   if not np.array_equal(np.array(v), b)]
        if changed:
            raise RuntimeError(f"frozen FE weights changed during training: {changed}")
    log.info("stage 2 finished in %.1f s", time.time() - start)
    return run_dir
