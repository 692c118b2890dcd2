"""Loading pretrained FE-Net weights into SSFL-Recon, with a check that every used variable was restored.

Accepted sources:

* a stage-1 run folder of ours (``model.weights.h5`` inside, config in ``config.yaml``),
* a ``.weights.h5`` file of a :class:`~feature_learning.model.FeatureNet` saved by us,
* an original TF checkpoint (prefix such as ``weights001.tf``, its ``.index`` file, or a folder with a
  ``checkpoint`` file); whole SSFL-Recon checkpoints are recognised by their ``feature_extractor/`` prefix.

The original loads silently and trains on random features when the path is wrong; here a missing file or any
missing FE variable that the features depend on is an error listing the names.
"""
from __future__ import annotations

import logging
from pathlib import Path

from feature_learning.model import FeatureNet
from utils.checkpoint_import import ImportReport, assign_from_checkpoint, checkpoint_prefix, read_checkpoint
from utils.training import WEIGHTS_NAME

log = logging.getLogger(__name__)


def _is_keras_weights(path: Path) -> bool:
    return path.is_file() and path.name.endswith(".weights.h5")


def resolve_fe_source(path: str) -> tuple[str, Path]:
    """Returns (kind, path) with kind ``keras`` or ``tf`` for a user-given FE weights location."""
    p = Path(path)
    if p.is_dir() and (p / WEIGHTS_NAME).is_file():
        return "keras", p / WEIGHTS_NAME
    if _is_keras_weights(p):
        return "keras", p
    try:
        return "tf", Path(checkpoint_prefix(p))
    except FileNotFoundError:
        pass
    raise FileNotFoundError(
        f"pretrained FE weights {path!r} not found: expected a stage-1 run folder containing {WEIGHTS_NAME}, "
        f"a '.weights.h5' file, or an original TF checkpoint prefix (e.g. weights001.tf with .index/.data files)"
    )


def load_feature_weights(fe: FeatureNet, path: str) -> ImportReport:
    """Loads FE weights from any accepted source into ``fe`` (built), verifying the variables features use."""
    kind, resolved = resolve_fe_source(path)
    required = fe.variables_used_for_features()
    if kind == "keras":
        from utils.training import load_weights_checked

        load_weights_checked(fe, resolved, f"pretrained FE weights (num_iter={fe.num_iter}, method={fe.method})")
        report = ImportReport(checkpoint=str(resolved), restored=sorted(fe.original_variables()))
        log.info("loaded FE weights from %s", resolved)
        return report
    values = read_checkpoint(resolved)
    prefix = "feature_extractor/" if any(k.startswith("feature_extractor/") for k in values) else ""
    missing = [prefix + n for n in required if prefix + n not in values]
    if missing:
        raise ValueError(
            f"original checkpoint {str(resolved)!r} lacks {len(missing)} FE variable(s) that the features depend "
            f"on: {missing}"
        )
    return assign_from_checkpoint(fe.original_variables(include_projector=not prefix), resolved, prefix=prefix,
                                  required=required)
