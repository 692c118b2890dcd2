"""Import of the original TF2 (Keras 2) checkpoints, e.g. ``weights001.tf``, by variable name and shape.

The original saves object-graph checkpoints whose keys are ``{path}/.ATTRIBUTES/VARIABLE_VALUE`` (plus Adam slots
``…/.OPTIMIZER_SLOT/…`` that we ignore). Each of our models lists its variables under the original paths
(``original_variables()``); the importer assigns every match, checks shapes, and reports what was used/unused.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


@dataclass
class ImportReport:
    """What an import did: names restored, model variables left untouched, checkpoint values not used."""

    checkpoint: str
    restored: list[str] = field(default_factory=list)
    not_restored: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.checkpoint}: restored {len(self.restored)} variables, {len(self.not_restored)} model "
                f"variables not in the checkpoint, {len(self.unused)} checkpoint values unused")


def checkpoint_prefix(path: str | os.PathLike) -> str:
    """Accepts a prefix (``…/weights001.tf``), its ``.index`` file, or a folder with a ``checkpoint`` file."""
    path = Path(path)
    if path.is_dir():
        latest = tf.train.latest_checkpoint(str(path))
        if latest is None:
            raise FileNotFoundError(f"checkpoint folder {str(path)!r} has no 'checkpoint' file naming a checkpoint")
        return latest
    text = str(path)
    if text.endswith(".index"):
        text = text[: -len(".index")]
    if not Path(text + ".index").is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r}: expected a TF checkpoint prefix with a '.index' file next to it "
            f"(e.g. weights001.tf for weights001.tf.index)"
        )
    return text


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All variable values of a TF checkpoint keyed by their object path (optimizer slots dropped)."""
    prefix = checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise ValueError(f"checkpoint {prefix!r} could not be read: {err}") from err
    values = {}
    for key in reader.get_variable_to_shape_map():
        if key.endswith(_SUFFIX) and ".OPTIMIZER_SLOT" not in key:
            values[key[: -len(_SUFFIX)]] = reader.get_tensor(key)
    return values


def assign_from_checkpoint(variables: dict[str, "tf.Variable"], path: str | os.PathLike, prefix: str = "",
                           required: list[str] | None = None) -> ImportReport:
    """Assigns checkpoint values to ``variables`` (original name -> variable).

    Args:
        variables: our variables keyed by original name (without ``prefix``).
        path: checkpoint prefix, ``.index`` file or folder.
        prefix: path of the sub-model inside the checkpoint (e.g. ``"feature_extractor/"``).
        required: names that must be present; a missing one raises ``ValueError`` listing all missing names.

    Raises:
        ValueError: on a shape mismatch (naming variable and both shapes) or missing required variables.
    """
    values = read_checkpoint(path)
    report = ImportReport(checkpoint=checkpoint_prefix(path))
    missing_required = [n for n in (required or []) if prefix + n not in values]
    if missing_required:
        raise ValueError(
            f"checkpoint {report.checkpoint!r} lacks {len(missing_required)} required variable(s): "
            f"{[prefix + n for n in missing_required]}"
        )
    for name, var in variables.items():
        key = prefix + name
        if key not in values:
            report.not_restored.append(key)
            continue
        value = values[key]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(
                f"checkpoint {report.checkpoint!r}: variable {key!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(var.shape)}"
            )
        var.assign(value.astype(np.float32))
        report.restored.append(key)
    used = set(report.restored)
    report.unused = sorted(k for k in values if k.startswith(prefix) and k not in used)
    log.info(report.summary())
    return report
