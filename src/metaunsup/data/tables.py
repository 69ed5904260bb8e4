"""Tables as they come: CSV and Parquet files with numeric and text columns and missing cells.

:func:`read_table` reads a file with pyarrow (``pyarrow.csv`` / ``pyarrow.parquet``, the
``metaunsup[tables]`` extra) into a pandas ``DataFrame``; :class:`TableEncoder` turns it into the
numbers the models take, ``float32 [n, d]``, with **NaN for a missing cell** (the convention of
scikit-learn's estimators that take missing values natively), and says what it did to every
column (:class:`ColumnPlan`):

- a numeric (or boolean) column is standardised with the mean and standard deviation of its
  observed cells, and a constant column, which carries no information, is left out; but a
  table of numbers only whose columns' spreads are comparable (none more than ``SCALE_RATIO``
  times the median) is one kind of measurement (e.g. pixels) and is kept as it is, constant
  columns included (``standardize="auto"``; ``True``/``False`` decide for every table);
- a text column is *categorical*: one-hot encoded when it has at most ``max_onehot`` distinct
  values (each indicator scaled by ``1/√2``, so two rows of different categories are one unit
  apart, like one standard deviation of a numeric column), else replaced by each value's
  frequency in the table (standardised); a missing cell is missing in all its features;
- an obvious identifier is left out: a text column whose values are all distinct, or an
  integer column whose values are all distinct and that is a row counter (the values
  ``a, a+1, ...``) or is named like one (``id``, ``..._id``, ``index``, ``Unnamed: 0``);
- ``ignore=`` / ``columns=`` (``--ignore COL`` / ``--columns COL...``) leave columns out or keep
  only some, by name.

The CSV reader keeps the guarantees of :mod:`metaunsup.data.arrays`: the first row is a header
unless it holds numbers (a header ``0,1,...,d-1`` is a header; pandas' index column is refused);
rows of another length than the first, cells that are not numbers in a numeric column,
infinite values and values beyond float32's range are refused, naming the row and column (rows
count the file's lines, the header included) and the fix. Files must be UTF-8 text. An empty
cell, ``NA``, ``NaN``, ``null`` and ``N/A`` are missing. A column or a row with no observed
cell, and a text column of more than ``max_categories`` distinct values that is not an
identifier, are refused, naming it and how to leave it out.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaunsup.data.arrays import MAX_VALUE, header_row
from metaunsup.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TABLE_SUFFIXES",
    "ColumnPlan",
    "EncodedTable",
    "RawTable",
    "TableEncoder",
    "is_table",
    "load_table",
    "read_table",
]

#: File types :func:`read_table` reads.
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
#: Most distinct values of a one-hot encoded column (more: frequency encoding).
MAX_ONEHOT = 10
#: Largest ratio of a numeric column's standard deviation to the median one for which an
#: all-numeric table is kept as it is (``standardize="auto"``).
SCALE_RATIO = 10.0
#: Most distinct values of a text column that is not an identifier.
MAX_CATEGORIES = 10_000
#: Bytes checked for UTF-8 at a time.
_CHUNK = 1 << 24
#: Names of integer columns that are identifiers when their values are all distinct.
_ID_NAME = re.compile(r"^(id|index|key|row|unnamed: ?\d+)$|[_ ]id$", re.IGNORECASE)
#: Share of a text column's cells above which it is a numeric column whose other cells are typos.
_NUMERIC_SHARE = 0.5


def _need_pyarrow() -> Any:
    try:
        import pandas  # noqa: F401
        import pyarrow
    except ImportError:
        raise ConfigError(
            "reading CSV/Parquet tables needs pandas and pyarrow; install them with "
            "pip install 'metaunsup[tables]'"
        ) from None
    return pyarrow


@dataclass
class RawTable:
    """A table as read: ``frame`` (one pandas column per file column, missing cells as
    ``NaN``/``None``), where it came from, and ``first_row``, the file line of its first data
    row (2 after a header, 1 without; Parquet: 1), so that messages can name rows."""

    frame: pd.DataFrame
    source: str
    first_row: int = 1
    left_out: dict[str, str] = field(default_factory=dict)

    def row_of(self, index: int) -> int:
        """The file line of the data row at 0-based position ``index``."""
        return self.first_row + int(index)


# ----------------------------------------------------------------------------- reading
def _check_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8, naming the line of the first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: exc.start].count(b"\n")
                byte = chunk[exc.start]
                raise DataError(
                    f"{path}: line {line} is not UTF-8 text (byte 0x{byte:02x}); save the file "
                    "as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DataError(
                f"{path}: ends inside a UTF-8 character; save the file as UTF-8"
            ) from None


def _first_row(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if any(cell.strip() for cell in row):
                return [cell.strip() for cell in row]
    raise DataError(f"{path}: the file is empty")


def _read_csv(path: Path) -> RawTable:
    pa = _need_pyarrow()
    import pyarrow.csv as pcsv

    _check_utf8(path)
    first = _first_row(path)
    header = header_row(first, path)
    bad: list[Any] = []

    def invalid(row: Any) -> str:
        bad.append(row)
        return "error"

    read = pcsv.ReadOptions(use_threads=False, autogenerate_column_names=not header)
    parse = pcsv.ParseOptions(invalid_row_handler=invalid)
    convert = pcsv.ConvertOptions(strings_can_be_null=True)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        table = pcsv.read_csv(
            io.BytesIO(data), read_options=read, parse_options=parse, convert_options=convert
        )
    except pa.ArrowInvalid as exc:
        if bad:
            row = bad[0]
            where = "the header (row 1)" if header else "row 1"
            raise DataError(
                f"{path}: row {row.number} has {row.actual_columns} cells but {where} has "
                f"{row.expected_columns}; give every row as many cells as {where} (an empty "
                "cell is a missing value)"
            ) from None
        if "Empty CSV file" in str(exc):
            raise DataError(f"{path}: the file is empty") from None
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror}); check its permissions") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: only a header row, no data")
    frame = table.to_pandas()
    if not header:
        frame.columns = [f"column {i}" for i in range(1, frame.shape[1] + 1)]
    return RawTable(frame, str(path), first_row=2 if header else 1)


def _read_parquet(path: Path) -> RawTable:
    pa = _need_pyarrow()
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror}); check its permissions") from None
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).split(": ", 1)[-1] if str(path) in str(exc) else str(exc)
        raise DataError(
            f"{path}: not a readable Parquet file ({reason}); give a file written by pandas' "
            "to_parquet or pyarrow, or a .csv"
        ) from None
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows")
    return RawTable(table.to_pandas(), str(path), first_row=1)


def _select(raw: RawTable, ignore: Sequence[str], columns: Sequence[str] | None) -> RawTable:
    names = [str(c) for c in raw.frame.columns]
    raw.frame.columns = names
    for option, asked in (("--ignore", ignore), ("--columns", columns or ())):
        unknown = [c for c in asked if c not in names]
        if unknown:
            raise ConfigError(
                f"{option} {unknown[0]!r}: {raw.source} has no such column; its columns are "
                f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}"
            )
    keep = [c for c in names if c not in set(ignore) and (columns is None or c in set(columns))]
    for c in names:
        if c not in keep:
            raw.left_out[c] = "--ignore" if c in set(ignore) else "not in --columns"
    if not keep:
        raise ConfigError(f"{raw.source}: no column is left to use; keep at least one")
    raw.frame = raw.frame[keep]
    return raw


def read_table(
    path: str | Path, *, ignore: Sequence[str] = (), columns: Sequence[str] | None = None
) -> RawTable:
    """Read a ``.csv`` or ``.parquet`` file (see the module docstring); ``ignore`` leaves the
    named columns out, ``columns`` keeps only the named ones."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a .csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        raw = _read_parquet(path)
    else:
        raise DataError(f"{path}: unsupported table type; use a .csv or .parquet file")
    return _select(raw, ignore, columns)


