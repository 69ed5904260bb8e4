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
import re
import sys
import warnings
from collections.abc import Sequence

import click

from metaunsup.app.console import CommandInterrupted
from metaunsup.errors import MetaUnsupError

EXIT_USER_ERROR = 2
log = logging.getLogger("metaunsup")


def _fail(message: str) -> None:
    click.echo(f"metaunsup: error: {message}", err=True)


#: The Python arguments behind each command's options, as library messages name them.
CLI_NAMES = {
    "evaluate": {"n_way": "--n-way", "k_shot": "--k-shot", "n_query": "--query",
                 "n_tasks": "--tasks"},
    "detect": {"fpr": "--fpr"},
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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="metaunsup", prog_name="metaunsup")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """metaunsup: meta-unsupervised learning: cluster a new small unlabeled task well."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


from metaunsup.app.commands import register_commands  # noqa: E402

register_commands(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    return _run(cli, argv)


def _run(command: click.Command, argv: Sequence[str] | None) -> int:
    args = list(argv) if argv is not None else sys.argv[1:]
    name = _command_of(args)

    shown: set[str] = set()

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        text = for_cli(str(message), name)
        if text not in shown:  # one line per warning, however often the work raises it
            shown.add(text)
            click.echo(f"metaunsup: warning: {text}", err=True)

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
