"""Cartesian k-t sampling masks for cine MRI: generators, the original text format, CMRxRecon ``.mat`` masks.

A mask is a numpy int array of shape (ny, nt) with 0/1 values: ``mask[ky, t] = 1`` when phase-encoding line ``ky`` is
acquired in frame ``t`` (each sampled line is fully sampled along the readout kx). This is the layout of the original
SSFL-Recon text files (``np.loadtxt(..., dtype=int, delimiter=",")`` gives (ny, nt)); the networks take
``mask_to_tensor_layout(mask)``, shape (1, nt, 1, ny, 1).

Generators (all registered in :data:`MASK_GENERATORS`, called through :func:`generate_mask`):

* ``vista``: VISTA (Ahmad et al. 2015), see :mod:`data_loader.vista`; the re-undersampling masks of SSFL-Recon.
* ``equispaced``: every ``acc``-th line plus a fully sampled centre, the same in every frame (the original's
  "initial 2x GRAPPA" acquisition).
* ``vd-random``: variable-density random lines per frame around a fixed fully sampled centre.
* ``gaussian``: CMRxRecon-style time-varying Gaussian lines with a fully sampled centre (ACS).

The centre line is ``ny // 2`` (ky = 0 of a centred FFT); a centre block of ``c`` lines spans
``[ny // 2 - c // 2, ny // 2 - c // 2 + c)``, as in the CMRxRecon masks.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import re
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import scipy.io

from data_loader.vista import check_acceleration, check_positive_int, lines_per_frame, vista_mask
from utils.io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "MASK_CACHE_ENV",
    "MASK_GENERATORS",
    "cmrxrecon_acs_lines",
    "default_mask_cache_dir",
    "effective_acceleration",
    "equispaced_mask",
    "gaussian_mask",
    "generate_mask",
    "get_vista_mask",
    "grappa_filename",
    "load_cmrxrecon_mask",
    "mask_to_tensor_layout",
    "read_mask_txt",
    "vd_random_mask",
    "vista_filename",
    "vista_mask",
    "write_mask_txt",
]

MASK_CACHE_ENV = "SSFL_MASK_CACHE"

# Fit to the CMRxRecon 2023 cine masks (ny = 204): 16 / 8 / 4 ACS lines at R = 4 / 8 / 16, i.e. an even number close
# to 0.32 * ny / R, about a third of the lines of each frame.
_CMRX_ACS_FRACTION = 0.16
# Gaussian density of the CMRxRecon masks outside the ACS: a narrow Gaussian (sigma = ny / 10) on a flat floor of 8 %
# of its peak reproduces the histograms of |ky - centre| of the 4x, 8x and 16x fixtures.
_CMRX_SIGMA_FRACTION = 0.1
_CMRX_FLOOR = 0.08


# ------------------------------------------------------------------------------------------------ helpers
def _check_num_center(num_center: object, ny: int, name: str = "num_center") -> int:
    count = check_positive_int(name, num_center, minimum=0)
    if count > ny:
        raise ValueError(f"{name} must be at most ny = {ny}, got {count}")
    return count


def _centre_block(ny: int, count: int) -> np.ndarray:
    start = ny // 2 - count // 2
    return np.arange(start, start + count)


def _as_mask(mask: object, name: str = "mask") -> np.ndarray:
    """Validates a (ny, nt) 0/1 mask and returns it as an int64 array."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (ny, nt) array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: empty array of shape {array.shape}")
    if array.dtype != bool and not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name}: expected numeric 0/1 values, got dtype {array.dtype}")
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{name}: values must be 0 or 1, got {np.unique(array)[:5]}")
    return array.astype(np.int64)