# ----------------------------------------------------------------------------- encoding
@dataclass
class ColumnPlan:
    """What was done to one column: ``kind`` (``numeric``, ``one-hot``, ``frequency``, or
    ``left out``), a human-readable ``detail``, the features it became, its missing cells and
    what is needed to encode new rows the same way (``center``, ``scale``, ``categories``,
    ``frequencies``)."""

    name: str
    kind: str
    detail: str
    features: list[str] = field(default_factory=list)
    missing: int = 0
    center: float = 0.0
    scale: float = 1.0
    categories: list[str] = field(default_factory=list)
    frequencies: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the column, what was done, its missing cells."""
        miss = f"; {self.missing} missing" if self.missing else ""
        return f"{self.name}: {self.kind} ({self.detail}){miss}"


@dataclass
class EncodedTable:
    """The encoded table: ``x`` ``float32 [n, d]`` (NaN = missing), the name of each feature,
    the plan of every column (in file order) and where it came from."""

    x: np.ndarray
    feature_names: list[str]
    columns: list[ColumnPlan]
    source: str
    first_row: int = 1

    def row_name(self, index: int) -> str:
        """``"row <line>"``: the file line of the data row at 0-based position ``index``."""
        return f"row {self.first_row + int(index)}"

    def original_units(self, feature: str, value: float) -> str:
        """An encoded ``value`` of ``feature`` in the column's own units: a number for a
        numeric or frequency column, the share of rows for a one-hot feature."""
        for plan in self.columns:
            if feature in plan.features:
                if plan.kind == "one-hot":
                    return f"{value / np.sqrt(0.5):.0%}"
                return f"{value * plan.scale + plan.center:.4g}"
        return f"{value:.4g}"

    @property
    def missing_share(self) -> float:
        """Share of the encoded cells that are missing."""
        return float(np.isnan(self.x).mean()) if self.x.size else 0.0


def _numbers(values: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(values, errors="coerce")


def _is_identifier(name: str, values: pd.Series, text: bool) -> bool:
    observed = values.dropna()
    if len(observed) < 2 or observed.nunique() != len(values):
        return False
    if text:
        return True
    numbers = observed.to_numpy()
    if not np.all(np.equal(np.mod(numbers, 1), 0)):
        return False
    ordered = np.sort(numbers)
    return bool(_ID_NAME.search(name)) or bool(np.all(np.diff(ordered) == 1))


class TableEncoder:
    """Turns a :class:`RawTable` into numbers (see the module docstring); ``fit_transform``
    learns the plan from the table, ``transform`` encodes more rows the same way."""

    def __init__(
        self,
        max_onehot: int = MAX_ONEHOT,
        max_categories: int = MAX_CATEGORIES,
        standardize: bool | str = "auto",
    ) -> None:
        if standardize not in (True, False, "auto"):
            raise ConfigError(f"standardize must be True, False or 'auto', got {standardize!r}")
        self.max_onehot, self.max_categories = max_onehot, max_categories
        self.standardize = standardize
        self.plans: list[ColumnPlan] = []

    def fit_transform(self, raw: RawTable) -> EncodedTable:
        """Learn the plan of every column from ``raw`` and encode it."""
        frame = raw.frame
        if len(frame) < 2:
            raise DataError(
                f"{raw.source}: only {len(frame)} data row; clustering needs at least 2 rows"
            )
        self.plans = [self._plan(raw, str(c), frame[c]) for c in frame.columns]
        self.plans += [ColumnPlan(name, "left out", why) for name, why in raw.left_out.items()]
        if not self._standardizes(self.plans):
            self.plans = [_as_is(p) for p in self.plans]
        if not any(p.features for p in self.plans):
            raise DataError(
                f"{raw.source}: no column is left to use ("
                + "; ".join(p.describe() for p in self.plans[:5])
                + "); give a table with at least one informative column"
            )
        encoded = self.transform(frame, raw.source)
        encoded.first_row = raw.first_row
        _check_rows(encoded.x, raw)
        return encoded

    def transform(self, frame: pd.DataFrame, source: str = "table") -> EncodedTable:
        """Encode ``frame``'s rows with the fitted plan."""
        blocks, names = [], []
        for plan in self.plans:
            if not plan.features:
                continue
            if plan.name not in frame.columns:
                raise DataError(
                    f"{source}: has no column {plan.name!r}, which the table the encoding was "
                    f"learned from has; give it that column, or leave the column out of both "
                    f"with --ignore {_quote(plan.name)}"
                )
            blocks.append(_encode(plan, frame[plan.name]))
            names += plan.features
        x = np.concatenate(blocks, axis=1).astype(np.float32)
        return EncodedTable(x, names, list(self.plans), source)

    def _plan(self, raw: RawTable, name: str, values: pd.Series) -> ColumnPlan:
        missing = int(values.isna().sum())
        if missing == len(values):
            raise DataError(
                f"{raw.source}: column {name!r} has no value in any row; leave it out with "
                f"--ignore {_quote(name)} (Python: ignore=[{name!r}])"
            )
        kind = values.dtype.kind
        if kind in "biuf":
            return self._numeric_plan(raw, name, values.astype(np.float64), missing)
        if kind not in "OUSM" and str(values.dtype) not in ("string", "category", "str"):
            raise DataError(
                f"{raw.source}: column {name!r} holds {values.dtype} values, which are neither "
                f"numbers nor text; leave it out with --ignore {_quote(name)}"
            )
        return self._text_plan(raw, name, values, missing)

    def _standardizes(self, plans: list[ColumnPlan]) -> bool:
        """Whether the numeric columns are standardised: ``standardize=True``/``False``, or
        with ``"auto"`` when there are text columns (their features are on a unit scale) or
        the numeric columns' standard deviations differ by more than :data:`SCALE_RATIO`
        from their median (else they are one kind of measurement, e.g. pixels, whose relative
        spreads are information, and they are kept as they are, constant ones included)."""
        if self.standardize != "auto":
            return bool(self.standardize)
        if any(p.kind in ("one-hot", "frequency") for p in plans):
            return True
        spreads = [p.scale for p in plans if p.kind == "numeric"]
        return bool(spreads) and max(spreads) > SCALE_RATIO * float(np.median(spreads))

    def _numeric_plan(
        self, raw: RawTable, name: str, values: pd.Series, missing: int
    ) -> ColumnPlan:
        a = values.to_numpy(dtype=np.float64)
        _check_values(a, raw, name)
        if _is_identifier(name, values, text=False):
            return ColumnPlan(name, "left out", "an identifier: all values distinct", [], missing)
        observed = a[~np.isnan(a)]
        center, spread = float(observed.mean()), float(observed.std())
        if spread == 0:
            return ColumnPlan(name, "left out", f"constant ({center:g})", [], missing, center, 0.0)
        detail = f"standardised: mean {center:.4g}, sd {spread:.4g}"
        return ColumnPlan(name, "numeric", detail, [name], missing, center, spread)

    def _text_plan(self, raw: RawTable, name: str, values: pd.Series, missing: int) -> ColumnPlan:
        _check_mostly_numeric(raw, name, values)
        text = values.dropna().astype(str)
        if _is_identifier(name, values, text=True):
            return ColumnPlan(name, "left out", "an identifier: all values distinct", [], missing)
        counts = text.value_counts()
        if len(counts) == 1:
            return ColumnPlan(name, "left out", f"constant ({counts.index[0]!r})", [], missing)
        if len(counts) > self.max_categories:
            raise DataError(
                f"{raw.source}: column {name!r} has {len(counts)} distinct text values, too many "
                f"to use as categories (at most {self.max_categories}); leave it out with "
                f"--ignore {_quote(name)}, or group its values first"
            )
        if len(counts) <= self.max_onehot:
            cats = [str(c) for c in counts.index]
            features = [f"{name}={c}" for c in cats]
            detail = f"{len(cats)} categories, one feature each"
            return ColumnPlan(name, "one-hot", detail, features, missing, categories=cats)
        freq = (counts / len(text)).to_dict()
        f = text.map(freq).to_numpy(dtype=np.float64)
        center, spread = float(f.mean()), float(f.std())
        if spread == 0:
            detail = f"{len(counts)} values, each as frequent: no information"
            return ColumnPlan(name, "left out", detail, [], missing)
        detail = f"{len(counts)} categories, each replaced by its frequency (standardised)"
        return ColumnPlan(
            name, "frequency", detail, [name], missing, center, spread,
            frequencies={str(k): float(v) for k, v in freq.items()},
        )  # fmt: skip


