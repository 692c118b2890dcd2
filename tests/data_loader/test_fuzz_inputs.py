"""Fuzzed inputs: every reader of user files gets seeded mutations of a valid file (truncated, bytes flipped or
replaced, empty, wrong dtype, wrong shape, NaN/Inf, missing keys) and must either read it (a harmless mutation)
or refuse it with ValueError (ConfigError is one) / FileNotFoundError whose message names the file, never
another exception type and never a hang (each call runs under a 10 s alarm).

Readers: ``.npz`` cases (``data_loader.cases.load_case``), our ``.h5`` (``read_h5_subject``), CMRxRecon ``.mat``
k-space (``read_cmrxrecon_cine``) and masks (``read_cmrxrecon_masks``, ``load_cmrxrecon_mask``), the original
layout's ``.npy`` (``OriginalDataset``), mask text files (``read_mask_txt``), YAML configs (``load_config``) and
weights files (``load_weights_checked``)."""
from __future__ import annotations

import contextlib
import signal
from collections import Counter
from pathlib import Path
from typing import Callable

import h5py
import keras
import numpy as np
import pytest
import scipy.io

from data_loader import formats, masks, real_formats
from data_loader.cases import load_case
from utils.config import ConfigError, load_config
from utils.schema import ExperimentConfig
from utils.training import load_weights_checked, save_weights_atomic

T, X, Y, C, S = 2, 8, 6, 2, 1
CALL_TIMEOUT_S = 10
RESULTS: Counter = Counter()


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: int):
    def fire(signum, frame):
        raise _Hang(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


FAILURES: list[str] = []


@pytest.fixture(autouse=True)
def _report_failures():
    """Every variant of a test runs; the test then fails listing all variants that went wrong."""
    FAILURES.clear()
    yield
    assert not FAILURES, f"{len(FAILURES)} variant(s) without a clear error:\n" + "\n".join(FAILURES)


def _check(reader: Callable[[Path], object], path: Path, label: str) -> None:
    """``reader(path)`` either works or raises ValueError/FileNotFoundError naming ``path``."""
    try:
        with _alarm(CALL_TIMEOUT_S):
            reader(path)
        RESULTS["read"] += 1
    except _Hang as err:
        FAILURES.append(f"{label}: {err}")
    except (ValueError, FileNotFoundError) as err:  # ConfigError is a ValueError
        RESULTS["refused"] += 1
        if path.name not in str(err):
            FAILURES.append(f"{label}: the message does not name {path.name}: {err}")
    except Exception as err:  # noqa: BLE001 - the point of the test
        FAILURES.append(f"{label}: {type(err).__name__} instead of a clear error: {str(err)[:200]}")


# ------------------------------------------------------------------------------------------- byte mutations
def _byte_variants(data: bytes, rng: np.random.Generator, count: int) -> list[tuple[str, bytes]]:
    """Seeded byte-level damage: empty, truncations, flipped bytes, zeroed header, garbage, appended junk."""
    out = [("empty", b""), ("garbage", rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()),
           ("zero header", bytes(min(len(data), 600)) + data[600:]), ("junk appended", data + b"\x00junk" * 7)]
    for _ in range(count):
        cut = int(rng.integers(1, len(data)))
        out.append((f"truncated at {cut}", data[:cut]))
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), int(rng.integers(1, 9))):
            flipped[pos] ^= int(rng.integers(1, 256))
        out.append(("bytes flipped", bytes(flipped)))
    return out


def _fuzz_bytes(reader, base: Path, tmp: Path, seed: int, count: int = 6) -> int:
    rng = np.random.default_rng(seed)
    variants = _byte_variants(base.read_bytes(), rng, count)
    for i, (label, data) in enumerate(variants):
        path = tmp / f"bytes{i}{''.join(base.suffixes)}"
        path.write_bytes(data)
        _check(reader, path, f"{base.name}: {label}")
    return len(variants)


def _complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


