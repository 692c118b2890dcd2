"""Evaluation cases: each (subject, slice) of a split undersampled retrospectively at one acceleration.

The masks are seeded per case (from the base seed and the case index), so every method is scored on the same
cases; they stay retrospective with ``data.masks: prospective`` too (prepared files hold fully sampled k-space).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from data_loader.datasets import acquired_mask
from data_loader.masks import mask_to_tensor_layout
from data_loader.store import check_split, data_size, load_split, make_mask, mask_cache_dir, num_examples
from utils import mri
from utils.schema import DataConfig


def case_seed_of(seed: int, index: int) -> int:
    """Mask seed of evaluation case ``index``: independent per (seed, index), below 2**31 for every generator."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] % (2**31 - 1))


def eval_cases(cfg: DataConfig, split: str, acc: float, mask_kind: str = "vista",
               seed: int = 0, num_center: int | None = None) -> Iterator[dict[str, Any]]:
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
        num_center: fully sampled central lines for the kinds that take it (``vd-random``, ``gaussian``,
            ``equispaced``), capped at half the lines of a frame as in the training masks of
            :func:`data_loader.datasets.acquired_dataset`; None: the generator's default.

    Yields:
        dicts of numpy arrays with batch axis 1: ``name`` (str), ``x`` (1,T,X,Y,1) complex64 zero-filled image
        A^H y, ``y`` (1,T,X,Y,C) complex64, ``mask`` (1,T,1,Y,1) float32, ``coil_maps`` (1,1,X,Y,C) complex64 and
        ``reference`` (1,T,X,Y,1) complex64.
    """
    check_split(split)
    if cfg.dummy:
        t, x, y, c = data_size(cfg)
        for index in range(num_examples(cfg, split)):
            rng = np.random.default_rng(case_seed_of(seed, index))

            def rand(*shape):
                return (rng.random(shape, dtype=np.float32) + 1j * rng.random(shape, dtype=np.float32)).astype(
                    np.complex64)

            yield {"name": f"dummy_{index:03d}", "x": rand(1, t, x, y, 1), "y": rand(1, t, x, y, c),
                   "mask": rng.integers(0, 2, (1, t, 1, y, 1)).astype(np.float32),
                   "coil_maps": rand(1, 1, x, y, c), "reference": rand(1, t, x, y, 1)}
        return
    data = load_split(cfg, split)
    cache = mask_cache_dir(cfg)
    for index in range(len(data)):
        t, _, ny, _ = data.shape(index)
        case_seed = case_seed_of(seed, index)
        if num_center is None:
            mask = make_mask(mask_kind, ny, t, float(acc), case_seed, cache)
        else:  # the training masks' rule (same capping), so a method is scored on masks like its own
            mask = acquired_mask(mask_kind, ny, t, float(acc), case_seed, cache, num_center)
        mask = mask_to_tensor_layout(mask)
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
