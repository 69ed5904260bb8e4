"""`metaunsup experiment anomaly-mnist`: trains (per held-out digit where the protocol says so)
and calibrates missing runs, evaluates every method on the same tasks, writes the page; the
same code on digits with tiny models."""

from __future__ import annotations

import json

import pytest

import metaunsup.app.anomaly_experiment as experiment
from metaunsup.errors import ConfigError

TINY = """
name = "{name}"
[data]
dataset = "digits"
split = "train"
val_fraction = 0.0
[task]
kind = "anomaly"
k_shot = 3
n_query = 5
{extra}
[learner]
name = "meta_svdd"
[learner.net]
name = "conv4"
hidden = 4
depth = 2
norm = "group"
groups = 2
[train]
steps = 3
meta_batch = 2
checkpoint_every = 3
"""

UNSUP = """
[unsupervised]
pretrain_steps = 2
pretrain_batch = 32
partitions = 2
clusters = 8
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "u.toml").write_text(TINY.format(name="u", extra=UNSUP))
    (configs / "s.toml").write_text(TINY.format(name="s", extra=""))
    return configs


def _run(tiny, tmp_path, table, monkeypatch, **kwargs):
    monkeypatch.setattr(experiment, "ANOMALY_MODELS", table)
    monkeypatch.setattr(experiment, "N_QUERY", 10)
    return experiment.run_anomaly_mnist(
        tmp_path / "out", configs_dir=tiny, runs_dir=tmp_path / "runs", dataset="digits",
        echo=lambda m: None, **kwargs,
    )  # fmt: skip


def test_one_model_for_all_digits_writes_page_and_figures(tiny, tmp_path, monkeypatch):
    models = (
        experiment.AnomalyModel("tiny label-free", "u.toml", False, "none"),
        experiment.AnomalyModel("tiny supervised", "s.toml", True, "8 digits"),  # left out
    )
    with pytest.raises(ConfigError, match="missing or unfinished"):
        _run(tiny, tmp_path, models, monkeypatch, train=False, models=["u"])
    report = _run(tiny, tmp_path, models, monkeypatch, tasks=10, seeds=1, models=["u"],
                  baselines=["centroid"], note="no time")  # fmt: skip
    gone = report["not_run"]  # what was left out is listed, with the reason
    assert gone["models"] == [{"label": "tiny supervised", "config": "s.toml"}]
    assert "iforest" in gone["baselines"] and "centroid" not in gone["baselines"]
    assert "--model u --method centroid --note" in report["command"]
    assert report["protocol"]["tasks_per_k"] == 10
    rows = report["results"]["2"]
    assert {r["method"] for r in rows} == {"tiny label-free", "centroid"}
    assert set(rows[0]["auroc"]["per_digit"]) == {str(d) for d in range(10)}
    by = {r["method"]: r for r in rows}  # Meta-SVDD is also scored at its learned boundary
    assert "boundary_ba" in by["tiny label-free"] and "boundary_ba" not in by["centroid"]
    assert 0.0 <= by["tiny label-free"]["boundary_fpr"]["mean"] <= 1.0
    assert report["training"]["tiny label-free"]["runs"][0]["classes"] == list(range(10))
    page = (tmp_path / "out" / "anomaly_mnist.md").read_text()
    assert "## Goals (issue 15)" in page and "K = 10" in page
    assert "the same at the learned boundary" in page and "learned boundary: false alarms" in page
    assert "## Rows not measured here" in page and "Why: no time" in page
    assert json.loads((tmp_path / "out" / "anomaly_mnist.json").read_text())["command"]
    assert (tmp_path / "out" / "anomaly_mnist_roc.png").is_file()
    cached = sorted((tmp_path / "runs" / "anomaly-eval").iterdir())
    assert len(cached) == 10 * 3 + 10  # digits x K, and the contaminated support per digit


@pytest.mark.slow
def test_per_digit_models_hold_the_test_and_validation_digits_out(tiny, tmp_path, monkeypatch):
    models = (experiment.AnomalyModel("tiny supervised", "s.toml", True, "8 digits"),)
    report = _run(tiny, tmp_path, models, monkeypatch, tasks=10, seeds=1, baselines=[])
    runs = report["training"]["tiny supervised"]["runs"]
    assert len(runs) == 10
    for d, run in enumerate(runs):
        assert d not in run["classes"] and (d + 1) % 10 not in run["classes"]
        assert len(run["classes"]) == 8


def test_an_unknown_model_is_named_with_the_choices():
    with pytest.raises(ConfigError, match=r"unknown anomaly-mnist model.*nope.*-strict"):
        experiment._chosen_models(["nope"])


@pytest.mark.slow
def test_without_training_a_per_digit_model_scores_the_digits_it_has(tiny, tmp_path, monkeypatch):
    model = experiment.AnomalyModel("tiny supervised", "s.toml", True, "8 digits")
    for d in (0, 1):  # the runs of test digits 0 and 1 only
        experiment._run(model, d, tiny, tmp_path / "runs" / "anomaly", True, lambda m: None)
    report = _run(tiny, tmp_path, (model,), monkeypatch, tasks=10, seeds=1,
                  baselines=["centroid"], train=False)  # fmt: skip
    assert report["training"]["tiny supervised"]["missing_digits"] == list(range(2, 10))
    row = next(r for r in report["results"]["10"] if r["method"] == "tiny supervised")
    assert row["digits"] == [0, 1] and set(row["auroc"]["per_digit"]) == {"0", "1"}
    base = next(r for r in report["results"]["10"] if r["method"] == "centroid")
    assert base["digits"] == list(range(10))
    page = (tmp_path / "out" / "anomaly_mnist.md").read_text()
    assert "(test digits 0, 1 only)" in page and "not scored (no run)" in page


def test_cache_key_changes_when_a_models_weights_or_thresholds_change(tmp_path):
    from metaunsup.evaluation.kinds import task_kind

    methods = task_kind("anomaly").resolve(["centroid"])
    weights = tmp_path / "run" / "best.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights and a null table")
    runs = {"model": {None: weights}}
    files = experiment._model_files(3, runs)
    assert files == [weights]
    before = experiment._cache_tag(methods, files)
    assert experiment._cache_tag(methods, files) == before  # same bytes, same key
    weights.write_bytes(b"weights and a recalibrated null table")
    assert experiment._cache_tag(methods, files) != before
    assert experiment._model_files(3, {"per-digit": {4: weights}}) == []


def test_a_packaged_model_is_its_checkpoint_not_a_new_training(tmp_path):
    from metaunsup.checkpoint import resolve_checkpoint

    (packaged,) = [m for m in experiment.ANOMALY_MODELS if m.packaged is not None]
    assert packaged.packaged == "mnist-anomaly" and "packaged" in packaged.label
    path, record = experiment._run(packaged, None, tmp_path / "configs", tmp_path / "runs",
                                   False, lambda m: None)  # fmt: skip
    assert path == resolve_checkpoint("mnist-anomaly") and record["steps"] == 300
    assert record["classes"] == list(range(10)) and record["labels_used"] == "none"
    assert not (tmp_path / "runs").exists()  # nothing trained, no folder made


def test_model_stems_name_the_packaged_model_apart_from_its_recipe():
    chosen = experiment._chosen_models(["mnist-anomaly", "mnist-anomaly-pretrain4k"])
    assert [m.packaged for m in chosen] == ["mnist-anomaly", None]  # weights, then a training
    assert chosen[0].config == chosen[1].config == "mnist-anomaly-pretrain4k.toml"
    with pytest.raises(ConfigError, match="unknown anomaly-mnist model"):
        experiment._chosen_models(["mnist-anomaly.toml"])
