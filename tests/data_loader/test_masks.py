"""Sampling masks: VISTA properties, the other generators, text I/O, the cache, CMRxRecon files and the CLI."""
from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
import scipy.io

from conftest import fixtures_dir
from data_loader import masks as M
from data_loader import vista as vista_module
from data_loader.vista import lines_per_frame, vista_mask
from scripts.cli import main as cli_main

CMRX_ACCELERATIONS = (4, 8, 16)


def thirds(mask: np.ndarray) -> tuple[float, float]:
    """Mean sampling of the central third of ky and of the two outer thirds."""
    ny = mask.shape[0]
    third = ny // 3
    centre = mask[third:ny - third].mean()
    outer = np.concatenate([mask[:third], mask[ny - third:]]).mean()
    return float(centre), float(outer)


def cmrx_path(acc: int, view: str):
    return fixtures_dir() / "cmrxrecon_masks" / f"TimeVaryingGaussianMask{acc:02d}_P001_cine_{view}_mask.mat"


def acs_block(mask: np.ndarray) -> np.ndarray:
    """Indices of the contiguous run of lines sampled in every frame that contains the centre line ny // 2."""
    always = mask.all(axis=1)
    centre = mask.shape[0] // 2
    assert always[centre], "centre line is not sampled in every frame"
    low, high = centre, centre
    while low > 0 and always[low - 1]:
        low -= 1
    while high < mask.shape[0] - 1 and always[high + 1]:
        high += 1
    return np.arange(low, high + 1)


# ---------------------------------------------------------------------------------------------------- VISTA
@pytest.mark.parametrize("ny, nt, acc", [(48, 12, 4), (47, 12, 3), (48, 12, 8), (40, 8, 2.5), (48, 12, 2)])
def test_vista_lines_per_frame_and_full_time_average(ny, nt, acc):
    mask = vista_mask(ny, nt, acc, seed=1)
    assert mask.shape == (ny, nt)
    assert set(np.unique(mask)) <= {0, 1}
    expected = int(np.floor(ny / acc + 0.5))
    np.testing.assert_array_equal(mask.sum(axis=0), np.full(nt, expected))
    assert nt * expected >= ny
    assert mask.any(axis=1).all(), f"ky lines never sampled: {np.flatnonzero(~mask.any(axis=1))}"


def test_vista_centre_denser_frames_differ_and_seeds():
    mask = vista_mask(48, 12, 4, seed=5)
    centre, outer = thirds(mask)
    assert centre > 1.3 * outer
    assert len({mask[:, t].tobytes() for t in range(12)}) >= 10
    np.testing.assert_array_equal(mask, vista_mask(48, 12, 4, seed=5))
    assert not np.array_equal(mask, vista_mask(48, 12, 4, seed=6))


def test_vista_fill_step_and_uniform_density():
    # The repulsion alone leaves ky lines unsampled in the time average; the fill step closes them without changing
    # the number of lines per frame.
    unfilled = vista_mask(48, 12, 6, seed=2, fill=False)
    filled = vista_mask(48, 12, 6, seed=2)
    assert (~unfilled.any(axis=1)).sum() > 0
    assert filled.any(axis=1).all()
    np.testing.assert_array_equal(unfilled.sum(axis=0), filled.sum(axis=0))
    # alpha = 0 switches the variable density off: centre and edges are sampled alike.
    uniform = vista_mask(48, 12, 6, seed=2, alpha=0.0)
    centre, outer = thirds(uniform)
    assert abs(centre - outer) < 0.2 * outer
    assert uniform.sum() == 12 * 8


def test_vista_realistic_size_fast_and_valid():
    start = time.perf_counter()
    mask = vista_mask(132, 25, 8, seed=3)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"VISTA 132x25 R=8 took {elapsed:.1f} s"
    # 132 / 8 = 16.5 lines: MATLAB's round (halves away from zero) gives 17, Python's round would give 16.
    np.testing.assert_array_equal(mask.sum(axis=0), np.full(25, 17))
    assert mask.any(axis=1).all()
    centre, outer = thirds(mask)
    assert centre > 1.5 * outer
    assert len({mask[:, t].tobytes() for t in range(25)}) == 25
    assert 7.0 < M.effective_acceleration(mask) < 8.5


