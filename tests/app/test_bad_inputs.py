"""The catalogue of bad inputs: ``cluster``, ``detect``, ``evaluate``, ``train``, ``report``,
``datasets`` and the Python API.

Every command-line case must end with exit status 2 and exactly one line on stderr that names
the problem and the fix, no traceback, and no file changed or left behind (not even a partial or
temporary one); every Python case must raise the given :class:`~metaunsup.MetaUnsupError`
subclass, with nothing written either. Each case's actual message is also the one
``docs/errors.md`` shows: that page is generated from this catalogue by
``scripts/errors_page.py``, and :func:`test_case` fails when the page no longer says what the
case prints, so the page cannot drift from the code.

Some failures cannot be made for real in a test: the tests run as root, for whom a folder is
never read-only and a file never unreadable, so those cases patch ``os.access`` or the read
(marked "simulated"); a network failure patches ``urllib.request.urlopen``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import shlex
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from metaunsup.app.cli import main
from metaunsup.errors import CheckpointError, ConfigError, DataError, MetaUnsupError
from tests.helpers.estimators import conv_checkpoint, maml_checkpoint, train_mlp_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "errors.md"
COMMANDS = ("cluster", "detect", "evaluate", "train", "report", "datasets", "python")


# ----------------------------------------------------------------------------- the runner
@dataclass
class Ctx:
    """Where a case runs: ``inputs`` (what it reads), ``outputs`` (where it may write),
    ``data`` (a dataset folder), ``models`` (small checkpoints shared by all cases), ``file``
    (what ``extra`` made) and ``stack`` (patches that last for the case)."""

    root: Path
    models: dict[str, Path]
    stack: contextlib.ExitStack
    file: str = ""

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    @property
    def outputs(self) -> Path:
        return self.root / "out"

    @property
    def data(self) -> Path:
        return self.root / "data"


@dataclass
class Case:
    """One bad input.

    ``argv`` (command-line cases) may name ``{in}``, ``{out}``, ``{data}``, ``{file}`` and
    the models ``{conv}``, ``{mlp}``, ``{maml}``; ``call`` (Python cases, ``command="python"``)
    gets the :class:`Ctx` and must raise ``error``; ``code`` is how the page shows the call.
    ``make`` prepares the inputs (returning what ``{file}`` names, or ``None``).
    """

    id: str
    command: str
    message: str
    argv: list[str] = field(default_factory=list)
    make: Callable[[Ctx], str | None] | None = None
    call: Callable[[Ctx], Any] | None = None
    code: str = ""
    error: type[Exception] = MetaUnsupError


@cache
def catalogue_models(folder: str) -> dict[str, Path]:
    """The small checkpoints the cases use (built once per folder)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    torch_threads = torch.get_num_threads()
    try:
        return {
            "conv": conv_checkpoint(d / "conv.safetensors"),
            "mlp": train_mlp_checkpoint(d / "mlp.safetensors", steps=2),
            "maml": maml_checkpoint(d / "maml.safetensors"),
        }
    finally:
        torch.set_num_threads(torch_threads)


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes (and every folder)."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
    return out


def normalise(text: str, ctx: Ctx) -> str:
    """``text`` with this run's temporary paths replaced by ``IN``, ``OUT``, ``DATA`` and
    ``MODELS`` (the page shows the same message on every machine)."""
    models = str(next(iter(ctx.models.values())).parent)
    for path, name in ((ctx.inputs, "IN"), (ctx.outputs, "OUT"), (ctx.data, "DATA")):
        text = text.replace(str(path), name)
    return text.replace(models, "MODELS")


@dataclass
class Outcome:
    """What a case did: exit status (``None`` for Python cases), stdout, stderr lines, the
    exception raised by a Python case, whether files changed, and (paths normalised) the
    message and how the page shows the case."""

    code: int | None
    out: str
    lines: list[str]
    raised: BaseException | None
    changed: bool
    message: str
    shown: str


def run_case(case: Case, root: Path, models: dict[str, Path]) -> Outcome:
    """Run ``case`` in the empty folder ``root``; see :class:`Outcome`."""
    with contextlib.ExitStack() as stack:
        ctx = Ctx(root, models, stack)
        for folder in (ctx.inputs, ctx.outputs):
            folder.mkdir()
        ctx.file = (case.make(ctx) if case.make else None) or ""
        before = _snapshot(root)
        out, err = io.StringIO(), io.StringIO()
        code, raised = None, None
        names = {"in": ctx.inputs, "out": ctx.outputs, "data": ctx.data, "file": ctx.file,
                 **models}  # fmt: skip
        argv = [case.command, *(a.format(**names) for a in case.argv)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if case.call is not None:
                try:
                    case.call(ctx)
                except Exception as exc:
                    raised = exc
            else:
                code = main(argv)
        changed = _snapshot(root) != before
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    text = str(raised) if case.call is not None else (lines[0] if lines else "")
    command = case.code if case.call is not None else shlex.join(["metaunsup", *argv])
    return Outcome(
        code, out.getvalue(), lines, raised, changed, normalise(text, ctx), normalise(command, ctx)
    )


# ----------------------------------------------------------------------------- input builders
def table(rows: int = 30, cols: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, cols))


def npy(array: np.ndarray, name: str = "x.npy") -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        np.save(ctx.inputs / name, array, allow_pickle=True)
        return str(ctx.inputs / name)

    return make


def text(content: str, name: str = "x.csv") -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        (ctx.inputs / name).write_text(content)
        return str(ctx.inputs / name)

    return make


def raw(content: bytes, name: str) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        (ctx.inputs / name).write_bytes(content)
        return str(ctx.inputs / name)

    return make


