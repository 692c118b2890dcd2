"""Gradient checkpointing for functions of complex tensors.

``tf.recompute_grad`` keeps only a function's inputs and recomputes its activations when the gradient is needed,
but in graph mode it does not accept complex inputs or outputs. :func:`recompute_complex` hands it the real and
imaginary parts instead and reassembles the complex values on both sides; variables read inside the function get
their gradients as usual.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf


def _split(tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    parts = []
    for t in tensors:
        if not t.dtype.is_complex:
            raise ValueError(f"recompute_complex: expected complex tensors, received dtype {t.dtype.name}")
        parts += [tf.math.real(t), tf.math.imag(t)]
    return parts


def _join(parts: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    return [tf.complex(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]


def recompute_complex(fn: Callable[..., tf.Tensor | Sequence[tf.Tensor]]) -> Callable[..., list[tf.Tensor]]:
    """Wraps ``fn`` (complex tensors in, a complex tensor or a sequence of them out) so that its activations are
    recomputed in the backward pass. The wrapper returns a list of the outputs.

    Tensors captured by ``fn`` from the enclosing scope are treated as constants (no gradient flows to them).
    """
    def real_fn(*parts):
        outs = fn(*_join(parts))
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return tuple(_split(outs))

    recomputed = tf.recompute_grad(real_fn)

    def wrapped(*tensors):
        return _join(recomputed(*_split(tensors)))

    return wrapped
