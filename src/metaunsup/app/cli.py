"""The ``metaunsup`` command line.

Every user error (missing files, bad numbers, unknown names, NaN in data) ends as one line on
stderr, ``metaunsup: error: ...``, and exit status 2 — never a traceback. Messages name the
command's options, not the Python arguments behind them (``--k-shot``, not ``k_shot``), and
leave out fixes that only a Python caller can apply. A warning is one line,
``metaunsup: warning: ...``. Ctrl-C ends with exit status 130 and one line saying what was kept
(for ``train``: the exact command that continues the run).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import sys
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from metaunsup.errors import ConfigError, DataError, MetaUnsupError

EXIT_USER_ERROR = 2
log = logging.getLogger("metaunsup")


def _fail(message: str) -> None:
    click.echo(f"metaunsup: error: {message}", err=True)


class CommandInterrupted(Exception):  # noqa: N818 (not an error: Ctrl-C)
    """Ctrl-C during a command; the message says what was kept and how to continue."""


#: The Python arguments behind each command's options, as library messages name them.
CLI_NAMES = {
    "evaluate": {"n_way": "--n-way", "k_shot": "--k-shot", "n_query": "--query",
                 "n_tasks": "--tasks"},
    "cluster": {"n_clusters": "--k", "meta_steps": "--meta-steps", "k_selection": "--k-by",
                "random_state": "--seed"},
}  # fmt: skip


def for_cli(message: str, command: str | None) -> str:
    """``message`` with the Python argument names of ``command`` replaced by its options
    (``"n_way=11"`` → ``"--n-way 11"``, ``"k_shot + n_query"`` → ``"--k-shot + --query"``)."""
    for name, option in CLI_NAMES.get(command or "", {}).items():

        def replace(match: re.Match[str], option: str = option) -> str:
            return option + (" " if match.group(1) else "")

        message = re.sub(rf"(?<![\w.-]){name}\b(\s*=(?!=)\s*)?", replace, message)
    return message


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command of a command line (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


@contextmanager
def _progress(total: int, desc: str, quiet: bool):
    """A tqdm progress bar on stderr; yields ``update(n)``.

    The bar appears at the first update (so an early error prints only its own line) and only
    when stderr is a terminal and ``quiet`` is off.
    """
    state: dict[str, Any] = {}

    def update(n: int) -> None:
        if quiet or not sys.stderr.isatty():
            return
        if "bar" not in state:
            from tqdm.auto import tqdm

            state["bar"] = tqdm(total=total, desc=desc, unit="task", file=sys.stderr, leave=False)
        state["bar"].update(n)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].close()


def _device(name: str):
    """``--device`` as a ``torch.device`` (:class:`ConfigError` when unknown or absent)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    return device


