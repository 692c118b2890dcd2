"""VISTA: variable density incoherent spatiotemporal acquisition (Ahmad et al., MRM 2015).

A k-t sampling pattern for Cartesian cine MRI: ``ny`` phase-encoding lines (ky) by ``nt`` frames, with
``n = round(ny / acc)`` lines per frame. The samples are treated as charged particles on the ky-t plane that repel
each other with the potential ``w_i w_j / d_ij^s`` (``d`` the distance with time stretched by a factor ``a``,
``s = 1.4``). The weight ``w(ky) = 1 - alpha * exp(-ky^2 / (2 sigma^2))`` is smaller near the k-space centre, so the
equilibrium is denser there (variable density). Periodic boundary conditions in ky and t come from the 3 x 3 tiled
copies of the pattern. Following the published algorithm:

1. start from variable-density random lines in every frame;
2. move the samples along ky (each sample stays in its frame, so every frame keeps exactly ``n`` lines) for
   ``iterations`` steps of the repulsive force, the step normalised after the first iteration and decaying;
3. every ``iterations // 6`` steps snap to the integer grid and move samples that share a line of their frame to the
   nearest free line of that frame;
4. half way, reset to jittered uniform sampling: the average sorted positions over frames, shifted per frame by a
   random jitter, while the time axis is stretched for a few iterations to leave bad local minima;
5. in the last sixth, fill the time average: every ky line that no frame samples takes a sample from the nearest line
   sampled more than once (from the frame where the move costs the least energy).

Everything here is plain numpy; the force on all samples is computed at once, so an iteration costs
``9 * N^2`` pair terms for ``N = n * nt`` samples.
"""
from __future__ import annotations

import logging
import math
import numbers

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["vista_mask", "lines_per_frame"]

# The 3 x 3 periodic copies: shift of the ky axis and of the frame axis, in units of (ny, nt).
_TILE_SHIFTS = tuple((dy, dt) for dy in (-1, 0, 1) for dt in (-1, 0, 1))


# ------------------------------------------------------------------------------------------- validation
def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Returns ``value`` as an int, or raises ``ValueError`` naming ``name`` when it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float, np.floating)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    as_int = int(value)
    if as_int < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return as_int


def check_acceleration(acc: object, name: str = "acc") -> float:
    """Returns ``acc`` as a float, or raises ``ValueError`` when it is not a finite number >= 1."""
    if isinstance(acc, bool) or not isinstance(acc, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} (acceleration) must be a number >= 1, got {acc!r}")
    acc_f = float(acc)
    if not math.isfinite(acc_f) or acc_f < 1.0:
        raise ValueError(f"{name} (acceleration) must be a finite number >= 1, got {acc!r}")
    return acc_f


def lines_per_frame(ny: int, acc: float) -> int:
    """``round(ny / acc)`` with halves rounded up (as MATLAB's ``round``), kept within [1, ny]."""
    return int(min(ny, max(1, math.floor(ny / acc + 0.5))))


# ---------------------------------------------------------------------------------------------- helpers
class _Geometry:
    """Constants of one VISTA run: grid size, density weighting and the exponent of the potential."""

    def __init__(self, ny: int, nt: int, sigma: float, alpha: float, exponent: float) -> None:
        self.ny = ny
        self.nt = nt
        self.sigma = sigma
        self.alpha = alpha
        self.exponent = exponent
        # Centred ky coordinate of line index i is i - centre, so line ny // 2 is ky = 0 (the DC line).
        self.centre = ny // 2

    def weight(self, ky: np.ndarray) -> np.ndarray:
        return 1.0 - self.alpha * np.exp(-(ky ** 2) / (2.0 * self.sigma ** 2))

    def weight_slope(self, ky: np.ndarray) -> np.ndarray:
        return self.alpha * ky / self.sigma ** 2 * np.exp(-(ky ** 2) / (2.0 * self.sigma ** 2))

    def wrap(self, ky: np.ndarray) -> np.ndarray:
        """Maps centred ky positions back into the half-open cell [-centre - 1/2, ny - centre - 1/2)."""
        low = -self.centre - 0.5
        return np.mod(ky - low, self.ny) + low