def image_folder(*sizes: tuple[int, int], broken: bool = False) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        folder = ctx.inputs / "images"
        folder.mkdir()
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(np.full((h, w), 40 * i % 256, dtype=np.uint8)).save(
                folder / f"im{i}.png"
            )
        if broken:
            (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
        return str(folder)

    return make


def both(*makers: Callable[[Ctx], str | None]) -> Callable[[Ctx], str | None]:
    """Run several builders; ``{file}`` is what the first one that returns a path returns."""

    def make(ctx: Ctx) -> str | None:
        results = [m(ctx) for m in makers]
        return next((r for r in results if r), None)

    return make


class Marker:
    """Unpickling this object creates the file ``path``: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _truncated(ctx: Ctx) -> str:
    data = ctx.models["mlp"].read_bytes()
    (ctx.inputs / "cut.safetensors").write_bytes(data[: len(data) // 2])
    return str(ctx.inputs / "cut.safetensors")


def _other_architecture(ctx: Ctx) -> str:
    """A checkpoint whose config says MLP(64 -> 32) but whose weights are MLP(64 -> 16)."""
    from metaunsup.checkpoint import save_checkpoint
    from metaunsup.learners import MetaKMeansLearner
    from metaunsup.nets import MLP

    learner = MetaKMeansLearner(MLP(64, n_way=None, hidden=(16,)))
    config = learner.config()
    config["net"]["hidden"] = [32]
    tensors = {f"model.{k}": v for k, v in learner.state_dict().items()}
    save_checkpoint(ctx.inputs / "other.safetensors", tensors, {"kind": "model", "learner": config})
    return str(ctx.inputs / "other.safetensors")


def _pickled(ctx: Ctx) -> str:
    marker = Marker(str(ctx.inputs / "UNPICKLED"))
    (ctx.inputs / "model.safetensors").write_bytes(pickle.dumps(marker, protocol=4))
    return str(ctx.inputs / "model.safetensors")


def _torch_save(ctx: Ctx) -> str:
    torch.save({"weight": torch.zeros(3)}, ctx.inputs / "model.pt")
    return str(ctx.inputs / "model.pt")


def _copy_model(name: str) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        path = ctx.inputs / f"{name}.safetensors"
        path.write_bytes(ctx.models[name].read_bytes())
        return str(path)

    return make


def _read_only(folder: Callable[[Ctx], Path]) -> Callable[[Ctx], None]:
    """Simulate a folder the user cannot write into (for root every folder is writable)."""

    def make(ctx: Ctx) -> None:
        target, real = folder(ctx), os.access

        def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
            if Path(path) == target and mode & os.W_OK:
                return False
            return real(path, mode, *args, **kwargs)

        ctx.stack.enter_context(mock.patch("os.access", access))

    return make


def _image16(ctx: Ctx) -> str:
    folder = ctx.inputs / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 70000 * (i + 1), dtype=np.int32)).save(
            folder / f"im{i}.tif"
        )
    return str(folder)


# ----------------------------------------------------------------------------- cluster
OUT = ["--out", "{out}/labels.csv"]


def cluster(id: str, make: Any, argv: list[str], message: str) -> Case:
    return Case(id, "cluster", message, ["{file}", *argv, "--meta-steps", "2"], make)


CLUSTER = [
    cluster("empty-csv", text(""), ["--k", "2", *OUT], "the file is empty"),
    cluster("empty-npy", npy(np.zeros((0, 3))), ["--k", "2", *OUT], "the array is empty"),
    cluster("header-only-csv", text("a,b,c\n"), ["--k", "2", *OUT], "only a header row, no data"),
    cluster(
        "non-numeric-cell",
        text("a,b\n1,2\n3,x\n4,5\n"),
        ["--k", "2", *OUT],
        "row 3, column 2 ('b'): 'x' is not a number",
    ),
    cluster(
        "more-cells-than-header",
        text("a,b\n1,2,x\n3,4,5\n"),
        ["--k", "2", *OUT],
        "row 2 has 3 cells but the header (row 1) has 2",
    ),
    cluster(
        "pandas-header-with-index",
        text(",0,1\n0,1.5,2.5\n1,3.5,4.5\n2,5.5,6.5\n"),
        ["--k", "2", *OUT],
        "as pandas writes a header with an index column",
    ),
    cluster(
        "all-missing-column",
        text("a,b,c\n1,,x\n2,,y\n3,,x\n"),
        ["--k", "2", *OUT],
        "column 'b' has no value in any row; leave it out with --ignore b",
    ),
    cluster(
        "all-missing-row",
        text("a,b\n1,2\n,\n3,4\n"),
        ["--k", "2", *OUT],
        "row 3 has no value in any used column (1 such row(s)); remove it",
    ),
    cluster(
        "100000-categories",
        text("a,name\n" + "".join(f"{i % 7},v{i % 100_000}\n" for i in range(100_001))),
        ["--k", "2", *OUT],
        "column 'name' has 100000 distinct text values, too many to use as categories",
    ),
    cluster(
        "ignore-unknown-column",
        text("a,b\n1,2\n3,4\n5,6\n"),
        ["--k", "2", "--ignore", "c", *OUT],
        "--ignore 'c': IN/x.csv has no such column; its columns are a, b",
    ),
    cluster(
        "columns-on-npy",
        npy(table()),
        ["--k", "2", "--columns", "a", *OUT],
        "--ignore and --columns choose columns of a .csv or .parquet table",
    ),
    cluster(
        "unreadable-parquet",
        raw(b"PAR1 not really parquet", "x.parquet"),
        ["--k", "2", *OUT],
        "not a readable Parquet file",
    ),
    cluster(
        "inf-in-npy",
        npy(np.array([[1.0, np.inf], [2.0, 3.0], [4.0, 5.0]])),
        ["--k", "2", *OUT],
        "replace them by NaN (missing) or finite values",
    ),
    cluster(
        "value-beyond-float32",
        text("1,2\n1e300,3\n4,5\n"),
        ["--k", "2", *OUT],
        "too large for float32 (beyond 3.4e+38), the first at row 2, column 1",
    ),
    cluster(
        "ragged-csv",
        text("1,2,3\n4,5\n"),
        ["--k", "2", *OUT],
        "row 2 has 2 cells but row 1 has 3; give every row as many cells",
    ),
    cluster(
        "latin-1-csv",
        raw("é,b\n1,2\n".encode("latin-1"), "x.csv"),
        ["--k", "2", *OUT],
        "line 1 is not UTF-8 text (byte 0xe9); save the file as UTF-8",
    ),
    cluster(
        "one-row",
        text("1,2,3\n"),
        ["--k", "1", *OUT],
        "only 1 data row; clustering needs at least 2 rows",
    ),
    cluster("k-zero", npy(table()), ["--k", "0", *OUT], "0 clusters is not possible"),
    cluster("k-negative", npy(table()), ["--k", "-3", *OUT], "give an integer >= 1 or 'auto'"),
    cluster("k-not-a-number", npy(table()), ["--k", "ten", *OUT], "'ten' is not a number"),
    cluster("k-missing", npy(table()), OUT, "Missing option '--k'"),
    cluster("k-more-than-rows", npy(table(12)), ["--k", "13", *OUT], "--k 13 is more than"),
    cluster("auto-k-two-rows", npy(table(2)), ["--k", "auto", *OUT], "choosing k needs at least 3"),
    cluster("missing-input", lambda c: str(c.inputs / "nope.csv"), ["--k", "2"], "no such file"),
    cluster("unsupported-type", text("1,2\n", "x.txt"), ["--k", "2"], "unsupported file type"),
    cluster(
        "object-npy",
        npy(np.array([{"a": 1}, {"b": 2}], dtype=object)),
        ["--k", "2", *OUT],
        "not loaded for safety",
    ),
    cluster("1d-npy", npy(np.arange(10.0)), ["--k", "2", *OUT], "expected [n, d] features"),
    cluster(
        "no-images",
        lambda c: (c.inputs / "e").mkdir() or str(c.inputs / "e"),
        ["--k", "2"],
        "no images found",
    ),
    cluster(
        "unreadable-image",
        image_folder((8, 8), (8, 8), broken=True),
        ["--k", "2"],
        "cannot read image",
    ),
    cluster(
        "image-sizes-differ",
        image_folder((8, 8), (9, 8)),
        ["--k", "2", *OUT],
        "all images must have the same size",
    ),
    cluster(
        "32-bit-image-beyond-16-bit",
        _image16,
        ["--k", "2", *OUT],
        "32-bit integer image with values outside 0..65535",
    ),
    cluster(
        "image-size-vs-checkpoint",
        image_folder((28, 28), (28, 28), (28, 28)),
        ["--k", "2", "--checkpoint", "{conv}", *OUT],
        "expects 8x8 images (64 features) per example, but the data has 28x28 images",
    ),
    cluster(
        "colour-images-vs-grey-checkpoint",
        npy(np.zeros((6, 3, 8, 8), dtype=np.uint8)),
        ["--k", "2", "--checkpoint", "{conv}", *OUT],
        "has 3-channel 8x8 images (192 features); convert the images to grey (one channel)",
    ),
    cluster(
        "features-vs-checkpoint",
        npy(table(20, 30)),
        ["--k", "2", "--checkpoint", "{mlp}", *OUT],
        "expects 64 features per example, but the data has 30 features",
    ),
    cluster(
        "truncated-checkpoint",
        both(npy(table()), _truncated),
        ["--k", "2", "--checkpoint", "{in}/cut.safetensors", *OUT],
        "truncated",
    ),
    cluster(
        "other-architecture",
        both(npy(table(20, 64)), _other_architecture),
        ["--k", "2", "--checkpoint", "{in}/other.safetensors", *OUT],
        "does not match the model architecture",
    ),
    cluster(
        "pickle-as-checkpoint",
        both(npy(table()), _pickled),
        ["--k", "2", "--checkpoint", "{in}/model.safetensors", *OUT],
        "metaunsup never unpickles files",
    ),
    cluster(
        "torch-save-as-checkpoint",
        both(npy(table()), _torch_save),
        ["--k", "2", "--checkpoint", "{in}/model.pt", *OUT],
        "is a pickle/torch.save file",
    ),
    cluster(
        "random-bytes-checkpoint",
        both(npy(table()), raw(b"\x07" * 64, "r.safetensors")),
        ["--k", "2", "--checkpoint", "{in}/r.safetensors", *OUT],
        "is not a safetensors checkpoint",
    ),
    cluster(
        "folder-as-checkpoint",
        npy(table()),
        ["--k", "2", "--checkpoint", "{out}", *OUT],
        "is a folder, not a file",
    ),
    cluster(
        "unknown-checkpoint",
        npy(table()),
        ["--k", "2", "--checkpoint", "no-such-model", *OUT],
        "unknown checkpoint 'no-such-model'",
    ),
    cluster(
        "table-too-wide-for-tabular",
        npy(table(30, 101)),
        ["--k", "2", "--checkpoint", "tabular", *OUT],
        "takes tables of at most 100 features; cluster it without a checkpoint",
    ),
    cluster(
        "auto-checkpoint-for-images",
        npy(np.random.default_rng(0).random((12, 8, 8))),
        ["--k", "2", "--checkpoint", "auto", *OUT],
        "--checkpoint auto chooses between the tabular model and self-training for a table",
    ),
    cluster(
        "non-clustering-checkpoint",
        npy(table(20, 64)),
        ["--k", "2", "--checkpoint", "{maml}", *OUT],
        "which does not cluster",
    ),
    cluster(
        "out-is-the-input",
        text("1,2\n3,4\n5,6\n"),
        ["--k", "2", "--out", "{in}/x.csv"],
        "--out 'IN/x.csv' is an input of this command; writing there would replace it",
    ),
    cluster(
        "out-is-the-checkpoint",
        both(npy(table(20, 64), "t.npy"), _copy_model("mlp")),
        ["--k", "2", "--checkpoint", "{in}/mlp.safetensors", "--out", "{in}/mlp.safetensors"],
        "is an input of this command",
    ),
    cluster(
        "out-in-missing-folder",
        npy(table()),
        ["--k", "2", "--out", "{out}/no/such/labels.csv"],
        "does not exist; create it first",
    ),
    cluster(
        "out-in-read-only-folder (simulated)",
        both(_read_only(lambda c: c.outputs), npy(table())),
        ["--k", "2", *OUT],
        "folder 'OUT' is not writable; choose another folder",
    ),
    cluster("out-is-a-folder", npy(table()), ["--k", "2", "--out", "{out}"], "is a directory"),
    cluster(
        "plot-in-missing-folder",
        image_folder((8, 8), (8, 8), (8, 8)),
        ["--k", "2", *OUT, "--plot", "{out}/missing/m.png"],
        "does not exist; create it first",
    ),
    cluster(
        "plot-of-a-table",
        npy(table()),
        ["--k", "2", *OUT, "--plot", "{out}/m.png"],
        "--plot draws images",
    ),
    cluster(
        "out-and-plot-same-file",
        image_folder((8, 8), (8, 8), (8, 8)),
        ["--k", "2", "--out", "{out}/same", "--plot", "{out}/same"],
        "name the same file",
    ),
    cluster("threads-zero", npy(table()), ["--k", "2", "--threads", "0", *OUT], "--threads"),
    cluster("seed-negative", npy(table()), ["--k", "2", "--seed", "-1", *OUT], "--seed"),
]


# ----------------------------------------------------------------------------- evaluate
def evaluate(id: str, argv: list[str], message: str, make: Any = None) -> Case:
    return Case(id, "evaluate", message, [*argv, "--tasks", "2", "--quiet"], make)


EVALUATE = [
    evaluate(
        "model-for-other-image-size",
        ["--checkpoint", "mnist", "--dataset", "digits"],
        "model 'mnist' expects 28x28 images (784 features) per example, but the data has 8x8",
    ),
    evaluate(
        "fewshot-model-for-other-image-size",
        [
            "--task",
            "fewshot",
            "--n-way",
            "5",
            "--k-shot",
            "1",
            "--checkpoint",
            "omniglot-protonet",
            "--dataset",
            "digits",
        ],
        "model 'omniglot-protonet' expects 28x28 images",
    ),
    evaluate(
        "fewshot-model-on-clustering-tasks",
        ["--checkpoint", "{maml}"],
        "which does not cluster; evaluate it with --task fewshot",
    ),
    evaluate(
        "clustering-model-on-fewshot-tasks",
        ["--task", "fewshot", "--checkpoint", "digits"],
        "which does not classify few-shot tasks; evaluate it with --task clustering",
    ),
    evaluate("fewshot-without-model", ["--task", "fewshot"], "nothing to evaluate on fewshot"),
    evaluate("unknown-task-kind", ["--task", "regression"], "unknown task kind 'regression'"),
    evaluate("unknown-method", ["--method", "dbscan"], "unknown method 'dbscan'"),
    evaluate("unknown-dataset", ["--dataset", "cifar"], "unknown dataset 'cifar'"),
    evaluate("unknown-split", ["--split", "validation"], "has no split 'validation'"),
    evaluate("more-classes-than-the-data", ["--n-way", "11"], "--n-way 11 but only 10 classes"),
    evaluate(
        "more-examples-than-a-class-has",
        ["--k-shot", "170"],
        "fewer than the 170 (--k-shot) a task takes from each class (10 such classes, the "
        "smallest with 87); ask for at most 87 examples per class",
    ),
    evaluate("arrays-without-a-file", ["--dataset", "arrays", "--split", "all"], "needs the path"),
    evaluate("folder-as-checkpoint", ["--checkpoint", "{out}"], "is a folder, not a file"),
    evaluate(
        "json-is-the-data",
        ["--dataset", "arrays", "--split", "all", "--data-dir", "{file}", "--json", "{file}"],
        "--json 'IN/x.npy' is an input of this command",
        npy(table()),
    ),
    evaluate(
        "json-is-the-checkpoint",
        ["--checkpoint", "{file}", "--json", "{file}"],
        "is an input of this command",
        _copy_model("mlp"),
    ),
    evaluate(
        "json-in-missing-folder", ["--json", "{out}/no/r.json"], "does not exist; create it first"
    ),
    evaluate(
        "json-in-read-only-folder (simulated)",
        ["--json", "{out}/r.json"],
        "folder 'OUT' is not writable",
        _read_only(lambda c: c.outputs),
    ),
    evaluate(
        "missing-dataset-files",
        ["--dataset", "mnist", "--data-dir", "{data}"],
        "mnist files not found in DATA/mnist",
    ),
]


# ----------------------------------------------------------------------------- train
CONFIG = """name = "{name}"
[data]
dataset = "digits"
split = "train"
[task]
kind = "fewshot"
n_way = 3
k_shot = 1
n_query = 2
[learner]
name = "{learner}"
[learner.net]
name = "conv4"
hidden = 4
[train]
steps = 2
val_every = 2
val_tasks = 2
"""


def config(name: str = "tiny", learner: str = "protonet", extra: str = "") -> Callable:
    def make(ctx: Ctx) -> str:
        path = ctx.inputs / "run.toml"
        path.write_text(CONFIG.format(name=name, learner=learner) + extra)
        return str(path)

    return make


def fake_run(step: int = 3, learner: dict | None = None, seed: int = 0) -> Callable:
    """A run folder ``OUT/run`` whose ``last.safetensors`` is at ``step``."""

    def make(ctx: Ctx) -> None:
        from metaunsup.checkpoint import save_checkpoint
        from metaunsup.training.build import fresh_learner
        from metaunsup.training.config import load_config

        cfg = load_config(ctx.inputs / "run.toml")
        model = fresh_learner(cfg, (1, 8, 8))
        run = ctx.outputs / "run"
        run.mkdir()
        meta = {"kind": "training", "learner": learner or model.config(), "step": step,
                "run": {**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": seed}},
                "optimizer": {"param_groups": [], "scalars": {}}}  # fmt: skip
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        save_checkpoint(run / "last.safetensors", tensors, meta)

    return make


def train(id: str, make: Any, argv: list[str], message: str) -> Case:
    return Case(id, "train", message, ["{in}/run.toml", *argv, "--quiet"], make)


UNSUP = '[unsupervised]\ntasks = "cactus"\npretrain_steps = 2\npartitions = 2\nclusters = 3\n'
RUN = ["--out", "{out}/run"]

TRAIN = [
    train(
        "missing-config",
        None,
        RUN,
        "config file 'IN/run.toml' not found (packaged configs: digits-unsup, tabular)",
    ),
    train("invalid-toml", text("name = \n", "run.toml"), RUN, "is not valid TOML"),
    train(
        "name-outside-runs",
        config(name="../../x"),
        [],
        "'name' is the run's folder under runs/, so it must be a plain folder name",
    ),
    train("unknown-key", config(extra="colour = 1\n"), RUN, "[train] has unknown key(s) colour"),
    train(
        "learner-for-other-tasks",
        config(learner="meta_kmeans"),
        RUN,
        "learner 'meta_kmeans' trains on task.kind = 'clustering', not 'fewshot'",
    ),
    train("unknown-learner", config(learner="svm"), RUN, "unknown learner 'svm'"),
    train(
        "folder-holds-a-run",
        both(config(), fake_run(step=3)),
        RUN,
        "'OUT/run' holds a run (meta-training at step 3 of 2); continue it with --resume, "
        "replace it with --overwrite",
    ),
    train(
        "resume-with-nothing-to-resume",
        config(),
        [*RUN, "--resume"],
        "cannot resume: 'OUT/run' holds no run to continue (start without --resume)",
    ),
    train(
        "resume-and-overwrite",
        config(),
        [*RUN, "--resume", "--overwrite"],
        "give one of them",
    ),
    train(
        "resume-with-another-learner",
        both(config(), fake_run(learner={"name": "protonet", "net": {"name": "mlp"}})),
        [*RUN, "--resume"],
        "was written by another learner configuration",
    ),
    train(
        "resume-with-another-seed",
        both(config(), fake_run(seed=5)),
        [*RUN, "--resume"],
        "was trained with train.seed = 5, the config says 0",
    ),
    train("out-is-a-file", config(), ["--out", "{in}/run.toml"], "is a file"),
    train(
        "out-in-read-only-folder (simulated)",
        both(config(), _read_only(lambda c: c.outputs)),
        RUN,
        "folder 'OUT' is not writable",
    ),
    train(
        "features-from-missing-run",
        config(extra=UNSUP + 'features_from = "teacher"\n'),
        RUN,
        "unsupervised.features_from: 'OUT/teacher/pretrain.safetensors' not found",
    ),
    train(
        "held-out-too-few",
        config(extra=UNSUP + "val_fraction = 0.002\n"),
        RUN,
        "unsupervised.val_fraction = 0.002 holds out 2 of 901 examples, too few",
    ),
    train("cuda-without-gpu", config(), [*RUN, "--device", "cuda"], "no CUDA device"),
    train("steps-zero", config(), [*RUN, "--steps", "0"], "--steps"),
]
if torch.cuda.is_available():  # the machine has a GPU: this case cannot be made
    TRAIN = [c for c in TRAIN if c.id != "cuda-without-gpu"]


# ----------------------------------------------------------------------------- report
def _report_json(**change: Any) -> dict:
    report = {
        "dataset": "digits", "split": "test", "task": "clustering", "n_way": 10, "k_shot": 20,
        "tasks": 5, "seed": 0,
        "results": [{"method": "kmeans", "acc": {"mean": 0.7, "ci95": 0.02}, "ms_per_task": 1.0}],
    }  # fmt: skip
    return {**report, **change}


def report_file(content: str | bytes, name: str = "r.json") -> Callable[[Ctx], str]:
    return raw(content.encode() if isinstance(content, str) else content, name)


def report(id: str, make: Any, message: str, out: str = "{out}/page") -> Case:
    return Case(id, "report", message, ["{file}", "--out", out], make)


REPORT = [
    report("missing-json", lambda c: str(c.inputs / "none.json"), "no such file"),
    report("invalid-json", report_file("{oops"), "not valid JSON"),
    report("not-an-object", report_file("[1, 2]"), "expected a JSON object"),
    report("missing-keys", report_file('{"results": []}'), "not an evaluation report (missing"),
    report(
        "bad-score",
        report_file(json.dumps(_report_json(results=[{"method": "m", "acc": 0.5}]))),
        "a score must be",
    ),
    report(
        "nan-score",
        report_file(
            json.dumps(
                _report_json(results=[{"method": "m", "acc": {"mean": float("nan"), "ci95": 0.1}}])
            )
        ),
        "results[0].acc.mean is nan: a score must be a finite number",
    ),
    report(
        "nan-in-a-curve",
        report_file(json.dumps(_report_json(curves={"m": [{"steps": 1, "acc": float("nan")}]}))),
        "'curves' must map methods to lists of {'steps', 'acc', ...} with finite numbers",
    ),
    report("binary-file", report_file(b"\xff\xfe\x00", "x.json"), "not a text file"),
    report(
        "out-in-missing-folder",
        report_file(json.dumps(_report_json())),
        "does not exist; create it first",
        out="{out}/no/page",
    ),
    report(
        "out-is-a-file",
        report_file(json.dumps(_report_json())),
        "is a file; give a folder",
        out="{file}",
    ),
]


# ----------------------------------------------------------------------------- datasets
def _bad_mnist(ctx: Ctx) -> None:
    from metaunsup.data import mnist

    folder = ctx.data / "mnist"
    folder.mkdir(parents=True)
    for name in mnist.SHA256:
        (folder / name).write_bytes(b"not mnist")


def _offline(ctx: Ctx) -> None:
    def refuse(url: str, *args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("no network (simulated)")

    ctx.stack.enter_context(mock.patch.object(urllib.request, "urlopen", refuse))


DATASETS = [
    Case(
        "bad-checksum",
        "datasets",
        "checksum mismatch (and 3 more BAD file(s) above); delete the file and get it again "
        "with `metaunsup datasets --download mnist`",
        ["--data-dir", "{data}"],
        _bad_mnist,
    ),
    Case(
        "download-without-network (simulated)",
        "datasets",
        "could not download train-images-idx3-ubyte.gz; tried",
        ["--data-dir", "{data}", "--download", "mnist"],
        _offline,
    ),
    Case(
        "download-unknown-dataset",
        "datasets",
        "'cifar' is not a dataset; datasets that can be downloaded: mnist, omniglot",
        ["--download", "cifar"],
    ),
    Case(
        "download-generated-dataset",
        "datasets",
        "'digits' has nothing to download; datasets that can be downloaded: mnist, omniglot",
        ["--download", "digits"],
    ),
    Case("data-dir-is-a-file", "datasets", "is a file", ["--data-dir", "{file}"], text("x")),
]


# ----------------------------------------------------------------------------- Python API
def python(
    id: str, code: str, call: Callable[[Ctx], Any], message: str, error: type, make: Any = None
) -> Case:
    return Case(id, "python", message, make=make, call=call, code=code, error=error)


def _digits_x() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:40]


def _meta_kmeans(**kwargs: Any) -> Any:
    from metaunsup import MetaKMeans

    return MetaKMeans(**kwargs)


def _load_learner(*args: Any, **kwargs: Any) -> Any:
    from metaunsup.learners import load_learner

    return load_learner(*args, **kwargs)


def _huge(ctx: Ctx) -> Any:
    x = table(20, 3)
    x[4, 1] = 1e300
    return _meta_kmeans(n_clusters=2, meta_steps=2).fit(x)


def _unreadable_checkpoint(ctx: Ctx) -> Any:
    from metaunsup.learners import load_learner

    path = ctx.inputs / "mlp.safetensors"
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    with mock.patch.object(Path, "read_bytes", read_bytes):
        return load_learner(path)


def _evaluate_with(method: str) -> Callable[[Ctx], Any]:
    def call(ctx: Ctx) -> Any:
        from metaunsup.data import load
        from metaunsup.evaluation.clustering import checkpoint_method, evaluate_clustering
        from metaunsup.evaluation.fewshot import evaluate_fewshot
        from metaunsup.learners import load_learner

        digits = load("digits", "test")
        if method == "fewshot":
            model = ("omniglot-protonet", load_learner("omniglot-protonet"))
            return evaluate_fewshot(digits, [model], n_way=5, k_shot=1, n_query=2, n_tasks=2)
        methods = [checkpoint_method("mnist")]
        return evaluate_clustering(digits, methods, n_way=10, k_shot=5, n_tasks=2)

    return call


def _sampler(ctx: Ctx) -> Any:
    from metaunsup.data import load
    from metaunsup.tasks import FewShotTaskSampler

    return FewShotTaskSampler(load("digits", "test"), 5, 100, 5)


def _train_into_run(ctx: Ctx) -> Any:
    from metaunsup.training.build import train_run
    from metaunsup.training.config import load_config

    return train_run(load_config(ctx.inputs / "run.toml"), ctx.outputs / "run")


def _config_table(ctx: Ctx) -> Any:
    from metaunsup.training.config import load_config

    return load_config(ctx.inputs / "run.toml", {"train.steps": 3})


def _write_read_only(ctx: Ctx) -> Any:
    from metaunsup.fileio import atomic_write_text

    _read_only(lambda c: c.outputs)(ctx)
    return atomic_write_text(ctx.outputs / "labels.csv", "index,label\n")


def _read_csv_with_index(ctx: Ctx) -> Any:
    from metaunsup.data.arrays import load_arrays

    return load_arrays(ctx.inputs / "x.csv")


def _report_nan(ctx: Ctx) -> Any:
    from metaunsup.app.report.page import read_report

    return read_report(ctx.inputs / "r.json")


def _digits_with_nan(ctx: Ctx) -> Any:
    x = _digits_x()
    x[3, 5] = np.nan
    return _meta_kmeans(n_clusters=2, checkpoint=str(ctx.models["mlp"])).fit(x)


def _load_table_unknown_column(ctx: Ctx) -> Any:
    from metaunsup.data.tables import load_table

    return load_table(ctx.inputs / "t.csv", columns=["a", "c"])


PYTHON = [
    python(
        "estimator-missing-cells-with-checkpoint",
        'MetaKMeans(2, checkpoint="MODELS/mlp.safetensors").fit(X)  # X[3, 5] = nan',
        _digits_with_nan,
        "X has missing values (NaN), which a checkpoint's network cannot take; pass impute='knn'",
        DataError,
    ),
    python(
        "load-table-unknown-column",
        'load_table("t.csv", columns=["a", "c"])  # t.csv has columns a, b',
        _load_table_unknown_column,
        "--columns 'c': IN/t.csv has no such column; its columns are a, b",
        ConfigError,
        make=text("a,b\n1,x\n2,y\n", "t.csv"),
    ),
    python(
        "estimator-value-beyond-float32",
        "MetaKMeans(2).fit(X)  # X[4, 1] = 1e300",
        _huge,
        "X: 1 value(s) too large for float32 (beyond 3.4e+38), the first at index (4, 1)",
        DataError,
    ),
    python(
        "estimator-checkpoint-for-other-images",
        'MetaKMeans(10, checkpoint="mnist").fit(X)  # X: 8x8 digits',
        lambda c: _meta_kmeans(n_clusters=10, checkpoint="mnist").fit(_digits_x()),
        "checkpoint 'mnist' expects 28x28 images (784 features) per example, but the data has "
        "64 features",
        DataError,
    ),
    python(
        "estimator-colour-images",
        'MetaKMeans(2, checkpoint="digits").fit(X)  # X: [n, 3, 8, 8]',
        lambda c: _meta_kmeans(n_clusters=2, checkpoint="digits").fit(np.zeros((6, 3, 8, 8))),
        "convert the images to grey (one channel), or cluster without a checkpoint",
        DataError,
    ),
    python(
        "load-learner-for-other-images",
        'load_learner("mnist", example_shape=(1, 8, 8))',
        lambda c: _load_learner("mnist", example_shape=(1, 8, 8)),
        "checkpoint 'mnist' expects 28x28 images (784 features) per example",
        DataError,
    ),
    python(
        "load-learner-folder",
        "load_learner(folder)",
        lambda c: _load_learner(c.outputs),
        "checkpoint 'OUT' is a folder, not a file",
        CheckpointError,
    ),
    python(
        "load-learner-unreadable (simulated)",
        "load_learner(path)  # no read permission",
        _unreadable_checkpoint,
        "cannot read checkpoint 'IN/mlp.safetensors' (Permission denied)",
        CheckpointError,
        _copy_model("mlp"),
    ),
    python(
        "evaluate-clustering-with-model-for-other-images",
        'evaluate_clustering(load("digits", "test"), [checkpoint_method("mnist")], ...)',
        _evaluate_with("clustering"),
        "model 'mnist' expects 28x28 images (784 features) per example",
        DataError,
    ),
    python(
        "evaluate-fewshot-with-model-for-other-images",
        'evaluate_fewshot(load("digits", "test"), [("omniglot-protonet", load_learner(...))], ...)',
        _evaluate_with("fewshot"),
        "model 'omniglot-protonet' expects 28x28 images",
        DataError,
    ),
    python(
        "sampler-needs-more-examples",
        'FewShotTaskSampler(load("digits", "test"), 5, 100, 5)',
        _sampler,
        "ask for at most 87 examples per class (or pass drop_small=True to leave those classes out",
        ConfigError,
    ),
    python(
        "train-run-into-a-run",
        'train_run(load_config("run.toml"), "OUT/run")  # OUT/run holds a run',
        _train_into_run,
        "holds a run (meta-training at step 3 of 2); continue it with --resume, replace it with "
        "--overwrite, or choose another --out folder (train_run(..., resume=True) or "
        "overwrite=True)",
        ConfigError,
        both(config(), fake_run()),
    ),
    python(
        "config-override-of-a-value",
        'load_config("run.toml", {"train.steps": 3})  # the file says train = 5',
        _config_table,
        "[train] must be a table",
        ConfigError,
        text('name = "x"\ntrain = 5\n[data]\ndataset = "digits"\n', "run.toml"),
    ),
    python(
        "write-into-read-only-folder (simulated)",
        'atomic_write_text("OUT/labels.csv", text)',
        _write_read_only,
        "cannot write 'OUT/labels.csv': folder 'OUT' is not writable",
        ConfigError,
    ),
    python(
        "read-csv-with-pandas-index",
        'load_arrays("x.csv")  # written by DataFrame.to_csv() with its index',
        _read_csv_with_index,
        "write the file with index=False",
        DataError,
        text(",0,1\n0,1.5,2.5\n1,3.5,4.5\n"),
    ),
    python(
        "read-report-with-infinite-ci",
        'read_report("r.json")  # a ci95 of Infinity',
        _report_nan,
        "results[0].acc.ci95 is inf: a score must be a finite number",
        DataError,
        report_file(
            json.dumps(_report_json(results=[{"method": "m", "acc": {"mean": 0.5, "ci95": 1e999}}]))
        ),
    ),
]


# ----------------------------------------------------------------------------- detect
def detect(id: str, reference: np.ndarray | None, argv: list[str], message: str) -> Case:
    """A ``detect`` case on a 30 × 5 INPUT (``{in}/input.npy``); ``reference``, when given, is
    the ``--normal`` file that ``{file}`` names."""

    def make(ctx: Ctx) -> str | None:
        rng = np.random.default_rng(0)
        np.save(ctx.inputs / "input.npy", rng.normal(size=(30, 5)))
        if reference is None:
            return None
        np.save(ctx.inputs / "normal.npy", reference)
        return str(ctx.inputs / "normal.npy")

    normal = [] if reference is None else ["--normal", "{file}"]
    return Case(id, "detect", message, ["{in}/input.npy", *normal, *argv], make)


SCORES = ["--out", "{out}/scores.csv"]

DETECT = [
    detect("one-normal-example", np.zeros((1, 5)), OUT, "1 sample"),
    detect("identical-normal-examples", np.ones((6, 5)), OUT, "identical"),
    detect("normal-of-another-width", np.zeros((6, 4)), OUT, "same shape"),
    detect("fpr-one", None, [*SCORES, "--fpr", "1"], "strictly between 0 and 1"),
    detect("fpr-zero", None, [*SCORES, "--fpr", "0"], "strictly between 0 and 1"),
    detect("out-is-input", None, ["--out", "{in}/input.npy"], "is an input of this command"),
    detect(
        "out-is-normal",
        np.zeros((6, 5)),
        ["--out", "{file}"],
        "is an input of this command",
    ),
    detect("plot-of-a-table", None, [*SCORES, "--plot", "{out}/g.png"], "--plot draws images"),
    detect(
        "boundary-without-checkpoint",
        None,
        [*SCORES, "--boundary"],
        "needs a checkpoint that meta-learned a decision boundary",
    ),
    detect(
        "out-is-plot",
        None,
        ["--out", "{out}/g.png", "--plot", "{out}/g.png"],
        "--out and --plot name the same file",
    ),
    Case(
        "clustering-checkpoint",
        "detect",
        "does not score anomalies",
        ["{file}", "--checkpoint", "{mlp}", *SCORES],
        npy(np.random.default_rng(0).normal(size=(30, 64))),
    ),
    Case(
        "table-with-array-reference",
        "detect",
        "IN/t.csv is a table but the normal reference IN/input.npy is not",
        ["{file}", "--normal", "{in}/input.npy", *SCORES],
        both(text("a,b\n1,x\n2,y\n3,x\n", "t.csv"), npy(table(30, 2), "input.npy")),
    ),
    Case(
        "table-column-missing-from-input",
        "detect",
        "IN/t.csv: has no column 'b', which the table the encoding was learned from has",
        ["{file}", "--normal", "{in}/n.csv", *SCORES],
        both(
            text("a,c\n1.5,2\n2.5,3\n1.5,1\n", "t.csv"),
            text("a,b\n1.5,2.5\n2.5,4.1\n1.5,2.5\n", "n.csv"),
        ),
    ),
]

CATALOGUE: list[Case] = [*CLUSTER, *DETECT, *EVALUATE, *TRAIN, *REPORT, *DATASETS, *PYTHON]


# ----------------------------------------------------------------------------- the page
#: The page's section of each command.
HEADINGS = {
    "cluster": "`metaunsup cluster`: clustering your own file or image folder",
    "detect": "`metaunsup detect`: anomaly scores for your own file or image folder",
    "evaluate": "`metaunsup evaluate`: scoring methods and trained models on test tasks",
    "train": "`metaunsup train`: meta-training a run",
    "report": "`metaunsup report`: a results page from results JSON",
    "datasets": "`metaunsup datasets`: listing, verifying and downloading datasets",
    "python": "The Python API",
}
_ROW = re.compile(r"^\| `([^`]+)` \| `` (.*?) `` \| `` (.*) `` \|$")


def key(case: Case) -> str:
    """A case's unique name: ``"cluster:empty-csv"``."""
    return f"{case.command}:{case.id}"


def documented() -> dict[str, tuple[str, str]]:
    """``{key: (command line, message)}`` as ``docs/errors.md`` shows them (empty without
    the page)."""
    if not PAGE.is_file():
        return {}
    sections = {f"## {heading}": command for command, heading in HEADINGS.items()}
    command, found = "", {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        command = sections.get(line, command)
        row = _ROW.match(line)
        if row:
            shown_as, message = (cell.replace("\\|", "|") for cell in row.group(2, 3))
            found[f"{command}:{row.group(1)}"] = (shown_as, message)
    return found


def page_row(case: Case, outcome: Outcome) -> str:
    """The case's row of the page's table: id, command line (or call) and message."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    return f"| `{case.id}` | `` {cell(outcome.shown)} `` | `` {cell(outcome.message)} `` |"


# ----------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return catalogue_models(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def page() -> dict[str, tuple[str, str]]:
    return documented()


@pytest.mark.parametrize("case", CATALOGUE, ids=[key(c) for c in CATALOGUE])
def test_case(case: Case, tmp_path: Path, models: dict[str, Path], page: dict[str, Any]):
    result = run_case(case, tmp_path, models)
    if case.call is not None:
        assert isinstance(result.raised, case.error), repr(result.raised)
    else:
        assert result.code == 2, (result.out, result.lines)
        assert len(result.lines) == 1, result.lines
        assert result.lines[0].startswith("metaunsup: error: "), result.lines
        assert "Traceback" not in result.out + "\n".join(result.lines)
    assert case.message in result.message, result.message
    assert not result.changed, "a file was written, changed or left behind"
    assert not (tmp_path / "in" / "UNPICKLED").exists()
    assert page.get(key(case)) == (result.shown, result.message), (
        f"docs/errors.md shows {page.get(key(case))!r} for {key(case)!r}, the code "
        f"{(result.shown, result.message)!r}: run `python scripts/errors_page.py`"
    )


def test_catalogue_covers_every_command_and_is_large_enough():
    assert len(CATALOGUE) >= 60
    assert {c.command for c in CATALOGUE} == set(COMMANDS)
    assert len({key(c) for c in CATALOGUE}) == len(CATALOGUE)


def test_the_page_lists_exactly_the_catalogue(page: dict[str, Any]):
    assert set(page) == {key(c) for c in CATALOGUE}, "run `python scripts/errors_page.py`"


def test_report_without_matplotlib_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    good = tmp_path / "r.json"
    good.write_text(json.dumps(_report_json()))
    code = main(["report", str(good), "--out", str(tmp_path / "page")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert "report figures need matplotlib, which is not installed" in lines[0]
    assert not (tmp_path / "page").exists()


def iter_catalogue(root: Path) -> Iterator[tuple[Case, Outcome]]:
    """Run every case in a fresh sub-folder of ``root`` (for ``scripts/errors_page.py``)."""
    models = catalogue_models(str(root / "models"))
    for i, case in enumerate(CATALOGUE):
        folder = root / f"case{i}"
        folder.mkdir()
        yield case, run_case(case, folder, models)
