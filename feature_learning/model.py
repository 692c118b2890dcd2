"""Stage 1: the unrolled feature-learning network (FE-Net) and its self-supervised objective.

Per unrolled iteration ``i`` there is one complex 2D+t UNet (its encoder gives the feature, its decoder the
residual), a projector MLP, a non-negative step ``tau_i`` and a gradient-descent data-consistency layer:

    feature_i, skips = encode_i(x);   x <- DC_i(x - tau_i * decode_i(feature_i, skips) / num_iter)

* pred mode (:meth:`FeatureNet.extract`): the features of every iteration (and the final image). When only the
  features are wanted, the last decoder and DC are skipped since nothing uses their result.
* train mode (:meth:`FeatureNet.embed`): every view is unrolled in lock-step; the projector turns each encoder
  output into embeddings; the last iteration skips decoder and DC (as the original).

The projector treats the pooled time frames as its batch: GlobalMaxPool over (x, y) of [re, im] → Dense 64 → BN →
ReLU → Dense 64 → BN, so each example gives (T', 64) embeddings. The number of views is 2 for VICReg and 3 for the
contrastive loss (two views of one subject + one negative subject).

Training is :class:`utils.engine.Engine` with :class:`FeatureObjective` (the VICReg or contrastive loss of the
embeddings of all views); the network holds no training state.
"""
from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from feature_learning.losses import NUM_VIEWS, get_feature_loss
from utils.complex_layers import PACKAGE
from utils.data_consistency import DCGD, Scalar
from utils.engine import Objective, unpack_inputs
from utils.unet import ComplexUNet2Dt
from utils.unrolled import DEFAULT_UNET, residual_update, run_iteration



