"""``ssfl-recon evaluate``: score a trained model, zero-filling and CG-SENSE on a data split at several R.

Every case of the split is undersampled at each acceleration with a mask whose seed depends on ``--seed`` and the
case index only, so every method, and every run with the same arguments, sees the same k-space. Writes
``per_case.csv``, ``summary.json``, ``table.md`` (mean ± std), ``settings.json``, ``report.md`` and, per case,
a PNG panel (ground truth | zero-filled | method | 5x error, frame and x-t profile) and a GIF (see
:mod:`evaluation.evaluate`).

Examples::

    ssfl-recon evaluate --weights runs/ssfl_recon --out runs/ssfl_recon/eval
    ssfl-recon evaluate --config configs/ssfl_recon_synthetic.yaml --methods zero-filled,cg-sense \\
        --accelerations 4,8 --psnr-range per-frame --crop cmrxrecon --out runs/baselines
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from data_loader.masks import MASK_GENERATORS
from evaluation.evaluate import classical_methods, evaluate_split, markdown_table, model_method
from evaluation.metrics import MetricOptions
from reconstruction.train import build_recon_model
from scripts._common import load_registries, positive_ints
from utils.config import load_config
from utils.schema import ExperimentConfig
from utils.weights import load_weights

log = logging.getLogger(__name__)

METHOD_CHOICES = ("zero-filled", "cg-sense", "model")
PSNR_RANGES = {"frame0": "frame0", "per-frame": "per_frame", "per_frame": "per_frame", "global": "global"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="stage-2 YAML config: data (source, root, split CSVs) and model shape; default: the "
                             "config.yaml of the run folder given to --weights")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set data.root=data/other (repeatable; YAML values)")
    parser.add_argument("--weights", default=None,
                        help="trained model: a stage-2 run folder (model.weights.h5 inside), a .weights.h5 file, "
                             "or an original SSFL-Recon TF checkpoint; needed by the method 'model'")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods out of " + ", ".join(METHOD_CHOICES)
                             + " (default: all three with --weights, else zero-filled,cg-sense)")
    parser.add_argument("--model-name", default=None,
                        help="name of the model in the table and figures (default: the config's model.method if "
                             "the config has one, else ssfl-recon)")
    parser.add_argument("--accelerations", default="4,8,12,16", help="comma-separated R values (default 4,8,12,16)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test", help="data split (default test)")
    parser.add_argument("--cases", type=int, default=None,
                        help="evaluate only the first N cases of the split (default: all)")
    parser.add_argument("--seed", type=int, default=1234,
                        help="base seed of the per-case masks (default 1234, as the demo)")
    parser.add_argument("--mask-kind", default=None,
                        help="kind of the evaluation masks: vista, equispaced, vd-random, gaussian "
                             "(default: the config's data.mask_kind)")
    parser.add_argument("--cg-iters", type=int, default=10, help="CG-SENSE iterations (default 10)")
    parser.add_argument("--psnr-range", default="frame0",
                        help="PSNR peak value: frame0 (original: max|gt| of frame 0, for every frame; default), "
                             "per-frame (max|gt_t| of each frame), global (max|gt| of the case) or a number")
    parser.add_argument("--crop", default="none",
                        help="region scored: none (default), cmrxrecon (central X/3 x Y/2 as the CMRxRecon "
                             "ranking) or CX,CY (central region of that size)")
    parser.add_argument("--normalize", choices=("none", "cmrxrecon"), default="none",
                        help="none (default: complex images, SSIM on magnitudes) or cmrxrecon (magnitudes, each "
                             "frame divided by its own maximum)")
    parser.add_argument("--protocol", choices=("none", "cmrxrecon2023", "cmrxrecon2024", "dual-unet"), default="none",
                        help="score as a CMRxRecon challenge (evaluation/protocols.py): central 2 slices, first 3 "
                             "frames, magnitude, centre crop X/3 x Y/2, each image divided by its maximum, PSNR/SSIM/"
                             "NMSE per image; or with the dual-UNet project's definitions (dual-unet: PSNR with peak "
                             "1 and a 3-D SSIM over each whole magnitude cine, evaluation/project_metrics.py); "
                             "overrides --psnr-range/--crop/--normalize (default none)")
    parser.add_argument("--original-batch0-only", action="store_true",
                        help="score only batch element 0 / channel 0 in input precision, exactly as the original "
                             "code (default: every element and channel, float64)")
    parser.add_argument("--no-ssim", dest="ssim", action="store_false",
                        help="skip SSIM (the slow metric); its values are then NaN (– in the table)")
    parser.add_argument("--frame", type=int, default=0, help="time frame shown in the panels (default 0)")
    parser.add_argument("--figure-cases", type=int, default=None,
                        help="PNG panels for the first N cases per R (default: every case; 0: none)")
    parser.add_argument("--gif-cases", type=int, default=1, help="GIFs for the first N cases per R (default 1)")
    parser.add_argument("--out", required=True, help="report folder (created)")


def parse_methods(text: str | None, has_weights: bool) -> list[str]:
    """The ``--methods`` list, validated: known names, no repeats, ``model`` only with ``--weights``."""
    if text is None:
        return list(METHOD_CHOICES) if has_weights else ["zero-filled", "cg-sense"]
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--methods: expected a comma-separated list out of {', '.join(METHOD_CHOICES)}, "
                         f"got {text!r}")
    unknown = [m for m in names if m not in METHOD_CHOICES]
    if unknown:
        raise ValueError(f"--methods: unknown method(s) {', '.join(map(repr, unknown))}; valid methods: "
                         f"{', '.join(METHOD_CHOICES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--methods: a method is listed twice in {text!r}")
    if "model" in names and not has_weights:
        raise ValueError("--methods: 'model' needs --weights (a run folder, a .weights.h5 file or an original "
                         "checkpoint)")
    return names


def parse_accelerations(text: str) -> list[float]:
    """The ``--accelerations`` list: numbers >= 1, no repeats."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v >= 1 for v in values):
        raise ValueError(f"--accelerations: expected comma-separated numbers >= 1 (e.g. 4,8,12,16), got {text!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"--accelerations: an R is listed twice in {text!r}")
    return values


def metric_options(args: argparse.Namespace):
    """``MetricOptions`` from the metric flags (errors name the flag)."""

    text = args.psnr_range.strip()
    if text in PSNR_RANGES:
        psnr_range = PSNR_RANGES[text]
    else:
        try:
            psnr_range = float(text)
        except ValueError:
            psnr_range = None
        if psnr_range is None or not (math.isfinite(psnr_range) and psnr_range > 0):
            raise ValueError(f"--psnr-range: expected frame0, per-frame, global or a positive number, got {text!r}")
    crop_text = args.crop.strip()
    if crop_text in ("none", "cmrxrecon"):
        crop = None if crop_text == "none" else "cmrxrecon"
    else:
        crop = positive_ints(crop_text, 2)
        if crop is None:
            raise ValueError(f"--crop: expected none, cmrxrecon or two positive integers CX,CY, got {crop_text!r}")
    return MetricOptions(psnr_data_range=psnr_range, crop=crop, normalize=args.normalize,
                         compute_ssim=args.ssim, original_batch0_only=args.original_batch0_only)


def resolve_config(args: argparse.Namespace):
    """The experiment config: ``--config``, else the run folder's ``config.yaml`` (with ``--set``)."""

    path = args.config
    if path is None:
        run_config = Path(args.weights) / "config.yaml" if args.weights else None
        if run_config is None or not run_config.is_file():
            raise ValueError("--config is required unless --weights is a run folder with a config.yaml")
        path = run_config
    elif not Path(path).is_file():
        raise FileNotFoundError(f"--config {path!r} not found")
    load_registries()
    return load_config(ExperimentConfig, path, args.overrides)


def load_model_weights(model, weights: str) -> str:
    """Loads ``weights`` (run folder, ``.weights.h5``, original TF checkpoint) into the built ``model``.

    Returns:
        The file or checkpoint prefix that was read.

    Raises:
        FileNotFoundError: nothing usable at ``weights`` (the message names the path and what was expected).
        ValueError: the weights do not fit the model built from the config.
    """

    # an SSFL-Recon checkpoint of the original may leave out the FE (it is loaded from train.pretrained_fe)
    return load_weights(model, weights, "--weights", optional_prefixes=("feature_extractor/",)).checkpoint


def run(args: argparse.Namespace) -> int:
    # cheap checks first: a typo fails before data are read
    methods_wanted = parse_methods(args.methods, args.weights is not None)
    accelerations = parse_accelerations(args.accelerations)
    for flag, value, minimum in (("--cases", args.cases, 1), ("--cg-iters", args.cg_iters, 1),
                                 ("--figure-cases", args.figure_cases, 0), ("--gif-cases", args.gif_cases, 0),
                                 ("--frame", args.frame, 0)):
        if value is not None and value < minimum:
            raise ValueError(f"{flag}: expected an integer >= {minimum}, got {value}")
    if args.weights is not None and not Path(args.weights).exists() \
            and not Path(str(args.weights) + ".index").is_file():
        raise FileNotFoundError(f"--weights {args.weights!r} not found: expected a run folder, a '.weights.h5' file "
                                "or an original TF checkpoint prefix")
    options = metric_options(args)
    cfg = resolve_config(args)
    if args.mask_kind is not None:
        if args.mask_kind not in MASK_GENERATORS:
            raise ValueError(f"--mask-kind: unknown kind {args.mask_kind!r}; valid kinds: "
                             f"{', '.join(MASK_GENERATORS)}")
    if cfg.data.size and args.frame >= int(cfg.data.size[0]) and cfg.data.source == "synthetic":
        raise ValueError(f"--frame {args.frame}: the synthetic cines have {cfg.data.size[0]} frames")


    classical = classical_methods(cg_iters=args.cg_iters)
    methods = {}
    weights_read = None
    for name in methods_wanted:
        if name != "model":
            methods[name] = classical[name]
            continue

        model = build_recon_model(cfg)
        weights_read = load_model_weights(model, args.weights)
        label = args.model_name or getattr(cfg.model, "method", None) or "ssfl-recon"
        if label in METHOD_CHOICES[:2]:
            raise ValueError(f"--model-name {label!r} clashes with a baseline's name")
        methods[label] = model_method(model)
        log.info("model %r: weights %s", label, weights_read)
    result = evaluate_split(
        cfg.data, methods, accelerations, args.out, split=args.split, seed=args.seed, mask_kind=args.mask_kind,
        max_cases=args.cases, options=options, figure_cases=args.figure_cases, gif_cases=args.gif_cases,
        frame=args.frame, protocol=None if args.protocol == "none" else args.protocol,
        settings={"config": args.config or str(Path(args.weights) / "config.yaml"),
                  "overrides": list(args.overrides), "weights": weights_read, "cg_iters": args.cg_iters})
    out = Path(args.out)
    log.info("wrote %s, %s, %s, %s and %d figure(s)", out / "per_case.csv", out / "summary.json", out / "table.md",
             out / "report.md", len(result.figures))
    print(markdown_table(result.summary), end="")  # the command's result on stdout; progress went to the log
    return 0
