"""Dataset loaders on the real files (MNIST, Omniglot), the bundled digits, and users' arrays."""

from __future__ import annotations

import gzip
import io
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaunsup.data import _files, arrays, digits, load, mnist, names, omniglot, spec, verify
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError, DataError
from tests.helpers.data import needs_mnist, needs_omniglot

# --- registry -----------------------------------------------------------------------------------


def test_registry_names_and_specs() -> None:
    assert names() == ["digits", "mnist", "omniglot", "arrays"]
    for name in names():
        s = spec(name)
        assert s.name == name and s.splits


def test_registry_unknown_dataset_and_split() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load("nope", "train")
    with pytest.raises(ConfigError, match="no split 'val'"):
        load("digits", "val")
    with pytest.raises(ConfigError, match="no split 'train'"):
        load("omniglot", "train")
    with pytest.raises(ConfigError, match="needs the path"):
        load("arrays", "all")


# --- digits -------------------------------------------------------------------------------------


def test_digits_split_is_stratified_disjoint_and_deterministic() -> None:
    from sklearn.datasets import load_digits

    y = load_digits().target
    train, test = digits.split_indices(y)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(y.size))
    counts = np.bincount(y)
    assert np.array_equal(np.bincount(y[train]), (counts + 1) // 2)
    assert np.array_equal(np.bincount(y[test]), counts // 2)
    again = digits.split_indices(y)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    # Pinned so that a change of seed or of numpy's stream shows up here, not in results.
    assert train[:8].tolist() == _DIGITS_TRAIN_HEAD


_DIGITS_TRAIN_HEAD = [4, 6, 7, 8, 10, 11, 15, 25]


def test_digits_load() -> None:
    full = load("digits", "all")
    train, test = load("digits", "train"), load("digits", "test")
    assert len(full) == 1797 and len(train) + len(test) == 1797
    assert full.example_shape == (1, 8, 8) and full.x.dtype == torch.float32
    assert float(full.x.min()) == 0.0 and float(full.x.max()) == 1.0
    assert full.classes == tuple("0123456789")
    idx_train, _ = digits.split_indices(full.y.numpy())
    assert torch.equal(full.x[idx_train], train.x) and torch.equal(full.y[idx_train], train.y)
    assert verify("digits")[0].startswith("ok ")
    assert digits.SPEC.download is None and not digits.SPEC.needs_files


# --- mnist --------------------------------------------------------------------------------------

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_test(data_root: Path):
    return load("mnist", "test", data_root)


def _copy_mnist_test(data_root: Path, dest: Path) -> Path:
    folder = dest / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(data_root / "mnist" / name, folder / name)
    return folder


@needs_mnist
def test_mnist_test_split(mnist_test) -> None:
    ds = mnist_test
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.y.dtype == torch.int64 and ds.classes == tuple("0123456789")
    assert ds.class_counts().tolist() == MNIST_TEST_COUNTS
    assert int(ds.x.max()) == 255 and int(ds.x[:, :, 0, 0].max()) == 0  # ink bright, corners 0


@needs_mnist
def test_mnist_train_split(data_root: Path) -> None:
    ds = load("mnist", "train", data_root)
    assert ds.x.shape == (60000, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert int(ds.class_counts().sum()) == 60000 and int(ds.class_counts().min()) > 5000


@needs_mnist
def test_mnist_verify_ok(data_root: Path) -> None:
    lines = verify("mnist", data_root)
    assert len(lines) == 4
    assert all(line.startswith("ok ") and line.endswith("(sha256 ok)") for line in lines)


@needs_mnist
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_mnist_corrupt_file_is_refused(data_root: Path, tmp_path: Path, damage: str) -> None:
    folder = _copy_mnist_test(data_root, tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load("mnist", "test", tmp_path)
    lines = verify("mnist", tmp_path)
    assert f"BAD {path}: checksum mismatch" in lines
    assert sum(line.startswith("missing ") for line in lines) == 2


@needs_mnist
def test_mnist_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load("mnist", "train", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "mnist") in msg
    for name in mnist.SHA256:
        assert name in msg
    assert "metaunsup datasets --download mnist" in msg and "METAUNSUP_DATA" in msg
    assert all(line.startswith("missing ") for line in verify("mnist", tmp_path))


@needs_mnist
def test_mnist_uncompressed_files(data_root: Path, tmp_path: Path, mnist_test) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(data_root / "mnist" / f"{name}.gz", "rb") as f:
            (folder / name).write_bytes(f.read())
    ds = load("mnist", "test", tmp_path)
    assert torch.equal(ds.x, mnist_test.x) and torch.equal(ds.y, mnist_test.y)
    assert any("uncompressed, structure ok" in line for line in verify("mnist", tmp_path))

    labels = folder / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        load("mnist", "test", tmp_path)
    labels.write_bytes((2051).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        load("mnist", "test", tmp_path)


def test_idx_parser(tmp_path: Path) -> None:
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 3, 4))
    pixels = bytes(range(24))
    assert mnist.parse_idx(header + pixels, mnist.IMAGES_MAGIC).shape == (2, 3, 4)
    with pytest.raises(DataError, match="too short"):
        mnist.parse_idx(b"\x00\x00", mnist.LABELS_MAGIC)
    with pytest.raises(DataError, match="holds 23"):
        mnist.parse_idx(header + pixels[:-1], mnist.IMAGES_MAGIC)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(header + pixels)[:-10])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        mnist.read_idx(gz, mnist.IMAGES_MAGIC)


def test_sha256_cache_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    first = _files.sha256_file(path)
    assert _files.sha256_file(path) == first
    path.write_bytes(b"three")
    assert _files.sha256_file(path) != first


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(files: dict[str, bytes], calls: list[str]):
    """A stand-in for ``urlopen``: the first mirror is down, the others serve ``files``."""

    def urlopen(url: str, timeout: float | None = None) -> _FakeResponse:
        calls.append(url)
        if url.startswith(mnist.MIRRORS[0]):
            raise urllib.error.URLError("mirror down")
        name = url.rsplit("/", 1)[1]
        if name not in files:
            raise urllib.error.URLError("404")
        return _FakeResponse(files[name])

    return urlopen


@needs_mnist
def test_mnist_download_falls_back_and_verifies(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = {name: (data_root / "mnist" / name).read_bytes() for name in mnist.SHA256}
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _serve(served, calls))
    mnist.download(tmp_path)
    assert all(line.startswith("ok ") for line in verify("mnist", tmp_path))
    assert len(calls) == 8  # each file: first mirror fails, second serves
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(mnist.SHA256)
    calls.clear()
    mnist.download(tmp_path)  # already there and verified: nothing fetched
    assert calls == []


def test_download_with_bad_checksum_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = dict.fromkeys(mnist.SHA256, b"not mnist")
    monkeypatch.setattr(urllib.request, "urlopen", _serve(served, []))
    with pytest.raises(DataError, match=r"could not download .*checksum mismatch"):
        mnist.download(tmp_path)
    assert list(tmp_path.iterdir()) == []  # not even the empty mnist/ folder it made


# --- omniglot -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def omniglot_background(data_root: Path):
    return load("omniglot", "background", data_root)


@pytest.fixture(scope="module")
def omniglot_evaluation(data_root: Path):
    return load("omniglot", "evaluation", data_root)


@needs_omniglot
@pytest.mark.parametrize(
    ("split", "n_classes", "n_alphabets"), [("background", 964, 30), ("evaluation", 659, 20)]
)
def test_omniglot_npz_splits(request, split: str, n_classes: int, n_alphabets: int) -> None:
    ds = request.getfixturevalue(f"omniglot_{split}")
    assert ds.info["format"] == "npz"
    assert ds.x.shape == (n_classes * 20, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.n_classes == n_classes and len(set(ds.classes)) == n_classes
    assert ds.class_counts().tolist() == [20] * n_classes
    assert len(set(ds.groups)) == n_alphabets
    assert all(c.split("/")[0] == g for c, g in zip(ds.classes, ds.groups, strict=True))
    # Classes sorted by alphabet folder, then by character number.
    keys = [(c.split("/")[0], int(c.rsplit("character", 1)[1])) for c in ds.classes]
    assert keys == sorted(keys)
    # Ink bright on a dark background.
    assert int(ds.x.max()) == 255 and float(ds.x.float().mean()) < 40
    assert int(ds.x[:, :, 0, 0].float().mean()) == 0


@needs_omniglot
def test_omniglot_class_names(omniglot_background, omniglot_evaluation) -> None:
    assert omniglot_background.classes[0] == "Alphabet_of_the_Magi/character01"
    assert omniglot_background.classes[-1] == "Tifinagh/character55"
    assert omniglot_evaluation.classes[0] == "Angelic/character01"
    assert "Anglo-Saxon_Futhorc/character29" in omniglot_background.classes


@needs_omniglot
@pytest.mark.slow
def test_omniglot_full_evaluation_zip_matches_npz(
    data_root: Path, tmp_path: Path, omniglot_evaluation
) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    (folder / "images_evaluation.zip").symlink_to(data_root / "omniglot" / "images_evaluation.zip")
    ds = load("omniglot", "evaluation", tmp_path)
    assert ds.info["format"] == "zip"
    assert ds.classes == omniglot_evaluation.classes and ds.groups == omniglot_evaluation.groups
    assert torch.equal(ds.x, omniglot_evaluation.x) and torch.equal(ds.y, omniglot_evaluation.y)


# A few background characters, chosen so that id order and sorted-alphabet order differ.
_SUBSET = (
    "Anglo-Saxon_Futhorc/character03",
    "Alphabet_of_the_Magi/character20",
    "Tifinagh/character01",
    "Tifinagh/character10",
    "Korean/character07",
)


def _small_background_zip(data_root: Path, dest: Path) -> Path:
    """A zip in the standard layout holding only the :data:`_SUBSET` characters."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "images_background.zip"
    with (
        zipfile.ZipFile(data_root / "omniglot" / "images_background.zip") as src,
        zipfile.ZipFile(out, "w") as dst,
    ):
        for name in src.namelist():
            parts = name.split("/")
            if len(parts) == 4 and "/".join(parts[1:3]) in _SUBSET and parts[3]:
                dst.writestr(name, src.read(name))
    return out


@needs_omniglot
def test_omniglot_zip_and_folder_match_npz_on_subset(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, omniglot_background
) -> None:
    monkeypatch.setitem(omniglot.N_CHARACTERS, "background", len(_SUBSET))
    zip_path = _small_background_zip(data_root, tmp_path / "z" / "omniglot")
    from_zip = load("omniglot", "background", tmp_path / "z")
    assert from_zip.info["format"] == "zip"
    expected = omniglot_background.subset_classes(
        [omniglot_background.classes.index(c) for c in sorted(_SUBSET)]
    )
    assert from_zip.classes == tuple(sorted(_SUBSET)) == expected.classes
    assert from_zip.groups == expected.groups
    assert torch.equal(from_zip.x, expected.x) and torch.equal(from_zip.y, expected.y)

    folder_root = tmp_path / "f"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder_root / "omniglot")
    from_folder = load("omniglot", "background", folder_root)
    assert from_folder.info["format"] == "folder"
    assert torch.equal(from_folder.x, expected.x) and from_folder.classes == expected.classes
    assert any(line.startswith("ok ") for line in verify("omniglot", folder_root))


@needs_omniglot
def test_omniglot_zip_structure_errors(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(omniglot.N_CHARACTERS, "background", len(_SUBSET))
    good = _small_background_zip(data_root, tmp_path / "good")
    folder = tmp_path / "omniglot"
    folder.mkdir()
    bad = folder / "images_background.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist()[:-1]:  # drop one drawing
            dst.writestr(name, src.read(name))
    with pytest.raises(DataError, match="has 19 drawings, expected 20"):
        load("omniglot", "background", tmp_path)
    assert any(line.startswith(f"BAD {bad}") for line in verify("omniglot", tmp_path))

    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for i, name in enumerate(src.namelist()):
            dst.writestr(name, b"not a png" if i == 5 else src.read(name))
    with pytest.raises(DataError, match="cannot decode image"):
        load("omniglot", "background", tmp_path)

    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a readable zip"):
        load("omniglot", "background", tmp_path)


@needs_omniglot
def test_omniglot_npz_checksum_mismatch(data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    data = bytearray((data_root / "omniglot" / "images_evaluation.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "images_evaluation.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load("omniglot", "evaluation", tmp_path)
    assert f"BAD {folder / 'images_evaluation.npz'}: checksum mismatch" in verify(
        "omniglot", tmp_path
    )


@needs_omniglot
def test_omniglot_alphabet_table_builtin_matches_csv(data_root: Path, tmp_path: Path) -> None:
    for split in omniglot.SPLITS:
        from_csv = omniglot.alphabet_table(data_root / "omniglot", split)
        assert from_csv == list(omniglot.ALPHABETS[split])
        assert omniglot.alphabet_table(tmp_path, split) == from_csv  # no csv: built-in table


@needs_omniglot
def test_omniglot_verify_ok(data_root: Path) -> None:
    lines = verify("omniglot", data_root)
    assert lines and all(line.startswith("ok ") for line in lines)
    assert any("images_background.npz (sha256 ok)" in line for line in lines)


def test_omniglot_missing_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load("omniglot", "background", tmp_path)
    msg = str(info.value)
    assert "images_background.zip" in msg and str(tmp_path / "omniglot") in msg
    assert "metaunsup datasets --download omniglot" in msg
    lines = verify("omniglot", tmp_path)
    assert len(lines) == 2 and all(line.startswith("missing ") for line in lines)


@needs_omniglot
def test_omniglot_download_checks_structure(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(omniglot.N_CHARACTERS, "background", len(_SUBSET))
    monkeypatch.setitem(omniglot.N_CHARACTERS, "evaluation", len(_SUBSET))
    small = _small_background_zip(data_root, tmp_path / "src").read_bytes()
    served = {"images_background.zip": small, "images_evaluation.zip": b"garbage"}
    monkeypatch.setattr(urllib.request, "urlopen", _serve(served, []))
    with pytest.raises(DataError, match=r"images_evaluation.zip.*not a readable zip"):
        omniglot.download(tmp_path / "root")
    assert [p.name for p in (tmp_path / "root" / "omniglot").iterdir()] == ["images_background.zip"]


# --- arrays -------------------------------------------------------------------------------------


def test_arrays_npy(tmp_path: Path) -> None:
    table = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "t.npy", table)
    ds = load("arrays", "all", tmp_path / "t.npy")
    assert ds.x.dtype == torch.float32 and ds.x.shape == (4, 3)
    assert ds.y.tolist() == [0] * 4 and ds.classes == ("unlabelled",)
    assert ds.info["format"] == "npy"

    images = np.random.default_rng(0).integers(0, 256, (5, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "i.npy", images)
    ds, names_ = arrays.load_arrays(tmp_path / "i.npy")
    assert ds.x.dtype == torch.uint8 and ds.x.shape == (5, 1, 6, 7)
    assert np.array_equal(ds.x[:, 0].numpy(), images) and names_[0] == "row 1"

    np.save(tmp_path / "c.npy", np.zeros((2, 3, 4, 4), dtype=np.float16))
    assert load("arrays", "all", tmp_path / "c.npy").x.shape == (2, 3, 4, 4)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([{"a": 1}, None], dtype=object), "object array"),
        (np.zeros(5), "expected \\[n, d\\]"),
        (np.zeros((0, 3)), "empty"),
        (np.array(["a", "b"]).reshape(2, 1), "not numeric"),
        (np.array([[1.0, np.nan], [np.nan, 2.0]]), "2 NaN value\\(s\\).*\\(0, 1\\).*impute"),
        (np.array([[1.0, 2.0], [np.inf, 3.0]]), "1 infinite value\\(s\\).*\\(1, 0\\)"),
        (np.array([[[1.0, np.nan]]]), "1 NaN or infinite value\\(s\\).*\\(0, 0, 1\\)"),
        (np.array([[1e300]]), "too large for float32"),
    ],
)
def test_arrays_npy_errors(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DataError, match=message):
        load("arrays", "all", path)
    assert verify("arrays", path)[0].startswith(f"BAD {path}")


def test_arrays_npy_table_keeps_nan_as_missing(tmp_path: Path) -> None:
    table = np.arange(12, dtype=np.float64).reshape(4, 3)
    table[1, 2] = table[3, 0] = np.nan
    np.save(tmp_path / "t.npy", table)
    ds, _ = arrays.load_arrays(tmp_path / "t.npy")
    assert ds.info["missing"] == "2"
    assert np.array_equal(np.isnan(ds.x.numpy()), np.isnan(table))
    assert np.allclose(ds.x.numpy(), table, equal_nan=True)


def test_arrays_csv_with_and_without_header(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("1,2.5,-3\n4,5,6e1\n\n")
    ds = load("arrays", "all", plain)
    assert ds.x.tolist() == [[1.0, 2.5, -3.0], [4.0, 5.0, 60.0]] and "columns" not in ds.info

    header = tmp_path / "header.csv"
    header.write_text("\ufeffa, b ,c\n1,2,3\n")
    ds, names_ = arrays.load_arrays(header)
    assert ds.x.shape == (1, 3) and ds.info["columns"] == "a\nb\nc" and names_ == ["row 1"]
    assert verify("arrays", header) == [f"ok {header} (csv, 1x3 float32)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("x,y,z\n", "only a header"),
        ("x,y\n1,2\n3,abc\n", "row 3, column 2 \\('y'\\): 'abc' is not a number"),
        ("1,2\n3,\n", "row 2, column 2: '' is not a number"),
        ("1,two\n", "row 1, column 2: 'two'"),
        ("1,2\n3,4,5\n", "row 2 has 3 columns, expected 2"),
        (
            "a,b\n1,nan\n2,3\nnan,4\n",
            "2 NaN or infinite value\\(s\\), the first at row 2, column 2",
        ),
        ("1,2\n3,inf\n", "1 NaN or infinite value\\(s\\), the first at row 2, column 2"),
    ],
)
def test_arrays_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load("arrays", "all", path)


def _png(path: Path, size: tuple[int, int], mode: str = "L", value: int = 7) -> None:
    Image.new(mode, size, color=value if mode == "L" else (value, value, value)).save(path)


def test_arrays_image_folder(tmp_path: Path) -> None:
    _png(tmp_path / "b.png", (5, 4), value=200)
    _png(tmp_path / "a.jpg", (5, 4), mode="RGB", value=0)
    _png(tmp_path / "c.bmp", (5, 4), value=9)
    (tmp_path / "notes.txt").write_text("ignored")
    ds, names_ = arrays.load_arrays(tmp_path)
    assert names_ == ["a.jpg", "b.png", "c.bmp"]
    assert ds.x.shape == (3, 1, 4, 5) and ds.x.dtype == torch.uint8
    assert ds.x[1].unique().tolist() == [200] and ds.x[2].unique().tolist() == [9]  # not inverted
    assert ds.info["format"] == "images"


def test_arrays_image_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found"):
        load("arrays", "all", empty)

    sizes = tmp_path / "sizes"
    sizes.mkdir()
    _png(sizes / "a.png", (5, 4))
    _png(sizes / "b.png", (4, 5))
    with pytest.raises(DataError, match=r"b.png: image is 4x5 but a.png is 5x4"):
        load("arrays", "all", sizes)

    broken = tmp_path / "broken"
    broken.mkdir()
    _png(broken / "a.png", (5, 4))
    (broken / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"b.png: cannot read image"):
        load("arrays", "all", broken)


def test_arrays_other_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load("arrays", "all", tmp_path / "nothing.npy")
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(DataError, match="unsupported file type"):
        load("arrays", "all", tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="no split 'train'"):
        load("arrays", "train", tmp_path / "x.txt")
    assert verify("arrays", tmp_path / "nothing.npy") == [f"missing {tmp_path / 'nothing.npy'}"]


def test_a_dataset_registered_from_outside_loads_by_name():

    from metaunsup.data import DatasetSpec, names, register_dataset
    from metaunsup.data import registry as data_registry

    def load_pairs(split: str, root: Path) -> Dataset:
        x = torch.arange(12.0).view(6, 2)
        return Dataset(name="pairs", split=split, x=x, y=torch.arange(3).repeat(2),
                       classes=("a", "b", "c"))  # fmt: skip

    spec = DatasetSpec("pairs", "six points", ("all",), load_pairs, lambda root: ["ok"],
                       needs_files=False)  # fmt: skip
    register_dataset(spec)
    try:
        assert "pairs" in names() and load("pairs", "all").x.shape == (6, 2)
        with pytest.raises(ConfigError, match="registered already"):
            register_dataset(DatasetSpec("mnist", "x", ("all",), load_pairs, lambda r: []))
    finally:
        del data_registry._REGISTERED["pairs"]
    with pytest.raises(ConfigError, match="unknown dataset 'pairs'"):
        load("pairs", "all")


# --- the user's files: what was read silently wrong before ----------------------------------


def test_csv_header_of_column_numbers_is_a_header(tmp_path: Path) -> None:
    """``pandas.DataFrame(X).to_csv(index=False)`` writes ``0,1,...,d-1`` as the header: it is
    not a data row (150 rows give 150 labels, in the right order)."""
    x = np.random.default_rng(0).normal(size=(150, 4))
    path = tmp_path / "x.csv"
    path.write_text("0,1,2,3\n" + "".join(",".join(map(repr, map(float, r))) + "\n" for r in x))
    ds, names = arrays.load_arrays(path)
    assert ds.x.shape == (150, 4) and names[0] == "row 1"
    assert np.array_equal(ds.x.numpy(), x.astype(np.float32))
    assert ds.info["columns"] == "0\n1\n2\n3"


def test_csv_header_and_rows_of_other_widths_is_an_error_not_an_index_error(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2,x\n")
    with pytest.raises(DataError, match=r"the header \(row 1\) has 2 columns but row 2 has 3"):
        arrays.load_arrays(path)


def test_16_bit_images_keep_their_grey_levels(tmp_path: Path) -> None:
    """A 16-bit PNG of a digit reads as the 8-bit PNG of the same digit does (it used to be
    clipped to black and white)."""
    images = digits.load("test", Path()).x[:5, 0].numpy().astype(np.float64)
    images /= images.max()
    for bits, folder in ((8, tmp_path / "8"), (16, tmp_path / "16")):
        folder.mkdir()
        for i, im in enumerate(images):
            top = 2**bits - 1
            pixels = np.rint(im * top).astype(np.uint8 if bits == 8 else np.uint16)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    eight, _ = arrays.load_arrays(tmp_path / "8")
    sixteen, _ = arrays.load_arrays(tmp_path / "16")
    assert torch.equal(eight.x, sixteen.x)
    assert len(torch.unique(sixteen.x)) > 2  # grey levels, not black and white
