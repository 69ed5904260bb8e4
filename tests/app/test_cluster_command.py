"""``metaunsup cluster``: inputs (.npy, .csv with and without header, image folders), the labels
CSV, the summary (text and JSON), the montage, checkpoints and k=auto."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from metaunsup.app.cli import main
from tests.helpers.estimators import conv_checkpoint, digits_xy, train_mlp_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_labels(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """A folder of 40 digit images (8x8 grey PNGs, ink bright) and their classes."""
    folder = tmp_path_factory.mktemp("images")
    X, y = digits_xy(40)
    for i, row in enumerate(X):
        Image.fromarray((row.reshape(8, 8) * 15).astype(np.uint8)).save(folder / f"d{i:02d}.png")
    return folder, y


def test_npy_table_to_csv_with_summary(tmp_path, capsys):
    X, _ = digits_xy(150)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "labels.csv"
    code, stdout, err = run(
        capsys, "cluster", tmp_path / "x.npy", "--k", "4", "--out", out, "--meta-steps", "5"
    )
    assert code == 0, err
    rows = read_labels(out)
    assert rows[0] == ["index", "label"] and len(rows) == 151
    assert [int(r[0]) for r in rows[1:]] == list(range(150))
    labels = [int(r[1]) for r in rows[1:]]
    assert set(labels) == {0, 1, 2, 3}
    assert "clustered 150 examples (64 features)" in stdout and "into 4 clusters" in stdout
    assert "k: given as --k 4" in stdout
    sizes = stdout.split("cluster sizes: ")[1].splitlines()[0]
    assert sizes == ", ".join(f"{c}: {labels.count(c)}" for c in range(4))
    assert f"wrote {out}" in stdout and err == ""


def test_csv_with_and_without_header_give_the_same_labels(tmp_path, capsys):
    X, _ = digits_xy(80)
    body = "\n".join(",".join(f"{v:g}" for v in row) for row in X) + "\n"
    (tmp_path / "plain.csv").write_text(body)
    (tmp_path / "named.csv").write_text(",".join(f"px{i}" for i in range(64)) + "\n" + body)
    results = []
    for name in ("plain.csv", "named.csv"):
        out = tmp_path / f"{name}.labels.csv"
        code, _, err = run(
            capsys, "cluster", tmp_path / name, "--k", "3", "--out", out, "--meta-steps", "3"
        )
        assert code == 0, err
        results.append(read_labels(out))
    assert results[0] == results[1] and len(results[0]) == 81


def test_labels_go_to_stdout_and_summary_to_stderr_without_out(tmp_path, capsys):
    X, _ = digits_xy(60)
    np.save(tmp_path / "x.npy", X)
    code, stdout, err = run(capsys, "cluster", tmp_path / "x.npy", "--k", "2", "--meta-steps", "2")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == "index,label" and len(lines) == 61
    assert "clustered 60 examples" in err
    code, stdout, err = run(
        capsys, "cluster", tmp_path / "x.npy", "--k", "2", "--meta-steps", "2", "--quiet"
    )
    assert code == 0 and err == "" and len(stdout.splitlines()) == 61


def test_image_folder_with_montage_and_json(tmp_path, capsys, digit_images):
    folder, _ = digit_images
    out, plot = tmp_path / "labels.csv", tmp_path / "montage.png"
    code, stdout, err = run(
        capsys, "cluster", folder, "--k", "3", "--out", out, "--plot", plot, "--json",
        "--meta-steps", "3",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads(stdout)
    assert info["k"] == 3 and info["k_chosen_by"] == "given" and info["examples"] == 40
    assert info["example_shape"] == [1, 8, 8] and sum(info["sizes"]) == 40
    assert info["files"] == {"labels": str(out), "montage": str(plot)}
    assert "labels" not in info  # they went to the file
    rows = read_labels(out)
    assert rows[0] == ["file", "label"] and rows[1][0] == "d00.png" and len(rows) == 41
    with Image.open(plot) as im:
        assert im.format == "PNG"
        assert im.height >= 3 * 32  # one row of enlarged images per cluster
        assert im.width > 12 * 32


def test_report_of_an_image_folder_shows_each_clusters_images(tmp_path, capsys, digit_images):
    import base64
    import io
    import re

    folder, _ = digit_images
    out, report = tmp_path / "labels.csv", tmp_path / "report"
    code, _, err = run(
        capsys, "cluster", folder, "--k", "3", "--out", out, "--report", report, "--quiet",
        "--meta-steps", "3",
    )  # fmt: skip
    assert code == 0, err
    page = (report / "index.html").read_text()
    labels = [int(row[1]) for row in read_labels(out)[1:]]
    galleries = re.findall(
        r'<section class="cluster" id="cluster-(\d+)">.*?<p>(\d+) rows.*?Most typical: ([^<]*)\.'
        r'</p><h3>Its images</h3>.*?<img class="gallery" alt="images of cluster \d+" '
        r'src="data:image/png;base64,([^"]+)"',
        page,
    )
    assert [int(c) for c, *_ in galleries] == [0, 1, 2]
    for c, size, typical, png in galleries:
        assert int(size) == labels.count(int(c))
        first = typical.split(", ")[0]  # the most typical image is a member of its cluster
        assert labels[int(first.removeprefix("d").removesuffix(".png"))] == int(c)
        with Image.open(io.BytesIO(base64.b64decode(png))) as im:
            shown = min(12, int(size))  # 8x8 images enlarged to 32x32, 4-pixel gaps
            assert im.size == (shown * 36 + 4, 40)
    assert "pixel (" in page  # the features that set a cluster apart are named pixels


def test_json_without_out_carries_the_labels(tmp_path, capsys):
    X, _ = digits_xy(50)
    np.save(tmp_path / "x.npy", X)
    code, stdout, _ = run(
        capsys, "cluster", tmp_path / "x.npy", "--k", "2", "--json", "--meta-steps", "2"
    )
    assert code == 0
    info = json.loads(stdout)
    assert len(info["labels"]) == 50 and set(info["labels"]) <= {0, 1}


def test_auto_k_reports_the_choice(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]])
    X = np.concatenate([c + rng.normal(size=(25, 3)) for c in centers])
    np.save(tmp_path / "blobs.npy", X)
    out = tmp_path / "labels.csv"
    code, stdout, err = run(
        capsys, "cluster", tmp_path / "blobs.npy", "--k", "auto", "--out", out,
        "--meta-steps", "10", "--json", "--k-by", "silhouette",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads(stdout)
    assert info["k"] == 4 and info["k_chosen_by"] == "silhouette"
    assert info["k_reason"].startswith("k=4 has the highest mean silhouette")
    assert set(info["silhouette"]) == {str(k) for k in range(2, 16)}


def test_auto_k_by_eigengap(tmp_path, capsys):
    rng = np.random.default_rng(1)
    centers = 9.0 * np.eye(3)
    np.save(tmp_path / "blobs.npy", np.concatenate([c + rng.normal(size=(30, 3)) for c in centers]))
    code, stdout, err = run(
        capsys, "cluster", tmp_path / "blobs.npy", "--k", "auto", "--k-by", "eigengap",
        "--meta-steps", "5", "--json", "--out", tmp_path / "labels.csv",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads(stdout)
    assert info["k"] == 3 and info["k_chosen_by"] == "eigengap"
    assert set(info["eigengap"]) == {str(k) for k in range(2, 16)}
    code, _, err = run(
        capsys, "cluster", tmp_path / "blobs.npy", "--k", "auto", "--k-by", "eigencount",
        "--meta-steps", "5", "--out", tmp_path / "count.csv",
    )  # fmt: skip
    assert code == 2 and err.startswith("metaunsup: error:") and "calibrated" in err
    assert not (tmp_path / "count.csv").exists()


def test_checkpoint_on_npy_images_and_on_a_table(tmp_path, capsys):
    conv = conv_checkpoint(tmp_path / "conv.safetensors")
    mlp = train_mlp_checkpoint(tmp_path / "mlp.safetensors", steps=5)
    X, _ = digits_xy(60)
    np.save(tmp_path / "images.npy", X.reshape(-1, 8, 8))
    np.save(tmp_path / "table.npy", X)
    for data, model in (("images.npy", conv), ("table.npy", mlp)):
        out = tmp_path / f"{data}.csv"
        code, stdout, err = run(
            capsys, "cluster", tmp_path / data, "--k", "5", "--checkpoint", model, "--out", out
        )
        assert code == 0, err
        assert f"model: checkpoint {model}" in stdout
        assert len(read_labels(out)) == 61


def test_same_seed_same_labels(tmp_path, capsys):
    X, _ = digits_xy(100)
    np.save(tmp_path / "x.npy", X)
    outs = []
    for name in ("a.csv", "b.csv"):
        code, _, _ = run(
            capsys, "cluster", tmp_path / "x.npy", "--k", "5", "--seed", "7", "--out",
            tmp_path / name, "--meta-steps", "5",
        )  # fmt: skip
        assert code == 0
        outs.append((tmp_path / name).read_text())
    assert outs[0] == outs[1]


def test_summary_says_how_the_table_was_scaled_and_what_the_guard_chose(tmp_path, capsys):
    from sklearn.datasets import load_wine

    X, _ = load_wine(return_X_y=True)
    np.save(tmp_path / "wine.npy", X)
    code, stdout, err = run(
        capsys, "cluster", tmp_path / "wine.npy", "--k", "3", "--json", "--meta-steps", "5"
    )
    assert code == 0, err
    info = json.loads(stdout)
    assert info["scaling"]["how"] == "standard" and "standardised" in info["scaling"]["reason"]
    clustered = info["clustered"]
    assert clustered["use"] in ("embedding", "features")
    assert clustered["criterion"] == "pseudo-partition agreement"
    assert f"{clustered['embedding_score']:.3f}" in clustered["reason"]


def test_normalize_says_what_it_did_and_needs_a_checkpoint(tmp_path, capsys):
    from sklearn.datasets import load_digits

    images = 16.0 - load_digits().images[:60]  # dark ink on light paper
    np.save(tmp_path / "dark.npy", images)
    code, stdout, err = run(
        capsys, "cluster", tmp_path / "dark.npy", "--k", "10", "--checkpoint", "digits",
        "--normalize", "--json",
    )  # fmt: skip
    assert code == 0, err
    steps = json.loads(stdout)["input_normalization"]
    assert steps[0] == "values rescaled from [0, 16] to [0, 1]" and "inverted" in steps[1]
    code, _, err = run(capsys, "cluster", tmp_path / "dark.npy", "--k", "3", "--normalize")
    assert code == 2 and "metaunsup: error: --normalize" in err


def test_separated_clusters_are_clustered_without_self_training(tmp_path, capsys):
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    x, y = make_blobs(400, 8, centers=4, random_state=0)
    np.save(tmp_path / "blobs.npy", x)
    code, out, err = run(capsys, "cluster", tmp_path / "blobs.npy", "--k", 4,
                         "--out", tmp_path / "labels.csv")  # fmt: skip
    assert code == 0, err
    assert "k-means on the scaled features (the guard: separated clusters)" in out
    assert "so self-training was skipped" in out
    rows = read_labels(tmp_path / "labels.csv")[1:]
    assert adjusted_rand_score(y, [int(row[-1]) for row in rows]) == 1.0
