"""The packaged clustering checkpoints' training runs again over seeds: the spread of their scores.

A packaged checkpoint is one training run, made with one seed. This script repeats the run its
JSON card names (``command``: one or more ``metaunsup train CONFIG --out runs/X`` joined by
``&&``) with other seeds, and scores every repetition with the card's own evaluation command
(``evaluations[0]``: the same test tasks, methods and seed), so a reader sees whether the
packaged number is typical or a lucky seed:

- each ``metaunsup train`` of the card runs with ``--seed N --threads 1`` into
  ``WORK/NAME/seedN/X`` (a run that ``features_from`` names lies beside it, as in ``runs/``);
  an interrupted repetition continues with ``--resume`` when the script is run again;
- the last run's ``best.safetensors`` (what ``scripts/package_checkpoint.py`` ships) is
  evaluated with the card's evaluation command, its ``--checkpoint NAME`` replaced by that file
  (and ``--threads 1``), into ``WORK/NAME/seedN/evaluation.json``; a seed whose report is
  there is read again instead of re-run, so a finished seed costs nothing when the script
  runs again; each seed's folder is stamped with the card it repeats (``card.json``), and a
  folder of another card's runs is refused, not reused.

No labels are read by the training (the cards' runs are label-free); the evaluation reads the
test labels only to score, as the card's does.

    python benchmarks/packaged_seeds.py --checkpoint digits --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2
    python benchmarks/packaged_seeds.py --checkpoint mnist --seeds 0 1 2 --jobs 2

Prints the table and writes ``docs/results/packaged_seeds_NAME.md`` and ``.json``; times are
wall seconds on this machine, shared by ``--jobs`` runs at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _record import write_record
from metaunsup.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "src" / "metaunsup" / "checkpoints"
#: The retrained model's name in the rows.
RETRAINED = "retrained"
RESULTS = ROOT / "docs" / "results"


def train_commands(card: dict) -> list[tuple[str, str]]:
    """``(config, run folder name)`` of each ``metaunsup train`` in the card's command."""
    out = []
    for part in card["command"].split("&&"):
        words = shlex.split(part)
        if words[:2] != ["metaunsup", "train"]:
            raise SystemExit(f"the card's command is not a metaunsup train: {part.strip()!r}")
        out.append((words[2], Path(words[words.index("--out") + 1]).name))
    return out


def eval_words(card: dict, checkpoint: Path, json_path: Path) -> list[str]:
    """The card's first evaluation command on ``checkpoint``, one thread, JSON to ``json_path``."""
    words = shlex.split(card["evaluations"][0]["command"])
    keep: list[str] = []
    skip = False
    for word in words[2:]:  # after "metaunsup evaluate"
        if not skip and word in ("--checkpoint", "--json", "--threads"):
            skip = True  # and its value
        elif skip:
            skip = False
        else:
            keep.append(word)
    return [
        "evaluate",
        *keep,
        "--checkpoint",
        str(checkpoint),
        "--json",
        str(json_path),
        "--threads",
        "1",
    ]


def method_scores(report: dict) -> dict[str, float]:
    """Accuracy of each method of an evaluation report."""
    return {r["method"]: float(r["acc"]["mean"]) for r in report["results"]}


def config_argument(config: str) -> str:
    """The config as ``metaunsup train`` should get it: a file of the repository by its full
    path (the runs start elsewhere), a config shipped in the package by its name."""
    path = ROOT / config
    return str(path) if path.is_file() else config


#: The file in a seed's folder naming the card its runs repeat (:func:`check_stamp`).
STAMP = "card.json"


def card_stamp(card: dict) -> dict:
    """What a seed's runs repeat: the card's training command, its config and its evaluation."""
    return {
        "command": card["command"],
        "config": card.get("config"),
        "evaluation": card["evaluations"][0]["command"],
    }


def check_stamp(card: dict, folder: Path) -> None:
    """Make sure ``folder`` holds (or will hold) runs of ``card``: a new folder is stamped with
    the card; a folder stamped with another card, or with none (runs of unknown origin), stops
    the script before it reads anything there, naming the fix. Without this a card packaged
    again with a new config would silently be scored by the earlier config's runs."""
    stamp = folder / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == card_stamp(card):
        return
    if folder.exists() and any(folder.iterdir()):
        why = "another card's runs" if stamp.is_file() else "runs of unknown origin (no card.json)"
        raise SystemExit(
            f"{folder} holds {why}: remove that folder, or give another --work, to train this "
            "card's runs again"
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(card_stamp(card), indent=1) + "\n")


