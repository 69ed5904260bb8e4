"""A user's own unlabelled data: a ``.npy`` file, a ``.csv`` table or a folder of images.

The result is a :class:`Dataset` with the single split ``all``, one class ``"unlabelled"`` and
``y`` all zeros. Use :func:`load_arrays` to also get a name per example (the image file names).

- ``.npy``: numeric (bool, integer or floating) arrays only, read with ``allow_pickle=False`` so an
  object array is refused instead of unpickled. ``[n, d]`` is a table (``float32``; NaN marks a
  missing cell, as in a CSV table, and ``info["missing"]`` counts them); ``[n, H, W]``
  becomes images ``[n, 1, H, W]``; ``[n, C, H, W]`` is kept. Image arrays of ``uint8`` stay
  ``uint8`` (intensities 0..255); any other image array becomes ``float32`` with its values as
  they are (no rescaling: the values are the user's).
- ``.csv``: comma-separated numbers, one example per row, read as ``float32 [n, d]``. The first
  row is a header when none of its cells is a number, or when it is exactly ``0,1,...,d-1``
  (what ``pandas.DataFrame(X).to_csv(index=False)`` writes); a first row that starts with an
  empty cell (pandas' header with its index column) is refused, since the index would be read
  as a feature. Column names go to ``info["columns"]``, one per line; the header must have as
  many columns as the rows.
- a folder: every ``png``/``jpg``/``jpeg``/``bmp``/``gif``/``tif``/``tiff`` file directly in it
  (sub-folders are not searched), in sorted name order, converted to 8-bit grayscale and returned
  as ``uint8 [n, 1, H, W]``; 16-bit images are scaled from 0..65535 to 0..255 (not clipped).
  Pixel values are kept as they are: there is no inversion, so the "ink bright" convention of
  the bundled datasets holds only if the user's images follow it
  (:class:`~metaunsup.MetaKMeans` warns when light-background images meet a checkpoint). All
  images must have the same size.

Anything that cannot be used raises :class:`DataError` naming the file and, where it applies, the
row and column or the first bad element: empty or unreadable files, header-only tables,
non-numeric cells, infinite values (and NaN outside a ``.npy`` table), values beyond float32's
range, object arrays,
unreadable images, mismatched image sizes, no images.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaunsup.data.base import Dataset
from metaunsup.data.registry import DatasetSpec
from metaunsup.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLITS = ("all",)
CLASSES = ("unlabelled",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


#: The largest magnitude a value may have: float32's, the precision the networks compute in.
MAX_VALUE = float(np.finfo(np.float32).max)


def check_value_range(
    values: np.ndarray, source: str, where: Callable[[tuple[int, ...]], str] | None = None
) -> None:
    """Raise :class:`DataError` when a value's magnitude exceeds float32's largest (about
    3.4e38): such values overflow in any computation on them. The message names the count, the
    first position (``where(index)`` words it, default ``"index (i, j)"``) and the fix.

    The one range check of the readers and of :class:`~metaunsup.MetaKMeans`.
    """
    if not np.issubdtype(values.dtype, np.floating) or values.dtype.itemsize <= 4:
        return  # integers and float16/32 cannot exceed it
    with np.errstate(invalid="ignore"):
        big = np.abs(values) > MAX_VALUE
    count = int(big.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(big)[0])
        at = where(first) if where is not None else f"index {first}"
        raise DataError(
            f"{source}: {count} value(s) too large for float32 (beyond {MAX_VALUE:.1e}), the "
            f"first at {at} ({values[first]:.3g}); rescale the data first"
        )


def _check_finite(values: np.ndarray, source: str, allow_nan: bool = False) -> None:
    """Raise :class:`DataError` naming the count and first position of the infinite values
    (and of NaN unless ``allow_nan``: a table's missing cells)."""
    if not np.issubdtype(values.dtype, np.floating):
        return
    bad = np.isinf(values) if allow_nan else ~np.isfinite(values)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "infinite" if allow_nan else "NaN or infinite"
        fix = "replace them by NaN (missing) or finite values" if allow_nan else "remove them"
        raise DataError(
            f"{source}: {count} {what} value(s), the first at index {first} "
            f"({values[first]}); {fix}"
        )


def _read_npy(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: holds Python objects (an object array), which are not loaded for "
                "safety; save a numeric array instead"
            ) from exc
        raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror}); check its permissions") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
    if not isinstance(a, np.ndarray):
        a.close()
        raise DataError(f"{path}: expected one array, found an archive of several (.npz?)")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: dtype {a.dtype} is not numeric (bool, integer or floating)")
    if a.ndim not in (2, 3, 4):
        raise DataError(
            f"{path}: array of shape {a.shape}; expected [n, d] features, [n, H, W] or "
            "[n, C, H, W] images"
        )
    if a.shape[0] == 0 or a.size == 0:
        raise DataError(f"{path}: the array is empty (shape {a.shape})")
    table = a.ndim == 2
    _check_finite(a, str(path), allow_nan=table)
    check_value_range(a, str(path))
    info = {"format": "npy"}
    if table and np.issubdtype(a.dtype, np.floating):
        info["missing"] = str(int(np.isnan(a).sum()))
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim == 4 and a.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(a))
    else:
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return x, info


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def header_row(first: list[str], path: Path) -> bool:
    """Whether the first CSV row is a header: no cell of it is a number, or it is the
    ``0,1,...,d-1`` that ``pandas.DataFrame(X).to_csv(index=False)`` writes. A header whose
    first cell is empty (what pandas writes with its index) is refused: the first column would
    be read as a feature."""
    if len(first) > 1 and first[0] == "" and all(first[1:]):
        raise DataError(
            f"{path}: row 1 starts with an empty cell, as pandas writes a header with an index "
            "column: the first column would be read as a feature; write the file with "
            "index=False (or remove its first column)"
        )
    if len(first) > 1 and first == [str(i) for i in range(len(first))]:
        return True
    return not any(_is_number(c) for c in first if c)