def _set_threads(threads: int | None) -> None:
    """``--threads``, or the idle CPUs when not given (see ``metaunsup.training.threads``)."""
    from metaunsup.training.threads import apply_threads

    apply_threads(threads)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="metaunsup", prog_name="metaunsup")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """metaunsup: meta-unsupervised learning: cluster a new small unlabeled task well."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


POSITIVE = click.IntRange(min=1)


@cli.command()
@click.option("--dataset", default="digits", show_default=True, help="Dataset name.")
@click.option("--split", default="test", show_default=True, help="Split the tasks come from.")
@click.option(
    "--task",
    default="clustering",
    show_default=True,
    help="Task kind: clustering (labels hidden) or fewshot (classify a query after a labelled "
    "support).",
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
    help="Trained model to evaluate (packaged name or .safetensors path; repeatable); a "
    "clustering learner (meta_kmeans, cluster_maml) is scored beside the --method baselines.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=0),
    help="Test-time adaptation steps (ProtoNet: transductive refinement steps with the query).",
)
@click.option("--tasks", type=POSITIVE, default=1000, show_default=True, help="Test tasks.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="Method to evaluate (repeatable): kmeans, sklearn-kmeans, pca-kmeans, gmm.",
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

    _set_threads(threads)
    if json_path is not None:
        inputs = [*checkpoints, data_dir if dataset == "arrays" else None]
        check_output_path(json_path, inputs=inputs, option="--json")
    kind = task_kind(task)
    chosen = kind.resolve(methods or kind.default_baselines)
    names = {m.name for m in chosen}
    torch_device = _device(device)
    for name in dict.fromkeys(checkpoints):
        if name not in names:
            learner = load_learner(name, torch_device)
            chosen.append(kind.method_of(name, learner, steps, torch_device))
    if not chosen:
        raise ConfigError(f"nothing to evaluate on {task} tasks: pass --checkpoint (a trained "
                          "model)")  # fmt: skip
    ds = data.load(dataset, split, root=data_dir)
    shape = TaskShape(n_way, k_shot, query if kind.has_query else 0)
    with _progress(tasks, f"{dataset}/{split}", quiet) as update:
        report = evaluate(
            kind, ds, chosen, shape=shape, n_tasks=tasks, seed=seed, progress=update
        ).to_json()
    _print_report(report)
    if json_path is not None:
        atomic_write_json(json_path, report)
        click.echo(f"wrote {json_path}")


def _child_argv(ctx: click.Context, skip: Sequence[str]) -> list[str]:
    """The command line of ``ctx``'s command as given (its parsed values), without ``skip``."""
    argv = [ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name in skip or value is None:
            continue
        if isinstance(param, click.Argument):
            argv.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag:
            if value:
                argv.append(param.opts[0])
        else:
            argv += [param.opts[0], str(value)]
    return argv


def _print_report(report: dict) -> None:
    from metaunsup.app.report.tables import report_title, results_table

    click.echo(report_title(report))
    click.echo(results_table(report))


def _train_summary(name: str, val_metric: str, result, out_dir: Path) -> dict:
    """The machine-readable summary ``metaunsup train --json`` prints."""
    validated = math.isfinite(result.best_metric)
    return {
        "name": name,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "val_metric": val_metric if validated else None,
        "best_metric": result.best_metric if validated else None,
        "best_step": result.best_step,
        "last_metrics": result.last_metrics,
        "checkpoints": {
            "best": str(out_dir / "best.safetensors"),
            "last": str(out_dir / "last.safetensors"),
        },
    }


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default runs/NAME).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in OUT where it stopped (pre-training, partitions, meta-training).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace the run in OUT (its checkpoints, logs and caches)."
)
@click.option("--steps", type=POSITIVE, help="Override train.steps.")
@click.option("--seed", type=click.IntRange(min=0), help="Override train.seed.")
@click.option("--device", help="Override train.device (cpu, cuda, cuda:1).")
@click.option("--threads", type=POSITIVE, help="Override train.threads.")
@click.option("--data-dir", type=click.Path(), help="Override data.root.")
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    type=click.Path(file_okay=False),
    help="Also log the training to TensorBoard event files in this folder.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--nproc",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Processes on this machine, each on a share of every meta-batch (torch.distributed: "
    "gloo on CPU, nccl on CUDA, one GPU each). Across machines, start with torchrun instead.",
)
@click.option(
    "--dist-timeout",
    type=click.FloatRange(min=1.0),
    default=1800.0,
    show_default=True,
    help="Seconds a distributed run waits for a process before it stops.",
)
def train(
    config: str,
    out: str | None,
    resume: bool,
    overwrite: bool,
    steps: int | None,
    seed: int | None,
    device: str | None,
    threads: int | None,
    data_dir: str | None,
    tensorboard_dir: str | None,
    quiet: bool,
    as_json: bool,
    nproc: int,
    dist_timeout: float,
) -> None:
    """Meta-train the run described by the TOML file CONFIG (or a packaged config's name).

    A folder that holds a run needs --resume (continue it) or --overwrite (replace it).
    With --nproc N (or under torchrun: torchrun --nproc-per-node N -m metaunsup train CONFIG)
    the run is shared by N processes and ends with the weights one process would reach.
    """
    from metaunsup.training.build import train_run
    from metaunsup.training.config import load_config

    options = {"--steps": steps, "--seed": seed, "--device": device, "--threads": threads,
               "--data-dir": data_dir, "--tensorboard": tensorboard_dir}  # fmt: skip
    keys = ("train.steps", "train.seed", "train.device", "train.threads", "data.root", None)
    overrides = {k: v for k, v in zip(keys, options.values(), strict=True) if k and v is not None}
    cfg = load_config(config, overrides)
    if nproc > 1:
        from metaunsup.training.distributed import launch

        launch(nproc, _child_argv(click.get_current_context(), skip=("nproc",)))
        return
    out_dir = Path(out) if out else Path("runs") / cfg.name
    try:
        result = train_run(
            cfg,
            out_dir,
            resume=resume,
            overwrite=overwrite,
            progress=not quiet,
            tensorboard=tensorboard_dir,
            timeout=dist_timeout,
        )
    except KeyboardInterrupt:
        raise CommandInterrupted(
            _kept(cfg, out_dir, [config, "--out", str(out_dir)], options)
        ) from None
    if as_json:
        click.echo(json.dumps(_train_summary(cfg.name, cfg.train.val_metric, result, out_dir)))
        return
    summary = f"trained {cfg.name}: {result.steps} steps in {result.seconds:.1f} s"
    if math.isfinite(result.best_metric):
        summary += f"; best {cfg.train.val_metric} {result.best_metric:.4f} at step "
        summary += str(result.best_step)
    else:
        summary += " (no meta-validation: the last step is kept)"
    click.echo(summary)
    click.echo(f"checkpoints: {out_dir / 'best.safetensors'}, {out_dir / 'last.safetensors'}")


