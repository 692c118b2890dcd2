"""Data-consistency layers and CG-SENSE for the multi-coil operator of :mod:`utils.mri`.

* :class:`DCGD`: one gradient step on ``||A x - y||^2 / 2``: ``x - w * A^H (A x - y)`` (w >= 0, init 1.0).
* :class:`DCPM`: proximal mapping ``argmin_z ||A z - y||^2 / 2 + lambda / 2 ||z - x||^2`` with ``lambda = 1 / w``,
  solved by conjugate gradient (10 iterations by default) on ``(A^H A + lambda I) z = A^H y + lambda x``.
* :func:`cg_sense`: iterative SENSE, CG on ``(A^H A + mu I) x = A^H y`` from zero.
* :class:`Scalar`: a non-negative trainable scalar (``tau``, init 0.1) that scales a complex tensor.

Inputs follow :mod:`utils.mri`: image (B,T,X,Y,1), k-space (B,T,X,Y,C), mask (B,T,1,Y,1), coil maps (B,1,X,Y,C).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from utils import mri
from utils.complex_layers import PACKAGE
from utils.fast_numerics import check_numerics


def _batch_dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Re <a, b> per batch element, shaped (B,1,1,1,1) for broadcasting."""
    return tf.reduce_sum(tf.math.real(tf.math.conj(a) * b), axis=[1, 2, 3, 4], keepdims=True)


def conjugate_gradient(normal_op, rhs: tf.Tensor, x0: tf.Tensor, num_iters: int = 10,
                       tol: float = 1e-10) -> tf.Tensor:
    """Solves ``normal_op(x) = rhs`` (Hermitian positive definite) per batch element, starting from ``x0``.

    A fixed number of iterations keeps the graph static and differentiable; elements whose residual drops below
    ``tol`` stop updating (their step is masked) instead of dividing by zero.
    """
    x = x0
    r = rhs - normal_op(x)
    p = r
    rs_old = _batch_dot(r, r)
    for _ in range(num_iters):
        ap = normal_op(p)
        active = rs_old > tol
        denom = _batch_dot(p, ap)
        alpha = tf.where(active, rs_old / tf.where(active, denom, tf.ones_like(denom)), tf.zeros_like(rs_old))
        x = x + mri.complex_scale(p, alpha)
        r = r - mri.complex_scale(ap, alpha)
        rs_new = _batch_dot(r, r)
        beta = tf.where(active, rs_new / tf.where(active, rs_old, tf.ones_like(rs_old)), tf.zeros_like(rs_old))
        p = r + mri.complex_scale(p, beta)
        rs_old = tf.where(active, rs_new, rs_old)
    return x


def cg_sense(kspace: tf.Tensor, mask: tf.Tensor, coil_maps: tf.Tensor, num_iters: int = 10,
             regularization: float = 0.0, tol: float = 1e-10) -> tf.Tensor:
    """CG-SENSE reconstruction (B,T,X,Y,1) from undersampled multi-coil k-space, starting from zero."""
    rhs = mri.adjoint(kspace, mask, coil_maps)

    def normal_op(v):
        out = mri.normal(v, mask, coil_maps)
        if regularization:
            out = out + mri.complex_scale(v, regularization)
        return out

    return conjugate_gradient(normal_op, rhs, tf.zeros_like(rhs), num_iters, tol)


class _WeightedDC(keras.layers.Layer):
    def __init__(self, weight_init: float = 1.0, weight_scale: float = 1.0, trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.weight_init = float(weight_init)
        self.weight_scale = float(weight_scale)

    def build(self, input_shape=None):
        self._weight = self.add_weight(
            name="weight", shape=(1,), initializer=keras.initializers.Constant(self.weight_init),
            constraint=keras.constraints.NonNeg(),
        )

    @property
    def weight(self) -> tf.Tensor:
        return self._weight * self.weight_scale

    @property
    def weight_variable(self) -> keras.Variable:
        """The stored (unscaled) weight variable, as checkpoints and the original's ``dc/{i}/weight`` hold it."""
        return self._weight

    def get_config(self):
        return {**super().get_config(), "weight_init": self.weight_init, "weight_scale": self.weight_scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DCGD(_WeightedDC):
    """Gradient-descent data consistency ``x - w * A^H(A x - y)``.

    Args:
        weight_init: initial ``w`` (kept >= 0 by a NonNeg constraint).
        weight_scale: ``w`` is the stored weight times this factor.
        trainable: whether ``w`` is trained.
        numerics: ``faithful`` (the original's operator, bit for bit) or ``fast`` (:func:`utils.mri.gradient_step`:
            coil-first, shifts folded into sign patterns; equal up to float32 rounding).

    Call: ``layer(x, kspace, mask, coil_maps)`` with x (B,T,X,Y,1) -> (B,T,X,Y,1).
    """

    def __init__(self, weight_init: float = 1.0, weight_scale: float = 1.0, trainable: bool = True,
                 numerics: str = "faithful", **kwargs):
        super().__init__(weight_init, weight_scale, trainable, **kwargs)
        check_numerics(numerics)
        self.numerics = numerics

    def call(self, x, kspace, mask, coil_maps):
        return mri.gradient_step(x, kspace, mask, coil_maps, self.weight[0], self.numerics)

    def get_config(self):
        return {**super().get_config(), "numerics": self.numerics}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DCPM(_WeightedDC):
    """Proximal-mapping data consistency solved by conjugate gradient (``lambda = 1 / max(w, 1e-9)``).

    Args:
        weight_init: initial ``w`` (kept >= 0).
        num_iters: CG iterations (10 as merlintf's default).
        tol: CG stops updating an element once its squared residual norm is below ``tol``.

    Call: ``layer(x, kspace, mask, coil_maps)`` with x (B,T,X,Y,1) -> (B,T,X,Y,1).
    """

    def __init__(self, weight_init: float = 1.0, num_iters: int = 10, tol: float = 1e-10, **kwargs):
        super().__init__(weight_init=weight_init, **kwargs)
        self.num_iters = int(num_iters)
        self.tol = float(tol)

    def call(self, x, kspace, mask, coil_maps):
        lam = 1.0 / tf.maximum(self.weight[0], 1e-9)
        rhs = mri.adjoint(kspace, mask, coil_maps) + mri.complex_scale(x, lam)

        def normal_op(v):
            return mri.normal(v, mask, coil_maps) + mri.complex_scale(v, lam)

        return conjugate_gradient(normal_op, rhs, x, self.num_iters, self.tol)

    def get_config(self):
        return {**super().get_config(), "num_iters": self.num_iters, "tol": self.tol}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Scalar(keras.layers.Layer):
    """Non-negative trainable scalar that scales a complex tensor (``tau`` of the unrolled networks).

    Args:
        init: initial value (0.1 in the original).
        train_scale: the effective value is the stored weight times this factor.
    Weight: ``scalar`` of shape (1,).
    """

    def __init__(self, init: float = 0.1, train_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)
        self.train_scale = float(train_scale)

    def build(self, input_shape=None):
        self.scalar = self.add_weight(
            name="scalar", shape=(1,), initializer=keras.initializers.Constant(self.init),
            constraint=keras.constraints.NonNeg(),
        )

    @property
    def value(self) -> tf.Tensor:
        return self.scalar[0] * self.train_scale

    def call(self, x):
        return mri.complex_scale(x, self.value)

    def get_config(self):
        return {**super().get_config(), "init": self.init, "train_scale": self.train_scale}
