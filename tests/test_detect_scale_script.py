"""``benchmarks/bench_detect_scale.py``: its tables hold the stated share of anomalies, each
method's child reports what the page shows, and the page has a row per size and method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.scripts import benchmark_module


@pytest.fixture(scope="module")
def script():
    yield from benchmark_module("bench_detect_scale")


def test_the_table_holds_one_percent_of_scattered_anomalies(script):
    x, anomalous = script.make_table(20_000, 5, seed=0)
    assert x.shape == (20_000, 5) and anomalous.dtype == bool
    assert abs(anomalous.mean() - script.ANOMALY_SHARE) < 0.002
    again, same = script.make_table(20_000, 5, seed=0)
    assert np.array_equal(again, x) and np.array_equal(same, anomalous)


def test_each_method_scores_the_table_and_the_page_shows_every_row(script, tmp_path):
    threads = torch.get_num_threads()
    try:
        rows = [script.child(m, 1500, 8, 0, 1) for m in script.METHODS]
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        assert row["auroc"] > 0.9  # scattered noise far from the blobs
        assert 0.0 < row["flagged"] < 0.2 and row["peak_rss_gib"] >= row["data_rss_gib"] > 0
        row["time_ratio_to_iforest"] = 1.0
    record = {"command": "c", "date": "d", "threads": 1, "machine": "m", "columns": 8,
              "rows": rows}  # fmt: skip
    page = tmp_path / "page.md"
    script.write_page(record, page)
    text = page.read_text()
    assert all(f"| 1,500 | {m} |" in text for m in script.METHODS)
