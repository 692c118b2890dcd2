"""The unrolled update shared by FE-Net, SSFL-Recon and the unrolled baselines.

Every unrolled network of the project iterates

    x <- DC_i(x - tau_i * R_i(x) / num_iter)

where ``R_i`` is iteration ``i``'s residual network (the complex UNet; FE-Net's encoder/decoder pair; SSFL-Recon's
UNet with the FE feature at its bottleneck), ``tau_i >= 0`` a learned step (:class:`utils.data_consistency.Scalar`,
init 0.1) and ``DC_i`` a data-consistency layer (gradient step ``DCGD`` or CG proximal step ``DCPM``). The
update is written once, in :func:`residual_update`; :func:`run_iteration` applies one iteration with optional
gradient checkpointing (``train.recompute``: the iteration keeps only its input image and recomputes its
activations in the backward pass), so every unrolled network gets recompute the same way.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from utils.mri import complex_scale
from utils.recompute import recompute_complex

# The paper's UNet of every unrolled iteration; the published FE-Net and SSFL-Recon were trained with optox's
# pooling gradient (README, "Training as the original": model.pool_gradient).
DEFAULT_UNET = dict(filters=12, num_levels=2, layers_per_level=1, kernel_size_2d=(1, 5, 5),
                    kernel_size_t=(3, 1, 1), pool_size=(2, 2, 2), pool_gradient="optox")


def residual_update(x: tf.Tensor, residual: tf.Tensor, tau, dc, num_iter: int, y: tf.Tensor, mask: tf.Tensor,
                    coil_maps: tf.Tensor) -> tf.Tensor:
    """``dc(x - tau(residual) / num_iter, y, mask, coil_maps)``: one unrolled iteration after its residual."""
    x = x - complex_scale(tau(residual), 1.0 / num_iter)
    return dc(x, y, mask, coil_maps)


def run_iteration(iteration: Callable, x: tf.Tensor, recompute: bool = False):
    """``iteration(x)`` (a complex tensor or a tuple of them), recomputed in the backward pass when ``recompute``.

    Tensors that ``iteration`` captures (k-space, mask, coil maps, FE features) are constants of the recomputed
    function: they must not need gradients.
    """
    if not recompute:
        return iteration(x)
    outputs = recompute_complex(iteration)(x)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