def _as_is(plan: ColumnPlan) -> ColumnPlan:
    """A numeric column's plan without standardisation (constant columns kept too)."""
    if plan.kind == "numeric":
        return ColumnPlan(plan.name, "numeric", "as it is", [plan.name], plan.missing)
    if plan.kind == "left out" and plan.scale == 0.0:  # scale 0: a constant numeric column
        detail = f"as it is (constant, {plan.center:g})"
        return ColumnPlan(plan.name, "numeric", detail, [plan.name], plan.missing)
    return plan


def _encode(plan: ColumnPlan, values: pd.Series) -> np.ndarray:
    """The features ``[n, len(plan.features)]`` of one column (NaN where it is missing)."""
    missing = values.isna().to_numpy()
    if plan.kind == "one-hot":
        text = values.astype(str).to_numpy()
        out = np.stack([(text == c) for c in plan.categories], 1).astype(np.float64)
        out *= np.sqrt(0.5)
        out[missing] = np.nan
        return out
    if plan.kind == "frequency":
        a = values.astype(str).map(plan.frequencies).to_numpy(dtype=np.float64, copy=True)
        a[missing] = np.nan
    else:
        a = _numbers(values).to_numpy(dtype=np.float64)
    return ((a - plan.center) / plan.scale)[:, None]


