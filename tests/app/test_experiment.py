"""`metaunsup experiment mnist-clustering`: trains missing models, evaluates, writes the page."""

from __future__ import annotations

import json

import pytest

import metaunsup.app.experiment as experiment
from metaunsup.app.cli import main
from metaunsup.errors import ConfigError, DataError
from tests.helpers.data import needs_mnist

TINY = """
name = "{name}"
[data]
dataset = "digits"
split = "train"
{extra}
[task]
kind = "clustering"
n_way = 10
k_shot = 20
[learner]
name = "meta_kmeans"
n_iter = 2
[learner.net]
name = "conv4"
hidden = 8
[train]
steps = 2
meta_batch = 1
checkpoint_every = 1
"""

UNSUP = """
[unsupervised]
pretrain_steps = 2
pretrain_batch = 32
partitions = 2
clusters = 10
spectral_dims = 4
"""


@pytest.fixture
def tiny_models(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "u.toml").write_text(TINY.format(name="u", extra=UNSUP))
    (configs / "x.toml").write_text(TINY.format(name="x", extra="val_fraction = 0.0"))
    monkeypatch.setattr(
        experiment,
        "MNIST_MODELS",
        (
            experiment.ModelSpec("unsup model", "u.toml", "unsup"),
            experiment.ModelSpec("cross model", "x.toml", "xd"),
        ),
    )
    monkeypatch.setattr(experiment, "CURVE_STEPS", (0, 1, 2))
    monkeypatch.setattr(experiment, "KMEANS_ITERS", (1, 2))
    return configs


def test_experiment_trains_evaluates_and_writes_the_page(tiny_models, tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    with pytest.raises(ConfigError, match="missing or unfinished"):
        experiment.run_mnist_clustering(
            out,
            configs_dir=tiny_models,
            runs_dir=runs,
            train=False,
            dataset="digits",
            echo=lambda m: None,
        )
    report = experiment.run_mnist_clustering(
        out,
        configs_dir=tiny_models,
        runs_dir=runs,
        tasks=8,
        curve_tasks=4,
        dataset="digits",
        echo=lambda m: None,
    )
    names = [r["method"] for r in report["results"]]
    assert names[:4] == ["kmeans", "sklearn-kmeans", "pca-kmeans", "gmm"]
    assert "Conv4, not meta-trained (random weights)" in names
    assert "Conv4, SimCLR pre-trained only (no meta-training)" in names
    assert names[-2:] == ["unsup model", "cross model"]
    saved = json.loads((out / "mnist_fewshot_clustering.json").read_text())
    assert saved["training"]["unsup model"]["meta_steps"] == 2
    assert saved["training"]["unsup model"]["unsupervised"]["pretrain"]["steps"] == 2
    assert [p["steps"] for p in saved["curves"]["cross model"]] == [0, 1, 2]
    page = (out / "mnist_fewshot_clustering.md").read_text()
    assert "| unsup model |" in page and "mnist_convergence.png" in page
    assert "metaunsup experiment mnist-clustering --tasks 8" in page
    for png in ("mnist_convergence.png", "mnist_kmeans_lloyd.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # trained runs are reused: no training the second time
    again = experiment.run_mnist_clustering(
        out,
        configs_dir=tiny_models,
        runs_dir=runs,
        tasks=8,
        curve_tasks=4,
        train=False,
        dataset="digits",
        echo=lambda m: None,
    )
    assert [r["acc"] for r in again["results"]] == [r["acc"] for r in report["results"]]


def test_steps_to_fraction():
    points = [{"steps": s, "acc": a} for s, a in [(0, 0.5), (1, 0.9), (5, 0.96), (20, 1.0)]]
    assert experiment.steps_to_fraction(points) == 5
    assert experiment.steps_to_fraction(points, 0.9) == 1


def test_cli_names_a_missing_run_in_one_line(tiny_models, tmp_path, capsys):
    code = main(
        [
            "experiment",
            "mnist-clustering",
            "--configs",
            str(tiny_models),
            "--runs",
            str(tmp_path / "none"),
            "--no-train",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing or unfinished" in err[0]


@needs_mnist
def test_experiment_refuses_models_made_for_other_images(tiny_models, tmp_path):
    """The tiny models take digits' 8x8 images: on MNIST (28x28) the experiment stops with the
    fit check's message before scoring anything, and writes no page."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = {"configs_dir": tiny_models, "runs_dir": runs, "tasks": 4, "curve_tasks": 2,
            "echo": lambda m: None}  # fmt: skip
    experiment.run_mnist_clustering(out, dataset="digits", **args)
    (out / "mnist_fewshot_clustering.md").unlink()
    with pytest.raises(DataError, match=r"expects 8x8 images .* but the data has 28x28 images"):
        experiment.run_mnist_clustering(out, dataset="mnist", **args)
    assert not (out / "mnist_fewshot_clustering.md").exists()
