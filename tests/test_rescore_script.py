"""``scripts/rescore_checkpoint.py``: a packaged checkpoint's scoring setting changes in its
file and on its card, with the measurement that chose it; the weights stay; a bad setting
changes nothing."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from metaunsup.checkpoint import packaged_dir, read_checkpoint
from metaunsup.errors import ConfigError
from metaunsup.learners import build_learner

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rescore_checkpoint.py"


def _script(root: Path):
    spec = importlib.util.spec_from_file_location("rescore_checkpoint", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT, module.PACKAGE = root, root / "package"
    return module


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "package").mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(packaged_dir() / f"tabular{suffix}", tmp_path / "package" / f"tabular{suffix}")
    record = {"benchmark": "tabular_prior", "date": "2026-12-05", "command": "python b.py"}
    (tmp_path / "chosen.json").write_text(json.dumps(record))
    return tmp_path


def test_the_setting_lands_in_the_file_and_on_the_card_with_its_evidence(repo: Path):
    script = _script(repo)
    card = script.rescore("tabular", {"score_neighbors": 0.1}, repo / "chosen.json", "cmd")
    tensors, meta = read_checkpoint(repo / "package" / "tabular.safetensors")
    old_tensors, old_meta = read_checkpoint(packaged_dir() / "tabular.safetensors")
    assert meta["learner"]["score_neighbors"] == 0.1
    # every other setting as it was (those added since the file was written at their defaults)
    before = build_learner(old_meta["learner"]).config()
    assert meta["learner"] == {**before, "score_neighbors": 0.1}
    assert all(torch.equal(tensors[k], old_tensors[k]) for k in old_tensors)
    saved = json.loads((repo / "package" / "tabular.json").read_text())
    assert saved == card and card["config"]["learner"]["score_neighbors"] == 0.1
    assert card["scoring"]["before"] == {"score_neighbors": old_meta["learner"]["score_neighbors"]}
    assert card["scoring"]["chosen_by"] == {
        "record": "chosen.json",
        "command": "python b.py",
        "date": "2026-12-05",
    }


def test_a_bad_setting_changes_nothing(repo: Path):
    script = _script(repo)
    before = {p.name: p.read_bytes() for p in (repo / "package").iterdir()}
    with pytest.raises(ConfigError, match="score_neighbors"):
        script.rescore("tabular", {"score_neighbors": 2.5}, repo / "chosen.json", "cmd")
    assert {p.name: p.read_bytes() for p in (repo / "package").iterdir()} == before
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        script.parse_setting("score_neighbors")
    assert script.parse_setting("score_neighbors=0.1") == ("score_neighbors", 0.1)
