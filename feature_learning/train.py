"""Stage-1 training: the FE-Net and its feature objective in the one engine, fed by the feature pipeline."""
from __future__ import annotations

from pathlib import Path

from data_loader import pipelines
from evaluation.figures import save_loss_curves
from feature_learning.losses import NUM_VIEWS
from feature_learning.model import FeatureNet, FeatureObjective
from utils.complex_layers import require_conv_dtype
from utils.engine import Engine
from utils.schema import ExperimentConfig
from utils.training import train_engine


def build_feature_network(cfg: ExperimentConfig) -> FeatureNet:
    """The FE-Net of ``cfg.model`` with all weights created."""
    require_conv_dtype(cfg.train.mixed_precision)
    m = cfg.model
    network = FeatureNet(m.num_iter, m.feature_method, unet=m.unet_kwargs(cfg.train.mixed_precision),
                         projector_units=m.projector_units, recompute=cfg.train.recompute, name="feature_net")
    network.build_all()
    return network


def build_feature_model(cfg: ExperimentConfig) -> Engine:
    """Stage 1's engine: :func:`build_feature_network` trained by :class:`FeatureObjective`."""
    engine = Engine(build_feature_network(cfg), FeatureObjective(cfg.model.feature_method, cfg.model.feature_loss),
                    seed=cfg.train.seed, name="feature_learning")
    engine.build_all()
    return engine


def train_features(cfg: ExperimentConfig, resume: str | None = None, verbose="auto") -> Path:
    """Trains stage 1 as configured; returns the run folder (final weights in ``model.weights.h5``)."""
    if cfg.stage != "features":
        raise ValueError(f"config stage is {cfg.stage!r}; train-features needs stage: features")

    # per-replica batch 1 (the pipeline's): the projector treats the time frames of one example as its batch
    def dataset(split: str, seed: int):
        return pipelines.feature_dataset(cfg.data, cfg.model.feature_method, split, seed=seed)

    def num_train_examples() -> int:
        pipelines.ensure_synthetic_data(cfg.data)
        return pipelines.num_examples(cfg.data, "train")

    run_dir, _ = train_engine(cfg, lambda: build_feature_model(cfg), dataset, num_train_examples, resume=resume,
                              verbose=verbose, label=f"stage 1 ({cfg.model.feature_method})",
                              views=NUM_VIEWS[cfg.model.feature_method], plot_loss=save_loss_curves)
    return run_dir
