"""Reading a user's series (CSV, TSV, Parquet, NumPy), splitting by time, standardising on the
training part: values against what was written, errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnnlab.tasks.tabular import Standardizer, read_series, split_by_time


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"when": pd.date_range("2020-01-01", periods=20, freq="h"),
                         "a": rng.normal(size=20), "b": rng.uniform(size=20)})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_tables_read_back_what_was_written(tmp_path: Path, suffix: str) -> None:
    frame = _frame()
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    table = read_series(path, time_column="when")
    assert table.columns == ["a", "b"]
    expected = frame[["a", "b"]].to_numpy().copy()
    # CSV text keeps 17 significant digits (pandas' float_format default repr): exact round trip
    assert np.array_equal(table.values.numpy(), expected)
    assert table.time[0].startswith("2020-01-01T00:00:00") and len(table.time) == 20
    assert torch.equal(table.select(["b"])[:, 0], torch.from_numpy(expected[:, 1]))


def test_numpy_files(tmp_path: Path) -> None:
    arr = np.arange(12.0).reshape(6, 2)
    np.save(tmp_path / "x.npy", arr)
    np.savez(tmp_path / "x.npz", series=arr[:, 0])
    assert np.array_equal(read_series(tmp_path / "x.npy").values.numpy(), arr)
    one = read_series(tmp_path / "x.npz")
    assert one.columns == ["0"] and np.array_equal(one.values.numpy()[:, 0], arr[:, 0])
    np.savez(tmp_path / "two.npz", a=arr, b=arr)
    with pytest.raises(ValueError, match="holds arrays"):
        read_series(tmp_path / "two.npz")


def test_bad_files_are_refused_with_the_problem_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("t,a,b\n2020-01-01,1,2\n2020-01-02,x,3\n2020-01-03,2,4\n")
    with pytest.raises(ValueError, match=r"column 'a' has a cell that is not a number at row 1"):
        read_series(path, time_column="t")
    with pytest.raises(ValueError, match=r"no column \['c'\]"):
        read_series(path, columns=["c"])
    path.write_text("t,a\n2020-01-02,1\n2020-01-01,2\n")
    with pytest.raises(ValueError, match="does not increase at row 1"):
        read_series(path, time_column="t")
    path.write_text("t,a\nnot a date,1\n2020-01-01,2\n")
    with pytest.raises(ValueError, match="does not parse as dates"):
        read_series(path, time_column="t")
    (tmp_path / "d.xlsx").write_text("")
    with pytest.raises(ValueError, match="known endings"):
        read_series(tmp_path / "d.xlsx")
    with pytest.raises(FileNotFoundError):
        read_series(tmp_path / "missing.csv")
    path.write_text("a\n")
    with pytest.raises(ValueError, match="no rows"):
        read_series(path)


def test_missing_values_refused_or_filled(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("a,b\n1,10\n,11\n3,\n4,13\n")
    with pytest.raises(ValueError, match=r"column 'a' has 1 missing .* at row 1.*fill="):
        read_series(path)
    ffill = read_series(path, fill="ffill").values.numpy()
    assert np.array_equal(ffill, [[1, 10], [1, 11], [3, 11], [4, 13]])
    lin = read_series(path, fill="interpolate").values.numpy()
    assert np.array_equal(lin, [[1, 10], [2, 11], [3, 12], [4, 13]])  # midpoints, exact
    path.write_text("a,b\n,1\n2,2\n")
    with pytest.raises(ValueError, match="nothing before them"):
        read_series(path, fill="ffill")
    with pytest.raises(ValueError, match="fill"):
        read_series(path, fill="zeros")


def test_split_by_time_and_its_errors() -> None:
    train, val, test = split_by_time(100, 0.2, 0.1)
    assert (train, val, test) == (slice(0, 70), slice(70, 90), slice(90, 100))
    assert split_by_time(10, 0.0, 0.2) == (slice(0, 8), slice(8, 8), slice(8, 10))
    with pytest.raises(ValueError, match="too few"):
        split_by_time(20, 0.15, 0.15, minimum=5)
    with pytest.raises(ValueError, match="leaves no training rows"):
        split_by_time(100, 0.5, 0.5)


def test_standardizer_uses_only_the_rows_it_is_fitted_on() -> None:
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [100.0, 7.0]], dtype=torch.float64)
    s = Standardizer.fit(x[:2])
    assert torch.equal(s.mean, torch.tensor([2.0, 5.0], dtype=torch.float64))
    assert torch.equal(s.std, torch.tensor([1.0, 1.0], dtype=torch.float64))  # const: std 1
    assert torch.equal(s.transform(x)[2], torch.tensor([98.0, 2.0], dtype=torch.float64))
    assert torch.equal(s.inverse(s.transform(x)), x)
