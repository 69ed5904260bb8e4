"""``metaunsup cluster INPUT --k K|auto``: cluster the user's own file or image folder.

INPUT is a table (``.csv`` or ``.parquet``, read and encoded by :mod:`metaunsup.data.tables`:
numeric and text columns, missing cells, identifiers left out, ``--ignore``/``--columns``), an
``.npy`` array or a folder of images (:func:`metaunsup.data.arrays.load_arrays`), clustered by
:class:`metaunsup.MetaKMeans` (missing cells natively, or ``--impute``). The
labels go to ``--out`` as CSV (``file,label`` for images, ``index,label`` with 0-based row
positions for tables), or to stdout when there is no ``--out``; ``--plot`` draws a montage of
each cluster's images; ``--report DIR`` writes a self-contained HTML page explaining each
cluster (:mod:`metaunsup.app.report.clusters_page`). Outputs are checked before any work (a
writable folder, and never the input or the checkpoint: the labels are not written over the
data), written atomically and only after everything succeeded, so an error never leaves a
partial file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from metaunsup.app.console import (
    check_outputs,
    impute_option,
    report_option,
    set_threads,
    table_columns,
)
from metaunsup.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ClusterCount", "cluster"]

#: ``--checkpoint auto``: for a table, the tabular model or self-training, chosen without labels.
AUTO = "auto"


class ClusterCount(click.ParamType):
    """``--k``: a positive integer or ``auto``."""

    name = "K|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, int) and not isinstance(value, bool):
            k = value
        elif str(value).strip().lower() == "auto":
            return "auto"
        else:
            try:
                k = int(str(value).strip())
            except ValueError:
                self.fail(
                    f"{value!r} is not a number of clusters; give an integer >= 1 or 'auto'",
                    param,
                    ctx,
                )
        if k < 1:
            self.fail(f"{k} clusters is not possible; give an integer >= 1 or 'auto'", param, ctx)
        return k


def labels_csv(names: Sequence[str], labels: Sequence[int] | np.ndarray, images: bool) -> str:
    """The labels as CSV text: ``file,label`` rows for images, ``index,label`` for tables."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if images:
        writer.writerow(["file", "label"])
        writer.writerows(zip(names, (int(v) for v in labels), strict=True))
    else:
        writer.writerow(["index", "label"])
        writer.writerows((i, int(v)) for i, v in enumerate(labels))
    return buffer.getvalue()


def summary(
    model: Any, source: str, x: np.ndarray, checkpoint: str | None, table: Any = None
) -> dict:
    """What the clustering did, JSON-friendly: k and why, cluster sizes, the model, and how
    missing cells (NaN in ``x``, from a table or a ``.npy`` array) were taken."""
    import numpy as np

    sizes = np.bincount(model.labels_, minlength=model.n_clusters_).tolist()
    choice = model.k_choice_
    out: dict[str, Any] = {
        "input": source,
        "examples": int(x.shape[0]),
        "example_shape": list(x.shape[1:]),
        "k": model.n_clusters_,
        "k_chosen_by": choice.method if choice is not None else "given",
        "k_reason": choice.reason if choice is not None else f"given as --k {model.n_clusters_}",
        "sizes": sizes,
        "inertia": round(model.inertia_, 4),
        "model": {"checkpoint": checkpoint} if checkpoint else {"self_trained": model.training_},
    }
    if table is not None:
        out["columns"] = [plan.describe() for plan in table.columns]
    missing = np.isnan(x).mean() if np.issubdtype(x.dtype, np.floating) else 0.0
    if table is not None or missing:
        out["missing_cells"] = round(float(missing), 4)
        out["missing_values"] = "native" if model.impute is None else f"imputed ({model.impute})"
        guard = getattr(model, "guard_", None)
        filled = getattr(model, "feature_filler_", None) is not None
        if filled and guard is not None and guard.use == "features":  # k-means of filled rows
            out["missing_values"] += ", filled from the 5 nearest rows for the k-means"
    if choice is not None:
        out[choice.method] = {str(k): round(v, 4) for k, v in choice.scores.items()}
    normalization = getattr(model, "input_normalization_", None)
    if normalization is not None:
        out["input_normalization"] = list(normalization.steps)
    guard = getattr(model, "guard_", None)
    out["clustered"] = guard.to_json() if guard is not None else {"use": "embedding"}
    scaling = getattr(model, "scaling_", None)
    if scaling is not None and model.checkpoint is None:
        out["scaling"] = {"how": scaling.how, "reason": scaling.reason}
    return out


