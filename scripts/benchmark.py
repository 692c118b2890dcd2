"""``ssfl-recon benchmark``: step time and peak memory of the FE-Net and SSFL-Recon, training or inference.

One configuration per process (peak resident memory is a per-process high-water mark, so every configuration of a
sweep runs in a fresh subprocess):

* ``--model fe-vicreg|fe-contrastive|ssfl-recon``, ``--mode train|infer``, ``--size T,X,Y,C`` (batch 1);
* ``--exec eager`` (plain Python calls), ``graph`` (``tf.function``, what ``fit`` runs) or ``jit``
  (``tf.function(jit_compile=True)``, XLA);
* ``--recompute`` recomputes each unrolled iteration's activations in the backward pass (gradient checkpointing);
* ``--mixed-precision bfloat16|float16`` runs the convolutions in that type (GPU option; complex sums stay
  float32);
* ``--threads auto|tf|INTRA,INTER`` sets the CPU thread pools as ``train.threads`` (``utils/threads.py``);
* ``--pipeline`` also times the matching tf.data pipeline on synthetic data of the same size and reports its
  seconds per example as a fraction of the step time;
* ``--ablate norm,modrelu,pool,dc`` (cost attribution; outputs are meaningless) replaces those layers by
  pass-throughs, so the difference to the full step is their cost;
* ``--numerics faithful|fast`` (``model.numerics``); ``--paired`` also builds the model in the other numerics and
  alternates their steps in the one process, so their ratio is measured under the same machine load (separate
  processes on a shared host can differ by 10-20 % from run to run).

Inputs are random tensors of the requested size (as the original dummy loaders): timing does not depend on values.
The JSON has ``step_s`` (median over ``--steps`` after ``--warmup``), ``steps_s`` (all), ``peak_rss_gib`` (process
high-water mark, including TensorFlow itself), ``rss_before_gib`` (after building, before the first step) and
``gpu_peak_gib`` on GPU. ``--sweep small|original|all`` runs a grid of configurations and writes a markdown table;
``--sweep numerics`` runs each configuration in both numerics (memory) and once ``--paired`` (time ratio).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from utils.machine import cpu_description

log = logging.getLogger(__name__)

MODELS = ("fe-vicreg", "fe-contrastive", "ssfl-recon")
MODES = ("train", "infer")
EXECS = ("eager", "graph", "jit")
SWEEPS = ("small", "original", "all", "numerics", "gpu")
NUMERICS = ("faithful", "fast")  # utils.fast_numerics.NUMERICS; a sweep's parent process does not import TensorFlow
SMALL = (12, 96, 72, 8)
ORIGINAL = (25, 176, 132, 15)


def parse_size(text: str) -> tuple[int, int, int, int]:
    from scripts._common import positive_ints

    size = positive_ints(text, 4)
    if size is None:
        raise ValueError(f"--size: expected T,X,Y,C (four positive integers), got {text!r}")
    return size  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODELS, default="fe-vicreg", help="network to time")
    parser.add_argument("--mode", choices=MODES, default="train", help="training step or inference")
    parser.add_argument("--size", default="12,96,72,8", help="T,X,Y,C of one example (batch 1)")
    parser.add_argument("--exec", dest="exec_mode", choices=EXECS, default="graph",
                        help="eager: Python calls; graph: tf.function; jit: tf.function(jit_compile=True)")
    parser.add_argument("--num-iter", type=int, default=2, help="unrolled iterations (2 as the paper)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, allocator warm-up)")
    parser.add_argument("--recompute", action="store_true",
                        help="gradient checkpointing: recompute each unrolled iteration in the backward pass")
    parser.add_argument("--mixed-precision", choices=("none", "bfloat16", "float16"), default="none",
                        help="type of the convolutions (meant for GPUs; float16 adds loss scaling; complex sums "
                             "stay float32)")
    parser.add_argument("--threads", default="auto",
                        help="CPU thread pools as train.threads: auto (training without a GPU: the views share the "
                             "cores; inference: TensorFlow's defaults), tf, or INTRA,INTER")
    parser.add_argument("--numerics", choices=NUMERICS, default="faithful",
                        help="model.numerics: the original's operation order or the reordered fast kernels")
    parser.add_argument("--paired", action="store_true",
                        help="also build the model in the other numerics and alternate their steps in this process: "
                             "the fast/faithful step ratio under the same machine load (peak memory then covers both)")
    parser.add_argument("--ablate", default="",
                        help="cost attribution only (the outputs are wrong): comma-separated layers to replace by "
                             "pass-throughs: norm, modrelu, pool (strided subsampling), dc")
    parser.add_argument("--pipeline", action="store_true",
                        help="also time the matching tf.data pipeline on synthetic data of this size")
    parser.add_argument("--data-root", default="",
                        help="synthetic data folder for --pipeline (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of inputs and weights")
    parser.add_argument("--json", default="", help="write the result to this JSON file")
    parser.add_argument("--distribute", choices=("none", "mirrored"), default="none",
                        help="mirrored: the step under MirroredStrategy over every GPU (each replica one example)")
    parser.add_argument("--sweep", choices=SWEEPS, default=None,
                        help="run a grid of configurations, one subprocess each, and write a markdown table; "
                             "numerics: faithful and fast side by side with fast/faithful ratios; gpu: both stages, "
                             "float32/bfloat16/float16, MirroredStrategy, original size (needs a GPU)")
    parser.add_argument("--out", default="runs/benchmark", help="sweep output folder (results.json, table.md)")


# ------------------------------------------------------------------------------------------------ inputs
def random_view(rng, size, with_image: bool = True) -> dict:
    import numpy as np
    import tensorflow as tf

    t, x, y, c = size

    def cplx(*shape):
        return tf.constant((rng.random(shape) + 1j * rng.random(shape)).astype(np.complex64))

    view = {"y": cplx(1, t, x, y, c), "mask": tf.constant((rng.random((1, t, 1, y, 1)) < 0.3).astype(np.float32))}
    if with_image:
        view["x"] = cplx(1, t, x, y, 1)
    view["coil_maps"] = cplx(1, 1, x, y, c)
    return view


ABLATIONS = ("norm", "modrelu", "pool", "dc")


def parse_ablate(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in ABLATIONS]
    if bad:
        raise ValueError(f"--ablate: expected a comma-separated subset of {list(ABLATIONS)}, got {text!r}")
    return parts


def ablate(parts: list[str]) -> None:
    """Replaces the named layer kinds by pass-throughs in this process (``--ablate``): the step then times
    everything else, which attributes the step's cost to the layers. Outputs are meaningless."""
    from utils import complex_layers, data_consistency

    if "norm" in parts:
        complex_layers.ComplexInstanceNorm.call_parts = lambda self, re, im: (re, im)
        complex_layers.ComplexInstanceNorm.call_stacked = lambda self, x: x
    if "modrelu" in parts:
        complex_layers.ModReLU.call_parts = lambda self, re, im: (re, im)
        complex_layers.ModReLU.call_stacked = lambda self, x: x
    if "norm" in parts or "modrelu" in parts:  # the fast numerics' fused norm + ModReLU: the patched parts
        complex_layers.ComplexInstanceNorm.call_stacked_with_modrelu = (
            lambda self, x, activation: activation.call_stacked(self.call_stacked(x)))
    if "pool" in parts:
        def subsample(self, re, im):
            pt, px, py = self.pool_size
            return re[:, ::pt, ::px, ::py], im[:, ::pt, ::px, ::py]

        def subsample_stacked(self, x):
            pt, px, py = self.pool_size
            return x[:, ::pt, ::px, ::py]

        complex_layers.MagnitudeMaxPool3D.call_parts = subsample
        complex_layers.MagnitudeMaxPool3D.call_stacked = subsample_stacked
    if "dc" in parts:
        data_consistency.DCGD.call = lambda self, x, kspace, mask, coil_maps: x


