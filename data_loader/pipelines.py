"""tf.data input pipelines of the three training stages, evaluation cases and the synthetic data bootstrap.

What the pipelines feed (the facts of the original SSFL-Recon loaders, without their defects):

* **VICReg** (:func:`feature_dataset`, ``method="vicreg"``): two re-undersampled views of one acquired slice.
  View ``v`` has the effective mask ``M_v = M_0 * V(R_v, s_v)``: the initial (acquired) mask ``M_0`` times a
  re-undersampling mask of kind ``data.mask_kind`` (VISTA by default) with ``R_v`` uniform on the integer grid of
  ``[min_r, max_r]`` and seed ``s_v`` uniform in ``1..mask_seeds``; ``(R_2, s_2)`` is uniform among the pairs
  other than ``(R_1, s_1)`` and is redrawn while the two effective masks are identical.
* **Contrastive** (``method="contrastive"``): views 1 and 2 of subject A with the same ``R_1`` and different
  seeds, view 3 of a slice of another subject B with ``(R_3, s_3)`` from the ``diff`` rule
  (``|R_1 - R_3| >= contrastive_min_gap``; ``R_1`` values without any such ``R_3`` are never drawn) or the
  ``random`` rule (any pair other than those of views 1 and 2). Subject B's view also carries B's initial mask
  (the original applied none to it, although B's data are "acquired" the same way).
* **Reconstruction** (:func:`recon_dataset`): the acquisition is a base mask of kind ``mask_kind`` at ``start_r``
  (seed 10, as the original); the two views multiply it by two different re-undersampling masks with R on the
  grid of ``train_r`` (training) or at ``val_r`` (``val``/``test``).
* **Prospective masks** (``data.masks: prospective``, :mod:`data_loader.prospective`): each case's stored
  prospective mask replaces the initial mask of stage 1, the base mask of stage 2 and the acquisition of the
  baselines (:func:`acquired_dataset`; masks drawn at given accelerations are multiplied by it). Evaluation
  (:func:`eval_cases`) stays retrospective.

Every view is ``y = M * k`` and ``x = A^H y = sum_c conj(s_c) * ifft2c(M * y)`` (:func:`utils.mri.adjoint`), where
``k`` is the subject's fully sampled k-space: the stored, noisy k-space of the HDF5/synthetic layout, or
``fft2c(image * coil_maps)`` for the original layout, which stores images only (the original feature loaders used
``coil_maps * coil_maps`` there, a defect not reproduced). ``reference`` is the stored fully sampled image (the
noise-free phantom for synthetic data).

Design. A split is read once into memory (small data) as flat buffers with per-slice offsets, so slices of
different sizes (the original data vary in Y) share one code path. All masks an example may need are generated
up front (VISTA through the on-disk cache of :func:`data_loader.masks.get_vista_mask`) and stacked the same way.
The example function then runs in graph mode (no ``py_function``): it draws mask indices with stateless random
ops keyed by ``(seed, epoch, example index)`` and gathers. Hence the pipeline runs with ``num_parallel_calls``
and ``prefetch``, and the same seed gives the same stream whatever the parallelism. Training splits are reshuffled
every epoch by a full permutation of the example indices (equivalent to a shuffle buffer as large as the split);
``val``/``test`` streams are ordered and their masks do not change between passes, so validation losses of
different epochs are comparable.

Layouts (per example, batch axis first): image ``x`` and ``reference`` (B,T,X,Y,1) complex64, k-space ``y``
(B,T,X,Y,C) complex64, mask (B,T,1,Y,1) float32, coil maps (B,1,X,Y,C) complex64.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from data_loader.synthetic import SyntheticSpec, generate_dataset
from utils import mri
from utils.io import atomic_write_text
from utils.schema import FEATURE_METHODS, DataConfig

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_MASK_SEED",
    "SPLITS",
    "SplitData",
    "acceleration_grid",
    "ensure_synthetic_data",
    "eval_cases",
    "feature_dataset",
    "load_split",
    "num_examples",
    "recon_dataset",
    "split_csv_path",
    "time_pipeline",
]

SPLITS = ("train", "val", "test")
# The original reconstruction loader always takes the acquired (base) VISTA mask with seed 10.
BASE_MASK_SEED = 10
# Generators whose pattern ignores the seed: one seed per acceleration is enough (more would only add duplicates).
_DETERMINISTIC_KINDS = ("equispaced",)
# Redraws of a view mask that came out identical to the other view's effective mask (only degenerate settings,
# e.g. R = 1, need more than one; the bound keeps the graph loop finite).
_MAX_REDRAWS = 32
# Independent random streams per purpose, folded into the user seed.
_STREAM_SHUFFLE, _STREAM_VICREG, _STREAM_CONTRASTIVE, _STREAM_RECON, _STREAM_DUMMY = 1, 2, 3, 4, 5
_STAMP_NAME = ".ssfl_synthetic.json"
_STAMP_VERSION = 1


# ------------------------------------------------------------------------------------------- loading
@dataclass
class SplitData:
    """The (subject, slice) examples of one split, in CSV order, as numpy arrays in memory.

    Attributes:
        csv_path: the split CSV.
        names: per example ``name`` (subject name; ``{subject}_slice{s}`` when the subject has several slices).
        subjects: per example index of its subject in the CSV.
        slices: per example slice index within its subject.
        image: per example (T,X,Y,1) complex64 fully sampled reference image.
        coil_maps: per example (1,X,Y,C) complex64 coil maps.
        kspace: per example (T,X,Y,C) complex64 stored fully sampled k-space, or None (original layout: the
            k-space is simulated as ``fft2c(image * coil_maps)``).
        initial_mask: per example (Y,T) int64 acquisition mask stored with the data, or None.
    """

    csv_path: Path
    names: list[str] = field(default_factory=list)
    subjects: list[int] = field(default_factory=list)
    slices: list[int] = field(default_factory=list)
    image: list[np.ndarray] = field(default_factory=list)
    coil_maps: list[np.ndarray] = field(default_factory=list)
    kspace: list[np.ndarray] | None = None
    initial_mask: list[np.ndarray | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def shape(self, i: int) -> tuple[int, int, int, int]:
        """(T, X, Y, C) of example ``i``."""
        t, x, y, _ = self.image[i].shape
        return t, x, y, self.coil_maps[i].shape[-1]

    def fully_sampled_kspace(self, i: int) -> np.ndarray:
        """(T,X,Y,C) complex64 k-space of example ``i``: stored, or simulated from image and coil maps."""
        if self.kspace is not None:
            return self.kspace[i]
        return mri.fft2c_np(self.image[i] * self.coil_maps[i], axes=(-3, -2)).astype(np.complex64)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")


def split_csv_path(cfg: DataConfig, split: str) -> Path:
    """The CSV of ``split`` (``data.train_csv`` / ``val_csv`` / ``test_csv``, relative to ``data.root``)."""
    _check_split(split)
    name = Path(getattr(cfg, f"{split}_csv"))
    return name if name.is_absolute() else Path(cfg.root).expanduser() / name


def _reader(cfg: DataConfig, split: str):
    """The :mod:`data_loader.formats` item reader of ``split`` (errors from the readers name the file)."""
    from data_loader import formats

    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        hint = (" (run `ssfl-recon make-data` or call pipelines.ensure_synthetic_data)"
                if cfg.source == "synthetic" else "")
        raise FileNotFoundError(f"data folder not found: {root} (data.root, source {cfg.source!r}){hint}")
    csv_path = split_csv_path(cfg, split)
    if not csv_path.is_file():
        raise FileNotFoundError(f"split CSV not found: {csv_path} (data.{split}_csv in data.root {root})")
    if cfg.source == "original":
        return formats.OriginalDataset(root, csv_path)
    # "synthetic" data are written by make-data, whose HDF5 layout carries the noisy k-space and the noise-free
    # reference, so both sources read the same files.
    return formats.H5Dataset(root, csv_path)


def load_split(cfg: DataConfig, split: str) -> SplitData:
    """Reads every (subject, slice) of ``split`` into memory.

    Args:
        cfg: data config (``source``, ``root``, the split CSVs).
        split: ``train``, ``val`` or ``test``.

    Returns:
        the split's examples in CSV order.

    Raises:
        FileNotFoundError: missing data folder, CSV or data file (the message names it).
        ValueError: unreadable files, arrays disagreeing with the CSV or with each other, NaN/Inf values (raised
            by the readers of :mod:`data_loader.formats`, naming the file).
    """
    reader = _reader(cfg, split)
    data = SplitData(csv_path=Path(reader.csv_path), kspace=None if cfg.source == "original" else [])
    slice_counts = [row.slices for row in reader.rows]
    for index in range(len(reader)):
        subject, sl = reader.items[index]
        item = reader[index]
        data.names.append(item["name"] if slice_counts[subject] == 1 else f"{item['name']}_slice{sl}")
        data.subjects.append(int(subject))
        data.slices.append(int(sl))
        data.image.append(np.ascontiguousarray(item["image"], dtype=np.complex64))
        data.coil_maps.append(np.ascontiguousarray(item["coil_maps"], dtype=np.complex64))
        if data.kspace is not None:
            data.kspace.append(np.ascontiguousarray(item["kspace"], dtype=np.complex64))
        data.initial_mask.append(item.get("initial_mask"))
    logger.info("loaded %d example(s) of %d subject(s) from %s", len(data), len(reader.rows), data.csv_path)
    return data


def num_examples(cfg: DataConfig, split: str) -> int:
    """Number of examples (subject, slice pairs) of ``split`` per epoch, read from the CSV only.

    In dummy mode this is ``data.subjects`` for every split (the original dummy loaders had a fixed count too).
    """
    _check_split(split)
    if cfg.dummy:
        return max(1, int(cfg.subjects))
    from data_loader.formats import read_dataset_csv

    csv_path = split_csv_path(cfg, split)
    return sum(row.slices for row in read_dataset_csv(csv_path))


# --------------------------------------------------------------------------------------------- masks
def acceleration_grid(low: float, high: float) -> list[float]:
    """Accelerations drawn from ``[low, high]``: its integers (``random.randint`` in the original loaders).

    Args:
        low: smallest acceleration.
        high: largest acceleration.

    Returns:
        the integers in ``[low, high]`` as floats; when none lies in between, the distinct endpoints.
    """
    lo, hi = float(low), float(high)
    if not (math.isfinite(lo) and math.isfinite(hi) and 1.0 <= lo <= hi):
        raise ValueError(f"acceleration range: expected 1 <= low <= high, got [{low}, {high}]")
    ints = [float(v) for v in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    return ints if ints else sorted({lo, hi})


def _mask_seeds(cfg: DataConfig) -> list[int]:
    """Seeds 1..mask_seeds as the original's ``random.randint(1, 20)``; one seed for seed-free generators."""
    if cfg.mask_kind in _DETERMINISTIC_KINDS:
        return [1]
    if int(cfg.mask_seeds) < 1:
        raise ValueError(f"data.mask_seeds: expected >= 1, got {cfg.mask_seeds}")
    return list(range(1, int(cfg.mask_seeds) + 1))