def run_seed(card: dict, work: Path, seed: int) -> dict:
    """Train the card's runs with ``seed`` (resuming a folder that holds them) and evaluate."""
    folder = work / f"seed{seed}"
    check_stamp(card, folder)
    start = time.perf_counter()
    runs = train_commands(card)
    weights = folder / runs[-1][1] / "best.safetensors"
    report_path = folder / "evaluation.json"
    if not report_path.exists():  # written (atomically) only once the seed is done
        for config, name in runs:
            out = folder / name
            cmd = [sys.executable, "-m", "metaunsup", "train", config_argument(config), "--out",
                   str(out), "--seed", str(seed), "--threads", "1", "--quiet"]  # fmt: skip
            if (out / "last.safetensors").exists() or (out / "pretrain.safetensors").exists():
                cmd.append("--resume")
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        words = eval_words(card, weights, report_path)
        subprocess.run([sys.executable, "-m", "metaunsup", *words], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    scores = method_scores(json.loads(report_path.read_text()))
    # the report names the model by its file: call it "retrained" in every seed's row
    scores = {RETRAINED if m == str(weights) else m: v for m, v in scores.items()}
    # wall seconds of this call (a seed finished earlier costs only the check of its run)
    row = {"seed": seed, "scores": scores, "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a packaged checkpoint's name")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once")
    parser.add_argument("--work", type=Path, default=Path("runs/packaged-seeds"))
    args = parser.parse_args(argv)
    card = json.loads((CARDS / f"{args.checkpoint}.json").read_text())
    work = args.work / args.checkpoint
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda s: run_seed(card, work, s), args.seeds))
    packaged = method_scores(card["evaluations"][0]["report"])
    model, retrained = args.checkpoint, RETRAINED  # the packaged and the retrained rows
    if model not in packaged:
        raise SystemExit(f"the card's first evaluation does not score {model!r}")
    methods = [m for m in packaged if m != model]
    acc = np.array([r["scores"][retrained] for r in rows])
    evaluation = card["evaluations"][0]["command"]
    lines = [
        f"# `{args.checkpoint}` trained again over seeds",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC with",
        "",
        "```bash",
        "python benchmarks/packaged_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "```",
        "",
        f"Each seed trains the card's runs again (`{card['command']}` with `--seed N "
        "--threads 1`) and scores the run's `best.safetensors` with the card's evaluation "
        f"command (`{evaluation}`, with that file as the checkpoint, one thread, and the report "
        f"written in the seed's folder). {len(rows)} seeds, {args.jobs} at once, one thread "
        "each, on a 2-core CPU shared with other jobs.",
        "",
        "| seed | " + " | ".join(["retrained", *methods]) + " |",
        "|---:|" + "---:|" * (len(methods) + 1),
    ]
    for r in rows:
        cells = [f"{r['scores'][retrained]:.3f}", *(f"{r['scores'][m]:.3f}" for m in methods)]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
    cells = [f"{packaged[model]:.3f}", *(f"{packaged[m]:.3f}" for m in methods)]
    lines.append("| packaged | " + " | ".join(cells) + " |")
    base = max(methods, key=lambda m: np.mean([r["scores"][m] for r in rows]))
    gain = acc - np.array([r["scores"][base] for r in rows])
    summary = (
        f"Retrained accuracy over seeds {args.seeds}: mean {acc.mean():.3f}, "
        f"worst {acc.min():.3f}, best {acc.max():.3f} (standard deviation {acc.std(ddof=1):.3f}"
        if len(acc) > 1
        else f"Retrained accuracy: {acc.mean():.3f} ("
    ) + (
        f"); the packaged checkpoint scores {packaged[model]:.3f}. Gain over {base} (the "
        f"strongest baseline of the card): mean {gain.mean():+.3f}, worst {gain.min():+.3f}."
    )
    lines += ["", summary]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(RESULTS / f"packaged_seeds_{args.checkpoint}.md", text)
    write_record(
        "packaged_seeds",
        argv,
        RESULTS / f"packaged_seeds_{args.checkpoint}.json",
        checkpoint=args.checkpoint,
        train_command=card["command"],
        evaluation_command=evaluation,
        packaged=packaged,
        rows=rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
