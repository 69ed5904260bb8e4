"""``scripts/recalibrate_checkpoint.py --refresh-evaluations``: a card's stale evaluation
reports are replaced by the re-run reports its commands write, and only by those."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "recalibrate_checkpoint.py"


def _script():
    spec = importlib.util.spec_from_file_location("recalibrate_checkpoint", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(date: str, k_shot: int = 2, fpr: float = 0.1) -> dict:
    return {
        "dataset": "mnist", "split": "test", "task": "anomaly", "n_way": 1, "k_shot": k_shot,
        "n_query": 100, "tasks": 1000, "seed": 0, "results": [{"fpr": {"mean": fpr}}],
        "environment": {"date": date},
    }  # fmt: skip


def _card(path: Path) -> dict:
    command = f"metaunsup evaluate --checkpoint x --task anomaly --json {path}"
    return {
        "calibration": {"date": "2026-12-04", "evaluations": "stale"},
        "evaluations": [{"command": command, "report": _report("2026-12-03")}],
    }


def test_a_re_run_report_replaces_the_stale_one(tmp_path):
    path = tmp_path / "k2.json"
    path.write_text(json.dumps(_report("2026-12-04", fpr=0.05)))
    card = _card(path)
    _script().refresh_evaluations(card)
    assert card["evaluations"][0]["report"]["results"][0]["fpr"]["mean"] == 0.05
    assert card["calibration"]["evaluations"] == "re-measured with this calibration on 2026-12-04"


@pytest.mark.parametrize(
    ("report", "why"),
    [
        (_report("2026-12-03", fpr=0.05), "measured before the calibration"),
        (_report("2026-12-04", k_shot=10), "settings differ"),
    ],
)
def test_a_report_that_was_not_re_run_or_is_another_evaluation_is_refused(tmp_path, report, why):
    path = tmp_path / "k2.json"
    path.write_text(json.dumps(report))
    card = _card(path)
    before = copy.deepcopy(card)
    with pytest.raises(SystemExit, match=why):
        _script().refresh_evaluations(card)
    assert card == before  # nothing on the card changed


def test_a_checkpoint_without_a_calibration_step_is_refused_before_any_work(tmp_path):
    from metaunsup.checkpoint import resolve_checkpoint
    from metaunsup.errors import ConfigError
    from metaunsup.training.config import load_config
    from metaunsup.training.recalibrate import recalibrate_checkpoint

    with pytest.raises(ConfigError, match=r"'meta_kmeans' run of task\.kind 'clustering' has no"):
        recalibrate_checkpoint(load_config("digits-unsup"), tmp_path, resolve_checkpoint("digits"))
    assert not any(tmp_path.iterdir())