def _forces(ky: np.ndarray, frame: np.ndarray, time_scale: float, geo: _Geometry) -> np.ndarray:
    """Force along ky on every sample from all other samples and all 9 periodic copies (minus dE/dky).

    Args:
        ky: (N,) float centred ky positions.
        frame: (N,) int frame index of every sample.
        time_scale: distance between adjacent frames in units of ky lines.
        geo: run constants.

    Returns:
        (N,) float force.
    """
    s = geo.exponent
    w_self = geo.weight(ky)
    slope_self = geo.weight_slope(ky)
    # The N x N pair terms are float32: two to three times faster than float64, and since positions are rounded to
    # whole lines every few iterations the masks came out identical to a float64 run in every case we compared.
    dky0 = (ky[:, None] - ky[None, :]).astype(np.float32)
    frame_f = frame.astype(np.float32)
    dt0 = frame_f[:, None] - frame_f[None, :]
    dt2 = {shift_t: (np.float32(time_scale) * (dt0 - np.float32(shift_t * geo.nt))) ** 2 for shift_t in (-1, 0, 1)}
    dist2 = np.empty_like(dky0)
    scaled = np.empty_like(dky0)
    force = np.zeros_like(ky)
    for shift_y in (-1, 0, 1):
        w_other = geo.weight(ky + shift_y * geo.ny).astype(np.float32)
        dky = dky0 - np.float32(shift_y * geo.ny)
        dky2 = dky * dky
        for shift_t in (-1, 0, 1):
            np.add(dky2, dt2[shift_t], out=dist2)
            coincident = None
            if shift_y == 0 and shift_t == 0:
                # A sample exerts no force on itself; coincident samples are separated later by the duplicate step.
                coincident = dist2 == 0.0
                dist2[coincident] = 1.0
            # d^-(s+2) once; d^-s follows by one multiplication instead of a second power.
            np.power(dist2, np.float32(-0.5 * s - 1.0), out=scaled)
            if coincident is not None:
                scaled[coincident] = 0.0
            # einsum rather than a BLAS matrix-vector product: threaded BLAS gemv is erratic on busy machines
            # and its summation order may depend on the thread count.
            force += s * w_self * np.einsum("ij,j->i", scaled * dky, w_other)
            scaled *= dist2
            force -= slope_self * np.einsum("ij,j->i", scaled, w_other)
    return force


def _pair_energy(ky_candidates: np.ndarray, frame_candidates: np.ndarray, ky: np.ndarray, frame: np.ndarray,
                 exclude: np.ndarray, time_scale: float, geo: _Geometry) -> np.ndarray:
    """Energy of each candidate position against all samples except the one it stands for (and its copies).

    Args:
        ky_candidates, frame_candidates: (C,) candidate positions.
        ky, frame: (N,) all samples.
        exclude: (C,) index of the sample each candidate replaces.
        time_scale: frame spacing in ky units.
        geo: run constants.

    Returns:
        (C,) energy.
    """
    s = geo.exponent
    keep = np.ones((len(ky_candidates), len(ky)), dtype=bool)
    keep[np.arange(len(exclude)), exclude] = False
    w_cand = geo.weight(ky_candidates)
    energy = np.zeros(len(ky_candidates))
    for shift_y, shift_t in _TILE_SHIFTS:
        other = ky + shift_y * geo.ny
        dky = ky_candidates[:, None] - other[None, :]
        dt = time_scale * (frame_candidates[:, None] - frame[None, :] - shift_t * geo.nt)
        dist2 = dky * dky + dt * dt
        dist2[dist2 == 0.0] = np.inf
        terms = w_cand[:, None] * geo.weight(other)[None, :] * dist2 ** (-0.5 * s)
        energy += np.sum(np.where(keep, terms, 0.0), axis=1)
    return energy


def _displace_duplicates(line: np.ndarray, frame: np.ndarray, geo: _Geometry) -> np.ndarray:
    """Moves every sample that shares its (line, frame) with an earlier sample to the nearest free line of its frame.

    Ties between two free lines at the same distance go to the one nearer the k-space centre, which keeps the
    variable density. Since samples never change frame, every frame keeps its number of samples.

    Args:
        line: (N,) int line index in [0, ny).
        frame: (N,) int frame index.
        geo: run constants.

    Returns:
        (N,) int line indices with at most one sample per (line, frame).
    """
    line = line.copy()
    all_lines = np.arange(geo.ny)
    for f in np.unique(frame):
        members = np.flatnonzero(frame == f)
        occupied = np.zeros(geo.ny, dtype=bool)
        duplicates = []
        for j in members:
            if occupied[line[j]]:
                duplicates.append(j)
            else:
                occupied[line[j]] = True
        for j in duplicates:
            free = all_lines[~occupied]
            # lexsort keys: last is primary (distance to the crowded line), then distance to the centre.
            order = np.lexsort((np.abs(free - geo.centre), np.abs(free - line[j])))
            line[j] = free[order[0]]
            occupied[line[j]] = True
    return line


