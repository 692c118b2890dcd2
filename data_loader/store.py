"""The split in memory: examples read from disk, the re-undersampling mask bank and the graph-mode store.

:func:`load_split` reads every (subject, slice) of a split through :mod:`data_loader.formats` into a
:class:`SplitData`. :class:`SplitStore` holds a split's arrays as flat tensors with per-example offsets (slices of
different sizes share one code path) and :class:`MaskBank` every re-undersampling mask of the split's geometries,
generated up front (VISTA through the on-disk cache of :func:`data_loader.masks.get_vista_mask`); the example
functions of :mod:`data_loader.datasets` gather from both in graph mode.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from data_loader import formats
from data_loader.masks import effective_acceleration, equispaced_mask, generate_mask, get_vista_mask
from data_loader.prospective import split_line_masks
from data_loader.video_windows import window_and_normalise
from utils import mri
from utils.schema import DataConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The original reconstruction loader always takes the acquired (base) VISTA mask with seed 10.
BASE_MASK_SEED = 10
# Generators whose pattern ignores the seed: one seed per acceleration is enough (more would only add duplicates).
_DETERMINISTIC_KINDS = ("equispaced",)


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


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")


def split_csv_path(cfg: DataConfig, split: str) -> Path:
    """The CSV of ``split`` (``data.train_csv`` / ``val_csv`` / ``test_csv``, relative to ``data.root``)."""
    check_split(split)
    name = Path(getattr(cfg, f"{split}_csv"))
    return name if name.is_absolute() else Path(cfg.root).expanduser() / name


def split_reader(cfg: DataConfig, split: str):
    """The :mod:`data_loader.formats` item reader of ``split`` (errors from the readers name the file)."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        hint = (" (run `ssfl-recon make-data` or call data_loader.synthetic.ensure_synthetic_data)"
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
    reader = split_reader(cfg, split)
    data = SplitData(csv_path=Path(reader.csv_path), kspace=None if cfg.source == "original" else [])
    slice_counts = [row.slices for row in reader.rows]
    if cfg.time_window and cfg.masks == "prospective":
        raise ValueError("data.time_window: not with data.masks: prospective (the stored masks cover whole cines)")
    for index in range(len(reader)):
        subject, sl = reader.items[index]
        item = reader[index]
        name = item["name"] if slice_counts[subject] == 1 else f"{item['name']}_slice{sl}"
        coil_maps = np.ascontiguousarray(item["coil_maps"], dtype=np.complex64)
        kspace = None if data.kspace is None else np.ascontiguousarray(item["kspace"], dtype=np.complex64)
        # DDEI's time windows and per-video normalisation (data.time_window, data.video_normalisation)
        for entry in window_and_normalise(name, np.ascontiguousarray(item["image"], dtype=np.complex64), kspace,
                                          coil_maps, item.get("initial_mask"), cfg.time_window,
                                          cfg.video_normalisation):
            data.names.append(entry["name"])
            data.subjects.append(int(subject))
            data.slices.append(int(sl))
            data.image.append(np.ascontiguousarray(entry["image"]))
            data.coil_maps.append(coil_maps)
            if data.kspace is not None:
                data.kspace.append(np.ascontiguousarray(entry["kspace"]))
            data.initial_mask.append(entry["initial_mask"])
    logger.info("loaded %d example(s) of %d subject(s) from %s", len(data), len(reader.rows), data.csv_path)
    return data