# -------------------------------------------------------------------------------------------------- readers
def test_fuzz_npz_cases(tmp_path):
    rng = np.random.default_rng(0)
    good = {"y": _complex(rng, (1, T, X, Y, C)), "mask": np.ones((1, T, 1, Y, 1), np.float32),
            "smaps": _complex(rng, (1, 1, X, Y, C))}
    base = tmp_path / "case.npz"
    np.savez(base, **good)
    load_case(base)  # the valid file reads
    n = _fuzz_bytes(load_case, base, tmp_path, seed=1)
    nan = good["y"].copy()
    nan[0, 0, 0, 0, 0] = np.nan
    variants = {
        "no y": {k: v for k, v in good.items() if k != "y"},
        "no mask": {k: v for k, v in good.items() if k != "mask"},
        "no smaps": {k: v for k, v in good.items() if k != "smaps"},
        "y NaN": {**good, "y": nan},
        "mask Inf": {**good, "mask": np.full((1, T, 1, Y, 1), np.inf, np.float32)},
        "y strings": {**good, "y": np.array(["a", "b"])},
        "y objects": {**good, "y": np.array([{"a": 1}], dtype=object)},
        "y 3-D": {**good, "y": good["y"][0, 0]},
        "y 7-D": {**good, "y": good["y"][None, None]},
        "smaps other C": {**good, "smaps": _complex(rng, (1, 1, X, Y, C + 1))},
        "mask transposed": {**good, "mask": np.ones((1, Y, 1, T, 1), np.float32)},
        "x wrong shape": {**good, "x": _complex(rng, (1, T, X + 1, Y, 1))},
        "empty y": {**good, "y": np.zeros((0,), np.complex64)},
        "y scalar": {**good, "y": np.array(1 + 1j)},
        "y bool": {**good, "y": np.ones((1, T, X, Y, C), bool)},
    }
    for i, (label, arrays) in enumerate(variants.items()):
        path = tmp_path / f"variant{i}.npz"
        np.savez(path, **arrays)
        _check(load_case, path, label)
    assert n + len(variants) >= 30


def _h5_arrays(rng):
    kspace = _complex(rng, (S, T, X, Y, C))
    return kspace, _complex(rng, (S, T, X, Y, 1)), _complex(rng, (S, 1, X, Y, C))


def test_fuzz_h5_subjects(tmp_path):
    rng = np.random.default_rng(2)
    kspace, image, maps = _h5_arrays(rng)
    base = tmp_path / "subject.h5"
    formats.write_h5_subject(base, kspace, image, maps, initial_mask=np.ones((Y, T), np.int64))
    formats.read_h5_subject(base)
    n = _fuzz_bytes(formats.read_h5_subject, base, tmp_path, seed=3, count=10)

    def edit(label: str, change: Callable[[h5py.File], None]) -> None:
        path = tmp_path / f"{label.replace(' ', '_')}.h5"
        path.write_bytes(base.read_bytes())
        with h5py.File(path, "r+") as f:
            change(f)
        _check(formats.read_h5_subject, path, label)

    def replace(key, value):
        def change(f):
            del f[key]
            f[key] = value
        return change

    nan = kspace.copy()
    nan[0, 0, 0, 0, 0] = np.inf
    edits = {
        "kspace 4-D": replace("kspace", kspace[0]),
        "kspace ints": replace("kspace", np.ones((S, T, X, Y, C), np.int32)),
        "kspace strings": replace("kspace", np.array([b"abc"])),
        "kspace Inf": replace("kspace", nan),
        "image other X": replace("image", _complex(rng, (S, T, X + 1, Y, 1))),
        "maps other C": replace("coil_maps", _complex(rng, (S, 1, X, Y, C + 1))),
        "mask values 2": replace("initial_mask", np.full((Y, T), 2)),
        "mask transposed": replace("initial_mask", np.ones((T, Y), np.int64)),
        "no image": lambda f: f.__delitem__("image"),
        "format attr": lambda f: f.attrs.__setitem__("format", "other"),
        "version text": lambda f: f.attrs.__setitem__("version", "1"),
        "version future": lambda f: f.attrs.__setitem__("version", 99),
        "kspace group": lambda f: (f.__delitem__("kspace"), f.create_group("kspace")),
        "kspace compound": replace("kspace", np.zeros((S, T, X, Y, C), [("a", "<f4"), ("b", "<i2")])),
    }
    for label, change in edits.items():
        edit(label, change)
    assert n + len(edits) >= 30


