"""Fault injection for the writers: a full disk and a killed process during every atomic write.

The writers are the checkpoint (:func:`metaunsup.checkpoint.save_checkpoint`), the CACTUs
partition cache (:func:`metaunsup.tasks.pseudo.cactus.save_partitions`), a results JSON
(``metaunsup evaluate --json``) and the labels (``metaunsup cluster --out``). Each one is made to
fail halfway through writing its bytes, over a previous version of the file: by ``ENOSPC``
(the disk is full: the write raises) and by ``SIGKILL`` (a forked child process is killed in
the middle of the write, so no clean-up code runs). Afterwards the target must hold the
previous version, whole, and the next run must read it; a file that *is* cut short (as a
non-atomic writer would leave it) must be reported as corrupt, never read as something else.

Also here: outputs get the permissions of the user's umask, and a folder that turns read-only
during the work is reported by the output's own name.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import metaunsup.fileio as fileio
from metaunsup.app.cli import main
from metaunsup.checkpoint import read_checkpoint, save_checkpoint
from metaunsup.errors import CheckpointError, OutputError
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.tasks.pseudo.cactus import cactus_partitions, load_partitions, save_partitions


def _half_then(fail: Callable[[], None]) -> Callable[[int, bytes], None]:
    """A ``_write_fd`` that writes half the bytes, flushes them, then calls ``fail``."""

    def write(fd: int, data: bytes) -> None:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
            fail()

    return write


def _disk_full() -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _hidden_temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- the writers
def _checkpoint(path: Path, version: int) -> None:
    save_checkpoint(path, {"w": torch.full((64, 64), float(version))}, {"kind": "model"})


def _partitions(path: Path, version: int) -> None:
    save_partitions(path, torch.full((4, 300), version, dtype=torch.int32), {"v": version})


def _results(path: Path, version: int) -> None:
    atomic_write_json(path, {"version": version, "results": [{"acc": 0.5}] * 50})


def _labels(path: Path, version: int) -> None:
    atomic_write_text(path, "index,label\n" + f"0,{version}\n" * 200)


WRITERS = {
    "checkpoint": (_checkpoint, lambda p: int(read_checkpoint(p)[0]["w"][0, 0])),
    "partitions": (_partitions, lambda p: int(load_partitions(p)[1]["v"])),
    "results-json": (_results, lambda p: json.loads(p.read_text())["version"]),
    "labels": (_labels, lambda p: int(p.read_text().splitlines()[1].split(",")[1])),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_full_disk_leaves_the_previous_file_whole(name, tmp_path, monkeypatch):
    write, read = WRITERS[name]
    path = tmp_path / "target"
    write(path, 1)
    monkeypatch.setattr(fileio, "_write_fd", _half_then(_disk_full))
    with pytest.raises(OutputError, match=r"No space left on device.*previous file is unchanged"):
        write(path, 2)
    assert read(path) == 1  # the next run reads what is there
    assert _hidden_temporaries(tmp_path) == []  # the half-written temporary file is removed


def test_a_full_disk_on_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "_write_fd", _half_then(_disk_full))
    with pytest.raises(OutputError, match="nothing was written: free some space"):
        _labels(tmp_path / "labels.csv", 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_killed_process_leaves_the_previous_file_whole(name, tmp_path):
    """A forked child starts writing version 2 and is killed (SIGKILL) halfway through."""
    write, read = WRITERS[name]
    path = tmp_path / "target"
    write(path, 1)
    pid = os.fork()
    if pid == 0:  # the child: no clean-up code may run, as in a real kill
        try:
            fileio._write_fd = _half_then(lambda: os.kill(os.getpid(), signal.SIGKILL))
            write(path, 2)
        finally:
            os._exit(1)  # not reached when the kill works
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert read(path) == 1  # the next run reads the previous version, whole
    # nothing can remove the temporary file of a killed process; it is hidden, beside it
    left = _hidden_temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith(".target.")


def _table(path: Path) -> str:
    np.save(path, np.random.default_rng(0).random((30, 64)))
    return str(path)


def test_the_cli_labels_survive_a_full_disk(tmp_path, monkeypatch, capsys):
    data = _table(tmp_path / "x.npy")
    labels = tmp_path / "labels.csv"
    argv = ["cluster", data, "--checkpoint", "digits", "--out", str(labels), "--quiet"]
    assert main([*argv, "--k", "2"]) == 0
    before = labels.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(fileio, "_write_fd", _half_then(_disk_full))
    assert main([*argv, "--k", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"metaunsup: error: cannot write {str(labels)!r} (No space left on device); the "
        "previous file is unchanged: free some space or write elsewhere"
    ]
    assert labels.read_bytes() == before
    assert _hidden_temporaries(tmp_path) == []


def test_the_cli_results_json_survives_a_full_disk(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.json"
    argv = ["evaluate", "--tasks", "3", "--method", "kmeans", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    before = out.read_bytes()
    monkeypatch.setattr(fileio, "_write_fd", _half_then(_disk_full))
    assert main(argv) == 2
    assert "cannot write" in capsys.readouterr().err
    assert out.read_bytes() == before


# ----------------------------------------------------------------------------- the next run
def test_a_cut_checkpoint_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "last.safetensors"
    _checkpoint(path, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # what a non-atomic writer could leave
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(path)


def test_a_cut_partition_cache_is_recomputed_with_a_warning(tmp_path, caplog):
    z = torch.randn(120, 4, generator=torch.Generator().manual_seed(0))
    cache = tmp_path / "partitions.safetensors"
    first = cactus_partitions(z, 3, 4, seed=0, cache=cache)
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        again = cactus_partitions(z, 3, 4, seed=0, cache=cache)
    assert "unusable" in caplog.text
    assert torch.equal(first, again)
    assert torch.equal(load_partitions(cache)[0], first)  # and the cache is whole again


# ----------------------------------------------------------------------------- permissions
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        _labels(tmp_path / "labels.csv", 1)
        _checkpoint(tmp_path / "model.safetensors", 1)
        _results(tmp_path / "r.json", 1)
    finally:
        os.umask(old)
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == mode, (p.name, oct(p.stat().st_mode))


def test_cli_outputs_are_readable_by_others_under_umask_022(tmp_path):
    data = _table(tmp_path / "x.npy")
    old = os.umask(0o022)
    try:
        argv = ["cluster", data, "--k", "2", "--checkpoint", "digits", "--quiet"]
        assert main([*argv, "--out", str(tmp_path / "labels.csv")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "labels.csv").stat().st_mode & 0o777 == 0o644


def test_a_folder_that_turns_read_only_is_reported_by_the_outputs_name(tmp_path, monkeypatch):
    """The folder was writable when the command started; by the end it is not (mkstemp fails):
    the message names the output, not the temporary file."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".labels.x.tmp"))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError) as info:
        atomic_write_text(tmp_path / "labels.csv", "index,label\n")
    assert str(info.value) == (
        f"cannot write {str(tmp_path / 'labels.csv')!r} (Permission denied); nothing was "
        "written: choose a writable folder"
    )
    assert ".tmp" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into any folder")
def test_a_read_only_folder_is_refused_before_any_work(tmp_path, capsys):
    data = _table(tmp_path / "x.npy")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code = main(["cluster", data, "--k", "2", "--out", str(out / "labels.csv")])
    finally:
        out.chmod(0o755)
    assert code == 2 and "is not writable" in capsys.readouterr().err
