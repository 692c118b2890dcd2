"""Evaluation of reconstruction methods on a test split at several accelerations.

Methods: ``zero-filled`` (A^H y), ``cg-sense`` (10 CG iterations) and any trained model exposing
``model({"x","y","mask","coil_maps"})``. Masks are deterministic per case (seeded). Outputs in ``out_dir``:
``per_case.csv``, ``summary.json``, ``table.md`` (mean ± std) and a comparison figure per acceleration.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from evaluation.metrics import MetricOptions, compute_metrics
from utils.data_consistency import cg_sense
from utils.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)
METRICS = ("psnr", "ssim", "nrmse")


def classical_methods(cg_iters: int = 10) -> dict[str, Callable[[dict], np.ndarray]]:
    cg = tf.function(lambda y, m, s: cg_sense(y, m, s, num_iters=cg_iters), reduce_retracing=True)
    return {
        "zero-filled": lambda case: np.asarray(case["x"]),
        "cg-sense": lambda case: np.asarray(cg(case["y"], case["mask"], case["coil_maps"])),
    }


def model_method(model) -> Callable[[dict], np.ndarray]:
    predict = tf.function(lambda x, y, m, s: model({"x": x, "y": y, "mask": m, "coil_maps": s}),
                          reduce_retracing=True)
    return lambda case: np.asarray(predict(case["x"], case["y"], case["mask"], case["coil_maps"]))


def evaluate(cases_for: Callable[[float], Iterable[dict]], methods: dict[str, Callable[[dict], np.ndarray]],
             accelerations: Iterable[float], out_dir: str | Path, options: MetricOptions | None = None,
             figure_case: int = 0) -> dict:
    """Scores every method on every case at every acceleration and writes the report files.

    Args:
        cases_for: acceleration -> iterable of case dicts (``name``, ``x``, ``y``, ``mask``, ``coil_maps``,
            ``reference``), each with batch axis 1.
        methods: name -> function(case) returning the reconstruction (B,T,X,Y,1).
        accelerations: R values.
        out_dir: report folder.
        options: metric options (defaults: the original definitions, every batch element and channel).
        figure_case: index of the case drawn in the per-acceleration figure.
    Returns:
        The summary dict (also written to ``summary.json``).
    """
    from evaluation.figures import save_comparison_panel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = options or MetricOptions()
    rows = []
    for acc in accelerations:
        for index, case in enumerate(cases_for(acc)):
            reference = np.asarray(case["reference"])
            recons = {}
            for name, method in methods.items():
                start = time.time()
                recon = method(case)
                seconds = time.time() - start
                recons[name] = recon
                result = compute_metrics(reference, recon, options)
                rows.append({"acc": acc, "case": case["name"], "method": name, "seconds": seconds,
                             **{k: float(result["mean"][k]) for k in METRICS}})
            if index == figure_case:
                best = [n for n in methods if n not in ("zero-filled",)]
                shown = best[-1] if best else "zero-filled"
                metrics = {key: {k: r[k] for k in ("psnr", "ssim")} for key, r in
                           (("zero_filled", rows[-len(methods)]), ("recon", rows[-1]))}
                save_comparison_panel(out_dir / f"case_R{acc:g}.png", reference[0], recons["zero-filled"][0],
                                      recons[shown][0], title=f"{case['name']}, R={acc:g}: {shown}",
                                      metrics=metrics)
        log.info("R=%g: %s", acc, _summary_line(rows, acc, methods))
    keys = ["acc", "case", "method", "seconds", *METRICS]
    with atomic_path(out_dir / "per_case.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    summary = summarize(rows)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    atomic_write_text(out_dir / "table.md", markdown_table(summary))
    return summary


def _summary_line(rows, acc, methods) -> str:
    parts = []
    for name in methods:
        vals = [r["psnr"] for r in rows if r["acc"] == acc and r["method"] == name]
        parts.append(f"{name} PSNR {np.mean(vals):.2f}")
    return ", ".join(parts)


def summarize(rows: list[dict]) -> dict:
    """{method: {R: {metric: [mean, std], "n": count}}}."""
    out: dict = {}
    for row in rows:
        out.setdefault(row["method"], {}).setdefault(f"{row['acc']:g}", []).append(row)
    summary = {}
    for method, by_acc in out.items():
        summary[method] = {}
        for acc, items in by_acc.items():
            entry = {k: [float(np.mean([r[k] for r in items])), float(np.std([r[k] for r in items]))]
                     for k in (*METRICS, "seconds")}
            entry["n"] = len(items)
            summary[method][acc] = entry
    return summary


def markdown_table(summary: dict) -> str:
    """Markdown table: one row per (R, method), PSNR / SSIM / NRMSE as mean ± std."""
    lines = ["| R | method | PSNR (dB) | SSIM | NRMSE | cases |", "|---|---|---|---|---|---|"]
    accs = sorted({acc for m in summary.values() for acc in m}, key=float)
    for acc in accs:
        for method, by_acc in summary.items():
            if acc not in by_acc:
                continue
            e = by_acc[acc]
            lines.append(f"| {acc} | {method} | {e['psnr'][0]:.2f} ± {e['psnr'][1]:.2f} | "
                         f"{e['ssim'][0]:.4f} ± {e['ssim'][1]:.4f} | {e['nrmse'][0]:.4f} ± {e['nrmse'][1]:.4f} | "
                         f"{e['n']} |")
    return "\n".join(lines) + "\n"
