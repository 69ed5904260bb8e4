"""Self-training on real tables against the tools a data scientist would pick, and missing cells.

Six real tables, each written to a CSV and read back with :func:`metaunsup.data.tables.load_table`
(the path ``metaunsup cluster`` takes, with its default ``standardize="auto"``: columns are
standardised when their spreads differ by more than 10x from the median or there are text
columns, else kept as they are), so every method sees the same encoded numbers:

- scikit-learn's iris (150 x 4; kept as it is), wine (178 x 13) and breast_cancer (569 x 30)
  (both standardised);
- scikit-learn's digits (all 1797 x 64; pixels / 16) and MNIST's 10,000 test images as 784
  columns (pixels / 255), both kept as they are;
- statsmodels' anes96 (944 voters x 9 columns): the 1996 US election survey with its coded
  columns turned into the text categories of its codebook (party identification, education,
  income band: one-hot or frequency encoded), numbers standardised; the classes are the vote
  (Clinton/Dole); ``vote`` and the derived ``logpopul`` are left out.

Methods, each told the true number of classes ``k`` (HDBSCAN finds its own):

- ``tabular``: :class:`metaunsup.MetaKMeans` with ``checkpoint="tabular"``, the zero-shot model
  meta-trained only on synthetic tables (default settings, its label-free guard included); a
  table of more than 100 columns (MNIST) is refused by it, so there the row holds what the
  refusal names as the fix, self-training (marked in the page);
- ``self-training``: :class:`metaunsup.MetaKMeans` without a checkpoint (default settings:
  300 meta-training steps on pseudo-tasks from the table itself);
- ``metaunsup (auto)``: ``metaunsup cluster --checkpoint auto``
  (:func:`metaunsup.estimators.table_choice.fit_table_model`): both of the above, keeping the
  one whose clustered representation's partitions agree more when made again (no labels);
  self-training on a table of more than 100 columns;
- ``K-means``: scikit-learn's ``KMeans(k, n_init=10)``;
- ``spectral``: scikit-learn's ``SpectralClustering(k, affinity="nearest_neighbors")``
  (10-nearest-neighbour graph);
- ``UMAP + GMM``: umap-learn (10 components, 20 neighbours, ``min_dist=0``, as N2D) then
  scikit-learn's ``GaussianMixture(k)``;
- ``HDBSCAN``: scikit-learn's ``HDBSCAN()`` with its defaults; its noise points (label -1) form
  one more cluster when scored. It is deterministic, so it runs once per table and the same
  score stands for every seed.

Scores against the known classes: accuracy (best one-to-one matching), NMI, ARI; mean and spread
(min-max) over the seeds; the mean rank of each method over the tables (1 = best, by mean
score). No setting of any method was tuned on the labels.

Missing cells (``--missing``): on every table but MNIST, cells removed at random (MCAR, 10% and
30%) and value-dependent (MNAR: a cell in the top 40% of its column is removed with probability
1/2, so about 20% of cells, mostly high ones), one mask per seed, the class-defining structure
untouched otherwise. ``metaunsup (auto) (native)``, ``tabular (native)`` and
``self-training (native)`` (missing cells as they are; each guard scores the features with the
missing cells filled from the 5 nearest rows, :class:`metaunsup.estimators.missing.FilledFeatures`)
against ``kNN-impute + self-training`` (``MetaKMeans(impute="knn")``), ``mean-impute + K-means``
and ``kNN-impute + K-means`` (scikit-learn's ``SimpleImputer`` / ``KNNImputer(5)``), beside the
complete table.

    python benchmarks/tables_vs_tools.py --threads 1 --seeds 0 1 2 --missing

``--add tabular`` runs only that method (and K-means again, as the time reference of the same
run) and adds its rows to the JSON of an earlier run, recording its own command and date; on
tables of more than 100 columns, where ``tabular``'s path is self-training, it copies the
earlier run's self-training cell instead of repeating those runs. ``--add NAME`` with a
missing-cells column runs it alone on the missing-cell rows (the same masks and seeds) and adds
it, or re-runs it in place when it is there already, with ``--note`` saying why.

``--threads`` sets torch's threads and, through ``threadpoolctl``, the BLAS and OpenMP threads of
NumPy, SciPy and scikit-learn too: their results move with it (UMAP + GMM on MNIST's seed 0:
0.854 on two BLAS threads, 0.742 on one), so a run reproduces only at the same setting.

Prints tables and writes ``docs/results/tables_vs_tools.json``. Times are per method relative
to K-means on the same table in the same run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pandas as pd

from _missing_cells import KINDS, remove_cells
from _threads import pin_threads
from metaunsup import data as datasets
from metaunsup.data.tables import TableEncoder, read_table
from metaunsup.metrics import ari, clustering_accuracy, nmi

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"

Table = tuple[str, np.ndarray, np.ndarray, str]  # name, x [n, d] (NaN = missing), y, note

#: anes96's codebook: party identification and education.
_PID = [
    "strong democrat",
    "weak democrat",
    "independent-democrat",
    "independent",
    "independent-republican",
    "weak republican",
    "strong republican",
]
_EDUC = ["grade 1-8", "some high school", "high school", "some college", "community college"]
_EDUC += ["BA degree", "postgraduate"]


def _encode(frame: pd.DataFrame, root: Path, name: str) -> np.ndarray:
    path = root / f"{name}.csv"
    frame.to_csv(path, index=False)
    return TableEncoder().fit_transform(read_table(path)).x


def _anes96(root: Path) -> Table:
    from statsmodels.datasets import anes96

    raw = anes96.load_pandas().data
    y = raw["vote"].to_numpy().astype(int)
    frame = raw.drop(columns=["vote", "logpopul"]).copy()
    frame["PID"] = [_PID[int(v)] for v in frame["PID"]]
    frame["educ"] = [_EDUC[int(v) - 1] for v in frame["educ"]]
    frame["income"] = [f"band {int(v)}" for v in frame["income"]]
    note = "944 x 9 columns (3 categorical)"
    return "anes96 (vote)", _encode(frame, root, "anes96"), y, note


def load_tables(root: Path) -> list[Table]:
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

    out: list[Table] = []
    for name, loader in (("iris", load_iris), ("wine", load_wine)):
        b = loader()
        frame = pd.DataFrame(b.data, columns=b.feature_names)
        out.append((name, _encode(frame, root, name), b.target, f"{b.data.shape}"))
    b = load_breast_cancer()
    frame = pd.DataFrame(b.data, columns=b.feature_names)
    out.append(("breast_cancer", _encode(frame, root, "bc"), b.target, f"{b.data.shape}"))
    b = load_digits()
    frame = pd.DataFrame(b.data / 16.0, columns=[f"p{i}" for i in range(64)])
    out.append(("digits", _encode(frame, root, "digits"), b.target, "(1797, 64)"))
    out.append(_anes96(root))
    mnist = datasets.load("mnist", "test")
    pixels = mnist.x.flatten(1).numpy().astype(np.float32) / 255.0
    frame = pd.DataFrame(pixels, columns=[f"p{i}" for i in range(784)])
    x = _encode(frame, root, "mnist")
    out.append(("MNIST test (10,000)", x, mnist.y.numpy(), "(10000, 784)"))
    return out


# ----------------------------------------------------------------------------- methods
#: Widest table the ``tabular`` checkpoint takes.
TABULAR_WIDTH = 100


def tabular(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The zero-shot checkpoint; over :data:`TABULAR_WIDTH` columns its documented fix,
    self-training. ``tabular.last_info`` says which path ran and what the guard chose."""
    from metaunsup.estimators.kmeans import MetaKMeans

    zero_shot = x.shape[1] <= TABULAR_WIDTH
    model = MetaKMeans(k, checkpoint="tabular" if zero_shot else None, random_state=seed)
    model.fit(x)
    guard = model.guard_.use if model.guard_ is not None else "none"
    tabular.last_info = {  # type: ignore[attr-defined]
        "path": "zero-shot" if zero_shot else "self-training (over 100 columns)",
        "guard": guard,
    }
    return model.labels_


