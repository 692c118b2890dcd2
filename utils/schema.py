"""The config schema: one dataclass per section; YAML files in ``configs/`` fill them (see utils/config.py).

Every key is documented here and in the README ("Config keys"). Unknown keys are errors listing the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from utils.complex_layers import POOL_GRADIENTS
from utils.config import ConfigError
from utils.fast_numerics import NUMERICS

# Lists of names that belong to higher layers (methods, transforms, losses) are registered by their registries
# (``register_choices`` at import: reconstruction/methods.py, reconstruction/transforms.py, reconstruction/baselines.py,
# reconstruction/model.py, feature_learning/losses.py), so each list has one source and utils imports nothing above
# it. The commands import the registries before reading a config; a config read without them is checked when the
# method is built (the registries' own lookups name the valid values).
_CHOICES: dict[str, tuple[str, ...]] = {}


def register_choices(key: str, names) -> None:
    """Declares the valid values of config key ``key`` (``section.name``)."""
    _CHOICES[key] = tuple(names)


def registered_choices(key: str) -> tuple[str, ...] | None:
    """The registered values of ``key``; None when its registry was not imported."""
    return _CHOICES.get(key)


def _check_registered(key: str, value: str) -> None:
    allowed = _CHOICES.get(key)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{key}: expected one of {list(allowed)}, got {value!r}")


DATA_SOURCES = ("synthetic", "original", "h5")
FEATURE_METHODS = ("vicreg", "contrastive")
MIXED_PRECISION = ("none", "bfloat16", "float16")
DISTRIBUTE_STRATEGIES = ("none", "mirrored", "multi_worker")  # utils/distribute.py


@dataclass
class DataConfig:
    """Where examples come from and how they are re-undersampled.

    source: ``synthetic`` (built-in phantom, generated into ``root`` on first use), ``original`` (the authors'
        preprocessed layout: ``norm_img_*.npy``, ``cc_smap_15_*.npy``, ``mask_GRAPPA_*.txt`` + CSVs) or ``h5``
        (our HDF5 layout).
    root: data folder.
    train_csv / val_csv / test_csv: split files inside ``root`` (CSV with ``filename,nFE,nPE,COIL_DIM,TIME_DIM,
        SLICE_DIM``); for ``synthetic`` they are written by the generator.
    size: synthetic size [T, X, Y, C].
    subjects: synthetic subjects (split 60/20/20 into train/val/test).
    seed: data seed (phantoms, masks, shuffling).
    snr_db: synthetic noise level.
    mask_kind: re-undersampling mask generator (``vista``, ``vd-random``, ``gaussian``, ``equispaced``).
    initial_acc: acceleration of the initial (acquired) equispaced mask; 1 = fully sampled acquisition.
    min_r / max_r: acceleration range of the re-undersampling masks in feature learning.
    start_r: acceleration of the base mask in the reconstruction stage (the "acquired" data).
    train_r: [low, high] acceleration range of the two re-undersampling masks in the reconstruction stage.
    val_r: acceleration used for validation.
    val_r_range: [low, high] stage-2 validation R drawn per example from this range's integers (the original: 2–16);
        empty = ``val_r``.
    val_redraw: draw the stage-2 validation masks anew on every pass over the validation split (the original
        redraws R and mask seed in every ``__getitem__``); false = the same masks every epoch (comparable losses).
    mask_seeds: number of distinct mask seeds per acceleration (1..mask_seeds).
    contrastive_rule: ``diff`` (|R1 - R3| >= contrastive_min_gap) or ``random`` for the negative view's mask.
    contrastive_min_gap: gap of the ``diff`` rule.
    num_parallel_calls: parallel map workers (-1 = AUTOTUNE).
    mask_cache: folder for generated VISTA masks (empty = default cache).
    dummy: ``true`` feeds random tensors of ``size`` instead of data (like the original dummy loaders).
    masks: ``retrospective`` (masks generated as above) or ``prospective`` (``source: h5`` only): the acquisition of
        every case is the prospective mask stored by ``prepare-data`` in its file (``prospective_masks/<name>``):
        stage 1's initial mask (``initial_acc`` is then unused), stage 2's base mask (instead of ``mask_kind`` at
        ``start_r``; the views' re-undersampling masks are drawn within it) and the baselines' acquisition (masks
        at ``model.train_accelerations`` or the dual-UNet's are multiplied by it). It must be Cartesian ky lines
        per frame (the same for every kx); k-t patterns such as radial are errors. Evaluation stays retrospective
        (the prepared files hold fully sampled k-space). A file without the mask is an error naming the masks it has.
    prospective_mask: name of the stored mask for ``masks: prospective`` (``R04``, ``Uniform8``, ``ktGaussian8``,
        ...); empty = the first one stored (in name order) in each file.
    time_window: frames per training window (``data_loader/video_windows.py``; DDEI: 12); 0 = the whole cine.
    video_normalisation: DDEI's per-video normalisation (``data_loader/video_windows.py``): ``none``, ``reference``
        (mean/std of the fully sampled image, as DDEI) or ``zero_filled`` (of ``A^H y``).
    """

    source: str = "synthetic"
    root: str = "data/synthetic"
    train_csv: str = "train.csv"
    val_csv: str = "val.csv"
    test_csv: str = "test.csv"
    size: list[int] = field(default_factory=lambda: [12, 96, 72, 8])
    subjects: int = 10
    seed: int = 0
    snr_db: float = 30.0
    mask_kind: str = "vista"
    initial_acc: float = 1.0
    min_r: float = 2.0
    max_r: float = 12.0
    start_r: float = 4.0
    train_r: list[float] = field(default_factory=lambda: [2.0, 4.0])
    val_r: float = 8.0
    val_r_range: list[float] = field(default_factory=list)
    val_redraw: bool = False
    mask_seeds: int = 20
    contrastive_rule: str = "diff"
    contrastive_min_gap: float = 5.0
    num_parallel_calls: int = -1
    mask_cache: str = ""
    dummy: bool = False
    masks: str = "retrospective"
    prospective_mask: str = ""
    time_window: int = 0
    video_normalisation: str = "none"

    def validate(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ConfigError(f"data.source: expected one of {list(DATA_SOURCES)}, got {self.source!r}")
        if self.masks not in ("retrospective", "prospective"):
            raise ConfigError(f"data.masks: expected 'retrospective' or 'prospective', got {self.masks!r}")
        if self.masks == "prospective" and self.source != "h5":
            raise ConfigError(f"data.masks: 'prospective' reads the masks prepare-data stores in HDF5 files and needs "
                              f"data.source 'h5', got {self.source!r}")
        if "/" in self.prospective_mask or self.prospective_mask != self.prospective_mask.strip():
            raise ConfigError(f"data.prospective_mask: expected a stored mask name such as 'R04' (no '/' or "
                              f"surrounding spaces), got {self.prospective_mask!r}")
        if len(self.size) != 4 or min(self.size) < 1:
            raise ConfigError(f"data.size: expected [T, X, Y, C] of positive ints, got {self.size}")
        if not 1.0 <= self.min_r <= self.max_r:
            raise ConfigError(f"data.min_r/max_r: expected 1 <= min_r <= max_r, got {self.min_r}, {self.max_r}")
        if len(self.train_r) != 2 or not 1.0 <= self.train_r[0] <= self.train_r[1]:
            raise ConfigError(f"data.train_r: expected [low, high] with 1 <= low <= high, got {self.train_r}")
        if self.contrastive_rule not in ("diff", "random"):
            raise ConfigError(f"data.contrastive_rule: expected 'diff' or 'random', got {self.contrastive_rule!r}")
        if self.mask_seeds < 2:
            raise ConfigError(f"data.mask_seeds: need at least 2 seeds so two views differ, got {self.mask_seeds}")
        if self.val_r_range and (len(self.val_r_range) != 2 or not 1.0 <= self.val_r_range[0] <= self.val_r_range[1]):
            raise ConfigError(f"data.val_r_range: expected [low, high] with 1 <= low <= high (or [] = val_r), got "
                              f"{self.val_r_range}")
        if isinstance(self.time_window, bool) or self.time_window < 0:
            raise ConfigError(f"data.time_window: expected an integer >= 0 (0 = whole cine), got {self.time_window!r}")
        if self.video_normalisation not in ("none", "reference", "zero_filled"):
            raise ConfigError(f"data.video_normalisation: expected 'none', 'reference' or 'zero_filled', "
                              f"got {self.video_normalisation!r}")


@dataclass
class ModelConfig:
    """Network shape (defaults = the paper's FE-Net and SSFL-Recon UNets).

    num_iter: unrolled iterations. filters, num_levels, layers_per_level, kernel_size_2d, kernel_size_t,
    pool_size: the complex 2D+t UNet. feature_method: ``vicreg`` | ``contrastive``. feature_loss: ``original`` |
    ``standard`` (stage 1). recon_loss: ``original`` | ``normalized`` (stage 2). projector_units: MLP width.
    numerics: ``faithful`` (the original's operation order, bit for bit) or ``fast`` (the same UNets, weights and
    checkpoints with reordered float32 arithmetic, ``utils/fast_numerics.py``, and the coil-first DC gradient step,
    ``utils/mri.gradient_step``; equal up to rounding).

    method: what ``train-recon`` trains (``reconstruction/methods.py``): ``ssfl-recon`` (the paper; FE from
    ``feature_method``), ``supervised`` (the unrolled net without features, loss to the fully sampled image),
    ``ssdu`` (k-space splitting), ``ei`` (equivariant imaging with ``ei_transform``), ``ei-r`` (EI, rotations),
    ``ddei`` (EI, ``(diffeo | rotate) | time-shift``), ``dual-unet`` (dual 2D UNet + 3D ResNet, supervised).
    supervised_loss: ``mse`` | ``l1`` (supervised, dual-unet). ssdu_split_ratio: fraction of the acquired k-space
    kept for data consistency (0.6; the held-out 0.4 is SSDU's rho). ssdu_split: ``uniform`` | ``gaussian``
    selection of the held-out points. ssdu_center_lines: central ky lines always kept for data consistency.
    ei_transform: transform of method ``ei`` (``time-shift``, ``rotate``, ``diffeo``, ``ddei``, ``ddei-chain``).
    ei_weight: weight of the equivariance loss. backbone: network of the baselines, ``unet`` (the unrolled UNet)
    or ``crnn`` (DDEI's CRNN, ``reconstruction/crnn.py``); crnn_cascades / crnn_channels: its cascades (2) and hidden
    channels (64). noise_sigma: std (per real number) of Gaussian noise added to the acquired k-space every training
    step (DDEI's ``--noise``; 0 = none). sure_tau: Monte-Carlo step of the SURE losses (DDEI: 0.1).
    train_accelerations: R values of the training masks of the
    baselines (supervised, ssdu, ei*); empty = the acquisition (``data.mask_kind`` at ``data.start_r``, seed 10).
    dual_unet_filters / dual_unet_levels: the dual-UNet's first-level channels (64 in its project) and levels (4).
    dual_unet_dropout / dual_unet_dropout_levels: UNet dropout rate (0.3) and the 0-based encoder levels it follows
    ([0, 1, 3], the project's). dual_unet_output: ``complex`` (residual, complex output), ``magnitude`` (its
    magnitude; loss to the magnitude reference) or ``sigmoid`` (the project's network). dual_unet_variant:
    ``dual-resnet``, ``dual`` (no ResNet) or ``single-resnet`` (one UNet on real + imaginary channels).
    dual_unet_weight_decay: PyTorch Adam's coupled L2 (1e-4 in the project; 0 = none). dual_unet_lr_schedule:
    ``constant`` or ``warmup-cosine`` (5 % linear warm-up from 1e-3 x lr, then a half cosine to 0).
    dual_unet_masks: training masks (vd-random, R 5, 11 central lines): ``random`` (a new draw per example and
    epoch) or ``fixed`` (one mask for the whole data set, as the project). dual_unet_dc: end with a trainable
    gradient data-consistency step (one cascade of the project's unrolled variant; not with ``sigmoid``).
    """

    num_iter: int = 2
    filters: int = 12
    num_levels: int = 2
    layers_per_level: int = 1
    kernel_size_2d: list[int] = field(default_factory=lambda: [1, 5, 5])
    kernel_size_t: list[int] = field(default_factory=lambda: [3, 1, 1])
    pool_size: list[int] = field(default_factory=lambda: [2, 2, 2])
    feature_method: str = "vicreg"
    feature_loss: str = "original"
    recon_loss: str = "original"
    projector_units: int = 64
    method: str = "ssfl-recon"
    supervised_loss: str = "mse"
    ssdu_split_ratio: float = 0.6
    ssdu_split: str = "gaussian"
    ssdu_center_lines: int = 4
    ei_transform: str = "time-shift"
    ei_weight: float = 1.0
    train_accelerations: list[float] = field(default_factory=list)
    dual_unet_filters: int = 64
    dual_unet_levels: int = 4
    pool_gradient: str = "optox"
    numerics: str = "faithful"
    dual_unet_dropout: float = 0.3
    dual_unet_dropout_levels: list[int] = field(default_factory=lambda: [0, 1, 3])
    dual_unet_output: str = "complex"
    dual_unet_variant: str = "dual-resnet"
    dual_unet_weight_decay: float = 0.0
    dual_unet_lr_schedule: str = "constant"
    dual_unet_masks: str = "random"
    dual_unet_dc: bool = False
    backbone: str = "unet"
    crnn_cascades: int = 2
    crnn_channels: int = 64
    noise_sigma: float = 0.0
    sure_tau: float = 0.1

    def validate(self) -> None:
        for key in ("method", "supervised_loss", "ssdu_split", "ei_transform", "feature_loss", "recon_loss"):
            _check_registered(f"model.{key}", getattr(self, key))
        if not 0.0 < self.ssdu_split_ratio < 1.0:
            raise ConfigError(f"model.ssdu_split_ratio: expected a number in (0, 1), got {self.ssdu_split_ratio}")
        if any(r < 1.0 for r in self.train_accelerations):
            raise ConfigError(f"model.train_accelerations: expected R values >= 1, got {self.train_accelerations}")
        if self.feature_method not in FEATURE_METHODS:
            raise ConfigError(f"model.feature_method: expected one of {list(FEATURE_METHODS)}, "
                              f"got {self.feature_method!r}")
        if self.num_iter < 1:
            raise ConfigError(f"model.num_iter: expected >= 1, got {self.num_iter}")
        if self.pool_gradient not in POOL_GRADIENTS:
            raise ConfigError(f"model.pool_gradient: expected one of {list(POOL_GRADIENTS)}, "
                              f"got {self.pool_gradient!r}")
        if self.numerics not in NUMERICS:
            raise ConfigError(f"model.numerics: expected one of {list(NUMERICS)}, got {self.numerics!r}")
        self._validate_dual_unet()
        self._validate_ddei()

    def _validate_ddei(self) -> None:
        if self.backbone not in ("unet", "crnn"):
            raise ConfigError(f"model.backbone: expected 'unet' or 'crnn', got {self.backbone!r}")
        if self.crnn_cascades < 1 or self.crnn_channels < 1:
            raise ConfigError(f"model.crnn_cascades / crnn_channels: expected >= 1, got {self.crnn_cascades}, "
                              f"{self.crnn_channels}")
        if not self.noise_sigma >= 0:
            raise ConfigError(f"model.noise_sigma: expected >= 0, got {self.noise_sigma}")
        if not self.sure_tau > 0:
            raise ConfigError(f"model.sure_tau: expected > 0, got {self.sure_tau}")

    def _validate_dual_unet(self) -> None:
        choices = {"dual_unet_output": ("complex", "magnitude", "sigmoid"),
                   "dual_unet_variant": ("dual-resnet", "dual", "single-resnet"),
                   "dual_unet_lr_schedule": ("constant", "warmup-cosine"),
                   "dual_unet_masks": ("random", "fixed")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model.{key}: expected one of {list(allowed)}, got {getattr(self, key)!r}")
        if self.dual_unet_filters < 1 or self.dual_unet_levels < 1:
            raise ConfigError(f"model.dual_unet_filters / dual_unet_levels: expected >= 1, got "
                              f"{self.dual_unet_filters}, {self.dual_unet_levels}")
        if not 0.0 <= self.dual_unet_dropout < 1.0:
            raise ConfigError(f"model.dual_unet_dropout: expected a rate in [0, 1), got {self.dual_unet_dropout}")
        if any(level < 0 for level in self.dual_unet_dropout_levels):
            raise ConfigError(f"model.dual_unet_dropout_levels: expected 0-based encoder levels >= 0, got "
                              f"{self.dual_unet_dropout_levels}")
        if self.dual_unet_dc and self.dual_unet_output == "sigmoid":
            raise ConfigError("model.dual_unet_dc: needs model.dual_unet_output 'complex' or 'magnitude', got "
                              "'sigmoid' (a magnitude output has no k-space to correct)")
        if not self.dual_unet_weight_decay >= 0:
            raise ConfigError(f"model.dual_unet_weight_decay: expected >= 0, got {self.dual_unet_weight_decay}")

    def unet_kwargs(self, mixed_precision: str = "none") -> dict:
        """UNet arguments; ``mixed_precision`` (``float16``/``bfloat16``) is the type of its convolutions."""
        return dict(filters=self.filters, num_levels=self.num_levels, layers_per_level=self.layers_per_level,
                    kernel_size_2d=tuple(self.kernel_size_2d), kernel_size_t=tuple(self.kernel_size_t),
                    pool_size=tuple(self.pool_size), conv_dtype=None if mixed_precision == "none" else mixed_precision,
                    pool_gradient=self.pool_gradient, numerics=self.numerics)


@dataclass
class TrainConfig:
    """Optimisation and run bookkeeping.

    epochs: training epochs. steps_per_epoch: optimizer steps per epoch (0 = one pass over the training split).
    val_steps: validation examples per epoch (0 = none). learning_rate: Adam step (4e-4 as the original).
    batch_size: examples per step (1 for the feature models: their MLP treats time frames as the batch).
    seed: weights/shuffling seed. run_dir: output folder (``runs/<name>``). jit_compile: XLA-compile the step.
    recompute: gradient checkpointing: keep only each unrolled iteration's input and recompute its activations in
    the backward pass (memory grows with one iteration instead of all; about one extra forward pass of time).
    mixed_precision: ``none``, ``bfloat16`` or ``float16``: the type of the UNets' real convolutions (for GPUs;
    complex sums, normalisation, data consistency and losses stay float32). ``float16`` adds dynamic loss
    scaling; ``bfloat16`` has float32's range and needs none.
    pretrained_fe: stage-2 only: FE weights (our ``.weights.h5``, a stage-1 run folder, or an original TF
    checkpoint prefix such as ``weights001.tf``); empty = random FE (warned).
    distribute: data-parallel training (``utils/distribute.py``): ``none`` (one device), ``mirrored`` (every GPU
    of this machine) or ``multi_worker`` (several machines, ``TF_CONFIG``). Each replica takes its own
    ``batch_size`` (1 for the feature models), one step averages the replicas' gradients; only the chief writes.
    threads: CPU thread pools (``utils/threads.py``): ``auto`` (without a GPU, the views of a step share the cores
    instead of each asking for all of them), ``tf`` (TensorFlow's defaults) or ``"INTRA,INTER"``.
    max_minutes: wall-clock budget of the training run (0 = none). When it is spent the step in progress finishes,
    a checkpoint and the final weights are written and the run reports the steps it did (``summary.json``).
    log_seconds: without a terminal (logs, CI, nohup) a progress line (step, loss, steps/s, ETA) at least this
    often; on a terminal Keras' progress bar is shown instead.
    checkpoint_every_steps: also write a checkpoint every this many optimizer steps (0 = at the end of every epoch
    only); a run killed at any point and resumed with ``--resume RUN_DIR`` loses at most this many steps (an
    epoch's steps with 0) and then continues exactly as the uninterrupted run (same data order and masks).
    on_nan: a step with a NaN/Inf loss or gradient is never applied; ``stop`` ends the run with an error keeping
    the last good checkpoint, ``skip`` leaves the step out and goes on (``summary.json`` counts skipped steps).
    save_every_epoch: also write the network's weights after every epoch as ``weights{epoch:03d}.weights.h5``
    (1-based, like the original's ``weights{epoch:03d}.tf``) in the run folder (:mod:`utils.epoch_weights`), so a
    stage-2 run can take an earlier FE epoch (``pretrained_fe: <run>/weights020.weights.h5``).
    keep_epoch_weights: keep only the newest this many per-epoch files (0 = keep all, as the original).
    """

    epochs: int = 200
    steps_per_epoch: int = 0
    val_steps: int = 0
    learning_rate: float = 4e-4
    batch_size: int = 1
    seed: int = 0
    run_dir: str = "runs/run"
    jit_compile: bool = False
    recompute: bool = False
    mixed_precision: str = "none"
    pretrained_fe: str = ""
    distribute: str = "none"
    threads: str = "auto"
    max_minutes: float = 0.0
    log_seconds: float = 30.0
    checkpoint_every_steps: int = 0
    on_nan: str = "stop"
    save_every_epoch: bool = True
    keep_epoch_weights: int = 0

    def validate(self) -> None:
        from utils import threads

        try:
            threads.parse(self.threads)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.distribute not in DISTRIBUTE_STRATEGIES:
            raise ConfigError(f"train.distribute: expected one of {list(DISTRIBUTE_STRATEGIES)}, "
                              f"got {self.distribute!r}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs: expected >= 1, got {self.epochs}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: expected > 0, got {self.learning_rate}")
        if not self.max_minutes >= 0:
            raise ConfigError(f"train.max_minutes: expected >= 0 (0 = no budget), got {self.max_minutes}")
        if not self.log_seconds > 0:
            raise ConfigError(f"train.log_seconds: expected > 0, got {self.log_seconds}")
        if isinstance(self.checkpoint_every_steps, bool) or self.checkpoint_every_steps < 0:
            raise ConfigError(f"train.checkpoint_every_steps: expected an integer >= 0 (0 = every epoch only), "
                              f"got {self.checkpoint_every_steps!r}")
        if self.on_nan not in ("stop", "skip"):
            raise ConfigError(f"train.on_nan: expected 'stop' or 'skip', got {self.on_nan!r}")
        if isinstance(self.keep_epoch_weights, bool) or self.keep_epoch_weights < 0:
            raise ConfigError(f"train.keep_epoch_weights: expected an integer >= 0 (0 = keep all), "
                              f"got {self.keep_epoch_weights!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"train.mixed_precision: expected one of {list(MIXED_PRECISION)}, "
                              f"got {self.mixed_precision!r}")


@dataclass
class ExperimentConfig:
    """A whole run: ``stage`` is ``features`` (stage 1) or ``recon`` (stage 2)."""

    stage: str = "features"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.stage not in ("features", "recon"):
            raise ConfigError(f"stage: expected 'features' or 'recon', got {self.stage!r}")
