"""``benchmarks/packaged_seeds.py`` repeats exactly the runs and the evaluation a packaged
checkpoint's card names, changing only the seed, the threads and where things are written."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.helpers.scripts import benchmark_module

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "src" / "metaunsup" / "checkpoints"


@pytest.fixture(scope="module")
def script():
    yield from benchmark_module("packaged_seeds")


def _card(name: str) -> dict:
    return json.loads((CARDS / f"{name}.json").read_text())


def test_every_train_command_of_a_card_is_repeated_in_order(script):
    # digits' run is the demo's, whose config ships in the package and is named
    assert script.train_commands(_card("digits")) == [("digits-unsup", "digits-unsup")]
    assert script.config_argument("digits-unsup") == "digits-unsup"
    # mnist's run takes its pseudo-classes from mnist-unsup's features: that run comes first
    assert script.train_commands(_card("mnist")) == [
        ("configs/mnist-unsup.toml", "mnist-unsup"),
        ("configs/mnist-unsup-fast.toml", "mnist-unsup-fast"),
    ]
    for config, _ in script.train_commands(_card("mnist")):
        assert (ROOT / config).is_file()
        assert script.config_argument(config) == str(ROOT / config)


def test_a_card_whose_command_is_not_a_training_is_refused(script):
    with pytest.raises(SystemExit, match="not a metaunsup train"):
        script.train_commands({"command": "python make_weights.py --out runs/x"})


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_the_evaluation_is_the_cards_own_on_the_retrained_weights(script, name, tmp_path):
    card = _card(name)
    weights, report = tmp_path / "best.safetensors", tmp_path / "evaluation.json"
    words = script.eval_words(card, weights, report)
    original = shlex.split(card["evaluations"][0]["command"])
    assert words[0] == "evaluate" and original[:2] == ["metaunsup", "evaluate"]
    # every option of the card's command but the checkpoint, the JSON path and the threads
    kept = original[2:]
    for option in ("--checkpoint", "--json", "--threads"):
        i = kept.index(option)
        kept = kept[:i] + kept[i + 2 :]
    assert words[1 : 1 + len(kept)] == kept
    assert words[1 + len(kept) :] == [
        "--checkpoint", str(weights), "--json", str(report), "--threads", "1",
    ]  # fmt: skip


def test_a_seed_folder_of_another_cards_runs_is_refused_not_reused(script, tmp_path):
    card = _card("digits")
    folder = tmp_path / "seed0"
    script.check_stamp(card, folder)  # a new folder is stamped with the card
    (folder / "evaluation.json").write_text("{}")
    script.check_stamp(card, folder)  # the same card: its runs are reused
    packaged_again = {**card, "config": {**card["config"], "train": {"steps": 1}}}
    with pytest.raises(SystemExit, match="holds another card's runs: remove that folder"):
        script.check_stamp(packaged_again, folder)
    (folder / script.STAMP).unlink()
    with pytest.raises(SystemExit, match="runs of unknown origin"):
        script.check_stamp(card, folder)
