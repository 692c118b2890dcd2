"""Loading pretrained FE-Net weights into SSFL-Recon, with a check that every used variable was restored.

Accepted sources are those of :func:`utils.weights.load_weights` (a stage-1 run folder, a ``.weights.h5`` file of
a :class:`~feature_learning.model.FeatureNet`, e.g. a per-epoch ``weights020.weights.h5``, or an original TF
checkpoint); an original checkpoint may be an FE-Net one or a whole SSFL-Recon one, recognised by its
``feature_extractor/`` prefix.

The original loads silently and trains on random features when the path is wrong; here a missing file or any
missing FE variable that the features depend on is an error listing the names.
"""
from __future__ import annotations

from feature_learning.model import FeatureNet
from utils.checkpoint_import import ImportReport, assign_from_checkpoint, read_checkpoint
from utils.weights import load_weights, resolve_weights


def load_feature_weights(fe: FeatureNet, path: str) -> ImportReport:
    """Loads FE weights from any accepted source into ``fe`` (built), verifying the variables features use."""
    what = "pretrained FE weights"
    resolved = resolve_weights(path, what)
    if resolved.kind == "keras":
        return load_weights(fe, resolved.path, f"{what} (num_iter={fe.num_iter}, method={fe.method})")
    required = fe.variables_used_for_features()
    values = read_checkpoint(resolved.path)
    prefix = "feature_extractor/" if any(k.startswith("feature_extractor/") for k in values) else ""
    missing = [prefix + n for n in required if prefix + n not in values]
    if missing:
        raise ValueError(
            f"original checkpoint {str(resolved.path)!r} lacks {len(missing)} FE variable(s) that the features depend "
            f"on: {missing}"
        )
    return assign_from_checkpoint(fe.original_variables(include_projector=not prefix), resolved.path, prefix=prefix,
                                  required=required)