def self_training(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Self-training with its defaults; ``self_training.last_info`` says what its guard chose
    and the two agreement scores it weighed (none when the clusters were separated)."""
    from metaunsup.estimators.kmeans import MetaKMeans

    model = MetaKMeans(k, random_state=seed).fit(x)
    guard = model.guard_
    self_training.last_info = (  # type: ignore[attr-defined]
        {}
        if guard is None
        else {
            "guard": guard.use,
            "guard embedding agreement": guard.embedding_score,
            "guard features agreement": guard.features_score,
        }
    )
    return model.labels_


def auto_path(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``--checkpoint auto``: the tabular model or self-training, chosen without labels;
    ``auto_path.last_info`` says which and the two agreement scores."""
    from metaunsup.estimators.kmeans import MetaKMeans
    from metaunsup.estimators.table_choice import fit_table_model

    model, choice = fit_table_model(
        x, lambda path: MetaKMeans(k, checkpoint=path, random_state=seed)
    )
    auto_path.last_info = {
        "chosen": choice.chosen,
        **{f"agreement {n}": v for n, v in choice.scores.items()},
    }  # type: ignore[attr-defined]
    return model.labels_


def k_means(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(x)


def spectral(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(
        k, affinity="nearest_neighbors", n_neighbors=10, random_state=seed, n_jobs=1
    )
    return model.fit_predict(x)


def umap_gmm(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    import umap
    from sklearn.mixture import GaussianMixture

    z = umap.UMAP(
        n_components=10, n_neighbors=20, min_dist=0.0, random_state=seed, n_jobs=1
    ).fit_transform(x)
    return GaussianMixture(k, random_state=seed).fit_predict(z)


def hdbscan(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    del k, seed  # finds its own number of clusters; deterministic
    return HDBSCAN().fit_predict(x)


def imputed_kmeans(how: str) -> Callable[[np.ndarray, int, int], np.ndarray]:
    def method(x: np.ndarray, k: int, seed: int) -> np.ndarray:
        from sklearn.impute import KNNImputer, SimpleImputer

        imputer = SimpleImputer() if how == "mean" else KNNImputer(n_neighbors=5)
        return k_means(imputer.fit_transform(x), k, seed)

    return method


METHODS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "metaunsup (auto)": auto_path,
    "tabular": tabular,
    "self-training": self_training,
    "K-means": k_means,
    "spectral": spectral,
    "UMAP + GMM": umap_gmm,
    "HDBSCAN": hdbscan,
}


def imputed_self_training(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``MetaKMeans(impute="knn")``: the cells filled as by kNN-impute + K-means (scikit-learn's
    ``KNNImputer``, 5 neighbours), then self-training with its guard on the filled table."""
    from metaunsup.estimators.kmeans import MetaKMeans

    model = MetaKMeans(k, impute="knn", random_state=seed).fit(x)
    imputed_self_training.last_info = {  # type: ignore[attr-defined]
        "guard": model.guard_.use if model.guard_ is not None else "none"
    }
    return model.labels_


MISSING_METHODS = {
    "metaunsup (auto) (native)": auto_path,
    "tabular (native)": tabular,
    "self-training (native)": self_training,
    "kNN-impute + self-training": imputed_self_training,
    "mean-impute + K-means": imputed_kmeans("mean"),
    "kNN-impute + K-means": imputed_kmeans("knn"),
}


# ----------------------------------------------------------------------------- running
def score(y: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(clustering_accuracy(y, labels)),
        "nmi": float(nmi(y, labels)),
        "ari": float(ari(y, labels)),
    }


def run_cell(method: Callable, x: np.ndarray, y: np.ndarray, seeds: list[int], once: bool):
    """Scores per seed and seconds per run of one method on one table."""
    k = len(np.unique(y))
    runs, seconds = [], []
    for seed in seeds[:1] if once else seeds:
        t0 = time.perf_counter()
        labels = method(x, k, seed)
        seconds.append(time.perf_counter() - t0)
        runs.append(score(y, labels) | {"clusters_found": len(np.unique(labels))})
        runs[-1] |= getattr(method, "last_info", {})
    if once:
        runs = runs * len(seeds)
    return {"seeds": seeds, "runs": runs, "seconds": float(np.mean(seconds))}


def summarise(cell: dict) -> dict:
    out = {}
    for metric in ("accuracy", "nmi", "ari"):
        v = np.array([r[metric] for r in cell["runs"]])
        out[metric] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
    return out


def mean_ranks(results: dict, methods: list[str], metric: str) -> dict[str, float]:
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for cells in results.values():
        means = {m: summarise(cells[m])[metric]["mean"] for m in methods if m in cells}
        order = pd.Series(means).rank(ascending=False, method="average")
        for m, r in order.items():
            ranks[str(m)].append(float(r))
    return {m: float(np.mean(r)) for m, r in ranks.items() if r}


def table_lines(results: dict, methods: list[str], ranked: list[str] | None = None) -> list[str]:
    """A markdown table: per table and method, accuracy (min-max over seeds) / NMI / ARI, and
    the mean rank per score of the ``ranked`` methods (default: all)."""
    ranked = methods if ranked is None else ranked
    lines = ["| table | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for table, cells in results.items():
        row = []
        for m in methods:
            s = summarise(cells[m])
            a, nm, r = s["accuracy"], s["nmi"]["mean"], s["ari"]["mean"]
            row.append(f"{a['mean']:.3f} ({a['min']:.3f}-{a['max']:.3f}) / {nm:.3f} / {r:.3f}")
        lines.append(f"| {table} | " + " | ".join(row) + " |")
    for metric in ("accuracy", "nmi", "ari"):
        ranks = mean_ranks(results, ranked, metric)
        cells = " | ".join(f"{ranks[m]:.2f}" if m in ranks else "" for m in methods)
        lines.append(f"| mean rank ({metric}) | {cells} |")
    return lines


def best_line(results: dict, methods: list[str]) -> str:
    """Which method has the best mean rank per score, and metaunsup's other paths'."""
    parts = []
    mine = [m for m in methods if m.startswith(("tabular", "metaunsup")) or "self-training" in m]
    for metric in ("accuracy", "nmi", "ari"):
        ranks = mean_ranks(results, methods, metric)
        best = min(ranks, key=lambda m: ranks[m])
        ours = ", ".join(f"{m} {ranks[m]:.2f}" for m in mine if m != best)
        parts.append(f"{metric}: {best} ({ranks[best]:.2f}" + (f"; {ours})" if ours else ")"))
    return "Best mean rank, " + "; ".join(parts) + "."


def time_lines(results: dict, methods: list[str]) -> list[str]:
    """Seconds per run of each method over K-means' on the same table, in the same run."""
    lines = ["| table | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for table, cells in results.items():
        base = max(cells["K-means"]["seconds"], 1e-9)
        ratios = " | ".join(
            f"{cells[m].get('seconds_vs_kmeans', cells[m]['seconds'] / base):.1f}x" for m in methods
        )
        lines.append(f"| {table} | {ratios} |")
    return lines


def print_table(title: str, results: dict, methods: list[str]) -> None:
    print(f"\n{title}\n")
    print("\n".join(table_lines(results, methods)))


PAGE_INTRO = """\
# metaunsup on real tables, against the tools a data scientist would pick

<!-- Written by `python benchmarks/tables_vs_tools.py --page` from tables_vs_tools.json. -->

Measured by `{command}` on {date} (UTC), {threads} torch thread(s), on a 2-core CPU shared with
other jobs; {minutes:.0f} minutes in all. What each method is, how the tables are encoded and how
the cells were removed: the docstring of `benchmarks/tables_vs_tools.py`. Every method is
told the true number of classes except HDBSCAN (scikit-learn's defaults; its noise points count
as one more cluster). No setting was tuned on the labels. Scores are accuracy (best one-to-one
matching of clusters to classes), NMI and ARI against the known classes; accuracy is the mean
over the seeds {seeds} with its min-max, then the mean NMI and ARI. Mean ranks are over the
tables (1 = best, by the mean score; ties share their rank).

## Tables

| table | rows x encoded features | classes | source |
|---|---|---|---|
{sizes}

## Clustering the complete tables

{main}

{best}

Seconds per run, as a multiple of K-means' on the same table (same run, shared machine):

{times}
"""

PAGE_MISSING = """
## Missing cells

The same tables but MNIST, with cells removed (one mask per seed): `mcar10`/`mcar30` at random,
`mnar` from the top 40% of each column with probability 1/2 (about 20% of the cells).
`self-training (native)` takes the table with its missing cells: its network reads the
observed cells and the mask, and its pseudo-labels come from graphs of the rows with the
missing cells filled from their 5 nearest rows (see `metaunsup.estimators.missing`);
`tabular (native)` gives the cells and their mask to the zero-shot network. Each one's
label-free guard weighs its embedding against the scaled features with every missing cell
filled the same way (the mean of the 5 nearest rows over observed features) and clusters those
with k-means where their partitions agree more; `metaunsup (auto) (native)` keeps the path whose
clustered representation agrees more, as on complete tables. `kNN-impute + self-training`
(`MetaKMeans(impute="knn")`) fills every input that way first and self-trains a plain network
on the filled table; the two K-means columns fill the cells (column means, or the same 5
nearest rows) and run K-means. The last two columns repeat the complete table's scores for
reference and are not ranked.

{missing}

{best}
"""


def write_page(record: dict, path: Path) -> None:
    """The results page (markdown) from a JSON record of :func:`main`."""
    sizes = "\n".join(
        f"| {name} | {t['shape'][0]} x {t['shape'][1]} | {t['classes']} | {t['note']} |"
        for name, t in record["tables"].items()
    )
    first = next(iter(record["results"].values()))
    methods = list(first)
    text = PAGE_INTRO.format(
        command=record["command"],
        date=record["date"],
        threads=record["threads"],
        minutes=record["total_seconds"] / 60,
        seeds=", ".join(str(s) for s in first["K-means"]["seeds"]),
        sizes=sizes,
        main="\n".join(table_lines(record["results"], methods)),
        best=best_line(record["results"], methods),
        times="\n".join(time_lines(record["results"], methods)),
    )
    for added in record.get("added", []):
        if added.get("missing_only"):
            continue
        how = "re-run by" if added.get("replaced") else "added by"
        text = text.replace(
            "\n## Tables",
            f"The `{added['method']}` rows were {how} `{added['command']}` on {added['date']} "
            "(UTC) in the run above (same tables, seeds and scores; its time ratios are against "
            "K-means timed again in that run). `tabular` refuses a table of more than 100 "
            "columns and names self-training as the fix, so its MNIST cell is the self-training "
            "cell of the run above (the same runs, not repeated). Its label-free guard kept "
            f"the learned embedding in {added['guard_kept']} (else it clustered the "
            "standardised columns with k-means). Those "
            "columns are standardised each by its own spread, the checkpoint's input "
            "convention, so where the guard fell back `tabular` differs from the K-means column "
            "by that scaling alone: lower on iris and digits (columns on one scale, where "
            "per-column scaling hurts, see `metaunsup.estimators.scaling`), far higher on "
            "anes96 (one-hot columns).\n\n"
            "## Tables",
            1,
        )
    if record["missing"]:
        columns = list(next(iter(record["missing"].values())))
        ranked = [c for c in columns if not c.startswith("complete")]
        notes = "".join(
            f"The `{a['method']}` column was "
            + ("re-run" if a.get("replaced") else "added")
            + f" by `{a['command']}` on {a['date']} (UTC) "
            + ("in" if a.get("replaced") else "to")
            + " the run above (the same tables, masks and seeds; "
            f"{a['seconds'] / 60:.1f} minutes)"
            + (f", replacing its cells: {a['note']}" if a.get("replaced") else "")
            + ".\n\n"
            for a in record.get("added", [])
            if a.get("missing_only")
        )
        text += PAGE_MISSING.format(
            missing=notes + "\n".join(table_lines(record["missing"], columns, ranked)),
            best=best_line(record["missing"], ranked),
        )
    path.write_text(text)


def add_rows(args: argparse.Namespace, name: str) -> None:
    """Run ``name`` alone on the tables of the JSON at ``args.json`` (and its missing-cell
    rows) and add its cells there, first in each row, or put them in place of its cells when
    the JSON has them (``--note`` says why); K-means is timed again as the time reference of
    this run."""
    record = json.loads(args.json.read_text())
    replaced = _rerun(args, name, next(iter(record["results"].values())))
    seeds = next(iter(record["results"].values()))["K-means"]["seeds"]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tables = load_tables(Path(tmp))
    kept = total = 0
    for table, x, y, _ in tables:
        if x.shape[1] > TABULAR_WIDTH:  # tabular's path there is self-training: not re-run
            cell = dict(record["results"][table]["self-training"])
            cell["runs"] = [r | {"path": "self-training (over 100 columns)"} for r in cell["runs"]]
            cell["copied_from"] = "self-training (same runs)"
            record["results"][table] = _first(name, cell, record["results"][table])
            continue
        cell = run_cell(METHODS[name], x, y, seeds, once=False)
        reference = run_cell(k_means, x, y, seeds, once=False)
        cell["seconds_vs_kmeans"] = cell["seconds"] / max(reference["seconds"], 1e-9)
        record["results"][table] = _first(name, cell, record["results"][table])
        kept += sum(r["guard"] == "embedding" for r in cell["runs"])
        total += len(cell["runs"])
        print(f"{table:22s} {name} acc {summarise(cell)['accuracy']['mean']:.3f}", flush=True)
        for kind in KINDS:
            row = record["missing"].get(f"{table}, {kind}")
            if row is None:
                continue
            cell = {"seeds": seeds, "runs": [], "seconds": 0.0}
            for seed in seeds:
                cell["runs"] += run_cell(
                    METHODS[name], remove_cells(x, kind, seed), y, [seed], once=False
                )["runs"]
            record["missing"][f"{table}, {kind}"] = _first(f"{name} (native)", cell, row)
            print(f"{table}, {kind}: {summarise(cell)['accuracy']['mean']:.3f}", flush=True)
    guard_kept = f"{kept} of {total} zero-shot runs of the complete tables"
    save_added(args, record, name, t_start, guard_kept=guard_kept, replaced=replaced)


def _rerun(args: argparse.Namespace, name: str, row: dict) -> bool:
    """Whether ``--add name`` re-runs a column the JSON has (``row``: one of its rows); a re-run
    must say why with ``--note``."""
    if name in row and not args.note:
        raise SystemExit(f"{name!r} is in the run already: say why it is re-run with --note")
    return name in row


def _first(name: str, cell: dict, row: dict) -> dict:
    """``row`` with ``name``'s cell first: added, or put in place of the one it had."""
    return {name: cell, **{method: c for method, c in row.items() if method != name}}


def add_missing_column(args: argparse.Namespace, name: str) -> None:
    """Run the missing-cells method ``name`` alone on the missing-cell rows of the JSON at
    ``args.json`` (the same tables, masks and seeds) and add its cells there, in the column
    order of :data:`MISSING_METHODS`."""
    record = json.loads(args.json.read_text())
    seeds = next(iter(record["results"].values()))["K-means"]["seeds"]
    replaced = _rerun(args, name, next(iter(record["missing"].values())))
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tables = load_tables(Path(tmp))
    for table, x, y, _ in tables:
        for kind in KINDS:
            row = record["missing"].get(f"{table}, {kind}")
            if row is None:
                continue
            cells = [
                run_cell(MISSING_METHODS[name], remove_cells(x, kind, seed), y, [seed], False)
                for seed in seeds
            ]
            row[name] = {
                "seeds": seeds,
                "runs": [r for c in cells for r in c["runs"]],
                "seconds": float(np.mean([c["seconds"] for c in cells])),
            }
            order = [*MISSING_METHODS, *(c for c in row if c not in MISSING_METHODS)]
            record["missing"][f"{table}, {kind}"] = {c: row[c] for c in order if c in row}
            print(f"{table}, {kind}: {summarise(row[name])['accuracy']['mean']:.3f}", flush=True)
    facts: dict[str, object] = {"replaced": True, "note": args.note} if replaced else {}
    save_added(args, record, name, t_start, missing_only=True, **facts)


def save_added(
    args: argparse.Namespace, record: dict, name: str, t_start: float, **facts: object
) -> None:
    """Note in ``record`` that ``name`` was added (its command, date, seconds and ``facts``),
    then write the JSON at ``args.json`` and the page beside it."""
    command = f"python benchmarks/tables_vs_tools.py --threads {args.threads} --add "
    command += shlex.quote(name) + (f" --note {shlex.quote(args.note)}" if args.note else "")
    record.setdefault("added", []).append(
        {
            "method": name,
            "command": command,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
            "seconds": time.perf_counter() - t_start,
            **facts,
        }
    )
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    write_page(record, args.json.with_suffix(".md"))
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--missing", action="store_true", help="Also the missing-cell rows.")
    parser.add_argument("--only", nargs="*", help="Run only these tables (by name).")
    parser.add_argument("--json", type=Path, default=RESULTS / "tables_vs_tools.json")
    parser.add_argument(
        "--add",
        choices=[
            "tabular",
            "metaunsup (auto) (native)",
            "kNN-impute + self-training",
            "self-training (native)",
        ],
        help="Add this method's rows to the JSON of an earlier run (re-run them, with --note "
        "saying why, when they are there).",
    )
    parser.add_argument("--note", default="", help="Why --add re-runs a column.")
    parser.add_argument(
        "--page", action="store_true", help="Only write the results page from the JSON."
    )
    args = parser.parse_args()
    if args.page:
        write_page(json.loads(args.json.read_text()), args.json.with_suffix(".md"))
        print(f"wrote {args.json.with_suffix('.md')}")
        return
    pin_threads(args.threads)  # torch and the BLAS / OpenMP pools
    if args.add == "tabular":
        add_rows(args, args.add)
        return
    if args.add:
        add_missing_column(args, args.add)
        return
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tables = load_tables(Path(tmp))
    if args.only:
        tables = [t for t in tables if t[0] in args.only]
    results: dict[str, dict] = {}
    sizes = {}
    for name, x, y, note in tables:
        sizes[name] = {"shape": list(x.shape), "classes": len(np.unique(y)), "note": note}
        results[name] = {}
        for method, fn in METHODS.items():
            results[name][method] = run_cell(fn, x, y, args.seeds, once=method == "HDBSCAN")
            s = summarise(results[name][method])["accuracy"]
            print(f"{name:22s} {method:16s} acc {s['mean']:.3f} "
                  f"({results[name][method]['seconds']:.1f} s/run)", flush=True)  # fmt: skip
    print_table("accuracy (min-max over seeds) / NMI / ARI", results, list(METHODS))
    missing: dict[str, dict] = {}
    if args.missing:
        for name, x, y, _ in tables:
            if name.startswith("MNIST"):
                continue
            for kind in KINDS:
                row = missing[f"{name}, {kind}"] = {}
                for method, fn in MISSING_METHODS.items():
                    cell: dict = {"seeds": args.seeds, "runs": [], "seconds": 0.0}
                    for seed in args.seeds:
                        xm = remove_cells(x, kind, seed)
                        one = run_cell(fn, xm, y, [seed], once=False)
                        cell["runs"] += one["runs"]
                        cell["missing_share"] = float(np.isnan(xm).mean())
                    row[method] = cell
                row["complete: self-training"] = results[name]["self-training"]
                row["complete: K-means"] = results[name]["K-means"]
                s = {m: summarise(c)["accuracy"]["mean"] for m, c in row.items()}
                print(f"{name}, {kind}: " + ", ".join(f"{m} {v:.3f}" for m, v in s.items()))
        print_table(
            "missing cells: accuracy (min-max) / NMI / ARI",
            missing,
            [*MISSING_METHODS, "complete: self-training", "complete: K-means"],
        )
    seeds = " ".join(str(s) for s in args.seeds)
    command = f"python benchmarks/tables_vs_tools.py --threads {args.threads} --seeds {seeds}"
    command += " --missing" if args.missing else ""
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "command": command,
        "threads": args.threads,
        "tables": sizes,
        "results": results,
        "missing": missing,
        "total_seconds": time.perf_counter() - t_start,
    }
    if not args.only:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        write_page(record, args.json.with_suffix(".md"))
        print(f"wrote {args.json} and {args.json.with_suffix('.md')}")


if __name__ == "__main__":
    main()
