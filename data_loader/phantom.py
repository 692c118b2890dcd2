"""Built-in synthetic cardiac cine data: a parametric 2D+t short-axis phantom, an analytic coil array, and noisy
fully sampled multi-coil k-space.

Everything is vectorised numpy and deterministic per seed, so a data set is described completely by
``(seed, size, snr)`` and can be regenerated bit-identically instead of being shipped.

Geometry. Pixel ``(i, j)`` of an ``nx x ny`` image sits at ``u = (i - (nx-1)/2) / s``, ``v = (j - (ny-1)/2) / s``
with ``s = min(nx, ny) / 2``: square pixels, the shorter side spans [-1, 1]. ``u`` is the patient's left-right
(readout, X) axis and ``v`` the anterior-posterior (phase-encoding, Y) axis, negative ``v`` being anterior.

Anatomy (bSSFP-like contrast): torso ellipse with a bright subcutaneous fat ring, soft tissue, dark lungs, liver,
vertebral body, descending aorta, and the heart: left ventricle (bright blood pool inside a darker myocardial ring)
and right ventricle (blood crescent wrapped around the septum, thin wall). Both ventricles contract over the
cardiac cycle; the myocardium keeps its area (it thickens in systole). Random per subject: all sizes, heart
position/rotation, LV and RV ejection fractions, cardiac phase offset, breathing drift, smooth background phase
and a mild smooth intensity texture. The ``nt`` frames cover exactly one cardiac cycle.

Edges are drawn with a one-pixel linear ramp on the signed distance, which keeps the rendered area of each shape
equal to its analytic area (so the measured blood-pool area follows the model) and limits Gibbs ringing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from utils.mri import fft2c_np

logger = logging.getLogger(__name__)

# bSSFP-like relative intensities (before texture and the final max-normalisation).
_INTENSITY = {
    "fat": 1.0,
    "soft": 0.30,
    "liver": 0.42,
    "lung": 0.04,
    "vertebra": 0.50,
    "cortex": 0.12,
    "aorta": 0.80,
    "myocardium": 0.22,
    "blood": 0.90,
}


# ------------------------------------------------------------------------------------------------ geometry
def _grid(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(u, v) coordinates of shape (1, nx, ny) and the number of pixels per unit length."""
    scale = min(nx, ny) / 2.0
    u = (np.arange(nx, dtype=np.float64) - (nx - 1) / 2.0) / scale
    v = (np.arange(ny, dtype=np.float64) - (ny - 1) / 2.0) / scale
    uu, vv = np.meshgrid(u, v, indexing="ij")
    return uu[None], vv[None], scale


def _as_t(value: Any) -> np.ndarray:
    """Broadcasts a scalar or a per-frame vector to shape (T or 1, 1, 1)."""
    arr = np.asarray(value, dtype=np.float64)
    return arr.reshape(-1, 1, 1)


def _ellipse_distance(u, v, cu, cv, a, b, angle=0.0) -> np.ndarray:
    """Approximate signed distance (in units) to an ellipse: negative inside.

    First-order estimate ``(q - 1) / |grad q|`` of the normalised radius ``q``; exact on circles and accurate
    to a fraction of a pixel near the boundary of the moderately eccentric ellipses used here.
    """
    cu, cv, a, b, angle = (_as_t(x) for x in (cu, cv, a, b, angle))
    du, dv = u - cu, v - cv
    cos, sin = np.cos(angle), np.sin(angle)
    x = cos * du + sin * dv
    y = -sin * du + cos * dv
    q = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    grad = np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2)
    # At the centre grad -> 0 while q -> 0; the point is deep inside, any large negative distance will do.
    safe = np.where(grad > 1e-12, grad, 1.0)
    dist = np.where(grad > 1e-12, (q - 1.0) * q / safe, -np.minimum(a, b))
    return dist


def _soft(dist: np.ndarray, scale: float) -> np.ndarray:
    """Partial-volume coverage in [0, 1] from a signed distance (one-pixel linear ramp)."""
    return np.clip(0.5 - dist * scale, 0.0, 1.0)


def _paint(canvas: np.ndarray, coverage: np.ndarray, value: float) -> np.ndarray:
    """Painter's algorithm with partial coverage: later shapes occlude earlier ones."""
    return canvas * (1.0 - coverage) + value * coverage


