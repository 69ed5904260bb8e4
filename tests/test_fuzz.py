"""Property-based fuzzing of what reads a user's input: the readers (CSV, ``.npy``, image
folders), the scikit-learn estimator and the run-config loader.

The property, for every generated input: either a specific
:class:`~metaunsup.errors.MetaUnsupError` (for the estimator also scikit-learn's ``ValueError``
or ``TypeError`` conventions) or a correct result (the right shape, dtype and values) — never
another exception, and no file left behind. Random shapes, dtypes, NaN/inf patterns, values
beyond float32, encodings, headers, truncated files, image modes and bit depths, and random
config tables.

Bounded and deterministic: every test has a fixed ``max_examples`` and ``derandomize=True`` (the
same examples on every run, so CI cannot flake), no example database, and no deadline (the
machine is shared). Together they add about half a minute to ``make test``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from metaunsup.data.arrays import load_arrays
from metaunsup.errors import MetaUnsupError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bounded(n: int):
    """Fixed-size, reproducible runs of ``n`` examples."""
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def read(folder: Path, target: Path):
    """``load_arrays(target)``: the dataset, or ``None`` after a :class:`MetaUnsupError`;
    any other exception fails the test, and so does a file created or removed."""
    before = _files(folder)
    try:
        result = load_arrays(target)[0]
    except MetaUnsupError as err:
        event(f"refused: {type(err).__name__}")
        result = None
    else:
        event("read")
    assert _files(folder) == before
    return result


# ----------------------------------------------------------------------------- CSV
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**6), 10**6),
    st.sampled_from([1e300, -1e300, 3.5e38, 0.0, -0.0]),
)
ENCODINGS = ("utf-8", "utf-8-sig", "latin-1", "utf-16")


CLEAN = st.floats(-1e6, 1e6, width=32)


def sometimes(draw, strategy, default):
    """``strategy``'s value one time in three, else ``default`` (most inputs stay usable, so
    the accepted branch is exercised as well as the refusals)."""
    return draw(strategy) if draw(st.integers(0, 2)) == 0 else default


@st.composite
def csv_tables(draw):
    """``(bytes, values [n, d], header, truncated)``: a numeric table as CSV text with a random
    header (none, names, pandas' ``0..d-1``, pandas' index column), encoding, odd values
    (NaN, inf, beyond float32) and truncation, each now and then."""
    n, d = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    values = np.array(draw(st.lists(CLEAN, min_size=n * d, max_size=n * d)), dtype=np.float64)
    values = values.reshape(n, d)
    for _ in range(sometimes(draw, st.integers(1, 3), 0)):
        values.flat[draw(st.integers(0, n * d - 1))] = draw(NUMBERS)
    header = draw(st.sampled_from(["none", "names", "numbers", "pandas-index"]))
    lines = []
    if header == "names":
        lines.append(",".join(draw(st.text("abcxyz_", min_size=1, max_size=4)) for _ in range(d)))
    elif header == "numbers":
        lines.append(",".join(str(i) for i in range(d)))
    elif header == "pandas-index":
        lines.append("," + ",".join(str(i) for i in range(d)))
    for r, row in enumerate(values):
        cells = [repr(float(v)) for v in row]
        lines.append((f"{r}," if header == "pandas-index" else "") + ",".join(cells))
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))
    data = text.encode(sometimes(draw, st.sampled_from(ENCODINGS), "utf-8"))
    cut = sometimes(draw, st.integers(0, max(0, len(data) - 1)), None)
    return (data if cut is None else data[:cut]), values, header, cut is not None


@bounded(60)
@given(csv_tables())
def test_csv_tables(table):
    data, values, header, truncated = table
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.csv"
        path.write_bytes(data)
        ds = read(Path(tmp), path)
    if ds is None:
        return
    x = ds.x.numpy()
    assert ds.x.dtype.is_floating_point and x.ndim == 2 and np.isfinite(x).all()
    if header == "pandas-index":
        pytest.fail("a header with pandas' index column must be refused")
    if not truncated and len(x) == len(values):  # a table read whole is read right
        assert np.array_equal(x, values.astype(np.float32))


@bounded(60)
@given(st.binary(max_size=200))
def test_csv_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.csv"
        path.write_bytes(data)
        ds = read(Path(tmp), path)
    if ds is not None:
        assert ds.x.ndim == 2 and bool(ds.x.isfinite().all())


# ----------------------------------------------------------------------------- .npy
DTYPES = st.sampled_from(
    ["bool", "int8", "uint8", "int32", "int64", "uint64", "float16", "float32", "float64",
     "complex64", "U3", "object"]
)  # fmt: skip


@st.composite
def npy_files(draw):
    """``(array, bytes, truncated)``: an ``.npy`` of a random dtype and shape (now and then an
    odd one: no or five dimensions, empty, complex, strings, objects), NaN/inf/huge values
    now and then, truncated now and then."""
    dtype = np.dtype(sometimes(draw, DTYPES, draw(st.sampled_from(["uint8", "float32"]))))
    odd_shape = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
    shape = sometimes(draw, odd_shape, draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=4)))
    if dtype.kind in "biuf":
        elements = None
        if dtype.kind == "f":
            width = 8 * min(dtype.itemsize, 8)
            odd = st.floats(allow_nan=True, allow_infinity=True, width=width)
            elements = sometimes(draw, st.just(odd), st.floats(-1e4, 1e4, width=width))
        a = draw(hnp.arrays(dtype, shape, elements=elements))
    else:
        a = np.full(shape, "ab" if dtype.kind == "U" else None, dtype=dtype)
    buffer = io.BytesIO()
    np.save(buffer, a, allow_pickle=True)
    data = buffer.getvalue()
    cut = sometimes(draw, st.integers(0, max(0, len(data) - 1)), None)
    return a, (data if cut is None else data[:cut]), cut is not None


@bounded(100)
@given(npy_files())
def test_npy_arrays(case):
    a, data, truncated = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        path.write_bytes(data)
        ds = read(Path(tmp), path)
    if ds is None:
        return
    assert not truncated and a.dtype.kind in "biuf" and a.ndim in (2, 3, 4) and a.size > 0
    assert np.isfinite(a).all() if a.dtype.kind == "f" else True
    expected = a.shape if a.ndim != 3 else (a.shape[0], 1, *a.shape[1:])
    assert tuple(ds.x.shape) == expected
    if a.ndim == 4 and a.dtype == np.uint8:
        assert np.array_equal(ds.x.numpy(), a)
    else:
        assert np.array_equal(ds.x.numpy(), a.astype(np.float32).reshape(expected))


# ----------------------------------------------------------------------------- image folders
MODES = {
    "L": np.uint8, "RGB": np.uint8, "RGBA": np.uint8, "1": bool, "P": np.uint8,
    "I;16": np.uint16, "I": np.int32, "F": np.float32,
}  # fmt: skip
FORMATS = {
    "png": ("L", "RGB", "RGBA", "1", "P", "I;16"),
    "bmp": ("L", "RGB", "1", "P"),
    "tif": ("L", "RGB", "I;16", "I", "F"),
    "gif": ("L", "P"),
    "jpg": ("L", "RGB"),
}


@st.composite
def image_folders(draw):
    """A list of ``(file name, bytes, (H, W), mode, pixels)``, some of them broken."""
    from PIL import Image

    files = []
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    for i in range(draw(st.integers(0, 4))):
        fmt = draw(st.sampled_from(sorted(FORMATS)))
        mode = draw(st.sampled_from(FORMATS[fmt]))
        other = st.tuples(st.integers(1, 6), st.integers(1, 6))
        hw = sometimes(draw, other, size)
        if mode == "F":
            pixels = np.array(draw(st.lists(st.floats(-1, 2, width=32), min_size=1, max_size=1)))
            pixels = np.full(hw, pixels[0], dtype=np.float32)
        else:
            top = {"I;16": 65535, "I": 70000, "1": 1}.get(mode, 255)
            pixels = np.full(hw, draw(st.integers(0, top)), dtype=np.int64)
        if mode in ("RGB", "RGBA"):
            im = Image.fromarray(np.stack([pixels.astype(np.uint8)] * len(mode), -1), mode)
        elif mode == "I;16":
            im = Image.fromarray(pixels.astype(np.uint16))
        elif mode == "1":
            im = Image.fromarray(pixels.astype(bool))
        elif mode == "P":
            im = Image.fromarray(pixels.astype(np.uint8)).convert("P")
        else:
            im = Image.fromarray(pixels.astype(MODES[mode]), mode)
        buffer = io.BytesIO()
        im.save(buffer, format={"jpg": "JPEG", "tif": "TIFF"}.get(fmt, fmt.upper()))
        data = buffer.getvalue()
        if draw(st.integers(0, 9)) == 0:  # now and then a truncated file
            data = data[: draw(st.integers(0, len(data) - 1))]
        files.append((f"im{i}.{fmt}", data, hw, mode, pixels))
    return files


@bounded(60)
@given(image_folders())
def test_image_folders(files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for name, data, *_ in files:
            (folder / name).write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about odd files
            ds = read(Path(tmp), folder)
    if ds is None:
        return
    assert ds.x.dtype.is_floating_point is False and str(ds.x.dtype) == "torch.uint8"
    assert tuple(ds.x.shape) == (len(files), 1, *files[0][2])
    for (_, _, _, mode, pixels), x in zip(files, ds.x.numpy(), strict=True):
        if mode == "I;16":  # full range kept: 0..65535 scaled to 0..255, not clipped
            assert int(x.max()) == round(int(pixels.max()) * 255 / 65535)
        elif mode in ("L", "P") and str(files[0][0]).endswith(("png", "bmp", "tif")):
            assert int(x.max()) == int(pixels.max())


# ----------------------------------------------------------------------------- the estimator
ENTRIES = st.one_of(
    st.floats(-1e3, 1e3),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e300, 0.0]),
)


@st.composite
def estimator_inputs(draw):
    """``(X, n_clusters)``: a small table, now and then empty, with odd entries (NaN, inf,
    1e300), identical rows, or an odd ``n_clusters`` (0, too many, a string, a float)."""
    n = sometimes(draw, st.integers(0, 2), draw(st.integers(3, 12)))
    d = sometimes(draw, st.just(0), draw(st.integers(1, 4)))
    base = draw(st.lists(st.floats(-1e3, 1e3), min_size=n * d, max_size=n * d))
    x = np.array(base, dtype=np.float64).reshape(n, d)
    for _ in range(sometimes(draw, st.integers(1, 2), 0)):
        if x.size:
            x.flat[draw(st.integers(0, x.size - 1))] = draw(ENTRIES)
    if n and sometimes(draw, st.just(True), False):
        x[:] = x[0]  # identical rows
    odd_k = st.one_of(st.integers(-1, 14), st.just("many"), st.just(2.5))
    k = sometimes(draw, odd_k, draw(st.one_of(st.integers(1, max(1, n)), st.just("auto"))))
    return x, k


@bounded(40)
@given(estimator_inputs())
def test_estimator(case):
    from metaunsup import MetaKMeans

    x, k = case
    with tempfile.TemporaryDirectory() as tmp:
        before, cwd = _files(Path(tmp)), os.getcwd()
        os.chdir(tmp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # identical rows warn, as scikit-learn does
                model = MetaKMeans(k, meta_steps=1, n_init=1, random_state=0).fit(x)
        except (MetaUnsupError, ValueError, TypeError) as err:
            event(f"refused: {type(err).__name__}")
            return
        finally:
            os.chdir(cwd)
        assert _files(Path(tmp)) == before
    event("clustered")
    assert np.isfinite(x).all() and np.abs(x).max(initial=0) < 3.5e38
    assert model.labels_.shape == (len(x),)
    assert model.labels_.min() >= 0 and model.labels_.max() < model.n_clusters_ <= len(x)
    assert np.isfinite(model.cluster_centers_).all()


# ----------------------------------------------------------------------------- run configs
#: A valid run config, and odd values for its keys.
BASE = {
    "name": "ok",
    "data": {"dataset": "digits", "split": "train", "val_fraction": 0.2},
    "task": {"kind": "fewshot", "n_way": 5, "k_shot": 1, "n_query": 3},
    "learner": {"name": "protonet"},
    "train": {"steps": 10, "lr": 0.001},
    "unsupervised": {"tasks": "cactus", "clusters": 10},
}
ODD = {
    "name": st.one_of(st.text(max_size=8), st.integers(), st.sampled_from(["../x", "..", "a/b"])),
    "data.dataset": st.sampled_from(["mnist", 3, None]),
    "data.val_fraction": st.one_of(st.floats(allow_nan=True), st.integers(-1, 2)),
    "data.val_by": st.sampled_from(["examples", "other"]),
    "data.bogus": st.booleans(),
    "task.kind": st.sampled_from(["clustering", "other"]),
    "task.n_way": st.integers(-2, 30),
    "task.k_shot": st.one_of(st.integers(-2, 30), st.text(max_size=2)),
    "task.n_query": st.integers(-2, 5),
    "learner": st.one_of(st.integers(), st.just({}), st.just({"name": 1})),
    "learner.name": st.sampled_from(["maml", "x"]),
    "train": st.one_of(st.integers(), st.lists(st.integers(), max_size=2)),
    "train.steps": st.one_of(st.integers(-2, 5), st.floats(), st.booleans()),
    "train.lr": st.floats(allow_nan=True, allow_infinity=True),
    "train.device": st.sampled_from(["cuda:1", "tpu"]),
    "train.optimizer": st.sampled_from(["sgd", "rmsprop"]),
    "unsupervised": st.one_of(st.none(), st.integers()),
    "unsupervised.tasks": st.sampled_from(["umtra", "dino"]),
    "unsupervised.clusters": st.integers(-1, 20),
    "unsupervised.features_from": st.text(max_size=4),
    "unsupervised.pretrain_lr": st.floats(allow_nan=True, allow_infinity=True),
    "extra": st.integers(),
}


@st.composite
def run_configs(draw):
    """A valid config with up to three keys given odd values (or removed)."""
    raw = json.loads(json.dumps(BASE))
    for dotted in draw(st.lists(st.sampled_from(sorted(ODD)), max_size=3, unique=True)):
        table, _, key = dotted.rpartition(".")
        target = raw.get(table) if table else raw
        if not isinstance(target, dict):
            continue
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(ODD[dotted])
    if raw.get("unsupervised") == BASE["unsupervised"] and draw(st.booleans()):
        del raw["unsupervised"]
    return raw


@bounded(150)
@example({**BASE, "train": {"lr": math.inf}})
@example({**BASE, "name": "../../x"})
@given(run_configs())
def test_config_tables(raw):
    from metaunsup.training.config import config_from_dict

    try:
        cfg = config_from_dict(raw)
    except MetaUnsupError as err:
        event(f"refused: {type(err).__name__}")
        return
    event("accepted")
    assert cfg.name == raw["name"] and "/" not in cfg.name and cfg.name not in (".", "..")
    assert cfg.task.n_way >= 1 and cfg.task.k_shot >= 1
    assert math.isfinite(cfg.train.lr) and cfg.train.lr > 0
    assert 0 <= cfg.data.val_fraction < 1


@bounded(60)
@given(st.one_of(st.text(max_size=120), st.binary(max_size=120).map(lambda b: b"name=" + b)))
def test_config_files(text):
    from metaunsup.training.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.toml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        with contextlib.suppress(MetaUnsupError):
            load_config(path, {"train.steps": 3})
        assert _files(Path(tmp)) == {"run.toml"}


def test_config_overrides_of_real_configs_round_trip():
    """Sanity check of the generator's target: the packaged config loads (so the fuzzing above
    can reach the accepted branch too)."""
    from metaunsup.training.config import load_config

    cfg = load_config("digits-unsup", {"train.steps": 3})
    assert cfg.train.steps == 3 and json.loads(json.dumps(cfg.to_dict()))["name"] == cfg.name