def _cache_dir(cfg: DataConfig) -> Path | None:
    return Path(cfg.mask_cache).expanduser() if cfg.mask_cache else None


def _make_mask(kind: str, ny: int, nt: int, acc: float, seed: int, cache_dir: Path | None) -> np.ndarray:
    """(ny, nt) int 0/1 mask; VISTA masks come from (and go to) the on-disk cache, being slow to generate."""
    from data_loader.masks import generate_mask, get_vista_mask

    try:
        if kind == "vista":
            return get_vista_mask(ny, nt, acc, seed, cache_dir=cache_dir)
        return generate_mask(kind, ny, nt, acc, seed=seed)
    except ValueError as err:
        raise ValueError(f"data.mask_kind {kind!r}: cannot make a mask for ny={ny}, nt={nt}, R={acc:g}, "
                         f"seed {seed}: {err}") from err


def _time_major(mask: np.ndarray) -> np.ndarray:
    """(ny, nt) -> flat (nt * ny,) float32, the memory order of the (T,1,Y,1) tensor layout."""
    return np.ascontiguousarray(np.asarray(mask).T, dtype=np.float32).ravel()


class _MaskBank:
    """Re-undersampling masks ``V(R, s)`` of every slice geometry (ny, nt) of a split, flat in one tensor.

    ``offsets[g, r, s]`` is where the time-major mask of geometry ``g``, acceleration ``accs[r]`` and seed
    ``seeds[s]`` starts in ``flat``; ``base[g]`` (optional) the start of the base mask of geometry ``g``. Masks come
    from ``make(ny, nt, R, seed)`` (default: ``data.mask_kind`` with the VISTA cache), with ``kind`` and ``seeds``
    defaulting to ``data.mask_kind`` and ``1..data.mask_seeds``.
    """

    def __init__(self, cfg: DataConfig, geometries: Sequence[tuple[int, int]], accs: Sequence[float],
                 base_acc: float | None = None, kind: str | None = None, seeds: Sequence[int] | None = None,
                 make: Callable[[int, int, float, int], np.ndarray] | None = None):
        self.kind = kind or cfg.mask_kind
        self.accs = [float(a) for a in accs]
        self.seeds = list(seeds) if seeds is not None else _mask_seeds(cfg)
        cache = _cache_dir(cfg)
        if make is None:
            def make(ny, nt, acc, seed):
                return _make_mask(self.kind, ny, nt, acc, seed, cache)
        start = time.perf_counter()
        chunks, offsets, base, position = [], [], [], 0
        # distinct masks per geometry and acceleration (among the seeds) and per geometry: the feasibility of
        # "two different views" is checked on these before any graph loop has to find a different mask
        self.distinct: list[list[int]] = []
        self.distinct_total: list[int] = []
        for ny, nt in geometries:
            per_geometry, distinct, seen_all = [], [], set()
            for acc in self.accs:
                row, seen = [], set()
                for seed in self.seeds:
                    mask = _time_major(make(ny, nt, acc, seed))
                    seen.add(mask.tobytes())
                    seen_all.add(mask.tobytes())
                    chunks.append(mask)
                    row.append(position)
                    position += mask.size
                per_geometry.append(row)
                distinct.append(len(seen))
            offsets.append(per_geometry)
            self.distinct.append(distinct)
            self.distinct_total.append(len(seen_all))
            if base_acc is not None:
                mask = _time_major(make(ny, nt, base_acc, BASE_MASK_SEED))
                chunks.append(mask)
                base.append(position)
                position += mask.size
        self.num_masks = len(chunks)
        self.flat = tf.constant(np.concatenate(chunks) if chunks else np.zeros(0, np.float32))
        self.offsets = tf.constant(np.asarray(offsets, dtype=np.int64).reshape(len(geometries), len(self.accs),
                                                                               len(self.seeds)))
        self.base = tf.constant(np.asarray(base, dtype=np.int64)) if base_acc is not None else None
        logger.info("%d %s mask(s) ready for %d geometr%s, R in %s, %d seed(s) (%.1f s)", self.num_masks,
                    self.kind, len(geometries), "y" if len(geometries) == 1 else "ies",
                    [f"{a:g}" for a in self.accs], len(self.seeds), time.perf_counter() - start)

    @property
    def num_accs(self) -> int:
        return len(self.accs)

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    def mask(self, group: tf.Tensor, r: tf.Tensor, s: tf.Tensor, t: Any, y: Any) -> tf.Tensor:
        """Mask ``V(accs[r], seeds[s])`` of geometry ``group`` as (T,1,Y,1) float32."""
        start = tf.gather_nd(self.offsets, tf.stack([group, r, s]))
        return _take(self.flat, start, t * y, [t, 1, y, 1])

    def base_mask(self, group: tf.Tensor, t: Any, y: Any) -> tf.Tensor:
        """Base (acquisition) mask of geometry ``group`` as (T,1,Y,1) float32."""
        return _take(self.flat, tf.gather(self.base, group), t * y, [t, 1, y, 1])