def _contraction(nt: int, offset: float, systole_peak: float) -> np.ndarray:
    """Contraction curve c(t) in [0, 1] (0 = end-diastole, 1 = end-systole) sampled at nt frames of one cycle.

    ``sin^2(pi * w)`` of a warped cycle fraction ``w = phi**gamma``: the warp puts peak systole at
    ``systole_peak`` of the cycle (systole is shorter than diastole) while staying smooth and periodic.
    """
    phi = np.mod(np.arange(nt, dtype=np.float64) / nt + offset, 1.0)
    gamma = np.log(0.5) / np.log(systole_peak)
    return np.sin(np.pi * phi**gamma) ** 2


@dataclass
class _Anatomy:
    """Random per-subject parameters (units of the (u, v) grid unless noted)."""

    torso_a: float
    torso_b: float
    torso_angle: float
    fat: float
    heart_u: float
    heart_v: float
    heart_angle: float
    lv_radius: float
    lv_ecc: float
    myo_thickness: float
    rv_length: float
    rv_width: float
    rv_offset: float
    ef_lv: float
    ef_rv: float
    phase_offset: float
    systole_peak: float
    breath_amp: float
    breath_dir: float
    breath_freq: float
    breath_phase: float
    lung_l: tuple[float, float, float, float]
    lung_r: tuple[float, float, float, float]
    liver: tuple[float, float, float, float]
    spine: tuple[float, float, float]
    aorta: tuple[float, float, float]
    phase_coeffs: np.ndarray
    texture: np.ndarray


def _draw_anatomy(rng: np.random.Generator, nx: int, ny: int) -> _Anatomy:
    """Draws all random parameters in a fixed order (so a seed always gives the same subject)."""
    mn = min(nx, ny)
    # torso fills most of the field of view, with some aspect-ratio variation between subjects
    torso_a = (nx / mn) * rng.uniform(0.80, 0.90)
    torso_b = (ny / mn) * rng.uniform(0.78, 0.90)
    body = min(torso_a, torso_b)
    return _Anatomy(
        torso_a=torso_a,
        torso_b=torso_b,
        torso_angle=np.deg2rad(rng.uniform(-6, 6)),
        fat=rng.uniform(0.05, 0.09),
        heart_u=torso_a * rng.uniform(0.05, 0.22),
        heart_v=torso_b * rng.uniform(-0.25, -0.05),
        heart_angle=np.deg2rad(rng.uniform(-25, 25)),
        lv_radius=body * rng.uniform(0.20, 0.26),
        lv_ecc=rng.uniform(0.88, 1.0),
        myo_thickness=body * rng.uniform(0.075, 0.10),
        rv_length=rng.uniform(1.35, 1.6),
        rv_width=rng.uniform(0.55, 0.75),
        rv_offset=rng.uniform(0.75, 0.95),
        ef_lv=rng.uniform(0.50, 0.70),
        ef_rv=rng.uniform(0.40, 0.60),
        phase_offset=rng.uniform(0.0, 1.0),
        systole_peak=rng.uniform(0.30, 0.40),
        breath_amp=rng.uniform(0.5, 1.5) / (mn / 2.0),  # 0.5-1.5 pixels
        breath_dir=np.deg2rad(90 + rng.uniform(-30, 30)),  # mostly anterior-posterior
        breath_freq=rng.uniform(0.15, 0.35),  # respiratory cycles per cardiac cycle
        breath_phase=rng.uniform(0, 2 * np.pi),
        lung_l=(rng.uniform(0.45, 0.55), rng.uniform(0.0, 0.15), rng.uniform(0.24, 0.30), rng.uniform(0.36, 0.46)),
        lung_r=(rng.uniform(-0.55, -0.45), rng.uniform(-0.10, 0.05), rng.uniform(0.24, 0.30), rng.uniform(0.36, 0.46)),
        liver=(rng.uniform(-0.50, -0.35), rng.uniform(0.30, 0.45), rng.uniform(0.35, 0.45), rng.uniform(0.28, 0.36)),
        spine=(rng.uniform(-0.05, 0.05), rng.uniform(0.66, 0.74), rng.uniform(0.11, 0.14)),
        aorta=(rng.uniform(0.12, 0.22), rng.uniform(0.45, 0.55), rng.uniform(0.055, 0.075)),
        # smooth background phase: constant, linear and quadratic terms (radians over the unit square)
        phase_coeffs=np.concatenate([
            [rng.uniform(-np.pi, np.pi)], rng.normal(0.0, 0.4, size=2), rng.normal(0.0, 0.25, size=3)
        ]),
        texture=rng.normal(0.0, 1.0, size=(3, 3)),
    )