def summary_lines(info: dict) -> list[str]:
    """Human-readable lines of :func:`summary`."""
    shape = info["example_shape"]
    what = f"{shape[0]} features" if len(shape) == 1 else f"{shape[-2]}x{shape[-1]} images"
    lines = [
        f"clustered {info['examples']} examples ({what}) from {info['input']} "
        f"into {info['k']} clusters",
        f"k: {info['k_reason']}",
    ]
    model = info["model"]
    if info["clustered"]["use"] == "features":
        why = "separated clusters" if info["clustered"]["embedding_score"] is None else "fell back"
        lines.append(f"model: none used - k-means on the scaled features (the guard: {why})")
    elif "checkpoint" in model:
        lines.append(f"model: checkpoint {model['checkpoint']}")
    else:
        t = model["self_trained"]
        lines.append(
            f"model: meta-trained on this data ({t['steps']} steps on pseudo-tasks of "
            f"{t['task']}, {t['seconds']:.1f} s)"
        )
    if "input_normalization" in info:
        lines.append(f"input: {'; '.join(info['input_normalization'])}")
    if "scaling" in info:
        lines.append(f"scaling: {info['scaling']['reason']}")
    if "model_choice" in info:
        choice = info["model_choice"]
        lines.append(f"model choice (--checkpoint auto): {choice['chosen']}, {choice['reason']}")
    if "reason" in info["clustered"]:
        lines.append(f"guard: {info['clustered']['reason']}")
    if "columns" in info:
        lines += [f"column {line}" for line in info["columns"]]
    if info.get("missing_cells"):
        lines.append(f"missing cells: {info['missing_cells']:.1%}, taken {info['missing_values']}")
    sizes = ", ".join(f"{c}: {n}" for c, n in enumerate(info["sizes"]))
    lines.append(f"cluster sizes: {sizes}")
    return lines


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option(
    "--k",
    "k",
    required=True,
    type=ClusterCount(),
    metavar="K|auto",
    help="Number of clusters, or 'auto' (chosen in 2..15 by --k-by).",
)
@click.option(
    "--k-by",
    type=click.Choice(["auto", "eigencount", "eigengap", "silhouette"]),
    default="auto",
    show_default=True,
    help="How --k auto chooses: kNN-graph eigenvalues above the threshold calibrated on the "
    "checkpoint's card, largest kNN-graph eigengap, or best silhouette of k-means; auto: the "
    "count where the card has a threshold, else the eigengap with --checkpoint, the "
    "silhouette without.",
)
@click.option(
    "--assign",
    type=click.Choice(["kmeans", "spectral"]),
    default="kmeans",
    show_default=True,
    help="How the embedding is split into k clusters: k-means, or spectral clustering of its "
    "10-nearest-neighbour graph (for clusters that are chains of near neighbours; at most "
    "20,000 examples).",
)
@click.option(
    "--checkpoint",
    help="Trained model: packaged name (digits, mnist, tabular) or .safetensors path; 'auto' "
    "for a table: the tabular model or self-training, whichever clusters more reproducibly. "
    "Default: meta-train on pseudo-tasks from INPUT itself.",
)
@click.option(
    "--normalize",
    is_flag=True,
    help="With --checkpoint: bring the images to the checkpoint's input convention (value "
    "range, light backgrounds inverted, MNIST-style framing) and say what was done.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Write the labels here as CSV (else stdout)."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Write a PNG montage of each cluster's images (image inputs only).",
)
@report_option("explaining each cluster (with its images, for image inputs)")
@table_columns
@impute_option()
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--meta-steps",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Meta-training steps without --checkpoint.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="torch threads (default: the idle CPUs)."
)
@click.option(
    "--device", default="cpu", show_default=True, help="Where the network runs: cpu, cuda."
)
@click.option("--quiet", is_flag=True, help="Print no summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def cluster(
    input_path: str,
    k: int | str,
    k_by: str,
    assign: str,
    checkpoint: str | None,
    normalize: bool,
    out: str | None,
    plot: str | None,
    report_dir: str | None,
    ignore: tuple[str, ...],
    use_columns: tuple[str, ...],
    impute: str,
    seed: int,
    meta_steps: int,
    threads: int | None,
    device: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Cluster a .csv/.parquet table, a .npy array or an image folder into K groups.

    INPUT is a table (numeric and text columns, missing cells allowed; with or without a header
    row), a .npy array or a folder of images of one size. Without --checkpoint a small network
    is first meta-trained on pseudo-tasks made from INPUT itself. Labels go to --out (CSV) or
    stdout.
    """
    from metaunsup.fileio import check_output_folder

    check_outputs(out, plot, inputs=[input_path, checkpoint])  # a packaged name is no file
    if report_dir is not None:
        check_output_folder(report_dir, "--report")
    set_threads(threads)
    x, names, images, table = _load(input_path, ignore, use_columns)
    if plot is not None and x.ndim != 4:
        raise ConfigError(
            f"--plot draws images, but {input_path} holds a table of shape {x.shape}; "
            "leave out --plot or give a folder of images (or an .npy of [n, H, W] images)"
        )
    if normalize and checkpoint in (None, AUTO):
        raise ConfigError(
            "--normalize brings images to a checkpoint's input convention; give --checkpoint "
            "NAME, or leave out --normalize"
        )
    if isinstance(k, int) and k > len(x):
        raise ConfigError(
            f"--k {k} is more than the {len(x)} examples in {input_path}; use --k {len(x)} or fewer"
        )
    settings = {"n_clusters": k, "meta_steps": meta_steps, "k_selection": k_by,
                "assign": assign, "input_normalize": "auto" if normalize else "off",
                "random_state": seed, "impute": None if impute == "native" else impute,
                "device": device, "verbose": not quiet}  # fmt: skip
    model, choice = _fit(x, checkpoint, settings, input_path)
    info = summary(model, str(input_path), x, model.checkpoint, table)
    if choice is not None:
        info["model_choice"] = choice.to_json()
    page = _page(model, x, info, table, names) if report_dir is not None else None
    montage = None
    if plot is not None:
        from metaunsup.app.report.montage import montage_image

        buffer = io.BytesIO()
        montage_image(x, model.labels_).save(buffer, format="PNG")
        montage = buffer.getvalue()
    text = labels_csv(names, model.labels_, images)
    _write_outputs(out, text, plot, montage, info)
    if page is not None and report_dir is not None:
        from metaunsup.app.report.clusters_page import write_page

        info["files"]["report"] = str(write_page(report_dir, page))
    _print(info, text, out is not None, quiet, as_json, model.labels_)


def _fit(
    x: np.ndarray, checkpoint: str | None, settings: dict[str, Any], input_path: str
) -> tuple[Any, Any]:
    """``(fitted model, choice)``: ``MetaKMeans(checkpoint=checkpoint, **settings)`` fitted on
    ``x``, or with ``--checkpoint auto`` the better of the tabular model and self-training for
    a table (:mod:`metaunsup.estimators.table_choice`; ``choice`` says which and why, else
    ``None``)."""
    from metaunsup.estimators.kmeans import MetaKMeans

    def make(path: str | None) -> MetaKMeans:
        return MetaKMeans(checkpoint=path, **settings)

    if checkpoint != AUTO:
        return make(checkpoint).fit(x), None
    if x.ndim != 2:
        raise ConfigError(
            f"--checkpoint {AUTO} chooses between the tabular model and self-training for a "
            f"table, but {input_path} holds {x.shape[-2]}x{x.shape[-1]} images; name a "
            "checkpoint (e.g. mnist) or leave out --checkpoint"
        )
    from metaunsup.estimators.table_choice import fit_table_model

    return fit_table_model(x, make)


def _load(
    input_path: str, ignore: Sequence[str], columns: Sequence[str]
) -> tuple[np.ndarray, list[str], bool, Any]:
    """``(x, names, images, table)``: the examples, their names, whether they are images, and
    the :class:`~metaunsup.data.tables.EncodedTable` of a table (else ``None``)."""
    from metaunsup.data.tables import is_table, load_table

    if is_table(input_path):
        table = load_table(input_path, ignore=ignore, columns=columns or None)
        return table.x, [], False, table
    if ignore or columns:
        raise ConfigError(
            f"--ignore and --columns choose columns of a .csv or .parquet table, but "
            f"{input_path} is not one; leave them out"
        )
    from metaunsup.data.arrays import load_arrays

    dataset, names = load_arrays(input_path)
    return dataset.x.numpy(), names, dataset.info.get("format") == "images", None


def _page(model: Any, x: np.ndarray, info: dict, table: Any, rows: list[str]) -> str:
    """The ``--report`` page's HTML (see :mod:`metaunsup.app.report.clusters_page`)."""
    from metaunsup.app.report.clusters_page import cluster_map_png, gallery_members, render_page
    from metaunsup.app.report.montage import image_strips_png
    from metaunsup.cluster.explain import explain_clusters

    flat = x.reshape(len(x), -1)
    z = model.transform(x)
    images = x.ndim == 4
    if table is not None:
        names, row_name, units = table.feature_names, table.row_name, table.original_units
        columns = [plan.describe() for plan in table.columns]
    else:
        if images:  # [n, C, H, W]: name a pixel by its place
            c, h, w = x.shape[1:]
            channel = [f" channel {i}" if c > 1 else "" for i in range(c)]
            names = [
                f"pixel ({r}, {q}){channel[i]}"
                for i in range(c)
                for r in range(h)
                for q in range(w)
            ]
        else:
            names = [f"feature {j}" for j in range(flat.shape[1])]
        row_name, units, columns = rows.__getitem__, (lambda _f, v: f"{v:.4g}"), []
    explained = explain_clusters(flat, model.labels_, z, model.cluster_centers_, names)
    png = cluster_map_png(z, model.labels_)
    galleries = None
    if images:
        members = [gallery_members(e, model.labels_) for e in explained]
        galleries = image_strips_png(x, members)
    return render_page(info, explained, png, columns, row_name, units, galleries)


def _write_outputs(
    out: str | None, text: str, plot: str | None, montage: bytes | None, info: dict
) -> None:
    from metaunsup.fileio import atomic_write_bytes, atomic_write_text

    files = {}
    if out is not None:
        files["labels"] = str(atomic_write_text(out, text))
    if plot is not None and montage is not None:
        files["montage"] = str(atomic_write_bytes(plot, montage))
    info["files"] = files


def _print(
    info: dict, text: str, wrote_labels: bool, quiet: bool, as_json: bool, labels: Any
) -> None:
    """Labels to stdout when they went to no file; the summary to stdout, or to stderr when
    stdout carries the labels."""
    if as_json:
        if not wrote_labels:
            info["labels"] = [int(v) for v in labels]
        click.echo(json.dumps(info, indent=2))
        return
    if not wrote_labels:
        click.echo(text, nl=False)
    if quiet:
        return
    lines = summary_lines(info) + [f"wrote {path}" for path in info["files"].values()]
    for line in lines:
        click.echo(line, err=not wrote_labels)
