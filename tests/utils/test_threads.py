"""CPU thread pools (``train.threads``, utils/threads.py): parsing, the ``auto`` rule, and that a training run sets
the pools before TensorFlow starts (checked in a fresh Python process, as the pools can be set only once)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils import threads

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text,expected", [("auto", "auto"), ("TF", "tf"), ("1,2", (1, 2)), (" 0, 4 ", (0, 4))])
def test_parse_accepts_the_documented_forms(text, expected) -> None:
    assert threads.parse(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "1", "1,2,3", "-1,2", "a,b"])
def test_parse_rejects_other_text_naming_the_key(text) -> None:
    with pytest.raises(ValueError, match=r"train\.threads: expected 'auto', 'tf' or 'INTRA,INTER'"):
        threads.parse(text)


def test_auto_splits_the_cores_between_the_views_on_cpu_only() -> None:
    assert threads.resolve("auto", streams=2, cores=2, has_gpu=False) == (1, 2)
    assert threads.resolve("auto", streams=3, cores=2, has_gpu=False) == (1, 3)
    assert threads.resolve("auto", streams=2, cores=16, has_gpu=False) == (8, 16)
    # one stream (inference, single-pass baselines) or a GPU: TensorFlow's defaults
    assert threads.resolve("auto", streams=1, cores=2, has_gpu=False) == (0, 0)
    assert threads.resolve("auto", streams=2, cores=2, has_gpu=True) == (0, 0)
    assert threads.resolve("tf", streams=2, cores=2, has_gpu=False) == (0, 0)
    assert threads.resolve("3,1", streams=2, cores=2, has_gpu=True) == (3, 1)


_CHILD = """
import json, sys, logging
logging.basicConfig(level=logging.WARNING)
import tensorflow as tf
from utils import threads
first = threads.configure(sys.argv[1], 2)
now = (tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
tf.constant(1.0) + 1.0  # the runtime starts: the pools are fixed from here on
second = threads.configure("1,1", 2)
print(json.dumps({"first": first, "now": now, "second": second}))
"""


def test_configure_sets_the_pools_once_and_keeps_them_afterwards() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, "2,3"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == {"intra_op_threads": 2, "inter_op_threads": 3}
    assert out["now"] == [2, 3]
    # a later request cannot change a running runtime: it reports (and keeps) the pools in use, with a warning
    assert out["second"] == {"intra_op_threads": 2, "inter_op_threads": 3}
    assert "already running" in proc.stderr


def test_xla_steps_count_as_one_stream() -> None:
    assert threads.training_streams(2, jit_compile=False) == 2
    assert threads.training_streams(3, jit_compile=True) == 1
    assert threads.resolve("auto", threads.training_streams(2, True), cores=2, has_gpu=False) == (0, 0)
