"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015): 1623 handwritten characters × 20 drawings.

Each character of each of the 50 alphabets is a class. Splits: ``background`` (30 alphabets,
964 characters) and ``evaluation`` (20 alphabets, 659 characters), as in the original release.

Sources, looked for in ``<root>/omniglot/`` in this order (the first one present is used; a
present but corrupt file is an error, not a reason to fall back):

1. ``images_{split}.npz`` with ``images`` ``bool [n_char, 20, 105, 105]`` (True = white
   background) and ``labels``, characters in character-id order. Checked against the SHA-256
   sums in :data:`NPZ_SHA256`. The alphabet and ``characterNN`` folder of each character id come
   from ``alphabets.csv`` next to it when present, else from the built-in table
   :data:`ALPHABETS` (the same facts).
2. ``images_{split}.zip`` in the standard layout
   ``images_{split}/<Alphabet>/characterNN/XXXX_YY.png`` (1-bit PNGs). Only its structure is
   checked (character and drawing counts): re-encoded archives are as good as the original.
3. An extracted folder ``images_{split}/<Alphabet>/characterNN/*.png``.

Every source gives the same result: classes ordered by alphabet folder name (sorted), then by
character number, drawings by file name; classes named ``"Alphabet/characterNN"``; ``groups`` the
alphabet of each class. Images are inverted so ink is bright (255) and background 0, and shrunk
from 105x105 to 28x28 by averaging (torch's ``mode="area"``, i.e. adaptive average pooling:
each output pixel is the mean of a 4-5 pixel square window) before rounding to ``uint8``.

Loading takes seconds (for the zips, PNG decoding with Pillow dominates), so nothing is
cached between calls.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metaunsup.data._files import check_sha256, fetch, missing_error, sha256_file
from metaunsup.data.base import Dataset
from metaunsup.data.registry import DatasetSpec
from metaunsup.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FOLDER = "omniglot"
SPLITS = ("background", "evaluation")
N_CHARACTERS = {"background": 964, "evaluation": 659}
N_DRAWINGS = 20
SOURCE_SIZE = 105
IMAGE_SIZE = 28

#: SHA-256 of the npz conversions (``images_{split}.npz``).
NPZ_SHA256 = {
    "background": "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
    "evaluation": "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
}

#: The original archives :func:`download` fetches.
ZIP_URLS = {
    split: f"https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_{split}.zip"
    for split in SPLITS
}

#: ``(alphabet folder, number of characters)`` in character-id order, per split. Character ids
#: run from 1 (background) or 965 (evaluation) through the alphabets in this order.
ALPHABETS: dict[str, tuple[tuple[str, int], ...]] = {
    "background": (
        ("Arcadian", 26),
        ("Armenian", 41),
        ("Asomtavruli_(Georgian)", 40),
        ("Balinese", 24),
        ("Bengali", 46),
        ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 14),
        ("Braille", 26),
        ("Cyrillic", 33),
        ("Early_Aramaic", 22),
        ("Syriac_(Estrangelo)", 23),
        ("Anglo-Saxon_Futhorc", 29),
        ("Futurama", 26),
        ("Grantha", 43),
        ("Greek", 24),
        ("Gujarati", 48),
        ("Hebrew", 22),
        ("Japanese_(hiragana)", 52),
        ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 16),
        ("Malay_(Jawi_-_Arabic)", 40),
        ("Japanese_(katakana)", 47),
        ("Korean", 40),
        ("Latin", 26),
        ("Alphabet_of_the_Magi", 20),
        ("Mkhedruli_(Georgian)", 41),
        ("Burmese_(Myanmar)", 34),
        ("N_Ko", 33),
        ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 14),
        ("Sanskrit", 42),
        ("Tagalog", 17),
        ("Tifinagh", 55),
    ),
    "evaluation": (
        ("Angelic", 20),
        ("Atemayar_Qelisayer", 26),
        ("Atlantean", 26),
        ("Aurek-Besh", 26),
        ("Avesta", 26),
        ("Ge_ez", 26),
        ("Glagolitic", 45),
        ("Gurmukhi", 45),
        ("Kannada", 41),
        ("Keble", 26),
        ("Malayalam", 47),
        ("Manipuri", 40),
        ("Mongolian", 30),
        ("Old_Church_Slavonic_(Cyrillic)", 45),
        ("Oriya", 46),
        ("Syriac_(Serto)", 23),
        ("Sylheti", 28),
        ("Tengwar", 25),
        ("Tibetan", 42),
        ("ULOG", 26),
    ),
}

_CHARACTER_DIR = re.compile(r"character(\d+)")
_CONVERT_CHUNK = 2048

# A class is identified by (alphabet folder, character number); this is also its sort key.
_ClassKey = tuple[str, int]


def _class_name(key: _ClassKey) -> str:
    return f"{key[0]}/character{key[1]:02d}"


# --- pixels -------------------------------------------------------------------------------------


def to_uint8(white: np.ndarray) -> torch.Tensor:
    """``bool [m, 105, 105]`` (True = background) → ``uint8 [m, 1, 28, 28]``, ink bright.

    Averaging over windows (``mode="area"``) rather than sampling keeps thin strokes as grey
    levels instead of letting them alias away.
    """
    out = torch.empty((white.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for start in range(0, white.shape[0], _CONVERT_CHUNK):
        stop = start + _CONVERT_CHUNK
        ink = np.logical_not(white[start:stop]).view(np.uint8)  # uint8 → float is the fast cast
        ink = torch.from_numpy(ink).unsqueeze(1).to(torch.float32)
        small = F.interpolate(ink, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
        out[start:stop] = small.mul_(255.0).round_().to(torch.uint8)
    return out


def _decode_png(data: bytes, source: str) -> np.ndarray:
    """``bool [105, 105]`` (True = background) from the bytes of one drawing."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size = im.size
            white = (
                np.asarray(im, dtype=bool) if im.mode == "1" else np.asarray(im.convert("L")) > 127
            )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, zlib.error) as exc:
        raise DataError(f"{source}: cannot decode image ({exc})") from exc
    if size != (SOURCE_SIZE, SOURCE_SIZE):
        raise DataError(f"{source}: image is {size[0]}x{size[1]}, expected 105x105")
    return white


def _dataset(
    split: str,
    keys: list[_ClassKey],
    white: np.ndarray,
    source: str,
    fmt: str,
    order: list[int] | None = None,
) -> Dataset:
    """The :class:`Dataset` from ``white`` ``bool [n_char*20, 105, 105]``, classes in ``order``.

    ``keys[i]`` names the i-th class of ``white``; ``order`` (default: as they are) lists the
    classes of ``white`` in the order the dataset gets them.
    """
    n_char = len(keys)
    x = to_uint8(white)
    if order is not None:
        # Reorder after shrinking: the uint8 result is 14x smaller than the bool input.
        x = x.view(n_char, N_DRAWINGS, 1, IMAGE_SIZE, IMAGE_SIZE)[torch.tensor(order)]
        x = x.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        keys = [keys[i] for i in order]
    return Dataset(
        name="omniglot",
        split=split,
        x=x,
        y=torch.arange(n_char, dtype=torch.int64).repeat_interleave(N_DRAWINGS),
        classes=tuple(_class_name(k) for k in keys),
        groups=tuple(k[0] for k in keys),
        info={"source": source, "format": fmt},
    )


# --- npz ----------------------------------------------------------------------------------------


def alphabet_table(folder: Path, split: str) -> list[tuple[str, int]]:
    """``(alphabet, n_characters)`` in character-id order for ``split``.

    From ``folder/alphabets.csv`` when present (checked: contiguous ids, the right total), else
    from the built-in :data:`ALPHABETS`.
    """
    path = folder / "alphabets.csv"
    if not path.is_file():
        logger.debug("no %s; using the built-in alphabet table", path)
        return list(ALPHABETS[split])
    first_id = 1 if split == "background" else N_CHARACTERS["background"] + 1
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("set") == f"images_{split}"]
        rows.sort(key=lambda r: int(r["first_char_id"]))
        table: list[tuple[str, int]] = []
        next_id = first_id
        for r in rows:
            first, last = int(r["first_char_id"]), int(r["last_char_id"])
            if first != next_id or last < first:
                raise DataError(f"{path}: character ids of {r['alphabet']} do not follow on")
            table.append((r["alphabet"], last - first + 1))
            next_id = last + 1
    except (KeyError, ValueError, TypeError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot read the alphabet table ({exc!r})") from exc
    total = sum(n for _, n in table)
    if total != N_CHARACTERS[split]:
        raise DataError(f"{path}: lists {total} {split} characters, expected {N_CHARACTERS[split]}")
    return table


def _load_npz(path: Path, split: str) -> Dataset:
    check_sha256(path, NPZ_SHA256[split])
    n_char = N_CHARACTERS[split]
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            labels = z["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the npz file ({exc!r})") from exc
    shape = (n_char, N_DRAWINGS, SOURCE_SIZE, SOURCE_SIZE)
    if images.dtype != np.bool_ or images.shape != shape:
        raise DataError(f"{path}: images are {images.dtype} {images.shape}, expected bool {shape}")
    if labels.shape != (n_char, N_DRAWINGS) or not np.array_equal(
        labels, np.broadcast_to(np.arange(n_char)[:, None], labels.shape)
    ):
        raise DataError(f"{path}: labels are not the character index of each row")
    keys: list[_ClassKey] = []
    for alphabet, count in alphabet_table(path.parent, split):
        keys.extend((alphabet, number) for number in range(1, count + 1))
    order = sorted(range(n_char), key=keys.__getitem__)
    white = images.reshape(-1, SOURCE_SIZE, SOURCE_SIZE)
    return _dataset(split, keys, white, str(path), "npz", order=order)


# --- zip and folder -----------------------------------------------------------------------------


def _group(refs: Iterable[tuple[str, str, str, str]], split: str, source: str):
    """Group ``(alphabet, character dir, file name, ref)`` PNG entries into sorted classes.

    Returns ``(keys, refs per class)``, checking the structure: the expected number of
    characters, each with 20 drawings. Raises :class:`DataError` describing the first problem.
    """
    classes: dict[_ClassKey, list[tuple[str, str]]] = {}
    for alphabet, char_dir, file_name, ref in refs:
        m = _CHARACTER_DIR.fullmatch(char_dir)
        if m is None:
            continue
        classes.setdefault((alphabet, int(m.group(1))), []).append((file_name, ref))
    n_char = N_CHARACTERS[split]
    if len(classes) != n_char:
        raise DataError(
            f"{source}: found {len(classes)} characters, expected {n_char} for the {split} set "
            "(layout <Alphabet>/characterNN/*.png)"
        )
    keys = sorted(classes)
    for key in keys:
        if len(classes[key]) != N_DRAWINGS:
            raise DataError(
                f"{source}: {_class_name(key)} has {len(classes[key])} drawings, "
                f"expected {N_DRAWINGS}"
            )
    return keys, [[ref for _, ref in sorted(classes[k])] for k in keys]


def _read_classes(
    keys: list[_ClassKey],
    refs: list[list[str]],
    read: Callable[[str], bytes],
    split: str,
    source: str,
    fmt: str,
) -> Dataset:
    white = np.empty((len(keys) * N_DRAWINGS, SOURCE_SIZE, SOURCE_SIZE), dtype=bool)
    i = 0
    for drawings in refs:
        for ref in drawings:
            white[i] = _decode_png(read(ref), f"{source}: {ref}")
            i += 1
    return _dataset(split, keys, white, source, fmt)


def _zip_entries(zf: zipfile.ZipFile) -> list[tuple[str, str, str, str]]:
    out = []
    for name in zf.namelist():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-1].lower().endswith(".png") and "__MACOSX" not in parts:
            out.append((parts[-3], parts[-2], parts[-1], name))
    return out


def check_zip(path: Path, split: str) -> None:
    """Raise :class:`DataError` unless ``path`` is a zip with the layout of ``split`` (cheap)."""
    try:
        with zipfile.ZipFile(path) as zf:
            _group(_zip_entries(zf), split, str(path))
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from exc


def _load_zip(path: Path, split: str) -> Dataset:
    try:
        with zipfile.ZipFile(path) as zf:
            keys, refs = _group(_zip_entries(zf), split, str(path))

            def read(name: str) -> bytes:
                try:
                    return zf.read(name)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                    raise DataError(f"{path}: corrupt entry {name} ({exc})") from exc

            return _read_classes(keys, refs, read, split, str(path), "zip")
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from exc


def _folder_entries(folder: Path) -> list[tuple[str, str, str, str]]:
    return [
        (p.parent.parent.name, p.parent.name, p.name, str(p))
        for p in folder.glob("*/*/*")
        if p.suffix.lower() == ".png" and p.is_file()
    ]


def _load_folder(folder: Path, split: str) -> Dataset:
    keys, refs = _group(_folder_entries(folder), split, str(folder))

    def read(name: str) -> bytes:
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise DataError(f"{name}: cannot read ({exc})") from exc

    return _read_classes(keys, refs, read, split, str(folder), "folder")


# --- public -------------------------------------------------------------------------------------


def _sources(folder: Path, split: str) -> tuple[Path, Path, Path]:
    stem = f"images_{split}"
    return folder / f"{stem}.npz", folder / f"{stem}.zip", folder / stem


def load(split: str, root: Path) -> Dataset:
    """The Omniglot ``split``: ``x`` ``uint8 [n_char*20, 1, 28, 28]`` (ink bright), ``y`` ``int64``.

    ``y`` is the class (character) index; ``classes`` are ``"Alphabet/characterNN"``;
    ``groups`` the alphabet of each class. Raises :class:`DataError` when no source is present
    or the one used is corrupt.
    """
    if split not in SPLITS:
        raise ConfigError(f"dataset 'omniglot' has no split {split!r}; choose one of: {SPLITS}")
    folder = Path(root) / FOLDER
    npz, zip_path, extracted = _sources(folder, split)
    if npz.is_file():
        return _load_npz(npz, split)
    if zip_path.is_file():
        return _load_zip(zip_path, split)
    if extracted.is_dir():
        return _load_folder(extracted, split)
    raise missing_error(
        "omniglot",
        folder,
        [f"{zip_path.name}, or {npz.name}, or the extracted folder {extracted.name}/"],
    )


def verify(root: Path) -> list[str]:
    """One status line per source found (``ok`` / ``BAD``), or ``missing`` for a split with none."""
    folder = Path(root) / FOLDER
    lines: list[str] = []
    table = folder / "alphabets.csv"
    if table.is_file():
        try:
            for split in SPLITS:
                alphabet_table(folder, split)
            lines.append(f"ok {table} (alphabet table)")
        except DataError as exc:
            lines.append(f"BAD {table}: {exc}")
    for split in SPLITS:
        npz, zip_path, extracted = _sources(folder, split)
        found = False
        if npz.is_file():
            found = True
            try:
                ok = sha256_file(npz) == NPZ_SHA256[split]
                lines.append(f"ok {npz} (sha256 ok)" if ok else f"BAD {npz}: checksum mismatch")
            except OSError as exc:
                lines.append(f"BAD {npz}: cannot read ({exc})")
        if zip_path.is_file():
            found = True
            try:
                check_zip(zip_path, split)
                lines.append(
                    f"ok {zip_path} (structure ok: {N_CHARACTERS[split]} characters x "
                    f"{N_DRAWINGS} drawings; archive checksum not checked)"
                )
            except DataError as exc:
                lines.append(f"BAD {zip_path}: {exc}")
        if extracted.is_dir():
            found = True
            try:
                _group(_folder_entries(extracted), split, str(extracted))
                lines.append(f"ok {extracted}/ (structure ok)")
            except DataError as exc:
                lines.append(f"BAD {extracted}/: {exc}")
        if not found:
            lines.append(f"missing {zip_path} (or {npz.name}, or {extracted.name}/)")
    return lines


def download(root: Path) -> None:
    """Fetch the original ``images_{split}.zip`` archives into ``<root>/omniglot/``.

    A split that already has a usable zip is skipped. The archives have no published checksum,
    so each download is checked for structure before it is renamed into place.
    """
    folder = Path(root) / FOLDER
    for split in SPLITS:
        dest = folder / f"images_{split}.zip"
        if dest.is_file():
            try:
                check_zip(dest, split)
                logger.info("%s already present", dest)
                continue
            except DataError as exc:
                logger.warning("replacing %s: %s", dest, exc)
        fetch([ZIP_URLS[split]], dest, validate=functools.partial(check_zip, split=split))


SPEC = DatasetSpec(
    name="omniglot",
    description=(
        "Omniglot handwritten characters, 28x28 (background 964, evaluation 659 classes x 20)"
    ),
    splits=SPLITS,
    load=load,
    verify=verify,
    download=download,
    needs_files=True,
)
