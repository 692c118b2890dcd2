"""Tests of evaluation.figures: files are valid PNG/GIF, written atomically, and bad inputs are rejected."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from PIL import Image

from evaluation import plots
from evaluation.figures import (
    max_variance_row,
    save_cine_gif,
    save_comparison_panel,
    save_loss_curves,
    save_method_grid,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T, X, Y = 4, 12, 10


@pytest.fixture(scope="module")
def cines() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(T)[:, None, None]
    x = np.arange(X)[None, :, None]
    y = np.arange(Y)[None, None, :]
    # A "heart" whose brightness pulses over time on row 7, static background elsewhere.
    gt = 0.2 + 0.1 * np.cos(x + y) + 0 * t
    gt = gt + (x == 7) * (0.5 + 0.4 * np.sin(2 * np.pi * t / T)) * np.exp(-((y - 5) ** 2) / 8)
    gt = gt * np.exp(1j * 0.3 * x)
    noise = rng.standard_normal(gt.shape) + 1j * rng.standard_normal(gt.shape)
    return {
        "gt": gt.astype(np.complex64),
        "zf": (gt + 0.1 * noise).astype(np.complex64),
        "recon": (gt + 0.02 * noise).astype(np.complex64),
    }


def _assert_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return image


def _no_temp_files(folder: Path) -> bool:
    return not any(p.name.startswith(".") and ".tmp" in p.name for p in folder.iterdir())


def test_max_variance_row_finds_the_moving_line(cines: dict[str, np.ndarray]) -> None:
    assert max_variance_row(cines["gt"]) == 7
    assert max_variance_row(cines["gt"][..., None]) == 7


def test_comparison_panel(tmp_path: Path, cines: dict[str, np.ndarray]) -> None:
    path = tmp_path / "sub" / "panel.png"
    out = save_comparison_panel(
        path, cines["gt"], cines["zf"], cines["recon"], frame=2,
        metrics={"zero_filled": {"psnr": 20.0, "ssim": 0.7}, "recon": {"psnr": 33.1, "ssim": 0.95}},
    )
    assert out == path
    image = _assert_png(path)
    assert image.shape[1] > image.shape[0]  # four columns side by side
    assert _no_temp_files(path.parent)


def test_comparison_panel_accepts_trailing_channel(tmp_path: Path, cines: dict[str, np.ndarray]) -> None:
    path = tmp_path / "panel4d.png"
    save_comparison_panel(path, cines["gt"][..., None], cines["zf"][..., None], cines["recon"][..., None],
                          profile_x=3, title="custom")
    _assert_png(path)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"recon": np.zeros((T, X, Y + 1), np.complex64)}, "recon must have the shape of gt"),
        ({"gt": np.zeros((X, Y), np.complex64)}, r"gt must have shape \(T, X, Y\)"),
        ({"zero_filled": np.zeros((T, X, Y, 2), np.complex64)}, "zero_filled must have shape"),
        ({"frame": T}, "frame must be an int"),
        ({"profile_x": X}, "profile_x must be an int"),
        ({"error_scale": 0}, "error_scale"),
    ],
)
def test_comparison_panel_rejects_bad_input(tmp_path: Path, cines: dict[str, np.ndarray], change: dict,
                                            match: str) -> None:
    kwargs = {"gt": cines["gt"], "zero_filled": cines["zf"], "recon": cines["recon"], **change}
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=match):
        save_comparison_panel(path, **kwargs)
    assert not path.exists()
    assert _no_temp_files(tmp_path)


def test_cine_gif(tmp_path: Path, cines: dict[str, np.ndarray]) -> None:
    path = tmp_path / "cine.gif"
    save_cine_gif(path, cines["gt"], fps=5, scale=3)
    assert path.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    with Image.open(path) as gif:
        assert gif.n_frames == T
        assert gif.size == (Y * 3, X * 3)  # PIL reports (width, height) = (Y, X)
        assert gif.info.get("duration") == 200
        frames = []
        for i in range(T):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("L"), dtype=np.float64))
    # The pulsing row changes between frames, the static background does not.
    assert np.ptp([f[7 * 3, 5 * 3] for f in frames]) > 20
    assert np.ptp([f[0, 0] for f in frames]) <= 1
    assert _no_temp_files(tmp_path)


def test_cine_gif_rejects_bad_input(tmp_path: Path, cines: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="images must have shape"):
        save_cine_gif(tmp_path / "a.gif", cines["gt"][0])
    with pytest.raises(ValueError, match="fps"):
        save_cine_gif(tmp_path / "b.gif", cines["gt"], fps=0)
    with pytest.raises(ValueError, match="scale"):
        save_cine_gif(tmp_path / "c.gif", cines["gt"], scale=0)
    with pytest.raises(ValueError, match="non-finite"):
        save_cine_gif(tmp_path / "d.gif", np.full((2, 8, 8), np.nan))
    assert not any(tmp_path.iterdir())


def test_loss_curves_from_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "loss.csv"
    csv_path.write_text("epoch,loss,val_loss,lr\n0,4.0,5.0,0.001\n1,2.0,,0.001\n2,1.0,1.5,0.0005\n", encoding="utf-8")
    out = save_loss_curves(tmp_path / "loss.png", csv_path)
    _assert_png(out)


def test_loss_curves_axis_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scales = []
    original = plots.save_png

    def spy(fig, path, dpi):  # records the y scale of the rendered figure
        scales.append(fig.axes[0].get_yscale())
        labels = [line.get_label() for line in fig.axes[0].get_lines()]
        assert "lr" not in labels and "loss" in labels
        return original(fig, path, dpi)

    monkeypatch.setattr(plots, "save_png", spy)
    save_loss_curves(tmp_path / "pos.png", {"epoch": [0, 1, 2], "loss": [3.0, 2.0, 1.0], "lr": [1, 1, 1]})
    save_loss_curves(tmp_path / "neg.png", {"loss": [3.0, -2.0, 1.0], "val_loss": [1.0, 1.0, 1.0]})
    assert scales == ["log", "linear"]


def test_loss_curves_reject_bad_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        save_loss_curves(tmp_path / "a.png", {"epoch": [0, 1], "loss": [1.0]})
    with pytest.raises(ValueError, match="not numeric"):
        save_loss_curves(tmp_path / "b.png", {"loss": ["high", "low"]})
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no rows"):
        save_loss_curves(tmp_path / "c.png", empty)
    assert not (tmp_path / "c.png").exists()


def test_method_grid(tmp_path: Path, cines: dict[str, np.ndarray]) -> None:
    path = tmp_path / "grid.png"
    save_method_grid(path, cines["gt"], {"zero-filled": cines["zf"], "SSFL-Recon": cines["recon"]}, frame=1,
                     metrics={"SSFL-Recon": {"psnr": 33.0, "ssim": 0.95}})
    image = _assert_png(path)
    assert image.shape[0] > image.shape[1]  # three rows of two panels


def test_method_grid_rejects_bad_input(tmp_path: Path, cines: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="at least one method"):
        save_method_grid(tmp_path / "a.png", cines["gt"], {})
    with pytest.raises(ValueError, match=r"recons\['bad'\] must have the shape of gt"):
        save_method_grid(tmp_path / "b.png", cines["gt"], {"bad": cines["gt"][:, :-1]})
    with pytest.raises(ValueError, match="frame"):
        save_method_grid(tmp_path / "c.png", cines["gt"], {"ok": cines["recon"]}, frame=-1)
    assert not any(tmp_path.iterdir())