def test_vista_duplicate_displacement_and_fill_helpers():
    geo = vista_module._Geometry(12, 2, sigma=12 / 5, alpha=0.28, exponent=1.4)
    # Frame 0 has line 5 three times: the second copy goes to the free neighbour 4, the third to the nearest free
    # lines at distance 2 (3 or 7), of which 7 is nearer the centre line 6. Frame 1 is left alone.
    line = np.array([5, 5, 5, 6, 5, 9])
    frame = np.array([0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(vista_module._displace_duplicates(line, frame, geo), [5, 4, 7, 6, 5, 9])
    # Fill: 12 samples (6 per frame) on 7 distinct lines; the 5 holes are filled from lines sampled twice.
    line = np.array([0, 2, 5, 6, 7, 9, 2, 5, 6, 7, 9, 11])
    frame = np.repeat([0, 1], 6)
    filled = vista_module._fill_time_average(line, frame, 1.0, geo)
    assert sorted(filled) == list(range(12))
    assert (filled != line).sum() == 5
    for f in (0, 1):
        assert len(set(filled[frame == f])) == 6


def test_vista_degenerate_sizes():
    np.testing.assert_array_equal(vista_mask(16, 3, 1), np.ones((16, 3), dtype=int))
    single = vista_mask(20, 1, 4, seed=0, iterations=12)
    assert single.sum() == 5
    tiny = vista_mask(3, 2, 10, seed=0)
    np.testing.assert_array_equal(tiny.sum(axis=0), [1, 1])


@pytest.mark.parametrize("kwargs, name", [
    ({"ny": 0}, "ny"), ({"nt": -1}, "nt"), ({"acc": 0.5}, "acc"), ({"acc": float("nan")}, "acc"),
    ({"seed": -2}, "seed"), ({"alpha": 1.0}, "alpha"), ({"iterations": 0}, "iterations"), ({"ny": 4.5}, "ny"),
])
def test_vista_validates_arguments(kwargs, name):
    args = {"ny": 24, "nt": 4, "acc": 4, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        vista_mask(args.pop("ny"), args.pop("nt"), args.pop("acc"), **args)


def test_lines_per_frame_rounds_half_up():
    assert lines_per_frame(204, 8) == 26  # 25.5
    assert lines_per_frame(132, 8) == 17  # 16.5
    assert lines_per_frame(10, 100) == 1


# ---------------------------------------------------------------------------------------- other generators
def test_equispaced_matches_reference():
    ny, nt, acc, centre = 50, 5, 3, 8
    mask = M.equispaced_mask(ny, nt, acc, num_center=centre)
    reference = np.zeros(ny, dtype=int)
    reference[ny // 2::acc] = 1
    reference[ny // 2::-acc] = 1
    reference[ny // 2 - centre // 2: ny // 2 - centre // 2 + centre] = 1
    np.testing.assert_array_equal(mask, np.tile(reference[:, None], (1, nt)))
    with pytest.raises(ValueError, match="acc"):
        M.equispaced_mask(ny, nt, 2.5)


def test_vd_random_mask_properties():
    ny, nt, acc, centre = 48, 200, 4, 6
    mask = M.vd_random_mask(ny, nt, acc, num_center=centre, seed=4)
    np.testing.assert_array_equal(mask.sum(axis=0), np.full(nt, 12))
    np.testing.assert_array_equal(acs_block(mask), np.arange(21, 27))
    assert len({mask[:, t].tobytes() for t in range(nt)}) > nt // 2
    outside = mask.copy()
    outside[21:27] = 0
    central = outside[12:36].mean()
    outer = np.concatenate([outside[:12], outside[36:]]).mean()
    assert central > 1.5 * outer
    np.testing.assert_array_equal(mask, M.vd_random_mask(ny, nt, acc, num_center=centre, seed=4))
    assert not np.array_equal(mask, M.vd_random_mask(ny, nt, acc, num_center=centre, seed=5))
    with pytest.raises(ValueError, match="num_center"):
        M.vd_random_mask(48, 4, 8, num_center=7)


def test_gaussian_mask_properties():
    mask = M.gaussian_mask(48, 12, 4, seed=1, num_center=4)
    np.testing.assert_array_equal(mask.sum(axis=0), np.full(12, 12))
    np.testing.assert_array_equal(acs_block(mask), np.arange(22, 26))
    assert len({mask[:, t].tobytes() for t in range(12)}) == 12
    assert not np.array_equal(mask, M.gaussian_mask(48, 12, 4, seed=2, num_center=4))


@pytest.mark.parametrize("acc", CMRX_ACCELERATIONS)
def test_gaussian_mask_resembles_cmrxrecon(acc):
    real = M.load_cmrxrecon_mask(cmrx_path(acc, "sax"))
    ny, nt = real.shape
    ours = M.gaussian_mask(ny, 400, acc, seed=0)
    assert ours.sum(axis=0)[0] == real.sum(axis=0)[0]
    assert M.cmrxrecon_acs_lines(ny, acc) == acs_block(real).size
    assert ours[acs_block(real)].all()

    def spread(mask):
        outside = mask & ~mask.all(axis=1, keepdims=True)
        return np.abs(np.nonzero(outside)[0] - ny // 2)

    real_spread, our_spread = spread(real), spread(ours)
    assert abs(np.median(our_spread) - np.median(real_spread)) < 0.25 * np.median(real_spread)
    assert abs(our_spread.std() - real_spread.std()) < 0.25 * real_spread.std()


def test_generate_mask_registry_and_errors():
    assert set(M.MASK_GENERATORS) == {"vista", "equispaced", "vd-random", "gaussian"}
    for kind in M.MASK_GENERATORS:
        mask = M.generate_mask(kind, 48, 6, 4, seed=1)
        assert mask.shape == (48, 6) and mask.dtype == np.int64
    np.testing.assert_array_equal(M.generate_mask("gaussian", 48, 6, 4, seed=3, num_center=2),
                                  M.gaussian_mask(48, 6, 4, seed=3, num_center=2))
    with pytest.raises(ValueError, match="vista, equispaced, vd-random, gaussian"):
        M.generate_mask("radial", 48, 6, 4)
    with pytest.raises(ValueError, match="num_center"):
        M.generate_mask("vista", 48, 6, 4, num_center=4)
    with pytest.raises(ValueError, match="ny"):
        M.generate_mask("gaussian", 0, 6, 4)
    with pytest.raises(ValueError, match="acc"):
        M.generate_mask("vd-random", 48, 6, 0.9)


# --------------------------------------------------------------------------------------------- text I/O
def test_text_round_trip_and_format(tmp_path):
    mask = np.array([[1, 0, 0], [0, 1, 1]])
    path = tmp_path / "sub" / "m.txt"
    M.write_mask_txt(path, mask)
    assert path.read_text() == "1,0,0\n0,1,1\n"
    np.testing.assert_array_equal(np.loadtxt(path, dtype=int, delimiter=","), mask)
    np.testing.assert_array_equal(M.read_mask_txt(path, ny=2, nt=3), mask)
    assert not [p for p in path.parent.iterdir() if p.name != "m.txt"], "temporary file left behind"
    column = tmp_path / "column.txt"
    M.write_mask_txt(column, np.array([[1], [0], [1]]))
    assert M.read_mask_txt(column).shape == (3, 1)


def test_read_mask_txt_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        M.read_mask_txt(tmp_path / "missing.txt")
    bad_value = tmp_path / "two.txt"
    bad_value.write_text("1,2\n0,1\n")
    with pytest.raises(ValueError, match="two.txt.*0 or 1"):
        M.read_mask_txt(bad_value)
    words = tmp_path / "words.txt"
    words.write_text("a,b\n")
    with pytest.raises(ValueError, match="words.txt"):
        M.read_mask_txt(words)
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("1,0\n1\n")
    with pytest.raises(ValueError, match="ragged.txt.*row 2"):
        M.read_mask_txt(ragged)
    good = tmp_path / "good.txt"
    M.write_mask_txt(good, np.ones((4, 3), dtype=int))
    with pytest.raises(ValueError, match=r"good.txt.*expected .*\(3, 4\).*got \(4, 3\).*transposed"):
        M.read_mask_txt(good, ny=3, nt=4)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        M.read_mask_txt(good, ny=5)
    with pytest.raises(ValueError, match="0 or 1"):
        M.write_mask_txt(tmp_path / "x.txt", np.full((2, 2), 3))


# -------------------------------------------------------------------------------------- names and cache
def test_filenames():
    assert M.vista_filename(132, 25, 8, 3) == "mask_VISTA_132x25_acc8_3.txt"
    assert M.vista_filename(132, 25, 8.0, 3) == "mask_VISTA_132x25_acc8_3.txt"
    assert M.vista_filename(96, 12, 2.5, 0) == "mask_VISTA_96x12_acc2.5_0.txt"
    assert M.grappa_filename("P001_sax") == "mask_GRAPPA_P001_sax.txt"
    with pytest.raises(ValueError):
        M.grappa_filename("a/b")


def test_vista_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    mask = M.get_vista_mask(40, 6, 4, 2, cache_dir=cache)
    stored = cache / "mask_VISTA_40x6_acc4_2.txt"
    assert stored.is_file()
    np.testing.assert_array_equal(mask, vista_mask(40, 6, 4, seed=2))

    def refuse(*args, **kwargs):
        raise AssertionError("cache miss: VISTA regenerated")

    monkeypatch.setattr(M, "vista_mask", refuse)
    np.testing.assert_array_equal(M.get_vista_mask(40, 6, 4, 2, cache_dir=cache), mask)
    # A file dropped into the cache under the original name is used as it is.
    planted = np.zeros((40, 6), dtype=int)
    planted[::4] = 1
    M.write_mask_txt(cache / M.vista_filename(40, 6, 4, 7), planted)
    np.testing.assert_array_equal(M.get_vista_mask(40, 6, 4, 7, cache_dir=cache), planted)


def test_vista_cache_default_dir_and_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv(M.MASK_CACHE_ENV, str(tmp_path / "env-cache"))
    assert M.default_mask_cache_dir() == tmp_path / "env-cache"
    corrupt = tmp_path / "env-cache" / M.vista_filename(24, 4, 4, 1)
    corrupt.parent.mkdir()
    corrupt.write_text("1,0\n")
    mask = M.get_vista_mask(24, 4, 4, 1)
    assert mask.shape == (24, 4)
    np.testing.assert_array_equal(M.read_mask_txt(corrupt, ny=24, nt=4), mask)
    monkeypatch.delenv(M.MASK_CACHE_ENV)
    assert M.default_mask_cache_dir().parts[-3:] == (".cache", "ssfl-recon", "masks")


# ------------------------------------------------------------------------------------------- CMRxRecon
@pytest.mark.parametrize("acc", CMRX_ACCELERATIONS)
@pytest.mark.parametrize("view", ["lax", "sax"])
def test_load_cmrxrecon_fixtures(acc, view):
    path = cmrx_path(acc, view)
    raw = scipy.io.loadmat(str(path))["mask"]
    mask = M.load_cmrxrecon_mask(path)
    assert mask.shape == (raw.shape[1], raw.shape[2]) == (204, 12)
    np.testing.assert_array_equal(mask, raw[0])
    np.testing.assert_array_equal(mask.sum(axis=0), np.full(12, 204 // acc))
    assert abs(M.effective_acceleration(mask) - acc) < 0.07 * acc
    # Fully sampled centre: 64 / R lines around ky = 102 in every frame.
    np.testing.assert_array_equal(acs_block(mask), np.arange(102 - 32 // acc, 102 + 32 // acc))
    assert len({mask[:, t].tobytes() for t in range(12)}) == 12


def test_load_cmrxrecon_partial_line_and_v73(tmp_path):
    lines = np.zeros((6, 10, 3), dtype=np.uint8)
    lines[:, [4, 5], :] = 1
    lines[:, 1, 2] = 1
    partial = lines.copy()
    partial[2, 7, 1] = 1
    scipy.io.savemat(tmp_path / "partial.mat", {"mask": partial})
    with pytest.raises(ValueError, match="partial.mat.*ky=7, t=1"):
        M.load_cmrxrecon_mask(tmp_path / "partial.mat")

    # MATLAB v7.3: HDF5 after a 512-byte header; MATLAB's column-major order shows up as reversed axes in h5py.
    v73 = tmp_path / "v73.mat"
    with h5py.File(v73, "w", userblock_size=512) as handle:
        handle.create_dataset("mask", data=np.ascontiguousarray(lines.T))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116)
    with open(v73, "r+b") as handle:
        handle.write(header + b"\x00" * 8 + b"\x00\x02IM")
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(str(v73))
    expected = np.zeros((10, 3), dtype=int)
    expected[[4, 5], :] = 1
    expected[1, 2] = 1
    np.testing.assert_array_equal(M.load_cmrxrecon_mask(v73), expected)

    with pytest.raises(FileNotFoundError):
        M.load_cmrxrecon_mask(tmp_path / "none.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"a": lines, "b": lines})
    with pytest.raises(ValueError, match="other.mat.*mask"):
        M.load_cmrxrecon_mask(tmp_path / "other.mat")
    np.testing.assert_array_equal(M.load_cmrxrecon_mask(tmp_path / "other.mat", key="b"), expected)


# ------------------------------------------------------------------------------------------------- misc
def test_tensor_layout_and_effective_acceleration():
    rng = np.random.default_rng(0)
    mask = (rng.random((10, 4)) < 0.3).astype(int)
    mask[0, 0] = 1
    layout = M.mask_to_tensor_layout(mask)
    assert layout.shape == (1, 4, 1, 10, 1) and layout.dtype == np.float32
    for t in range(4):
        np.testing.assert_array_equal(layout[0, t, 0, :, 0], mask[:, t])
    assert M.effective_acceleration(mask) == pytest.approx(40 / mask.sum())
    assert M.effective_acceleration(M.equispaced_mask(64, 3, 4, num_center=0)) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no k-t point"):
        M.effective_acceleration(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        M.mask_to_tensor_layout(np.ones(5))


# -------------------------------------------------------------------------------------------------- CLI
def test_cli_make_masks(tmp_path, capsys):
    out, png = tmp_path / "m.txt", tmp_path / "m.png"
    code = cli_main(["make-masks", "--kind", "gaussian", "--ny", "48", "--nt", "12", "--acc", "4", "--seed", "2",
                     "--num-center", "4", "--out", str(out), "--png", str(png)])
    assert code == 0
    np.testing.assert_array_equal(M.read_mask_txt(out, ny=48, nt=12),
                                  M.gaussian_mask(48, 12, 4, seed=2, num_center=4))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code = cli_main(["make-masks", "--kind", "vista", "--ny", "32", "--nt", "6", "--acc", "4", "--out",
                     str(tmp_path / "v.txt")])
    assert code == 0
    np.testing.assert_array_equal(M.read_mask_txt(tmp_path / "v.txt"), vista_mask(32, 6, 4, seed=0))

    capsys.readouterr()
    code = cli_main(["make-masks", "--kind", "equispaced", "--ny", "0", "--nt", "4", "--acc", "2", "--out",
                     str(tmp_path / "bad.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "ny" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.txt").exists()


def test_cli_options_have_help():
    import argparse

    from scripts import make_masks

    parser = argparse.ArgumentParser()
    make_masks.add_arguments(parser)
    options = [a for a in parser._actions if a.dest != "help"]
    assert {a.dest for a in options} >= {"kind", "ny", "nt", "acc", "seed", "out", "num_center", "png"}
    assert all(a.help for a in options)
