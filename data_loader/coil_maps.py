"""Coil sensitivity estimation (Walsh, ESPIRiT), SVD coil compression and map normalisation, in numpy/scipy.

Layouts follow :mod:`utils.mri` without the batch axis: coil images and k-space are (X, Y, C) or (T, X, Y, C)
(time frames are pooled: the maps are time-averaged, as in the original SSFL-Recon preprocessing); maps are
returned as (X, Y, C) complex64.

Normalisation convention of every estimator here (see :func:`normalize_coil_maps`):

* ``sum_c |s_c|^2 = 1`` wherever the map is defined (signal present / not cropped), 0 elsewhere;
* the per-pixel phase, which no estimator can determine, is fixed relative to a reference: ``"body"`` makes the
  projection onto a virtual body coil real and positive, ``"first"`` makes coil 0 real and positive. Two sets of
  maps of the same coil array (e.g. the truth and an estimate) then agree exactly, not only "up to a phase".
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from utils.mri import ifft2c_np

logger = logging.getLogger(__name__)

_EPS = 1e-12


def _as_time_stack(x: np.ndarray, what: str) -> np.ndarray:
    """(X,Y,C) or (T,X,Y,C) -> (T,X,Y,C) complex128."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{what}: expected (X,Y,C) or (T,X,Y,C), received shape {x.shape}")
    return x.astype(np.complex128, copy=False)


