"""Data-parallel training with ``tf.distribute``: strategy by name, chief detection, model scope, input sharding.

``train.distribute`` selects the strategy:

* ``none``: TensorFlow's default strategy (one device; nothing changes).
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over every visible GPU of this machine (the logical CPU devices
  when there is no GPU), one replica per device.
* ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy``, the cluster and this process's role read from
  the ``TF_CONFIG`` environment variable; every worker runs the same command.

Every replica trains on its own per-replica batch (1 for the feature models: their projector MLP treats the time
frames of one example as its batch), so one optimizer step sees ``replicas × per-replica batch`` examples and
applies the replicas' mean gradient. Only the chief writes the run folder.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterator

import keras
import tensorflow as tf

from utils.schema import DISTRIBUTE_STRATEGIES as STRATEGIES

log = logging.getLogger(__name__)

# Keras 3's BatchNormalization creates these without an aggregation (each replica keeps its own copy and a
# checkpoint holds replica 0's); tf.keras (Keras 2) averaged them over replicas, which _mean_moving_statistics
# restores.
_MOVING_STATISTICS = ("moving_mean", "moving_variance")
_CREATED: dict[str, tf.distribute.Strategy] = {}


def get_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`), created once per process.

    Both stages of one process (``ssfl-recon demo``) share it: a second MirroredStrategy on the same devices would
    reuse the collective-op keys of the first and fail with shape mismatches, and a second MultiWorkerMirroredStrategy
    cannot be made. ``multi_worker`` must be created before TensorFlow runs any op (it configures this process's
    collective ops); the trainers create their strategy first.

    Raises:
        ValueError: unknown name.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name not in _CREATED:
        if name == "mirrored":
            devices = [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]
            _CREATED[name] = tf.distribute.MirroredStrategy(devices)
            log.info("MirroredStrategy: %d replicas on %s", len(devices), devices)
        elif name == "multi_worker":
            if not os.environ.get("TF_CONFIG"):
                log.warning("train.distribute is multi_worker but TF_CONFIG is not set: training as a single worker")
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            resolver = strategy.cluster_resolver
            log.info("MultiWorkerMirroredStrategy: %d replicas in all; this process is %s %s",
                     strategy.num_replicas_in_sync, resolver.task_type, resolver.task_id)
            _CREATED[name] = strategy
        else:
            raise ValueError(f"distribute: expected one of {list(STRATEGIES)}, got {name!r}")
    return _CREATED[name]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, logs and the final weights.

    Single-machine strategies have one process, the chief. In a ``TF_CONFIG`` cluster the chief is the task of type
    ``chief`` when the cluster has one, else ``worker`` 0 (TensorFlow's convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0


def replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas that train in sync (devices × workers)."""
    return int(strategy.num_replicas_in_sync)


def steps_for_examples(examples: int, strategy: tf.distribute.Strategy) -> int:
    """Distributed steps that cover ``examples`` per-replica batches (0 stays 0)."""
    return -(-int(examples) // replicas(strategy)) if examples else 0


def replica_share(loss: tf.Tensor) -> tf.Tensor:
    """The loss a replica differentiates: ``loss / replicas``.

    Keras 3's optimizer all-reduces the replicas' gradients with SUM (``keras/src/backend/tensorflow/optimizer.py``)
    and its built-in ``compute_loss`` divides the loss by the number of replicas; custom ``train_step``s must do the
    same so that an update applies the replicas' mean gradient. With one replica the loss is returned unchanged.
    """
    num = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if num == 1 else loss / tf.cast(num, loss.dtype)


def _mean_moving_statistics(next_creator, **kwargs):
    aggregation = kwargs.get("aggregation")
    if (kwargs.get("name") in _MOVING_STATISTICS and not kwargs.get("trainable", True)
            and aggregation in (None, tf.VariableAggregation.NONE)):
        kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)


@contextlib.contextmanager
def model_scope(strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Where the model, its optimizer and their variables must be created (and the model compiled).

    Inside ``strategy.scope()``; with several replicas, BatchNorm moving statistics are created with MEAN
    aggregation, so each update averages the replicas' updates (per-replica batch statistics, as with batch 1 on one
    device) and every replica keeps the same values.
    """
    with strategy.scope():
        if replicas(strategy) == 1:
            yield
            return
        with tf.variable_creator_scope(_mean_moving_statistics):
            yield


def prepare_for_fit(model: keras.Model) -> None:
    """Works around two gaps of Keras 3 (3.15) ``fit``/``evaluate`` under a strategy; call it inside the scope.

    * Before training, Keras averages one input batch over the replicas to build the model symbolically; under
      MultiWorkerMirroredStrategy that fails for dict inputs (keras-team/keras#20329). Our models and their
      optimizers are built explicitly before training, so that step is skipped.
    * Across workers, Keras averages each step's logs with ``strategy.reduce("MEAN", value, axis=0)``, which fails
      for the scalar losses a ``train_step`` returns; in multi-worker training the steps return them with a length-1
      axis (Keras' reduction makes them scalars again).

    Raises:
        ValueError: ``model`` or its optimizer is not built yet.
    """
    if not tf.distribute.has_strategy():
        return
    if not (model.built and model.optimizer is not None and model.optimizer.built):
        raise ValueError(f"{model.name}: build the model and its optimizer before training under a strategy")
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    if tf.distribute.get_strategy().extended._in_multi_worker_mode():
        model.train_step = _logs_with_axis(model.train_step)
        model.test_step = _logs_with_axis(model.test_step)


def _logs_with_axis(step: Callable) -> Callable:
    def step_with_axis(data):
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    return step_with_axis


def distribute_dataset(strategy: tf.distribute.Strategy, make_dataset: Callable[[], tf.data.Dataset]
                       ) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The input of ``model.fit`` under ``strategy``.

    ``make_dataset()`` builds the pipeline already batched to the per-replica batch. Every replica takes its own
    element, in order (step ``s`` on ``R`` replicas gets elements ``s·R … s·R + R − 1``), so a step sees
    ``R × per-replica batch`` examples, and slices of different sizes still train together (nothing is re-batched).
    Each worker builds the pipeline and keeps every ``W``-th element (worker ``i``: ``i, i + W, …``). With the
    default strategy the dataset itself is returned.
    """
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make_dataset()
        if context.num_input_pipelines > 1:
            dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)
        return dataset

    return strategy.distribute_datasets_from_function(dataset_fn)