def _draw_lines(rng: np.random.Generator, candidates: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """``count`` distinct lines of ``candidates`` drawn without replacement with probability proportional to weights."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(candidates, size=count, replace=False, p=weights / weights.sum())


# --------------------------------------------------------------------------------------------- generators
def equispaced_mask(ny: int, nt: int, acc: float = 2, num_center: int = 24, seed: int = 0) -> np.ndarray:
    """Regular (GRAPPA-style) undersampling, identical in every frame.

    Every ``acc``-th line counted from the centre line ``ny // 2`` is sampled, plus a fully sampled block of
    ``num_center`` central lines (the autocalibration lines). The original SSFL-Recon uses it with ``acc = 2`` as the
    "initial 2x GRAPPA" acquisition that the VISTA masks re-undersample.

    Args:
        ny: number of phase-encoding lines.
        nt: number of frames.
        acc: integer line spacing.
        num_center: size of the fully sampled centre block (24 reference lines is the usual scanner default;
            clipped to ``ny``).
        seed: accepted for a uniform generator interface; the pattern is deterministic.

    Returns:
        (ny, nt) int64 0/1 mask.
    """
    ny = check_positive_int("ny", ny)
    nt = check_positive_int("nt", nt)
    acc_f = check_acceleration(acc)
    if not acc_f.is_integer():
        raise ValueError(f"acc must be an integer line spacing for an equispaced mask, got {acc!r}")
    check_positive_int("seed", seed, minimum=0)
    num_center = check_positive_int("num_center", num_center, minimum=0)
    step = int(acc_f)
    line = np.zeros(ny, dtype=np.int64)
    line[(np.arange(ny) - ny // 2) % step == 0] = 1
    line[_centre_block(ny, min(num_center, ny))] = 1
    return np.repeat(line[:, None], nt, axis=1)


def vd_random_mask(ny: int, nt: int, acc: float = 5, num_center: int = 11, seed: int = 0,
                   decay: float = 2.0) -> np.ndarray:
    """Variable-density random lines, a different draw in every frame, around a fixed fully sampled centre.

    Each frame has ``round(ny / acc)`` lines: the ``num_center`` central ones plus lines drawn without replacement
    with probability proportional to ``(1 - |ky| / (ny / 2 + 1)) ** decay`` (ky measured from the centre line).

    Args:
        ny: number of phase-encoding lines.
        nt: number of frames.
        acc: acceleration; lines per frame ``round(ny / acc)`` (halves rounded up).
        num_center: central lines sampled in every frame (at most the lines per frame).
        seed: random seed.
        decay: exponent of the polynomial density; 0 gives uniform random lines.

    Returns:
        (ny, nt) int64 0/1 mask.
    """
    ny = check_positive_int("ny", ny)
    nt = check_positive_int("nt", nt)
    acc = check_acceleration(acc)
    seed = check_positive_int("seed", seed, minimum=0)
    num_center = _check_num_center(num_center, ny)
    if not (math.isfinite(float(decay)) and float(decay) >= 0):
        raise ValueError(f"decay must be a non-negative number, got {decay!r}")
    n = lines_per_frame(ny, acc)
    if num_center > n:
        raise ValueError(f"num_center ({num_center}) exceeds the {n} lines per frame of ny = {ny} at acc = {acc:g}")
    centre = _centre_block(ny, num_center)
    outer = np.setdiff1d(np.arange(ny), centre)
    # The +1 keeps the outermost lines at a small non-zero probability, so any line budget can be drawn.
    weights = (1.0 - np.abs(outer - ny // 2) / (ny / 2 + 1)) ** float(decay)
    rng = np.random.default_rng(seed)
    mask = np.zeros((ny, nt), dtype=np.int64)
    mask[centre, :] = 1
    for t in range(nt):
        mask[_draw_lines(rng, outer, weights, n - num_center), t] = 1
    return mask


def cmrxrecon_acs_lines(ny: int, acc: float) -> int:
    """Default size of the fully sampled centre of :func:`gaussian_mask`, fit to the CMRxRecon 2023 cine masks.

    Those masks (ny = 204) have 16, 8 and 4 ACS lines at R = 4, 8 and 16; this returns the even number nearest to
    ``0.32 * ny / acc`` (at least 2, at most the lines per frame), which reproduces them and scales with ny.

    Args:
        ny: number of phase-encoding lines.
        acc: acceleration.

    Returns:
        number of ACS lines.
    """
    ny = check_positive_int("ny", ny)
    acc = check_acceleration(acc)
    per_frame = max(1, int(math.floor(ny / acc + 1e-9)))
    return int(min(per_frame, max(2, 2 * round(_CMRX_ACS_FRACTION * ny / acc))))


def gaussian_mask(ny: int, nt: int, acc: float, seed: int = 0, num_center: int | None = None,
                  sigma: float | None = None, floor: float = _CMRX_FLOOR) -> np.ndarray:
    """CMRxRecon-style time-varying Gaussian mask: fully sampled centre plus Gaussian-random lines in every frame.

    As in the CMRxRecon 2023 cine masks, each frame has ``floor(ny / acc)`` lines (204 lines: 51, 25, 12 at 4x, 8x,
    16x); the lines outside the centre block are drawn without replacement with probability proportional to
    ``exp(-ky^2 / (2 sigma^2)) + floor`` (ky from the centre line), independently per frame.

    Args:
        ny: number of phase-encoding lines.
        nt: number of frames.
        acc: acceleration.
        seed: random seed.
        num_center: fully sampled central (ACS) lines; default :func:`cmrxrecon_acs_lines` (16/8/4 at 4x/8x/16x
            for ny = 204).
        sigma: standard deviation of the Gaussian in lines (default ``ny / 10``).
        floor: flat density added to the Gaussian, relative to its peak (keeps a few outer lines per frame).

    Returns:
        (ny, nt) int64 0/1 mask.
    """
    ny = check_positive_int("ny", ny)
    nt = check_positive_int("nt", nt)
    acc = check_acceleration(acc)
    seed = check_positive_int("seed", seed, minimum=0)
    n = max(1, int(math.floor(ny / acc + 1e-9)))
    num_center = cmrxrecon_acs_lines(ny, acc) if num_center is None else _check_num_center(num_center, ny)
    if num_center > n:
        raise ValueError(f"num_center ({num_center}) exceeds the {n} lines per frame of ny = {ny} at acc = {acc:g}")
    sigma = _CMRX_SIGMA_FRACTION * ny if sigma is None else float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of lines, got {sigma!r}")
    if not (math.isfinite(float(floor)) and float(floor) >= 0):
        raise ValueError(f"floor must be a non-negative number, got {floor!r}")
    centre = _centre_block(ny, num_center)
    outer = np.setdiff1d(np.arange(ny), centre)
    weights = np.exp(-((outer - ny // 2) ** 2) / (2.0 * sigma ** 2)) + float(floor)
    if np.count_nonzero(weights) < n - num_center:
        # A very narrow Gaussian without floor underflows to zero far out; fall back to uniform for the remainder.
        weights = weights + 1e-12
    rng = np.random.default_rng(seed)
    mask = np.zeros((ny, nt), dtype=np.int64)
    mask[centre, :] = 1
    for t in range(nt):
        mask[_draw_lines(rng, outer, weights, n - num_center), t] = 1
    return mask


MASK_GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "vista": vista_mask,
    "equispaced": equispaced_mask,
    "vd-random": vd_random_mask,
    "gaussian": gaussian_mask,
}


def generate_mask(kind: str, ny: int, nt: int, acc: float, seed: int = 0, **kwargs) -> np.ndarray:
    """Generates a mask with the generator registered under ``kind`` in :data:`MASK_GENERATORS`.

    Args:
        kind: one of ``"vista"``, ``"equispaced"``, ``"vd-random"``, ``"gaussian"``.
        ny: number of phase-encoding lines.
        nt: number of frames.
        acc: acceleration.
        seed: random seed (ignored by the deterministic ``equispaced``).
        **kwargs: further options of that generator (e.g. ``num_center``).

    Returns:
        (ny, nt) int64 0/1 mask.

    Raises:
        ValueError: unknown kind, an option the generator does not take, or an argument out of range.
    """
    if kind not in MASK_GENERATORS:
        raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(MASK_GENERATORS)}")
    generator = MASK_GENERATORS[kind]
    accepted = [p for p in inspect.signature(generator).parameters if p not in ("ny", "nt", "acc", "seed")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"mask kind {kind!r} does not take {', '.join(unknown)}; its options: {', '.join(accepted)}")
    return generator(ny, nt, acc, seed=seed, **kwargs)


# ----------------------------------------------------------------------------------------------- text I/O
def write_mask_txt(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Writes a mask in the original text format, atomically: ny rows of nt comma-separated 0/1 integers.

    Args:
        path: destination file.
        mask: (ny, nt) 0/1 array.
    """
    mask = _as_mask(mask)
    text = "".join(",".join(str(int(v)) for v in row) + "\n" for row in mask)
    atomic_write_text(path, text)


def read_mask_txt(path: str | os.PathLike, ny: int | None = None, nt: int | None = None) -> np.ndarray:
    """Reads a mask in the original text format (ny rows of nt comma-separated 0/1 values).

    Args:
        path: mask file.
        ny: expected number of rows (ky lines), checked when given.
        nt: expected number of columns (frames), checked when given.

    Returns:
        (ny, nt) int64 0/1 mask.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file when it cannot be read or parsed, holds values other than 0/1, or has another
            shape than the expected one.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read mask file {path}: {err}") from err
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"mask file {path} is empty")
    # The original files are comma-separated; whitespace-separated exports are read the same way.
    fields = [re.split(r"\s*,\s*|\s+", row) for row in rows]
    widths = {len(f) for f in fields}
    if len(widths) != 1:
        first = len(fields[0])
        bad = next(i for i, f in enumerate(fields) if len(f) != first)
        raise ValueError(f"mask file {path}: row {bad + 1} has {len(fields[bad])} values, row 1 has {first}")
    try:
        values = np.array(fields, dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"mask file {path}: not a table of numbers ({err})") from err
    if not np.all((values == 0) | (values == 1)):
        odd = values[(values != 0) & (values != 1)]
        raise ValueError(f"mask file {path}: values must be 0 or 1, found {odd[0]:g}")
    mask = values.astype(np.int64)
    expected = (ny if ny is not None else mask.shape[0], nt if nt is not None else mask.shape[1])
    if mask.shape != expected:
        hint = " (transposed?)" if mask.shape == expected[::-1] else ""
        raise ValueError(f"mask file {path}: expected shape (ny, nt) = {expected}, got {mask.shape}{hint}")
    return mask


# -------------------------------------------------------------------------------------- file names, cache
def _acc_text(acc: float) -> str:
    acc = check_acceleration(acc)
    return str(int(acc)) if acc.is_integer() else f"{acc:g}"


def vista_filename(ny: int, nt: int, acc: float, seed: int) -> str:
    """Original file name of a VISTA mask, e.g. ``mask_VISTA_132x25_acc8_3.txt`` (acc as int when integral).

    Args:
        ny: number of phase-encoding lines.
        nt: number of frames.
        acc: acceleration.
        seed: seed.

    Returns:
        the file name (no directory).
    """
    ny = check_positive_int("ny", ny)
    nt = check_positive_int("nt", nt)
    seed = check_positive_int("seed", seed, minimum=0)
    return f"mask_VISTA_{ny}x{nt}_acc{_acc_text(acc)}_{seed}.txt"


def grappa_filename(name: str) -> str:
    """Original file name of the initial (2x GRAPPA) mask of data set ``name``: ``mask_GRAPPA_{name}.txt``."""
    if not name or any(sep in name for sep in ("/", "\\")):
        raise ValueError(f"name must be a non-empty file stem without directory separators, got {name!r}")
    return f"mask_GRAPPA_{name}.txt"


def default_mask_cache_dir() -> Path:
    """The VISTA cache folder: ``$SSFL_MASK_CACHE`` when set, else ``~/.cache/ssfl-recon/masks``."""
    configured = os.environ.get(MASK_CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "ssfl-recon" / "masks"


def get_vista_mask(ny: int, nt: int, acc: float, seed: int,
                   cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """VISTA mask from the cache folder, generated (with default VISTA parameters) and stored there when missing.

    Original MATLAB-generated masks can be dropped into the folder under their original names and are used as they
    are. A cached file that cannot be read is regenerated (with a warning); a folder that cannot be written only
    costs the regeneration next time.

    Args:
        ny: number of phase-encoding lines.
        nt: number of frames.
        acc: acceleration.
        seed: seed.
        cache_dir: cache folder (default :func:`default_mask_cache_dir`).

    Returns:
        (ny, nt) int64 0/1 mask.
    """
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_mask_cache_dir()
    path = path / vista_filename(ny, nt, acc, seed)
    if path.is_file():
        try:
            return read_mask_txt(path, ny=ny, nt=nt)
        except ValueError as err:
            logger.warning("%s; regenerating it", err)
    mask = vista_mask(ny, nt, acc, seed=seed)
    try:
        write_mask_txt(path, mask)
        logger.debug("cached VISTA mask %s", path)
    except OSError as err:
        logger.warning("could not cache VISTA mask at %s: %s", path, err)
    return mask


# -------------------------------------------------------------------------------------------- CMRxRecon
def _read_mat_array(path: Path, key: str | None) -> np.ndarray:
    if h5py.is_hdf5(str(path)):
        # MATLAB v7.3 files are HDF5; MATLAB is column-major, so h5py sees the axes in reverse order.
        try:
            with h5py.File(path, "r") as handle:
                names = [k for k in handle.keys() if not k.startswith("#")]
                name = _pick_key(path, names, key)
                return np.asarray(handle[name][()]).T
        except ValueError:
            raise
        except (OSError, KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f"cannot read MATLAB v7.3/HDF5 file {path} (truncated or corrupt?): {err}") from err
    try:
        data = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises many types for damaged files (MatReadError, IndexError, ...)
        raise ValueError(f"cannot read MATLAB file {path}: {err}") from err
    names = [k for k in data if not k.startswith("__")]
    return np.asarray(data[_pick_key(path, names, key)])


def _pick_key(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise ValueError(f"{path}: no variable {key!r}; variables: {', '.join(names) or 'none'}")
        return key
    if "mask" in names:
        return "mask"
    if len(names) == 1:
        return names[0]
    raise ValueError(f"{path}: no variable 'mask' and several candidates ({', '.join(names)}); pass key=")


def load_cmrxrecon_mask(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Reads a CMRxRecon 2023 mask file and returns its ky-t line pattern.

    The files hold ``mask``, uint8 of shape (kx, ky, t) (MATLAB 5, read with scipy; v7.3/HDF5 files are read with
    h5py). A ky line counts as sampled in a frame when it is sampled for every kx; a line sampled for some kx only
    is an error, since the line model cannot represent it. A 2-D (kx, ky) mask gives a single frame.

    Args:
        path: ``.mat`` file.
        key: variable name (default ``mask``, or the only variable in the file).

    Returns:
        (ky, t) int64 0/1 mask.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file when it is unreadable, has no suitable variable, the wrong rank, values other
            than 0/1, or partially sampled lines.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mask file not found: {path}")
    raw = _read_mat_array(path, key)
    if raw.ndim == 2:
        raw = raw[:, :, None]
    if raw.ndim != 3:
        raise ValueError(f"{path}: expected a (kx, ky, t) or (kx, ky) mask, got shape {raw.shape}")
    if raw.dtype != bool and not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"{path}: expected numeric mask values, got dtype {raw.dtype}")
    if not np.all((raw == 0) | (raw == 1)):
        raise ValueError(f"{path}: mask values must be 0 or 1, got {np.unique(raw)[:5]}")
    sampled_everywhere = np.all(raw == 1, axis=0)
    sampled_somewhere = np.any(raw == 1, axis=0)
    partial = sampled_somewhere & ~sampled_everywhere
    if partial.any():
        ky, t = np.argwhere(partial)[0]
        raise ValueError(f"{path}: {int(partial.sum())} (ky, t) lines are sampled for some kx only, first at "
                         f"ky={ky}, t={t}; not a line (Cartesian ky-t) mask")
    return sampled_everywhere.astype(np.int64)


# ------------------------------------------------------------------------------------------------- misc
def mask_to_tensor_layout(mask: np.ndarray) -> np.ndarray:
    """Converts a (ny, nt) mask to the network layout (1, nt, 1, ny, 1) float32 (batch, time, kx, ky, coil).

    Args:
        mask: (ny, nt) 0/1 array.

    Returns:
        (1, nt, 1, ny, 1) float32 array.
    """
    mask = _as_mask(mask)
    return np.ascontiguousarray(mask.T[None, :, None, :, None].astype(np.float32))


def effective_acceleration(mask: np.ndarray) -> float:
    """Net acceleration ``ny * nt / (number of sampled ky-t points)`` of a (ny, nt) mask.

    Args:
        mask: (ny, nt) 0/1 array.

    Returns:
        the acceleration as a float (for example 4.0 for one line in four).

    Raises:
        ValueError: the mask is not a 2-D 0/1 array or samples nothing.
    """
    mask = _as_mask(mask)
    sampled = int(mask.sum())
    if sampled == 0:
        raise ValueError("mask samples no k-t point; its acceleration is undefined")
    return mask.size / sampled
