"""Report, not test: how far this machine's outputs are from the golden fixtures, value by value.

    .venv/bin/python tests/golden_report.py [--json FILE]

The tests compare with the fixtures README's tolerances (features/images rtol = atol = 1e-5, losses 1e-4 relative,
train-mode BatchNorm embeddings atol 1e-3) because float32 results depend on the kernels oneDNN/Eigen pick for the
CPU. This script prints the maximum absolute difference of every compared quantity and whether it is bit-identical,
with the CPU model and instruction set, so a README can say "bit-identical on machine X" with the evidence. It never
fails on a difference; it exits 1 only when a value is outside its test tolerance (the tests would fail too).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.machine import cpu_description, import_tensorflow  # noqa: E402

tf = import_tensorflow()
import numpy as np  # noqa: E402

from conftest import fixtures_dir, load_golden  # noqa: E402
from feature_learning import losses  # noqa: E402
from feature_learning.model import FeatureNet  # noqa: E402
from reconstruction.model import SSFLRecon  # noqa: E402
from utils.checkpoint_import import assign_from_checkpoint  # noqa: E402
from utils.complex_layers import ComplexInstanceNorm, MagnitudeMaxPool3D  # noqa: E402


def _row(name: str, ours, ref, atol: float, rtol: float) -> dict:
    ours = np.asarray(ours).astype(np.complex128)
    ref = np.asarray(ref).astype(np.complex128)
    diff = np.abs(ours - ref)
    within = bool(np.all(diff <= atol + rtol * np.abs(ref)))
    return {"name": name, "max_abs_diff": float(diff.max()), "bit_identical": bool(np.all(ours == ref)),
            "within_tolerance": within, "atol": atol, "rtol": rtol}


def rows() -> list[dict]:
    out = []
    layers = load_golden("layers_only.npz")
    out.append(_row("maxpool", MagnitudeMaxPool3D((2, 2, 2))(layers["maxpool_in"]), layers["maxpool_out"], 1e-5, 1e-5))
    out.append(_row("instance_norm", ComplexInstanceNorm()(layers["cin_in"]), layers["cin_out"], 1e-5, 1e-5))
    weights001 = str(fixtures_dir() / "original" / "weights001.tf")
    for method in ("vicreg", "contrastive"):
        model = FeatureNet(2, method)
        model.build_all()
        assign_from_checkpoint(model.original_variables(), weights001)
        g = load_golden(f"fe_{method}_pred.npz")
        features, _ = model.extract(g["x"], g["y"], g["mask"], g["smaps"], with_image=False)
        for i, feature in enumerate(features):
            out.append(_row(f"fe_{method} feature_{i}", feature, g[f"feature_{i}"], 1e-5, 1e-5))
        t = load_golden(f"fe_{method}_train.npz")
        views = [(t[f"x{j}"], t[f"y{j}"], t[f"mask{j}"], t[f"smaps{j}"]) for j in range(1, model.num_views + 1)]
        emb_inference = model.embed(views, training=False)
        out.append(_row(f"fe_{method} emb_bn_inference", emb_inference, t["emb_bn_inference"], 1e-5, 1e-5))
        emb_training = model.embed(views, training=True)
        out.append(_row(f"fe_{method} emb_bn_training", emb_training, t["emb_bn_training"], 1e-3, 0.0))
        loss = (losses.vicreg_loss_original(emb_inference) if method == "vicreg"
                else losses.contrastive_loss_original_rows(emb_inference))
        out.append(_row(f"fe_{method} loss_bn_inference", loss, t["loss_bn_inference"], 0.0, 1e-4))
    model = SSFLRecon(2, "vicreg")
    model.build_all()
    assign_from_checkpoint(model.feature_extractor.original_variables(include_projector=False), weights001)
    assign_from_checkpoint(model.original_variables(), str(fixtures_dir() / "golden" / "ssfl_recon_ckpt"))
    g = load_golden("ssfl_recon_pred.npz")
    x_out = model({"x": g["x"], "y": g["y"], "mask": g["mask"], "coil_maps": g["smaps"]})
    out.append(_row("ssfl_recon x_out", x_out, g["x_out"], 1e-5, 1e-5))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    table = rows()
    print(f"CPU: {cpu_description()}; TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(default)')}")
    print(f"{'quantity':34s} {'max |diff|':>11s}  bit-identical  within tolerance")
    for r in table:
        print(f"{r['name']:34s} {r['max_abs_diff']:11.3g}  {str(r['bit_identical']):13s}  {r['within_tolerance']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "rows": table}, indent=1))
    return 0 if all(r["within_tolerance"] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
