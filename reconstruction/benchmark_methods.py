"""The side-by-side method benchmark (``ssfl-recon benchmark-methods``).

Every trained method gets the same number of optimizer steps (``train.epochs x train.steps_per_epoch``) on the same
training subjects, batch size and learning rate; SSFL-Recon additionally trains its stage-1 FE-Net
(``benchmark.fe_steps``, by default the same budget again) unless ``benchmark.pretrained_fe_vicreg`` /
``pretrained_fe_contrastive`` name FE weights; its reported training time is the sum of both stages. Evaluation:
held-out subjects (``benchmark.eval_split``) at ``benchmark.accelerations`` with VISTA masks and at
``benchmark.gaussian_accelerations`` with CMRxRecon-style time-varying Gaussian masks, and at
``benchmark.vd_random_accelerations`` with the dual-UNet's own training masks (variable-density random, a new draw
per frame, :data:`reconstruction.methods.DUAL_UNET_CENTER_LINES` central lines capped at half the lines of a
frame, as in its training stream). Every method is scored in every family.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from data_loader import pipelines
from evaluation.evaluate import classical_methods, evaluate, format_mean_std, model_method, summary_rows
from evaluation.figures import save_method_grid
from evaluation.metrics import compute_metrics
from feature_learning.train import train_features
from reconstruction.baselines import count_params
from reconstruction.methods import DUAL_UNET_CENTER_LINES
from reconstruction.train import build_recon_model, train_recon
from utils.config import ConfigError, apply_overrides, from_dict, load_config, save_config, to_dict
from utils.engine import weights_owner
from utils.io import atomic_write_text
from utils.schema import ExperimentConfig
from utils.training import WEIGHTS_NAME, steps_for
from utils.weights import load_weights

log = logging.getLogger(__name__)

CLASSICAL = ("zero-filled", "cg-sense")
# benchmark name -> (model.method, model.feature_method or None)
TRAINED = {
    "supervised": ("supervised", None),
    "ssdu": ("ssdu", None),
    "ei": ("ei", None),
    "ei-r": ("ei-r", None),
    "ddei": ("ddei", None),
    "dual-unet": ("dual-unet", None),
    "t-ssdu": ("t-ssdu", None),
    "t-ssdu*": ("t-ssdu*", None),
    "phase2phase": ("phase2phase", None),
    "ddei-cpab": ("ddei-cpab", None),
    "ddei-sure": ("ddei-sure", None),
    "ei-r-sure": ("ei-r-sure", None),
    "ddei-crnn": ("ddei-cpab", None),  # DDEI as its paper trains it: CRNN backbone (model.backbone=crnn)
    "ssfl-vicreg": ("ssfl-recon", "vicreg"),
    "ssfl-contrastive": ("ssfl-recon", "contrastive"),
}
# settings that define a benchmark method beyond its model.method (applied before benchmark.overrides)
METHOD_SETTINGS = {"ddei-crnn": ["model.backbone=crnn"]}
BENCHMARK_METHODS = (*CLASSICAL, *TRAINED)


@dataclass
class BenchmarkSection:
    """The ``benchmark:`` section of a benchmark config.

    methods: names from :data:`BENCHMARK_METHODS` (``zero-filled`` is always evaluated: the figures need it).
    accelerations: R of the VISTA evaluation masks. gaussian_accelerations: R of the CMRxRecon-style time-varying
    Gaussian masks (empty: none). vd_random_accelerations: R of the dual-UNet's own masks (variable-density random,
    its central lines; empty: none). eval_split: held-out split. eval_seed: seed of the evaluation masks.
    max_cases: evaluate only the first this many cases (0: all). figure_acceleration / figure_frame: VISTA R and
    frame of the method grid. fe_steps: stage-1 steps of SSFL-Recon (-1: the same budget as every method, 0: none,
    which needs pretrained FE weights). pretrained_fe_vicreg / pretrained_fe_contrastive: FE weights to use instead
    of training stage 1. overrides: per benchmark method, ``--set``-style ``section.key=value`` strings.
    """

    methods: list[str] = field(default_factory=lambda: list(BENCHMARK_METHODS))
    accelerations: list[float] = field(default_factory=lambda: [4.0, 8.0, 12.0, 16.0])
    gaussian_accelerations: list[float] = field(default_factory=lambda: [4.0, 8.0, 16.0])
    vd_random_accelerations: list[float] = field(default_factory=lambda: [5.0])
    eval_split: str = "test"
    eval_seed: int = 1234
    max_cases: int = 0
    figure_acceleration: float = 8.0
    figure_frame: int = 0
    fe_steps: int = -1
    pretrained_fe_vicreg: str = ""
    pretrained_fe_contrastive: str = ""
    overrides: dict[str, list[str]] = field(default_factory=dict)

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in BENCHMARK_METHODS]
        if unknown:
            raise ConfigError(f"benchmark.methods: unknown {unknown}; valid methods: {list(BENCHMARK_METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"benchmark.methods: duplicates in {self.methods}")
        if not self.accelerations or any(r < 1.0 for r in self.accelerations):
            raise ConfigError(f"benchmark.accelerations: expected R values >= 1, got {self.accelerations}")
        for key in ("gaussian_accelerations", "vd_random_accelerations"):
            values = getattr(self, key)
            if not all(math.isfinite(r) and r >= 1.0 for r in values) or len(set(values)) != len(values):
                raise ConfigError(f"benchmark.{key}: expected distinct finite R values >= 1 (empty: none), got "
                                  f"{values}")
        if self.eval_split not in ("train", "val", "test"):
            raise ConfigError(f"benchmark.eval_split: expected train, val or test, got {self.eval_split!r}")
        if self.max_cases < 0 or self.fe_steps < -1 or self.figure_frame < 0:
            raise ConfigError("benchmark.max_cases, fe_steps (>= -1) and figure_frame must not be negative")
        bad = [k for k in self.overrides if k not in BENCHMARK_METHODS]
        if bad:
            raise ConfigError(f"benchmark.overrides: unknown method(s) {bad}; valid: {list(BENCHMARK_METHODS)}")


@dataclass
class BenchmarkConfig(ExperimentConfig):
    """A stage-2 experiment config shared by all methods plus the ``benchmark`` section."""

    benchmark: BenchmarkSection = field(default_factory=BenchmarkSection)

    def validate(self) -> None:
        super().validate()
        if self.stage != "recon":
            raise ConfigError(f"stage: the benchmark config describes stage 2, expected 'recon', got {self.stage!r}")


def load_benchmark_config(path, overrides=()) -> BenchmarkConfig:
    return load_config(BenchmarkConfig, path, overrides)


def method_config(cfg: BenchmarkConfig, name: str, run_dir: Path) -> ExperimentConfig:
    """The stage-2 config of benchmark method ``name`` (shared settings + its overrides)."""
    method, feature_method = TRAINED[name]
    data = to_dict(cfg)
    data.pop("benchmark")
    data["model"]["method"] = method
    if feature_method:
        data["model"]["feature_method"] = feature_method
    data["train"]["run_dir"] = str(run_dir)
    # one process trains every method and TF's thread pools can be set once: all keep TF's defaults
    data["train"]["threads"] = "tf"
    data["train"]["save_every_epoch"] = False  # the final weights are what the benchmark evaluates
    apply_overrides(data, METHOD_SETTINGS.get(name, []) + cfg.benchmark.overrides.get(name, []))
    return from_dict(ExperimentConfig, data, where=f"benchmark method {name}")


def _fe_config(cfg: ExperimentConfig, steps: int, run_dir: Path) -> ExperimentConfig:
    fe = copy.deepcopy(cfg)
    fe.stage = "features"
    fe.train.run_dir = str(run_dir)
    fe.train.pretrained_fe = ""
    fe.train.val_steps = 0
    if steps != -1:
        fe.train.epochs = max(1, min(cfg.train.epochs, steps))
        fe.train.steps_per_epoch = max(1, math.ceil(steps / fe.train.epochs))
    return fe


def _params_at_inference(model: keras.Model) -> int:
    """Parameters the reconstruction uses: trainable weights, plus the frozen FE of SSFL-Recon (without projectors,
    which only serve stage-1 training)."""
    total = count_params(model.trainable_weights)
    fe = getattr(weights_owner(model), "feature_extractor", None)
    if fe is not None:
        total += count_params([w for w in fe.weights if "projector" not in w.path])
    return total


def _train_one(cfg: BenchmarkConfig, name: str, out: Path, verbose) -> tuple[keras.Model, dict[str, Any]]:
    mcfg = method_config(cfg, name, out / "runs" / name)
    steps = steps_for(mcfg, pipelines.num_examples(mcfg.data, "train")) * mcfg.train.epochs
    info: dict[str, Any] = {"method": name, "steps": steps, "fe_steps": 0, "fe_seconds": 0.0}
    if mcfg.model.method == "ssfl-recon":
        feature_method = mcfg.model.feature_method
        pretrained = getattr(cfg.benchmark, f"pretrained_fe_{feature_method}")
        if pretrained:
            mcfg.train.pretrained_fe = pretrained
            info["fe"] = f"pretrained: {pretrained}"
        elif cfg.benchmark.fe_steps == 0:
            raise ValueError(f"benchmark.fe_steps is 0 but benchmark.pretrained_fe_{feature_method} is empty: "
                             f"{name} needs FE weights")
        else:
            fe_cfg = _fe_config(mcfg, cfg.benchmark.fe_steps, out / "runs" / f"{name}-fe")
            info["fe_steps"] = steps_for(fe_cfg, pipelines.num_examples(fe_cfg.data, "train")) * fe_cfg.train.epochs
            log.info("%s: stage 1 (%s FE-Net), %d steps", name, feature_method, info["fe_steps"])
            start = time.time()
            fe_run = train_features(fe_cfg, verbose=verbose)
            info["fe_seconds"] = time.time() - start
            mcfg.train.pretrained_fe = str(fe_run / WEIGHTS_NAME)
            info["fe"] = "trained in the benchmark"
    log.info("%s: training %d steps", name, steps)
    start = time.time()
    run_dir = train_recon(mcfg, verbose=verbose)
    info["train_seconds"] = time.time() - start
    info["run_dir"] = str(run_dir)
    model = build_recon_model(mcfg)
    load_weights(model, run_dir, f"{name} weights")
    info["params"] = _params_at_inference(model)
    info["total_seconds"] = info["train_seconds"] + info["fe_seconds"]
    return model, info


def benchmark_tables(trained: dict[str, dict], results: dict[str, dict]) -> str:
    """Markdown: the training table (parameters, steps, wall time) and the metrics table per mask family and R."""
    lines = ["| method | parameters | optimizer steps | training wall time (s) | s / step |", "|---|---|---|---|---|"]
    for name, info in trained.items():
        steps = info["steps"] + info["fe_steps"]
        extra = f" (stage 1: {info['fe_steps']} steps, {info['fe_seconds']:.0f} s)" if info["fe_steps"] else ""
        lines.append(f"| {name} | {info['params']:,} | {steps}{extra} | {info['total_seconds']:.0f} | "
                     f"{info['total_seconds'] / max(1, steps):.2f} |")
    lines += ["", "| masks | R | method | PSNR (dB) | SSIM | NRMSE | cases |", "|---|---|---|---|---|---|---|"]
    for family, summary in results.items():
        for acc, method, e in summary_rows(summary):
            lines.append(f"| {family} | {acc} | {method} | {format_mean_std(e['psnr'], 2)} | "
                         f"{format_mean_std(e['ssim'], 4)} | {format_mean_std(e['nrmse'], 4)} | {e['n']} |")
    return "\n".join(lines) + "\n"


def run_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, verbose="auto") -> dict[str, Any]:
    """Trains and evaluates every method of ``cfg.benchmark.methods``; writes into ``out_dir``: ``config.yaml``,
    ``runs/<method>/`` (each run folder), ``training.json``, ``eval_vista/``, ``eval_gaussian/`` and
    ``eval_vd-random/`` (the ``evaluation.evaluate`` reports), ``table.md``, ``method_grid.png`` and ``report.md``. Returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    bench = cfg.benchmark
    start = time.time()
    pipelines.ensure_synthetic_data(cfg.data)
    names = list(bench.methods)
    if "zero-filled" not in names:
        names.insert(0, "zero-filled")
    classical = classical_methods()
    methods: dict[str, Callable] = {n: classical[n] for n in names if n in CLASSICAL}
    trained: dict[str, dict] = {}
    to_train = [n for n in names if n in TRAINED]
    for index, name in enumerate(to_train, start=1):
        log.info("[%d/%d] %s — %.0f s elapsed", index, len(to_train), name, time.time() - start)
        model, info = _train_one(cfg, name, out, verbose)
        methods[name] = model_method(model)
        trained[name] = info
        atomic_write_text(out / "training.json", json.dumps(trained, indent=1) + "\n")
        log.info("[%d/%d] %s trained: %d steps in %.1f s, %s parameters — %.0f s elapsed", index, len(to_train),
                 name, info["steps"] + info["fe_steps"], info["total_seconds"], f"{info['params']:,}",
                 time.time() - start)

    max_cases = bench.max_cases or None

    def cases(kind: str):
        num_center = DUAL_UNET_CENTER_LINES if kind == "vd-random" else None

        def cases_for(acc: float):
            return itertools.islice(pipelines.eval_cases(cfg.data, bench.eval_split, acc, mask_kind=kind,
                                                         seed=bench.eval_seed, num_center=num_center), max_cases)
        return cases_for

    families = [(kind, accs) for kind, accs in (("vista", bench.accelerations),
                                                ("gaussian", bench.gaussian_accelerations),
                                                ("vd-random", bench.vd_random_accelerations)) if accs]
    results = {}
    for kind, accs in families:
        log.info("evaluating %d methods on %s masks at R = %s — %.0f s elapsed", len(methods), kind,
                 ", ".join(f"{a:g}" for a in accs), time.time() - start)
        result = evaluate(cases(kind), methods, accs, out / f"eval_{kind}", figure_cases=0, gif_cases=0,
                          settings={"benchmark": "benchmark-methods", "mask_kind": kind, "split": bench.eval_split,
                                    "seed": bench.eval_seed,
                                    "num_center": DUAL_UNET_CENTER_LINES if kind == "vd-random" else None})
        results[kind] = result.summary

    case = next(iter(cases("vista")(bench.figure_acceleration)), None)
    if case is not None:
        reference = np.asarray(case["reference"])
        recons = {n: np.asarray(fn(case))[0] for n, fn in methods.items()}
        captions = {}
        for n, recon in recons.items():
            mean = compute_metrics(reference, recon[None])["mean"]
            captions[n] = {"psnr": mean["psnr"], "ssim": mean["ssim"]}
        frame = min(bench.figure_frame, reference.shape[1] - 1)
        save_method_grid(out / "method_grid.png", reference[0], recons, frame=frame, metrics=captions,
                         title=f"{case['name']}, VISTA R = {bench.figure_acceleration:g}, frame {frame}")
    table = benchmark_tables(trained, results)
    atomic_write_text(out / "table.md", table)
    total = time.time() - start
    report = ["# Method benchmark", "",
              f"Data: {cfg.data.source} {list(cfg.data.size)} (T, X, Y, coils), {cfg.data.subjects} subjects; "
              f"training split, evaluation on the {bench.eval_split} split. Equal budget: "
              f"{cfg.train.epochs} x {cfg.train.steps_per_epoch or 'one pass'} optimizer steps per method "
              f"(batch {cfg.train.batch_size}, Adam {cfg.train.learning_rate:g}). Training wall time includes graph "
              f"tracing and the per-epoch checkpoints; parameters are those used at inference (SSFL-Recon: "
              f"reconstruction network + frozen FE-Net). Total {total:.0f} s.", "",
              *(["Per-method settings (benchmark.overrides): " + "; ".join(
                  f"{n}: {', '.join(sets)}" for n, sets in bench.overrides.items() if sets), ""]
                if any(bench.overrides.values()) else []),
              table, "![method grid](method_grid.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(report))
    log.info("benchmark finished in %.0f s: %s", total, out / "report.md")
    return {"training": trained, "results": results, "seconds": total}