def build_replicated(args, size):
    """``--distribute mirrored``: the model built in the strategy's scope, every replica running the step on the
    same example (the step time is that of one global batch of ``replicas`` examples)."""
    import tensorflow as tf

    from utils.distribute import get_strategy, model_scope

    strategy = get_strategy(args.distribute)
    single = argparse.Namespace(**{**vars(args), "distribute": "none", "exec_mode": "eager"})
    with model_scope(strategy):
        model, step, data = build(single, size)

    def replicated(inputs):
        return strategy.run(step, args=(inputs,))

    if args.exec_mode == "eager":
        return model, replicated, data
    return model, tf.function(replicated, jit_compile=args.exec_mode == "jit"), data


def build(args, size):
    """Model, the function to time and its argument."""
    if getattr(args, "distribute", "none") != "none":
        return build_replicated(args, size)
    import keras
    import numpy as np
    import tensorflow as tf

    from utils.schema import ExperimentConfig

    rng = np.random.default_rng(args.seed)
    keras.utils.set_random_seed(args.seed)
    cfg = ExperimentConfig()
    cfg.train.mixed_precision = args.mixed_precision
    cfg.model.num_iter = args.num_iter
    cfg.model.numerics = getattr(args, "numerics", "faithful")
    cfg.train.recompute = bool(args.recompute)
    if args.model.startswith("fe-"):
        from feature_learning.train import build_feature_model

        cfg.stage = "features"
        cfg.model.feature_method = args.model[3:]
        model = build_feature_model(cfg)
        if args.mode == "train":
            from feature_learning.losses import NUM_VIEWS

            views = [random_view(rng, size) for _ in range(NUM_VIEWS[cfg.model.feature_method])]
            data = {"views": views}
        else:
            view = random_view(rng, size)
            data = view
    else:
        from reconstruction.train import build_recon_model

        cfg.stage = "recon"
        model = build_recon_model(cfg)
        if args.mode == "train":
            v1, v2 = random_view(rng, size), random_view(rng, size)
            data = {"view1": {k: v1[k] for k in ("x", "y", "mask")},
                    "view2": {k: v2[k] for k in ("x", "y", "mask")}, "coil_maps": v1["coil_maps"]}
        else:
            data = random_view(rng, size)
    if args.mode == "train":
        from utils.training import compile_model

        compile_model(model, cfg)
        fn = model.train_step
    else:
        def fn(inputs):
            return model(inputs, training=False)
    if args.exec_mode == "graph":
        fn = tf.function(fn)
    elif args.exec_mode == "jit":
        fn = tf.function(fn, jit_compile=True)
    return model, fn, data