def _kept(cfg: Any, out_dir: Path, args: list[str], options: dict[str, Any]) -> str:
    """What an interrupted ``train`` kept in ``out_dir``, and the exact command that continues
    it (the same CONFIG, folder and result-changing options, plus --resume)."""
    from metaunsup.training.build import run_state

    state = run_state(out_dir)
    command = ["metaunsup", "train", *args]
    for option, value in options.items():
        if value is not None:
            command += [option, str(value)]
    if not state.resumable:
        return f"nothing was kept yet; start again with: {shlex.join(command)}"
    return (
        f"kept {state.describe(cfg)} in {out_dir}; continue with: "
        f"{shlex.join([*command, '--resume'])}"
    )


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of the datasets.")
@click.option(
    "--download",
    "download_name",
    type=click.Choice(["mnist", "omniglot"]),
    help="Fetch this dataset's canonical files (needs internet) and verify them.",
)
def datasets(data_dir: str | None, download_name: str | None) -> None:
    """List the datasets and verify the files found for each."""
    from metaunsup import data

    if download_name is not None:
        folder = data.download(download_name, root=data_dir)
        click.echo(f"downloaded {download_name} to {folder}")
    click.echo(f"data folder: {data.resolve_root(data_dir)}")
    bad: dict[str, list[str]] = {}
    for name in data.names():
        s = data.spec(name)
        click.echo(f"{name}: {s.description} (splits: {', '.join(s.splits)})")
        if name == "arrays":
            continue
        for line in s.verify(data.resolve_root(data_dir)):
            click.echo(f"  {line}")
            if line.startswith("BAD "):
                bad.setdefault(name, []).append(line[len("BAD ") :])
    if bad:
        name, lines = next(iter(bad.items()))
        more = sum(map(len, bad.values())) - 1
        raise DataError(
            f"{name}: {lines[0]}"
            + (f" (and {more} more BAD file(s) above)" if more else "")
            + f"; delete the file and get it again with `metaunsup datasets --download {name}`"
        )


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="metaunsup-out/demo",
    show_default=True,
    help="Folder for the run, results.json and convergence.png.",
)
@click.option("--tasks", type=POSITIVE, default=1000, show_default=True, help="Test tasks.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=POSITIVE, help="torch threads (default: the idle CPUs).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: str, tasks: int, seed: int, threads: int | None, quiet: bool) -> None:
    """Meta-train on the bundled digits with no labels, then cluster 10 × 20 test tasks.

    Compares the meta-trained model with K-means and the other baselines on the same tasks,
    and measures convergence (quality against adaptation steps and milliseconds per task).
    """
    from metaunsup.app.demo import run_demo

    _set_threads(threads)
    Path(out).mkdir(parents=True, exist_ok=True)
    echo = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    show = not quiet and sys.stderr.isatty()
    with _progress(tasks, "digits/test", quiet) as update:
        try:
            report = run_demo(out, tasks=tasks, seed=seed, progress=show, echo=echo, update=update)
        except KeyboardInterrupt:
            words = ["metaunsup", "demo", "--out", out, "--seed", str(seed), "--tasks", str(tasks)]
            again = shlex.join(words + (["--threads", str(threads)] if threads else []))
            raise CommandInterrupted(
                f"the run in {Path(out) / 'run'} is kept; continue with: {again}"
            ) from None
    _print_report(report)
    click.echo(f"meta-training took {report['training']['seconds']:.0f} s")
    for name, points in report["curves"].items():
        line = ", ".join(f"{p['steps']}: {p['acc']:.3f}" for p in points)
        click.echo(f"{name}: accuracy after {line}")
    click.echo(f"wrote {report['files']['results']}")
    if report["files"]["figure"]:
        click.echo(f"wrote {report['files']['figure']}")


