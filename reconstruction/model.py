"""Stage 2: feature-assisted self-supervised reconstruction (SSFL-Recon).

``num_iter`` unrolled iterations ``x <- DC_i(x - tau_i * UNet_i(x, feature_i) / num_iter)``, where ``feature_i``
comes from the frozen stage-1 FE-Net (pred path, BatchNorm unused, no gradients) and is concatenated to the UNet's
encoder output at the bottleneck (24 + 24 → 48 channels). Only the FE parts whose output is used are computed:
the FE's last decoder and DC (which the original runs and discards) are skipped.

Training (:meth:`SSFLRecon.train_step`) follows the original: the two re-undersampled views of one acquisition are
reconstructed independently and the loss is

    img_loss = sum_(t,x,y) |x1 - x2|^2   (mean over batch and channel)
    ksp_loss = sum sqrt(|A_2 x1 - y2|^2 + 1e-9) + sum sqrt(|A_1 x2 - y1|^2 + 1e-9)

(``loss_variant="original"``). ``loss_variant="normalized"`` divides each k-space term by the norm of its target
(scale-free, as SSDU's normalised loss) and the image term by the energy of the views' mean.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from feature_learning.model import DEFAULT_UNET, FeatureNet, _unpack
from utils import mri
from utils.complex_layers import PACKAGE
from utils.data_consistency import DCGD, Scalar
from utils.distribute import replica_share
from utils.mri import complex_scale
from utils.recompute import recompute_complex
from utils.unet import ComplexUNet2Dt
from utils.nan_guard import apply_finite_gradients

LOSS_VARIANTS = ("original", "normalized")


def ssl_recon_loss(x1, x2, y1, y2, mask1, mask2, coil_maps, variant: str = "original") -> tuple[tf.Tensor, tf.Tensor]:
    """Image-consistency and cross k-space losses of two reconstructions (see module docstring)."""
    diff = x1 - x2
    img_loss = tf.reduce_mean(tf.reduce_sum(mri.abs2(diff), axis=[1, 2, 3]), axis=[0, -1])
    d12 = mri.forward(x1, mask2, coil_maps) - y2
    d21 = mri.forward(x2, mask1, coil_maps) - y1
    if variant == "original":
        ksp = tf.reduce_sum(tf.sqrt(mri.abs2(d12) + 1e-9)) + tf.reduce_sum(tf.sqrt(mri.abs2(d21) + 1e-9))
        return img_loss, ksp
    if variant == "normalized":
        def rel(d, y):
            return tf.sqrt(tf.reduce_sum(mri.abs2(d))) / (tf.sqrt(tf.reduce_sum(mri.abs2(y))) + 1e-12)
        scale = tf.reduce_mean(tf.reduce_sum(mri.abs2(0.5 * (x1 + x2)), axis=[1, 2, 3]), axis=[0, -1]) + 1e-12
        return img_loss / scale, rel(d12, y2) + rel(d21, y1)
    raise ValueError(f"loss_variant: expected one of {LOSS_VARIANTS}, received {variant!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class SSFLRecon(keras.Model):
    """Feature-assisted unrolled reconstruction network.

    Args:
        num_iter: unrolled iterations (2 in the paper); the FE-Net has the same number.
        feature_method: ``"vicreg"`` or ``"contrastive"`` (which stage-1 model provides the features).
        unet: keyword arguments of :class:`ComplexUNet2Dt` (same defaults as stage 1).
        loss_variant: ``"original"`` or ``"normalized"``.
        recompute: gradient checkpointing: each unrolled iteration keeps only its input image and recomputes its
            UNet and DC activations in the backward pass (peak memory of one iteration instead of all).
        **kwargs: passed to ``keras.Model``.

    Call: ``model({"x", "y", "mask", "coil_maps"})`` → reconstruction (B,T,X,Y,1).
    Training data: ``{"view1": {"x","y","mask"}, "view2": {"x","y","mask"}, "coil_maps": ...}``.
    """

    def __init__(self, num_iter: int = 2, feature_method: str = "vicreg", unet: dict | None = None,
                 loss_variant: str = "original", recompute: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.recompute = bool(recompute)
        if loss_variant not in LOSS_VARIANTS:
            raise ValueError(f"loss_variant: expected one of {LOSS_VARIANTS}, received {loss_variant!r}")
        self.num_iter = int(num_iter)
        self.feature_method = feature_method
        self.loss_variant = loss_variant
        self.unet_config = {**DEFAULT_UNET, **(unet or {})}
        self.feature_extractor = FeatureNet(self.num_iter, feature_method, unet=self.unet_config,
                                            name="feature_extractor")
        self.feature_extractor.trainable = False
        fe_channels = self.feature_extractor.feature_channels
        self.unets = [ComplexUNet2Dt(**self.unet_config, feature_channels=fe_channels, name=f"recon_unet_{i}")
                      for i in range(self.num_iter)]
        self.taus = [Scalar(0.1, name=f"tau_{i}") for i in range(self.num_iter)]
        self.dcs = [DCGD(1.0, name=f"dc_{i}") for i in range(self.num_iter)]
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.img_loss_tracker = keras.metrics.Mean(name="img_loss")
        self.ksp_loss_tracker = keras.metrics.Mean(name="ksp_loss")

    def build_all(self, in_channels: int = 1) -> None:
        self.feature_extractor.build_all(in_channels)
        for unet, tau, dc in zip(self.unets, self.taus, self.dcs):
            unet.build((None, None, None, None, in_channels))
            tau.build()
            dc.build()
        self.built = True

    def build(self, input_shape=None):
        self.build_all()

    def features(self, x, y, mask, coil_maps) -> list[tf.Tensor]:
        """FE features of every iteration (frozen: no gradient flows into the FE-Net)."""
        features, _ = self.feature_extractor.extract(x, y, mask, coil_maps, with_image=False)
        return [tf.stop_gradient(f) for f in features]

    def reconstruct(self, x, y, mask, coil_maps, features=None) -> tf.Tensor:
        if features is None:
            features = self.features(x, y, mask, coil_maps)
        for i in range(self.num_iter):
            def iteration(x, i=i):
                residual = self.unets[i](x, features[i])
                x = x - complex_scale(self.taus[i](residual), 1.0 / self.num_iter)
                return self.dcs[i](x, y, mask, coil_maps)

            x = recompute_complex(iteration)(x)[0] if self.recompute else iteration(x)
        return x

    def call(self, inputs, training=None):
        return self.reconstruct(*_unpack(inputs))

    # ------------------------------------------------------------------------------------------ training
    def compute_ssl_losses(self, data) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns (img_loss, ksp_loss, x1_out, x2_out) for one batch of paired views."""
        if isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        maps = data["coil_maps"]
        v1, v2 = data["view1"], data["view2"]
        x1 = self.reconstruct(v1["x"], v1["y"], v1["mask"], maps)
        x2 = self.reconstruct(v2["x"], v2["y"], v2["mask"], maps)
        img, ksp = ssl_recon_loss(x1, x2, v1["y"], v2["y"], v1["mask"], v2["mask"], maps, self.loss_variant)
        return img, ksp, x1, x2

    def train_step(self, data):
        with tf.GradientTape() as tape:
            img, ksp, _, _ = self.compute_ssl_losses(data)
            loss = img + ksp
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
            share = replica_share(scaled)  # the optimizer sums the replicas' gradients
        variables = self.trainable_variables
        grads = tape.gradient(share, variables)
        apply_finite_gradients(self, zip(grads, variables), loss)  # NaN/Inf steps are not applied
        return self._track(loss, img, ksp)

    def test_step(self, data):
        img, ksp, _, _ = self.compute_ssl_losses(data)
        return self._track(img + ksp, img, ksp)

    def _track(self, loss, img, ksp):
        self.loss_tracker.update_state(loss)
        self.img_loss_tracker.update_state(img)
        self.ksp_loss_tracker.update_state(ksp)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.img_loss_tracker, self.ksp_loss_tracker]

    def get_config(self):
        return {**super().get_config(), "num_iter": self.num_iter, "feature_method": self.feature_method,
                "unet": self.unet_config, "loss_variant": self.loss_variant, "recompute": self.recompute}

    # ------------------------------------------------------------------------------------------ names
    def original_variables(self, include_feature_extractor: bool = True) -> dict[str, Any]:
        """Variables keyed by their name in original SSFL_Recon checkpoints (``recon_unet/0/ops/1/0/kernel`` …)."""
        out = {}
        for i, unet in enumerate(self.unets):
            for key, var in unet.original_variables().items():
                part, rest = key.split("/", 1)
                if part == "encoder":
                    name = f"recon_unet/{i}/ops/0/{rest}"
                elif part == "bottleneck":
                    name = f"recon_unet/{i}/ops/1/{rest}"
                elif part == "decoder":
                    name = f"recon_unet/{i}/ops/2/{rest}"
                else:  # out_layer
                    name = f"recon_unet/{i}/ops/3/{rest}"
                out[name] = var
            out[f"tau/{i}/scalar"] = self.taus[i].scalar
            out[f"dc/{i}/weight"] = self.dcs[i]._weight
        if include_feature_extractor:
            for key, var in self.feature_extractor.original_variables(include_projector=False).items():
                out[f"feature_extractor/{key}"] = var
        return out
