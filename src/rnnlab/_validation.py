"""Input checks shared by models and learning rules.

Every public entry point that takes user data calls these, so that a wrong shape, dtype, device
or a NaN/inf value fails at once with a message that names the problem instead of producing a
silently wrong result further down.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np
import torch


def check_int(name: str, value: object, *, low: int | None = None,
              high: int | None = None) -> int:
    """``int(value)`` if it is an integer (Python or numpy, not a bool) within ``[low, high]``,
    else ``TypeError``/``ValueError`` naming it.

    numpy integers are accepted because that is what ``np.arange`` grids (scikit-learn's
    ``GridSearchCV`` among them) hand to a constructor.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be an int <= {high}, got {value}")
    return value


def check_positive_int(name: str, value: object) -> int:
    """``int(value)`` if it is an integer (Python or numpy) >= 1, else ``ValueError``/``TypeError``
    naming it."""
    value = check_int(name, value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def check_washout(washout: object, steps: int) -> int:
    """``int(washout)`` if it is an integer in ``[0, steps)``: the number of leading time steps
    dropped from a run of ``steps`` steps (at least one step must remain)."""
    washout = check_int("washout", washout, low=0)
    if washout >= steps:
        raise ValueError(f"washout ({washout}) must be smaller than the number of time steps "
                         f"({steps})")
    return washout


def check_number(name: str, value: object, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False,
                 allow_inf: bool = False) -> float:
    """``float(value)`` if it is a real number (Python or numpy int or float, not a bool) within
    ``[low, high]`` (``low_open``/``high_open`` exclude an end), else ``TypeError``/``ValueError``
    naming it. NaN is always refused; +-inf only passes with ``allow_inf`` (and the bounds)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if math.isnan(value) or (not allow_inf and math.isinf(value)):
        raise ValueError(f"{name} must be {'a number' if allow_inf else 'finite'}, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_finite_float(name: str, value: object) -> float:
    """``float(value)`` if it is a finite real number: :func:`check_number` without bounds."""
    return check_number(name, value)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool (or a numpy bool), else a ``TypeError`` naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them (sorted when
    they are all strings): ``nonlinearity must be one of ['relu', 'tanh'], got 'gelu'``."""
    options = list(choices)
    if value not in options:
        shown = sorted(options) if all(isinstance(o, str) for o in options) else options
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")
    return value


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int,
    last_dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    finite: bool = True,
    layout: str = "",
) -> torch.Tensor:
    """Validate a data tensor and return it.

    ``layout`` is a human description of the expected shape, e.g. ``"(batch, time, features)"``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {layout}".rstrip()
            + f", got shape {tuple(x.shape)}"
        )
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(
            f"{name} has {x.shape[-1]} features in its last dimension, expected {last_dim} "
            f"(shape {tuple(x.shape)})"
        )
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the model's parameters are {dtype}; "
            f"convert with .to({dtype}) or move the model with .to(dtype)"
        )
    if device is not None and x.device != device:
        raise ValueError(
            f"{name} is on device {x.device} but the model is on {device}; move one of them"
        )
    if finite and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)")
    return x