def _read_csv(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(i, row) for i, row in enumerate(csv.reader(f), start=1) if any(row)]
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror}); check its permissions") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV text ({exc})") from exc
    if not rows:
        raise DataError(f"{path}: the file is empty")
    info = {"format": "csv"}
    first = [c.strip() for c in rows[0][1]]
    if header_row(first, path):
        info["columns"] = "\n".join(first)
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: only a header row, no data")
    width = len(rows[0][1])
    if "columns" in info and len(first) != width:
        raise DataError(
            f"{path}: the header (row 1) has {len(first)} columns but row {rows[0][0]} has "
            f"{width}; give every row as many columns as the header"
        )
    values = np.empty((len(rows), width), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}: row {line} has {len(row)} columns, expected {width}")
        for c, cell in enumerate(row):
            try:
                values[r, c] = float(cell)
            except ValueError:
                header = f" ({first[c]!r})" if "columns" in info else ""
                raise DataError(
                    f"{path}: row {line}, column {c + 1}{header}: {cell!r} is not a number "
                    "(only comma-separated numeric tables are read, with at most one header "
                    "row)"
                ) from None
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {int(bad.sum())} NaN or infinite value(s), the first at row {rows[r][0]}, "
            f"column {c + 1}; remove or impute them first"
        )
    check_value_range(values, str(path), lambda at: f"row {rows[at[0]][0]}, column {at[1] + 1}")
    return torch.from_numpy(values.astype(np.float32)), info


#: The largest value of a 16-bit image (scaled to 255 on reading).
_MAX_16BIT = 65535


