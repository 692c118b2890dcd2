"""Every shipped config loads through the schema, validates on every epoch, and the ``original_*`` configs carry
the recipe of the authors' train scripts (midas-tum/SSFL-Recon)."""
from __future__ import annotations

from pathlib import Path

import pytest

from utils.config import from_dict, load_config, load_yaml
from utils.schema import ExperimentConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))

# Values read from the authors' scripts: feature_learning/train/train_vicreg.py, train_contrastive.py,
# reconstruction/train_SSFL_recon.py (VICReg version; the contrastive version at commit 1c3b15c) and the *_dummy.py
# scripts with their data_loader/*_dummy.py loaders.
ORIGINAL = {
    "original_fe_vicreg.yaml": dict(stage="features", method="vicreg", num_iter=2, r=(2.0, 16.0), epochs=200),
    "original_fe_contrastive.yaml": dict(stage="features", method="contrastive", num_iter=3, r=(2.0, 16.0),
                                         epochs=200),
    "original_recon_vicreg.yaml": dict(stage="recon", method="vicreg", num_iter=2, r=(2.0, 16.0), epochs=400,
                                       start_r=2.0, fe="runs/original_fe_vicreg/weights020.weights.h5"),
    "original_recon_contrastive.yaml": dict(stage="recon", method="contrastive", num_iter=3, r=(2.0, 16.0),
                                            epochs=400, start_r=2.0,
                                            fe="runs/original_fe_contrastive/weights020.weights.h5"),
    "original_dummy_fe_vicreg.yaml": dict(stage="features", method="vicreg", num_iter=2, epochs=200, dummy=(10, 2)),
    "original_dummy_fe_contrastive.yaml": dict(stage="features", method="contrastive", num_iter=2, epochs=200,
                                               dummy=(10, 2)),
    "original_dummy_recon.yaml": dict(stage="recon", method="vicreg", num_iter=2, epochs=400, dummy=(10, 10),
                                      fe="dummy_weights/fe_vicreg_synthetic.weights.h5"),
}


def _load(path: Path) -> ExperimentConfig:
    """The experiment sections of a config; the method benchmark's own ``benchmark:`` section is checked by
    tests/utils/test_config.py."""
    data = load_yaml(path)
    data.pop("benchmark", None)
    return from_dict(ExperimentConfig, data, str(path))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads_and_validates_every_epoch(path: Path) -> None:
    cfg = _load(path)
    assert cfg.train.val_steps > 0, f"{path.name}: validation is off (train.val_steps: 0)"


def test_all_original_configs_are_listed() -> None:
    assert {p.name for p in CONFIGS if p.name.startswith("original_")} == set(ORIGINAL)


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_original_recipe(name: str) -> None:
    want = ORIGINAL[name]
    cfg = load_config(ExperimentConfig, REPO_ROOT / "configs" / name)
    assert cfg.stage == want["stage"]
    assert cfg.model.feature_method == want["method"]
    assert cfg.model.num_iter == want["num_iter"]
    assert cfg.train.epochs == want["epochs"]
    assert cfg.train.learning_rate == pytest.approx(4e-4)  # Adam(learning_rate=0.0004) in every script
    assert cfg.train.batch_size == 1  # CINE2DDataset: self.batch_size = 1
    assert cfg.train.save_every_epoch and cfg.train.keep_epoch_weights == 0  # weights{epoch:03d} every epoch
    assert cfg.train.val_steps > 0  # validation_data=ds_val in every fit
    assert cfg.model.filters == 12 and cfg.model.num_levels == 2 and cfg.model.layers_per_level == 1
    assert list(cfg.model.kernel_size_2d) == [1, 5, 5] and list(cfg.model.kernel_size_t) == [3, 1, 1]
    assert cfg.model.feature_loss == "original" and cfg.model.recon_loss == "original"
    if "dummy" in want:
        assert cfg.data.dummy and list(cfg.data.size) == [25, 176, 132, 15]  # kspace_shape (1, 25, 176, 132, 15)
        samples, val_samples = want["dummy"]
        assert cfg.data.subjects == samples and cfg.train.steps_per_epoch == samples
        assert cfg.train.val_steps == val_samples
    else:
        assert cfg.data.source == "original" and not cfg.data.dummy
        assert cfg.data.mask_kind == "vista" and cfg.data.mask_seeds == 20  # sd = random.randint(1, 20)
        assert (cfg.data.train_csv, cfg.data.val_csv) == ("CINE2D_h5_train.csv", "CINE2D_h5_val.csv")
    if want["stage"] == "features" and "dummy" not in want:
        assert (cfg.data.min_r, cfg.data.max_r) == want["r"]
        assert cfg.data.initial_acc == 2.0  # "Initial 2x GRAPPA undersampling"
    if want["stage"] == "features" and want["method"] == "contrastive" and "dummy" not in want:
        assert cfg.data.contrastive_rule == "diff" and cfg.data.contrastive_min_gap == 5.0  # R_neg_range='diff'
    if want["stage"] == "recon":
        assert cfg.model.method == "ssfl-recon"
        assert cfg.train.pretrained_fe == want["fe"]  # pretrained_weights='experiments/weights020.tf'
        if "dummy" not in want:
            assert cfg.data.start_r == want["start_r"]
            assert tuple(cfg.data.train_r) == want["r"]
            # the original draws validation R in 2..16 anew in every __getitem__
            assert tuple(cfg.data.val_r_range) == want["r"] and cfg.data.val_redraw


def test_original_dummy_recon_fe_weights_ship_with_the_repo() -> None:
    cfg = load_config(ExperimentConfig, REPO_ROOT / "configs" / "original_dummy_recon.yaml")
    assert (REPO_ROOT / cfg.train.pretrained_fe).is_file()
