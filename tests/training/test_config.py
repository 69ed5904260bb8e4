"""Run configs: TOML parsing, defaults, and messages that name the bad key."""

from __future__ import annotations

import pytest

from metaunsup.errors import ConfigError
from metaunsup.training.config import config_from_dict, load_config

GOOD = """
name = "toy"
[data]
dataset = "digits"
split = "train"
[task]
kind = "fewshot"
n_way = 5
k_shot = 1
n_query = 5
[learner]
name = "protonet"
[train]
steps = 10
lr = 0.001
"""


def test_good_config_parses_with_defaults(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.name == "toy" and cfg.task.n_way == 5 and cfg.train.steps == 10
    assert cfg.train.meta_batch == 4 and cfg.data.val_fraction == 0.1
    assert cfg.learner == {"name": "protonet"}
    assert cfg.to_dict()["train"]["lr"] == 0.001


def test_overrides_replace_values(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(GOOD)
    cfg = load_config(path, {"train.steps": 3, "train.seed": 7})
    assert cfg.train.steps == 3 and cfg.train.seed == 7


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"train": {"stesp": 3}}, "unknown key.*stesp"),
        ({"train": {"steps": "many"}}, "train.steps must be int"),
        ({"train": {"steps": 0}}, "train.steps must be at least 1"),
        ({"train": {"lr": -1.0}}, "train.lr must be positive"),
        ({"train": {"optimizer": "lbfgs"}}, "optimizer"),
        ({"task": {"kind": "regression"}}, "task.kind"),
        ({"task": {"n_way": 0}}, "task.n_way must be at least 1"),
        ({"data": {"split": "train"}}, r"\[data\] is missing dataset"),
        ({"data": {"dataset": "digits", "split": "train", "val_fraction": 1.5}}, "val_fraction"),
        ({"learner": {"inner_lr": 0.1}}, "needs a 'name'"),
        ({"bogus": 1}, "unknown top-level"),
    ],
)
def test_bad_values_are_named(patch, message):
    raw = {
        "name": "toy",
        "data": {"dataset": "digits", "split": "train"},
        "task": {"kind": "fewshot", "n_way": 5, "k_shot": 1, "n_query": 5},
        "learner": {"name": "protonet"},
        "train": {"steps": 10},
    }
    for key, value in patch.items():
        if isinstance(value, dict) and key in raw:
            raw[key] = value if key in ("data", "learner") else {**raw[key], **value}
        else:
            raw[key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_every_shipped_config_is_valid():
    """Each file in configs/ parses, and its learner builds with the data shape it will see."""
    from pathlib import Path

    from metaunsup.learners import build_learner
    from metaunsup.training.build import learner_config

    shapes = {"omniglot": (1, 28, 28), "mnist": (1, 28, 28), "digits": (1, 8, 8)}
    shapes["synthetic-tables"] = (100,)  # the prior's tables (metaunsup.tasks.synthetic_tables)
    from metaunsup.training.config import packaged_configs

    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))
    assert configs, "configs/ is empty"
    configs += list(packaged_configs().values())
    for path in configs:
        cfg = load_config(path)
        learner = build_learner(learner_config(cfg, shapes[cfg.data.dataset]))
        assert learner.config()["name"] == cfg.learner["name"], path.name


def test_packaged_configs_load_by_name_and_a_missing_config_says_which_exist(tmp_path):
    from metaunsup.training.config import load_config, packaged_configs

    assert "digits-unsup" in packaged_configs()
    assert load_config("digits-unsup", {"train.steps": 7}).train.steps == 7
    with pytest.raises(ConfigError, match=r"not found \(packaged configs: digits-unsup"):
        load_config("no-such-run")
    with pytest.raises(ConfigError, match=r"is a folder; give a \.toml file"):
        load_config(tmp_path)
