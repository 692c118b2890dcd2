"""``ssfl-recon demo``: the main job on the built-in synthetic data, end to end.

1. generate the synthetic data set (cached in ``data.root``),
2. train stage 1 (VICReg) briefly — or, with ``--pretrained``, load ``dummy_weights/``,
3. train SSFL-Recon with the frozen FE,
   (each training stage within its wall-clock budget ``train.max_minutes``, so the demo fits a slow 2-core CPU),
4. evaluate SSFL-Recon, zero-filling and CG-SENSE on held-out subjects at R = 4, 8, 12,
5. write ``runs/demo/report.md`` with the table, stage wall times and figures.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from data_loader import pipelines
from evaluation.evaluate import classical_methods, evaluate_split, model_method, report_lines
from feature_learning.train import train_features
from reconstruction.train import build_recon_model, train_recon
from utils.config import load_config
from utils.io import atomic_write_text
from utils.machine import cpu_description
from utils.schema import ExperimentConfig
from utils.training import WEIGHTS_NAME, read_summary
from utils.weights import load_weights

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DUMMY_FE = REPO / "dummy_weights" / "fe_vicreg_synthetic.weights.h5"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features-config", default=str(REPO / "configs" / "demo_features.yaml"),
                        help="stage-1 config (default configs/demo_features.yaml)")
    parser.add_argument("--recon-config", default=str(REPO / "configs" / "demo_recon.yaml"),
                        help="stage-2 config (default configs/demo_recon.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override applied to both configs, e.g. --set train.epochs=1 (repeatable)")
    parser.add_argument("--pretrained", action="store_true",
                        help=f"skip stage 1 and use the FE weights in {DUMMY_FE.relative_to(REPO)}")
    parser.add_argument("--gpu-scale", action="store_true",
                        help="scale up for a GPU: original size T=25, 176x132, 15 coils, 20 subjects, "
                             "10x the training steps, no time budget")
    parser.add_argument("--accelerations", default="4,8,12", help="comma-separated R values to evaluate")
    parser.add_argument("--out", default="runs/demo", help="report folder")


def _steps(summary: dict | None) -> str:
    if not summary:
        return ""
    return f"{summary['steps']} of {summary['planned_steps']}" if summary.get("planned_steps") else str(summary["steps"])


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.gpu_scale:
        # a GPU run of the original size: no wall-clock budget (that is for slow CPUs)
        overrides = ["data.size=[25,176,132,15]", "data.subjects=20", "train.max_minutes=0"] + overrides
    fe_cfg = load_config(ExperimentConfig, args.features_config, overrides)
    rc_cfg = load_config(ExperimentConfig, args.recon_config, overrides)
    if args.gpu_scale:
        for cfg in (fe_cfg, rc_cfg):
            cfg.train.steps_per_epoch *= 10
    out = Path(args.out)
    times: dict[str, float] = {}
    runs: dict[str, dict] = {}  # summary.json of each training stage (steps done, why it stopped)
    start = time.time()

    t = time.time()
    log.info("[1/4] synthetic data in %s", fe_cfg.data.root)
    pipelines.ensure_synthetic_data(fe_cfg.data)
    times["data"] = time.time() - t

    t = time.time()
    if args.pretrained:
        if not DUMMY_FE.is_file():
            raise FileNotFoundError(f"--pretrained: {DUMMY_FE} is missing")
        rc_cfg.train.pretrained_fe = str(DUMMY_FE)
        log.info("[2/4] stage 1 skipped: using %s", DUMMY_FE)
    else:
        log.info("[2/4] stage 1: VICReg feature learning")
        fe_run = train_features(fe_cfg)
        rc_cfg.train.pretrained_fe = str(fe_run / WEIGHTS_NAME)
        runs["stage 1 (features)"] = read_summary(fe_run)
    times["stage 1 (features)"] = time.time() - t

    t = time.time()
    log.info("[3/4] stage 2: SSFL-Recon")
    rc_run = train_recon(rc_cfg)
    times["stage 2 (SSFL-Recon)"] = time.time() - t
    runs["stage 2 (SSFL-Recon)"] = read_summary(rc_run)

    t = time.time()
    log.info("[4/4] evaluation on held-out subjects")
    model = build_recon_model(rc_cfg)
    load_weights(model, rc_run, "stage-2 weights")
    methods = {**classical_methods(), "ssfl-recon": model_method(model)}
    accs = [float(a) for a in args.accelerations.split(",")]
    # the same code path as `ssfl-recon evaluate --split test --seed 1234` (per-case CSV, summary, figures)
    result = evaluate_split(rc_cfg.data, methods, accs, out / "eval", split="test", seed=1234,
                            settings={"weights": str(rc_run / WEIGHTS_NAME)})
    times["evaluation"] = time.time() - t
    times["total"] = time.time() - start

    lines = ["# SSFL-Recon demo report", "",
             f"Synthetic data: size {rc_cfg.data.size} (T, X, Y, coils), {rc_cfg.data.subjects} subjects, "
             f"test split held out. FE: {'dummy_weights' if args.pretrained else 'trained here'}. "
             "Evaluation files (per-case CSV, summary JSON, all figures): `eval/`.", "",
             *report_lines(result, prefix="eval/"),
             "## Wall time per stage", "", f"CPU: {cpu_description()}.", "",
             "| stage | seconds | optimizer steps | stopped |", "|---|---|---|---|",
             *[f"| {k} | {v:.0f} | {_steps(runs.get(k))} | {runs.get(k, {}).get('stopped', '')} |"
               for k, v in times.items()], "",
             "Each training stage has a wall-clock budget (`train.max_minutes` in `configs/demo_*.yaml`): on a slow "
             "CPU it stops early, keeps its checkpoint and final weights, and the table shows the steps it did.", "",
             f"Loss curves: [stage 2]({Path(rc_run).resolve()}/loss.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    log.info("report: %s (total %.0f s)", out / "report.md", times["total"])
    return 0
