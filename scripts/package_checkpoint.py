"""Ship a trained run as a packaged checkpoint: ``src/metaunsup/checkpoints/NAME.safetensors``
plus a JSON card ``NAME.json`` saying how it was made and what it scores.

    python scripts/package_checkpoint.py RUN_DIR NAME --command "metaunsup train ..." \
        --evaluation results.json [--evaluation more.json ...]

The weights are the run's ``best.safetensors`` (model only, no optimiser state). The card holds
the run config, the data it saw, the training command and times (pre-training and
meta-training, read from the run), the date, and the evaluation reports given (each made with
``metaunsup evaluate --checkpoint NAME ... --json FILE``), with the command that reproduces
each, and the input convention (``--input``, :mod:`metaunsup.data.normalize`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path

from metaunsup.checkpoint import read_checkpoint
from metaunsup.data.normalize import InputConvention
from metaunsup.fileio import atomic_write_json

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "metaunsup" / "checkpoints"


def training_seconds(run_dir: Path, pre: dict, last: dict, unsup: dict) -> dict[str, float]:
    """Pre-training and meta-training times of the run; with ``features_from``, also the
    pre-training of the run whose features made its pseudo-classes (part of its cost)."""
    seconds = {
        "pretraining": pre.get("seconds", 0.0),
        "meta_training": round(float(last.get("seconds", 0.0)), 1),
    }
    source = unsup.get("features_from")
    if source:
        _, teacher = read_checkpoint(run_dir.parent / source / "pretrain.safetensors")
        seconds[f"pretraining of {source} (its features made the pseudo-classes)"] = teacher[
            "record"
        ]["seconds"]
    return seconds


def table_convention(net: dict) -> dict | None:
    """The input convention of a table network (a masked MLP, :mod:`metaunsup.estimators.
    table_input`), or ``None`` for an image network."""
    if net.get("name") not in ("masked-mlp", "gated-masked-mlp"):
        return None
    return {
        "kind": "table",
        "max_features": net["in_features"],
        "columns": "standardised by the estimator: centred and divided by their standard "
        "deviation over the observed cells of the data given to fit",
        "width": f"any d <= {net['in_features']}: the first d inputs, the others absent",
        "missing": "NaN cells allowed (the network reads the observed-cell mask)",
    }


def image_convention(given: dict, image_size: object) -> dict:
    """The card's input convention of an image network from ``--input``; its ``note`` (words
    for a person, which :class:`InputConvention` does not hold) is kept."""
    convention = InputConvention.from_card({"input": given}, image_size).to_json()
    if given.get("note"):
        convention["note"] = str(given["note"])
    return convention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--command", required=True, help="the training command of the run")
    parser.add_argument("--evaluation", type=Path, action="append", default=[])
    parser.add_argument("--evaluation-command", action="append", default=[])
    parser.add_argument(
        "--input",
        type=json.loads,
        default={},
        help="the input convention for the card, e.g. '{\"box\": [20, 20]}' for MNIST-framed "
        "images (metaunsup.data.normalize.InputConvention; default: bright ink, [0, 1], the "
        'network\'s image size, not re-framed), with an optional "note" for a person',
    )
    args = parser.parse_args()

    source = args.run_dir / "best.safetensors"
    _, meta = read_checkpoint(source)  # validates the file
    _, last = read_checkpoint(args.run_dir / "last.safetensors")
    run = meta.get("run", {})
    unsup = run.get("unsupervised_record") or {}
    pre = unsup.get("pretrain") or {}
    net = meta["learner"]["net"]
    table = table_convention(net)
    synthetic = run.get("data", {}).get("dataset") == "synthetic-tables"
    evaluations = []
    for i, path in enumerate(args.evaluation):
        report = json.loads(path.read_text())
        command = args.evaluation_command[i] if i < len(args.evaluation_command) else None
        evaluations.append({"command": command, "report": report})
    card = {
        "name": args.name,
        "learner": meta["learner"]["name"],
        "input_shape": meta["learner"]["net"].get("image_size")
        or meta["learner"]["net"].get("in_features"),
        "input": table or image_convention(args.input, net.get("image_size")),
        "data": {
            "dataset": run.get("data", {}).get("dataset"),
            "split": run.get("data", {}).get("split"),
            "labels_used": "none"
            if run.get("unsupervised")
            else "synthetic labels only (no real data)"
            if synthetic
            else "training labels",
        },
        "config": run,
        "command": args.command,
        "training_seconds": training_seconds(args.run_dir, pre, last, unsup),
        "steps": last.get("step"),
        "packaged": dt.date.today().isoformat(),
        "evaluations": evaluations,
    }
    PACKAGE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, PACKAGE / f"{args.name}.safetensors")
    atomic_write_json(PACKAGE / f"{args.name}.json", card)
    size = (PACKAGE / f"{args.name}.safetensors").stat().st_size
    print(f"packaged {args.name}: {size / 1024:.0f} KiB, card {PACKAGE / f'{args.name}.json'}")


if __name__ == "__main__":
    main()