def _fill_time_average(line: np.ndarray, frame: np.ndarray, time_scale: float, geo: _Geometry) -> np.ndarray:
    """Makes every ky line sampled in at least one frame, as far as the number of samples allows.

    Holes are treated from the centre outwards. A hole takes one sample from the nearest line sampled in two or more
    frames (ties: the line farther from the centre, as the original takes samples from the boundary side), so no new
    hole opens; of that line's samples the one whose move raises the repulsion energy least is moved.

    Args:
        line: (N,) int line indices without duplicates per frame.
        frame: (N,) int frame indices.
        time_scale: frame spacing in ky units.
        geo: run constants.

    Returns:
        (N,) int line indices.
    """
    line = line.copy()
    counts = np.bincount(line, minlength=geo.ny)
    holes = np.flatnonzero(counts == 0)
    if holes.size == 0:
        return line
    holes = holes[np.lexsort((holes, np.abs(holes - geo.centre)))]
    for hole in holes:
        donors = np.flatnonzero(counts >= 2)
        if donors.size == 0:
            logger.debug("VISTA fill: %d samples cannot cover %d lines", line.size, geo.ny)
            break
        best = donors[np.lexsort((-np.abs(donors - geo.centre), np.abs(donors - hole)))[0]]
        candidates = np.flatnonzero(line == best)
        ky = (line - geo.centre).astype(np.float64)
        moved = _pair_energy(np.full(candidates.size, float(hole - geo.centre)), frame[candidates].astype(np.float64),
                             ky, frame.astype(np.float64), candidates, time_scale, geo)
        stayed = _pair_energy(ky[candidates], frame[candidates].astype(np.float64), ky, frame.astype(np.float64),
                              candidates, time_scale, geo)
        chosen = candidates[int(np.argmin(moved - stayed))]
        line[chosen] = hole
        counts[best] -= 1
        counts[hole] += 1
    return line


