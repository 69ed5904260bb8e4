"""``metaunsup detect``: ranked scores and flags, and the gallery (its bad inputs are in the
catalogue, ``tests/app/test_bad_inputs.py``)."""

from __future__ import annotations

import base64
import csv
import json

import numpy as np
import pytest

from metaunsup.app.cli import main
from tests.helpers.anomaly import svdd_checkpoint
from tests.helpers.estimators import digits_xy, train_mlp_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detect")
    rng = np.random.default_rng(0)
    np.save(folder / "ref.npy", rng.normal(size=(100, 5)))
    np.save(folder / "input.npy", np.r_[rng.normal(size=(20, 5)), 6 + rng.normal(size=(3, 5))])
    X, y = digits_xy(400)
    images = (X.reshape(-1, 8, 8) * 255 / 16).astype(np.uint8)
    np.save(folder / "threes.npy", images[y == 3][:5])
    np.save(folder / "digits.npy", images[:60])
    return {
        "dir": folder,
        "svdd": svdd_checkpoint(folder / "svdd.safetensors"),
        "kmeans": train_mlp_checkpoint(folder / "kmeans.safetensors", steps=2),
    }


def test_detect_ranks_flags_and_writes_csv(files, capsys):
    d = files["dir"]
    out = d / "scores.csv"
    assert main(["detect", str(d / "input.npy"), "--normal", str(d / "ref.npy"),
                 "--out", str(out)]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 24)]
    assert {r["index"] for r in rows[:3]} == {"20", "21", "22"}
    assert all(r["flag"] == "1" for r in rows[:3])
    assert "flagged" in capsys.readouterr().out


def test_detect_images_with_a_meta_calibrated_checkpoint_and_gallery(files, capsys):
    d = files["dir"]
    args = ["detect", str(d / "digits.npy"), "--normal", str(d / "threes.npy"),
            "--checkpoint", str(files["svdd"]), "--plot", str(d / "g.png"), "--json"]  # fmt: skip
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["calibration"] == "meta" and info["reference_examples"] == 5
    assert 0 < info["flagged"] < 60
    assert (d / "g.png").read_bytes().startswith(b"\x89PNG")


def test_detect_at_the_checkpoints_learned_boundary(files, capsys):
    d = files["dir"]
    args = ["detect", str(d / "digits.npy"), "--normal", str(d / "threes.npy"),
            "--checkpoint", str(files["svdd"]), "--boundary"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["calibration"] == "boundary" and 0 < info["flagged"] < 60
    assert main(args) == 0
    assert "meta-learned decision boundary" in capsys.readouterr().err


def test_detect_report_of_images_holds_the_gallery(files, capsys):
    d = files["dir"]
    report = d / "report"
    args = ["detect", str(d / "digits.npy"), "--normal", str(d / "threes.npy"),
            "--checkpoint", str(files["svdd"]), "--plot", str(d / "g2.png"), "--report",
            str(report), "--json"]  # fmt: skip
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files"]["report"] == str(report / "index.html")
    page = (report / "index.html").read_text()
    gallery = (d / "g2.png").read_bytes()  # the same gallery as --plot, inlined
    assert base64.b64encode(gallery).decode("ascii") in page
    assert page.count('src="data:image/png;base64,') == 3  # histogram, map, gallery
    assert "what makes it unusual" not in page  # only tables say why


def test_detect_report_into_a_file_is_refused_and_writes_nothing(files, capsys):
    d = files["dir"]
    (d / "taken.txt").write_text("keep")
    out = d / "never.csv"
    args = ["detect", str(d / "input.npy"), "--out", str(out), "--report", str(d / "taken.txt")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--report" in err
    assert not out.exists() and (d / "taken.txt").read_text() == "keep"