def _check_values(a: np.ndarray, raw: RawTable, name: str) -> None:
    """Refuse infinite values and values beyond float32 in a numeric column."""
    col = list(raw.frame.columns).index(name) + 1
    with np.errstate(invalid="ignore"):
        inf = np.isinf(a)
        big = np.abs(a) > MAX_VALUE
    if inf.any():
        i = int(np.argmax(inf))
        raise DataError(
            f"{raw.source}: {int(inf.sum())} infinite value(s) in column {name!r}, the first at "
            f"row {raw.row_of(i)}, column {col}; replace them (an empty cell is a missing value)"
        )
    if big.any():
        i = int(np.argmax(big))
        raise DataError(
            f"{raw.source}: {int(big.sum())} value(s) too large for float32 (beyond "
            f"{MAX_VALUE:.1e}), the first at row {raw.row_of(i)}, column {col} ({a[i]:.3g}); "
            "rescale the data first"
        )


def _check_mostly_numeric(raw: RawTable, name: str, values: pd.Series) -> None:
    """A text column whose cells are nearly all numbers holds typos, not categories."""
    observed = values.dropna()
    numbers = _numbers(observed)
    share = float(numbers.notna().mean()) if len(observed) else 0.0
    if share > _NUMERIC_SHARE:
        first = int(np.flatnonzero(values.notna().to_numpy() & _numbers(values).isna())[0])
        col = list(raw.frame.columns).index(name) + 1
        raise DataError(
            f"{raw.source}: row {raw.row_of(first)}, column {col} ({name!r}): "
            f"{values.iloc[first]!r} is not a number, but {share:.0%} of the column's cells "
            "are; correct the cell, or leave it empty (a missing value)"
        )


def _check_rows(x: np.ndarray, raw: RawTable) -> None:
    empty = np.isnan(x).all(1)
    if empty.any():
        i = int(np.argmax(empty))
        raise DataError(
            f"{raw.source}: row {raw.row_of(i)} has no value in any used column "
            f"({int(empty.sum())} such row(s)); remove it, or fill in at least one cell"
        )


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[\w.=-]+", name) else repr(name)


def is_table(path: str | Path) -> bool:
    """Whether ``path`` names a file :func:`read_table` reads (by its suffix), and can: a
    ``.csv`` without pandas and pyarrow (the ``tables`` extra) is left to the numeric reader
    of :mod:`metaunsup.data.arrays`."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        return False
    if suffix == ".csv":
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("pandas", "pyarrow"))
    return True


def load_table(
    path: str | Path,
    *,
    ignore: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    max_onehot: int = MAX_ONEHOT,
) -> EncodedTable:
    """Read and encode a table in one call: :func:`read_table` then
    :meth:`TableEncoder.fit_transform` (``float32 [n, d]``, NaN = missing)."""
    return TableEncoder(max_onehot=max_onehot).fit_transform(
        read_table(path, ignore=ignore, columns=columns)
    )
