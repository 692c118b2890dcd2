"""Stage-1 losses on stacked projector embeddings.

Embeddings arrive as ``(num_iter * num_views, N, D)``, ordered iteration-major (``index = i * num_views + j``),
where N is the number of pooled time frames that the projector treats as its batch and D = 64.

The ``*_original`` functions reproduce the published code numerically, quirks included (fixtures README 6–7):

* contrastive: each view matrix (N, D) is L2-normalised as a whole (not per row); labels are all-ones blocks
  between views 1 and 2 and zero rows for view 3; temperature 0.1; the per-row softmax cross-entropy (3N values)
  is summed over iterations, and Keras reduces that vector by its mean.
* VICReg: weights 25 / 25 / 1; the variance term uses the std over the D features of each row; covariance is
  normalised by (N - 1); terms summed over iterations.

The ``*_standard`` variants follow the papers: per-row L2 normalisation (SimCLR-style), and the VICReg variance
over the batch axis for each feature.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from utils.schema import register_choices

VICREG_SIM, VICREG_STD, VICREG_COV = 25.0, 25.0, 1.0


def off_diagonal(matrix: tf.Tensor) -> tf.Tensor:
    """Off-diagonal entries of a square (n, n) matrix, row-major, as a flat vector of n*(n-1)."""
    n = tf.shape(matrix)[0]
    flat = tf.reshape(matrix, [-1])
    keep = tf.not_equal(tf.range(n * n) % (n + 1), 0)
    return tf.boolean_mask(flat, keep)


def _check_embeddings(embeddings: tf.Tensor, num_views: int, name: str) -> None:
    if embeddings.shape.rank is not None and embeddings.shape.rank != 3:
        raise ValueError(f"{name}: embeddings must be (num_iter*num_views, N, D), received shape "
                         f"{tuple(embeddings.shape)}")
    rows = embeddings.shape[0]
    if rows is not None and rows % num_views:
        raise ValueError(f"{name}: first axis {rows} is not a multiple of num_views={num_views}")


def _vicreg_terms(h1: tf.Tensor, h2: tf.Tensor, variance_axis: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    n = tf.cast(tf.shape(h1)[0], h1.dtype)
    d = tf.cast(tf.shape(h1)[1], h1.dtype)
    invariance = tf.reduce_mean(tf.square(h1 - h2))
    std1 = tf.sqrt(tf.math.reduce_variance(h1, axis=variance_axis) + 1e-4)
    std2 = tf.sqrt(tf.math.reduce_variance(h2, axis=variance_axis) + 1e-4)
    variance = tf.reduce_mean(tf.nn.relu(1.0 - std1)) / 2 + tf.reduce_mean(tf.nn.relu(1.0 - std2)) / 2
    h1c = h1 - tf.reduce_mean(h1, axis=0, keepdims=True)
    h2c = h2 - tf.reduce_mean(h2, axis=0, keepdims=True)
    cov1 = tf.matmul(h1c, h1c, transpose_a=True) / (n - 1.0)
    cov2 = tf.matmul(h2c, h2c, transpose_a=True) / (n - 1.0)
    covariance = (tf.reduce_sum(tf.square(off_diagonal(cov1))) + tf.reduce_sum(tf.square(off_diagonal(cov2)))) / d
    return invariance, variance, covariance


def _vicreg(embeddings: tf.Tensor, variance_axis: int) -> tf.Tensor:
    _check_embeddings(embeddings, 2, "vicreg")
    total = tf.zeros((), embeddings.dtype)
    for i in range(embeddings.shape[0] // 2):
        inv, var, cov = _vicreg_terms(embeddings[2 * i], embeddings[2 * i + 1], variance_axis)
        total += VICREG_SIM * inv + VICREG_STD * var + VICREG_COV * cov
    return total


def vicreg_loss_original(embeddings: tf.Tensor) -> tf.Tensor:
    """Original VICReg loss (variance over the features of each row). Embeddings (2*num_iter, N, D) -> scalar."""
    return _vicreg(embeddings, variance_axis=1)


def vicreg_loss_standard(embeddings: tf.Tensor) -> tf.Tensor:
    """VICReg as in Bardes et al. 2022 (variance of each feature over the batch axis)."""
    return _vicreg(embeddings, variance_axis=0)


def contrastive_labels(n: int) -> tf.Tensor:
    """(3n, 2n) targets: rows of views 1 and 2 are positive to all of view 1/2 columns, view-3 rows are zero."""
    ones = tf.ones((n, n))
    zeros = tf.zeros((n, n))
    row = tf.concat([ones, zeros], axis=1)
    return tf.concat([row, row, tf.zeros((n, 2 * n))], axis=0)


def contrastive_logits(h1: tf.Tensor, h2: tf.Tensor, h3: tf.Tensor, temperature: float = 0.1) -> tf.Tensor:
    """(3n, 2n) similarity logits: rows of each view against the two other views, divided by the temperature."""
    def sim(a, b):
        return tf.matmul(a, b, transpose_b=True) / temperature
    return tf.concat([
        tf.concat([sim(h1, h2), sim(h1, h3)], axis=1),
        tf.concat([sim(h2, h1), sim(h2, h3)], axis=1),
        tf.concat([sim(h3, h1), sim(h3, h2)], axis=1),
    ], axis=0)


def _contrastive_rows(embeddings: tf.Tensor, normalize_axis, temperature: float) -> tf.Tensor:
    _check_embeddings(embeddings, 3, "contrastive")
    per_row = None
    for i in range(embeddings.shape[0] // 3):
        h1, h2, h3 = (tf.nn.l2_normalize(embeddings[3 * i + j], axis=normalize_axis) for j in range(3))
        labels = contrastive_labels(tf.shape(h1)[0])
        ce = tf.nn.softmax_cross_entropy_with_logits(labels, contrastive_logits(h1, h2, h3, temperature))
        per_row = ce if per_row is None else per_row + ce
    return per_row


def contrastive_loss_original_rows(embeddings: tf.Tensor, temperature: float = 0.1) -> tf.Tensor:
    """Original per-row contrastive loss (3N,) summed over iterations (whole-matrix L2 normalisation)."""
    return _contrastive_rows(embeddings, None, temperature)


def contrastive_loss_original(embeddings: tf.Tensor) -> tf.Tensor:
    """Original contrastive loss reduced as Keras did (mean over the 3N rows)."""
    return tf.reduce_mean(contrastive_loss_original_rows(embeddings))


def contrastive_loss_standard(embeddings: tf.Tensor) -> tf.Tensor:
    """Contrastive loss with per-row L2 normalisation (each embedding on the unit sphere)."""
    return tf.reduce_mean(_contrastive_rows(embeddings, -1, 0.1))


# (method, variant) -> loss; `num_views` of each method follows from the name.
FEATURE_LOSSES: dict[tuple[str, str], Callable[[tf.Tensor], tf.Tensor]] = {
    ("vicreg", "original"): vicreg_loss_original,
    ("vicreg", "standard"): vicreg_loss_standard,
    ("contrastive", "original"): contrastive_loss_original,
    ("contrastive", "standard"): contrastive_loss_standard,
}
NUM_VIEWS = {"vicreg": 2, "contrastive": 3}
register_choices("model.feature_loss", sorted({variant for _, variant in FEATURE_LOSSES}))


def get_feature_loss(method: str, variant: str = "original") -> Callable[[tf.Tensor], tf.Tensor]:
    """Looks up a stage-1 loss; unknown names raise ``ValueError`` listing the valid ones."""
    key = (method, variant)
    if key not in FEATURE_LOSSES:
        valid = ", ".join(f"{m}/{v}" for m, v in FEATURE_LOSSES)
        raise ValueError(f"feature loss {method!r}/{variant!r} is unknown; valid: {valid}")
    return FEATURE_LOSSES[key]
