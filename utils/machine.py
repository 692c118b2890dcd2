"""What machine this is (for reports and benchmarks) and a quiet TensorFlow start-up.

* :func:`cpu_description` names the CPU model and the instruction set that matters for float32 kernels (AVX-512,
  AVX2/FMA, ...), and the ``ONEDNN_MAX_CPU_ISA`` limit when one is set. Every timing this project prints names it,
  because absolute times do not carry over between machines.
* :func:`set_tensorflow_environment` (run by every package's ``__init__``, before TensorFlow loads) turns on
  TensorFlow's oneDNN kernels on x86 CPUs (``TF_ENABLE_ONEDNN_OPTS=1``) unless the user set the variable.
  TensorFlow enables them by itself only on CPUs with AVX-512; on an AVX2-only CPU it falls back to Eigen's
  convolutions, which made our training step 6x slower (3.3 s instead of 0.56 s for the FE-Net step, README
  "Speed"). Both kernel sets are within the golden tolerances.
* :func:`import_tensorflow` imports TensorFlow with its C++ log level set (``TF_CPP_MIN_LOG_LEVEL=2`` unless the
  user set it) and, on a machine without a GPU, drops the start-up lines about CUDA (``cuInit`` errors, missing
  drivers) and the absl/oneDNN banners that TensorFlow writes to the process' stderr before Python can filter them.
  Any other line written during the import is passed on unchanged; with a GPU every line is kept.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from functools import lru_cache

# Start-up lines that say nothing on a CPU-only machine (matched anywhere in the line).
_CPU_ONLY_NOISE = re.compile(
    r"cuInit|cuda_platform|cudart_stub|cuda_dnn|cuda_fft|cuda_blas|Unable to register cu(DNN|FFT|BLAS)|"
    r"computation placer already registered|All log messages before absl::InitializeLog|"
    r"oneDNN custom operations are on|This TensorFlow binary is optimized to use available CPU instructions|"
    r"To enable the following instructions|TF-TRT Warning|could not find cuda drivers", re.IGNORECASE)


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


@lru_cache(maxsize=1)
def cpu_model() -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    if match:
        return match.group(1).strip()
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


@lru_cache(maxsize=1)
def cpu_isa() -> str:
    """The widest x86 vector extension of the CPU: ``AVX-512``, ``AVX2/FMA``, ``AVX``, ``SSE4``, else the
    architecture name (e.g. ``aarch64``)."""
    match = re.search(r"^flags\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    flags = set(match.group(1).split()) if match else set()
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2/FMA" if "fma" in flags else "AVX2"
    if "avx" in flags:
        return "AVX"
    if "sse4_1" in flags:
        return "SSE4"
    import platform

    return platform.machine() or "unknown ISA"


def cpu_description() -> str:
    """``"<model>, <ISA>, <n> cores"``, plus the oneDNN limit when ``ONEDNN_MAX_CPU_ISA`` is set."""
    text = f"{cpu_model()}, {cpu_isa()}, {os.cpu_count()} cores"
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{text} (ONEDNN_MAX_CPU_ISA={limit})" if limit else text


def has_nvidia_driver() -> bool:
    """Whether an NVIDIA kernel driver is loaded (without importing TensorFlow)."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def set_tensorflow_environment() -> None:
    """Environment defaults that must be in place before TensorFlow is imported; a value the user set wins."""
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def import_tensorflow():
    """Imports and returns ``tensorflow`` quietly (see module docstring). Safe to call more than once."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    set_tensorflow_environment()
    if "tensorflow" in sys.modules or has_nvidia_driver():
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    gpus: list = []
    failed = True
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            # device discovery is where the cuInit error is printed; it does not start the runtime, so the thread
            # pools can still be chosen afterwards (utils/threads.py)
            gpus = tf.config.list_physical_devices("GPU")
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            for line in text.splitlines(keepends=True):
                if failed or gpus or not _CPU_ONLY_NOISE.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
    return tf
