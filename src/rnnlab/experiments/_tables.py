"""Result tables over seeds: mean and sample standard deviation (:func:`mean_std`), one row
per group of metrics rows (:func:`aggregate`), and ``mean ± std`` text. Public through
:mod:`rnnlab.experiments.registry`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def mean_std(values: Iterable[float | None], single_std: float = math.nan
             ) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the finite values (None and NaN left out):
    NaN, NaN without any, and std ``single_std`` (NaN: undefined) for one."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, single_std
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std`` with ``digits`` decimals for summaries (``n/a`` for a non-finite mean;
    the std left out when undefined, e.g. one seed)."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


Column = Callable[[list[dict[str, Any]]], Any]


def mean_of(key: str) -> Column:
    """Aggregate column: the mean of ``key`` over a group's finite values (:func:`mean_std`)."""
    return lambda sel: mean_std([r[key] for r in sel])[0]


def std_of(key: str, single_std: float = math.nan) -> Column:
    """Aggregate column: the sample std of ``key`` over a group (``single_std`` for one)."""
    return lambda sel: mean_std([r[key] for r in sel], single_std=single_std)[1]


def aggregate(rows: Iterable[dict[str, Any]], by: Sequence[str],
              value: Sequence[str] | str = (), *, std: Sequence[str] | bool = True,
              single_std: float = math.nan, count: str | None = None,
              groups: Iterable[tuple[Any, ...]] | None = None,
              columns: dict[str, Column] | None = None) -> list[dict[str, Any]]:
    """The result table of a run's metrics rows: one row per group of ``rows`` with equal
    ``by`` values, holding the ``by`` values; ``count`` (the group's size, when named); for
    each ``value`` column its mean over the finite values and, for those in ``std`` (``True``:
    all), ``NAME_std``, the sample standard deviation (n - 1; ``single_std`` for a group of
    one); then ``columns``, each computed from the group's rows (:func:`mean_of`,
    :func:`std_of`, ``len`` or any function). Groups come in the order of ``groups`` (tuples of
    ``by`` values; one without rows is left out) or of first appearance in ``rows``."""
    values = (value,) if isinstance(value, str) else tuple(value)
    with_std = set(values) if std is True else set() if std is False else set(std)
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[k] for k in by), []).append(row)
    order = list(grouped) if groups is None else [tuple(g) for g in groups]
    out = []
    for key in order:
        sel = grouped.get(key)
        if not sel:
            continue
        row = dict(zip(by, key, strict=True))
        if count is not None:
            row[count] = len(sel)
        for name in values:
            mean, sd = mean_std([r[name] for r in sel], single_std=single_std)
            row[name] = mean
            if name in with_std:
                row[f"{name}_std"] = sd
        for name, fn in (columns or {}).items():
            row[name] = fn(sel)
        out.append(row)
    return out