from metaunsup.app.commands import register_commands  # noqa: E402

register_commands(cli)


@cli.command()
@click.argument("name", type=click.Choice(["mnist-clustering"]))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="docs/results",
    show_default=True,
    help="Folder for the results page, its figures and JSON.",
)
@click.option(
    "--configs",
    "configs_dir",
    type=click.Path(file_okay=False),
    default="configs",
    show_default=True,
    help="Folder of the models' TOML configs.",
)
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False),
    default="runs",
    show_default=True,
    help="Folder of the training runs (trained here if missing).",
)
@click.option("--no-train", is_flag=True, help="Fail instead of training a missing model.")
@click.option("--tasks", type=POSITIVE, default=1000, show_default=True, help="Test tasks.")
@click.option(
    "--curve-tasks",
    type=POSITIVE,
    default=300,
    show_default=True,
    help="Tasks of the convergence curves (the first of the test tasks).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of the datasets.")
@click.option("--threads", type=POSITIVE, help="torch threads (default: the idle CPUs).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def experiment(
    name: str,
    out: str,
    configs_dir: str,
    runs_dir: str,
    no_train: bool,
    tasks: int,
    curve_tasks: int,
    seed: int,
    data_dir: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Run a reference experiment end to end (train or load, evaluate, write the results page).

    mnist-clustering: protocol A on MNIST 10 × 20 test tasks; the unsupervised and cross-domain
    Meta-K-means models against K-means, scikit-learn K-means, PCA + K-means, a GMM and the
    network without meta-training, with convergence curves.
    """
    from metaunsup.app.experiment import run_mnist_clustering

    _set_threads(threads)
    echo = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    with _progress(tasks, "mnist/test", quiet) as update, _interrupted_runs(runs_dir):
        report = run_mnist_clustering(
            out,
            configs_dir=configs_dir,
            runs_dir=runs_dir,
            tasks=tasks,
            curve_tasks=curve_tasks,
            seed=seed,
            train=not no_train,
            data_root=data_dir,
            progress=not quiet and sys.stderr.isatty(),
            echo=echo,
            update=update,
        )
    _print_report(report)
    click.echo(f"wrote {Path(out) / 'mnist_fewshot_clustering.md'}")


@contextmanager
def _interrupted_runs(runs_dir: str):
    """Ctrl-C in an experiment: its runs are kept and the same command continues them."""
    try:
        yield
    except KeyboardInterrupt:
        raise CommandInterrupted(
            f"the training runs in {runs_dir} are kept; the same command continues them"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    return _run(cli, argv)


def _run(command: click.Command, argv: Sequence[str] | None) -> int:
    args = list(argv) if argv is not None else sys.argv[1:]
    name = _command_of(args)

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        click.echo(f"metaunsup: warning: {for_cli(str(message), name)}", err=True)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            command.main(args=args, prog_name="metaunsup", standalone_mode=False)
    except click.exceptions.Exit as stop:
        return int(stop.exit_code or 0)
    except CommandInterrupted as stop:
        click.echo(f"metaunsup: interrupted: {stop}", err=True)
        return 130
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("metaunsup: interrupted", err=True)
        return 130
    except click.UsageError as err:
        _fail(err.format_message())
        return EXIT_USER_ERROR
    except click.ClickException as err:
        _fail(err.format_message())
        return EXIT_USER_ERROR
    except MetaUnsupError as err:
        _fail(for_cli(err.message, name))
        return EXIT_USER_ERROR
    except json.JSONDecodeError as err:
        _fail(f"invalid JSON: {err}")
        return EXIT_USER_ERROR
    except OSError as err:
        _fail(f"{err.strerror or err}: {err.filename}" if err.filename else str(err))
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
