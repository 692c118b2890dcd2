"""Evaluation of reconstruction methods on a data split at several accelerations.

Methods: ``zero-filled`` (A^H y), ``cg-sense`` (CG on the normal equations, 10 iterations) and any trained model
exposing ``model({"x","y","mask","coil_maps"})``. Masks are deterministic per case (seeded, see
:func:`data_loader.pipelines.eval_cases`), so every method sees the same k-space. Outputs in ``out_dir``:

* ``per_case.csv``: one row per (R, case, method): PSNR, SSIM, NRMSE, NMSE (``evaluation.metrics``) and the
  seconds of the reconstruction (measured after one untimed warm-up call per method and input shape, so graph
  tracing is not counted);
* ``summary.json``: ``{method: {R: {metric: [mean, std], "n": cases}}}`` over the rows of the CSV;
* ``table.md``: the summary as a markdown table (mean ± std);
* ``settings.json``: what was evaluated (methods, R values, metric options and the caller's settings);
* ``figures/R{R}/{case}_{method}.png``: ground truth | zero-filled | method | 5x error map of one frame, with the
  x-t profile of the same four through the row of largest temporal variance (the heart), per case and method;
* ``figures/R{R}/{case}_{method}.gif``: ground truth, zero-filled and the method playing side by side;
* ``report.md``: table and figures.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from data_loader import pipelines
from data_loader.formats import read_dataset_csv
from evaluation import protocols
from evaluation.figures import save_comparison_gif, save_comparison_panel
from evaluation.metrics import MetricOptions, compute_metrics
from evaluation.project_metrics import dual_unet_metrics
from utils.data_consistency import cg_sense
from utils.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)
METRICS = ("psnr", "ssim", "nrmse", "nmse")
ZERO_FILLED = "zero-filled"
CSV_FIELDS = ("acc", "case", "method", "seconds", *METRICS)


def classical_methods(cg_iters: int = 10) -> dict[str, Callable[[dict], np.ndarray]]:
    """The two baselines without training: ``zero-filled`` (the case's ``x`` = A^H y) and ``cg-sense``."""
    cg = tf.function(lambda y, m, s: cg_sense(y, m, s, num_iters=cg_iters), reduce_retracing=True)
    return {
        ZERO_FILLED: lambda case: np.asarray(case["x"]),
        "cg-sense": lambda case: np.asarray(cg(case["y"], case["mask"], case["coil_maps"])),
    }


def model_method(model) -> Callable[[dict], np.ndarray]:
    """A trained model as an evaluation method (inference in a ``tf.function``)."""
    predict = tf.function(lambda x, y, m, s: model({"x": x, "y": y, "mask": m, "coil_maps": s}),
                          reduce_retracing=True)
    return lambda case: np.asarray(predict(case["x"], case["y"], case["mask"], case["coil_maps"]))


@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote.

    Attributes:
        out_dir: the report folder.
        rows: the rows of ``per_case.csv`` (floats, not rounded).
        summary: the content of ``summary.json``.
        figures: one dict per figure: ``acc``, ``case``, ``method``, ``kind`` (``panel`` or ``gif``) and ``path``
            (relative to ``out_dir``).
    """

    out_dir: Path
    rows: list[dict]
    summary: dict
    figures: list[dict]


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "case"


def _check_methods(methods: dict) -> None:
    if not methods:
        raise ValueError("methods: expected at least one method")


def evaluate(cases_for: Callable[[float], Iterable[dict]], methods: dict[str, Callable[[dict], np.ndarray]],
             accelerations: Iterable[float], out_dir: str | Path, options: MetricOptions | None = None,
             figure_cases: int | None = None, gif_cases: int = 1, frame: int = 0, error_scale: float = 5.0,
             settings: dict | None = None, protocol: str | None = None) -> EvaluationResult:
    """Scores every method on every case at every acceleration and writes the report files.

    Args:
        cases_for: acceleration -> iterable of case dicts (``name``, ``x``, ``y``, ``mask``, ``coil_maps``,
            ``reference``), each with batch axis 1.
        methods: name -> function(case) returning the reconstruction (B,T,X,Y,1).
        accelerations: R values.
        out_dir: report folder.
        options: metric options (defaults: the original definitions, every batch element and channel).
        figure_cases: PNG panels for the first this many cases of every R (None: every case; 0: none).
        gif_cases: GIFs for the first this many cases of every R.
        frame: time frame shown in the panels.
        error_scale: amplification of the error maps.
        settings: extra entries for ``settings.json`` (e.g. config, weights, split, seed).
        protocol: ``cmrxrecon2023`` / ``cmrxrecon2024``: score with the challenge's rules
            (:func:`evaluation.protocols.score_case`) instead of ``options``; ``dual-unet``: the dual-UNet project's
            PSNR/SSIM (:func:`evaluation.project_metrics.dual_unet_metrics`, no NRMSE); None: ``options``.

    Returns:
        The rows, summary and figure list (also written to ``out_dir``).

    Raises:
        ValueError: no methods or accelerations, an acceleration without cases, a reconstruction whose shape
            differs from the reference, a frame outside the cine.
    """
    _check_methods(methods)
    accelerations = [float(a) for a in accelerations]
    if not accelerations:
        raise ValueError("accelerations: expected at least one R")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = options or MetricOptions()
    shown = [n for n in methods if n != ZERO_FILLED] or [ZERO_FILLED]
    rows: list[dict] = []
    figures: list[dict] = []
    warmed: set = set()
    for acc in accelerations:
        count = 0
        for index, case in enumerate(cases_for(acc)):
            count += 1
            reference = np.asarray(case["reference"])
            recons, scores = {}, {}
            for name, method in methods.items():
                key = (name, tuple(np.shape(case["y"])))
                if key not in warmed:  # first call per input shape traces the graph: keep it out of the timing
                    method(case)
                    warmed.add(key)
                start = time.perf_counter()
                recon = np.asarray(method(case))
                seconds = time.perf_counter() - start
                if recon.shape != reference.shape:
                    raise ValueError(f"method {name!r} returned shape {recon.shape} for case {case['name']!r}; "
                                     f"expected the reference shape {reference.shape}")
                if protocol == "dual-unet":  # the dual-UNet project's PSNR (peak 1) and 3-D SSIM
                    means = dual_unet_metrics(reference, recon, compute_ssim=min(reference.shape[1:4]) >= 11)["mean"]
                elif protocol:
                    means = protocols.score_case(reference, recon, protocol)
                else:
                    means = compute_metrics(reference, recon, options)["mean"]
                scores[name] = {k: float(means.get(k, float("nan"))) for k in METRICS}
                rows.append({"acc": acc, "case": str(case["name"]), "method": name, "seconds": seconds,
                             **scores[name]})
                recons[name] = recon
            log.info("R=%g case %d %s: %s", acc, index + 1, case["name"],
                     ", ".join(f"{n} PSNR {s['psnr']:.2f} SSIM {s['ssim']:.4f}" for n, s in scores.items()))
            draw_panel = figure_cases is None or index < figure_cases
            if draw_panel or index < gif_cases:
                zero_filled = np.asarray(case["x"])
                folder = Path("figures") / f"R{acc:g}"
                for name in shown:
                    stem = f"{_file_stem(str(case['name']))}_{_file_stem(name)}"
                    base = {"acc": acc, "case": str(case["name"]), "method": name}
                    if draw_panel:
                        captions = {"recon": scores[name]}
                        if ZERO_FILLED in scores:
                            captions["zero_filled"] = scores[ZERO_FILLED]
                        save_comparison_panel(out_dir / folder / f"{stem}.png", reference[0], zero_filled[0],
                                              recons[name][0], frame=frame, error_scale=error_scale,
                                              metrics=captions, recon_label=name,
                                              title=f"{case['name']}, R = {acc:g}: {name} (frame {frame}; "
                                                    "PSNR/SSIM over the whole cine)")
                        figures.append({**base, "kind": "panel", "path": str(folder / f"{stem}.png")})
                    if index < gif_cases:
                        cines = {"ground truth": reference[0], ZERO_FILLED: zero_filled[0]}
                        if name != ZERO_FILLED:
                            cines[name] = recons[name][0]
                        # at least ~100 pixels per cine, so the names above them fit
                        scale = max(2, -(-100 // reference.shape[3]))
                        save_comparison_gif(out_dir / folder / f"{stem}.gif", cines, scale=scale)
                        figures.append({**base, "kind": "gif", "path": str(folder / f"{stem}.gif")})
        if count == 0:
            raise ValueError(f"no evaluation cases at R={acc:g} (empty split?)")
        log.info("R=%g: %s", acc, _summary_line(rows, acc, methods))
    with atomic_path(out_dir / "per_case.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS))
            writer.writeheader()
            writer.writerows(rows)
    summary = summarize(rows)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out_dir / "table.md", markdown_table(summary))
    all_settings = {"methods": list(methods), "accelerations": accelerations, "metric_options":
                    dataclasses.asdict(options), "protocol": protocol, "frame": frame, "error_scale": error_scale,
                    **(settings or {})}
    atomic_write_text(out_dir / "settings.json", json.dumps(all_settings, indent=1, default=str) + "\n")
    result = EvaluationResult(out_dir=out_dir, rows=rows, summary=summary, figures=figures)
    atomic_write_text(out_dir / "report.md", "\n".join(["# Evaluation", "", *report_lines(result)]))
    return result


def evaluate_split(data_cfg, methods: dict[str, Callable[[dict], np.ndarray]], accelerations: Iterable[float],
                   out_dir: str | Path, split: str = "test", seed: int = 1234, mask_kind: str | None = None,
                   max_cases: int | None = None, **kwargs: Any) -> EvaluationResult:
    """:func:`evaluate` on the cases of a configured data split (synthetic data are generated when missing).

    Args:
        data_cfg: ``DataConfig`` (``source``, ``root``, split CSVs, ``mask_cache``).
        methods: name -> function(case).
        accelerations: R values.
        out_dir: report folder.
        split: ``train``, ``val`` or ``test``.
        seed: base seed of the per-case masks (case i at every R uses a seed derived from (seed, i)).
        mask_kind: kind of the evaluation masks (default ``data.mask_kind``).
        max_cases: evaluate only the first this many cases of the split (None: all).
        **kwargs: passed to :func:`evaluate` (options, figure_cases, gif_cases, frame, error_scale, settings,
            protocol: with a protocol only the slices it scores are evaluated).

    Returns:
        The :class:`EvaluationResult`.
    """
    if max_cases is not None and max_cases < 1:
        raise ValueError(f"max_cases (--cases): expected >= 1, got {max_cases}")
    mask_kind = mask_kind or data_cfg.mask_kind
    pipelines.ensure_synthetic_data(data_cfg)
    settings = {"data_root": str(data_cfg.root), "data_source": data_cfg.source, "split": split, "seed": seed,
                "mask_kind": mask_kind, "max_cases": max_cases, **kwargs.pop("settings", {})}

    def cases_for(acc: float) -> Iterable[dict]:
        cases = pipelines.eval_cases(data_cfg, split, acc, mask_kind=mask_kind, seed=seed)
        if kwargs.get("protocol") in protocols.PROTOCOLS:  # the challenges score selected slices only
            rows = read_dataset_csv(pipelines.split_csv_path(data_cfg, split))
            cases = protocols.select_cases(cases, rows, kwargs["protocol"])
        return itertools.islice(cases, max_cases)

    return evaluate(cases_for, methods, accelerations, out_dir, settings=settings, **kwargs)


def _summary_line(rows, acc, methods) -> str:
    parts = []
    for name in methods:
        vals = [r["psnr"] for r in rows if r["acc"] == acc and r["method"] == name]
        parts.append(f"{name} PSNR {np.mean(vals):.2f}")
    return ", ".join(parts)


def summarize(rows: list[dict]) -> dict:
    """{method: {R: {metric: [mean, std], "n": count}}} (population std over the cases)."""
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


def format_mean_std(values: Sequence[float], digits: int) -> str:
    """``mean ± std`` of a summary entry ``[mean, std]``; ``–`` when the metric was not computed (NaN)."""
    mean, std = values
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_rows(summary: dict) -> Iterator[tuple[str, str, dict]]:
    """(R, method, entry) of a summary in table order: R ascending, methods in their order, absent pairs skipped."""
    accs = sorted({acc for by_acc in summary.values() for acc in by_acc}, key=float)
    for acc in accs:
        for method, by_acc in summary.items():
            if acc in by_acc:
                yield acc, method, by_acc[acc]


def markdown_table(summary: dict) -> str:
    """Markdown table: one row per (R, method), PSNR / SSIM / NRMSE / NMSE as mean ± std, seconds per case."""
    lines = ["| R | method | PSNR (dB) | SSIM | NRMSE | NMSE | s / case | cases |",
             "|---|---|---|---|---|---|---|---|"]
    for acc, method, e in summary_rows(summary):
        lines.append(f"| {acc} | {method} | {format_mean_std(e['psnr'], 2)} | {format_mean_std(e['ssim'], 4)} | "
                     f"{format_mean_std(e['nrmse'], 4)} | {format_mean_std(e['nmse'], 4)} | {e['seconds'][0]:.3f} | "
                     f"{e['n']} |")
    return "\n".join(lines) + "\n"


def report_lines(result: EvaluationResult, prefix: str = "") -> list[str]:
    """Markdown of a result: the table, then per R the figures of the first case (others as links).

    Args:
        result: what :func:`evaluate` returned.
        prefix: prepended to every figure path (the folder of ``out_dir`` relative to the report).

    Returns:
        Markdown lines.
    """
    lines = ["## Results (mean ± std over cases)", "", markdown_table(result.summary),
             "PSNR, SSIM, NRMSE: `evaluation.metrics` (settings in `settings.json`); per-case values in "
             "`per_case.csv`.", ""]
    if not result.figures:
        return lines
    lines += ["## Figures", "",
              "Panels: ground truth | zero-filled | method | |method − ground truth| × 5 for one frame (top) and "
              "the x-t profile through the row of largest temporal variance (bottom). GIFs: ground truth, "
              "zero-filled and the method side by side.", ""]
    for acc in sorted({f["acc"] for f in result.figures}):
        items = [f for f in result.figures if f["acc"] == acc]
        first_case = items[0]["case"]
        lines += [f"### R = {acc:g}", ""]
        for fig in items:
            label = f"{fig['case']}, {fig['method']}, R={acc:g}{' (GIF)' if fig['kind'] == 'gif' else ''}"
            if fig["case"] == first_case:
                lines.append(f"![{label}]({prefix}{fig['path']})")
            else:
                lines.append(f"- [{label}]({prefix}{fig['path']})")
        lines.append("")
    return lines
