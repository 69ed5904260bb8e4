"""``metaunsup cluster`` on tables as they come: text and ID columns, missing cells, column
choice, the summary of what was done to each column, and the ``--report`` page (rendered in
headless Chromium when one is installed)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaunsup.app.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A CSV of 150 rows in 3 groups: an ID, two informative numbers (with missing cells), a
    categorical column that follows the group, and noise; and the groups."""
    rng = np.random.default_rng(0)
    group = rng.integers(0, 3, 150)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(1, 151),
            "a": 5.0 * group + rng.normal(size=150),
            "b": -4.0 * (group == 1) + rng.normal(size=150),
            "kind": np.array(["x", "y", "z"])[group],
            "noise": rng.normal(size=150),
        }
    )
    frame.loc[rng.random(150) < 0.1, "a"] = np.nan
    frame.loc[rng.random(150) < 0.1, "kind"] = None
    path = tmp_path_factory.mktemp("table") / "people.csv"
    frame.to_csv(path, index=False)
    return path, group


def test_table_with_text_ids_and_missing_cells(table, tmp_path, capsys):
    from sklearn.metrics import adjusted_rand_score

    path, group = table
    out = tmp_path / "labels.csv"
    code, printed, err = run(
        capsys, "cluster", path, "--k", "3", "--out", out, "--json"
    )  # the default 300 meta-steps: 30 leave the embedding of a 150-row table half-trained
    assert code == 0, err
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "label"] and len(rows) == 151
    labels = np.array([int(r[1]) for r in rows[1:]])
    assert adjusted_rand_score(group, labels) > 0.9
    info = json.loads(printed)
    assert info["examples"] == 150 and info["example_shape"] == [1 + 1 + 3 + 1]


def test_summary_says_what_was_done_to_each_column(table, capsys):
    path, _ = table
    code, out, err = run(
        capsys, "cluster", path, "--k", "3", "--meta-steps", "2", "--ignore", "noise", "--json"
    )
    assert code == 0, err
    info = json.loads(out)
    columns = "\n".join(info["columns"])
    assert "row_id: left out (an identifier: all values distinct)" in columns
    assert re.search(r"a: numeric \(standardised: mean [\d.]+, sd [\d.]+\); \d+ missing", columns)
    assert "kind: one-hot (3 categories, one feature each)" in columns
    assert "noise: left out (--ignore)" in columns
    assert info["missing_cells"] > 0
    filled = ", filled from the 5 nearest rows for the k-means"
    fell_back = info["clustered"]["use"] == "features"  # the guard weighed the filled columns
    assert info["missing_values"] == "native" + (filled if fell_back else "")
    assert "pseudo-partition agreement" in info["clustered"]["reason"]
    code, out, err = run(capsys, "cluster", path, "--k", "3", "--meta-steps", "2")
    assert "column kind: one-hot" in err  # the text summary goes to stderr with the labels


def test_columns_and_impute(table, capsys):
    path, _ = table
    code, out, err = run(
        capsys,
        "cluster",
        path,
        "--k",
        "3",
        "--meta-steps",
        "2",
        "--columns",
        "a",
        "--columns",
        "b",
        "--impute",
        "knn",
        "--json",
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["example_shape"] == [2]
    assert info["missing_values"] == "imputed (knn)"


def _report(table, tmp_path, capsys) -> tuple[Path, str]:
    path, _ = table
    folder = tmp_path / "report"
    code, _, err = run(
        capsys, "cluster", path, "--k", "3", "--meta-steps", "30", "--report", folder, "--quiet"
    )
    assert code == 0, err
    page = folder / "index.html"
    return page, page.read_text()


def test_report_page_is_self_contained_and_explains_each_cluster(table, tmp_path, capsys):
    page, text = _report(table, tmp_path, capsys)
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html"]
    for c in range(3):
        assert f'id="cluster-{c}"' in text
    assert 'src="data:image/png;base64,' in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing from a network
    # the group-defining features lead each cluster's table, never the noise
    for section in text.split('<section class="cluster"')[1:]:
        first = re.search(r"<tr><td>([^<]+)</td>", section)
        assert first is not None and first.group(1) != "noise"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


@pytest.mark.slow
def test_report_renders_in_headless_chromium(table, tmp_path, capsys):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium) to render the page")
    page, _ = _report(table, tmp_path, capsys)
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    for c in range(3):
        assert f'<section class="cluster" id="cluster-{c}">' in dom
        assert f"<h2>Cluster {c}</h2>" in dom
    assert "Map of the embedding" in dom


def test_npy_table_with_nan_is_clustered_natively(table, tmp_path, capsys):
    path, _ = table
    x = pd.read_csv(path)[["a", "b"]].to_numpy(dtype=np.float64)
    npy = tmp_path / "cells.npy"
    np.save(npy, x)
    code, printed, err = run(capsys, "cluster", npy, "--k", "3", "--meta-steps", "30", "--json")
    assert code == 0, err
    info = json.loads(printed)
    assert info["missing_cells"] == round(float(np.isnan(x).mean()), 4) > 0
    assert info["missing_values"].startswith("native")
    code, _, err = run(capsys, "cluster", npy, "--k", "3", "--meta-steps", "30")
    assert code == 0, err
    assert re.search(r"missing cells: \d+\.\d%, taken native", err)


def test_checkpoint_auto_keeps_the_more_reproducible_path_and_says_why(tmp_path, capsys):
    rng = np.random.default_rng(1)
    group = rng.integers(0, 3, 120)
    frame = pd.DataFrame({"a": 4.0 * group + rng.normal(size=120), "b": rng.normal(size=120),
                          "kind": np.array(["x", "y", "z"])[group]})  # fmt: skip
    path = tmp_path / "complete.csv"
    frame.to_csv(path, index=False)
    argv = ["cluster", path, "--k", "3", "--checkpoint", "auto", "--meta-steps", "20"]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    info = json.loads(out)
    choice = info["model_choice"]
    assert set(choice["scores"]) == {"tabular", "self-training"}
    assert choice["chosen"] == max(
        choice["scores"], key=lambda n: (choice["scores"][n], n != "tabular")
    )
    if choice["chosen"] == "tabular":
        assert info["model"] == {"checkpoint": "tabular"}
    else:
        assert "self_trained" in info["model"]
    code, _, err = run(capsys, *argv)
    assert code == 0 and f"model choice (--checkpoint auto): {choice['chosen']}, " in err
    code, _, err = run(capsys, *argv, "--normalize")
    assert code == 2 and "give --checkpoint NAME, or leave out --normalize" in err