def test_fuzz_cmrxrecon_mat(tmp_path):
    rng = np.random.default_rng(4)
    kspace = _complex(rng, (S, T, X, Y, C))
    base = tmp_path / "cine_sax.mat"
    formats.write_cmrxrecon_like(base, kspace)
    formats.read_cmrxrecon_cine(base)
    n = _fuzz_bytes(formats.read_cmrxrecon_cine, base, tmp_path, seed=5, count=8)
    key = formats.CMRX_KEY
    v5 = {
        "v5 ints": {key: np.ones((X, Y, C, S, T), np.int16)},
        "v5 3-D": {key: _complex(rng, (X, Y, T))},
        "v5 NaN": {key: np.full((X, Y, C, S, T), np.nan, np.complex64)},
        "v5 other variable": {"kspace_sub04": _complex(rng, (X, Y, C, S, T))},
        "v5 strings": {key: np.array(["abc"])},
        "v5 struct": {key: {"real": np.ones(3)}},
        "v5 6-D": {key: np.ones((2, 2, 2, 2, 2, 2), np.float32)},
    }
    for i, (label, content) in enumerate(v5.items()):
        path = tmp_path / f"v5_{i}.mat"
        scipy.io.savemat(path, content)
        _check(formats.read_cmrxrecon_cine, path, label)
    compound = tmp_path / "compound.mat"
    with h5py.File(compound, "w") as f:
        f[key] = np.zeros((T, S, C, Y, X), [("re", "<f4"), ("im", "<f4")])
    _check(formats.read_cmrxrecon_cine, compound, "compound with other fields")
    assert n + len(v5) + 1 >= 25


def test_fuzz_cmrxrecon_mask_files(tmp_path):
    rng = np.random.default_rng(6)
    base = tmp_path / "cine_sax_mask.mat"
    lines = (rng.random((1, Y, T)) < 0.5).astype(np.uint8)
    scipy.io.savemat(base, {"mask04": np.repeat(lines, X, axis=0)[..., 0]})
    real_formats.read_cmrxrecon_masks(base)
    kt = tmp_path / "kt_mask.mat"
    scipy.io.savemat(kt, {"mask": np.repeat(lines, X, axis=0)})
    masks.load_cmrxrecon_mask(kt)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    n = _fuzz_bytes(real_formats.read_cmrxrecon_masks, base, tmp_path / "a", seed=7)
    n += _fuzz_bytes(masks.load_cmrxrecon_mask, kt, tmp_path / "b", seed=8)
    variants = {
        "values 2": {"mask": np.full((X, Y, T), 2, np.uint8)},
        "NaN": {"mask": np.full((X, Y, T), np.nan)},
        "4-D": {"mask": np.ones((X, Y, T, 2), np.uint8)},
        "1-D": {"mask": np.ones((Y,), np.uint8)},
        "strings": {"mask": np.array(["ab"])},
        "no mask variable": {"other": np.ones((X, Y))},
        "partial lines": {"mask": (rng.random((X, Y, T)) < 0.5).astype(np.uint8)},
    }
    for i, (label, content) in enumerate(variants.items()):
        path = tmp_path / f"mask_{i}.mat"
        scipy.io.savemat(path, content)
        _check(real_formats.read_cmrxrecon_masks, path, f"read_cmrxrecon_masks: {label}")
        _check(masks.load_cmrxrecon_mask, path, f"load_cmrxrecon_mask: {label}")
    assert n + 2 * len(variants) >= 40


def test_fuzz_original_layout_npy(tmp_path):
    rng = np.random.default_rng(9)
    image, maps = _complex(rng, (S, T, X, Y, 1)), _complex(rng, (S, 1, X, Y, C))
    row = formats.write_original_subject(tmp_path, "subj", image, maps, initial_mask=np.ones((Y, T), np.int64))
    formats.write_dataset_csv(tmp_path / "split.csv", [row])
    names = formats.original_file_names("subj")
    good = {key: (tmp_path / names[key]).read_bytes() for key in ("image", "coil_maps")}

    def read_all(path: Path) -> None:
        dataset = formats.OriginalDataset(tmp_path, "split.csv")
        for i in range(len(dataset)):
            dataset[i]

    read_all(tmp_path)
    count = 0
    for k, key in enumerate(("image", "coil_maps")):
        target = tmp_path / names[key]
        for label, data in _byte_variants(good[key], np.random.default_rng(10 + k), 6):
            target.write_bytes(data)
            _check(read_all_named(read_all, target), target, f"{key}: {label}")
            count += 1
        arrays = {"ints": np.ones((S, T, X, Y, 1), np.int32), "4-D": image[0], "NaN": np.full(image.shape, np.nan),
                  "objects": np.array([None, 1], dtype=object), "other X": _complex(rng, (S, T, X + 1, Y, 1)),
                  "strings": np.array(["a"])}
        for label, array in arrays.items():
            np.save(target, array, allow_pickle=True)
            _check(read_all_named(read_all, target), target, f"{key}: {label}")
            count += 1
        target.write_bytes(good[key])
    assert count >= 30


def read_all_named(read_all, target: Path) -> Callable[[Path], None]:
    """The reader reads a whole folder; the checked path is the damaged file inside it."""
    return lambda path: read_all(target.parent)