# --------------------------------------------------------------------------------------- graph store
def _take(flat: tf.Tensor, start: tf.Tensor, size: Any, shape: Sequence[Any]) -> tf.Tensor:
    """``flat[start:start + size]`` reshaped to ``shape``; entries given as Python ints stay static."""
    start = tf.cast(tf.reshape(start, [1]), tf.int64)
    size = tf.cast(tf.reshape(size, [1]), tf.int64)
    piece = tf.slice(flat, start, size)
    if all(isinstance(d, int) for d in shape):
        return tf.reshape(piece, shape)
    piece = tf.reshape(piece, tf.stack([tf.cast(d, tf.int32) for d in shape]))
    piece.set_shape([d if isinstance(d, int) else None for d in shape])
    return piece


def _flatten(arrays: Sequence[np.ndarray], dtype) -> tuple[tf.Tensor, tf.Tensor]:
    """Concatenates arrays into one flat tensor; returns it and the (N,) int64 start offsets."""
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])
    return tf.constant(flat), tf.constant(offsets)


class _Store:
    """A split's arrays as flat tensors captured by the dataset functions, with per-example accessors.

    Axes of (T, X, Y, C) on which all examples agree keep a static size in the returned tensors.
    """

    def __init__(self, data: SplitData, initial_masks: Sequence[np.ndarray]):
        if not len(data):
            raise ValueError(f"{data.csv_path}: the split has no examples")
        shapes = np.array([data.shape(i) for i in range(len(data))], dtype=np.int64)
        self.size = len(data)
        self.uniform = tuple(int(v) for v in shapes[0]) if np.all(shapes == shapes[0]) else None
        self.static = [int(shapes[0, a]) if np.all(shapes[:, a] == shapes[0, a]) else None for a in range(4)]
        self.shapes = tf.constant(shapes)
        self.image, self.image_at = _flatten(data.image, np.complex64)
        self.maps, self.maps_at = _flatten(data.coil_maps, np.complex64)
        self.kspace, self.kspace_at = (_flatten(data.kspace, np.complex64) if data.kspace is not None
                                       else (None, None))
        self.initial, self.initial_at = _flatten([_time_major(m) for m in initial_masks], np.float32)
        geometries = sorted({(int(s[2]), int(s[0])) for s in shapes})  # (ny, nt)
        self.geometries = geometries
        self.group = tf.constant(np.array([geometries.index((int(s[2]), int(s[0]))) for s in shapes], np.int32))
        # subjects renumbered 0..S-1 with the [first, first + count) range of their examples (CSV order keeps
        # the slices of a subject together)
        subjects = np.asarray(data.subjects)
        _, first, counts = np.unique(subjects, return_index=True, return_counts=True)
        order = np.argsort(first)  # subjects in order of first appearance, as _renumber numbers them
        self.num_subjects = len(first)
        self.subject = tf.constant(_renumber(subjects))
        self.subject_first = tf.constant(first[order].astype(np.int32))
        self.subject_count = tf.constant(counts[order].astype(np.int32))

    def dims(self, i: tf.Tensor) -> tuple[Any, Any, Any, Any]:
        """(T, X, Y, C) of example ``i``: Python ints for the axes all examples share, else int64 scalars."""
        if self.uniform is not None:
            return self.uniform
        s = tf.gather(self.shapes, i)
        t, x, y, c = (size if size is not None else s[a] for a, size in enumerate(self.static))
        return t, x, y, c

    def example(self, i: tf.Tensor) -> dict[str, tf.Tensor]:
        """Fully sampled data of example ``i``: ``kspace`` (T,X,Y,C), ``image`` (T,X,Y,1), ``coil_maps``
        (1,X,Y,C), ``initial`` (T,1,Y,1) float32 acquisition mask."""
        t, x, y, c = self.dims(i)
        image = _take(self.image, tf.gather(self.image_at, i), t * x * y, [t, x, y, 1])
        maps = _take(self.maps, tf.gather(self.maps_at, i), x * y * c, [1, x, y, c])
        if self.kspace is not None:
            kspace = _take(self.kspace, tf.gather(self.kspace_at, i), t * x * y * c, [t, x, y, c])
        else:
            kspace = mri.fft2c(_broadcast_mul(image, maps, tf.stack([t, x, y, c]))[None])[0]
        initial = _take(self.initial, tf.gather(self.initial_at, i), t * y, [t, 1, y, 1])
        return {"kspace": kspace, "image": image, "coil_maps": maps, "initial": initial}