def _virtual_body_weights(maps: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Coil weights w (C,) of the virtual body coil: dominant eigenvector of sum_x s(x) s(x)^H over ``support``.

    Its arbitrary global phase is fixed by making ``sum_c |w_c| w_c`` real positive, a rule that (unlike "largest
    component real") changes continuously with w, so two map sets describing the same coils give nearly the same w.
    """
    s = maps[support]
    if s.shape[0] == 0:
        s = maps.reshape(-1, maps.shape[-1])
    cov = s.T @ s.conj()  # sum_x s(x) s(x)^H, (C, C)
    _, vecs = np.linalg.eigh(cov)
    w = vecs[:, -1]
    anchor = np.sum(np.abs(w) * w)
    return w * (np.conj(anchor) / max(abs(anchor), _EPS))


def normalize_coil_maps(maps: np.ndarray, reference: str | None = "body",
                        support: np.ndarray | None = None) -> np.ndarray:
    """Scales maps to ``sum_c |s_c|^2 = 1`` where they are non-zero and fixes their per-pixel phase.

    Args:
        maps: (..., X, Y, C) complex coil maps (leading axes, e.g. (S, 1), are processed jointly).
        reference: ``"body"`` (phase of the virtual body coil ``w^H s(x)`` set to 0), ``"first"`` (phase of
            coil 0 set to 0; ill-defined where coil 0 has no sensitivity) or ``None`` (keep the phase).
        support: optional (X, Y) bool region for the virtual-body-coil weights (default: where maps are non-zero).

    Returns:
        complex64 maps of the same shape; pixels where all coils are 0 stay 0.
    """
    maps = np.asarray(maps).astype(np.complex128)
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=-1, keepdims=True))
    nonzero = rss > _EPS * max(float(rss.max(initial=0.0)), _EPS)
    maps = np.where(nonzero, maps / np.where(nonzero, rss, 1.0), 0.0)
    if reference is None:
        return maps.astype(np.complex64)
    if reference == "first":
        ref = maps[..., :1]
    elif reference == "body":
        flat_support = nonzero[..., 0] if support is None else np.broadcast_to(support, maps.shape[:-1])
        w = _virtual_body_weights(maps, flat_support)
        ref = np.einsum("...c,c->...", maps, w.conj())[..., None]
    else:
        raise ValueError(f"normalize_coil_maps: reference must be 'body', 'first' or None, got {reference!r}")
    mag = np.abs(ref)
    phase = np.where(mag > _EPS, np.conj(ref) / np.where(mag > _EPS, mag, 1.0), 1.0)
    return (maps * phase).astype(np.complex64)


# ---------------------------------------------------------------------------------------------- Walsh
def walsh_coil_maps(coil_images: np.ndarray, kernel_size: int = 7, threshold: float = 0.0,
                    reference: str | None = "body") -> np.ndarray:
    """Adaptive coil-map estimate of Walsh, Gmitro & Marcellin (MRM 2000).

    At every pixel the coil covariance ``R(x) = sum_{x' in window(x)} m(x') m(x')^H`` of the coil images over a
    ``kernel_size`` square window (and over all frames) is formed; the map is its dominant eigenvector (unit norm,
    so ``sum_c |s_c|^2 = 1`` automatically).

    Args:
        coil_images: (X, Y, C) or (T, X, Y, C) complex coil images (e.g. ``ifft2c`` of fully sampled k-space or
            of its low-resolution centre).
        kernel_size: side of the smoothing window in pixels (odd values keep the window centred).
        threshold: pixels whose dominant eigenvalue is below ``threshold * max`` are set to 0 (0 keeps all).
        reference: phase reference, see :func:`normalize_coil_maps`.

    Returns:
        (X, Y, C) complex64 maps.
    """
    imgs = _as_time_stack(coil_images, "walsh_coil_maps")
    _, nx, ny, nc = imgs.shape
    # outer products summed over time; the local window sum is a box filter over (X, Y)
    cov = np.einsum("txyc,txyd->xycd", imgs, imgs.conj())
    size = (kernel_size, kernel_size, 1, 1)
    cov = ndimage.uniform_filter(cov.real, size=size, mode="reflect") + \
        1j * ndimage.uniform_filter(cov.imag, size=size, mode="reflect")
    vals, vecs = np.linalg.eigh(cov.reshape(-1, nc, nc))
    maps = vecs[..., -1].reshape(nx, ny, nc)
    top = vals[:, -1].reshape(nx, ny)
    if threshold > 0:
        maps = maps * (top >= threshold * top.max())[..., None]
    return normalize_coil_maps(maps, reference=reference)


# -------------------------------------------------------------------------------------------- ESPIRiT
def _centre_crop(kspace: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Central (cx, cy) block of (T?, X, Y, C) k-space around the DC sample at index n // 2."""
    nx, ny = kspace.shape[-3], kspace.shape[-2]
    cx, cy = min(size[0], nx), min(size[1], ny)
    x0, y0 = nx // 2 - cx // 2, ny // 2 - cy // 2
    return kspace[..., x0:x0 + cx, y0:y0 + cy, :]


def espirit_coil_maps(kspace: np.ndarray, calib_size: int | Sequence[int] = 24, kernel_size: int = 6,
                      thresh: float = 0.02, crop: float = 0.9, reference: str | None = "body",
                      return_eigenvalues: bool = False, kernel_batch: int = 32):
    """ESPIRiT coil maps (Uecker et al., MRM 2014) from the fully sampled k-space centre.

    Steps: (1) the calibration matrix holds every ``kernel_size x kernel_size x C`` patch of the calibration
    region (pooled over frames) as a row; (2) its right singular vectors with singular value
    ``>= thresh * sigma_max`` span the signal subspace; (3) the k-space projection onto that subspace, averaged
    over the patch positions, is a convolution and becomes, in the image domain, a C x C matrix per pixel
    ``G(x) = N / k^2 * sum_n g_n(x) g_n(x)^H`` (``g_n`` the image-domain version of kernel n); (4) true maps
    satisfy ``G(x) s(x) = s(x)``, so the map is the eigenvector of the largest eigenvalue, kept where that
    eigenvalue is ``>= crop`` (elsewhere there is no signal and the map is 0).

    Args:
        kspace: (X, Y, C) or (T, X, Y, C) complex k-space, centred (DC at index n // 2), at least the
            calibration region fully sampled; frames are averaged first, giving time-averaged maps.
        calib_size: side(s) of the central calibration region (int or (cx, cy)); clipped to the matrix size.
        kernel_size: ESPIRiT kernel width k.
        thresh: relative singular-value threshold of the signal subspace.
        crop: eigenvalue threshold for the map support (0 disables cropping).
        reference: phase reference, see :func:`normalize_coil_maps`.
        return_eigenvalues: also return the (X, Y) dominant eigenvalues.
        kernel_batch: kernels transformed at once (memory vs speed).

    Returns:
        (X, Y, C) complex64 maps, and the (X, Y) float32 eigenvalue map when ``return_eigenvalues``.

    Raises:
        ValueError: bad shapes, or a calibration region smaller than the kernel.
    """
    ksp = _as_time_stack(kspace, "espirit_coil_maps")
    _, nx, ny, nc = ksp.shape
    # time-averaged k-space = k-space of the time-averaged image: same coils, less noise, T times fewer rows
    ksp = ksp.mean(axis=0, keepdims=True)
    cs = (calib_size, calib_size) if np.isscalar(calib_size) else tuple(int(c) for c in calib_size)
    calib = _centre_crop(ksp, cs)
    if min(calib.shape[1], calib.shape[2]) < kernel_size:
        raise ValueError(
            f"espirit_coil_maps: calibration region {calib.shape[1:3]} is smaller than the kernel {kernel_size}"
        )
    # (1, wx, wy, C, k, k) patches -> rows of the calibration matrix
    patches = sliding_window_view(calib, (kernel_size, kernel_size), axis=(1, 2))
    rows = patches.reshape(-1, nc * kernel_size * kernel_size)
    _, sing, vh = np.linalg.svd(rows, full_matrices=False)
    keep = sing >= thresh * sing[0]
    # each patch (a row) is a combination of the rows of vh, so those rows, as patch-shaped vectors, span the
    # signal subspace (no conjugation: the patches were not conjugated when stacked)
    kernels = vh[keep].reshape(-1, nc, kernel_size, kernel_size)
    nk = kernels.shape[0]
    logger.debug("ESPIRiT: %d of %d singular vectors kept", nk, len(sing))

    npix = nx * ny
    gram = np.zeros((npix, nc, nc), dtype=np.complex128)
    x0, y0 = nx // 2 - kernel_size // 2, ny // 2 - kernel_size // 2
    for start in range(0, nk, kernel_batch):
        chunk = kernels[start:start + kernel_batch]
        grid = np.zeros((chunk.shape[0], nc, nx, ny), dtype=np.complex128)
        grid[:, :, x0:x0 + kernel_size, y0:y0 + kernel_size] = chunk
        # the kernel position only adds a phase common to all coils and kernels; it cancels in g g^H
        g = ifft2c_np(grid, axes=(2, 3)).reshape(chunk.shape[0], nc, npix)
        g = np.transpose(g, (2, 1, 0))  # (npix, C, n)
        gram += g @ np.conj(np.transpose(g, (0, 2, 1)))
    gram *= npix / kernel_size**2
    vals, vecs = np.linalg.eigh(gram)
    top = vals[:, -1].reshape(nx, ny)
    maps = vecs[..., -1].reshape(nx, ny, nc)
    if crop > 0:
        maps = maps * (top >= crop)[..., None]
    maps = normalize_coil_maps(maps, reference=reference)
    if return_eigenvalues:
        return maps, top.astype(np.float32)
    return maps


# ----------------------------------------------------------------------------------------- compression
def coil_compress(kspace: np.ndarray, num_virtual: int) -> tuple[np.ndarray, np.ndarray]:
    """SVD (PCA) coil compression to ``num_virtual`` virtual coils.

    The C x C sample covariance of all k-space samples (all leading axes pooled) is diagonalised; the virtual
    coils are the projections on its ``num_virtual`` leading eigenvectors: ``y_virtual = y @ matrix``.
    Because ``matrix`` has orthonormal columns, the kept energy fraction is
    ``||y_virtual||^2 / ||y||^2``. Coil maps of the same data compress the same way (``maps @ matrix``; renormalise
    them afterwards with :func:`normalize_coil_maps`).

    Args:
        kspace: (..., C) complex k-space (or coil images: the transform is the same).
        num_virtual: number of virtual coils N, 1 <= N <= C.

    Returns:
        ``(compressed, matrix)``: (..., N) complex64 and (C, N) complex64.
    """
    kspace = np.asarray(kspace)
    nc = kspace.shape[-1]
    if not 1 <= num_virtual <= nc:
        raise ValueError(f"coil_compress: num_virtual must be in [1, {nc}], got {num_virtual}")
    flat = kspace.reshape(-1, nc).astype(np.complex128)
    cov = flat.T.conj() @ flat
    vals, vecs = np.linalg.eigh(cov)
    matrix = vecs[:, ::-1][:, :num_virtual]
    kept = float(vals[::-1][:num_virtual].sum() / max(vals.sum(), _EPS))
    logger.debug("coil compression %d -> %d keeps %.4f of the energy", nc, num_virtual, kept)
    compressed = (flat @ matrix).reshape(kspace.shape[:-1] + (num_virtual,))
    return compressed.astype(np.complex64), matrix.astype(np.complex64)


# ------------------------------------------------------------------------------------------------ helpers
def sense_combine(kspace: np.ndarray, coil_maps: np.ndarray) -> np.ndarray:
    """Coil-combined image of fully sampled k-space: ``sum_c conj(s_c) m_c / sum_c |s_c|^2`` (0 where no map).

    Args:
        kspace: (..., X, Y, C) complex k-space (centred).
        coil_maps: (..., X, Y, C) complex maps, broadcastable to the k-space.

    Returns:
        (..., X, Y, 1) complex64 image.
    """
    coil_images = ifft2c_np(np.asarray(kspace), axes=(-3, -2))
    num = np.sum(np.conj(coil_maps) * coil_images, axis=-1, keepdims=True)
    den = np.sum(np.abs(coil_maps) ** 2, axis=-1, keepdims=True)
    ok = den > 1e-6
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0).astype(np.complex64)


def map_correlation(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel agreement of two map sets up to a phase: ``|sum_c e_c conj(t_c)| / (||e|| ||t||)`` in [0, 1].

    Args:
        estimate: (..., C) complex maps.
        truth: (..., C) complex maps of the same shape.

    Returns:
        (...) float array; 0 where either map is 0.
    """
    num = np.abs(np.sum(estimate * np.conj(truth), axis=-1))
    den = np.linalg.norm(estimate, axis=-1) * np.linalg.norm(truth, axis=-1)
    return np.where(den > _EPS, num / np.where(den > _EPS, den, 1.0), 0.0)
