"""Readers of real cine k-space for ``ssfl-recon prepare-data``: CMRxRecon 2023/2024(/2025) trees and OCMR (ISMRMRD).

Facts of the layouts (from the challenges' ``ChallengeDataFormat`` notes and demo code):

* **CMRxRecon 2023**: ``{MultiCoil,SingleCoil}/Cine/{TrainingSet,ValidationSet}/{FullSample,AccFactor04,AccFactor08,
  AccFactor10}/P001/cine_{sax,lax}.mat``. Multi-coil variables ``kspace_full`` / ``kspace_sub04|08|10`` of MATLAB
  shape (kx, ky, kc, kz, t); single-coil ``kspace_single_full`` / ``kspace_single_subXX`` of shape (kx, ky, kz, t).
  Masks ``cine_{sax,lax}_mask.mat`` (next to the undersampled file) with ``mask04|08|10`` of shape (kx, ky), the
  same for every coil, slice and frame; the 24 central ky lines are always sampled.
* **CMRxRecon 2024**: ``MultiCoil/Cine/TrainingSet/FullSample/P001/cine_{sax,lax,lvot}.mat`` (``kspace_full``),
  masks ``Mask_Task1/P001/cine_sax_mask_Uniform8.mat`` and ``Mask_Task2/P001/cine_sax_mask_ktGaussian8.mat`` (also
  ``ktUniform``, ``ktRadial``) with variable ``mask``: (nx, ny) for Task 1 and (nx, ny, nt) k-t masks for Task 2;
  undersampled ``UnderSample_Task*/P001/cine_sax_kus_Uniform8.mat`` with variable ``kus``. The 2025 release adds
  ``Center00X/<scanner>/`` folders above ``P001``; any depth is accepted here.
* MATLAB v7.3 files are HDF5 (axes reversed, compound ``real``/``imag``); older files are MATLAB 5 (``scipy``).
* **OCMR** (ISMRMRD HDF5, read with the optional ``ismrmrd`` package): acquisitions carry ``kspace_encode_step_1``
  (ky), ``slice``, ``phase`` (cardiac frame), ``average``; the readout is 2x oversampled (encoded x = 2 * recon x)
  and may be asymmetric (``center_sample`` < half the samples), so each line is placed with its ``center_sample``
  at the k-space centre (the missing part zero-filled), averages are averaged, and the oversampling is removed by
  cropping the central ``reconSpace`` x in image space.

Layouts returned follow :mod:`data_loader.formats`: k-space (S, T, X, Y, C) complex64, masks (T, X, Y) uint8.
Every error names the file.
"""
from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.io import loadmat, whosmat

from data_loader.formats import read_cmrxrecon_cine

logger = logging.getLogger(__name__)

VIEWS = ("sax", "lax", "lvot")
_KSPACE_FILE = re.compile(r"^cine_(sax|lax|lvot)(?:_kus_([A-Za-z0-9]+))?\.mat$")
_MASK_FILE = re.compile(r"^cine_(sax|lax|lvot)_mask(?:_([A-Za-z0-9]+))?\.mat$")
_PATIENT_DIR = re.compile(r"^P\d+$")
_CENTER_DIR = re.compile(r"^Center\d+$", re.IGNORECASE)
_SUB_KEY = re.compile(r"^kspace(?:_single)?_sub(\d+)$")
_MASK_KEY = re.compile(r"^mask(\d*)$")


# --------------------------------------------------------------------------------------------- masks
def _mat_variables(path: Path) -> dict[str, np.ndarray]:
    """All numeric variables of a .mat file (v7.3 via h5py, v5 via scipy), in MATLAB axis order."""
    if h5py.is_hdf5(path):
        out = {}
        try:
            with h5py.File(path, "r") as f:
                for key, item in f.items():
                    if isinstance(item, h5py.Dataset) and not key.startswith("#"):
                        out[key] = np.transpose(item[()])  # h5py sees MATLAB's axes reversed
        except (OSError, KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f"{path}: unreadable MATLAB v7.3/HDF5 file (truncated or corrupt?): {err}") from err
        return out
    try:
        content = loadmat(path)
    except Exception as err:  # scipy raises many types for damaged files
        raise ValueError(f"{path}: not a readable .mat file (v7.3/HDF5 or v5): {err}") from err
    return {k: v for k, v in content.items() if not k.startswith("__")}


