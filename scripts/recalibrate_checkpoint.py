"""Measure a packaged checkpoint's calibration (its null table) anew and record it on its card.

    python scripts/recalibrate_checkpoint.py NAME RUN_DIR [--threads 1]
    python scripts/recalibrate_checkpoint.py NAME --refresh-evaluations

``RUN_DIR`` is the folder the checkpoint's run was trained into (its pre-training and partition
caches rebuild the training source without training again). The weights stay as they are; only
the ``null_*`` buffers of ``src/metaunsup/checkpoints/NAME.safetensors`` change, and the card
``NAME.json`` gains ``calibration``: the command, the date and the statistic. The card's
evaluations are then stale: re-run its evaluate commands (each writes the report named by its
``--json``), then ``--refresh-evaluations`` puts those reports on the card in place of the stale
ones and marks them re-measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

import torch

from metaunsup.fileio import atomic_write_json
from metaunsup.training.config import config_from_dict
from metaunsup.training.recalibrate import recalibrate_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "metaunsup" / "checkpoints"
#: What the card says of its evaluations until they are re-run and re-packaged.
STALE = (
    "measured with the previous calibration: their fpr and balanced_acc are stale until the "
    "evaluate commands are re-run; auroc and auprc do not depend on the calibration"
)


#: What a re-run report must share with the card's stale one to replace it.
SETTINGS = ("dataset", "split", "task", "n_way", "k_shot", "n_query", "tasks", "seed")


def refresh_evaluations(card: dict) -> None:
    """Replace each of the card's evaluation reports by the file its command writes (``--json
    PATH``, relative to the repository): the same settings, dated no earlier than the
    calibration (else the command was not re-run, and nothing is written)."""
    fresh = []
    for evaluation in card["evaluations"]:
        words = shlex.split(evaluation["command"])
        path = ROOT / words[words.index("--json") + 1]
        report = json.loads(path.read_text())
        old = evaluation["report"]
        if any(report.get(key) != old.get(key) for key in SETTINGS):
            raise SystemExit(f"{path}: not the card's evaluation (settings differ)")
        if report["environment"]["date"] < card["calibration"]["date"]:
            raise SystemExit(f"{path}: measured before the calibration; re-run its command")
        fresh.append(report)
    for evaluation, report in zip(card["evaluations"], fresh, strict=True):
        evaluation["report"] = report
    latest = max(r["environment"]["date"] for r in fresh)
    card["calibration"]["evaluations"] = f"re-measured with this calibration on {latest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refresh-evaluations", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    card_path = PACKAGE / f"{args.name}.json"
    card = json.loads(card_path.read_text())
    if args.refresh_evaluations:
        refresh_evaluations(card)
        atomic_write_json(card_path, card)
        print(f"{args.name}: {len(card['evaluations'])} evaluations refreshed")
        return
    if args.run_dir is None:
        parser.error("RUN_DIR is needed to recalibrate (or give --refresh-evaluations)")
    raw = {k: v for k, v in card["config"].items() if k != "unsupervised_record"}
    cfg = config_from_dict(raw)
    recalibrate_checkpoint(cfg, args.run_dir, PACKAGE / f"{args.name}.safetensors")
    card["calibration"] = {
        "command": "python scripts/recalibrate_checkpoint.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "statistic": "largest leave-one-out score of the support; pseudo-classes: the training "
        "CACTUs clusters and held-out pixel-space clusters, the heavier tail of the two at every "
        "level (metaunsup.evaluation.anomaly.worst_family)",
        "evaluations": STALE,
    }
    atomic_write_json(card_path, card)
    print(f"recalibrated {args.name}")


if __name__ == "__main__":
    main()
