"""``benchmarks/tables_anomaly.py``: the page's per-method largest shortfall against the best
other method of each table (whether any one detector is within 0.02 of the best everywhere)."""

from __future__ import annotations

import pytest

from tests.helpers.scripts import benchmark_module


@pytest.fixture(scope="module")
def script():
    yield from benchmark_module("tables_anomaly")


def cells(**means: list[float]) -> dict:
    return {m: {"auroc": runs, "seconds": 0.0} for m, runs in means.items()}


def test_worst_gap_is_against_the_best_other_method_of_each_table(script):
    results = {
        "t1": cells(a=[0.90, 0.92], b=[0.80, 0.80], c=[0.95, 0.95]),  # a -0.04, b -0.15, c +0.04
        "t2": cells(a=[0.70, 0.70], b=[0.75, 0.75], c=[0.40, 0.40]),  # a -0.05, b +0.05, c -0.35
    }
    lines = script.worst_gaps(results, ["a", "b", "c"])
    listed = [line for line in lines if line.startswith("- ")]
    assert listed == ["- a: -0.050 (t2)", "- b: -0.150 (t1)", "- c: -0.350 (t2)"]
    assert lines[-1] == "Within 0.02 of the best other method on every table: no method."


def test_a_method_within_the_margin_everywhere_is_named(script):
    results = {
        "t1": cells(a=[0.90], b=[0.91], c=[0.50]),
        "t2": cells(a=[0.80], b=[0.70], c=[0.60]),
    }
    lines = script.worst_gaps(results, ["a", "b", "c"])
    assert lines[-1] == "Within 0.02 of the best other method on every table: a."