def read_cmrxrecon_masks(path: str | Path, nt: int | None = None) -> dict[str, np.ndarray]:
    """Sampling masks of a CMRxRecon mask file, as (T, X, Y) uint8 0/1.

    Args:
        path: ``cine_sax_mask.mat`` (2023: ``mask04``/``mask08``/``mask10``, (kx, ky)) or
            ``cine_sax_mask_<kind>.mat`` (2024/2025: ``mask``, (kx, ky) or k-t (kx, ky, t)).
        nt: frames to tile a 2-D mask over (a 2-D mask gives T = 1 when None).

    Returns:
        name -> mask; names are ``R04`` etc. for 2023 variables, the file's suffix (``Uniform8``) for ``mask``.

    Raises:
        ValueError: no ``mask*`` variable, a mask of the wrong rank or with values other than 0/1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CMRxRecon mask file not found: {path}")
    variables = _mat_variables(path)
    match = _MASK_FILE.match(path.name)
    suffix = match.group(2) if match and match.group(2) else None
    masks = {}
    for key, value in variables.items():
        m = _MASK_KEY.match(key)
        if m is None:
            continue
        name = f"R{m.group(1)}" if m.group(1) else (suffix or "mask")
        arr = np.asarray(value)
        if arr.ndim == 2:
            arr = np.repeat(arr[None], 1 if nt is None else nt, axis=0)
        elif arr.ndim == 3:
            arr = np.transpose(arr, (2, 0, 1))  # (kx, ky, t) -> (t, kx, ky)
        else:
            raise ValueError(f"{path}: {key!r} has shape {arr.shape}; expected (kx, ky) or (kx, ky, t)")
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{path}: {key!r} must hold only 0 and 1")
        masks[name] = arr.astype(np.uint8)
    if not masks:
        raise ValueError(f"{path}: no mask variable found (expected 'mask', 'mask04', ...; found {sorted(variables)})")
    return masks


def line_mask(mask: np.ndarray) -> np.ndarray | None:
    """(T, X, Y) Cartesian mask -> (Y, T) line mask, or None when it varies along X (e.g. k-t radial)."""
    if not np.all(mask == mask[:, :1, :]):
        return None
    return np.ascontiguousarray(mask[:, 0, :].T)


def mask_from_kspace(kspace: np.ndarray) -> np.ndarray:
    """(T, X, Y) uint8 sampling pattern of zero-filled (S, T, X, Y, C) k-space: sampled where any value is non-zero."""
    return (np.abs(kspace) > 0).any(axis=(0, 4)).astype(np.uint8)


# ------------------------------------------------------------------------------------------ discovery
@dataclass
class CineCase:
    """One CMRxRecon cine acquisition (patient, view, coil type) and what the tree holds for it.

    Attributes:
        patient: patient key (``P001``, or ``Center001_P001`` in multi-centre trees); the split unit.
        view: ``sax``, ``lax`` or ``lvot``.
        coil_type: ``multi`` or ``single``.
        full: the fully sampled file (``FullSample/.../cine_sax.mat``) or None.
        undersampled: name -> (file, variable) of prospectively undersampled k-space (``kspace_sub04``, ``kus``).
        mask_files: mask files of this case.
    """

    patient: str
    view: str
    coil_type: str
    full: Path | None = None
    undersampled: dict[str, tuple[Path, str]] = field(default_factory=dict)
    mask_files: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        suffix = "" if self.coil_type == "multi" else "_single"
        return f"{self.patient}_cine_{self.view}{suffix}"


def _patient_key(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts[:-1]
    patient = next((p for p in reversed(parts) if _PATIENT_DIR.match(p)), None)
    if patient is None:
        return None
    center = next((p for p in parts if _CENTER_DIR.match(p)), None)
    return f"{center}_{patient}" if center else patient


def _coil_type(path: Path, root: Path) -> str:
    parts = [p.lower() for p in path.relative_to(root).parts]
    return "single" if "singlecoil" in parts else "multi"


def _mat_keys(path: Path) -> list[str]:
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                return list(f.keys())
        except OSError as err:
            raise ValueError(f"{path}: unreadable MATLAB v7.3/HDF5 file (truncated or corrupt?): {err}") from err
    try:
        return [name for name, _, _ in whosmat(path)]
    except Exception as err:
        raise ValueError(f"{path}: not a readable .mat file (v7.3/HDF5 or v5): {err}") from err


def discover_cmrxrecon(root: str | Path, views: tuple[str, ...] = VIEWS) -> list[CineCase]:
    """Every cine case under ``root`` (2023, 2024 and 2025 trees; any depth), sorted by name.

    A file is attributed to the patient of its nearest ``P<digits>`` folder (prefixed by a ``Center<digits>``
    folder when there is one). Fully sampled files are the ``cine_<view>.mat`` files holding ``kspace_full`` or
    ``kspace_single_full``; ``kspace_subXX`` variables and ``cine_<view>_kus_<kind>.mat`` files are undersampled.

    Raises:
        ValueError: a ``.mat`` file whose variables cannot be listed (truncated), naming it.
    """
    root = Path(root)
    cases: dict[tuple[str, str, str], CineCase] = {}
    for path in sorted(root.rglob("*.mat")):
        kmatch, mmatch = _KSPACE_FILE.match(path.name), _MASK_FILE.match(path.name)
        if not (kmatch or mmatch):
            continue
        view = (kmatch or mmatch).group(1)
        patient = _patient_key(path, root)
        if view not in views or patient is None:
            continue
        key = (patient, view, _coil_type(path, root))
        case = cases.setdefault(key, CineCase(patient, view, key[2]))
        if mmatch:
            case.mask_files.append(path)
            continue
        if kmatch.group(2):  # 2024: cine_sax_kus_Uniform8.mat
            case.undersampled[kmatch.group(2)] = (path, "kus")
            continue
        keys = _mat_keys(path)
        full = [k for k in keys if k in ("kspace_full", "kspace_single_full")]
        if full:
            if case.full is not None:
                raise ValueError(f"{path}: second fully sampled file for {case.name} (first: {case.full})")
            case.full = path
        for k in keys:
            m = _SUB_KEY.match(k)
            if m:
                case.undersampled[f"R{m.group(1)}"] = (path, k)
        if not full and not any(_SUB_KEY.match(k) for k in keys):
            raise ValueError(f"{path}: no k-space variable: expected 'kspace_full', 'kspace_single_full' or "
                             f"'kspace_subXX', found {sorted(keys)}")
    return [cases[k] for k in sorted(cases, key=lambda k: cases[k].name)]


def read_case_kspace(case: CineCase) -> np.ndarray:
    """(S, T, X, Y, C) complex64 fully sampled k-space of a case (errors name the file)."""
    if case.full is None:
        raise ValueError(f"{case.name}: no fully sampled file")
    keys = _mat_keys(case.full)
    key = "kspace_full" if "kspace_full" in keys else "kspace_single_full"
    return read_cmrxrecon_cine(case.full, key=key)


def read_case_masks(case: CineCase, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Prospective masks of a case, (T, X, Y) uint8 each, checked against the k-space ``shape`` (S, T, X, Y, C).

    Mask files come first; undersampled k-space without a mask file gives its sampling pattern instead.
    """
    _, nt, nx, ny, _ = shape
    masks: dict[str, np.ndarray] = {}
    for path in case.mask_files:
        for name, mask in read_cmrxrecon_masks(path, nt=nt).items():
            if mask.shape[1:] != (nx, ny) or mask.shape[0] not in (1, nt):
                raise ValueError(f"{path}: mask {name!r} of shape (T,X,Y) {mask.shape} does not fit the k-space "
                                 f"of {case.full} (T,X,Y) = {(nt, nx, ny)}")
            masks[name] = np.broadcast_to(mask, (nt, nx, ny)).copy()
    for name, (path, key) in case.undersampled.items():
        if name in masks:
            continue
        under = read_cmrxrecon_cine(path, key=key)
        if under.shape[1:4] != (nt, nx, ny):
            raise ValueError(f"{path}: {key!r} of shape {under.shape} does not fit the fully sampled k-space "
                             f"{shape} of {case.full}")
        masks[name] = mask_from_kspace(under)
    return masks


