"""A catalogue of bad inputs to ``metaunsup cluster`` and ``metaunsup report``.

Every case runs through the command line and must end with exit status 2 and exactly one line
on stderr that names the problem (and, where there is one, the fix), no traceback, and no
output file left behind (not even a partial or temporary one).
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaunsup.app.cli import main
from tests.helpers.estimators import conv_checkpoint, maml_checkpoint, train_mlp_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "conv": conv_checkpoint(folder / "conv.safetensors"),
        "mlp": train_mlp_checkpoint(folder / "mlp.safetensors", steps=2),
        "maml": maml_checkpoint(folder / "maml.safetensors"),
    }


class Marker:
    """Unpickling this object creates the file ``path``: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# ------------------------------------------------------------------------- input builders
def table(rows: int = 30, cols: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, cols))


def npy(array: np.ndarray, name: str = "x.npy") -> Callable[[Path], str]:
    def make(d: Path) -> str:
        np.save(d / name, array, allow_pickle=True)
        return str(d / name)

    return make


def text(content: str, name: str = "x.csv") -> Callable[[Path], str]:
    def make(d: Path) -> str:
        (d / name).write_text(content)
        return str(d / name)

    return make


def image_folder(*sizes: tuple[int, int], broken: bool = False) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        folder = d / "images"
        folder.mkdir()
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(np.full((h, w), 40 * i % 256, dtype=np.uint8)).save(
                folder / f"im{i}.png"
            )
        if broken:
            (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
        return str(folder)

    return make


@dataclass
class Case:
    """``argv`` may name ``{input}``, ``{dir}``, ``{conv}``, ``{mlp}``, ``{maml}`` and
    ``{file}`` (a file written by ``extra``)."""

    id: str
    make_input: Callable[[Path], str]
    argv: list[str]
    message: str
    extra: Callable[[Path, dict[str, Path]], str] | None = None


def _truncated(d: Path, models: dict[str, Path]) -> str:
    data = models["mlp"].read_bytes()
    (d / "cut.safetensors").write_bytes(data[: len(data) // 2])
    return str(d / "cut.safetensors")


def _other_architecture(d: Path, _models: dict) -> str:
    """A checkpoint whose config says MLP(64 -> 32) but whose weights are MLP(64 -> 16)."""
    from metaunsup.checkpoint import save_checkpoint
    from metaunsup.learners import MetaKMeansLearner
    from metaunsup.nets import MLP

    learner = MetaKMeansLearner(MLP(64, n_way=None, hidden=(16,)))
    config = learner.config()
    config["net"]["hidden"] = [32]
    tensors = {f"model.{k}": v for k, v in learner.state_dict().items()}
    save_checkpoint(d / "other.safetensors", tensors, {"kind": "model", "learner": config})
    return str(d / "other.safetensors")


def _pickled(d: Path, _models: dict) -> str:
    (d / "model.safetensors").write_bytes(pickle.dumps(Marker(str(d / "UNPICKLED")), protocol=4))
    return str(d / "model.safetensors")


def _torch_save(d: Path, _models: dict) -> str:
    torch.save({"weight": torch.zeros(3)}, d / "model.pt")
    return str(d / "model.pt")


def _random_bytes(d: Path, _models: dict) -> str:
    (d / "r.safetensors").write_bytes(b"\x07" * 64)
    return str(d / "r.safetensors")


OUT = ["--out", "{dir}/labels.csv"]
CASES = [
    Case("empty-csv", text(""), ["--k", "2", *OUT], "the file is empty"),
    Case("empty-npy", npy(np.zeros((0, 3))), ["--k", "2", *OUT], "the array is empty"),
    Case("header-only-csv", text("a,b,c\n"), ["--k", "2", *OUT], "only a header row, no data"),
    Case(
        "non-numeric-cell",
        text("a,b\n1,2\n3,x\n4,5\n"),
        ["--k", "2", *OUT],
        "row 3, column 2 ('b'): 'x' is not a number",
    ),
    Case("nan-in-csv", text("1,2\n3,nan\n4,5\n"), ["--k", "2", *OUT], "NaN or infinite value"),
    Case(
        "inf-in-npy",
        npy(np.array([[1.0, np.inf], [2.0, 3.0], [4.0, 5.0]])),
        ["--k", "2", *OUT],
        "remove or impute them first",
    ),
    Case("ragged-csv", text("1,2,3\n4,5\n"), ["--k", "2", *OUT], "row 2 has 2 columns, expected 3"),
    Case(
        "one-row",
        text("1,2,3\n"),
        ["--k", "1", *OUT],
        "got 1 sample (shape (1, 3)); clustering needs at least 2",
    ),
    Case("k-zero", npy(table()), ["--k", "0", *OUT], "0 clusters is not possible"),
    Case("k-negative", npy(table()), ["--k", "-3", *OUT], "give an integer >= 1 or 'auto'"),
    Case("k-not-a-number", npy(table()), ["--k", "ten", *OUT], "'ten' is not a number of clusters"),
    Case("k-missing", npy(table()), OUT, "Missing option '--k'"),
    Case("k-more-than-rows", npy(table(12)), ["--k", "13", *OUT], "--k 13 is more than the 12"),
    Case("auto-k-two-rows", npy(table(2)), ["--k", "auto", *OUT], "choosing k needs at least 3"),
    Case("missing-input", lambda d: str(d / "nope.csv"), ["--k", "2", *OUT], "no such file"),
    Case("unsupported-type", text("1,2\n", "x.txt"), ["--k", "2", *OUT], "unsupported file type"),
    Case(
        "object-npy",
        npy(np.array([{"a": 1}, {"b": 2}], dtype=object)),
        ["--k", "2", *OUT],
        "not loaded for safety",
    ),
    Case("1d-npy", npy(np.arange(10.0)), ["--k", "2", *OUT], "expected [n, d] features"),
    Case("no-images", lambda d: (d / "e").mkdir() or str(d / "e"), ["--k", "2"], "no images found"),
    Case(
        "unreadable-image",
        image_folder((8, 8), (8, 8), broken=True),
        ["--k", "2"],
        "cannot read image",
    ),
    Case(
        "image-sizes-differ",
        image_folder((8, 8), (9, 8)),
        ["--k", "2", *OUT],
        "all images must have the same size",
    ),
    Case(
        "image-size-vs-checkpoint",
        image_folder((28, 28), (28, 28), (28, 28)),
        ["--k", "2", "--checkpoint", "{conv}", *OUT],
        "expects 8x8 images (64 features) per example, but the data has 28x28 images",
    ),
    Case(
        "features-vs-checkpoint",
        npy(table(20, 30)),
        ["--k", "2", "--checkpoint", "{mlp}", *OUT],
        "expects 64 features per example, but the data has 30 features",
    ),
    Case(
        "truncated-checkpoint",
        npy(table()),
        ["--k", "2", "--checkpoint", "{file}", *OUT],
        "truncated",
        extra=_truncated,
    ),
    Case(
        "other-architecture",
        npy(table(20, 64)),
        ["--k", "2", "--checkpoint", "{file}", *OUT],
        "does not match the model architecture",
        extra=_other_architecture,
    ),
    Case(
        "pickle-as-checkpoint",
        npy(table()),
        ["--k", "2", "--checkpoint", "{file}", *OUT],
        "metaunsup never unpickles files",
        extra=_pickled,
    ),
    Case(
        "torch-save-as-checkpoint",
        npy(table()),
        ["--k", "2", "--checkpoint", "{file}", *OUT],
        "is a pickle/torch.save file",
        extra=_torch_save,
    ),
    Case(
        "random-bytes-checkpoint",
        npy(table()),
        ["--k", "2", "--checkpoint", "{file}", *OUT],
        "is not a safetensors checkpoint",
        extra=_random_bytes,
    ),
    Case(
        "unknown-checkpoint",
        npy(table()),
        ["--k", "2", "--checkpoint", "no-such-model", *OUT],
        "unknown checkpoint 'no-such-model'",
    ),
    Case(
        "non-clustering-checkpoint",
        npy(table(20, 64)),
        ["--k", "2", "--checkpoint", "{maml}", *OUT],
        "which does not cluster",
    ),
    Case(
        "out-in-missing-folder",
        npy(table()),
        ["--k", "2", "--out", "{dir}/no/such/labels.csv"],
        "does not exist; create it first",
    ),
    Case("out-is-a-folder", npy(table()), ["--k", "2", "--out", "{dir}"], "is a directory"),
    Case(
        "plot-in-missing-folder",
        image_folder((8, 8), (8, 8), (8, 8)),
        ["--k", "2", *OUT, "--plot", "{dir}/missing/m.png"],
        "does not exist; create it first",
    ),
    Case(
        "plot-of-a-table",
        npy(table()),
        ["--k", "2", *OUT, "--plot", "{dir}/m.png"],
        "--plot draws images",
    ),
    Case(
        "out-and-plot-same-file",
        image_folder((8, 8), (8, 8), (8, 8)),
        ["--k", "2", "--out", "{dir}/same", "--plot", "{dir}/same"],
        "name the same file",
    ),
    Case("threads-zero", npy(table()), ["--k", "2", "--threads", "0", *OUT], "--threads"),
    Case("seed-negative", npy(table()), ["--k", "2", "--seed", "-1", *OUT], "--seed"),
]


def _check_one_line_error(capsys, code: int, message: str) -> None:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("metaunsup: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err + out


def _files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cluster_bad_input(case: Case, tmp_path, capsys, models):
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = case.make_input(inputs)
    file = case.extra(inputs, models) if case.extra is not None else ""
    outputs = tmp_path / "out"
    outputs.mkdir()
    names = {"dir": str(outputs), "file": file, **{k: str(v) for k, v in models.items()}}
    argv = ["cluster", source, *(a.format(**names) for a in case.argv), "--meta-steps", "2"]
    before = _files_in(tmp_path)
    code = main(argv)
    _check_one_line_error(capsys, code, case.message)
    assert _files_in(tmp_path) == before  # nothing written, nothing half-written
    assert not (inputs / "UNPICKLED").exists()


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25


# ------------------------------------------------------------------------- report
def _good_report(path: Path) -> str:
    report = {
        "dataset": "digits", "split": "test", "task": "clustering", "n_way": 10, "k_shot": 20,
        "tasks": 5, "seed": 0,
        "results": [{"method": "kmeans", "acc": {"mean": 0.7, "ci95": 0.02}, "ms_per_task": 1.0}],
    }  # fmt: skip
    path.write_text(json.dumps(report))
    return str(path)


def _write(name: str, content: str) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        (d / name).write_text(content)
        return str(d / name)

    return make


def _write_bytes(name: str, content: bytes) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        (d / name).write_bytes(content)
        return str(d / name)

    return make


def _bad_score(d: Path) -> str:
    report = json.loads(Path(_good_report(d / "good.json")).read_text())
    report["results"] = [{"method": "m", "acc": 0.5}]
    return _write("score.json", json.dumps(report))(d)


REPORT_CASES = [
    ("missing-json", lambda d: str(d / "none.json"), "no such file"),
    ("invalid-json", _write("b.json", "{oops"), "not valid JSON"),
    ("not-an-object", _write("c.json", "[1, 2]"), "expected a JSON object"),
    ("missing-keys", _write("e.json", '{"results": []}'), "not an evaluation report (missing"),
    ("bad-score", _bad_score, "a score must be"),
    ("binary-file", _write_bytes("x.json", b"\xff\xfe\x00"), "not a text file"),
]


@pytest.mark.parametrize(
    ("name", "make", "message"), REPORT_CASES, ids=[c[0] for c in REPORT_CASES]
)
def test_report_bad_input(name, make, message, tmp_path, capsys):
    source = make(tmp_path)
    code = main(["report", source, "--out", str(tmp_path / "page")])
    _check_one_line_error(capsys, code, message)
    assert not (tmp_path / "page").exists()


def test_report_out_in_missing_folder(tmp_path, capsys):
    good = _good_report(tmp_path / "r.json")
    code = main(["report", good, "--out", str(tmp_path / "no" / "page")])
    _check_one_line_error(capsys, code, "does not exist; create it first")
    assert not (tmp_path / "no").exists()


def test_report_without_matplotlib_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    good = _good_report(tmp_path / "r.json")
    code = main(["report", good, "--out", str(tmp_path / "page")])
    _check_one_line_error(capsys, code, "report figures need matplotlib, which is not installed")
    assert not (tmp_path / "page").exists()
