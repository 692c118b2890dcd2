"""Shared test helpers: where the golden fixtures are, and small loaders."""
from __future__ import annotations

import os
from pathlib import Path

import sys

import numpy as np
import pytest

# tests/ mirrors the packages (tests/utils, tests/data_loader, ...); the shared helpers (helpers.py, conftest.py)
# and a few test modules imported by others are found from every folder.
_TESTS = Path(__file__).resolve().parent
for _folder in [_TESTS, *sorted(p for p in _TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))]:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import utils  # noqa: E402,F401  (TensorFlow's environment defaults, as every command gets them: utils/__init__.py)

import tensorflow as tf  # noqa: E402

# Graphs traced inside the test process skip Grappler's rewrites: tracing a tiny training step is most of a training
# test's time and Grappler about a fifth of it (make test must fit 12 minutes on a 2-core CPU). The commands run in
# subprocesses by the tests (test_faults, test_distribute, test_prepare_data, benchmarks) keep Grappler, as users
# get it; results are compared at tolerances either way.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

# Start TF's runtime with its default thread pools: a training run inside the tests would otherwise set the pools
# for the whole session (train.threads=auto, utils/threads.py), depending on which test happens to run first.
tf.constant(0.0).numpy()

# The registries declare their names (methods, transforms, losses) to the config schema, as the commands do before
# reading a config (scripts/_common.load_registries), whichever test runs first.
import reconstruction.methods  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(os.environ.get("SSFL_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


def fixtures_dir() -> Path:
    if not (FIXTURES_DIR / "golden").is_dir():
        pytest.fail(
            f"golden fixtures not found at {FIXTURES_DIR} (set SSFL_FIXTURES to the shared/fixtures folder)",
            pytrace=False,
        )
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return fixtures_dir()


def load_golden(name: str) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir() / "golden" / name, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def pytest_configure(config) -> None:
    # `make test` leaves these out to stay within 12 minutes on a 2-core CPU; `.ci/run` runs them (make test SLOW=1)
    config.addinivalue_line("markers", "slow: end-to-end runs of 20 s to 3 min (SIGKILL/SIGTERM resume, tf.distribute "
                                       "processes, mixed precision and recompute training, benchmark-methods, demo)")
