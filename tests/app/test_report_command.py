"""``metaunsup report``: markdown page, comparison bars and convergence curves from results JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaunsup.app.cli import main

pytest.importorskip("matplotlib")

DOCS_RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _report(accs: dict[str, float], curves: bool = False) -> dict:
    data = {
        "dataset": "digits", "split": "test", "task": "clustering", "n_way": 10, "k_shot": 20,
        "tasks": 100, "seed": 0,
        "results": [
            {"method": m, "acc": {"mean": a, "ci95": 0.01}, "nmi": {"mean": a - 0.05, "ci95": 0.01},
             "ms_per_task": 2.0}
            for m, a in accs.items()
        ],
        "environment": {"torch": "x"},
    }  # fmt: skip
    if curves:
        data["curves"] = {
            "meta-trained": [
                {"steps": s, "acc": 0.6 + 0.05 * i, "acc_ci95": 0.01, "ms_per_task": 1.0 + i}
                for i, s in enumerate((0, 1, 5, 10))
            ],
            "kmeans": [{"steps": s, "acc": 0.5, "acc_ci95": 0.01} for s in (1, 10)],
        }
        data["training"] = {"seconds": 12.5}
    return data


def _bar_rows(path: Path) -> int:
    """Rows of the image crossing coloured (bar) pixels in the first panel's middle column."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    column = rgb[:, rgb.shape[1] // 6 : rgb.shape[1] // 3].reshape(rgb.shape[0], -1, 3)
    coloured = ((column.max(-1) - column.min(-1)) > 60).any(1)
    # count runs of coloured rows: one run per bar
    return int((coloured[1:] & ~coloured[:-1]).sum() + coloured[0])


def test_page_with_bars_tables_and_curves(tmp_path, capsys):
    a = tmp_path / "baselines.json"
    b = tmp_path / "meta.json"
    a.write_text(json.dumps(_report({"kmeans": 0.74, "gmm": 0.65})))
    b.write_text(json.dumps(_report({"meta-kmeans": 0.9}, curves=True)))
    out = tmp_path / "page"
    code = main(["report", str(a), str(b), "--out", str(out), "--title", "Digits"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.png",
        "convergence-meta.png",
        "report.md",
    ]
    page = (out / "report.md").read_text()
    assert page.startswith("# Digits\n")
    assert "![comparison of methods](comparison.png)" in page
    assert "![convergence: meta](convergence-meta.png)" in page
    assert "## baselines" in page and "## meta" in page
    assert "| kmeans " in page and "0.740 ± 0.010" in page and "| meta-kmeans " in page
    assert "- meta-trained: accuracy after 0: 0.600, 1: 0.650, 5: 0.700, 10: 0.750" in page
    assert "Meta-training took 12.5 s." in page
    for name in ("comparison.png", "convergence-meta.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 300
    assert stdout.strip().splitlines()[-1] == f"wrote {out / 'report.md'}"


def test_more_methods_draw_more_bars(tmp_path, capsys):
    one, three = tmp_path / "one.json", tmp_path / "three.json"
    one.write_text(json.dumps(_report({"a": 0.8})))
    three.write_text(json.dumps(_report({"a": 0.8, "b": 0.8, "c": 0.8})))
    assert main(["report", str(one), "--out", str(tmp_path / "p1")]) == 0
    assert main(["report", str(three), "--out", str(tmp_path / "p3")]) == 0
    capsys.readouterr()
    assert _bar_rows(tmp_path / "p1" / "comparison.png") == 1
    assert _bar_rows(tmp_path / "p3" / "comparison.png") == 3


def test_published_results_render(tmp_path, capsys):
    # the evaluation reports among them (an experiment's page record, such as the anomaly
    # experiment's, is not one: `metaunsup report` renders evaluate's reports)
    files = sorted(
        str(p)
        for p in DOCS_RESULTS.glob("*_baselines.json")
        if "dataset" in json.loads(p.read_text())
    )
    assert files, "docs/results/*_baselines.json evaluation reports are expected"
    assert main(["report", *files, "--out", str(tmp_path / "page")]) == 0
    page = (tmp_path / "page" / "report.md").read_text()
    assert "| sklearn-kmeans " in page
    capsys.readouterr()


def test_same_file_twice_gets_two_sections(tmp_path, capsys):
    a = tmp_path / "r.json"
    a.write_text(json.dumps(_report({"kmeans": 0.7}, curves=True)))
    assert main(["report", str(a), str(a), "--out", str(tmp_path / "page")]) == 0
    capsys.readouterr()
    page = (tmp_path / "page" / "report.md").read_text()
    assert "## r-1" in page and "## r-2" in page
    assert (tmp_path / "page" / "convergence-r-1.png").is_file()
