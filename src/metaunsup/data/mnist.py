"""MNIST (LeCun, Cortes & Burges): 70000 28x28 handwritten digits in the canonical IDX files.

The four files are looked for in ``<root>/mnist/``: ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.
The gzip files are checked against the canonical SHA-256 sums below (cached in-process per file
path, size and mtime, so a second load does not hash again). Uncompressed copies with the same
names minus ``.gz`` are accepted when no gzip file is there; they have no checksum, but their
structure (magic number, dimensions, length, label range) is validated like any other.

IDX format: a big-endian header ``0x00000803`` (images, then count, rows, cols) or ``0x00000801``
(labels, then count), followed by the ``uint8`` values. Splits: ``train`` (60000) and ``test``
(10000).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np
import torch

from metaunsup.data._files import check_sha256, fetch, missing_error, sha256_file
from metaunsup.data.base import Dataset
from metaunsup.data.registry import DatasetSpec
from metaunsup.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Canonical SHA-256 of each gzip file.
SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}

#: Where :func:`download` fetches the files from, in order of preference.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

#: split -> (image file stem, label file stem, number of examples)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
SPLITS = tuple(SPLIT_FILES)
CLASSES = tuple(str(d) for d in range(10))
FOLDER = "mnist"


def _read_bytes(path: Path) -> bytes:
    """The decompressed bytes of ``path`` (gzip when the name ends in ``.gz``)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def parse_idx(data: bytes, magic: int, source: str = "<bytes>") -> np.ndarray:
    """Parse ``uint8`` IDX ``data``: images ``[n, rows, cols]`` (magic 2051) or labels ``[n]``.

    Raises :class:`DataError` on a wrong magic number or a length that does not match the
    header's dimensions.
    """
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise ValueError(f"magic must be {IMAGES_MAGIC} or {LABELS_MAGIC}, not {magic}")
    ndim = 3 if magic == IMAGES_MAGIC else 1
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{source}: not an IDX {'image' if ndim == 3 else 'label'} file "
            f"(magic number {found}, expected {magic})"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DataError(
            f"{source}: header says {'x'.join(map(str, dims))} = {expected} values but the file "
            f"holds {len(data) - header}; it is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read and parse an IDX file, gzip-compressed when its name ends in ``.gz`` (no checksum)."""
    return parse_idx(_read_bytes(path), magic, str(path))


def _locate(folder: Path, stem: str) -> Path | None:
    """The gzip file for ``stem`` if present, else the uncompressed one, else ``None``."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_checked(path: Path, magic: int) -> np.ndarray:
    if path.name in SHA256:
        check_sha256(path, SHA256[path.name])
    return read_idx(path, magic)


def load(split: str, root: Path) -> Dataset:
    """The MNIST ``split``: ``x`` ``uint8 [n, 1, 28, 28]`` (ink bright), ``y`` ``int64 [n]``.

    ``root`` holds the ``mnist/`` folder. Raises :class:`DataError` for missing, corrupt or
    non-canonical files.
    """
    if split not in SPLIT_FILES:
        raise ConfigError(f"dataset 'mnist' has no split {split!r}; choose one of: {SPLITS}")
    folder = Path(root) / FOLDER
    image_stem, label_stem, n = SPLIT_FILES[split]
    image_path, label_path = _locate(folder, image_stem), _locate(folder, label_stem)
    if image_path is None or label_path is None:
        raise missing_error("mnist", folder, list(SHA256))
    images = _read_checked(image_path, IMAGES_MAGIC)
    labels = _read_checked(label_path, LABELS_MAGIC)
    if images.shape != (n, 28, 28):
        raise DataError(f"{image_path}: expected {n} images of 28x28, found {images.shape}")
    if labels.shape != (n,):
        raise DataError(f"{label_path}: expected {n} labels, found {labels.shape[0]}")
    if labels.max() > 9:
        raise DataError(f"{label_path}: label {int(labels.max())} out of range 0..9")
    logger.debug("loaded mnist/%s from %s", split, folder)
    return Dataset(
        name="mnist",
        split=split,
        x=torch.from_numpy(images.copy()).unsqueeze(1),
        y=torch.from_numpy(labels.astype(np.int64)),
        classes=CLASSES,
        info={"source": str(folder)},
    )


def verify(root: Path) -> list[str]:
    """One status line per expected file: ``ok``, ``missing`` or ``BAD`` with the reason."""
    folder = Path(root) / FOLDER
    lines: list[str] = []
    for name, expected in SHA256.items():
        path = folder / name
        raw = folder / name.removesuffix(".gz")
        if path.is_file():
            try:
                ok = sha256_file(path) == expected
            except OSError as exc:
                lines.append(f"BAD {path}: cannot read ({exc})")
                continue
            lines.append(f"ok {path} (sha256 ok)" if ok else f"BAD {path}: checksum mismatch")
        elif raw.is_file():
            magic = IMAGES_MAGIC if "images" in name else LABELS_MAGIC
            try:
                read_idx(raw, magic)
                lines.append(f"ok {raw} (uncompressed, structure ok; no checksum)")
            except DataError as exc:
                lines.append(f"BAD {raw}: {exc}")
        else:
            lines.append(f"missing {path}")
    return lines


def download(root: Path) -> None:
    """Fetch the four gzip files into ``<root>/mnist/`` (skipping good ones), checking SHA-256."""
    folder = Path(root) / FOLDER
    for name, expected in SHA256.items():
        dest = folder / name
        if dest.is_file() and sha256_file(dest) == expected:
            logger.info("%s already present and verified", dest)
            continue
        fetch([base + name for base in MIRRORS], dest, sha256=expected)


SPEC = DatasetSpec(
    name="mnist",
    description="MNIST handwritten digits, 28x28 (train 60000, test 10000), canonical IDX files",
    splits=SPLITS,
    load=load,
    verify=verify,
    download=download,
    needs_files=True,
)