def test_fuzz_mask_text_files(tmp_path):
    rng = np.random.default_rng(11)
    mask = (rng.random((Y, T)) < 0.5).astype(np.int64)
    base = tmp_path / "mask.txt"
    masks.write_mask_txt(base, mask)
    masks.read_mask_txt(base, Y, T)

    def reader(path):
        return masks.read_mask_txt(path, Y, T)

    n = _fuzz_bytes(reader, base, tmp_path, seed=12, count=8)
    texts = {"transposed": "\n".join(",".join("1" * Y) for _ in range(T)), "ragged": "0,1\n1\n",
             "letters": "a,b\nc,d\n", "twos": "\n".join(",".join("2" * T) for _ in range(Y)),
             "nan": "\n".join(",".join(["nan"] * T) for _ in range(Y)), "blank": "\n\n  \n",
             "latin-1": "\xe9,1\n", "semicolons": "\n".join(";".join("1" * T) for _ in range(Y)),
             "inf": "\n".join(",".join(["inf"] * T) for _ in range(Y)), "one value": "1"}
    for i, (label, text) in enumerate(texts.items()):
        path = tmp_path / f"variant{i}.txt"
        path.write_bytes(text.encode("latin-1"))
        _check(reader, path, label)
    assert n + len(texts) >= 25


def test_fuzz_yaml_configs(tmp_path):
    base = tmp_path / "config.yaml"
    base.write_text("stage: recon\ndata:\n  source: synthetic\n  size: [4, 16, 12, 2]\nmodel:\n  num_iter: 2\n"
                    "train:\n  epochs: 3\n  checkpoint_every_steps: 5\n  on_nan: skip\n")
    load_config(ExperimentConfig, base)

    def reader(path):
        return load_config(ExperimentConfig, path)

    n = _fuzz_bytes(reader, base, tmp_path, seed=13, count=12)
    texts = ["- a\n- b\n", "stage: [1, 2]\n", "train:\n  epochs: -1\n", "train:\n  epochs: many\n", "train: 5\n",
             "unknown: 1\n", "train:\n  nope: 1\n", "data:\n  size: [1, 2]\n", "a: b: c\n", "{", "\t- x\n",
             "train:\n  checkpoint_every_steps: -3\n", "train:\n  on_nan: ignore\n", "train:\n  epochs: .nan\n",
             "train:\n  learning_rate: .inf\n", "stage: !!python/object:os.system x\n", "&a [*a]\n",
             "model:\n  num_iter: 1e400\n", "train:\n  epochs: true\n", "data:\n  size: null\n"]
    for i, text in enumerate(texts):
        path = tmp_path / f"variant{i}.yaml"
        path.write_text(text)
        _check(reader, path, repr(text))
    _check(reader, tmp_path / "missing.yaml", "missing file")
    assert n + len(texts) + 1 >= 35


def _tiny_model(units: int = 3) -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(units)(keras.layers.Dense(5)(inputs)))


def test_fuzz_weights_files(tmp_path):
    model = _tiny_model()
    base = tmp_path / "model.weights.h5"
    save_weights_atomic(model, base)

    def reader(path):
        return load_weights_checked(_READ_MODEL, path, "weights")

    global _READ_MODEL
    _READ_MODEL = _tiny_model()
    reader(base)
    n = _fuzz_bytes(reader, base, tmp_path, seed=14, count=10)
    other = tmp_path / "other.weights.h5"
    save_weights_atomic(_tiny_model(units=4), other)
    _check(reader, other, "another model's weights")
    subject = tmp_path / "subject.weights.h5"
    rng = np.random.default_rng(15)
    formats.write_h5_subject(subject, *_h5_arrays(rng))
    _check(reader, subject, "an HDF5 file that holds no weights")
    renamed = tmp_path / "renamed.weights.h5"
    renamed.write_bytes(base.read_bytes())
    with h5py.File(renamed, "r+") as f:
        f.move("layers", "other_layers") if "layers" in f else None
    _check(reader, renamed, "weights under another group")
    _check(reader, tmp_path / "missing.weights.h5", "missing file")
    assert n + 4 >= 25


_READ_MODEL: keras.Model | None = None


def test_fuzz_covered_enough_cases():
    # runs last in this file (pytest keeps the order): the variants above number >= 200 in all
    assert RESULTS["read"] + RESULTS["refused"] >= 200, RESULTS
    assert RESULTS["refused"] >= 150, RESULTS
    print(f"fuzzed variants: {dict(RESULTS)}")
