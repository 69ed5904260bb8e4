"""``benchmarks/demo_seeds.py`` writes the demo's spread over seeds: the columns of a
checkpoint choice only for runs that made one, and the summary from the rows themselves."""

from __future__ import annotations

import pytest

from tests.helpers.scripts import benchmark_module


@pytest.fixture(scope="module")
def script():
    yield from benchmark_module("demo_seeds")


def _row(seed: int, meta: float, pre: float, step: int | None, last: float | None) -> dict:
    return {
        "seed": seed,
        "meta_trained": meta,
        "pretrained_only": pre,
        "kmeans": 0.74,
        "chosen_step": step,
        "last_step_acc": last,
        "partition_acc_mean": meta + 0.001 * seed,
        "partition_acc_min": meta,
        "partitions_merging_digits": 0,
        "partitions": 5,
        "partition_ari_mean": 1.0,
    }


def test_page_without_a_checkpoint_choice_scores_the_final_weights(script):
    rows = [_row(0, 0.96, 0.92, None, None), _row(1, 0.94, 0.95, None, None)]
    text = script.page(rows, "python benchmarks/demo_seeds.py --jobs 2", 9.0, 2, 300)
    assert "chosen step" not in text and "The last step instead" not in text
    assert "its final weights" in text and "python benchmarks/demo_seeds.py --jobs 2" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.count("|") == 9 for line in table)  # 8 columns, header and rows alike
    assert "| 1 | 0.940 | 0.950 | 0.740 | -0.010 |" in text
    assert "mean 0.950, worst 0.940, best 0.960" in text
    assert "beats the pre-training alone on 1 of 2 seeds" in text


def test_page_with_a_checkpoint_choice_shows_the_step_and_the_last_step(script):
    rows = [_row(0, 0.95, 0.90, 125, 0.94), _row(1, 0.93, 0.91, 400, 0.93)]
    text = script.page(rows, "cmd", 4.0, 1, 100)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.count("|") == 11 for line in table)  # 10 columns
    assert "| 0 | 0.950 | 125 | 0.940 | 0.900 |" in text
    assert "The last step instead: mean 0.935, worst 0.930." in text