def _gray8(im: Any, path: Path) -> np.ndarray:
    """``uint8 [H, W]`` grey levels of an open image, keeping its full range: 16-bit images
    (modes ``I;16*``, and ``I`` as older Pillow opens 16-bit PNGs) are scaled from 0..65535
    to 0..255 (``convert("L")`` would clip them to black and white), floating-point ones from
    ``[0, 1]``; any other mode is converted to grey by Pillow."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() > _MAX_16BIT):
            raise DataError(
                f"{path}: 32-bit integer image with values outside 0..{_MAX_16BIT}; save it "
                "as an 8- or 16-bit image"
            )
        return np.rint(a * (255.0 / _MAX_16BIT)).astype(np.uint8)
    if mode == "F":
        f = np.asarray(im, dtype=np.float64)
        if f.size and not (np.isfinite(f).all() and f.min() >= 0.0 and f.max() <= 1.0):
            raise DataError(
                f"{path}: floating-point image with values outside [0, 1]; save it as an 8- "
                "or 16-bit image"
            )
        return np.rint(f * 255.0).astype(np.uint8)
    return np.asarray(im.convert("L"), dtype=np.uint8)


def _read_images(folder: Path) -> tuple[torch.Tensor, dict[str, str], list[str]]:
    from PIL import Image, UnidentifiedImageError

    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror}); check its "
                        "permissions") from None  # fmt: skip
    files = sorted(
        p
        for p in entries
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise DataError(
            f"{folder}: no images found ({', '.join(IMAGE_SUFFIXES)}; sub-folders are not searched)"
        )
    arrays: list[np.ndarray] = []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                gray = _gray8(im, p)
        except DataError:
            raise
        except PermissionError as exc:
            raise DataError(
                f"{p}: cannot read it ({exc.strerror}); check its permissions"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{p}: cannot read image ({exc})") from exc
        if arrays and gray.shape != arrays[0].shape:
            h0, w0 = arrays[0].shape
            raise DataError(
                f"{p}: image is {gray.shape[1]}x{gray.shape[0]} but {files[0].name} is "
                f"{w0}x{h0}; all images must have the same size"
            )
        arrays.append(gray)
    x = torch.from_numpy(np.stack(arrays)[:, None])
    return x, {"format": "images"}, [p.name for p in files]


def load_arrays(path: str | Path) -> tuple[Dataset, list[str]]:
    """Load a ``.npy``/``.csv`` file or an image folder; also return a name per example.

    The names are the image file names for a folder and ``"row <i>"`` (1-based, counting data
    rows) for a table. See the module docstring for shapes and dtypes.
    """
    path = Path(path).expanduser()
    names: list[str] | None = None
    if path.is_dir():
        x, info, names = _read_images(path)
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    elif path.suffix.lower() == ".npy":
        x, info = _read_npy(path)
    elif path.suffix.lower() == ".csv":
        x, info = _read_csv(path)
    else:
        raise DataError(
            f"{path}: unsupported file type; use a .npy or .csv file or an image folder"
        )
    if names is None:
        names = [f"row {i}" for i in range(1, x.shape[0] + 1)]
    info["source"] = str(path)
    logger.debug("loaded %s: %s %s", path, tuple(x.shape), x.dtype)
    dataset = Dataset(
        name="arrays",
        split="all",
        x=x,
        y=torch.zeros(x.shape[0], dtype=torch.int64),
        classes=CLASSES,
        info=info,
    )
    return dataset, names


def load(split: str, root: Path) -> Dataset:
    """The registry's entry point: ``root`` is the user's file or folder, ``split`` is ``all``.

    Datasets feed training and evaluation, whose tasks take no missing cells: a ``.npy`` table
    with NaN is refused here (``cluster`` and ``detect`` take it, through :func:`load_arrays`).
    """
    if split not in SPLITS:
        raise ConfigError(f"dataset 'arrays' has no split {split!r}; choose one of: {SPLITS}")
    dataset = load_arrays(root)[0]
    if int(dataset.info.get("missing", "0")):
        first = tuple(int(i) for i in torch.nonzero(torch.isnan(dataset.x))[0])
        raise DataError(
            f"{root}: {dataset.info['missing']} NaN value(s), the first at index {first}; "
            "training and evaluation tasks take no missing cells: impute them first (metaunsup "
            "cluster and detect take them as they are)"
        )
    return dataset


def verify(root: Path) -> list[str]:
    """One line: ``ok <path> (<format>, <shape> <dtype>)``, ``missing <path>`` or ``BAD``."""
    path = Path(root)
    if not path.exists():
        return [f"missing {path}"]
    try:
        ds = load("all", path)
    except DataError as exc:
        return [f"BAD {path}: {exc}"]
    shape = "x".join(str(s) for s in ds.x.shape)
    return [f"ok {path} ({ds.info['format']}, {shape} {str(ds.x.dtype).removeprefix('torch.')})"]


SPEC = DatasetSpec(
    name="arrays",
    description="your own unlabelled data: a .npy or .csv file, or a folder of images",
    splits=SPLITS,
    load=load,
    verify=verify,
    download=None,
    needs_files=True,
)
