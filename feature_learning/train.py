"""Stage-1 training: build the FE-Net from a config, feed it the feature pipeline, checkpoint every epoch."""
from __future__ import annotations

import logging
import time
from evaluation.figures import save_loss_curves
from pathlib import Path

import keras

from feature_learning.losses import NUM_VIEWS
from feature_learning.model import FeatureNet
from utils import distribute, threads
from utils.complex_layers import require_conv_dtype
from utils.config import save_config
from utils.schema import ExperimentConfig
from utils import run_lock
from utils.training import WEIGHTS_NAME, check_run_folder, fit, load_checkpoint, save_weights_atomic

log = logging.getLogger(__name__)


def build_feature_model(cfg: ExperimentConfig) -> FeatureNet:
    require_conv_dtype(cfg.train.mixed_precision)
    m = cfg.model
    model = FeatureNet(m.num_iter, m.feature_method, loss_variant=m.feature_loss,
                       unet=m.unet_kwargs(cfg.train.mixed_precision), projector_units=m.projector_units,
                       recompute=cfg.train.recompute, name="feature_net")
    model.build_all()
    return model


def compile_model(model: keras.Model, cfg: ExperimentConfig) -> None:
    optimizer = keras.optimizers.Adam(cfg.train.learning_rate)
    if cfg.train.mixed_precision == "float16":  # scale the loss so small float16 gradients do not underflow
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=cfg.train.jit_compile)
    model.optimizer.build(model.trainable_variables)


def steps_for(cfg: ExperimentConfig, num_examples: int, replicas: int = 1) -> int:
    """Optimizer steps per epoch: the configured number, else one pass over the split at the global batch size
    (``replicas`` × batch size)."""
    return cfg.train.steps_per_epoch or max(1, num_examples // max(1, cfg.train.batch_size * replicas))


def start_runtime(cfg: ExperimentConfig, views: int):
    """What a trainer does first, before TensorFlow runs an op (thread pools and ``multi_worker`` need an untouched
    runtime): CPU thread pools for ``views`` independent streams per step, the strategy, and the seed. Returns
    (strategy, whether this process is the chief)."""
    threads.configure(cfg.train.threads, threads.training_streams(views, cfg.train.jit_compile))
    strategy = distribute.get_strategy(cfg.train.distribute)
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(cfg.train.seed)
    return strategy, chief


def start_run(cfg: ExperimentConfig, model: keras.Model, resume: str | None,
              chief: bool = True) -> tuple[Path, int | None]:
    """Compiles ``model``, restores it on ``--resume`` and writes the config (``chief`` only); returns (run folder,
    first epoch), the epoch being None when the run has already finished. Call it inside the model's strategy
    scope.

    The chief first checks that the folder is writable with room for the checkpoints and takes its lock
    (:mod:`utils.run_lock`: a second process on the same folder stops with an error naming the holder). A resume
    of a folder whose run was killed before its first checkpoint starts at step 0 (with a warning); the exact
    position within an epoch is restored by :func:`utils.training.load_checkpoint` for ``fit``."""
    run_dir = Path(resume or cfg.train.run_dir)
    # killed before its first checkpoint: a resume of the config's own run folder starts at step 0
    own_folder = bool(resume) and run_dir.resolve() == Path(cfg.train.run_dir).resolve()
    if resume and not run_dir.is_dir() and not own_folder:
        raise FileNotFoundError(f"--resume {str(run_dir)!r}: no such run folder")
    if chief:
        check_run_folder(run_dir)
        run_lock.acquire(run_dir)
    compile_model(model, cfg)
    distribute.prepare_for_fit(model)
    if chief:
        check_run_folder(run_dir, model)
    initial_epoch = 0
    if resume:
        has_checkpoint = any((run_dir / "checkpoints" / n).is_file() for n in ("state.json", "prev.state.json"))
        if has_checkpoint or not (own_folder or (run_dir / "config.yaml").is_file()):
            initial_epoch = load_checkpoint(run_dir, model)
        else:
            log.warning("--resume %s: the run stopped before its first checkpoint: starting at step 0", run_dir)
    if initial_epoch >= cfg.train.epochs:
        log.info("run %s already finished %d epochs", run_dir, initial_epoch)
        if chief and not (run_dir / WEIGHTS_NAME).is_file():  # killed between the last checkpoint and the end
            save_weights_atomic(model, run_dir / WEIGHTS_NAME)
        return run_dir, None
    if chief:
        save_config(cfg, run_dir / "config.yaml")
    return run_dir, initial_epoch


def train_features(cfg: ExperimentConfig, resume: str | None = None, verbose="auto") -> Path:
    """Trains stage 1 as configured; returns the run folder (final weights in ``model.weights.h5``)."""
    from data_loader import pipelines

    if cfg.stage != "features":
        raise ValueError(f"config stage is {cfg.stage!r}; train-features needs stage: features")
    strategy, chief = start_runtime(cfg, NUM_VIEWS[cfg.model.feature_method])
    with distribute.model_scope(strategy):
        model = build_feature_model(cfg)
        run_dir, initial_epoch = start_run(cfg, model, resume, chief)
    if initial_epoch is None:
        return run_dir
    pipelines.ensure_synthetic_data(cfg.data)
    # per-replica batch 1 (the pipeline's): the projector treats the time frames of one example as its batch;
    # a resumed run starts the stream where its checkpoint left it (``position`` steps of all replicas)
    def train_ds(position: int):
        return distribute.distribute_dataset(strategy, lambda: pipelines.feature_dataset(
            cfg.data, cfg.model.feature_method, "train", seed=cfg.train.seed).skip(
                position * distribute.replicas(strategy)))

    val_ds = None
    if cfg.train.val_steps:
        val_ds = distribute.distribute_dataset(strategy, lambda: pipelines.feature_dataset(
            cfg.data, cfg.model.feature_method, "val", seed=cfg.train.seed + 1))
    steps = steps_for(cfg, pipelines.num_examples(cfg.data, "train"), distribute.replicas(strategy))
    log.info("stage 1 (%s): %d epochs x %d steps, run folder %s", cfg.model.feature_method, cfg.train.epochs,
             steps, run_dir)
    start = time.time()
    fit(model, train_ds, cfg.train.epochs, steps, run_dir, initial_epoch=initial_epoch, val_ds=val_ds,
        val_steps=distribute.steps_for_examples(cfg.train.val_steps, strategy), verbose=verbose, is_chief=chief,
        max_minutes=cfg.train.max_minutes, log_seconds=cfg.train.log_seconds, label=f"stage 1 ({cfg.model.feature_method})",
        checkpoint_every_steps=cfg.train.checkpoint_every_steps, on_nan=cfg.train.on_nan,
        plot_loss=save_loss_curves)
    log.info("stage 1 finished in %.1f s", time.time() - start)
    return run_dir