def _initial_lines(n: int, nt: int, geo: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """Variable-density random start: per frame ``n`` distinct lines drawn with the paper's density.

    Returns:
        (nt, n) int line indices.
    """
    ky = np.arange(geo.ny) - geo.centre
    density = 0.1 + geo.alpha / (1.0 - geo.alpha + 1e-10) * np.exp(-(ky ** 2) / geo.sigma ** 2)
    density = density / density.sum()
    return np.stack([rng.choice(geo.ny, size=n, replace=False, p=density) for _ in range(nt)])


def _jittered_uniform_reset(ky: np.ndarray, n: int, nt: int, acc: float, geo: _Geometry,
                            rng: np.random.Generator) -> np.ndarray:
    """Replaces every frame by the frame-averaged sorted positions, cyclically shifted by a random per-frame jitter.

    Args:
        ky: (nt * n,) centred positions, frame-major.
        n, nt: samples per frame, frames.
        acc: acceleration (the jitter spans about acc / 2 lines).
        geo: run constants.
        rng: random generator.

    Returns:
        (nt * n,) int line indices, frame-major.
    """
    template = np.round(np.sort(ky.reshape(nt, n), axis=1).mean(axis=0))
    jitter = np.round(0.5 * acc * (rng.random(nt) - 0.5))
    shifted = template[None, :] + jitter[:, None]
    return (np.mod(shifted + geo.centre, geo.ny)).astype(np.int64).ravel()


# --------------------------------------------------------------------------------------------- public
def vista_mask(ny: int, nt: int, acc: float, seed: int = 0, sigma: float | None = None, alpha: float = 0.28,
               iterations: int = 120, exponent: float = 1.4, step_size: float = 0.25, fill: bool = True,
               final_step_fraction: float = 0.2) -> np.ndarray:
    """VISTA k-t sampling mask.

    Args:
        ny: number of phase-encoding lines (ky).
        nt: number of time frames.
        acc: net acceleration R; every frame samples ``round(ny / R)`` lines (halves rounded up).
        seed: seed of the random start and of the jitter; the same seed gives the same mask.
        sigma: standard deviation, in lines, of the Gaussian variable-density weighting (default ``ny / 5``).
        alpha: 0 gives uniform density, values towards 1 a stronger centre; the paper uses 0.28.
        iterations: number of repulsion iterations (120 in the paper); the grid snapping period (``iterations // 6``),
            the jittered reset (``iterations // 2``) and the start of the fill (``5 * iterations // 6``) follow it.
        exponent: exponent ``s`` of the potential ``1 / d^s``.
        step_size: median displacement after the first iteration, in units of ``1 + R / 4`` lines.
        fill: make every ky line sampled in at least one frame (possible when ``nt * round(ny / R) >= ny``).
        final_step_fraction: the step decays geometrically to this fraction of its initial value within each half
            of the run (before and after the reset).

    Returns:
        (ny, nt) int64 array of 0/1, ``mask[ky, t] = 1`` when line ky is acquired in frame t.

    Raises:
        ValueError: naming the argument when one is out of range.
    """
    ny = check_positive_int("ny", ny)
    nt = check_positive_int("nt", nt)
    acc = check_acceleration(acc)
    seed = check_positive_int("seed", seed, minimum=0)
    iterations = check_positive_int("iterations", iterations)
    sigma = ny / 5.0 if sigma is None else float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of lines, got {sigma!r}")
    if not (0.0 <= float(alpha) < 1.0):
        raise ValueError(f"alpha must be in [0, 1), got {alpha!r}")
    if not (float(exponent) > 0):
        raise ValueError(f"exponent must be positive, got {exponent!r}")
    if not (float(step_size) > 0):
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    if not (0.0 < float(final_step_fraction) <= 1.0):
        raise ValueError(f"final_step_fraction must be in (0, 1], got {final_step_fraction!r}")

    n = lines_per_frame(ny, acc)
    if n >= ny:
        return np.ones((ny, nt), dtype=np.int64)

    geo = _Geometry(ny, nt, sigma, float(alpha), float(exponent))
    rng = np.random.default_rng(seed)
    snap_every = max(1, iterations // 6)
    reset_at = iterations // 2
    fill_from = (5 * iterations) // 6
    base_time_scale = max(acc / 10.0 + 0.25, 1.0)
    stretch_decay = math.ceil(iterations / 60)
    max_move = acc / 4.0

    frame = np.repeat(np.arange(nt), n)
    ky = (_initial_lines(n, nt, geo, rng).ravel() - geo.centre).astype(np.float64)
    step: float | None = None
    phase_start, phase_length = 0, max(1, reset_at)

    for it in range(1, iterations + 1):
        time_scale = base_time_scale
        if 0 < reset_at < it:
            # After the reset the frames are near copies of one another; a temporarily longer time axis lets samples
            # first spread within their frame before neighbouring frames interlock.
            time_scale *= 1.0 + math.exp(-(it - reset_at - 1) / stretch_decay)
        force = _forces(ky, frame, time_scale, geo)
        if step is None:
            typical = float(np.median(np.abs(force)))
            step = step_size * (1.0 + acc / 4.0) / typical if typical > 0 else 1.0
        decay = final_step_fraction ** ((it - 1 - phase_start) / phase_length)
        ky = geo.wrap(ky + np.clip(step * decay * force, -max_move, max_move))

        snap = it % snap_every == 0 or it == iterations
        if snap:
            ky = geo.wrap(np.round(ky))
        if it == reset_at:
            ky = (_jittered_uniform_reset(ky, n, nt, acc, geo, rng) - geo.centre).astype(np.float64)
            phase_start, phase_length = it, max(1, iterations - it)
            snap = True
        if snap:
            line = np.mod(np.round(ky).astype(np.int64) + geo.centre, ny)
            line = _displace_duplicates(line, frame, geo)
            if fill and it >= fill_from:
                line = _fill_time_average(line, frame, time_scale, geo)
            ky = (line - geo.centre).astype(np.float64)

    line = np.mod(np.round(ky).astype(np.int64) + geo.centre, ny)
    mask = np.zeros((ny, nt), dtype=np.int64)
    mask[line, frame] = 1
    logger.debug("VISTA %dx%d R=%g seed=%d: %d lines per frame, %d of %d lines in the time average",
                 ny, nt, acc, seed, n, int(mask.any(axis=1).sum()), ny)
    return mask
