"""``metaunsup detect``: ranked scores and flags, the gallery, and bad input (one line, exit 2,
no file left)."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: np.save(d / "bad.npy", np.zeros((1, 5))), [], "1 sample"),
        (lambda d: np.save(d / "bad.npy", np.ones((6, 5))), [], "identical"),
        (lambda d: np.save(d / "bad.npy", np.zeros((6, 4))), [], "same shape"),
        (lambda d: None, ["--fpr", "1"], "strictly between 0 and 1"),
        (lambda d: None, ["--fpr", "0"], "strictly between 0 and 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_file(files, capsys, make, extra, message):
    d = files["dir"]
    make(d)
    normal = d / "bad.npy" if (d / "bad.npy").exists() else d / "ref.npy"
    out = d / "never.csv"
    code = main(["detect", str(d / "input.npy"), "--normal", str(normal), "--out", str(out),
                 *extra])  # fmt: skip
    (d / "bad.npy").unlink(missing_ok=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("metaunsup:")
    assert not out.exists()


def test_a_clustering_checkpoint_is_refused(files, capsys):
    d = files["dir"]
    X, _ = digits_xy(30)
    np.save(d / "flat.npy", X)
    assert main(["detect", str(d / "flat.npy"), "--checkpoint", str(files["kmeans"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not score anomalies" in err and "\n" not in err