def num_examples(cfg: DataConfig, split: str) -> int:
    """Number of examples (subject, slice pairs) of ``split`` per epoch, read from the CSV only.

    In dummy mode this is ``data.subjects`` for every split (the original dummy loaders had a fixed count too).
    """
    check_split(split)
    if cfg.dummy:
        return max(1, int(cfg.subjects))
    csv_path = split_csv_path(cfg, split)
    rows = formats.read_dataset_csv(csv_path)
    if cfg.time_window:  # every full window of every slice is an example
        return sum(row.slices * (row.nt // int(cfg.time_window)) for row in rows)
    return sum(row.slices for row in rows)



def data_size(cfg: DataConfig) -> tuple[int, int, int, int]:
    """(T, X, Y, C) of ``data.size`` (dummy and synthetic data), validated."""
    if len(cfg.size) != 4 or min(cfg.size) < 1:
        raise ValueError(f"data.size: expected [T, X, Y, C] of positive ints, got {cfg.size}")
    t, x, y, c = (int(v) for v in cfg.size)
    return t, x, y, c


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


def mask_seeds(cfg: DataConfig) -> list[int]:
    """Seeds 1..mask_seeds as the original's ``random.randint(1, 20)``; one seed for seed-free generators."""
    if cfg.mask_kind in _DETERMINISTIC_KINDS:
        return [1]
    if int(cfg.mask_seeds) < 1:
        raise ValueError(f"data.mask_seeds: expected >= 1, got {cfg.mask_seeds}")
    return list(range(1, int(cfg.mask_seeds) + 1))


def mask_cache_dir(cfg: DataConfig) -> Path | None:
    return Path(cfg.mask_cache).expanduser() if cfg.mask_cache else None


def make_mask(kind: str, ny: int, nt: int, acc: float, seed: int, cache_dir: Path | None) -> np.ndarray:
    """(ny, nt) int 0/1 mask; VISTA masks come from (and go to) the on-disk cache, being slow to generate."""
    try:
        if kind == "vista":
            return get_vista_mask(ny, nt, acc, seed, cache_dir=cache_dir)
        return generate_mask(kind, ny, nt, acc, seed=seed)
    except ValueError as err:
        raise ValueError(f"data.mask_kind {kind!r}: cannot make a mask for ny={ny}, nt={nt}, R={acc:g}, "
                         f"seed {seed}: {err}") from err


def time_major(mask: np.ndarray) -> np.ndarray:
    """(ny, nt) -> flat (nt * ny,) float32, the memory order of the (T,1,Y,1) tensor layout."""
    return np.ascontiguousarray(np.asarray(mask).T, dtype=np.float32).ravel()


class MaskBank:
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
        self.seeds = list(seeds) if seeds is not None else mask_seeds(cfg)
        cache = mask_cache_dir(cfg)
        if make is None:
            def make(ny, nt, acc, seed):
                return make_mask(self.kind, ny, nt, acc, seed, cache)
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
                    mask = time_major(make(ny, nt, acc, seed))
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
                mask = time_major(make(ny, nt, base_acc, BASE_MASK_SEED))
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
        return take_flat(self.flat, start, t * y, [t, 1, y, 1])

    def base_mask(self, group: tf.Tensor, t: Any, y: Any) -> tf.Tensor:
        """Base (acquisition) mask of geometry ``group`` as (T,1,Y,1) float32."""
        return take_flat(self.flat, tf.gather(self.base, group), t * y, [t, 1, y, 1])



# --------------------------------------------------------------------------------------- graph store
def _broadcast_mul(a: tf.Tensor, b: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """``a * b`` with both broadcast to ``shape`` first: tf's implicitly broadcasting complex multiply is about ten
    times slower on CPU than materialising the operands (same values, bit for bit)."""
    return tf.broadcast_to(a, shape) * tf.broadcast_to(b, shape)


def take_flat(flat: tf.Tensor, start: tf.Tensor, size: Any, shape: Sequence[Any]) -> tf.Tensor:
    """``flat[start:start + size]`` reshaped to ``shape``; entries given as Python ints stay static."""
    start = tf.cast(tf.reshape(start, [1]), tf.int64)
    size = tf.cast(tf.reshape(size, [1]), tf.int64)
    piece = tf.slice(flat, start, size)
    if all(isinstance(d, int) for d in shape):
        return tf.reshape(piece, shape)
    piece = tf.reshape(piece, tf.stack([tf.cast(d, tf.int32) for d in shape]))
    piece.set_shape([d if isinstance(d, int) else None for d in shape])
    return piece


def flatten_arrays(arrays: Sequence[np.ndarray], dtype) -> tuple[tf.Tensor, tf.Tensor]:
    """Concatenates arrays into one flat tensor; returns it and the (N,) int64 start offsets."""
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])
    return tf.constant(flat), tf.constant(offsets)


class SplitStore:
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
        self.image, self.image_at = flatten_arrays(data.image, np.complex64)
        self.maps, self.maps_at = flatten_arrays(data.coil_maps, np.complex64)
        self.kspace, self.kspace_at = (flatten_arrays(data.kspace, np.complex64) if data.kspace is not None
                                       else (None, None))
        self.initial, self.initial_at = flatten_arrays([time_major(m) for m in initial_masks], np.float32)
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
        image = take_flat(self.image, tf.gather(self.image_at, i), t * x * y, [t, x, y, 1])
        maps = take_flat(self.maps, tf.gather(self.maps_at, i), x * y * c, [1, x, y, c])
        if self.kspace is not None:
            kspace = take_flat(self.kspace, tf.gather(self.kspace_at, i), t * x * y * c, [t, x, y, c])
        else:
            kspace = mri.fft2c(_broadcast_mul(image, maps, tf.stack([t, x, y, c]))[None])[0]
        initial = take_flat(self.initial, tf.gather(self.initial_at, i), t * y, [t, 1, y, 1])
        return {"kspace": kspace, "image": image, "coil_maps": maps, "initial": initial}


def _renumber(subjects: np.ndarray) -> np.ndarray:
    """Subject ids renumbered 0..S-1 in order of first appearance."""
    mapping: dict[int, int] = {}
    for s in subjects:
        mapping.setdefault(int(s), len(mapping))
    return np.array([mapping[int(s)] for s in subjects], dtype=np.int32)


def initial_masks(cfg: DataConfig, data: SplitData) -> list[np.ndarray]:
    """Acquisition masks ``M_0`` (ny, nt) of the feature stage.

    ``initial_acc == 1``: fully sampled acquisition (all ones). Otherwise the mask stored with the subject (the
    original's ``mask_GRAPPA_*``, the HDF5 ``initial_mask``) or, when there is none, the equispaced mask at
    ``initial_acc``.
    """
    if cfg.masks == "prospective":
        return prospective_masks(cfg, data)
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


def prospective_masks(cfg: DataConfig, data: SplitData) -> list[np.ndarray]:
    """Per example the (ny, nt) stored prospective mask ``data.prospective_mask`` of its subject."""
    return split_line_masks(cfg, data)



def fully_sampled_store(cfg: DataConfig, split: str, batch_size: int) -> tuple[SplitData, SplitStore]:
    """The split's slices with an all-ones initial mask (``data.masks: prospective``: the stored prospective
    mask); batching needs slices of one size."""
    data = load_split(cfg, split)
    initial = (prospective_masks(cfg, data) if cfg.masks == "prospective" else
               [np.ones((data.shape(i)[2], data.shape(i)[0]), np.int64) for i in range(len(data))])
    store = SplitStore(data, initial)
    if int(batch_size) > 1 and store.uniform is None:
        raise ValueError(f"{data.csv_path}: slices of different sizes cannot be batched (batch_size="
                         f"{batch_size}); use batch_size 1")
    return data, store
