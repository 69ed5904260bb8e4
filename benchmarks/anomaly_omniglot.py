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
command that reproduces it, and the page ``docs/results/anomaly_omniglot.md``. Also measured:
the AUROC drop when 10% of a ``K = 10`` support is anomalous (one drawing of another
character), on both tracks, with the same task seeds.

``--method`` runs a subset of the baselines (default: all); the page lists the ones left out
and ``--note`` says why. A checkpoint that meta-learned a decision boundary (Meta-SVDD, OC-MAML)
is scored a second time with its flags at that boundary (``metaunsup evaluate --boundary``: the
row ``CHECKPOINT (learned boundary)``, the operating point of OC-MAML's published figures).
``--name`` names the page and its JSON files (default ``anomaly_omniglot``), so that another
checkpoint's page does not replace the packaged model's; ``--about`` is a sentence on the page
saying what that checkpoint is. ``--page`` writes the page again from the JSON files (the same
options), without measuring.

Run: ``.venv/bin/python benchmarks/anomaly_omniglot.py [--checkpoint omniglot-anomaly]
[--tasks 1000] [--method NAME ...] [--note TEXT] [--name NAME] [--threads 1]
[--out docs/results]``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import torch

from metaunsup.app.commands.evaluate import at_boundary
from metaunsup.app.report.tables import report_title, results_table
from metaunsup.data import load
from metaunsup.evaluation.anomaly import anomaly_kind
from metaunsup.evaluation.anomaly_baselines import ANOMALY_BASELINES
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape, evaluate
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.learners import BoundaryScorer, load_learner

ROOT = Path(__file__).resolve().parents[1]
TRACKS = {"easy": "anomaly", "hard": "anomaly-hard"}
#: OC-MAML's published balanced accuracy on the easy track (Frikha et al. 2021, Table 1).
PUBLISHED = {2: 0.966, 10: 0.976}
#: The contaminated-support measurement: support size, anomalous share, baselines beside.
CONTAMINATED_K, CONTAMINATION, CONTAMINATED_BASELINES = 10, 0.1, ("centroid", "knn")


def command(
    checkpoint: str, kind: str, k: int, tasks: int, path: Path, names: list[str], boundary: bool
) -> str:
    methods = " ".join(f"--method {m}" for m in names)
    return (
        f"metaunsup evaluate --checkpoint {checkpoint} --dataset omniglot --split evaluation "
        f"--task {kind} --k-shot {k} --query {20 - k} --tasks {tasks} --seed 0 --threads 1 "
        f"{'--boundary ' * boundary}{methods} "
        f"--json {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="omniglot-anomaly")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--method", action="append", choices=ANOMALY_BASELINES, default=None)
    parser.add_argument("--note", default="", help="why baselines were left out (on the page)")
    parser.add_argument("--name", default="anomaly_omniglot", help="page and JSON file names")
    parser.add_argument("--about", default="", help="what the checkpoint is (on the page)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--page", action="store_true", help="rewrite the page from the JSON")
    args = parser.parse_args()
    names = list(args.method or ANOMALY_BASELINES)
    if args.page:
        read = lambda path: json.loads(path.read_text())  # noqa: E731
        reports = {(t, k): read(args.out / f"{args.name}_{t}_k{k}.json") for t in TRACKS
                   for k in (2, 10)}  # fmt: skip
        contaminated = {t: read(args.out / f"{args.name}_{t}_k{CONTAMINATED_K}_contaminated.json")
                        for t in TRACKS}  # fmt: skip
        atomic_write_text(args.out / f"{args.name}.md", page(reports, contaminated, names, args))
        return
    torch.set_num_threads(args.threads)
    test = load("omniglot", "evaluation")
    learner = load_learner(args.checkpoint)
    boundary = isinstance(learner, BoundaryScorer)
    reports, contaminated = {}, {}
    for track, name in TRACKS.items():
        kind = task_kind(name)
        for k in (2, 10):
            path = args.out / f"{args.name}_{track}_k{k}.json"
            methods = [*kind.resolve(names), kind.method_of(args.checkpoint, learner)]
            if boundary:
                methods.append(at_boundary(methods[-1], args.checkpoint))
            report = evaluate(kind, test, methods, shape=TaskShape(1, k, 20 - k),
                              n_tasks=args.tasks, seed=0).to_json()  # fmt: skip
            report["command"] = command(args.checkpoint, name, k, args.tasks, path, names,
                                        boundary)  # fmt: skip
            atomic_write_json(path, report)
            reports[(track, k)] = report
            print(report_title(report))
            print(results_table(report), flush=True)
        contaminated[track] = _contaminated(test, track, learner, args)
    atomic_write_text(args.out / f"{args.name}.md", page(reports, contaminated, names, args))


def _contaminated(test: Any, track: str, learner: Any, args: argparse.Namespace) -> dict:
    """The K = 10 tasks of ``track`` with 10% of the support anomalous (seed 0)."""
    anomalies = "same-group" if track == "hard" else None
    kind = anomaly_kind(TRACKS[track], anomalies=anomalies, contamination=CONTAMINATION)
    beside = [b for b in CONTAMINATED_BASELINES if b in (args.method or ANOMALY_BASELINES)]
    methods = [*kind.resolve(beside), kind.method_of(args.checkpoint, learner)]
    shape = TaskShape(1, CONTAMINATED_K, 20 - CONTAMINATED_K)
    report = evaluate(kind, test, methods, shape=shape, n_tasks=args.tasks, seed=0).to_json()
    atomic_write_json(args.out / f"{args.name}_{track}_k{CONTAMINATED_K}_contaminated.json",
                      report)  # fmt: skip
    print(f"{track} track, K = {CONTAMINATED_K}, {CONTAMINATION:.0%} of the support anomalous")
    print(results_table(report), flush=True)
    return report


def page(reports: dict, contaminated: dict, names: list[str], args: argparse.Namespace) -> str:
    env = next(iter(reports.values()))["environment"]
    lines = [
        "# Few-shot one-class detection on Omniglot: easy and hard tracks",
        "",
        f"Measured {env['date']} ({env['torch_threads']} torch thread, a shared CPU) with "
        f"`python benchmarks/anomaly_omniglot.py --checkpoint {args.checkpoint} --tasks "
        f"{args.tasks}{_options(names, args.note)}{_name_option(args.name, args.about)} "
        "--threads 1`; each table is also one "
        "`metaunsup evaluate` command (below it).",
        *(["", f"**Model.** {args.about}"] if args.about else []),
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
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    for k, target in PUBLISHED.items():
        rows = reports[("easy", k)]["results"]
        ours = next(r for r in rows if r["method"] == args.checkpoint)
        got = ours["balanced_acc"]["mean"]
        lines.append(f"| balanced accuracy at K = {k} ≥ {target} (OC-MAML, published) | "
                     f"{got:.3f} | {'yes' if got >= target else 'no'} |")  # fmt: skip
        at = next((r for r in rows if r["method"] == f"{args.checkpoint} (learned boundary)"),
                  None)  # fmt: skip
        if at is not None:
            got, alarms = at["balanced_acc"]["mean"], at["fpr"]["mean"]
            lines.append(f"| the same at its learned boundary (OC-MAML's operating point; no "
                         f"false-alarm target) | {got:.3f}, false alarms {alarms:.3f} | "
                         f"{'yes' if got >= target else 'no'} |")  # fmt: skip
    for (track, k), report in reports.items():
        ours = next(r for r in report["results"] if r["method"] == args.checkpoint)
        rate = ours["fpr"]["mean"]
        lines.append(f"| false alarms in [0.03, 0.07] at fpr = 0.05, {track} track, K = {k} | "
                     f"{rate:.3f} ± {ours['fpr']['ci95']:.3f} | "
                     f"{'yes' if 0.03 <= rate <= 0.07 else 'no'} |")  # fmt: skip
    left_out = [b for b in ANOMALY_BASELINES if b not in names]
    if left_out:
        lines += ["", "## Baselines not measured here", "",
                  f"Not run: {', '.join(f'`{b}`' for b in left_out)}."]  # fmt: skip
        if args.note:
            lines += ["", f"Why: {args.note}"]
    lines += ["", *_contamination_table(reports, contaminated, args.name)]
    for (track, k), report in reports.items():
        lines += ["", f"## {track} track, K = {k}", "", results_table(report), "",
                  f"`{report['command']}`"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _name_option(name: str, about: str) -> str:
    named = "" if name == "anomaly_omniglot" else f" --name {name}"
    return named + (f" --about {json.dumps(about)}" * bool(about))


def _options(names: list[str], note: str) -> str:
    if names == list(ANOMALY_BASELINES):
        return ""
    return "".join(f" --method {n}" for n in names) + (f" --note {json.dumps(note)}" * bool(note))


def _contamination_table(reports: dict, contaminated: dict, name: str) -> list[str]:
    k = CONTAMINATED_K
    lines = [
        f"## Contaminated support (K = {k}, {CONTAMINATION:.0%} of it anomalous, "
        f"{next(iter(contaminated.values()))['tasks']} tasks per track, seed 0)",
        "",
        "One of the ten support slots holds an anomaly instead (drawn like the track's query "
        "anomalies, never the same drawings); task seed 0 as on the clean tracks; written to "
        f"`{name}_<track>_k{k}_contaminated.json`.",
        "",
        "| track | method | AUROC, clean | AUROC, contaminated | drop |",
        "|---|---|---|---|---|",
    ]
    for track, report in contaminated.items():
        clean = {r["method"]: r["auroc"]["mean"] for r in reports[(track, k)]["results"]}
        for r in report["results"]:
            got = r["auroc"]["mean"]
            was = clean[r["method"]]
            lines.append(
                f"| {track} | {r['method']} | {was:.3f} | {got:.3f} ± "
                f"{r['auroc']['ci95']:.3f} | {was - got:+.3f} |"
            )
    return lines


if __name__ == "__main__":
    main()
