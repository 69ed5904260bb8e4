"""k unknown: how well ``MetaKMeans(n_clusters="auto")`` finds the number of clusters, by rule.

For each rule of ``k_selection`` (``"silhouette"``: the highest mean silhouette of k-means
partitions; ``"eigengap"``: the largest eigengap of the 10-nearest-neighbour graph;
``"auto"``: the default, which uses the eigenvalue count with the threshold on the
checkpoint's card where there is one, else the eigengap with a checkpoint, else the
silhouette) the estimator chooses ``k`` without labels and clusters with it; the rule "auto"
used is recorded:

* **Omniglot alphabets**: each of the 20 evaluation alphabets (20-47 characters x 20
  drawings, never seen in training) whole, with the packaged ``omniglot-protonet`` and
  ``omniglot-unsup`` checkpoints, ``max_clusters=60``; mean absolute error of the chosen ``k``
  and Hungarian accuracy with it;
* **MNIST tasks**: ``--tasks`` seeded 10-class x 20-image tasks of the MNIST test split with
  the ``mnist`` checkpoint, ``max_clusters=15``; how often ``k = 10`` is found, and accuracy;
* **tables** without a checkpoint (the choice is made on the scaled table before
  meta-training, so ``meta_steps=0`` gives the same ``k``): digits, iris, wine, breast cancer,
  and 10 draws of 4 small round blobs (30 points each, 2-D).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/choose_k.py --threads 1

Prints the tables and writes ``docs/results/choose_k.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

from metaunsup import MetaKMeans, data
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.metrics import clustering_accuracy
from metaunsup.tasks import ClusteringTaskSampler

ROOT = Path(__file__).resolve().parents[1]
RULES = ("silhouette", "eigengap", "auto")


def alphabets(checkpoint: str, rule: str, assign: str = "kmeans") -> dict:
    ev = data.load("omniglot", "evaluation")
    groups, y_all = np.asarray(ev.groups), ev.y.numpy()
    rows = []
    for alphabet in sorted(set(groups.tolist())):
        classes = np.flatnonzero(groups == alphabet)
        keep = np.isin(y_all, classes)
        x, y = ev.x.numpy()[keep, 0], y_all[keep]
        model = MetaKMeans(
            "auto",
            checkpoint=checkpoint,
            k_selection=rule,
            assign=assign,
            max_clusters=60,
            random_state=0,
        ).fit(x)
        rows.append(
            {
                "alphabet": alphabet,
                "characters": len(classes),
                "chosen_k": model.n_clusters_,
                "acc": clustering_accuracy(y, model.labels_),
                "used": model.representation_,
                "rule": model.k_choice_.method,
            }
        )
    return {
        "rule": "/".join(sorted({r["rule"] for r in rows})),
        "k_error": float(np.mean([abs(r["chosen_k"] - r["characters"]) for r in rows])),
        "acc": float(np.mean([r["acc"] for r in rows])),
        "rows": rows,
    }


def mnist_tasks(rule: str, tasks: int) -> dict:
    batch = ClusteringTaskSampler(data.load("mnist", "test"), 10, 20, seed=0).sample(tasks)
    ks, accs, used = [], [], set()
    for x, y in zip(batch.x.numpy(), batch.y.numpy(), strict=True):
        model = MetaKMeans(
            "auto", checkpoint="mnist", k_selection=rule, max_clusters=15, random_state=0
        ).fit(x[:, 0])
        ks.append(model.n_clusters_)
        used.add(model.k_choice_.method)
        accs.append(clustering_accuracy(y, model.labels_))
    return {
        "rule": "/".join(sorted(used)),
        "hit_rate": float(np.mean(np.asarray(ks) == 10)),
        "k_error": float(np.mean(np.abs(np.asarray(ks) - 10))),
        "acc": float(np.mean(accs)),
        "ks": ks,
    }


def tables(rule: str) -> dict:
    out = {}
    for name, loader in (
        ("digits", load_digits),
        ("iris", load_iris),
        ("wine", load_wine),
        ("breast cancer", load_breast_cancer),
    ):
        X, y = loader(return_X_y=True)
        model = MetaKMeans("auto", k_selection=rule, meta_steps=0, random_state=0).fit(X)
        out[name] = {
            "classes": len(np.unique(y)),
            "chosen_k": model.n_clusters_,
            "rule": model.k_choice_.method,
        }
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    found, used = 0, set()
    for seed in range(10):  # small round blobs: 4 x 30 points in 2-D, k in 2..8
        rng = np.random.default_rng(seed)
        X = np.concatenate([c + rng.normal(size=(30, 2)) for c in centres])
        model = MetaKMeans("auto", k_selection=rule, meta_steps=0, max_clusters=8).fit(X)
        found += model.n_clusters_ == 4
        used.add(model.k_choice_.method)
    out["4 blobs x 30 (2-D), 10 seeds: k = 4 found"] = {
        "classes": 4,
        "chosen_k": f"{found}/10",
        "rule": "/".join(sorted(used)),
    }
    return out


def label(rule: str, result: dict) -> str:
    """``rule``, and for ``"auto"`` the rule it used."""
    return f"auto ({result['rule']})" if rule == "auto" else rule


def markdown(results: dict, args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# k unknown: choosing the number of clusters without labels",
        "",
        f"Measured {dt.date.today().isoformat()} ({seconds / 60:.0f} min on {args.threads} "
        "thread(s) of a 2-core CPU shared with other jobs) with",
        "",
        "```bash",
        "python benchmarks/choose_k.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f'`MetaKMeans("auto", k_selection=RULE, assign="{args.assign}", random_state=0)` '
        "(the alphabets; the MNIST tasks and tables with the default k-means assignment); "
        "labels only score the result. "
        'The default (`k_selection="auto"`, rows "auto (RULE USED)") counts the graph '
        "eigenvalues above the threshold calibrated on the checkpoint's card "
        "(`scripts/calibrate_k.py`: Omniglot background alphabets only, never these evaluation "
        "alphabets), uses the eigengap with a checkpoint without one and the silhouette without "
        "a checkpoint.",
        "",
        "## The 20 Omniglot evaluation alphabets (20-47 characters), k in 2..60",
        "",
        "| checkpoint | rule | mean abs. k error | accuracy with the chosen k |",
        "|---|---|---:|---:|",
    ]
    for (ck, rule), r in results["alphabets"].items():
        lines.append(f"| `{ck}` | {label(rule, r)} | {r['k_error']:.1f} | {r['acc']:.3f} |")
    if args.alphabets_only:
        lines += ["", f"Per alphabet: `docs/results/{args.name}.json`."]
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"## MNIST test tasks, 10 classes x 20 images ({args.tasks} tasks), checkpoint "
        "`mnist`, k in 2..15",
        "",
        "| rule | k = 10 found | mean abs. k error | accuracy with the chosen k |",
        "|---|---:|---:|---:|",
    ]
    for rule, r in results["mnist"].items():
        lines.append(
            f"| {label(rule, r)} | {100 * r['hit_rate']:.0f}% | {r['k_error']:.2f} | "
            f"{r['acc']:.3f} |"
        )
    lines += [
        "",
        "## Tables without a checkpoint (scaled as the estimator scales them), k in 2..15",
        "",
        "| data | classes | " + " | ".join(f"k by {r}" for r in RULES) + " |",
        "|---|---:|" + "---:|" * len(RULES),
    ]
    for name in results["tables"][RULES[0]]:
        cells = " | ".join(
            str(results["tables"][r][name]["chosen_k"])
            + (f" ({results['tables'][r][name]['rule']})" if r == "auto" else "")
            for r in RULES
        )
        lines.append(f"| {name} | {results['tables'][RULES[0]][name]['classes']} | {cells} |")
    lines.append("")
    lines.append("Per alphabet: `docs/results/choose_k.json`.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--assign", choices=("kmeans", "spectral"), default="kmeans",
                        help="MetaKMeans' assign= on the alphabets")  # fmt: skip
    parser.add_argument("--alphabets-only", action="store_true")
    parser.add_argument("--name", default="choose_k", help="the page and JSON's file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results: dict = {"alphabets": {}, "mnist": {}, "tables": {}}
    for rule in RULES:
        for ck in ("omniglot-protonet", "omniglot-unsup"):
            r = alphabets(ck, rule, args.assign)
            results["alphabets"][(ck, rule)] = r
            print(f"alphabets {ck} {rule}: k error {r['k_error']:.1f}, acc {r['acc']:.3f}")
        if args.alphabets_only:
            continue
        results["mnist"][rule] = r = mnist_tasks(rule, args.tasks)
        print(f"mnist {rule}: k=10 in {100 * r['hit_rate']:.0f}%, acc {r['acc']:.3f}", flush=True)
        results["tables"][rule] = tables(rule)
    seconds = time.perf_counter() - t0
    text = markdown(results, args, seconds)
    print(text)
    record = {
        "benchmark": args.name,
        "command": "python benchmarks/choose_k.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "seconds": round(seconds, 1),
        "alphabets": {f"{ck} {rule}": r for (ck, rule), r in results["alphabets"].items()},
        "mnist": results["mnist"],
        "tables": results["tables"],
    }
    atomic_write_json(args.out / f"{args.name}.json", record)
    atomic_write_text(args.out / f"{args.name}.md", text)
    print(f"wrote {args.out / args.name}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
