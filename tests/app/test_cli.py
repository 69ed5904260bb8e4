"""The command line: results tables and JSON, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metaunsup.app.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_writes_table_and_json(tmp_path, capsys):
    out_json = tmp_path / "out.json"
    code, out, err = run(
        capsys, "evaluate", "--dataset", "digits", "--split", "test", "--tasks", "20",
        "--method", "kmeans", "--method", "pca-kmeans", "--method", "gmm",
        "--json", str(out_json), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "| kmeans" in out and "| pca-kmeans" in out and "| gmm" in out
    report = json.loads(out_json.read_text())
    for key in ("dataset", "split", "task", "n_way", "k_shot", "tasks", "seed", "results"):
        assert key in report
    assert report["tasks"] == 20 and report["n_way"] == 10 and report["k_shot"] == 20
    assert [r["method"] for r in report["results"]] == ["kmeans", "pca-kmeans", "gmm"]
    for r in report["results"]:
        assert 0.0 <= r["acc"]["mean"] <= 1.0 and r["acc"]["ci95"] >= 0.0
        assert set(r) >= {"method", "acc", "nmi", "ari", "ms_per_task"}
    # K-means on 10x20 digits tasks scores about 0.74, far above chance (~0.2):
    # docs/results/clustering_baselines.md
    assert report["results"][0]["acc"]["mean"] > 0.6


def test_same_seed_same_numbers(tmp_path, capsys):
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p in paths:
        code, _, err = run(capsys, "evaluate", "--tasks", "10", "--json", str(p), "--quiet")
        assert code == 0, err
    a, b = (json.loads(p.read_text())["results"] for p in paths)
    assert [r["acc"] for r in a] == [r["acc"] for r in b]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["evaluate", "--split", "validation"], "has no split 'validation'"),
        (["evaluate", "--method", "dbscan"], "unknown method 'dbscan'"),
        (["evaluate", "--tasks", "abc"], "--tasks"),
        (["evaluate", "--tasks", "0"], "--tasks"),
        (["evaluate", "--n-way", "0"], "--n-way"),
        (["evaluate", "--n-way", "11"], "n_way"),
        (["evaluate", "--k-shot", "5000"], "k_shot"),
        (["evaluate", "--json", "/no/such/folder/out.json"], "does not exist"),
        (["evaluate", "--dataset", "mnist", "--data-dir", "/no/such/place"], "mnist"),
        (["frobnicate"], "No such command"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, argv, message):
    code, _out, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("metaunsup: error: ")
    assert message in lines[0]
    assert "Traceback" not in err


def test_nan_in_user_file_is_one_line(tmp_path, capsys):
    import numpy as np

    bad = tmp_path / "bad.npy"
    arr = np.random.default_rng(0).normal(size=(30, 4))
    arr[3, 2] = np.nan
    np.save(bad, arr)
    code, _, err = run(capsys, "evaluate", "--dataset", "arrays", "--split", "all",
                       "--data-dir", str(bad))  # fmt: skip
    assert code == 2 and "NaN" in err and len(err.strip().splitlines()) == 1


def test_datasets_lists_and_verifies(capsys, data_root):
    code, out, _ = run(capsys, "datasets", "--data-dir", str(data_root))
    assert code == 0
    assert "digits" in out and "mnist" in out and "omniglot" in out


def test_console_script_exit_status():
    proc = subprocess.run(
        [sys.executable, "-m", "metaunsup", "evaluate", "--method", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("metaunsup: error:")
    assert "Traceback" not in proc.stderr
