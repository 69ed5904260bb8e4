"""``metaunsup train CONFIG``: meta-train the run a TOML config describes, on one process or
many (:func:`metaunsup.training.build.train_run`); Ctrl-C says what was kept and the exact
command that continues.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

import click

from metaunsup.app.console import POSITIVE, CommandInterrupted, child_argv

__all__ = ["train"]


@click.command()
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

        launch(nproc, child_argv(click.get_current_context(), skip=("nproc",)))
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
        what = cfg.train.val_metric
        if cfg.unsupervised is not None:  # validated against pseudo-classes, not labels
            what += " against the held-out examples' pseudo-classes"
        summary += f"; best {what} {result.best_metric:.4f} at step {result.best_step}"
    else:
        summary += " (no meta-validation: the last step is kept)"
    click.echo(summary)
    click.echo(f"checkpoints: {out_dir / 'best.safetensors'}, {out_dir / 'last.safetensors'}")


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
