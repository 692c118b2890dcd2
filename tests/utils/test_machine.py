"""utils.machine: CPU description for reports and the quiet TensorFlow start-up of the CLI."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from utils import machine

CPU_ONLY = not machine.has_nvidia_driver()


def test_cpu_description_names_model_isa_and_cores(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    text = machine.cpu_description()
    assert text.startswith(machine.cpu_model()) and machine.cpu_isa() in text and f"{os.cpu_count()} cores" in text
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert machine.cpu_description().endswith("(ONEDNN_MAX_CPU_ISA=AVX2)")


@pytest.mark.parametrize("flags,isa", [("fpu sse4_1 avx avx2 fma avx512f", "AVX-512"), ("sse4_1 avx avx2 fma", "AVX2/FMA"),
                                       ("sse4_1 avx", "AVX"), ("sse4_1", "SSE4")])
def test_cpu_isa_from_flags(monkeypatch, flags, isa):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    machine.cpu_isa.cache_clear()
    machine.cpu_model.cache_clear()
    try:
        assert machine.cpu_isa() == isa and machine.cpu_model() == "Some CPU"
    finally:
        machine.cpu_isa.cache_clear()
        machine.cpu_model.cache_clear()


def test_noise_filter_drops_cuda_start_up_lines_only():
    noise = ["E0000 00:00:1796102123.744442    3307 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
             "I0000 00:00:1796102122.600271    3307 cudart_stub.cc:31] Could not find cuda drivers on your machine",
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"]
    kept = ["Traceback (most recent call last):", "ValueError: config.yaml: data.size expected 4 ints",
            "W0000 00:00:1.0 123 op_level_cost_estimator.cc:700] Error in PredictCost() for the op"]
    assert all(machine._CPU_ONLY_NOISE.search(line) for line in noise)
    assert not any(machine._CPU_ONLY_NOISE.search(line) for line in kept)


def _stderr_of(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.skipif(not CPU_ONLY, reason="an NVIDIA driver is loaded: every start-up line is kept")
def test_cli_start_up_prints_no_cuda_lines_on_a_cpu_only_machine(tmp_path):
    # a whole command through the CLI entry point: make-masks imports TensorFlow via the command module
    stderr = _stderr_of("import sys; from scripts.cli import main; "
                        f"sys.exit(main(['make-masks', '--kind', 'equispaced', '--ny', '16', '--nt', '4', "
                        f"'--acc', '2', '--out', {str(tmp_path / 'm.txt')!r}]))")
    assert (tmp_path / "m.txt").is_file()
    for word in ("cuInit", "cuda", "CUDA", "absl::InitializeLog"):
        assert word not in stderr, stderr


@pytest.mark.skipif(not CPU_ONLY, reason="an NVIDIA driver is loaded: every start-up line is kept")
def test_quiet_import_keeps_other_stderr_lines():
    # a line written to the process' stderr (file descriptor 2) while TensorFlow is imported is passed on
    stderr = _stderr_of("import os, sys, builtins\n"
                        "real_import = builtins.__import__\n"
                        "def noisy(name, *a, **k):\n"
                        "    if name == 'tensorflow' and not getattr(noisy, 'done', False):\n"
                        "        noisy.done = True; os.write(2, b'hello from the import\\n')\n"
                        "    return real_import(name, *a, **k)\n"
                        "builtins.__import__ = noisy\n"
                        "from utils.machine import import_tensorflow\n"
                        "tf = import_tensorflow(); assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '2'\n"
                        "tf.constant(1.0).numpy()\n")
    assert "hello from the import" in stderr
    assert "cuInit" not in stderr and "cuda" not in stderr.lower()
