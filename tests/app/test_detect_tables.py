"""``metaunsup detect`` on tables as they come, and the features that make a row unusual."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaunsup.app.cli import main
from metaunsup.cluster.explain import unusual_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frame(n: int, anomalies: int, seed: int) -> pd.DataFrame:
    """Normal rows, then ``anomalies`` rows whose ``pressure`` alone is far off."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "pressure": rng.normal(10, 1, n),
            "temperature": rng.normal(20, 2, n),
            "flow": rng.normal(5, 0.5, n),
            "site": rng.choice(["north", "south"], n),
        }
    )
    frame.loc[n - anomalies :, "pressure"] += 8.0
    frame.loc[rng.random(n) < 0.1, "temperature"] = np.nan
    return frame


def test_unusual_features_rank_the_one_that_makes_the_anomaly():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 5))
    x = rng.normal(size=(20, 5))
    x[:, 2] += 7.0
    x[3, 4] = np.nan
    for row in unusual_features(x, reference, [f"f{j}" for j in range(5)]):
        assert row[0][0] == "f2" and row[0][1] > 4


def test_detect_a_table_with_a_reference(tmp_path: Path, capsys):
    normal, test = tmp_path / "normal.csv", tmp_path / "test.csv"
    _frame(300, 0, 0).to_csv(normal, index=False)
    _frame(100, 5, 1).to_csv(test, index=False)
    out = tmp_path / "scores.csv"
    code = main(["detect", str(test), "--normal", str(normal), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    top = rows[:5]  # ranked by score: the five anomalies first, each for its pressure
    assert sorted(int(r["index"]) for r in top) == [95, 96, 97, 98, 99]
    assert all(r["flag"] == "1" and r["unusual"].startswith("pressure +") for r in top)
    assert sum(r["flag"] == "1" for r in rows) <= 5 + 10  # few false alarms at fpr 0.05


def test_detect_a_table_with_missing_cells_imputed(tmp_path: Path, capsys):
    test = tmp_path / "test.csv"
    _frame(200, 4, 2).to_csv(test, index=False)
    out = tmp_path / "scores.csv"
    code = main(["detect", str(test), "--impute", "knn", "--ignore", "site", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["index"]) for r in rows[:4]) == [196, 197, 198, 199]
    assert "site" not in "".join(r["unusual"] for r in rows)


def test_detect_report_page_ranks_and_explains_the_anomalies(tmp_path: Path, capsys):
    import re

    normal, test = tmp_path / "normal.csv", tmp_path / "test.csv"
    _frame(300, 0, 0).to_csv(normal, index=False)
    _frame(100, 5, 1).to_csv(test, index=False)
    out, report = tmp_path / "scores.csv", tmp_path / "report"
    argv = ["detect", str(test), "--normal", str(normal), "--out", str(out)]
    code = main([*argv, "--report", str(report), "--json"])
    assert code == 0, capsys.readouterr().err
    page = (report / "index.html").read_text()
    with open(out, newline="") as f:
        ranked = list(csv.DictReader(f))
    shown = re.findall(r"<tr(?: class=\"(flagged)\")?><td>(\d+)</td><td>(\d+)</td>", page)
    assert len(shown) == min(25, len(ranked))  # the most anomalous, in the CSV's order
    assert [row for _, _, row in shown] == [r["index"] for r in ranked[: len(shown)]]
    assert [cls == "flagged" for cls, _, _ in shown] == [
        r["flag"] == "1" for r in ranked[: len(shown)]
    ]
    assert page.count("pressure +") >= 5 and "what makes it unusual" in page
    assert page.count('src="data:image/png;base64,') == 2  # histogram and map, inlined
    assert "http://" not in page and "https://" not in page
    flagged = sum(r["flag"] == "1" for r in ranked)
    assert f"{flagged} of 100" in page


def test_detect_neighbors_sets_the_tabular_scorers_count(tmp_path: Path, capsys):
    normal, test = tmp_path / "normal.csv", tmp_path / "test.csv"
    _frame(300, 0, 0).to_csv(normal, index=False)
    _frame(100, 5, 1).to_csv(test, index=False)
    ranked = {}
    for neighbors in ("10", "0.1"):
        out = tmp_path / f"scores-{neighbors}.csv"
        code = main(["detect", str(test), "--normal", str(normal), "--checkpoint", "tabular",
                     "--neighbors", neighbors, "--out", str(out)])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        with open(out, newline="") as f:
            ranked[neighbors] = [(r["index"], r["score"]) for r in csv.DictReader(f)]
        assert sorted(int(i) for i, _ in ranked[neighbors][:5]) == [95, 96, 97, 98, 99]
    assert ranked["10"] != ranked["0.1"]  # the setting reached the scorer
    for bad, why in ((["--neighbors", "ten"], "--neighbors takes"),
                     (["--neighbors", "10"], "needs a checkpoint")):  # fmt: skip
        out = tmp_path / "bad.csv"
        code = main(["detect", str(test), *bad, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("metaunsup: error:") and why in err, err
        assert err.count("\n") == 1 and not out.exists()
