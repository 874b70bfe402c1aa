"""A user's own time series: CSV, Parquet and NumPy files read into tensors, split by time, and
standardised with statistics of the training part only.

Reading goes through pandas (CSV, Parquet through pyarrow) and numpy (``.npy``/``.npz``); nothing
is parsed by hand. Rows are time steps in file order. Problems in the data are refused with a
message that names them: a missing column, a cell that is not a number, missing values (unless
``fill`` says how to fill them), a time column that does not increase, a file too short for the
windows asked for.

Standardisation (``(x - mean) / std`` per column) is fitted on the training rows only, so no
statistic of the validation or test part leaks into the model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlab._validation import check_choice, check_number

FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".npy": "npy", ".npz": "npz"}
FILLS = ("ffill", "interpolate")


@dataclass
class SeriesTable:
    """A multivariate series: ``values`` ``(time, columns)`` float64, the column names, and the
    time stamps (ISO strings) when the file had a time column."""

    values: torch.Tensor
    columns: list[str]
    time: list[str] | None = None

    def __len__(self) -> int:
        return self.values.shape[0]

    def select(self, names: list[str]) -> torch.Tensor:
        """The columns ``names``, ``(time, len(names))``; ``ValueError`` for an unknown name."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise ValueError(f"no column {missing} in the data; its columns: {self.columns}")
        return self.values[:, [self.columns.index(n) for n in names]]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - pandas is in the tables extra
        raise ImportError("reading CSV/Parquet files needs pandas: pip install "
                          "'rnnlab[tables]'") from exc
    return pandas


def _frame(path: Path, kind: str) -> Any:
    pd = _pandas()
    if kind == "csv":
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        # round_trip: the exact doubles that were written (the default parser may be 1 ulp off)
        return pd.read_csv(path, sep=sep, float_precision="round_trip")
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise ImportError("reading Parquet needs pyarrow: pip install 'rnnlab[tables]'"
                              ) from exc
    data = np.load(path, allow_pickle=False)
    if kind == "npz":
        if len(data.files) != 1:
            raise ValueError(f"{path} holds arrays {data.files}; save one (time, columns) array")
        data = data[data.files[0]]
    arr = np.asarray(data)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {arr.shape}; expected (time, columns)")
    return pd.DataFrame(arr, columns=[str(k) for k in range(arr.shape[1])])


def _numeric(frame: Any, names: list[str]) -> np.ndarray:
    pd = _pandas()
    out = np.empty((len(frame), len(names)), dtype=np.float64)
    for k, name in enumerate(names):
        raw = frame[name]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna()
        if bool(bad.any()):
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"column {name!r} has a cell that is not a number at row {row}: "
                             f"{raw.iloc[row]!r}")
        out[:, k] = num.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _fill(values: np.ndarray, names: list[str], fill: str | None) -> np.ndarray:
    missing = ~np.isfinite(values)
    if not missing.any():
        return values
    if fill is None:
        col = int(np.flatnonzero(missing.any(axis=0))[0])
        row = int(np.flatnonzero(missing[:, col])[0])
        raise ValueError(
            f"column {names[col]!r} has {int(missing[:, col].sum())} missing or non-finite "
            f"values (the first at row {row}); clean the file or pass fill='ffill' or "
            "fill='interpolate'")
    pd = _pandas()
    frame = pd.DataFrame(np.where(missing, np.nan, values))
    frame = frame.ffill() if fill == "ffill" else frame.interpolate(limit_direction="both")
    filled = frame.to_numpy(dtype=np.float64)
    if np.isnan(filled).any():
        col = int(np.flatnonzero(np.isnan(filled).any(axis=0))[0])
        raise ValueError(f"column {names[col]!r} still has missing values after fill={fill!r} "
                         "(nothing before them to carry forward)")
    return filled


def _time(frame: Any, time_column: str) -> list[str]:
    pd = _pandas()
    try:
        with warnings.catch_warnings():  # "could not infer format": each cell is still parsed
            warnings.simplefilter("ignore", UserWarning)
            stamps = pd.to_datetime(frame[time_column])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"time column {time_column!r} does not parse as dates: {exc}") from None
    bad = (stamps.diff().iloc[1:] <= pd.Timedelta(0)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise ValueError(f"time column {time_column!r} does not increase at row {row} "
                         f"({stamps.iloc[row - 1]} then {stamps.iloc[row]}): sort the rows by "
                         "time and remove duplicates")
    return [s.isoformat() for s in stamps]


def read_series(
    path: str | Path,
    *,
    columns: list[str] | None = None,
    time_column: str | None = None,
    fill: str | None = None,
) -> SeriesTable:
    """Read a series from a CSV/TSV, Parquet, ``.npy`` or ``.npz`` file.

    ``columns``: the numeric columns to keep (default: every column but the time column);
    NumPy files name their columns ``"0"``, ``"1"``, .... ``time_column``: parsed as dates and
    required to increase strictly. ``fill``: ``None`` refuses missing values, ``"ffill"`` carries
    the last value forward, ``"interpolate"`` interpolates linearly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"cannot read {path.name}: known endings {sorted(FORMATS)}")
    if fill is not None:
        check_choice("fill", fill, FILLS)
    frame = _frame(path, kind)
    names = [str(c) for c in frame.columns]
    frame.columns = names
    wanted = [n for n in names if n != time_column] if columns is None else list(columns)
    missing = [n for n in wanted + ([time_column] if time_column else []) if n not in names]
    if missing:
        raise ValueError(f"no column {missing} in {path.name}; its columns: {names}")
    if not wanted:
        raise ValueError(f"{path.name} has no data column besides the time column")
    if len(frame) == 0:
        raise ValueError(f"{path.name} has no rows")
    values = _fill(_numeric(frame, wanted), wanted, fill)
    time = _time(frame, time_column) if time_column else None
    return SeriesTable(torch.from_numpy(np.array(values, dtype=np.float64)), wanted, time)


def split_by_time(length: int, validation: float = 0.15, test: float = 0.15,
                  minimum: int = 1) -> tuple[slice, slice, slice]:
    """Train, validation and test rows as consecutive slices (the test part last): the last
    ``test`` fraction of the rows is the test part, the ``validation`` fraction before it the
    validation part. Each part asked for (a fraction above 0) must have at least ``minimum``
    rows."""
    validation = check_number("validation", validation, low=0.0, high=1.0, high_open=True)
    test = check_number("test", test, low=0.0, high=1.0, high_open=True)
    if validation + test >= 1.0:
        raise ValueError(f"validation + test = {validation + test:g} leaves no training rows")
    n_test = round(length * test)
    n_val = round(length * validation)
    n_train = length - n_test - n_val
    parts = {"training": n_train, "validation": n_val, "test": n_test}
    asked = {"training": 1.0, "validation": validation, "test": test}  # 0 asked: may be empty
    short = {k: v for k, v in parts.items() if v < minimum and asked[k] > 0}
    if short:
        raise ValueError(f"{length} rows are too few for the windows asked for: the parts "
                         f"would have {parts} rows; each needs at least {minimum}")
    return (slice(0, n_train), slice(n_train, n_train + n_val),
            slice(n_train + n_val, length))


@dataclass
class Standardizer:
    """``(x - mean) / std`` per column, with ``mean``/``std`` of the rows it was fitted on (a
    constant column gets ``std = 1``: it is centred, not scaled)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, values: torch.Tensor) -> Standardizer:
        if values.shape[0] < 2:
            raise ValueError("standardisation needs at least 2 training rows")
        std = values.std(dim=0, unbiased=False)
        return cls(values.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)))

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std + self.mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}