@keras.saving.register_keras_serializable(package=PACKAGE)
class Projector(keras.layers.Layer):
    """MLP projector on an encoder output.

    Args:
        units: width of both dense layers (64 in the original).

    Input: complex (B, T', X', Y', C). Output: real (B, T', units).
    """

    def __init__(self, units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense_1 = keras.layers.Dense(self.units, name="dense_1")
        self.bn_1 = keras.layers.BatchNormalization(name="bn_1")
        self.dense_2 = keras.layers.Dense(self.units, name="dense_2")
        self.bn_2 = keras.layers.BatchNormalization(name="bn_2")

    def build(self, input_shape):
        channels = 2 * int(input_shape[-1])
        self.dense_1.build((None, channels))
        self.bn_1.build((None, self.units))
        self.dense_2.build((None, self.units))
        self.bn_2.build((None, self.units))

    def call(self, encoded, training=None):
        shape = tf.shape(encoded)
        frames = tf.reshape(encoded, tf.concat([[-1], shape[2:]], axis=0))  # (B*T', X', Y', C)
        two_channel = tf.concat([tf.math.real(frames), tf.math.imag(frames)], axis=-1)
        h = tf.reduce_max(two_channel, axis=[1, 2])
        h = tf.nn.relu(self.bn_1(self.dense_1(h), training=training))
        h = self.bn_2(self.dense_2(h), training=training)
        return tf.reshape(h, tf.stack([shape[0], shape[1], self.units]))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureNet(keras.Model):
    """Unrolled feature-learning network.

    Args:
        num_iter: unrolled iterations (2 in the paper's experiments).
        method: ``"vicreg"`` (2 views) or ``"contrastive"`` (3 views): the number of views :meth:`embed` takes.
        unet: keyword arguments of :class:`ComplexUNet2Dt` (defaults: filters 12, 2 levels, 1 layer per level,
            kernels (1,5,5) and (3,1,1), pooling (2,2,2)).
        projector_units: projector width.
        tau_init, dc_weight_init: initial step size and data-consistency weight.
        recompute: gradient checkpointing in training: each unrolled iteration (encoder, decoder, DC) keeps only
            its input image and recomputes its activations in the backward pass; the projector (whose BatchNorm
            updates moving statistics) is not recomputed.
        **kwargs: passed to ``keras.Model``.

    Call (pred mode): ``model({"x", "y", "mask", "coil_maps"})`` → dict ``feature_0 … feature_{n-1}``, ``x_out``.
    Training: ``Engine(FeatureNet(...), FeatureObjective(method))`` on ``{"views": [view_1, …]}`` batches.
    """

    def __init__(self, num_iter: int = 2, method: str = "vicreg",
                 unet: dict | None = None, projector_units: int = 64, tau_init: float = 0.1,
                 dc_weight_init: float = 1.0, recompute: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.recompute = bool(recompute)
        if method not in NUM_VIEWS:
            raise ValueError(f"method: expected one of {sorted(NUM_VIEWS)}, received {method!r}")
        if int(num_iter) < 1:
            raise ValueError(f"num_iter: expected >= 1, received {num_iter!r}")
        self.num_iter = int(num_iter)
        self.method = method
        self.num_views = NUM_VIEWS[method]
        self.unet_config = {**DEFAULT_UNET, **(unet or {})}
        self.projector_units = int(projector_units)
        self.tau_init = float(tau_init)
        self.dc_weight_init = float(dc_weight_init)
        self.unets = [ComplexUNet2Dt(**self.unet_config, name=f"unet_{i}") for i in range(self.num_iter)]
        self.projectors = [Projector(self.projector_units, name=f"projector_{i}") for i in range(self.num_iter)]
        self.taus = [Scalar(self.tau_init, name=f"tau_{i}") for i in range(self.num_iter)]
        self.dcs = [DCGD(self.dc_weight_init, numerics=self.unet_config.get("numerics", "faithful"), name=f"dc_{i}")
                    for i in range(self.num_iter)]

    @property
    def feature_channels(self) -> int:
        return self.unets[0].bottleneck_channels

    # ------------------------------------------------------------------------------------------ building
    def build_all(self, in_channels: int = 1) -> None:
        """Creates every weight (UNets, projectors, tau, DC) without data."""
        for unet, projector, tau, dc in zip(self.unets, self.projectors, self.taus, self.dcs):
            unet.build((None, None, None, None, in_channels))
            projector.build((None, None, None, None, self.feature_channels))
            tau.build()
            dc.build()
        self.built = True

    def build(self, input_shape=None):
        self.build_all()

    # ------------------------------------------------------------------------------------------ pieces
    def update(self, i: int, x, encoded, skips, paddings, y, mask, coil_maps):
        """Residual step of iteration ``i``: ``DC_i(x - tau_i * decode_i(...) / num_iter)``."""
        residual = self.unets[i].decode(encoded, skips, paddings)
        return residual_update(x, residual, self.taus[i], self.dcs[i], self.num_iter, y, mask, coil_maps)

    def extract(self, x, y, mask, coil_maps, with_image: bool = True) -> tuple[list[tf.Tensor], tf.Tensor | None]:
        """Pred mode: features of every iteration and, when ``with_image``, the final image."""
        features = []
        for i in range(self.num_iter):
            encoded, skips, paddings = self.unets[i].encode(x)
            features.append(encoded)
            if with_image or i < self.num_iter - 1:
                x = self.update(i, x, encoded, skips, paddings, y, mask, coil_maps)
        return features, (x if with_image else None)

    def embed(self, views: Sequence[Sequence[tf.Tensor]], training: bool | None = None) -> tf.Tensor:
        """Train mode: stacked embeddings (num_iter * num_views, B*T', units), iteration-major."""
        if len(views) != self.num_views:
            raise ValueError(f"views: {self.method} needs {self.num_views} views, received {len(views)}")
        images = [v[0] for v in views]
        embeddings = []
        for i in range(self.num_iter):
            last = i == self.num_iter - 1
            for j, (_, y, mask, coil_maps) in enumerate(views):
                def iteration(x, i=i, y=y, mask=mask, coil_maps=coil_maps, last=last):
                    encoded, skips, paddings = self.unets[i].encode(x)
                    if last:  # train mode: the last iteration's decoder and DC are not used
                        return encoded, x
                    return encoded, self.update(i, x, encoded, skips, paddings, y, mask, coil_maps)

                encoded, images[j] = run_iteration(iteration, images[j], bool(self.recompute and training))
                emb = self.projectors[i](encoded, training=training)
                embeddings.append(tf.reshape(emb, [-1, self.projector_units]))
        return tf.stack(embeddings, axis=0)

    # ------------------------------------------------------------------------------------------ keras API
    def call(self, inputs, training=None):
        x, y, mask, coil_maps = unpack_inputs(inputs)
        features, x_out = self.extract(x, y, mask, coil_maps)
        out = {f"feature_{i}": f for i, f in enumerate(features)}
        out["x_out"] = x_out
        return out

    def get_config(self):
        return {
            **super().get_config(), "num_iter": self.num_iter, "method": self.method,
            "unet": self.unet_config, "projector_units": self.projector_units,
            "tau_init": self.tau_init, "dc_weight_init": self.dc_weight_init, "recompute": self.recompute,
        }

    # ------------------------------------------------------------------------------------------ names
    def original_variables(self, include_projector: bool = True) -> dict[str, keras.Variable]:
        """Variables keyed by their name in the original TF checkpoints (``encoder/0/encoder/1/3/kernel`` …)."""
        out: dict[str, keras.Variable] = {}
        for i, unet in enumerate(self.unets):
            for key, var in unet.original_variables().items():
                if key.startswith("encoder/"):
                    out[f"encoder/{i}/{key}"] = var
                else:
                    out[f"decoder/{i}/{key}"] = var
            out[f"tau/{i}/scalar"] = self.taus[i].scalar
            out[f"dc/{i}/weight"] = self.dcs[i].weight_variable
            if include_projector:
                p = self.projectors[i]
                out[f"p/{i}/1/kernel"], out[f"p/{i}/1/bias"] = p.dense_1.kernel, p.dense_1.bias
                out[f"p/{i}/4/kernel"], out[f"p/{i}/4/bias"] = p.dense_2.kernel, p.dense_2.bias
                for idx, bn in ((2, p.bn_1), (5, p.bn_2)):
                    out[f"p/{i}/{idx}/gamma"], out[f"p/{i}/{idx}/beta"] = bn.gamma, bn.beta
                    out[f"p/{i}/{idx}/moving_mean"] = bn.moving_mean
                    out[f"p/{i}/{idx}/moving_variance"] = bn.moving_variance
        return out

    def variables_used_for_features(self) -> list[str]:
        """Original names of the variables that the features of all iterations depend on.

        Feature ``i`` needs encoder ``i`` and the decoders/tau/DC of iterations ``< i``; the last decoder, tau and
        DC only shape the final image.
        """
        names = []
        for key in self.original_variables(include_projector=False):
            kind, idx = key.split("/")[0], int(key.split("/")[1])
            if kind == "encoder" or idx < self.num_iter - 1:
                names.append(key)
        return names


class FeatureObjective(Objective):
    """Stage 1's self-supervised objective: the feature loss of the embeddings of all views.

    Args:
        method: ``"vicreg"`` (2 views) or ``"contrastive"`` (3 views: two of one subject, one of another).
        loss_variant: ``"original"`` (numerically identical to the published code) or ``"standard"``.

    Batch: ``{"views": [view_1, …]}``, each view a dict ``{"x", "y", "mask", "coil_maps"}`` (or a 4-tuple)
    (:func:`data_loader.pipelines.feature_dataset`). The network is a :class:`FeatureNet` of the same method.
    """

    def __init__(self, method: str = "vicreg", loss_variant: str = "original"):
        if method not in NUM_VIEWS:
            raise ValueError(f"method: expected one of {sorted(NUM_VIEWS)}, received {method!r}")
        self.method = method
        self.loss_variant = loss_variant
        self.loss_fn = get_feature_loss(method, loss_variant)

    @staticmethod
    def views(batch: Any) -> list[tuple[tf.Tensor, ...]]:
        views = batch["views"] if isinstance(batch, dict) else batch
        return [unpack_inputs(v) for v in views]

    def losses(self, network: FeatureNet, batch: Any, seed: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        # In train mode the last iteration's decoder, tau and DC are not used (as in the original): no gradient.
        return {"loss": self.loss_fn(network.embed(self.views(batch), training=training))}

    def infer(self, network: FeatureNet, inputs: Any, training: bool | None = None) -> dict[str, tf.Tensor]:
        return network(inputs, training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "method": self.method, "loss_variant": self.loss_variant}
