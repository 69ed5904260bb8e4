"""Omniglot one-class detection: a meta-learned scorer against the baselines, easy and hard.

Protocol (Frikha et al., AAAI 2021, Omniglot one-class, in our words): a test task's normal
class is one character of the Omniglot *evaluation* split (never seen in meta-training); its
support is ``K`` of that character's 20 drawings (``K`` = 2 or 10) and its query the other
``20 − K`` drawings plus as many anomalies, drawings of other characters: from **other
alphabets** (easy track, ``--task anomaly``) or from **the same alphabet** (hard track,
``--task anomaly-hard``). 1000 tasks per track and ``K``, the identical tasks for every method
(``AnomalyTaskSampler(seed=0)``). Scores as in ``metaunsup.evaluation.anomaly``.

Each (track, K) is one ``metaunsup evaluate`` run; this script runs the four through the same
function, writes each report (``docs/results/anomaly_omniglot_<track>_k<K>.json``) with the
command that reproduces it, and the page ``docs/results/anomaly_omniglot.md``.

Run: ``.venv/bin/python benchmarks/anomaly_omniglot.py [--checkpoint omniglot-anomaly]
[--tasks 1000] [--threads 1] [--out docs/results]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import torch

from metaunsup.app.report.tables import report_title, results_table
from metaunsup.data import load
from metaunsup.evaluation.anomaly_baselines import ANOMALY_BASELINES
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape, evaluate
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.learners import load_learner

ROOT = Path(__file__).resolve().parents[1]
TRACKS = {"easy": "anomaly", "hard": "anomaly-hard"}
#: OC-MAML's published balanced accuracy on the easy track (Frikha et al. 2021, Table 1).
PUBLISHED = {2: 0.966, 10: 0.976}


def command(checkpoint: str, kind: str, k: int, tasks: int, path: Path) -> str:
    methods = " ".join(f"--method {m}" for m in ANOMALY_BASELINES)
    return (
        f"metaunsup evaluate --checkpoint {checkpoint} --dataset omniglot --split evaluation "
        f"--task {kind} --k-shot {k} --query {20 - k} --tasks {tasks} --seed 0 --threads 1 "
        f"{methods} --json {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="omniglot-anomaly")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test = load("omniglot", "evaluation")
    learner = load_learner(args.checkpoint)
    reports = {}
    for track, name in TRACKS.items():
        kind = task_kind(name)
        for k in (2, 10):
            path = args.out / f"anomaly_omniglot_{track}_k{k}.json"
            methods = [*kind.resolve(ANOMALY_BASELINES), kind.method_of(args.checkpoint, learner)]
            report = evaluate(kind, test, methods, shape=TaskShape(1, k, 20 - k),
                              n_tasks=args.tasks, seed=0).to_json()  # fmt: skip
            report["command"] = command(args.checkpoint, name, k, args.tasks, path)
            atomic_write_json(path, report)
            reports[(track, k)] = report
            print(report_title(report))
            print(results_table(report), flush=True)
    atomic_write_text(args.out / "anomaly_omniglot.md", page(reports, args))


def page(reports: dict, args: argparse.Namespace) -> str:
    env = next(iter(reports.values()))["environment"]
    lines = [
        "# Few-shot one-class detection on Omniglot: easy and hard tracks",
        "",
        f"Measured {env['date']} ({env['torch_threads']} torch thread, a shared CPU) with "
        f"`python benchmarks/anomaly_omniglot.py --checkpoint {args.checkpoint} --tasks "
        f"{args.tasks}`; each table is also one `metaunsup evaluate` command (below it).",
        "",
        "**Protocol.** A task's normal class is one character of the Omniglot evaluation split "
        "(its 20 alphabets and 659 characters are never seen in meta-training); the support is "
        "K of its 20 drawings, the query its other 20 − K drawings and as many drawings of "
        "other characters: from other alphabets on the **easy** track, from the same alphabet "
        "on the **hard** track. Every method scores the identical tasks; the labels only score. "
        "Balanced accuracy and false alarms are those of the flags at fpr = 0.05, with each "
        "method's threshold (see [anomaly_mnist.md](anomaly_mnist.md#thresholds-and-false-alarms)"
        "): conformal p-values from K = 2 or 10 examples cannot reach 0.05, so the baselines "
        "without an own threshold flag nothing; PyOD's flag their support's top 5%; the "
        "meta-learned scorer uses its meta-calibration. Cells: mean ± 95% CI over the tasks.",
        "",
        "| goal (easy track) | measured | met |",
        "|---|---|---|",
    ]
    for k, target in PUBLISHED.items():
        rows = reports[("easy", k)]["results"]
        ours = next(r for r in rows if r["method"] == args.checkpoint)
        got = ours["balanced_acc"]["mean"]
        lines.append(f"| balanced accuracy at K = {k} ≥ {target} (OC-MAML, published) | "
                     f"{got:.3f} | {'yes' if got >= target else 'no'} |")  # fmt: skip
    for (track, k), report in reports.items():
        lines += ["", f"## {track} track, K = {k}", "", results_table(report), "",
                  f"`{report['command']}`"]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