# ------------------------------------------------------------------------------------------------- phantom
def make_phantom(nt: int, nx: int, ny: int, seed: int, breathing: bool = True,
                 slice_position: float = 0.0) -> dict[str, Any]:
    """Renders one subject's complex cine phantom.

    Args:
        nt: number of cardiac frames (one full cycle).
        nx: image size along X (readout, left-right).
        ny: image size along Y (phase encoding, anterior-posterior).
        seed: subject seed; the same seed gives the same subject (anatomy, motion, phase).
        breathing: add a slow in-plane drift of heart, lungs, liver and aorta over the frames.
        slice_position: short-axis slice location from -1 (base) to 1 (apex); the ventricles shrink towards the
            apex. The random draws do not depend on it, so slices of one seed belong to one subject.

    Returns:
        dict with

        * ``image``: (nt, nx, ny) complex64, magnitude in [0, 1] with max exactly 1.
        * ``ejection_fraction``: LV ejection fraction of the model, ``(A_ED - A_ES) / A_ED`` of the blood-pool
          area (the single-slice analogue of the volume definition), in [0.5, 0.7].
        * ``ejection_fraction_frames``: the same ratio measured on the rendered frames (min/max of ``lv_area``);
          slightly below the model value when no frame falls exactly on end-systole.
        * ``rv_ejection_fraction``: RV model ejection fraction (area based).
        * ``lv_area``, ``rv_area``: (nt,) rendered blood-pool areas in pixels.
        * ``contraction``: (nt,) contraction curve in [0, 1] (0 end-diastole, 1 end-systole).
        * ``heart_center``: (nt, 2) LV centre in pixel coordinates (x index, y index), including breathing.
        * ``breathing_shift``: (nt, 2) drift in pixels.
        * ``body_mask``: (nx, ny) bool torso support.
        * ``torso``: (a, b, angle) torso ellipse in grid units, used to place the coils.
        * ``seed``, ``cardiac_phase_offset``, ``heart_rotation_deg``.

    Raises:
        ValueError: non-positive sizes.
    """
    if min(nt, nx, ny) < 1:
        raise ValueError(f"make_phantom: sizes must be positive, got nt={nt}, nx={nx}, ny={ny}")
    rng = np.random.default_rng(seed)
    p = _draw_anatomy(rng, nx, ny)
    u, v, scale = _grid(nx, ny)
    ta, tb, tang = p.torso_a, p.torso_b, p.torso_angle

    def torso_point(pu: float, pv: float) -> tuple[float, float]:
        """Torso-relative coordinates (unit disc) to grid units, following the torso rotation."""
        x, y = pu * ta, pv * tb
        return np.cos(tang) * x - np.sin(tang) * y, np.sin(tang) * x + np.cos(tang) * y

    # ---- motion
    c = _contraction(nt, p.phase_offset, p.systole_peak)
    t = np.arange(nt, dtype=np.float64)
    if breathing:
        s = p.breath_amp * (np.sin(2 * np.pi * p.breath_freq * t / nt + p.breath_phase) - np.sin(p.breath_phase))
    else:
        s = np.zeros(nt)
    du, dv = s * np.cos(p.breath_dir), s * np.sin(p.breath_dir)

    # ---- static body
    body_dist = _ellipse_distance(u, v, 0.0, 0.0, ta, tb, tang)
    img = np.zeros((1, nx, ny))
    img = _paint(img, _soft(body_dist, scale), _INTENSITY["fat"])
    fat_inner = _ellipse_distance(u, v, 0.0, 0.0, ta * (1 - p.fat), tb * (1 - p.fat), tang)
    img = _paint(img, _soft(fat_inner, scale), _INTENSITY["soft"])
    img = np.repeat(img, nt, axis=0)

    # ---- organs that move with breathing
    lu, lv_, la, lb = p.liver
    cu, cv = torso_point(lu, lv_)
    img = _paint(img, _soft(_ellipse_distance(u, v, cu + du, cv + dv, la * ta, lb * tb, tang + 0.3), scale),
                 _INTENSITY["liver"])
    for (pu, pv, la, lb), tilt in ((p.lung_l, -0.2), (p.lung_r, 0.2)):
        cu, cv = torso_point(pu, pv)
        img = _paint(img, _soft(_ellipse_distance(u, v, cu + du, cv + dv, la * ta, lb * tb, tang + tilt), scale),
                     _INTENSITY["lung"])
    su, sv, sr = p.spine
    cu, cv = torso_point(su, sv)
    r_spine = sr * min(ta, tb)
    img = _paint(img, _soft(_ellipse_distance(u, v, cu, cv, r_spine, r_spine * 0.85, tang), scale),
                 _INTENSITY["cortex"])
    img = _paint(img, _soft(_ellipse_distance(u, v, cu, cv, r_spine * 0.8, r_spine * 0.68, tang), scale),
                 _INTENSITY["vertebra"])
    au, av, ar = p.aorta
    cu, cv = torso_point(au, av)
    r_aorta = ar * min(ta, tb) * (1.0 + 0.06 * c)  # systolic distension
    img = _paint(img, _soft(_ellipse_distance(u, v, cu + du, cv + dv, r_aorta, r_aorta, 0.0), scale),
                 _INTENSITY["aorta"])

    # ---- heart
    apex = float(np.clip(slice_position, -1.0, 1.0))
    lv_scale = 1.0 - 0.22 * apex
    rv_scale = 1.0 - 0.40 * apex
    hu, hv = torso_point(p.heart_u, p.heart_v)
    hu, hv = hu + du, hv + dv
    r_endo_ed = p.lv_radius * lv_scale
    r_endo = r_endo_ed * np.sqrt(1.0 - p.ef_lv * c)
    # incompressible myocardium: the ring keeps its area, so the wall thickens as the cavity shrinks
    ring_area = (r_endo_ed + p.myo_thickness * lv_scale) ** 2 - r_endo_ed**2
    r_epi = np.sqrt(r_endo**2 + ring_area)
    r_epi_ed = float(np.sqrt(r_endo_ed**2 + ring_area))
    # RV: ellipse on the patient's right-anterior side of the LV, long axis wrapped around the septum
    rv_dir = np.deg2rad(215.0) + p.heart_angle
    rv_cu = hu + p.rv_offset * r_epi_ed * np.cos(rv_dir)
    rv_cv = hv + p.rv_offset * r_epi_ed * np.sin(rv_dir)
    rv_k = np.sqrt(1.0 - p.ef_rv * c)
    rv_a = p.rv_width * r_epi_ed * rv_scale * rv_k  # radial semi-axis
    rv_b = p.rv_length * r_epi_ed * rv_scale * (0.5 + 0.5 * rv_k)  # tangential semi-axis shortens less
    rv_wall = 0.35 * p.myo_thickness
    rv_ang = rv_dir
    rv_outer = _ellipse_distance(u, v, rv_cu, rv_cv, rv_a + rv_wall, rv_b + rv_wall, rv_ang)
    rv_inner = _ellipse_distance(u, v, rv_cu, rv_cv, rv_a, rv_b, rv_ang)
    lv_epi = _ellipse_distance(u, v, hu, hv, r_epi, r_epi * p.lv_ecc, p.heart_angle)
    lv_endo = _ellipse_distance(u, v, hu, hv, r_endo, r_endo * p.lv_ecc, p.heart_angle)
    img = _paint(img, _soft(rv_outer, scale), _INTENSITY["myocardium"])
    rv_blood = _soft(rv_inner, scale) * (1.0 - _soft(lv_epi, scale))
    img = _paint(img, rv_blood, _INTENSITY["blood"])
    img = _paint(img, _soft(lv_epi, scale), _INTENSITY["myocardium"])
    lv_blood = _soft(lv_endo, scale)
    img = _paint(img, lv_blood, _INTENSITY["blood"])

    # ---- smooth texture (coil-independent intensity variation) and background phase
    tex = np.zeros((1, nx, ny))
    for (ku, kv), w in np.ndenumerate(p.texture):
        tex += w * np.cos(np.pi * (ku + 1) * u / 2.0 + 0.7 * ku) * np.cos(np.pi * (kv + 1) * v / 2.0 + 0.3 * kv)
    img = img * (1.0 + 0.04 * tex)
    img = np.clip(img, 0.0, None)
    img = img / img.max()
    pc = p.phase_coeffs
    phase = pc[0] + pc[1] * u + pc[2] * v + pc[3] * u**2 + pc[4] * u * v + pc[5] * v**2
    image = (img * np.exp(1j * phase)).astype(np.complex64)

    lv_area = lv_blood.sum(axis=(1, 2))
    rv_area = rv_blood.sum(axis=(1, 2))
    centre_px = np.stack([hu * scale + (nx - 1) / 2.0, hv * scale + (ny - 1) / 2.0], axis=-1).reshape(-1, 2)
    centre_px = np.broadcast_to(centre_px, (nt, 2)).copy()
    return {
        "image": image,
        "ejection_fraction": float(p.ef_lv),
        "ejection_fraction_frames": float((lv_area.max() - lv_area.min()) / lv_area.max()),
        "rv_ejection_fraction": float(p.ef_rv),
        "lv_area": lv_area,
        "rv_area": rv_area,
        "contraction": c,
        "heart_center": centre_px,
        "breathing_shift": np.stack([du * scale, dv * scale], axis=-1),
        "body_mask": (body_dist[0] <= 0.0),
        "torso": (float(ta), float(tb), float(tang)),
        "seed": int(seed),
        "cardiac_phase_offset": float(p.phase_offset),
        "heart_rotation_deg": float(np.rad2deg(p.heart_angle)),
    }


