"""Split CSVs and the checks every data file reader shares.

A split CSV (``train.csv``, ``val.csv``, ``test.csv``, optionally ``feature_train.csv`` / ``recon_train.csv``) has
the header ``filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM`` and one row per subject: name, X, Y, C, T, S. As in the
original loader, a file name is cut at its first dot (``subj.h5`` -> ``subj``). The checks raise
``FileNotFoundError`` (with the path) for missing files and ``ValueError`` naming the file and the problem.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from utils.io import atomic_write_text

CSV_HEADER = ("filename", "nFE", "nPE", "COIL_DIM", "TIME_DIM", "SLICE_DIM")

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------- helpers
def require_file(path: PathLike, what: str) -> Path:
    """``path`` as a Path; ``FileNotFoundError`` naming ``what`` and the path when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def check_finite(array: np.ndarray, where: str) -> None:
    """``ValueError`` at ``where`` with the count and first index of NaN/Inf values, if any."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{where}: {bad} NaN/Inf value(s), the first at index {first}")


def check_shape(shape: Sequence[int], expected: Sequence[int | None], where: str, layout: str) -> None:
    """``ValueError`` at ``where`` unless ``shape`` matches ``expected`` (None: any size) of ``layout``."""
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        want = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{where}: expected shape {layout} = {want}, got {tuple(shape)}")


def to_complex64(array: np.ndarray, where: str) -> np.ndarray:
    """``array`` as complex64; ``ValueError`` at ``where`` for non-numeric or integer dtypes."""
    if not (np.iscomplexobj(array) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{where}: expected complex (or real floating) values, got dtype {array.dtype}")
    return np.asarray(array, dtype=np.complex64)


def subject_stem(filename: str) -> str:
    """Subject name of a CSV ``filename`` entry, cut at its first dot like the original loader (``a.h5`` -> ``a``)."""
    return str(filename).strip().split(".")[0]

# ----------------------------------------------------------------------------------------------- CSV
@dataclass(frozen=True)
class SubjectRow:
    """One row of a split CSV: ``filename,nFE,nPE,COIL_DIM,TIME_DIM,SLICE_DIM``.

    Attributes:
        filename: subject name (the file stem used in the data file names).
        nx: nFE, readout size X.
        ny: nPE, phase-encoding size Y.
        nc: COIL_DIM, number of coils C.
        nt: TIME_DIM, number of frames T.
        slices: SLICE_DIM, number of slices S.
        line: line number in the CSV (1 = header), 0 when not read from a file.
    """

    filename: str
    nx: int
    ny: int
    nc: int
    nt: int
    slices: int
    line: int = 0

    @property
    def name(self) -> str:
        return subject_stem(self.filename)

    def as_csv(self) -> list[Any]:
        return [self.filename, self.nx, self.ny, self.nc, self.nt, self.slices]


def write_dataset_csv(path: PathLike, rows: Iterable[SubjectRow]) -> None:
    """Writes a split CSV with the original header, atomically.

    Args:
        path: destination (e.g. ``train.csv``).
        rows: one :class:`SubjectRow` per subject.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow(row.as_csv())
    atomic_write_text(path, buffer.getvalue())


def read_dataset_csv(path: PathLike) -> list[SubjectRow]:
    """Reads a split CSV (the six original columns in any order; extra columns, e.g. a pandas index, are ignored).

    Args:
        path: CSV file.

    Returns:
        list of :class:`SubjectRow` (may be empty).

    Raises:
        FileNotFoundError: missing file.
        ValueError: missing columns, a short row, a non-integer or non-positive size, an empty or duplicated name.
    """
    path = require_file(path, "dataset CSV")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the CSV ({err})") from err
    table = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not table:
        raise ValueError(f"{path}: empty CSV, expected the header {','.join(CSV_HEADER)}")
    header = [h.strip() for h in table[0]]
    missing = [h for h in CSV_HEADER if h not in header]
    if missing:
        raise ValueError(f"{path}: header lacks column(s) {missing}; expected {','.join(CSV_HEADER)}, got {header}")
    index = {h: header.index(h) for h in CSV_HEADER}
    rows, seen = [], {}
    for line_no, cells in enumerate(table[1:], start=2):
        if len(cells) < len(header):
            raise ValueError(f"{path}: line {line_no} has {len(cells)} fields, the header has {len(header)}")
        name = cells[index["filename"]].strip()
        if not subject_stem(name):
            raise ValueError(f"{path}: line {line_no}: empty filename")
        values = []
        for field in CSV_HEADER[1:]:
            raw = cells[index[field]].strip()
            try:
                number = float(raw)
            except ValueError:
                number = float("nan")
            if not np.isfinite(number) or number != int(number) or number < 1:
                raise ValueError(f"{path}: line {line_no} ({name}): {field}={raw!r} is not a positive integer")
            values.append(int(number))
        stem = subject_stem(name)
        if stem in seen:
            raise ValueError(f"{path}: line {line_no}: subject {stem!r} already listed on line {seen[stem]}")
        seen[stem] = line_no
        rows.append(SubjectRow(name, *values, line=line_no))
    return rows


def resolve_split_csv(root: Path, csv_path: PathLike) -> Path:
    """The split CSV: as given, or inside ``root`` when a relative path does not exist as given."""
    csv_path = Path(csv_path)
    if not csv_path.is_absolute() and not csv_path.exists():
        csv_path = root / csv_path
    return csv_path
