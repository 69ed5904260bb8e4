"""What every ``metaunsup`` command shares: the progress bar, ``--device`` and ``--threads``,
the results table, and the Ctrl-C exception whose message says what was kept.

Imports stay light (click only; torch and tqdm when a command runs), so ``metaunsup --help``
stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from metaunsup.errors import ConfigError

if TYPE_CHECKING:
    pass

__all__ = [
    "POSITIVE",
    "CommandInterrupted",
    "RegistryHelpOption",
    "check_outputs",
    "child_argv",
    "interrupted_runs",
    "parse_device",
    "print_report",
    "progress",
    "set_threads",
    "table_columns",
]


class RegistryHelpOption(click.Option):
    """A click option whose help text is written when it is shown, from a registry that is
    imported only then (``help_from()``), so that ``--help`` lists every registered name without
    a hand-kept list and ``metaunsup`` starts without importing torch."""

    def __init__(self, *args: Any, help_from: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help_from = help_from

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self.help_from()
        return super().get_help_record(ctx)


#: A click type for counts (tasks, steps, threads): an integer of at least 1.
POSITIVE = click.IntRange(min=1)


class CommandInterrupted(Exception):  # noqa: N818 (not an error: Ctrl-C)
    """Ctrl-C during a command; the message says what was kept and how to continue."""


@contextmanager
def progress(total: int, desc: str, quiet: bool):
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


def parse_device(name: str):
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


def set_threads(threads: int | None) -> None:
    """``--threads``, or the idle CPUs when not given (see ``metaunsup.training.threads``)."""
    from metaunsup.training.threads import apply_threads

    apply_threads(threads)


def child_argv(ctx: click.Context, skip: Sequence[str]) -> list[str]:
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


def print_report(report: dict) -> None:
    from metaunsup.app.report.tables import report_title, results_table

    click.echo(report_title(report))
    click.echo(results_table(report))


@contextmanager
def interrupted_runs(runs_dir: str):
    """Ctrl-C in an experiment: its runs are kept and the same command continues them."""
    try:
        yield
    except KeyboardInterrupt:
        raise CommandInterrupted(
            f"the training runs in {runs_dir} are kept; the same command continues them"
        ) from None


def check_outputs(out: str | None, plot: str | None, inputs: Sequence[str | None]) -> None:
    """Refuse, before any work, an ``--out`` or ``--plot`` that cannot be written, that is one
    of the command's ``inputs`` (never written over) or that names the other one."""
    from metaunsup.fileio import check_output_path

    outputs = [
        check_output_path(path, inputs=inputs, option=option)
        for option, path in (("--out", out), ("--plot", plot))
        if path is not None
    ]
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise ConfigError("--out and --plot name the same file; give two different paths")


def report_option(page: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The option ``--report DIR`` (as ``report_dir``): write ``DIR/index.html``, a
    self-contained page; ``page`` says what it shows."""
    return click.option(
        "--report",
        "report_dir",
        type=click.Path(file_okay=False),
        help=f"Write DIR/index.html: a self-contained page {page}.",
    )


def impute_option(native: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The option ``--impute``: missing cells taken natively (``native`` says when) or filled
    first by scikit-learn's ``SimpleImputer``/``KNNImputer``/``IterativeImputer``."""
    return click.option(
        "--impute",
        type=click.Choice(["native", "simple", "knn", "iterative"]),
        default="native",
        show_default=True,
        help=f"Missing cells: taken natively{native}, or filled by scikit-learn's imputer first.",
    )


def table_columns(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``--ignore COL`` and ``--columns COL`` (repeatable) of a command that reads
    a table: which of its columns are left out, or the only ones used."""
    command = click.option(
        "--columns",
        "use_columns",
        multiple=True,
        metavar="COL",
        help="Use only these table columns (repeatable).",
    )(command)
    return click.option(
        "--ignore", multiple=True, metavar="COL", help="Leave this table column out (repeatable)."
    )(command)
