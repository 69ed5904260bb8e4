"""Tables as they come (:mod:`metaunsup.data.tables`): column plans, encodings, selection and
the refusals, each naming the column or row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaunsup.data.tables import TableEncoder, load_table, read_table
from metaunsup.errors import ConfigError, DataError


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(100, 100 + n),
            "height": rng.normal(170, 10, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "city": [f"town{i}" for i in rng.integers(0, 15, n)],
            "constant": np.full(n, 3.0),
            "name": [f"person {i}" for i in range(n)],
        }
    )
    frame.loc[[1, 5], "height"] = np.nan
    frame.loc[2, "colour"] = None
    return frame


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    _frame().to_csv(path, index=False)
    return path


def test_each_column_gets_its_plan(csv_file: Path):
    table = load_table(csv_file, max_onehot=5)
    kinds = {p.name: p.kind for p in table.columns}
    assert kinds == {
        "customer_id": "left out",
        "height": "numeric",
        "colour": "one-hot",
        "city": "frequency",
        "constant": "left out",
        "name": "left out",
    }
    assert "identifier" in next(p for p in table.columns if p.name == "name").detail
    assert table.x.dtype == np.float32
    assert table.x.shape == (40, 1 + 3 + 1)
    assert table.feature_names[0] == "height"
    assert {f for f in table.feature_names if f.startswith("colour=")} == {
        "colour=red",
        "colour=green",
        "colour=blue",
    }
    # standardised over observed cells; missing cells stay NaN, in every one-hot feature
    h = table.x[:, 0]
    assert np.isnan(h[[1, 5]]).all()
    assert abs(np.nanmean(h)) < 1e-5 and abs(np.nanstd(h) - 1) < 1e-4
    assert np.isnan(table.x[2, 1:4]).all() and not np.isnan(table.x[3, 1:4]).any()
    assert next(p for p in table.columns if p.name == "height").missing == 2
    assert table.row_name(0) == "row 2"  # after the header


def test_parquet_reads_as_the_csv(csv_file: Path, tmp_path: Path):
    pq = tmp_path / "t.parquet"
    pd.read_csv(csv_file).to_parquet(pq)
    a, b = load_table(csv_file), load_table(pq)
    assert a.feature_names == b.feature_names
    np.testing.assert_allclose(a.x, b.x, rtol=1e-5, equal_nan=True)


def test_ignore_and_columns(csv_file: Path):
    only = load_table(csv_file, columns=["height", "colour"])
    assert only.feature_names[0] == "height" and len(only.feature_names) == 4
    left = {p.name: p.detail for p in only.columns if p.kind == "left out"}
    assert left["city"] == "not in --columns"
    ignored = load_table(csv_file, ignore=["colour"])
    assert not any(f.startswith("colour") for f in ignored.feature_names)
    with pytest.raises(ConfigError, match=r"--ignore 'nope'.*no such column"):
        read_table(csv_file, ignore=["nope"])


def test_transform_encodes_new_rows_the_same_way(csv_file: Path):
    raw = read_table(csv_file)
    encoder = TableEncoder()
    fitted = encoder.fit_transform(raw)
    again = encoder.transform(raw.frame.iloc[:5])
    np.testing.assert_array_equal(again.x, fitted.x[:5])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,\n2,\n3,\n", "column 'b' has no value in any row; leave it out with --ignore b"),
        ("a,b\n1,2\n,\n3,4\n", "row 3 has no value in any used column"),
        ("a,b\n1,2\n3,4,5\n", "row 3 has 3 cells but the header (row 1) has 2"),
        ("a,b\n1,2\n3,x\n4,5\n5,6\n", "row 3, column 2 ('b'): 'x' is not a number"),
        ("a,b\n1,inf\n2,3\n", "infinite value"),
        ("a\n1\n", "only 1 data row"),
    ],
)
def test_bad_tables_name_the_cell(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_table(path)


def test_not_utf8_names_the_line(tmp_path: Path):
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b\n1,2\n3,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"line 3 is not UTF-8 text \(byte 0xe9\)"):
        load_table(path)


def test_too_many_categories_is_refused(tmp_path: Path):
    path = tmp_path / "wide.csv"
    n = 12_001
    pd.DataFrame({"a": np.arange(n) % 3, "tag": [f"t{i % 12_000}" for i in range(n)]}).to_csv(
        path, index=False
    )
    with pytest.raises(DataError, match="column 'tag' has 12000 distinct text values"):
        load_table(path)
