"""The Trainer: logging, best/last checkpoints, exact resume after a kill, checkpoint validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from metaunsup.app.cli import main
from metaunsup.checkpoint import read_checkpoint, save_checkpoint
from metaunsup.errors import CheckpointError, ConfigError
from metaunsup.learners import load_learner
from metaunsup.training.build import train_run
from metaunsup.training.config import config_from_dict

CONFIG = {
    "name": "tiny",
    "data": {"dataset": "digits", "split": "train", "val_fraction": 0.3},
    "task": {"kind": "fewshot", "n_way": 3, "k_shot": 1, "n_query": 3},
    "learner": {
        "name": "maml",
        "inner_lr": 0.4,
        "inner_steps": 1,
        "first_order": False,
        "net": {"name": "conv4", "hidden": 8},
    },
    "train": {"steps": 12, "meta_batch": 2, "val_every": 4, "val_tasks": 6, "checkpoint_every": 3},
}


def _cfg(**train):
    raw = json.loads(json.dumps(CONFIG))
    raw["train"].update(train)
    return config_from_dict(raw)


def _weights(path):
    tensors, _ = read_checkpoint(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_run_writes_log_and_checkpoints(tmp_path):
    result = train_run(_cfg(), tmp_path, progress=False)
    assert result.steps == 12
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "loss" in x]
    assert steps == list(range(1, 13))
    vals = [x for x in lines if "val" in x]
    assert [v["step"] for v in vals] == [4, 8, 12]
    assert 1 <= result.best_step <= 12
    _, meta = read_checkpoint(tmp_path / "last.safetensors")
    assert meta["kind"] == "training" and meta["step"] == 12
    _, best = read_checkpoint(tmp_path / "best.safetensors")
    assert best["kind"] == "model" and best["step"] == result.best_step
    learner = load_learner(tmp_path / "best.safetensors")
    assert learner.config()["name"] == "maml"


def test_resume_in_process_matches_uninterrupted(tmp_path):
    full = tmp_path / "full"
    train_run(_cfg(), full, progress=False)
    part = tmp_path / "part"
    train_run(_cfg(steps=6), part, progress=False)
    train_run(_cfg(), part, resume=True, progress=False)
    a, b = _weights(full / "last.safetensors"), _weights(part / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_steps = [
        json.loads(x)["step"]
        for x in (part / "train_log.jsonl").read_text().splitlines()
        if "loss" in json.loads(x)
    ]
    assert log_steps == list(range(1, 13))


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path):
    """Kill a real `metaunsup train` process mid-run, resume it, compare with an unbroken run."""

    def write_toml(path, steps):
        cfg = CONFIG | {"train": {**CONFIG["train"], "steps": steps, "checkpoint_every": 2}}
        lines = [f'name = "{cfg["name"]}"']
        for table in ("data", "task", "train"):
            lines.append(f"[{table}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in cfg[table].items()]
        lines.append("[learner]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in cfg["learner"].items() if k != "net"]
        lines.append("[learner.net]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in cfg["learner"]["net"].items()]
        path.write_text("\n".join(lines) + "\n")

    config = tmp_path / "run.toml"
    write_toml(config, steps=400)
    cmd = [sys.executable, "-m", "metaunsup", "train", str(config), "--quiet", "--threads", "1"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and step < 6:
        time.sleep(0.2)
        if (killed / "last.safetensors").exists():
            try:
                step = read_checkpoint(killed / "last.safetensors")[1]["step"]
            except CheckpointError:
                step = 0
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = read_checkpoint(killed / "last.safetensors")[1]["step"]
    assert 6 <= stopped_at < 400
    final = stopped_at + 6
    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume", "--steps", str(final)], capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    unbroken = tmp_path / "unbroken"
    done = subprocess.run(
        [*cmd, "--out", str(unbroken), "--steps", str(final)], capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    a, b = _weights(killed / "last.safetensors"), _weights(unbroken / "last.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_without_checkpoint_is_clear(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(
        'name = "x"\n[data]\ndataset = "digits"\nsplit = "train"\n'
        '[learner]\nname = "protonet"\n[train]\nsteps = 2\n'
    )
    code = main(["train", str(config), "--out", str(tmp_path / "new"), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot resume" in err and len(err.strip().splitlines()) == 1


def test_mismatched_architecture_is_refused(tmp_path):
    train_run(_cfg(steps=2), tmp_path, progress=False)
    tensors, meta = read_checkpoint(tmp_path / "best.safetensors")
    meta["learner"]["net"]["hidden"] = 16  # claims another width than its weights have
    for key in ("format", "version"):
        meta.pop(key)
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, tensors, meta)
    with pytest.raises(CheckpointError, match="does not match the model architecture"):
        load_learner(bad)


def test_resume_with_other_learner_is_refused(tmp_path):
    train_run(_cfg(steps=3), tmp_path, progress=False)
    raw = json.loads(json.dumps(CONFIG))
    raw["learner"]["inner_lr"] = 0.1
    raw["train"]["steps"] = 6
    with pytest.raises(CheckpointError, match="another learner configuration"):
        train_run(config_from_dict(raw), tmp_path, resume=True, progress=False)


def test_train_init_starts_from_a_checkpoints_weights(tmp_path):
    """``train.init``: the run starts from the given checkpoint's weights (at a learning rate
    so small that one Adam step moves no weight by more than about 1e-12, they end there),
    and its card records where it started."""
    first = tmp_path / "first"
    train_run(_cfg(steps=4), first, progress=False)
    start = str(first / "last.safetensors")
    warm = tmp_path / "warm"
    train_run(_cfg(steps=1, lr=1e-12, seed=5, init=start), warm, progress=False)
    cold = tmp_path / "cold"
    train_run(_cfg(steps=1, lr=1e-12, seed=5), cold, progress=False)
    begun, ended, fresh = (_weights(p) for p in (first / "last.safetensors",
                                                 warm / "last.safetensors",
                                                 cold / "last.safetensors"))  # fmt: skip
    floats = [k for k in begun if begun[k].is_floating_point() and "running" not in k]
    assert max(float((begun[k] - ended[k]).abs().max()) for k in floats) < 1e-9
    assert max(float((begun[k] - fresh[k]).abs().max()) for k in floats) > 1e-3
    _, meta = read_checkpoint(warm / "last.safetensors")
    assert meta["run"]["train"]["init"] == start


def test_train_init_of_another_learner_is_refused_before_any_work(tmp_path, capsys):
    other = tmp_path / "other"
    raw = json.loads(json.dumps(CONFIG))
    raw["learner"]["net"]["hidden"] = 4
    raw["train"]["steps"] = 1
    train_run(config_from_dict(raw), other, progress=False)
    with pytest.raises(CheckpointError, match=r"holds another learner .*differs in net"):
        train_run(_cfg(init=str(other / "last.safetensors")), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_ema_averages_the_weights_validates_them_and_resumes_exactly(tmp_path):
    """train.ema: the model checkpoints hold the moving average, the training checkpoint the
    raw weights beside it; a resumed run ends with the same average as an uninterrupted one."""
    full = tmp_path / "full"
    train_run(_cfg(ema=0.5, val_every=12), full, progress=False)
    tensors, _ = read_checkpoint(full / "last.safetensors")
    raw = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    assert raw.keys() == ema.keys()
    floats = [k for k in raw if raw[k].is_floating_point()]
    assert any(not torch.equal(raw[k], ema[k]) for k in floats)  # an average, not a copy
    best = _weights(full / "best.safetensors")  # validated at step 12, the last: the average
    assert all(torch.equal(best[f"model.{k}"], ema[k]) for k in ema)
    plain = tmp_path / "plain"
    train_run(_cfg(val_every=12), plain, progress=False)  # the same raw trajectory without it
    assert all(torch.equal(_weights(plain / "last.safetensors")[f"model.{k}"], raw[k]) for k in raw)
    part = tmp_path / "part"
    train_run(_cfg(ema=0.5, val_every=12, steps=6), part, progress=False)
    train_run(_cfg(ema=0.5, val_every=12), part, resume=True, progress=False)
    again, _ = read_checkpoint(part / "last.safetensors")
    assert all(torch.equal(again[k], tensors[k]) for k in tensors if k.startswith("ema."))
    with pytest.raises(CheckpointError, match=r"train\.ema = 0\.0"):
        train_run(_cfg(ema=0.5, val_every=12), plain, resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"train\.ema"):
        _cfg(ema=1.0)


def test_a_run_written_before_train_ema_existed_resumes(tmp_path):
    train_run(_cfg(steps=6), tmp_path, progress=False)
    tensors, meta = read_checkpoint(tmp_path / "last.safetensors")
    del meta["run"]["train"]["ema"]  # as runs were written before the setting
    save_checkpoint(tmp_path / "last.safetensors", tensors, meta)
    assert train_run(_cfg(), tmp_path, resume=True, progress=False).steps == 12
