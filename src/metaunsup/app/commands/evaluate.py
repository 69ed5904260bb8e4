"""``metaunsup evaluate``: score methods on seeded test tasks of any registered task kind, all
methods on the identical tasks (:func:`metaunsup.evaluation.protocol.evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from metaunsup.app.console import (
    POSITIVE,
    RegistryHelpOption,
    parse_device,
    print_report,
    progress,
    set_threads,
)
from metaunsup.errors import ConfigError

if TYPE_CHECKING:
    from metaunsup.evaluation.protocol import Method

__all__ = ["evaluate"]


@click.command()
@click.option("--dataset", default="digits", show_default=True, help="Dataset name.")
@click.option("--split", default="test", show_default=True, help="Split the tasks come from.")
@click.option(
    "--task",
    default="clustering",
    show_default=True,
    cls=RegistryHelpOption,
    help_from=lambda: _task_help(),
)
@click.option("--n-way", type=POSITIVE, default=10, show_default=True, help="Classes per task.")
@click.option(
    "--k-shot",
    type=POSITIVE,
    default=20,
    show_default=True,
    help="Examples per class (the support, for few-shot tasks).",
)
@click.option("--query", type=POSITIVE, default=15, show_default=True, help="Few-shot queries.")
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    help="Trained model to evaluate (packaged name or .safetensors path; repeatable), scored "
    "beside the --method baselines on the same tasks.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=0),
    help="Test-time adaptation steps (ProtoNet: transductive refinement steps with the query).",
)
@click.option(
    "--boundary",
    is_flag=True,
    help="Anomaly tasks: also score each checkpoint that meta-learned a decision boundary "
    "(Meta-SVDD, OC-MAML) with its flags at that boundary, as a second row.",
)
@click.option("--tasks", type=POSITIVE, default=1000, show_default=True, help="Test tasks.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--method",
    "methods",
    multiple=True,
    cls=RegistryHelpOption,
    help_from=lambda: _method_help(),
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results JSON.")
@click.option(
    "--data-dir",
    type=click.Path(),
    help="Folder of the datasets (for --dataset arrays: your .npy/.csv file or image folder).",
)
@click.option("--threads", type=POSITIVE, help="torch threads (default: the idle CPUs).")
@click.option("--device", default="cpu", show_default=True, help="Where models run: cpu, cuda.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(
    dataset: str,
    split: str,
    task: str,
    n_way: int,
    k_shot: int,
    query: int,
    checkpoints: Sequence[str],
    steps: int | None,
    boundary: bool,
    tasks: int,
    seed: int,
    methods: Sequence[str],
    json_path: str | None,
    data_dir: str | None,
    threads: int | None,
    device: str,
    quiet: bool,
) -> None:
    """Evaluate methods on seeded test tasks (all methods on the identical tasks)."""
    from metaunsup import data
    from metaunsup.evaluation.kinds import task_kind
    from metaunsup.evaluation.protocol import TaskShape, evaluate
    from metaunsup.fileio import atomic_write_json, check_output_path
    from metaunsup.learners import load_learner

    set_threads(threads)
    if json_path is not None:
        inputs = [*checkpoints, data_dir if dataset == "arrays" else None]
        check_output_path(json_path, inputs=inputs, option="--json")
    kind = task_kind(task)
    chosen = kind.resolve(methods or kind.default_baselines)
    names = {m.name for m in chosen}
    torch_device = parse_device(device)
    for name in dict.fromkeys(checkpoints):
        if name not in names:
            learner = load_learner(name, torch_device)
            chosen.append(kind.method_of(name, learner, steps, torch_device))
            if boundary:
                chosen.append(at_boundary(chosen[-1], name))
    if not chosen:
        raise ConfigError(f"nothing to evaluate on {task} tasks: pass --checkpoint (a trained "
                          "model)")  # fmt: skip
    ds = data.load(dataset, split, root=data_dir)
    shape = TaskShape(n_way, k_shot, query if kind.has_query else 0)
    with progress(tasks, f"{dataset}/{split}", quiet) as update:
        report = evaluate(
            kind, ds, chosen, shape=shape, n_tasks=tasks, seed=seed, progress=update
        ).to_json()
    print_report(report)
    if json_path is not None:
        atomic_write_json(json_path, report)
        click.echo(f"wrote {json_path}")


def at_boundary(method: Method, name: str) -> Method:
    """``method`` (a checkpoint's) flagging at its learner's meta-learned decision boundary
    instead of a false-alarm target, named ``"NAME (learned boundary)"``."""
    import dataclasses

    from metaunsup.evaluation.anomaly import ScorerMethod
    from metaunsup.learners import BoundaryScorer

    if not isinstance(method, ScorerMethod) or not isinstance(method.learner, BoundaryScorer):
        raise ConfigError(
            f"--boundary is for anomaly tasks and checkpoints that meta-learned a decision "
            f"boundary (meta_svdd, oc_maml); {name!r} on these tasks has none: leave out "
            "--boundary"
        )
    return dataclasses.replace(method, name=f"{name} (learned boundary)", calibration="boundary")


def _task_help() -> str:
    from metaunsup.evaluation.kinds import TASK_KINDS

    return "Task kind: " + ", ".join(TASK_KINDS) + " (see docs/evaluate.md)."


def _method_help() -> str:
    from metaunsup.evaluation.kinds import TASK_KINDS

    kinds: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for name, kind in TASK_KINDS.items():
        if kind.baselines:
            kinds.setdefault((tuple(kind.baselines), kind.default_baselines), []).append(name)
    listed = [
        f"{' and '.join(names)} tasks: {', '.join(methods)} (default {', '.join(default)})"
        for (methods, default), names in kinds.items()
    ]
    return "Baseline scored beside the checkpoints (repeatable); " + "; ".join(listed) + "."