def _gib(kib: float) -> float:
    return kib / 2**20


def _rss_gib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**30
    except OSError:
        return float("nan")


def _block(out) -> None:
    import tensorflow as tf

    for leaf in tf.nest.flatten(out):
        if hasattr(leaf, "numpy"):
            leaf.numpy()


def time_pipeline_for(args, size, root: str) -> float:
    from data_loader import pipelines
    from utils.schema import DataConfig

    cfg = DataConfig(root=root, size=list(size), subjects=5, seed=args.seed)
    pipelines.ensure_synthetic_data(cfg)
    if args.model == "ssfl-recon":
        ds = pipelines.recon_dataset(cfg, "train", seed=args.seed)
    else:
        ds = pipelines.feature_dataset(cfg, args.model[3:], "train", seed=args.seed)
    return pipelines.time_pipeline(ds, n=20, warmup=3)


def run_one(args) -> dict:
    import tensorflow as tf

    size = parse_size(args.size)
    if args.steps < 1 or args.warmup < 0:
        raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}")
    from feature_learning.losses import NUM_VIEWS
    from utils import threads

    threads.parse(args.threads, "--threads")
    streams = 1
    if args.mode == "train" and args.exec_mode != "eager":  # eager runs one op after another from Python
        views = NUM_VIEWS[args.model[3:]] if args.model.startswith("fe-") else 2
        streams = threads.training_streams(views, jit_compile=args.exec_mode == "jit")
    pools = threads.configure(args.threads, streams)
    ablated = parse_ablate(args.ablate)
    ablate(ablated)
    model, fn, data = build(args, size)
    rss_before = _rss_gib()
    start = time.perf_counter()
    for _ in range(args.warmup):
        _block(fn(data))
    warmup_s = time.perf_counter() - start
    peak_warmup = _gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    other = None
    if getattr(args, "paired", False):  # the other numerics, stepped alternately with this one
        other_args = argparse.Namespace(**{**vars(args), "numerics": "fast" if args.numerics == "faithful" else "faithful"})
        other = (other_args.numerics, *build(other_args, size)[1:])
        for _ in range(args.warmup):
            _block(other[1](other[2]))
    times, other_times = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        _block(fn(data))
        times.append(time.perf_counter() - t0)
        if other is not None:
            t0 = time.perf_counter()
            _block(other[1](other[2]))
            other_times.append(time.perf_counter() - t0)
    result = {
        "model": args.model, "mode": args.mode, "exec": args.exec_mode, "size": list(size),
        "num_iter": args.num_iter, "numerics": args.numerics, "recompute": bool(args.recompute),
        "mixed_precision": args.mixed_precision, "distribute": args.distribute,
        "threads": args.threads, **pools, "ablate": ablated,
        "step_s": statistics.median(times), "steps_s": times, "warmup_s": warmup_s,
        "peak_rss_gib": _gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "rss_before_gib": rss_before, "peak_rss_warmup_gib": peak_warmup, "rss_end_gib": _rss_gib(),
        "params": int(sum(int(tf.size(v)) for v in model.trainable_variables)),
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "cpu_count": os.cpu_count(), "cpu": cpu_description(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default"),
        "tensorflow": tf.__version__, "python": platform.python_version(),
    }
    if other is not None:
        steps = {args.numerics: times, other[0]: other_times}
        result["paired"] = {**{f"{k}_step_s": statistics.median(v) for k, v in steps.items()},
                            "fast_over_faithful": statistics.median(steps["fast"]) / statistics.median(steps["faithful"]),
                            "fast_over_faithful_min": min(steps["fast"]) / min(steps["faithful"])}
    if result["device"] == "GPU":
        peaks = [tf.config.experimental.get_memory_info(d.name.replace("/physical_device:", ""))["peak"]
                 for d in tf.config.list_physical_devices("GPU")]
        result["gpu_peak_gib"] = max(peaks) / 2**30
        result["gpu_peaks_gib"] = [p / 2**30 for p in peaks]
        result["gpus"] = len(peaks)
    if args.pipeline:
        if args.data_root:
            per_example = time_pipeline_for(args, size, args.data_root)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                per_example = time_pipeline_for(args, size, tmp)
        result["pipeline_s_per_example"] = per_example
        result["pipeline_fraction_of_step"] = per_example / result["step_s"]
    return result


# ------------------------------------------------------------------------------------------------- sweep
def sweep_grid(which: str) -> list[dict]:
    grid = []
    if which in ("small", "all"):
        size = ",".join(map(str, SMALL))
        for model in MODELS:
            for execm in EXECS:
                grid.append({"model": model, "mode": "train", "size": size, "exec": execm,
                             "pipeline": execm == "graph"})
            grid.append({"model": model, "mode": "infer", "size": size, "exec": "graph"})
        grid.append({"model": "ssfl-recon", "mode": "train", "size": size, "exec": "graph", "recompute": True})
    if which in ("original", "all"):
        size = ",".join(map(str, ORIGINAL))
        for model in MODELS:
            grid.append({"model": model, "mode": "train", "size": size, "exec": "graph"})
        grid.append({"model": "ssfl-recon", "mode": "train", "size": size, "exec": "graph", "recompute": True})
        grid.append({"model": "ssfl-recon", "mode": "infer", "size": size, "exec": "graph"})
    if which == "numerics":  # faithful and fast next to each other, so both see the same machine load
        small, original = ",".join(map(str, SMALL)), ",".join(map(str, ORIGINAL))
        for model, mode, size in (("fe-vicreg", "train", small), ("ssfl-recon", "train", small),
                                  ("ssfl-recon", "infer", original)):
            for numerics in NUMERICS:
                grid.append({"model": model, "mode": mode, "size": size, "exec": "graph", "numerics": numerics})
            grid.append({"model": model, "mode": mode, "size": size, "exec": "graph", "numerics": "faithful",
                         "paired": True})
    if which == "gpu":
        size = ",".join(map(str, ORIGINAL))
        for model in ("fe-vicreg", "ssfl-recon"):
            for mode in MODES:
                for precision in ("none", "bfloat16", "float16"):
                    for numerics in NUMERICS:
                        grid.append({"model": model, "mode": mode, "size": size, "exec": "graph",
                                     "mixed_precision": precision, "numerics": numerics, "distribute": "mirrored"})
    return grid


def require_gpu() -> None:
    """``--sweep gpu`` needs a visible GPU: a clear error instead of a CPU run mislabelled as GPU figures."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise ValueError("--sweep gpu: no GPU is visible to TensorFlow (tf.config.list_physical_devices('GPU') is "
                         f"empty; CPU: {cpu_description()}); run it on a machine with a GPU and CUDA")


def ratio_rows(results: list[dict]) -> list[str]:
    """``fast / faithful`` rows (step time and peak memory) for every configuration measured in both modes."""
    def key(r):
        return (r["model"], r["mode"], ",".join(map(str, r["size"])), r["exec"], r.get("mixed_precision", "none"),
                r.get("distribute", "none"), bool(r.get("recompute")))

    by_mode, paired = {}, {}
    for r in results:
        if "error" in r:
            continue
        if "paired" in r:
            paired[key(r)] = r["paired"]
        else:
            by_mode.setdefault(key(r), {})[r.get("numerics", "faithful")] = r
    lines = []
    for k, pair in by_mode.items():
        if "fast" in pair and "faithful" in pair:
            fast, faithful = pair["fast"], pair["faithful"]
            memory = "gpu_peak_gib" if "gpu_peak_gib" in fast else "peak_rss_gib"
            same_process = (f"{paired[k]['fast_over_faithful']:.2f} (fastest steps "
                            f"{paired[k]['fast_over_faithful_min']:.2f})" if k in paired else "")
            lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | fast / faithful | "
                         f"{fast['step_s'] / faithful['step_s']:.2f} | {same_process} | "
                         f"{fast[memory] / faithful[memory]:.2f} |")
    return lines


def markdown(results: list[dict]) -> str:
    memory = "peak GPU memory (GiB)" if any("gpu_peak_gib" in r for r in results) else "peak RSS (GiB)"
    lines = [f"| model | mode | size T,X,Y,C | exec | numerics | options | step (s) | {memory} | pipeline "
             "(s/example, share of step) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['mode']} | {r['size']} | {r['exec']} | {r.get('numerics', 'faithful')} "
                         f"| {r.get('options', '')} | failed: {r['error']} | | |")
            continue
        pools = ([f"threads {r.get('intra_op_threads') or 'default'}/{r.get('inter_op_threads') or 'default'}"]
                 if r.get("intra_op_threads") or r.get("inter_op_threads") else [])
        opts = ", ".join(([] if not r.get("recompute") else ["recompute"])
                         + ([] if r.get("mixed_precision", "none") == "none" else [r["mixed_precision"]])
                         + pools + ([f"ablate {'+'.join(r['ablate'])}"] if r.get("ablate") else [])
                         + (["alternating with fast"] if r.get("paired") else [])
                         + ([f"{r['distribute']} x{r.get('gpus', '?')}"] if r.get("distribute", "none") != "none"
                            else [])) or "-"
        size = ",".join(map(str, r["size"]))
        pipe = (f"{r['pipeline_s_per_example']:.3f} ({100 * r['pipeline_fraction_of_step']:.0f} %)"
                if "pipeline_s_per_example" in r else "")
        mem = r.get("gpu_peak_gib", r["peak_rss_gib"])
        lines.append(f"| {r['model']} | {r['mode']} | {size} | {r['exec']} | {r.get('numerics', 'faithful')} | "
                     f"{opts} | {r['step_s']:.3f} | {mem:.2f} | {pipe} |")
    ratios = ratio_rows(results)
    if ratios:
        lines += ["", "| model | mode | size T,X,Y,C | exec | ratio | step (separate runs) | step (alternating in "
                  "one process) | peak memory |", "|---|---|---|---|---|---|---|---|", *ratios]
    cpus = sorted({r["cpu"] for r in results if r.get("cpu")})
    if cpus:  # absolute times only mean something next to the machine they were measured on
        lines += ["", f"CPU: {'; '.join(cpus)}."]
    return "\n".join(lines) + "\n"


def run_sweep(args) -> int:
    from utils.io import atomic_write_text

    if args.sweep == "gpu":
        require_gpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for item in sweep_grid(args.sweep):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            json_path = fh.name
        cmd = [sys.executable, "-m", "scripts.cli", "benchmark", "--model", item["model"], "--mode", item["mode"],
               "--size", item["size"], "--exec", item["exec"], "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--num-iter", str(args.num_iter), "--json", json_path]
        for option in ("numerics", "mixed_precision", "distribute"):
            if option in item:
                cmd += [f"--{option.replace('_', '-')}", item[option]]
        if item.get("recompute"):
            cmd.append("--recompute")
        if item.get("pipeline"):
            cmd.append("--pipeline")
        if item.get("paired"):
            cmd.append("--paired")
        log.info("running %s", " ".join(cmd[3:]))
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if proc.returncode == 0:
            results.append(json.loads(Path(json_path).read_text()))
            log.info("  step %.3f s, peak RSS %.2f GiB", results[-1]["step_s"], results[-1]["peak_rss_gib"])
        else:
            tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            results.append({**item, "error": tail[0][:120]})
            log.warning("  failed: %s", tail[0])
        os.unlink(json_path)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    table = markdown(results)
    atomic_write_text(out / "table.md", table)
    print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.sweep:
        return run_sweep(args)
    result = run_one(args)
    text = json.dumps(result, indent=1)
    if args.json:
        from utils.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    log.info("%s %s %s %s: step %.3f s (median of %d), peak RSS %.2f GiB", args.model, args.mode, args.size,
             args.exec_mode, result["step_s"], args.steps, result["peak_rss_gib"])
    print(text)
    return 0
