"""``metaunsup train --tensorboard DIR --json``: the JSONL log's numbers as TensorBoard scalars
(read back with TensorBoard's own reader), a resumed run without doubled steps, and the JSON
summary."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metaunsup.app.cli import main

CONFIG = """\
name = "tb"
[data]
dataset = "digits"
split = "train"
val_fraction = 0.3
[task]
kind = "fewshot"
n_way = 3
k_shot = 1
n_query = 3
[learner]
name = "protonet"
[learner.net]
name = "conv4"
hidden = 8
[train]
steps = {steps}
meta_batch = 2
val_every = 4
val_tasks = 6
checkpoint_every = 3
"""


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def train(tmp_path, capsys, steps: int, *extra: str) -> tuple[int, str]:
    config = tmp_path / f"tb{steps}.toml"
    config.write_text(CONFIG.format(steps=steps))
    run, board = str(tmp_path / "run"), str(tmp_path / "tb")
    code = main(
        ["train", str(config), "--out", run, "--quiet", "--threads", "1", "--tensorboard", board,
         *extra]
    )  # fmt: skip
    return code, capsys.readouterr().out


def test_tensorboard_has_the_log_scalars_and_json_summary(tmp_path, capsys):
    code, out = train(tmp_path, capsys, 8, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["steps"] == 8 and summary["val_metric"] == "acc"
    assert 0 <= summary["best_metric"] <= 1 and summary["best_step"] in (4, 8)
    assert summary["checkpoints"]["best"].endswith("best.safetensors")
    log = [
        json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().split("\n")[:-1]
    ]
    tb = scalars(tmp_path / "tb")
    losses = [(r["step"], r["loss"]) for r in log if "loss" in r]
    assert [s for s, _ in tb["train/loss"]] == [s for s, _ in losses] == list(range(1, 9))
    assert [v for _, v in tb["train/loss"]] == pytest.approx([v for _, v in losses], rel=1e-6)
    assert [s for s, _ in tb["val/acc"]] == [4, 8]
    assert [v for _, v in tb["val/acc"]] == pytest.approx(
        [r["val"]["acc"] for r in log if "val" in r], rel=1e-6
    )
    assert "train/lr" in tb and "train/seconds" in tb


def test_resumed_run_continues_the_curves_once(tmp_path, capsys):
    assert train(tmp_path, capsys, 6)[0] == 0
    code, out = train(tmp_path, capsys, 10, "--resume")
    assert code == 0 and "trained tb: 10 steps" in out
    steps = [s for s, _ in scalars(tmp_path / "tb")["train/loss"]]
    assert sorted(steps) == list(range(1, 11))