def _renumber(subjects: np.ndarray) -> np.ndarray:
    """Subject ids renumbered 0..S-1 in order of first appearance."""
    mapping: dict[int, int] = {}
    for s in subjects:
        mapping.setdefault(int(s), len(mapping))
    return np.array([mapping[int(s)] for s in subjects], dtype=np.int32)


def _initial_masks(cfg: DataConfig, data: SplitData) -> list[np.ndarray]:
    """Acquisition masks ``M_0`` (ny, nt) of the feature stage.

    ``initial_acc == 1``: fully sampled acquisition (all ones). Otherwise the mask stored with the subject (the
    original's ``mask_GRAPPA_*``, the HDF5 ``initial_mask``) or, when there is none, the equispaced mask at
    ``initial_acc``.
    """
    from data_loader.masks import effective_acceleration, equispaced_mask

    if cfg.masks == "prospective":
        return _prospective_masks(cfg, data)
    acc = float(cfg.initial_acc)
    out, stored, generated = [], 0, 0
    for i in range(len(data)):
        t, _, y, _ = data.shape(i)
        if acc <= 1.0:
            out.append(np.ones((y, t), np.int64))
        elif data.initial_mask[i] is not None:
            out.append(np.asarray(data.initial_mask[i]))
            stored += 1
        else:
            out.append(equispaced_mask(y, t, acc=acc))
            generated += 1
    if stored:
        measured = sorted({round(effective_acceleration(m), 2) for m in out if m is not None})
        logger.info("initial masks: %d stored with the data (effective R %s), %d equispaced at R=%g", stored,
                    measured[:5], generated, acc)
    return out


def _prospective_masks(cfg: DataConfig, data: SplitData) -> list[np.ndarray]:
    """Per example the (ny, nt) stored prospective mask ``data.prospective_mask`` of its subject."""
    from data_loader.prospective import split_line_masks

    return split_line_masks(cfg, data)


# ---------------------------------------------------------------------------------- random draws
def _key(seed: int, stream: int) -> tf.Tensor:
    return tf.constant([int(seed), int(stream)], dtype=tf.int64)


def _fold(key: tf.Tensor, *values: Any) -> tf.Tensor:
    for v in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(v, tf.int64))
    return key


def _uniform_int(key: tf.Tensor, n: Any) -> tf.Tensor:
    """int32 scalar uniform in [0, n)."""
    return tf.random.stateless_uniform([], seed=key, minval=0, maxval=tf.cast(n, tf.int32), dtype=tf.int32)


