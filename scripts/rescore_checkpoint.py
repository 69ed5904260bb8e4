"""Change how a packaged checkpoint scores — a learner setting that acts after meta-training —
and record on its card what changed, when, and the measurement that chose it.

    python scripts/rescore_checkpoint.py NAME --set KEY=VALUE [--set ...] \
        --chosen-by docs/results/RECORD.json

The weights stay as they are: only the learner configuration in the header of
``src/metaunsup/checkpoints/NAME.safetensors`` changes
(:func:`metaunsup.learners.with_learner_options`, which refuses an unknown or out-of-range
setting before writing), and the card ``NAME.json`` gets the same values in its run config
(so the config it names trains the model as packaged) and a ``scoring`` entry: the command,
the date, the settings before and after, and the benchmark record (``--chosen-by``, a JSON
written by a script in ``benchmarks/``) whose measurement chose them. ``VALUE`` is read as
JSON (``0.1`` a float, ``10`` an integer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

from metaunsup.checkpoint import read_checkpoint_meta
from metaunsup.fileio import atomic_write_json
from metaunsup.learners import with_learner_options

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "metaunsup" / "checkpoints"


def parse_setting(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE read as JSON)``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise SystemExit(f"--set {key}: {value!r} is not a JSON value (e.g. 0.1 or 10)") from None


def rescore(name: str, settings: dict[str, object], chosen_by: Path, command: str) -> dict:
    """Rewrite the packaged checkpoint ``name``'s learner settings and its card; the card."""
    weights = PACKAGE / f"{name}.safetensors"
    card_path = PACKAGE / f"{name}.json"
    card = json.loads(card_path.read_text())
    record = json.loads(chosen_by.read_text())
    before = read_checkpoint_meta(weights)["learner"]
    with_learner_options(weights, weights, settings)
    card["config"]["learner"].update(settings)
    card["scoring"] = {
        "command": command,
        "date": dt.date.today().isoformat(),
        "before": {key: before[key] for key in settings},
        "after": settings,
        "chosen_by": {
            "record": chosen_by.resolve().relative_to(ROOT).as_posix(),
            "command": record["command"],
            "date": record["date"],
        },
        "evaluations": "the card's evaluations were measured with the settings before; those "
        "that depend on them are stale until their commands are re-run",
    }
    atomic_write_json(card_path, card)
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--set", dest="settings", action="append", required=True)
    parser.add_argument("--chosen-by", type=Path, required=True)
    args = parser.parse_args()
    settings = dict(parse_setting(text) for text in args.settings)
    command = "python scripts/rescore_checkpoint.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    rescore(args.name, settings, args.chosen_by, command)
    print(f"{args.name}: " + ", ".join(f"{k} = {v}" for k, v in settings.items()))


if __name__ == "__main__":
    main()
