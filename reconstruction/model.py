"""Stage 2: feature-assisted self-supervised reconstruction (SSFL-Recon).

``num_iter`` unrolled iterations ``x <- DC_i(x - tau_i * UNet_i(x, feature_i) / num_iter)``, where ``feature_i``
comes from the frozen stage-1 FE-Net (pred path, BatchNorm unused, no gradients) and is concatenated to the UNet's
encoder output at the bottleneck (24 + 24 → 48 channels). Only the FE parts whose output is used are computed:
the FE's last decoder and DC (which the original runs and discards) are skipped.

Training (:class:`utils.engine.Engine` with :class:`SSFLObjective`) follows the original: the two re-undersampled views of one acquisition are
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

from feature_learning.model import FeatureNet
from utils import mri
from utils.complex_layers import PACKAGE
from utils.data_consistency import DCGD, Scalar
from utils.engine import Objective, unpack_inputs
from utils.schema import register_choices
from utils.unet import ComplexUNet2Dt
from utils.unrolled import DEFAULT_UNET, residual_update, run_iteration

LOSS_VARIANTS = ("original", "normalized")
register_choices("model.recon_loss", LOSS_VARIANTS)


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
        recompute: gradient checkpointing: each unrolled iteration keeps only its input image and recomputes its
            UNet and DC activations in the backward pass (peak memory of one iteration instead of all).
        **kwargs: passed to ``keras.Model``.

    Call: ``model({"x", "y", "mask", "coil_maps"})`` or ``model(x, y, mask, coil_maps)`` → reconstruction
    (B,T,X,Y,1). Training: ``Engine(SSFLRecon(...), SSFLObjective())``.
    """

    def __init__(self, num_iter: int = 2, feature_method: str = "vicreg", unet: dict | None = None,
                 recompute: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.recompute = bool(recompute)
        self.num_iter = int(num_iter)
        self.feature_method = feature_method
        self.unet_config = {**DEFAULT_UNET, **(unet or {})}
        self.feature_extractor = FeatureNet(self.num_iter, feature_method, unet=self.unet_config,
                                            name="feature_extractor")
        self.feature_extractor.trainable = False
        fe_channels = self.feature_extractor.feature_channels
        self.unets = [ComplexUNet2Dt(**self.unet_config, feature_channels=fe_channels, name=f"recon_unet_{i}")
                      for i in range(self.num_iter)]
        self.taus = [Scalar(0.1, name=f"tau_{i}") for i in range(self.num_iter)]
        self.dcs = [DCGD(1.0, numerics=self.unet_config.get("numerics", "faithful"), name=f"dc_{i}")
                    for i in range(self.num_iter)]

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
                return residual_update(x, residual, self.taus[i], self.dcs[i], self.num_iter, y, mask, coil_maps)

            x = run_iteration(iteration, x, self.recompute)
        return x

    def call(self, inputs, y=None, mask=None, coil_maps=None, training=None):
        if y is None:
            return self.reconstruct(*unpack_inputs(inputs))
        return self.reconstruct(inputs, y, mask, coil_maps)

    def get_config(self):
        return {**super().get_config(), "num_iter": self.num_iter, "feature_method": self.feature_method,
                "unet": self.unet_config, "recompute": self.recompute}

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
            out[f"dc/{i}/weight"] = self.dcs[i].weight_variable
        if include_feature_extractor:
            for key, var in self.feature_extractor.original_variables(include_projector=False).items():
                out[f"feature_extractor/{key}"] = var
        return out


class SSFLObjective(Objective):
    """Stage 2's self-supervised objective: image consistency between the reconstructions of two
    re-undersampled views plus the cross k-space loss (:func:`ssl_recon_loss`).

    Args:
        loss_variant: ``"original"`` or ``"normalized"``.

    Batch: ``{"view1": {"x","y","mask"}, "view2": {"x","y","mask"}, "coil_maps": ...}``
    (:func:`data_loader.pipelines.recon_dataset`). Losses: ``loss = img_loss + ksp_loss``.
    """

    loss_names = ("loss", "img_loss", "ksp_loss")

    def __init__(self, loss_variant: str = "original"):
        if loss_variant not in LOSS_VARIANTS:
            raise ValueError(f"loss_variant: expected one of {LOSS_VARIANTS}, received {loss_variant!r}")
        self.loss_variant = loss_variant

    def reconstructions(self, network: SSFLRecon, batch: dict) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(img_loss, ksp_loss, x1_out, x2_out) of one batch of paired views."""
        maps = batch["coil_maps"]
        v1, v2 = batch["view1"], batch["view2"]
        x1 = network(v1["x"], v1["y"], v1["mask"], maps)
        x2 = network(v2["x"], v2["y"], v2["mask"], maps)
        img, ksp = ssl_recon_loss(x1, x2, v1["y"], v2["y"], v1["mask"], v2["mask"], maps, self.loss_variant)
        return img, ksp, x1, x2

    def losses(self, network: SSFLRecon, batch: Any, seed: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        img, ksp, _, _ = self.reconstructions(network, batch)
        return {"loss": img + ksp, "img_loss": img, "ksp_loss": ksp}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "loss_variant": self.loss_variant}