def _categorical(key: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """int32 index drawn with probability proportional to the non-negative ``weights`` (1-D)."""
    logits = tf.math.log(tf.cast(weights, tf.float32))[None]
    return tf.random.stateless_categorical(logits, 1, seed=key, dtype=tf.int32)[0, 0]


def _draw_other(key: tf.Tensor, n: Any, exclude: tf.Tensor, identical: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Index uniform in ``[0, n)`` without ``exclude``, redrawn (at most ``_MAX_REDRAWS`` times) while
    ``identical(index)``; uniform over the other indices exactly as the original's rejection loop."""
    def draw(attempt):
        k = _uniform_int(_fold(key, attempt), tf.cast(n, tf.int32) - 1)
        return k + tf.cast(k >= exclude, tf.int32)

    def keep_going(attempt, index):
        return tf.logical_and(attempt < _MAX_REDRAWS, identical(index))

    def again(attempt, index):
        return attempt + 1, draw(attempt + 1)

    start = tf.constant(0, tf.int64)
    _, index = tf.while_loop(keep_going, again, (start, draw(start)))
    return index


def _same(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.reduce_all(tf.equal(a, b))


def _broadcast_mul(a: tf.Tensor, b: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """``a * b`` with both broadcast to ``shape`` first: tf's implicitly broadcasting complex multiply is about ten
    times slower on CPU than materialising the operands (same values, bit for bit)."""
    return tf.broadcast_to(a, shape) * tf.broadcast_to(b, shape)


def _view(kspace: tf.Tensor, coil_maps: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
    """One view: ``y = mask * k`` (T,X,Y,C), ``x = A^H y`` (T,X,Y,1), the mask (T,1,Y,1) and the maps."""
    shape = tf.shape(kspace)
    y = _broadcast_mul(kspace, tf.cast(mask, kspace.dtype), shape)
    # A^H y = sum_c conj(s_c) ifft2c(mask * y) (utils.mri.adjoint); y is already masked by a 0/1 mask, so the
    # adjoint's second masking changes nothing and is skipped
    coil_images = mri.ifft2c(y[None])[0]
    x = tf.reduce_sum(coil_images * tf.math.conj(coil_maps), axis=-1, keepdims=True)
    return {"x": x, "y": y, "mask": mask, "coil_maps": coil_maps}


# ------------------------------------------------------------------------------------ index stream
def _index_stream(n: int, seed: int, shuffle: bool, repeat: bool) -> tf.data.Dataset:
    """``(epoch, index)`` int64 pairs: every epoch a full stateless permutation (``shuffle``) or 0..n-1."""
    shuffle_key = _key(seed, _STREAM_SHUFFLE)
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)

    def one_epoch(epoch):
        if shuffle:
            order = tf.argsort(tf.random.stateless_uniform([n], seed=_fold(shuffle_key, epoch)))
        else:
            order = tf.range(n)
        return tf.data.Dataset.from_tensor_slices((tf.fill([n], epoch), tf.cast(order, tf.int64)))

    return epochs.flat_map(one_epoch)


def _parallel(cfg: DataConfig) -> int:
    n = int(cfg.num_parallel_calls)
    return tf.data.AUTOTUNE if n < 0 else max(1, n)


def _finish(ds: tf.data.Dataset, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _resolve_seed(cfg: DataConfig, seed: int | None) -> int:
    return int(cfg.seed if seed is None else seed)


# --------------------------------------------------------------------------------------- dummy mode
def _dummy_size(cfg: DataConfig) -> tuple[int, int, int, int]:
    if len(cfg.size) != 4 or min(cfg.size) < 1:
        raise ValueError(f"data.size: expected [T, X, Y, C] of positive ints, got {cfg.size}")
    t, x, y, c = (int(v) for v in cfg.size)
    return t, x, y, c


def _rand_complex(key: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """Real and imaginary parts uniform in [0, 1), like ``np.random.rand`` in the original dummy loaders."""
    re_key, im_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    return tf.complex(tf.random.stateless_uniform(shape, seed=re_key), tf.random.stateless_uniform(shape, seed=im_key))


def _dummy_view(key: tf.Tensor, size: tuple[int, int, int, int]) -> dict[str, tf.Tensor]:
    t, x, y, c = size
    keys = tf.unstack(tf.random.experimental.stateless_split(key, 4))
    mask = tf.cast(tf.random.stateless_uniform([t, 1, y, 1], seed=keys[2]) < 0.5, tf.float32)
    return {"x": _rand_complex(keys[0], [t, x, y, 1]), "y": _rand_complex(keys[1], [t, x, y, c]), "mask": mask,
            "coil_maps": _rand_complex(keys[3], [1, x, y, c])}


def _dummy_dataset(cfg: DataConfig, split: str, seed: int, repeat: bool,
                   make: Callable[[tf.Tensor], dict]) -> tf.data.Dataset:
    n = num_examples(cfg, split)
    base = _key(seed, _STREAM_DUMMY)
    train = split == "train"

    def example(epoch, index):
        return make(_fold(base, epoch if train else 0, index))

    return _index_stream(n, seed, False, repeat).map(example, num_parallel_calls=_parallel(cfg))


# ---------------------------------------------------------------------------------- feature stage
def _contrastive_table(cfg: DataConfig, accs: Sequence[float]) -> np.ndarray:
    """(R, R) 0/1 weights of ``R_3`` given ``R_1`` under the ``diff`` rule."""
    a = np.asarray(accs, dtype=np.float64)
    return (np.abs(a[:, None] - a[None, :]) >= float(cfg.contrastive_min_gap) - 1e-9).astype(np.float32)


def feature_dataset(cfg: DataConfig, method: str, split: str = "train", seed: int | None = None,
                    repeat: bool = True) -> tf.data.Dataset:
    """Stage-1 (feature learning) examples, already batched to 1.

    Args:
        cfg: data config.
        method: ``"vicreg"`` (2 views of one slice) or ``"contrastive"`` (2 views of subject A, 1 of subject B).
        split: ``train`` (reshuffled every epoch, new masks every epoch) or ``val``/``test`` (CSV order, the same
            masks on every pass).
        seed: stream seed (default ``data.seed``); the same seed gives the same stream.
        repeat: endless stream (True) or a single pass over the split.

    Returns:
        dataset of ``{"views": (view_1, ..., view_V)}`` with V = 2 (vicreg) or 3 (contrastive); each view is a dict
        ``x`` (1,T,X,Y,1) complex64, ``y`` (1,T,X,Y,C) complex64, ``mask`` (1,T,1,Y,1) float32 (the effective
        mask: initial times re-undersampling mask) and ``coil_maps`` (1,1,X,Y,C) complex64.

    Raises:
        ValueError: unknown method or split, a contrastive split with fewer than two subjects, mask settings that
            cannot give different views, or the readers' data errors (naming the file).
        FileNotFoundError: missing data folder, CSV or file.
    """
    if method not in FEATURE_METHODS:
        raise ValueError(f"method: expected one of {list(FEATURE_METHODS)}, got {method!r}")
    _check_split(split)
    seed = _resolve_seed(cfg, seed)
    num_views = 2 if method == "vicreg" else 3
    if cfg.dummy:
        size = _dummy_size(cfg)

        def make(key):
            keys = tf.unstack(tf.random.experimental.stateless_split(key, num_views))
            return {"views": tuple(_dummy_view(k, size) for k in keys)}

        return _finish(_dummy_dataset(cfg, split, seed, repeat, make), 1, True)

    data = load_split(cfg, split)
    store = _Store(data, _initial_masks(cfg, data))
    accs = acceleration_grid(cfg.min_r, cfg.max_r)
    bank = _MaskBank(cfg, store.geometries, accs)
    example = (_vicreg_example if method == "vicreg" else _contrastive_example)(cfg, store, bank, seed, split)
    ds = _index_stream(store.size, seed, split == "train", repeat)
    ds = ds.map(example, num_parallel_calls=_parallel(cfg))
    return _finish(ds, 1, True)


def _require_two_masks(bank: _MaskBank, what: str) -> None:
    if min(bank.distinct_total) < 2:
        raise ValueError(f"data: one distinct {what} only (R in {bank.accs}, {bank.num_seeds} seed(s), kind "
                         f"{bank.kind!r}); two different views need more accelerations or seeds")


def _vicreg_example(cfg: DataConfig, store: _Store, bank: _MaskBank, seed: int, split: str):
    num_pairs = bank.num_accs * bank.num_seeds
    _require_two_masks(bank, "mask")
    base = _key(seed, _STREAM_VICREG)
    train = split == "train"
    seeds = bank.num_seeds

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        key = _fold(base, epoch if train else 0, i)
        k1, k2 = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        d = store.example(i)
        t, _, y, _ = store.dims(i)
        group = tf.gather(store.group, i)

        def effective(pair):
            return d["initial"] * bank.mask(group, pair // seeds, pair % seeds, t, y)

        first = _uniform_int(k1, num_pairs)
        mask_1 = effective(first)
        second = _draw_other(k2, num_pairs, first, lambda p: _same(effective(p), mask_1))
        views = (_view(d["kspace"], d["coil_maps"], mask_1),
                 _view(d["kspace"], d["coil_maps"], effective(second)))
        return {"views": views}

    return example


def _contrastive_example(cfg: DataConfig, store: _Store, bank: _MaskBank, seed: int, split: str):
    if store.num_subjects < 2:
        raise ValueError(f"contrastive feature learning needs at least 2 subjects in the {split!r} split "
                         f"(negative view from another subject); {store.num_subjects} found")
    if bank.num_seeds < 2 or min(max(d) for d in bank.distinct) < 2:
        raise ValueError(f"contrastive positives need two different masks at one acceleration: mask_kind "
                         f"{bank.kind!r} with {bank.num_seeds} seed(s) gives only one (data.mask_seeds >= 2 and a "
                         f"seeded generator)")
    seeds, num_accs = bank.num_seeds, bank.num_accs
    if cfg.contrastive_rule == "diff":
        table = _contrastive_table(cfg, bank.accs)
        allowed = table.max(axis=1)
        if not allowed.any():
            raise ValueError(f"data.contrastive_min_gap={cfg.contrastive_min_gap:g}: no two accelerations of "
                             f"{bank.accs} (data.min_r/max_r) differ by that much; the diff rule cannot hold")
        if not allowed.all():
            logger.warning("contrastive diff rule: R1 in %s has no R3 at least %g away; those R1 are not drawn",
                           [f"{a:g}" for a, ok in zip(bank.accs, allowed) if not ok], cfg.contrastive_min_gap)
    elif cfg.contrastive_rule == "random":
        if num_accs * seeds < 3:
            raise ValueError("contrastive random rule needs at least 3 (R, seed) pairs; raise data.mask_seeds")
        table = np.ones((num_accs, num_accs), np.float32)
        allowed = np.ones(num_accs, np.float32)
    else:
        raise ValueError(f"data.contrastive_rule: expected 'diff' or 'random', got {cfg.contrastive_rule!r}")
    table_t, allowed_t = tf.constant(table), tf.constant(allowed)
    rule_random = cfg.contrastive_rule == "random"
    base = _key(seed, _STREAM_CONTRASTIVE)
    train = split == "train"

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        key = _fold(base, epoch if train else 0, i)
        keys = tf.unstack(tf.random.experimental.stateless_split(key, 6))
        # subject B: uniform among the other subjects, then one of its slices, as the original
        subject_a = tf.gather(store.subject, i)
        other = _uniform_int(keys[0], store.num_subjects - 1)
        subject_b = other + tf.cast(other >= subject_a, tf.int32)
        j = tf.gather(store.subject_first, subject_b) + _uniform_int(keys[1], tf.gather(store.subject_count,
                                                                                          subject_b))
        a, b = store.example(i), store.example(j)
        t_a, _, y_a, _ = store.dims(i)
        t_b, _, y_b, _ = store.dims(j)
        group_a, group_b = tf.gather(store.group, i), tf.gather(store.group, j)

        r1 = _categorical(keys[2], allowed_t)
        s1 = _uniform_int(keys[3], seeds)
        mask_1 = a["initial"] * bank.mask(group_a, r1, s1, t_a, y_a)
        s2 = _draw_other(keys[4], seeds, s1,
                         lambda s: _same(a["initial"] * bank.mask(group_a, r1, s, t_a, y_a), mask_1))
        mask_2 = a["initial"] * bank.mask(group_a, r1, s2, t_a, y_a)
        if rule_random:
            # any (R, seed) pair except those of views 1 and 2
            weights = tf.tensor_scatter_nd_update(tf.ones([num_accs * seeds]),
                                                  tf.stack([[r1 * seeds + s1], [r1 * seeds + s2]]), [0.0, 0.0])
            pair = _categorical(keys[5], weights)
            r3, s3 = pair // seeds, pair % seeds
        else:
            r_key, s_key = tf.unstack(tf.random.experimental.stateless_split(keys[5], 2))
            r3 = _categorical(r_key, tf.gather(table_t, r1))
            s3 = _uniform_int(s_key, seeds)
        mask_3 = b["initial"] * bank.mask(group_b, r3, s3, t_b, y_b)
        views = (_view(a["kspace"], a["coil_maps"], mask_1), _view(a["kspace"], a["coil_maps"], mask_2),
                 _view(b["kspace"], b["coil_maps"], mask_3))
        return {"views": views}

    return example


# ------------------------------------------------------------------------------------ recon stage
def _fully_sampled_store(cfg: DataConfig, split: str, batch_size: int) -> tuple[SplitData, _Store]:
    """The split's slices with an all-ones initial mask (``data.masks: prospective``: the stored prospective
    mask); batching needs slices of one size."""
    data = load_split(cfg, split)
    initial = (_prospective_masks(cfg, data) if cfg.masks == "prospective" else
               [np.ones((data.shape(i)[2], data.shape(i)[0]), np.int64) for i in range(len(data))])
    store = _Store(data, initial)
    if int(batch_size) > 1 and store.uniform is None:
        raise ValueError(f"{data.csv_path}: slices of different sizes cannot be batched (batch_size="
                         f"{batch_size}); use batch_size 1")
    return data, store


def recon_dataset(cfg: DataConfig, split: str = "train", seed: int | None = None, repeat: bool = True,
                  batch_size: int = 1) -> tf.data.Dataset:
    """Stage-2 (self-supervised reconstruction) examples: two views of one acquisition.

    The acquisition is the base mask (``data.mask_kind`` at ``start_r``, seed 10; with ``data.masks:
    prospective`` the case's stored prospective mask); each view multiplies it by a re-undersampling mask with R
    on the grid of ``train_r`` (training) or at ``val_r`` (``val``/``test``), the two views with different masks.

    Args:
        cfg: data config.
        split: ``train`` (reshuffled and new masks every epoch) or ``val``/``test`` (CSV order, fixed masks).
        seed: stream seed (default ``data.seed``).
        repeat: endless stream (True) or a single pass (the last batch may then be smaller).
        batch_size: examples per batch (> 1 needs slices of one size).

    Returns:
        dataset of ``{"view1": {"x", "y", "mask"}, "view2": {"x", "y", "mask"}, "coil_maps", "reference"}``:
        ``x`` (B,T,X,Y,1) complex64 = A^H y, ``y`` (B,T,X,Y,C) complex64, ``mask`` (B,T,1,Y,1) float32 (effective:
        base times re-undersampling mask), ``coil_maps`` (B,1,X,Y,C) complex64 and ``reference`` (B,T,X,Y,1)
        complex64, the fully sampled image.

    Raises:
        ValueError: bad split or batch size, mask settings that cannot give two different views, data errors.
        FileNotFoundError: missing data folder, CSV or file.
    """
    _check_split(split)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    seed = _resolve_seed(cfg, seed)
    if cfg.dummy:
        size = _dummy_size(cfg)

        def make(key):
            k1, k2, k3 = tf.unstack(tf.random.experimental.stateless_split(key, 3))
            v1, v2 = _dummy_view(k1, size), _dummy_view(k2, size)
            maps = v1.pop("coil_maps")
            v2.pop("coil_maps")
            return {"view1": v1, "view2": v2, "coil_maps": maps, "reference": _rand_complex(k3, [*size[:3], 1])}

        return _finish(_dummy_dataset(cfg, split, seed, repeat, make), int(batch_size), repeat)

    # the recon stage takes the fully sampled data as its source, as the original (no initial mask)
    data, store = _fully_sampled_store(cfg, split, batch_size)
    accs = acceleration_grid(*cfg.train_r) if split == "train" else [float(cfg.val_r)]
    prospective = cfg.masks == "prospective"
    bank = _MaskBank(cfg, store.geometries, accs, base_acc=None if prospective else float(cfg.start_r))
    num_pairs = bank.num_accs * bank.num_seeds
    _require_two_masks(bank, "re-undersampling mask")
    base_key = _key(seed, _STREAM_RECON)
    train = split == "train"
    seeds = bank.num_seeds

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        key = _fold(base_key, epoch if train else 0, i)
        k1, k2 = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        d = store.example(i)
        t, _, y, _ = store.dims(i)
        group = tf.gather(store.group, i)
        acquired = d["initial"] if prospective else bank.base_mask(group, t, y)

        def effective(pair):
            return acquired * bank.mask(group, pair // seeds, pair % seeds, t, y)

        first = _uniform_int(k1, num_pairs)
        mask_1 = effective(first)
        second = _draw_other(k2, num_pairs, first, lambda p: _same(effective(p), mask_1))
        v1 = _view(d["kspace"], d["coil_maps"], mask_1)
        v2 = _view(d["kspace"], d["coil_maps"], effective(second))
        maps = v1.pop("coil_maps")
        v2.pop("coil_maps")
        return {"view1": v1, "view2": v2, "coil_maps": maps, "reference": d["image"]}

    ds = _index_stream(store.size, seed, train, repeat).map(example, num_parallel_calls=_parallel(cfg))
    return _finish(ds, int(batch_size), repeat)


# -------------------------------------------------------------------------------------- evaluation
def _case_seed(seed: int, index: int) -> int:
    """Mask seed of evaluation case ``index``: independent per (seed, index), below 2**31 for every generator."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] % (2**31 - 1))


def eval_cases(cfg: DataConfig, split: str, acc: float, mask_kind: str = "vista",
               seed: int = 0) -> Iterator[dict[str, Any]]:
    """Evaluation cases of ``split`` at acceleration ``acc``, one per (subject, slice), in CSV order.

    Each case samples the fully sampled k-space (stored, or ``fft2c(image * maps)`` for the original layout) with
    a mask of kind ``mask_kind`` whose seed is derived from ``seed`` and the case index, so the same arguments
    give the same cases. These masks are retrospective also with ``data.masks: prospective`` (prepared files hold
    fully sampled k-space, so every method is scored on the same masks).

    Args:
        cfg: data config.
        split: ``train``, ``val`` or ``test``.
        acc: acceleration of the evaluation masks.
        mask_kind: ``vista`` (cached on disk), ``vd-random``, ``gaussian`` or ``equispaced``.
        seed: base seed of the case masks.

    Yields:
        dicts of numpy arrays with batch axis 1: ``name`` (str), ``x`` (1,T,X,Y,1) complex64 zero-filled image
        A^H y, ``y`` (1,T,X,Y,C) complex64, ``mask`` (1,T,1,Y,1) float32, ``coil_maps`` (1,1,X,Y,C) complex64 and
        ``reference`` (1,T,X,Y,1) complex64.
    """
    from data_loader.masks import mask_to_tensor_layout

    _check_split(split)
    if cfg.dummy:
        t, x, y, c = _dummy_size(cfg)
        for index in range(num_examples(cfg, split)):
            rng = np.random.default_rng(_case_seed(seed, index))

            def rand(*shape):
                return (rng.random(shape, dtype=np.float32) + 1j * rng.random(shape, dtype=np.float32)).astype(
                    np.complex64)

            yield {"name": f"dummy_{index:03d}", "x": rand(1, t, x, y, 1), "y": rand(1, t, x, y, c),
                   "mask": rng.integers(0, 2, (1, t, 1, y, 1)).astype(np.float32),
                   "coil_maps": rand(1, 1, x, y, c), "reference": rand(1, t, x, y, 1)}
        return
    data = load_split(cfg, split)
    cache = _cache_dir(cfg)
    for index in range(len(data)):
        t, _, ny, _ = data.shape(index)
        mask = mask_to_tensor_layout(_make_mask(mask_kind, ny, t, float(acc), _case_seed(seed, index), cache))
        maps = data.coil_maps[index][None]
        kspace = mask * data.fully_sampled_kspace(index)[None]
        yield {
            "name": data.names[index],
            "x": mri.adjoint_np(kspace, mask, maps).astype(np.complex64),
            "y": kspace.astype(np.complex64),
            "mask": mask,
            "coil_maps": maps,
            "reference": data.image[index][None],
        }


# ------------------------------------------------------------------------------------ synthetic data
def _stamp(cfg: DataConfig) -> dict[str, Any]:
    snr = float(cfg.snr_db)
    return {"version": _STAMP_VERSION, "size": [int(v) for v in cfg.size], "subjects": int(cfg.subjects),
            "seed": int(cfg.seed), "snr_db": snr if math.isfinite(snr) else None}


def ensure_synthetic_data(cfg: DataConfig) -> Path:
    """Generates the synthetic data set into ``data.root`` unless it is already there with the same parameters.

    Only for ``data.source == "synthetic"`` (and not in dummy mode); otherwise returns ``data.root`` untouched.
    The data set is current when the three split CSVs exist and the stamp file ``.ssfl_synthetic.json`` in the
    folder records the same ``size``, ``subjects``, ``seed`` and ``snr_db``; else ``make-data`` (both layouts,
    one slice per subject) writes it again and the stamp is written last, so an interrupted generation is redone.

    Args:
        cfg: data config.

    Returns:
        the data folder.
    """
    root = Path(cfg.root).expanduser()
    if cfg.source != "synthetic" or cfg.dummy:
        return root
    wanted = _stamp(cfg)
    stamp_path = root / _STAMP_NAME
    csvs = [split_csv_path(cfg, s) for s in SPLITS]
    if all(p.is_file() for p in csvs) and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text(encoding="utf-8")) == wanted:
                logger.debug("synthetic data in %s are current", root)
                return root
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable stamp (%s); regenerating", stamp_path, err)
    if any(p.is_file() for p in csvs):
        logger.warning("%s holds a data set made with other parameters (or no stamp); regenerating it with %s",
                       root, wanted)
    start = time.perf_counter()
    generate_dataset(SyntheticSpec(out=root, subjects=wanted["subjects"], size=_dummy_size(cfg),
                                   seed=wanted["seed"], snr=wanted["snr_db"], layout="both"))
    missing = [str(p) for p in csvs if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the synthetic generator did not write the configured split CSV(s) {missing} "
                                "(data.train_csv/val_csv/test_csv must name files make-data writes)")
    atomic_write_text(stamp_path, json.dumps(wanted, indent=2) + "\n")
    logger.info("synthetic data written to %s in %.1f s", root, time.perf_counter() - start)
    return root


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


# ------------------------------------------------------------------------------ acquired data (baselines)
def _acquired_mask(kind: str, ny: int, nt: int, acc: float, seed: int, cache_dir: Path | None,
                   num_center: int | None) -> np.ndarray:
    """(ny, nt) mask of ``kind``; ``num_center`` (for the kinds that take it) is capped at half the lines of a
    frame, so small test images still get random lines outside the centre."""
    from data_loader.masks import generate_mask
    from data_loader.vista import lines_per_frame

    if num_center is None or kind == "vista":
        return _make_mask(kind, ny, nt, acc, seed, cache_dir)
    capped = int(min(int(num_center), max(1, lines_per_frame(ny, acc) // 2)))
    try:
        return generate_mask(kind, ny, nt, acc, seed=seed, num_center=capped)
    except ValueError as err:
        raise ValueError(f"mask kind {kind!r}: cannot make a mask for ny={ny}, nt={nt}, R={acc:g}, seed {seed}, "
                         f"num_center {capped}: {err}") from err


def acquired_dataset(cfg: DataConfig, split: str = "train", seed: int | None = None, repeat: bool = True,
                     batch_size: int = 1, mask_kind: str | None = None,
                     accelerations: Sequence[float] | None = None,
                     num_center: int | None = None) -> tf.data.Dataset:
    """Acquired (undersampled) data with the fully sampled reference: the input of the baselines.

    With ``accelerations=None`` every example is sampled with the acquisition of :func:`recon_dataset`, the base
    mask of kind ``mask_kind`` at ``data.start_r`` with seed 10 (so self-supervised baselines see exactly the data
    SSFL-Recon re-undersamples). Otherwise each example gets, anew every epoch on the training split, a mask drawn
    uniformly among the accelerations ``accelerations`` x the seeds ``1..data.mask_seeds`` (fixed per example on
    ``val``/``test``). With ``data.masks: prospective`` the acquisition is the case's stored prospective mask, and
    masks drawn at ``accelerations`` are multiplied by it.

    Args:
        cfg: data config.
        split: ``train`` (reshuffled every epoch) or ``val``/``test`` (CSV order).
        seed: stream seed (default ``data.seed``).
        repeat: endless stream (True) or a single pass.
        batch_size: examples per batch (> 1 needs slices of one size).
        mask_kind: mask generator (default ``data.mask_kind``).
        accelerations: None (the base acquisition) or the R values to draw from.
        num_center: fully sampled central lines for the kinds that take it (``vd-random``, ``gaussian``,
            ``equispaced``), at most half the lines of a frame; None: the generator's default.

    Returns:
        dataset of ``{"x", "y", "mask", "coil_maps", "reference"}``: ``x`` (B,T,X,Y,1) complex64 = A^H y, ``y``
        (B,T,X,Y,C) complex64, ``mask`` (B,T,1,Y,1) float32, ``coil_maps`` (B,1,X,Y,C) complex64, ``reference``
        (B,T,X,Y,1) complex64 fully sampled image.

    Raises:
        ValueError: bad split, batch size or accelerations, masks that cannot be made, data errors.
        FileNotFoundError: missing data folder, CSV or file.
    """
    _check_split(split)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    seed = _resolve_seed(cfg, seed)
    kind = mask_kind or cfg.mask_kind
    if accelerations is not None:
        accelerations = [float(a) for a in accelerations]
        if not accelerations or not all(math.isfinite(a) and a >= 1.0 for a in accelerations):
            raise ValueError(f"accelerations: expected a non-empty list of R >= 1, got {accelerations}")
    if cfg.dummy:
        size = _dummy_size(cfg)

        def make(key):
            k1, k2 = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            view = _dummy_view(k1, size)
            view["reference"] = _rand_complex(k2, [*size[:3], 1])
            return view

        return _finish(_dummy_dataset(cfg, split, seed, repeat, make), int(batch_size), repeat)

    _, store = _fully_sampled_store(cfg, split, batch_size)
    cache = _cache_dir(cfg)
    if accelerations is None:
        accs, seeds = [float(cfg.start_r)], [BASE_MASK_SEED]
    else:
        accs, seeds = accelerations, _mask_seeds(cfg)
    prospective = cfg.masks == "prospective"
    bank = None if prospective and accelerations is None else _MaskBank(
        cfg, store.geometries, accs, kind=kind, seeds=seeds,
        make=lambda ny, nt, acc, s: _acquired_mask(kind, ny, nt, acc, s, cache, num_center))
    base_key = _key(seed, _STREAM_RECON + 100)
    train = split == "train"

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        d = store.example(i)
        if bank is None:
            mask = d["initial"]
        else:
            t, _, y, _ = store.dims(i)
            group = tf.gather(store.group, i)
            pair = _uniform_int(_fold(base_key, epoch if train else 0, i), bank.num_accs * bank.num_seeds)
            mask = bank.mask(group, pair // bank.num_seeds, pair % bank.num_seeds, t, y)
            mask = d["initial"] * mask if prospective else mask
        view = _view(d["kspace"], d["coil_maps"], mask)
        view["reference"] = d["image"]
        return view

    ds = _index_stream(store.size, seed, train, repeat).map(example, num_parallel_calls=_parallel(cfg))
    return _finish(ds, int(batch_size), repeat)
