"""Tests of the config system (utils/config.py + utils/schema.py): YAML into dataclasses, validation with useful
messages, ``--set`` overrides, and save/reload round trips (the resolved config written into each run folder must
load back to the same object)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from utils.config import ConfigError, load_config, save_config
from utils.schema import DataConfig, ExperimentConfig, ModelConfig, TrainConfig

EXAMPLE = """
stage: recon
data:
  source: synthetic
  size: [4, 16, 12, 2]
  train_r: [2, 4]        # ints in the file, floats in the schema
model:
  num_iter: 3
  kernel_size_2d: [1, 3, 3]
train:
  epochs: 5
  learning_rate: 1      # an int where a float is expected is fine
  run_dir: runs/test
"""


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_loads_into_experiment_config(tmp_path) -> None:
    cfg = load_config(ExperimentConfig, _write(tmp_path, EXAMPLE))
    assert isinstance(cfg, ExperimentConfig) and isinstance(cfg.train, TrainConfig)
    assert cfg.stage == "recon"
    assert cfg.data.size == [4, 16, 12, 2]
    assert cfg.data.train_r == [2.0, 4.0] and all(type(v) is float for v in cfg.data.train_r)
    assert cfg.model.num_iter == 3 and cfg.model.kernel_size_2d == [1, 3, 3]
    assert cfg.train.epochs == 5 and cfg.train.run_dir == "runs/test"
    assert cfg.train.learning_rate == 1.0 and type(cfg.train.learning_rate) is float
    # keys not in the file keep their defaults
    assert cfg.model.filters == ModelConfig().filters and cfg.data.seed == DataConfig().seed


def test_no_file_and_empty_file_give_defaults(tmp_path) -> None:
    assert load_config(ExperimentConfig) == ExperimentConfig()
    assert load_config(ExperimentConfig, _write(tmp_path, "# nothing but a comment\n")) == ExperimentConfig()


@pytest.mark.parametrize("text,bad,valid", [
    ("train:\n  epoch: 3\n", "epoch", "epochs"),
    ("trian:\n  epochs: 3\n", "trian", "train"),
    ("model:\n  numiter: 3\n", "numiter", "num_iter"),
])
def test_unknown_key_lists_valid_keys(tmp_path, text: str, bad: str, valid: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ExperimentConfig, _write(tmp_path, text))
    message = str(info.value)
    assert repr(bad) in message and repr(valid) in message, message
    assert "valid keys" in message


@pytest.mark.parametrize("text,where", [
    ("train:\n  epochs: three\n", "train.epochs"),
    ("train:\n  epochs: 2.5\n", "train.epochs"),
    ("train:\n  epochs: true\n", "train.epochs"),     # bool is an int subclass in Python, not in a config
    ("train:\n  learning_rate: fast\n", "train.learning_rate"),
    ("train:\n  jit_compile: 1\n", "train.jit_compile"),
    ("train:\n  run_dir: 3\n", "train.run_dir"),
    ("data:\n  size: 12\n", "data.size"),
    ("model:\n  kernel_size_2d: [1, five, 5]\n", "model.kernel_size_2d[1]"),
    ("train: 5\n", "train"),
    ("stage: [features]\n", "stage"),
])
def test_wrong_types_are_rejected_with_their_location(tmp_path, text: str, where: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(ExperimentConfig, path)
    message = str(info.value)
    assert f"{path}.{where}:" in message, message  # file and dotted key, e.g. config.yaml.train.epochs


@pytest.mark.parametrize("text,field_name", [
    ("train:\n  epochs: 0\n", "train.epochs"),
    ("stage: inference\n", "stage"),
    ("model:\n  feature_method: simclr\n", "model.feature_method"),
    ("data:\n  train_r: [4, 2]\n", "data.train_r"),
    ("train:\n  threads: many\n", "train.threads"),
    ("train:\n  threads: '1,-2'\n", "train.threads"),
    ("train:\n  max_minutes: -1\n", "train.max_minutes"),
    ("train:\n  log_seconds: 0\n", "train.log_seconds"),
    ("model:\n  pool_gradient: real\n", "model.pool_gradient"),
])
def test_invalid_values_are_rejected(tmp_path, text: str, field_name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field_name)):
        load_config(ExperimentConfig, _write(tmp_path, text))


def test_overrides_apply_on_top_of_the_file(tmp_path) -> None:
    path = _write(tmp_path, EXAMPLE)
    cfg = load_config(ExperimentConfig, path, [
        "train.epochs=3", "data.train_r=[4, 8]", "model.kernel_size_2d=[1,5,5]", "stage=features",
        "train.run_dir=runs/other", "data.dummy=true",
    ])
    assert cfg.train.epochs == 3 and type(cfg.train.epochs) is int
    assert cfg.data.train_r == [4.0, 8.0]
    assert cfg.model.kernel_size_2d == [1, 5, 5]
    assert cfg.stage == "features" and cfg.train.run_dir == "runs/other" and cfg.data.dummy is True
    # untouched file values stay
    assert cfg.model.num_iter == 3 and cfg.data.size == [4, 16, 12, 2]
    # later overrides win
    assert load_config(ExperimentConfig, path, ["train.epochs=3", "train.epochs=7"]).train.epochs == 7
    # overrides without a file start from the defaults
    assert load_config(ExperimentConfig, None, ["train.epochs=3"]).train == dataclasses.replace(TrainConfig(),
                                                                                                  epochs=3)


@pytest.mark.parametrize("override,message", [
    ("train.new_key=1", "new_key"),           # unknown key in an existing section
    ("train.new.key=1", "new"),               # a new nested section
    ("extra.key=1", "extra"),                 # a new top-level section
    ("train.epochs.value=1", "epochs"),       # a value used as a section
    ("train.epochs", "section.key=value"),    # no '='
    ("train.epochs=three", "train.epochs"),   # overrides are type-checked like the file
    ("data.train_r=[4, 8", "data.train_r"),   # not valid YAML
])
def test_bad_overrides_are_rejected(tmp_path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ExperimentConfig, _write(tmp_path, EXAMPLE), [override])


def test_scientific_notation_without_a_dot_is_a_number(tmp_path) -> None:
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; float fields must still accept it, in files and in --set
    cfg = load_config(ExperimentConfig, None, ["train.learning_rate=1e-4"])
    assert cfg.train.learning_rate == pytest.approx(1e-4) and type(cfg.train.learning_rate) is float
    cfg = load_config(ExperimentConfig, _write(tmp_path, "train:\n  learning_rate: 4e-4\n"))
    assert cfg.train.learning_rate == pytest.approx(4e-4)
    # but only for float fields: an int field does not take it
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(ExperimentConfig, None, ["train.epochs=1e2"])


def test_save_then_reload_gives_an_equal_config(tmp_path) -> None:
    cfg = load_config(ExperimentConfig, _write(tmp_path, EXAMPLE), ["train.epochs=3", "data.train_r=[4, 8]"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(ExperimentConfig, out) == cfg
    # the file is plain YAML (lists, not python tuples) that another tool can read
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert raw["train"]["epochs"] == 3 and raw["data"]["train_r"] == [4.0, 8.0]
    # saving the reloaded config again gives the same text (nothing drifts between runs)
    first = out.read_text(encoding="utf-8")
    save_config(load_config(ExperimentConfig, out), out)
    assert out.read_text(encoding="utf-8") == first
    # and a config that differs is not equal after the round trip
    assert load_config(ExperimentConfig, out, ["train.epochs=4"]) != cfg


def test_missing_file_error_names_the_path(tmp_path) -> None:
    missing = tmp_path / "no_such" / "config.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(ExperimentConfig, missing)


@pytest.mark.parametrize("text", ["train: [epochs: 3\n", "- just\n- a list\n"])
def test_malformed_files_name_the_path(tmp_path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(ExperimentConfig, path)


SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_load_and_round_trip(tmp_path, path: Path) -> None:
    schema = ExperimentConfig
    if path.name.startswith("benchmark"):  # the method benchmark adds a ``benchmark:`` section
        from reconstruction.benchmark_methods import BenchmarkConfig as schema
    cfg = load_config(schema, path)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(schema, tmp_path / "config.yaml") == cfg