# ----------------------------------------------------------------------------------------------- OCMR
ACQ_FLAGS_SKIPPED = {"noise": 19, "navigation": 23, "phasecorr": 22, "hpfeedback": 21, "rtfeedback": 20,
                     "dummyscan": 27, "surfacecoilcorrection": 25}


def _import_ismrmrd():
    try:
        import ismrmrd  # optional extra [ocmr], imported only for OCMR input
    except ImportError as err:
        raise ValueError("reading OCMR/ISMRMRD files needs the optional package 'ismrmrd': "
                         "pip install 'ssfl-recon[ocmr]' (or pip install ismrmrd)") from err
    return ismrmrd


def _xml_int(root: ET.Element, path: str, where: Path, default: int | None = None) -> int:
    node = root
    for tag in path.split("/"):
        node = next((c for c in node if c.tag.split("}")[-1] == tag), None) if node is not None else None
    if node is None or node.text is None:
        if default is not None:
            return default
        raise ValueError(f"{where}: ISMRMRD header lacks {path}")
    return int(float(node.text))


def ocmr_geometry(xml_text: str | bytes, where: Path) -> dict[str, int]:
    """Encoded/recon readout sizes, encoded ky size and its centre from an ISMRMRD XML header."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise ValueError(f"{where}: unreadable ISMRMRD XML header: {err}") from err
    enc = next((c for c in root if c.tag.split("}")[-1] == "encoding"), None)
    if enc is None:
        raise ValueError(f"{where}: ISMRMRD header has no <encoding>")
    geo = {
        "enc_x": _xml_int(enc, "encodedSpace/matrixSize/x", where),
        "enc_y": _xml_int(enc, "encodedSpace/matrixSize/y", where),
        "recon_x": _xml_int(enc, "reconSpace/matrixSize/x", where),
    }
    geo["center_y"] = _xml_int(enc, "encodingLimits/kspace_encoding_step_1/center", where, default=geo["enc_y"] // 2)
    if not 1 <= geo["recon_x"] <= geo["enc_x"]:
        raise ValueError(f"{where}: reconSpace x {geo['recon_x']} must be in [1, encodedSpace x {geo['enc_x']}]")
    return geo


def _fft1c(x: np.ndarray, axis: int, inverse: bool = False) -> np.ndarray:
    x = np.fft.ifftshift(x, axes=axis)
    x = np.fft.ifft(x, axis=axis, norm="ortho") if inverse else np.fft.fft(x, axis=axis, norm="ortho")
    return np.fft.fftshift(x, axes=axis)


def remove_readout_oversampling(lines: np.ndarray, recon_x: int, axis: int = -1) -> np.ndarray:
    """Crops the central ``recon_x`` pixels of the readout in image space (the ISMRMRD/OCMR 2x oversampling).

    Args:
        lines: k-space with the encoded readout on ``axis`` (centred, DC at n // 2).
        recon_x: readout size after removal.
        axis: the readout axis.

    Returns:
        k-space with ``recon_x`` readout samples (orthonormal transforms, so image values are kept).
    """
    n = lines.shape[axis]
    img = _fft1c(lines, axis, inverse=True)
    start = n // 2 - recon_x // 2
    img = np.take(img, np.arange(start, start + recon_x), axis=axis)
    # orthonormal transforms both ways: the inverse transform of the result is exactly the cropped image
    return _fft1c(img, axis)


def read_ocmr(path: str | Path) -> dict[str, Any]:
    """Reads an OCMR ISMRMRD ``.h5`` cine into our layout.

    Each imaging acquisition (noise, navigator, phase-correction, feedback and dummy scans are skipped) is placed
    at ky = ``kspace_encode_step_1 - center + Y // 2`` and with its ``center_sample`` at the readout centre
    (asymmetric echoes are zero-filled), the readout oversampling is removed, and repeated lines (averages, or the
    same line acquired twice) are averaged. Only contrast/set/repetition 0 are kept.

    Returns:
        dict with ``kspace`` (S, T, X, Y, C) complex64 (S = slices, T = cardiac phases, X = recon readout,
        Y = encoded phase-encoding lines), ``mask`` (Y, T) uint8 of the lines acquired per frame (lines never
        acquired, e.g. partial Fourier, count as acquired-and-zero), ``fully_sampled`` (bool) and ``averages``.

    Raises:
        ValueError: missing ``ismrmrd`` package, unreadable file or header, no imaging acquisitions, NaN values.
    """
    ismrmrd = _import_ismrmrd()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OCMR file not found: {path}")
    try:
        dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False, mode="r")
    except TypeError:  # older ismrmrd without ``mode``
        dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: unreadable ISMRMRD/HDF5 file (truncated or corrupt?): {err}") from err
    try:
        try:
            geo = ocmr_geometry(dset.read_xml_header(), path)
            count = dset.number_of_acquisitions()
            acquisitions = [dset.read_acquisition(i) for i in range(count)]
        except (LookupError, OSError, RuntimeError) as err:
            raise ValueError(f"{path}: not an ISMRMRD dataset (missing 'dataset/xml' or 'dataset/data'?): "
                             f"{err}") from err
    finally:
        dset.close()
    skip = sum(1 << (bit - 1) for bit in ACQ_FLAGS_SKIPPED.values())
    imaging = [a for a in acquisitions if not (int(a.flags) & skip)
               and a.idx.contrast == 0 and a.idx.set == 0 and a.idx.repetition == 0]
    if not imaging:
        raise ValueError(f"{path}: no imaging acquisitions (only noise/navigator/calibration scans?)")
    ns_slices = 1 + max(int(a.idx.slice) for a in imaging)
    nt = 1 + max(int(a.idx.phase) for a in imaging)
    nc = int(imaging[0].active_channels)
    ex, ny, rx = geo["enc_x"], geo["enc_y"], geo["recon_x"]
    total = np.zeros((ns_slices, nt, ex, ny, nc), np.complex128)
    hits = np.zeros((ns_slices, nt, ny), np.int32)
    for a in imaging:
        if int(a.active_channels) != nc:
            raise ValueError(f"{path}: acquisitions with {a.active_channels} and {nc} channels")
        ky = int(a.idx.kspace_encode_step_1) - geo["center_y"] + ny // 2
        if not 0 <= ky < ny:
            raise ValueError(f"{path}: kspace_encode_step_1 {a.idx.kspace_encode_step_1} outside the encoded "
                             f"matrix y = {ny} (centre {geo['center_y']})")
        data = np.asarray(a.data)  # (C, samples)
        start = ex // 2 - int(a.center_sample)
        lo, hi = max(0, start), min(ex, start + data.shape[1])
        s, t = int(a.idx.slice), int(a.idx.phase)
        total[s, t, lo:hi, ky, :] += data[:, lo - start:hi - start].T
        hits[s, t, ky] += 1
    if not np.isfinite(total).all():
        raise ValueError(f"{path}: NaN/Inf values in the k-space data")
    kspace = total / np.maximum(hits, 1)[:, :, None, :, None]
    kspace = remove_readout_oversampling(kspace, rx, axis=2).astype(np.complex64)
    sampled = hits > 0  # (S, T, Y)
    ever = sampled.any(axis=(0, 1))  # lines acquired at all (partial Fourier edges are not undersampling)
    acquired = sampled.any(axis=0) | ~ever[None, :]  # (T, Y)
    return {"kspace": kspace, "mask": acquired.T.astype(np.uint8), "fully_sampled": bool(acquired.all()),
            "averages": int(hits.max())}
