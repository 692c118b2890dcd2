"""The one checked weight loader: ``load_weights(model, source)`` for every command and stage.

A weights *source* is one of

* a run folder of ours (its final ``model.weights.h5``),
* a ``.weights.h5`` file written by us (a run's final weights, per-epoch weights, ``import-original`` output),
* an original TF checkpoint (a prefix such as ``weights001.tf``, its ``.index`` file, or a folder with a
  ``checkpoint`` file), read by variable name through the model's ``original_variables()``
  (:mod:`utils.checkpoint_import`).

Keras files are checked before loading: the file must hold exactly the model's variables (Keras itself loads a
file with more variables, e.g. of a model with more unrolled iterations, without a word). Original checkpoints
must hold every ``required`` name. An :class:`utils.engine.Engine` is loaded through its network, so a file does
not depend on which objective trained it. Anything else is an error naming the source and what was expected.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras

from utils.checkpoint_import import ImportReport, assign_from_checkpoint, checkpoint_prefix
from utils.checkpoints import WEIGHTS_NAME, load_weights_checked
from utils.engine import weights_owner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsSource:
    """A resolved weights source: ``kind`` ``keras`` (a ``.weights.h5`` file) or ``tf`` (an original checkpoint
    prefix), and its path."""

    kind: str
    path: Path


def resolve_weights(source: str | os.PathLike, what: str = "weights") -> WeightsSource:
    """Resolves a user-given weights location (see the module docstring); FileNotFoundError naming ``what``."""
    path = Path(source)
    if path.is_dir() and (path / WEIGHTS_NAME).is_file():
        return WeightsSource("keras", path / WEIGHTS_NAME)
    if path.is_file() and path.name.endswith(".weights.h5"):
        return WeightsSource("keras", path)
    try:
        return WeightsSource("tf", Path(checkpoint_prefix(path)))
    except FileNotFoundError:
        pass
    raise FileNotFoundError(
        f"{what} {str(source)!r} not found: expected a run folder containing {WEIGHTS_NAME}, a '.weights.h5' file, "
        "or an original TF checkpoint prefix (e.g. weights001.tf with .index/.data files)")


def load_weights(model: keras.Model, source: str | os.PathLike, what: str = "weights",
                 required: Sequence[str] | None = None, optional_prefixes: Sequence[str] = ()) -> ImportReport:
    """Loads ``source`` into the built ``model`` (an Engine's network, or the model itself), checked.

    Args:
        model: built model or engine.
        source: run folder, ``.weights.h5`` file or original TF checkpoint.
        what: how error messages name the source (e.g. ``"--weights"``, ``"pretrained FE weights"``).
        required: original variable names an original checkpoint must hold (default: every name of
            ``original_variables()`` not under ``optional_prefixes``).
        optional_prefixes: original-name prefixes that may be absent from an original checkpoint (e.g.
            ``feature_extractor/`` of an SSFL-Recon checkpoint whose FE is loaded separately).

    Returns:
        What was restored (:class:`utils.checkpoint_import.ImportReport`).
    """
    network = weights_owner(model)
    resolved = resolve_weights(source, what)
    if resolved.kind == "keras":
        load_weights_checked(network, resolved.path, what)
        names = sorted(network.original_variables()) if hasattr(network, "original_variables") else []
        log.info("loaded %s from %s", what, resolved.path)
        return ImportReport(checkpoint=str(resolved.path), restored=names)
    if not hasattr(network, "original_variables"):
        raise ValueError(f"{what} {str(source)!r} is an original TF checkpoint, but {type(network).__name__} has no "
                         "original counterpart: use a .weights.h5 file or a run folder")
    variables = network.original_variables()
    if required is None:
        required = [n for n in variables if not any(n.startswith(p) for p in optional_prefixes)]
    return assign_from_checkpoint(variables, resolved.path, required=list(required))

