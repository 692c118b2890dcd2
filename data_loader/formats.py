"""On-disk data layouts: one import for the split CSVs, the original layout, our HDF5 files and CMRxRecon ``.mat``.

All writers go through :mod:`utils.io` (temporary file + rename), so an interrupted run never leaves a half-written
file under the final name. All readers raise ``FileNotFoundError`` (with the path) for missing files and
``ValueError`` naming the file and the problem for everything else: unreadable or truncated files, shapes that
disagree with each other or with the CSV, wrong dtypes, NaN/Inf values, masks of the wrong size.

Array layouts follow :mod:`utils.mri` with the batch axis used for slices: image (S, T, X, Y, 1), k-space
(S, T, X, Y, C), coil maps (S, 1, X, Y, C), initial mask (Y, T). X is the readout (fully sampled) axis, Y the
phase-encoding axis. K-space is centred (DC at index n // 2) for the orthonormal ``fft2c`` of :mod:`utils.mri`.

Each layout has its own module; this one re-exports their public API (``from data_loader.formats import X`` and
``formats.X`` keep working):

* :mod:`data_loader.csv_format`: split CSVs (:class:`SubjectRow`, :func:`read_dataset_csv`,
  :func:`write_dataset_csv`) and the file checks the readers share;
* :mod:`data_loader.original_format`: the original SSFL-Recon preprocessed files (:class:`OriginalDataset`);
* :mod:`data_loader.h5_format`: our HDF5 layout (:class:`H5Dataset`, :func:`read_h5_subject`,
  :func:`write_h5_subject`);
* :mod:`data_loader.cmrx_format`: CMRxRecon 2023 cine ``.mat`` (:func:`read_cmrxrecon_cine`,
  :func:`load_cmrxrecon_subject`, :func:`write_cmrxrecon_like`).
"""
from __future__ import annotations

from data_loader.cmrx_format import CMRX_KEY, load_cmrxrecon_subject, read_cmrxrecon_cine, write_cmrxrecon_like
from data_loader.csv_format import (
    CSV_HEADER,
    PathLike,
    SubjectRow,
    check_finite,
    read_dataset_csv,
    subject_stem,
    write_dataset_csv,
)
from data_loader.h5_format import H5_FORMAT, H5_VERSION, H5Dataset, read_h5_subject, write_h5_subject
from data_loader.original_format import (
    OriginalDataset,
    original_file_names,
    resolve_original,
    write_original_subject,
)

__all__ = [
    "CMRX_KEY",
    "CSV_HEADER",
    "H5Dataset",
    "H5_FORMAT",
    "H5_VERSION",
    "OriginalDataset",
    "PathLike",
    "SubjectRow",
    "check_finite",
    "load_cmrxrecon_subject",
    "original_file_names",
    "read_cmrxrecon_cine",
    "read_dataset_csv",
    "read_h5_subject",
    "resolve_original",
    "subject_stem",
    "write_cmrxrecon_like",
    "write_dataset_csv",
    "write_h5_subject",
    "write_original_subject",
]
