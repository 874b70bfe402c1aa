"""Experiment options: declared with their bounds and choices (:func:`option`), parsed from
the command line's text (:func:`_parse_value`) and checked centrally (:func:`check_options`,
:func:`check_config`), with messages that name the option, its value and what is allowed.
Public through :mod:`rnnlab.experiments.registry` (a private module, so experiment discovery
skips it)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any


def check_choices(name: str, values: Any, valid: tuple[str, ...], item: str | None = None,
                  unique: bool = True) -> None:
    """The option ``name`` lists at least one of ``valid`` (each ``item``, default ``name``),
    nothing else, and (``unique``) nothing twice; ``ValueError`` naming the problem otherwise."""
    item = name if item is None else item
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must name at least one of {', '.join(valid)}")
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"unknown {item} {bad}; valid: {', '.join(valid)}")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicates (an entry named twice): {list(values)}")


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False,
           finite: bool = False, choices: tuple[Any, ...] | None = None,
           unique: bool = False, allow_empty: bool = False, item: str | None = None) -> Any:
    """A config field with its help text and what values it takes (shown by ``rnnlab run NAME
    --help`` and ``rnnlab list --options``; checked by :func:`check_options`).

    ``low``/``high``: bounds of a number (closed; ``low_open``/``high_open`` make them strict;
    a float must be finite once a bound is declared, or with ``finite`` alone). ``choices``:
    the allowed values. For a tuple option with any of these the bounds and choices hold for
    every item, the tuple may not be empty unless ``allow_empty``, ``unique`` forbids an item
    twice, and ``item`` names one item in the message (``unknown ITEM [...]``). ``None``
    passes when the option's type allows it.
    """
    bounds = {"low": low, "high": high, "low_open": low_open, "high_open": high_open,
              "finite": finite or low is not None or high is not None,
              "choices": None if choices is None else tuple(choices), "unique": unique,
              "allow_empty": allow_empty, "item": item}
    return field(default=default, metadata={"help": help, "bounds": bounds})


def _interval(b: dict[str, Any]) -> str:
    if b["low"] is not None and b["high"] is not None:
        return (f"in {'(' if b['low_open'] else '['}{b['low']:g}, "
                f"{b['high']:g}{')' if b['high_open'] else ']'}")
    if b["low"] is not None:
        return f"{'>' if b['low_open'] else '>='} {b['low']:g}"
    return f"{'<' if b['high_open'] else '<='} {b['high']:g}"


def describe_bounds(f: dataclasses.Field) -> str:
    """What option ``f`` takes, in words (``""`` when nothing is declared): ``in (0, 1]``,
    ``one of a, b``, ``distinct``, ``each >= 1``."""
    b = f.metadata.get("bounds")
    if not b:
        return ""
    parts = []
    if b["low"] is not None or b["high"] is not None:
        parts.append(_interval(b))
    elif b["finite"]:
        parts.append("finite")
    if b["choices"] is not None:
        parts.append("one of " + ", ".join(map(str, b["choices"])))
    if b["unique"]:
        parts.append("distinct")
    return "; ".join(parts)


def _check_item(name: str, value: Any, b: dict[str, Any], what: str) -> None:
    flag = name.replace("_", "-")
    if b["choices"] is not None and value not in b["choices"]:
        raise ValueError(f"{name} (--{flag}) must be one of "
                         f"{', '.join(map(str, b['choices']))}; got {value!r}{what}")
    if not b["finite"]:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} (--{flag}) must be a number, got "
                        f"{type(value).__name__} ({value!r}){what}")
    low, high = b["low"], b["high"]
    if low is None and high is None and not math.isfinite(value):
        raise ValueError(f"{name} (--{flag}) must be finite; got {value!r}{what}")
    if not math.isfinite(value):
        raise ValueError(f"{name} (--{flag}) must be finite and {_interval(b)}; got "
                         f"{value!r}{what}")
    bad =  (low is not None and (value <= low if b["low_open"] else value < low))
    bad = bad or (high is not None and (value >= high if b["high_open"] else value > high))
    if bad:
        raise ValueError(f"{name} (--{flag}) must be {_interval(b)}; got {value!r}{what}")


def check_option(f: dataclasses.Field, value: Any) -> None:
    """Check ``value`` against what field ``f`` declares (:func:`option`); ``ValueError``
    naming the option, the value and the allowed range or choices."""
    b = f.metadata.get("bounds")
    if not b or value is None or not (b["finite"] or b["choices"] is not None or b["unique"]):
        return
    if isinstance(value, tuple | list):
        if b["choices"] is not None and not b["finite"]:
            # choice lists keep check_choices' messages (unknown ITEM [...]; valid: ...)
            if value or not b["allow_empty"]:
                check_choices(f.name, value, b["choices"], item=b["item"],
                              unique=b["unique"])
            return
        if not value and not b["allow_empty"]:
            raise ValueError(f"{f.name} (--{f.name.replace('_', '-')}) must list at least one "
                             f"value ({describe_bounds(f)})")
        for v in value:
            _check_item(f.name, v, b, f" in {tuple(value)}")
        if b["unique"] and len(set(value)) != len(value):
            raise ValueError(f"{f.name} (--{f.name.replace('_', '-')}) must be distinct (an "
                             f"entry named twice): {tuple(value)}")
        return
    _check_item(f.name, value, b, "")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        return isinstance(value, tuple | list) and all(_type_ok(v, inner) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(tp, type) or isinstance(value, tp)


def check_options(config: Any) -> None:
    """Check every option of ``config``: its type (``TypeError``: a config built in code with,
    say, a string where an int belongs), then its declared bounds and choices."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _type_ok(value, hints[f.name]):
            raise TypeError(f"{f.name} (--{f.name.replace('_', '-')}) must be "
                            f"{_type_name(hints[f.name])}, got {type(value).__name__} "
                            f"({value!r})")
        check_option(f, value)


def check_config(config: Any) -> None:
    """The whole check of a config: the declared bounds (:func:`check_options`), then its own
    ``validate()`` (the rules between options)."""
    check_options(config)
    check = getattr(config, "validate", None)
    if check is not None:
        check()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"{_type_name(typing.get_args(tp)[0])},..."
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _parse_value(name: str, text: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(name, text, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_parse_value(name, part.strip(), inner) for part in text.split(",") if part)
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option --{name} expects true/false, got {text!r}")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"option --{name} expects {tp.__name__}, got {text!r}") from None
    raise TypeError(f"option --{name} has an unsupported type {tp}")


@dataclasses.dataclass
class SeededOptions:
    """The options of an experiment repeated over seeds, which the registry reads
    (``RunContext.seeds``, the thread count): inherit them, ``@dataclass class
    MyConfig(SeededOptions)``, rather than declaring them again."""

    seeds: int = option(3, "seeds per point: seed, seed + 1, ..., seed + seeds - 1 (weights "
                           "and data)", low=1)
    seed: int = option(0, "first seed")
    torch_threads: int = option(1, "torch.set_num_threads during the run (the CLI's --threads "
                                   "sets it; 1 is fastest for small per-step work)", low=1)
