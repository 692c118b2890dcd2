"""Stage-1 training: build the FE-Net from a config, feed it the feature pipeline, checkpoint every epoch."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import keras

from feature_learning.model import FeatureNet
from utils.config import save_config
from utils.schema import ExperimentConfig
from utils.training import fit, load_checkpoint

log = logging.getLogger(__name__)


def build_feature_model(cfg: ExperimentConfig) -> FeatureNet:
    m = cfg.model
    model = FeatureNet(m.num_iter, m.feature_method, loss_variant=m.feature_loss, unet=m.unet_kwargs(),
                       projector_units=m.projector_units, name="feature_net")
    model.build_all()
    return model


def compile_model(model: keras.Model, cfg: ExperimentConfig) -> None:
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate), jit_compile=cfg.train.jit_compile)
    model.optimizer.build(model.trainable_variables)


def steps_for(cfg: ExperimentConfig, num_examples: int) -> int:
    """Optimizer steps per epoch: the configured number, else one pass over the split at the batch size."""
    return cfg.train.steps_per_epoch or max(1, num_examples // max(1, cfg.train.batch_size))


def start_run(cfg: ExperimentConfig, model: keras.Model, resume: str | None) -> tuple[Path, int | None]:
    """Compiles ``model``, restores it on ``--resume`` and writes the config; returns (run folder, first epoch),
    the epoch being None when the run has already finished."""
    run_dir = Path(resume or cfg.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    compile_model(model, cfg)
    initial_epoch = load_checkpoint(run_dir, model) if resume else 0
    if initial_epoch >= cfg.train.epochs:
        log.info("run %s already finished %d epochs", run_dir, initial_epoch)
        return run_dir, None
    save_config(cfg, run_dir / "config.yaml")
    return run_dir, initial_epoch


def train_features(cfg: ExperimentConfig, resume: str | None = None, verbose="auto") -> Path:
    """Trains stage 1 as configured; returns the run folder (final weights in ``model.weights.h5``)."""
    from data_loader import pipelines

    if cfg.stage != "features":
        raise ValueError(f"config stage is {cfg.stage!r}; train-features needs stage: features")
    keras.utils.set_random_seed(cfg.train.seed)
    model = build_feature_model(cfg)
    run_dir, initial_epoch = start_run(cfg, model, resume)
    if initial_epoch is None:
        return run_dir
    pipelines.ensure_synthetic_data(cfg.data)
    train_ds = pipelines.feature_dataset(cfg.data, cfg.model.feature_method, "train", seed=cfg.train.seed)
    val_ds = None
    if cfg.train.val_steps:
        val_ds = pipelines.feature_dataset(cfg.data, cfg.model.feature_method, "val", seed=cfg.train.seed + 1)
    steps = steps_for(cfg, pipelines.num_examples(cfg.data, "train"))
    log.info("stage 1 (%s): %d epochs x %d steps, run folder %s", cfg.model.feature_method, cfg.train.epochs,
             steps, run_dir)
    start = time.time()
    fit(model, train_ds, cfg.train.epochs, steps, run_dir, initial_epoch=initial_epoch, val_ds=val_ds,
        val_steps=cfg.train.val_steps, verbose=verbose)
    log.info("stage 1 finished in %.1f s", time.time() - start)
    return run_dir
