"""Building blocks of the example streams: stateless random draws, views, the index stream and dummy examples.

Every draw is a stateless random op keyed by ``(seed, purpose, epoch, example index)`` (:func:`stream_key`,
:func:`fold_key`), so the same seed gives the same stream whatever the parallelism of ``map``. :func:`index_stream`
yields ``(epoch, index)`` pairs (training splits: a full permutation every epoch, equivalent to a shuffle buffer as
large as the split; ``val``/``test``: CSV order); :func:`make_view` turns fully sampled k-space and a mask into one
view ``y = M * k``, ``x = A^H y``; :func:`dummy_dataset` replaces the data in dummy mode; :func:`time_pipeline`
measures a dataset's throughput.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import tensorflow as tf

from data_loader.store import num_examples
from utils import mri
from utils.schema import DataConfig

# Redraws of a view mask that came out identical to the other view's effective mask (only degenerate settings,
# e.g. R = 1, need more than one; the bound keeps the graph loop finite).
_MAX_REDRAWS = 32
# Independent random streams per purpose, folded into the user seed.
STREAM_SHUFFLE, STREAM_VICREG, STREAM_CONTRASTIVE, STREAM_RECON, STREAM_DUMMY = 1, 2, 3, 4, 5


# ---------------------------------------------------------------------------------- random draws
def stream_key(seed: int, stream: int) -> tf.Tensor:
    """Stateless seed of random stream ``stream`` (a purpose) of the user seed."""
    return tf.constant([int(seed), int(stream)], dtype=tf.int64)


def fold_key(key: tf.Tensor, *values: Any) -> tf.Tensor:
    """``key`` with ``values`` (epoch, example index, ...) folded in."""
    for v in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(v, tf.int64))
    return key


def uniform_int(key: tf.Tensor, n: Any) -> tf.Tensor:
    """int32 scalar uniform in [0, n)."""
    return tf.random.stateless_uniform([], seed=key, minval=0, maxval=tf.cast(n, tf.int32), dtype=tf.int32)


def categorical(key: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """int32 index drawn with probability proportional to the non-negative ``weights`` (1-D)."""
    logits = tf.math.log(tf.cast(weights, tf.float32))[None]
    return tf.random.stateless_categorical(logits, 1, seed=key, dtype=tf.int32)[0, 0]


def draw_other(key: tf.Tensor, n: Any, exclude: tf.Tensor, identical: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Index uniform in ``[0, n)`` without ``exclude``, redrawn (at most ``_MAX_REDRAWS`` times) while
    ``identical(index)``; uniform over the other indices exactly as the original's rejection loop."""
    def draw(attempt):
        k = uniform_int(fold_key(key, attempt), tf.cast(n, tf.int32) - 1)
        return k + tf.cast(k >= exclude, tf.int32)

    def keep_going(attempt, index):
        return tf.logical_and(attempt < _MAX_REDRAWS, identical(index))

    def again(attempt, index):
        return attempt + 1, draw(attempt + 1)

    start = tf.constant(0, tf.int64)
    _, index = tf.while_loop(keep_going, again, (start, draw(start)))
    return index


def all_equal(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Scalar bool: ``a`` and ``b`` equal everywhere."""
    return tf.reduce_all(tf.equal(a, b))


def make_view(kspace: tf.Tensor, coil_maps: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
    """One view: ``y = mask * k`` (T,X,Y,C), ``x = A^H y`` (T,X,Y,1), the mask (T,1,Y,1) and the maps."""
    y = mri.apply_mask(kspace, mask)
    # the adjoint masks y once more: a 0/1 mask changes nothing the second time
    x = mri.adjoint(y[None], mask[None], coil_maps[None])[0]
    return {"x": x, "y": y, "mask": mask, "coil_maps": coil_maps}


# ------------------------------------------------------------------------------------ index stream
def index_stream(n: int, seed: int, shuffle: bool, repeat: bool) -> tf.data.Dataset:
    """``(epoch, index)`` int64 pairs: every epoch a full stateless permutation (``shuffle``) or 0..n-1."""
    shuffle_key = stream_key(seed, STREAM_SHUFFLE)
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)

    def one_epoch(epoch):
        if shuffle:
            order = tf.argsort(tf.random.stateless_uniform([n], seed=fold_key(shuffle_key, epoch)))
        else:
            order = tf.range(n)
        return tf.data.Dataset.from_tensor_slices((tf.fill([n], epoch), tf.cast(order, tf.int64)))

    return epochs.flat_map(one_epoch)


def parallel_calls(cfg: DataConfig) -> int:
    n = int(cfg.num_parallel_calls)
    return tf.data.AUTOTUNE if n < 0 else max(1, n)


def finish_dataset(ds: tf.data.Dataset, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def resolve_seed(cfg: DataConfig, seed: int | None) -> int:
    return int(cfg.seed if seed is None else seed)



# --------------------------------------------------------------------------------------- dummy mode
def rand_complex(key: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """Real and imaginary parts uniform in [0, 1), like ``np.random.rand`` in the original dummy loaders."""
    re_key, im_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    return tf.complex(tf.random.stateless_uniform(shape, seed=re_key), tf.random.stateless_uniform(shape, seed=im_key))


def dummy_view(key: tf.Tensor, size: tuple[int, int, int, int]) -> dict[str, tf.Tensor]:
    t, x, y, c = size
    keys = tf.unstack(tf.random.experimental.stateless_split(key, 4))
    mask = tf.cast(tf.random.stateless_uniform([t, 1, y, 1], seed=keys[2]) < 0.5, tf.float32)
    return {"x": rand_complex(keys[0], [t, x, y, 1]), "y": rand_complex(keys[1], [t, x, y, c]), "mask": mask,
            "coil_maps": rand_complex(keys[3], [1, x, y, c])}


def dummy_dataset(cfg: DataConfig, split: str, seed: int, repeat: bool,
                   make: Callable[[tf.Tensor], dict]) -> tf.data.Dataset:
    n = num_examples(cfg, split)
    base = stream_key(seed, STREAM_DUMMY)
    train = split == "train"

    def example(epoch, index):
        return make(fold_key(base, epoch if train else 0, index))

    return index_stream(n, seed, False, repeat).map(example, num_parallel_calls=parallel_calls(cfg))



# ---------------------------------------------------------------------------------------- timing
def _examples_in(element: Any) -> int:
    """Leading (batch) size of a dataset element (the first tensor found)."""
    leaf = tf.nest.flatten(element)[0]
    return int(leaf.shape[0]) if leaf.shape.rank else 1


def time_pipeline(ds: tf.data.Dataset, n: int = 50, warmup: int = 3) -> float:
    """Seconds per example of ``ds``, measured over ``n`` elements after ``warmup`` elements.

    The warm-up absorbs graph tracing and the first prefetch; the measurement is the steady-state throughput of
    the pipeline on its own (no model consuming it).

    Args:
        ds: a dataset of these pipelines (or any dataset of tensors with a batch axis).
        n: elements to time.
        warmup: elements fetched before the clock starts.

    Returns:
        wall-clock seconds per example.

    Raises:
        ValueError: ``n < 1`` or the dataset ends before any element was timed.
    """
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    iterator = iter(ds)
    for _ in range(max(0, warmup)):
        next(iterator, None)
    count, start = 0, time.perf_counter()
    for _ in range(n):
        element = next(iterator, None)
        if element is None:
            break
        count += _examples_in(element)
    elapsed = time.perf_counter() - start
    if count == 0:
        raise ValueError("time_pipeline: the dataset ended before any element was timed")
    return elapsed / count