# ------------------------------------------------------------------------------------------------ coils
def analytic_coil_maps(nx: int, ny: int, ncoils: int, seed: int | None = None,
                       torso: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivities of an analytic receive array placed on an ellipse around the body.

    Each coil is a rectangular loop perpendicular to the image plane, cut by the plane in two antiparallel
    conductors at ``p1`` and ``p2`` (a small distance ``h`` out of plane). In complex notation ``z = u + i v``
    the 2D Biot-Savart field of one conductor, as the circularly polarised receive component, is
    ``conj(z - p) / (|z - p|^2 + h^2)``; a loop is the difference of its two conductors. This gives a smooth,
    dipole-like magnitude falloff (~ 1/distance^2) and a phase that rotates with the viewing angle. Each coil
    also gets a random constant phase (cable length).

    The maps are normalised so that ``sum_c |s_c|^2 = 1`` at every pixel (in particular inside the body).

    Args:
        nx: size along X.
        ny: size along Y.
        ncoils: number of coils (>= 1).
        seed: random seed for the coil placement (None: a fixed default arrangement, seed 0).
        torso: (a, b, angle) of the body ellipse in grid units (as returned by :func:`make_phantom` under
            ``"torso"``); default a centred ellipse filling 85 % of the field of view.

    Returns:
        ``(coil_maps, body_mask)``: (nx, ny, ncoils) complex64 and (nx, ny) bool.
    """
    if ncoils < 1:
        raise ValueError(f"analytic_coil_maps: ncoils must be >= 1, got {ncoils}")
    rng = np.random.default_rng(0 if seed is None else seed)
    u, v, scale = _grid(nx, ny)
    u, v = u[0], v[0]
    mn = min(nx, ny)
    if torso is None:
        torso = (0.85 * nx / mn, 0.85 * ny / mn, 0.0)
    ta, tb, tang = torso
    body_mask = _ellipse_distance(u[None], v[None], 0.0, 0.0, ta, tb, tang)[0] <= 0.0

    gap = rng.uniform(1.12, 1.22)
    ring_a, ring_b = ta * gap + 0.05, tb * gap + 0.05
    start = rng.uniform(0, 2 * np.pi)
    angles = start + 2 * np.pi * np.arange(ncoils) / ncoils + rng.uniform(-0.15, 0.15, ncoils) * (2 * np.pi / ncoils)
    # loop width: a bit less than the spacing of neighbours, limited so that few coils do not become huge
    perimeter = np.pi * (3 * (ring_a + ring_b) - np.sqrt((3 * ring_a + ring_b) * (ring_a + 3 * ring_b)))
    width = min(0.8 * perimeter / ncoils, 0.9 * min(ring_a, ring_b))
    heights = rng.uniform(0.10, 0.30, ncoils)
    offsets = rng.uniform(-np.pi, np.pi, ncoils)

    z = u + 1j * v
    rot = np.exp(1j * tang)
    maps = np.empty((nx, ny, ncoils), dtype=np.complex128)
    for k in range(ncoils):
        centre = rot * (ring_a * np.cos(angles[k]) + 1j * ring_b * np.sin(angles[k]))
        tangent = rot * (-ring_a * np.sin(angles[k]) + 1j * ring_b * np.cos(angles[k]))
        tangent /= abs(tangent)
        p1 = centre + 0.5 * width * tangent
        p2 = centre - 0.5 * width * tangent
        h2 = heights[k] ** 2
        field = np.conj(z - p1) / (np.abs(z - p1) ** 2 + h2) - np.conj(z - p2) / (np.abs(z - p2) ** 2 + h2)
        maps[..., k] = field * np.exp(1j * offsets[k])
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=-1, keepdims=True))
    maps /= np.maximum(rss, 1e-12)
    return maps.astype(np.complex64), body_mask


# ------------------------------------------------------------------------------------------------ subject
def make_subject(nt: int, nx: int, ny: int, ncoils: int, seed: int, snr: float | None = 30.0,
                 breathing: bool = True, slices: int = 1) -> dict[str, Any]:
    """One synthetic subject: phantom slices, analytic coil maps and noisy fully sampled multi-coil k-space.

    Noise and SNR: the noise is i.i.d. circular complex Gaussian on every k-space sample of every coil with
    ``E|n|^2 = sigma^2`` (``sigma^2 / 2`` per real and imaginary part). Because the centred FFT is orthonormal and
    ``sum_c |s_c|^2 = 1``, ``sigma`` is also the noise standard deviation of each coil image and of the
    coil-combined image ``sum_c conj(s_c) ifft2c(k_c)``. The SNR in dB is defined on that combined image as

        ``snr = 20 * log10(mean_body |x| / sigma)``,

    the mean magnitude of the noise-free image over the body mask (all slices and frames) divided by the noise
    standard deviation. ``snr=None`` (or inf) gives noise-free k-space.

    Args:
        nt: frames per cardiac cycle.
        nx: readout size X.
        ny: phase-encoding size Y.
        ncoils: number of receive coils C.
        seed: subject seed (anatomy, motion, coils and noise all derive from it).
        snr: image SNR in dB as defined above, or None for no noise.
        breathing: slow breathing drift over the frames.
        slices: number of short-axis slices S, evenly spread from base to apex.

    Returns:
        dict with ``image`` (S,T,X,Y,1) complex64 noise-free reference (max |x| = 1 per slice),
        ``coil_maps`` (S,1,X,Y,C) complex64, ``kspace`` (S,T,X,Y,C) complex64 = ``fft2c(image * coil_maps)`` +
        noise, ``noise_std`` (sigma), ``snr``, ``body_mask`` (X,Y) bool, ``seed`` and ``slices_meta`` (the
        :func:`make_phantom` metadata of each slice, without its image).
    """
    if slices < 1:
        raise ValueError(f"make_subject: slices must be >= 1, got {slices}")
    # the phantom uses the subject seed itself (make_phantom(seed) is this subject's anatomy); coils and noise
    # get independent streams derived from it
    coil_seed, noise_seed = (int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0]) for k in (1, 2))
    positions = np.linspace(-0.6, 0.6, slices) if slices > 1 else np.zeros(1)
    phantoms = [make_phantom(nt, nx, ny, int(seed), breathing=breathing, slice_position=float(z))
                for z in positions]
    image = np.stack([ph["image"] for ph in phantoms])[..., None]  # (S,T,X,Y,1)
    maps, body = analytic_coil_maps(nx, ny, ncoils, seed=coil_seed, torso=phantoms[0]["torso"])
    coil_maps = np.broadcast_to(maps[None, None], (slices, 1, nx, ny, ncoils)).astype(np.complex64)
    kspace = fft2c_np(image * coil_maps).astype(np.complex64)

    if snr is None or not np.isfinite(snr):
        sigma = 0.0
    else:
        signal = float(np.mean(np.abs(image[..., 0])[:, :, body]))
        sigma = signal / 10.0 ** (float(snr) / 20.0)
        noise_rng = np.random.default_rng(noise_seed)
        noise = noise_rng.standard_normal(kspace.shape + (2,), dtype=np.float32)
        kspace += (sigma / np.sqrt(2.0)) * (noise[..., 0] + 1j * noise[..., 1]).astype(np.complex64)
    meta = [{k: val for k, val in ph.items() if k != "image"} for ph in phantoms]
    logger.debug("subject seed %d: EF %.3f, sigma %.4g", seed, meta[0]["ejection_fraction"], sigma)
    return {
        "image": image,
        "coil_maps": coil_maps,
        "kspace": kspace,
        "noise_std": float(sigma),
        "snr": None if snr is None else float(snr),
        "body_mask": body,
        "seed": int(seed),
        "slices_meta": meta,
    }
