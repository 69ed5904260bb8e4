"""Protocol C of docs/protocols.md: supervised few-shot classification on Omniglot.

Trains (or resumes) each config, evaluates its best checkpoint on 1000 seeded 5-way tasks of
the evaluation characters, prints a markdown table and writes JSON and a results page.

    .venv/bin/python benchmarks/fewshot_supervised.py                 # all four configs
    .venv/bin/python benchmarks/fewshot_supervised.py --only omniglot-protonet-5w1s

Training resumes from ``runs/NAME/last.safetensors`` when a run was interrupted, so the script
can be stopped and started again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

from metaunsup import data
from metaunsup.checkpoint import read_checkpoint
from metaunsup.evaluation.fewshot import evaluate_fewshot
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.learners import load_learner
from metaunsup.training.build import run_state, train_run
from metaunsup.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [
    "omniglot-protonet-5w1s",
    "omniglot-protonet-5w5s",
    "omniglot-maml-5w1s",
    "omniglot-maml-5w5s",
]
#: Published reference figures (MAML paper; Prototypical Networks paper), 5-way.
PUBLISHED = {"protonet": {1: 98.8, 5: 99.7}, "maml": {1: 98.7, 5: 99.9}}
GOALS = {"protonet": {1: 97.0, 5: 99.0}, "maml": {1: 95.0, 5: 98.0}}


def _trained_steps(run_dir: Path) -> int:
    last = run_dir / "last.safetensors"
    if not last.is_file():
        return 0
    return int(read_checkpoint(last)[1]["step"])


def run_one(name: str, runs: Path, tasks: int, seed: int, progress: bool) -> dict:
    cfg = load_config(ROOT / "configs" / f"{name}.toml")
    run_dir = runs / name
    done = _trained_steps(run_dir)
    if done < cfg.train.steps:
        train_run(cfg, run_dir, resume=run_state(run_dir).resumable, progress=progress)
    _, meta = read_checkpoint(run_dir / "last.safetensors")
    _, best = read_checkpoint(run_dir / "best.safetensors")
    learner = load_learner(run_dir / "best.safetensors")
    test = data.load("omniglot", "evaluation")
    t0 = time.perf_counter()
    report = evaluate_fewshot(
        test,
        [(name, learner)],
        n_way=5,
        k_shot=cfg.task.k_shot,
        n_query=15,
        n_tasks=tasks,
        seed=seed,
    ).to_json()
    result = report["results"][0]
    algo = cfg.learner["name"]
    return {
        "config": name,
        "learner": algo,
        "k_shot": cfg.task.k_shot,
        "acc": result["acc"],
        "ms_per_task": result["ms_per_task"],
        "train_steps": meta["step"],
        "train_seconds": meta["seconds"],
        "best_step": best["step"],
        "eval_seconds": time.perf_counter() - t0,
        "published": PUBLISHED[algo][cfg.task.k_shot],
        "goal": GOALS[algo][cfg.task.k_shot],
        "train_command": f"metaunsup train configs/{name}.toml --out runs/{name}",
        "eval_command": (
            f"metaunsup evaluate --checkpoint runs/{name}/best.safetensors --dataset omniglot "
            f"--split evaluation --task fewshot --n-way 5 --k-shot {cfg.task.k_shot} "
            f"--query 15 --tasks {tasks} --seed {seed}"
        ),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| config | test task | accuracy (%) | goal | published | train steps | train time "
        "| ms/task |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        acc = f"{100 * r['acc']['mean']:.2f} ± {100 * r['acc']['ci95']:.2f}"
        minutes = r["train_seconds"] / 60
        lines.append(
            f"| {r['config']} | 5-way {r['k_shot']}-shot | {acc} | {r['goal']} | "
            f"{r['published']} | {r['train_steps']} | {minutes:.1f} min | {r['ms_per_task']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="Config name(s) to run.")
    parser.add_argument("--runs", default="runs", help="Folder of the training runs.")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/fewshot_supervised.json")
    parser.add_argument("--markdown", default="docs/results/omniglot_supervised.md")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--collect",
        action="append",
        default=[],
        help="Run nothing: merge the rows of these JSON files (from runs made side by side "
        "with other --json paths) into --json and --markdown.",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.collect:
        fresh = [row for path in args.collect for row in json.loads(Path(path).read_text())["rows"]]
    else:
        names = args.only or CONFIGS
        fresh = [run_one(n, Path(args.runs), args.tasks, args.seed, not args.quiet) for n in names]
        date = dt.date.today().isoformat()
        for r in fresh:
            r["date"] = date
    print(table(fresh))
    # keep the rows of configs not re-run this time, so the page always shows every result
    previous = []
    if Path(args.json).is_file():
        previous = json.loads(Path(args.json).read_text()).get("rows", [])
    by_name = {r["config"]: r for r in previous} | {r["config"]: r for r in fresh}
    rows = [by_name[n] for n in CONFIGS if n in by_name]
    text = table(rows)
    date = max(r.get("date", "") for r in rows) or dt.date.today().isoformat()
    atomic_write_json(args.json, {"date": date, "threads": args.threads, "rows": rows})
    commands = "\n".join(f"    {r['train_command']}\n    {r['eval_command']}" for r in rows)
    page = (
        "# Supervised few-shot classification on Omniglot (protocol C)\n\n"
        f"Measured {date} on a 2-core CPU, {args.tasks} seeded test tasks of the evaluation "
        "characters, 15 queries per class, mean ± 95% CI. Training times are wall clock on "
        "this CPU; runs were made two at a time (1 torch thread each) or alone (2 threads), so "
        "times and ms/task carry that noise. Three of the four runs were stopped and resumed "
        "once (resume is exact).\n\n"
        f"{text}\n\nReproduce every row (train, then evaluate):\n\n"
        f"    .venv/bin/python benchmarks/fewshot_supervised.py "
        f"{' '.join('--only ' + r['config'] for r in rows)}\n\nor by hand:\n\n{commands}\n"
    )
    atomic_write_text(args.markdown, page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
