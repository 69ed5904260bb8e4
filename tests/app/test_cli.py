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
        (["evaluate", "--n-way", "11"], "--n-way 11 but only 10 classes"),
        (["evaluate", "--k-shot", "5000"], "fewer than the 5000 (--k-shot) a task takes"),
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


def test_warnings_are_one_line_naming_the_option(tmp_path, capsys):
    import numpy as np

    data = tmp_path / "same.csv"
    np.savetxt(data, np.ones((12, 3)), delimiter=",")
    code, _out, err = run(
        capsys, "cluster", str(data), "--k", "3", "--meta-steps", "2", "--out",
        str(tmp_path / "labels.csv"),
    )  # fmt: skip
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("metaunsup: warning: ")]
    assert warnings == [
        "metaunsup: warning: only 1 distinct example(s) for --k 3: the extra clusters are empty "
        "or split identical examples; use --k <= 1"
    ]


def test_light_background_images_warn_in_one_line(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from metaunsup.data import load

    folder = tmp_path / "images"
    folder.mkdir()
    for i, im in enumerate(load("digits", "test").x[:30, 0].numpy()):
        ink = (im.astype(np.float64) / im.max() * 255).astype(np.uint8)
        Image.fromarray(255 - ink).save(folder / f"{i:02d}.png")  # dark ink, light paper
    code, _, err = run(capsys, "cluster", str(folder), "--k", "5", "--checkpoint", "digits")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "look light-background" in warnings[0], err
    assert warnings[0].startswith("metaunsup: warning: ")


def test_python_names_become_the_commands_options():
    from metaunsup.app.cli import for_cli

    message = "n_way=11 but the 185 (k_shot + n_query); use n_clusters <= 3 (task.n_way is fine)"
    assert for_cli(message, "evaluate") == (
        "--n-way 11 but the 185 (--k-shot + --query); use n_clusters <= 3 (task.n_way is fine)"
    )
    assert for_cli(message, "cluster").endswith("use --k <= 3 (task.n_way is fine)")
    assert for_cli(message, "train") == message  # train's messages name config keys


def test_evaluate_anomaly_checkpoint_also_at_its_learned_boundary(tmp_path, capsys):
    """``--boundary`` adds the checkpoint's flags at its meta-learned boundary as a second row
    of the identical tasks (same scores, other flags); a checkpoint without one is refused."""
    import torch

    from metaunsup.data import load
    from metaunsup.learners import build_learner
    from metaunsup.tasks.anomaly import AnomalyTaskSampler
    from tests.helpers.estimators import save_learner

    torch.manual_seed(0)
    net = {"name": "conv4", "in_channels": 1, "image_size": [8, 8], "hidden": 8, "depth": 2,
           "n_way": None, "norm": "group", "groups": 2}  # fmt: skip
    svdd = build_learner({"name": "meta_svdd", "net": net})
    tasks = AnomalyTaskSampler(load("digits", "train"), 5, 10, seed=0)
    optimizer = torch.optim.Adam(svdd.parameters(), lr=3e-3)
    for _ in range(20):
        loss, _ = svdd.meta_loss(tasks.sample(4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = str(save_learner(svdd, tmp_path / "svdd.safetensors"))
    out_json = tmp_path / "anomaly.json"
    code, out, err = run(
        capsys, "evaluate", "--task", "anomaly", "--dataset", "digits", "--k-shot", "2",
        "--query", "10", "--tasks", "20", "--checkpoint", path, "--boundary", "--method",
        "centroid", "--json", str(out_json), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "(learned boundary)" in out
    # Never calibrated (no null table measured) at K = 2: its fpr flags are empty, and said so,
    # in one line however many batches raised it.
    assert err.count("warning: the model's null table was never measured") == 1
    rows = {r["method"]: r for r in json.loads(out_json.read_text())["results"]}
    assert set(rows) == {"centroid", path, f"{path} (learned boundary)"}
    at = rows[f"{path} (learned boundary)"]
    assert at["auroc"] == rows[path]["auroc"] and at["fpr"] != rows[path]["fpr"]
    gmvae = build_learner({"name": "meta_gmvae", "latent_dim": 3, "decoder_hidden": [4],
                           "net": net})  # fmt: skip
    other = str(save_learner(gmvae, tmp_path / "gmvae.safetensors"))
    code, _, err = run(capsys, "evaluate", "--task", "anomaly", "--k-shot", "2", "--query", "5",
                       "--tasks", "2", "--checkpoint", other, "--boundary")  # fmt: skip
    assert code == 2 and "--boundary is for anomaly tasks" in err and len(err.splitlines()) == 1


def test_evaluate_help_lists_every_registered_kind_and_baseline():
    from click.testing import CliRunner

    from metaunsup.app.cli import cli
    from metaunsup.evaluation.kinds import TASK_KINDS

    shown = CliRunner().invoke(cli, ["evaluate", "--help"], terminal_width=400).output
    words = set(shown.replace(",", " ").replace(";", " ").replace("(", " ").split())
    for name, kind in TASK_KINDS.items():
        assert name in words
        assert set(kind.baselines) <= words, set(kind.baselines) - words
