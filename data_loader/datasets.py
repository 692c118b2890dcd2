"""The datasets of the three training stages: feature learning, self-supervised reconstruction and baselines.

What they feed (the facts of the original SSFL-Recon loaders, without their defects):

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

Each dataset reads its split once (:mod:`data_loader.store`), generates every mask up front, and maps an example
function over the index stream of :mod:`data_loader.streams` in graph mode: the same seed gives the same stream,
whatever ``num_parallel_calls``.

Layouts (per example, batch axis first): image ``x`` and ``reference`` (B,T,X,Y,1) complex64, k-space ``y``
(B,T,X,Y,C) complex64, mask (B,T,1,Y,1) float32, coil maps (B,1,X,Y,C) complex64.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from data_loader.masks import generate_mask
from data_loader.store import (
    BASE_MASK_SEED,
    MaskBank,
    SplitStore,
    acceleration_grid,
    check_split,
    data_size,
    fully_sampled_store,
    initial_masks,
    load_split,
    make_mask,
    mask_cache_dir,
    mask_seeds,
)
from data_loader.streams import (
    STREAM_CONTRASTIVE,
    STREAM_RECON,
    STREAM_VICREG,
    all_equal,
    categorical,
    draw_other,
    dummy_dataset,
    dummy_view,
    finish_dataset,
    fold_key,
    index_stream,
    make_view,
    parallel_calls,
    rand_complex,
    resolve_seed,
    stream_key,
    uniform_int,
)
from data_loader.vista import lines_per_frame
from utils.schema import FEATURE_METHODS, DataConfig

logger = logging.getLogger(__name__)


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
    check_split(split)
    seed = resolve_seed(cfg, seed)
    num_views = 2 if method == "vicreg" else 3
    if cfg.dummy:
        size = data_size(cfg)

        def make(key):
            keys = tf.unstack(tf.random.experimental.stateless_split(key, num_views))
            return {"views": tuple(dummy_view(k, size) for k in keys)}

        return finish_dataset(dummy_dataset(cfg, split, seed, repeat, make), 1, True)

    data = load_split(cfg, split)
    store = SplitStore(data, initial_masks(cfg, data))
    accs = acceleration_grid(cfg.min_r, cfg.max_r)
    bank = MaskBank(cfg, store.geometries, accs)
    example = (_vicreg_example if method == "vicreg" else _contrastive_example)(cfg, store, bank, seed, split)
    ds = index_stream(store.size, seed, split == "train", repeat)
    ds = ds.map(example, num_parallel_calls=parallel_calls(cfg))
    return finish_dataset(ds, 1, True)


def _require_two_masks(bank: MaskBank, what: str) -> None:
    if min(bank.distinct_total) < 2:
        raise ValueError(f"data: one distinct {what} only (R in {bank.accs}, {bank.num_seeds} seed(s), kind "
                         f"{bank.kind!r}); two different views need more accelerations or seeds")


def _vicreg_example(cfg: DataConfig, store: SplitStore, bank: MaskBank, seed: int, split: str):
    num_pairs = bank.num_accs * bank.num_seeds
    _require_two_masks(bank, "mask")
    base = stream_key(seed, STREAM_VICREG)
    train = split == "train"
    seeds = bank.num_seeds

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        key = fold_key(base, epoch if train else 0, i)
        k1, k2 = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        d = store.example(i)
        t, _, y, _ = store.dims(i)
        group = tf.gather(store.group, i)

        def effective(pair):
            return d["initial"] * bank.mask(group, pair // seeds, pair % seeds, t, y)

        first = uniform_int(k1, num_pairs)
        mask_1 = effective(first)
        second = draw_other(k2, num_pairs, first, lambda p: all_equal(effective(p), mask_1))
        views = (make_view(d["kspace"], d["coil_maps"], mask_1),
                 make_view(d["kspace"], d["coil_maps"], effective(second)))
        return {"views": views}

    return example


def _contrastive_example(cfg: DataConfig, store: SplitStore, bank: MaskBank, seed: int, split: str):
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
    base = stream_key(seed, STREAM_CONTRASTIVE)
    train = split == "train"

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        key = fold_key(base, epoch if train else 0, i)
        keys = tf.unstack(tf.random.experimental.stateless_split(key, 6))
        # subject B: uniform among the other subjects, then one of its slices, as the original
        subject_a = tf.gather(store.subject, i)
        other = uniform_int(keys[0], store.num_subjects - 1)
        subject_b = other + tf.cast(other >= subject_a, tf.int32)
        j = tf.gather(store.subject_first, subject_b) + uniform_int(keys[1], tf.gather(store.subject_count,
                                                                                          subject_b))
        a, b = store.example(i), store.example(j)
        t_a, _, y_a, _ = store.dims(i)
        t_b, _, y_b, _ = store.dims(j)
        group_a, group_b = tf.gather(store.group, i), tf.gather(store.group, j)

        r1 = categorical(keys[2], allowed_t)
        s1 = uniform_int(keys[3], seeds)
        mask_1 = a["initial"] * bank.mask(group_a, r1, s1, t_a, y_a)
        s2 = draw_other(keys[4], seeds, s1,
                         lambda s: all_equal(a["initial"] * bank.mask(group_a, r1, s, t_a, y_a), mask_1))
        mask_2 = a["initial"] * bank.mask(group_a, r1, s2, t_a, y_a)
        if rule_random:
            # any (R, seed) pair except those of views 1 and 2
            weights = tf.tensor_scatter_nd_update(tf.ones([num_accs * seeds]),
                                                  tf.stack([[r1 * seeds + s1], [r1 * seeds + s2]]), [0.0, 0.0])
            pair = categorical(keys[5], weights)
            r3, s3 = pair // seeds, pair % seeds
        else:
            r_key, s_key = tf.unstack(tf.random.experimental.stateless_split(keys[5], 2))
            r3 = categorical(r_key, tf.gather(table_t, r1))
            s3 = uniform_int(s_key, seeds)
        mask_3 = b["initial"] * bank.mask(group_b, r3, s3, t_b, y_b)
        views = (make_view(a["kspace"], a["coil_maps"], mask_1), make_view(a["kspace"], a["coil_maps"], mask_2),
                 make_view(b["kspace"], b["coil_maps"], mask_3))
        return {"views": views}

    return example



# ------------------------------------------------------------------------------------ recon stage
def recon_dataset(cfg: DataConfig, split: str = "train", seed: int | None = None, repeat: bool = True,
                  batch_size: int = 1) -> tf.data.Dataset:
    """Stage-2 (self-supervised reconstruction) examples: two views of one acquisition.

    The acquisition is the base mask (``data.mask_kind`` at ``start_r``, seed 10; with ``data.masks:
    prospective`` the case's stored prospective mask); each view multiplies it by a re-undersampling mask with R
    on the grid of ``train_r`` (training) or at ``val_r`` (``val``/``test``; on the grid of ``val_r_range`` when set),
    the two views with different masks; ``val_redraw`` draws the validation masks anew on every pass (as the
    original), otherwise every pass sees the same ones.

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
    check_split(split)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    seed = resolve_seed(cfg, seed)
    if cfg.dummy:
        size = data_size(cfg)

        def make(key):
            k1, k2, k3 = tf.unstack(tf.random.experimental.stateless_split(key, 3))
            v1, v2 = dummy_view(k1, size), dummy_view(k2, size)
            maps = v1.pop("coil_maps")
            v2.pop("coil_maps")
            return {"view1": v1, "view2": v2, "coil_maps": maps, "reference": rand_complex(k3, [*size[:3], 1])}

        return finish_dataset(dummy_dataset(cfg, split, seed, repeat, make), int(batch_size), repeat)

    # the recon stage takes the fully sampled data as its source, as the original (no initial mask)
    data, store = fully_sampled_store(cfg, split, batch_size)
    if split == "train":
        accs = acceleration_grid(*cfg.train_r)
    else:
        accs = acceleration_grid(*cfg.val_r_range) if cfg.val_r_range else [float(cfg.val_r)]
    prospective = cfg.masks == "prospective"
    bank = MaskBank(cfg, store.geometries, accs, base_acc=None if prospective else float(cfg.start_r))
    num_pairs = bank.num_accs * bank.num_seeds
    _require_two_masks(bank, "re-undersampling mask")
    base_key = stream_key(seed, STREAM_RECON)
    train = split == "train"
    new_draws = train or bool(cfg.val_redraw)  # every pass its own masks
    seeds = bank.num_seeds

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        key = fold_key(base_key, epoch if new_draws else 0, i)
        k1, k2 = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        d = store.example(i)
        t, _, y, _ = store.dims(i)
        group = tf.gather(store.group, i)
        acquired = d["initial"] if prospective else bank.base_mask(group, t, y)

        def effective(pair):
            return acquired * bank.mask(group, pair // seeds, pair % seeds, t, y)

        first = uniform_int(k1, num_pairs)
        mask_1 = effective(first)
        second = draw_other(k2, num_pairs, first, lambda p: all_equal(effective(p), mask_1))
        v1 = make_view(d["kspace"], d["coil_maps"], mask_1)
        v2 = make_view(d["kspace"], d["coil_maps"], effective(second))
        maps = v1.pop("coil_maps")
        v2.pop("coil_maps")
        return {"view1": v1, "view2": v2, "coil_maps": maps, "reference": d["image"]}

    ds = index_stream(store.size, seed, train, repeat).map(example, num_parallel_calls=parallel_calls(cfg))
    return finish_dataset(ds, int(batch_size), repeat)



# ------------------------------------------------------------------------------ acquired data (baselines)
def acquired_mask(kind: str, ny: int, nt: int, acc: float, seed: int, cache_dir: Path | None,
                   num_center: int | None) -> np.ndarray:
    """(ny, nt) mask of ``kind``; ``num_center`` (for the kinds that take it) is capped at half the lines of a
    frame, so small test images still get random lines outside the centre."""
    if num_center is None or kind == "vista":
        return make_mask(kind, ny, nt, acc, seed, cache_dir)
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
    check_split(split)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    seed = resolve_seed(cfg, seed)
    kind = mask_kind or cfg.mask_kind
    if accelerations is not None:
        accelerations = [float(a) for a in accelerations]
        if not accelerations or not all(math.isfinite(a) and a >= 1.0 for a in accelerations):
            raise ValueError(f"accelerations: expected a non-empty list of R >= 1, got {accelerations}")
    if cfg.dummy:
        size = data_size(cfg)

        def make(key):
            k1, k2 = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            view = dummy_view(k1, size)
            view["reference"] = rand_complex(k2, [*size[:3], 1])
            return view

        return finish_dataset(dummy_dataset(cfg, split, seed, repeat, make), int(batch_size), repeat)

    _, store = fully_sampled_store(cfg, split, batch_size)
    cache = mask_cache_dir(cfg)
    if accelerations is None:
        accs, seeds = [float(cfg.start_r)], [BASE_MASK_SEED]
    else:
        accs, seeds = accelerations, mask_seeds(cfg)
    prospective = cfg.masks == "prospective"
    bank = None if prospective and accelerations is None else MaskBank(
        cfg, store.geometries, accs, kind=kind, seeds=seeds,
        make=lambda ny, nt, acc, s: acquired_mask(kind, ny, nt, acc, s, cache, num_center))
    base_key = stream_key(seed, STREAM_RECON + 100)
    train = split == "train"

    def example(epoch, index):
        i = tf.cast(index, tf.int32)
        d = store.example(i)
        if bank is None:
            mask = d["initial"]
        else:
            t, _, y, _ = store.dims(i)
            group = tf.gather(store.group, i)
            pair = uniform_int(fold_key(base_key, epoch if train else 0, i), bank.num_accs * bank.num_seeds)
            mask = bank.mask(group, pair // bank.num_seeds, pair % bank.num_seeds, t, y)
            mask = d["initial"] * mask if prospective else mask
        view = make_view(d["kspace"], d["coil_maps"], mask)
        view["reference"] = d["image"]
        return view

    ds = index_stream(store.size, seed, train, repeat).map(example, num_parallel_calls=parallel_calls(cfg))
    return finish_dataset(ds, int(batch_size), repeat)
