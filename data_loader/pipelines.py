"""The public face of the input pipelines: one import for the datasets, evaluation cases and data bootstrap.

The work is done by modules of one job each; this module only re-exports their public API, so callers keep writing
``from data_loader import pipelines`` and ``pipelines.feature_dataset(...)``:

* :mod:`data_loader.store`: a split read into memory (:class:`SplitData`, :func:`load_split`,
  :func:`num_examples`, :func:`split_csv_path`), the mask bank and the graph-mode store;
* :mod:`data_loader.streams`: stateless random draws, views (``y = M * k``, ``x = A^H y``), the index stream,
  dummy examples and :func:`time_pipeline`;
* :mod:`data_loader.datasets`: :func:`feature_dataset` (stage 1), :func:`recon_dataset` (stage 2) and
  :func:`acquired_dataset` (baselines), with the rules of their views;
* :mod:`data_loader.eval_cases`: :func:`eval_cases`, retrospective evaluation cases;
* :mod:`data_loader.synthetic`: :func:`ensure_synthetic_data`, the synthetic data set of a config.
"""
from __future__ import annotations

from data_loader.datasets import acquired_dataset, feature_dataset, recon_dataset
from data_loader.eval_cases import eval_cases
from data_loader.store import (
    BASE_MASK_SEED,
    SPLITS,
    SplitData,
    acceleration_grid,
    load_split,
    num_examples,
    split_csv_path,
)
from data_loader.streams import time_pipeline
from data_loader.synthetic import ensure_synthetic_data

__all__ = [
    "BASE_MASK_SEED",
    "SPLITS",
    "SplitData",
    "acceleration_grid",
    "acquired_dataset",
    "ensure_synthetic_data",
    "eval_cases",
    "feature_dataset",
    "load_split",
    "num_examples",
    "recon_dataset",
    "split_csv_path",
    "time_pipeline",
]
