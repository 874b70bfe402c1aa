"""Input checks shared by models and learning rules.

Every public entry point that takes user data calls these, so that a wrong shape, dtype, device
or a NaN/inf value fails at once with a message that names the problem instead of producing a
silently wrong result further down.

Shape, dtype and device checks read metadata only and always run. The NaN/inf scan of a tensor's
values is different: ``bool(torch.isfinite(x).all())`` depends on the data, so it cannot be part
of a traced, exported or compiled graph, and on an accelerator it waits for the device (a host
sync) at every call. It is therefore governed by one switch (docs/validation.md):

* :func:`set_check_finite` (process-wide; ``RNNLAB_CHECK_FINITE=0``/``1``/``auto`` sets it at
  import) and the context manager :class:`check_finite` (this thread, nestable);
* a ``check_finite=`` argument of the layers and of ``run_cell`` that overrides both for one
  module or call;
* the default ``"auto"``: scan tensors on the CPU, and on an accelerator in whole-sequence entry
  points only (one sync per sequence), never in per-step code;
* never while ``torch.jit`` traces or scripts, ``torch.compile``/``torch.export`` trace, or a
  CUDA graph is being captured (:func:`is_tracing`): the data is not there to look at.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Literal

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


# --------------------------------------------------------------------------------------------
# The finiteness switch
FiniteMode = Literal["auto"] | bool
_MODES: tuple[object, ...] = (True, False, "auto")
_ENV = "RNNLAB_CHECK_FINITE"
_ENV_VALUES: dict[str, FiniteMode] = {
    "1": True, "true": True, "on": True, "yes": True,
    "0": False, "false": False, "off": False, "no": False,
    "auto": "auto", "": "auto",
}


def _mode(name: str, value: object) -> FiniteMode:
    if isinstance(value, np.bool_):
        value = bool(value)
    if not any(value is m or (isinstance(m, str) and value == m) for m in _MODES):
        raise ValueError(f"{name} must be True, False or 'auto', got {value!r}")
    return value  # type: ignore[return-value]


def check_finite_option(value: object) -> FiniteMode | None:
    """A module's or call's ``check_finite`` argument: ``None`` (follow the switch), ``True``,
    ``False`` or ``"auto"``; anything else is a ``ValueError`` naming it."""
    return None if value is None else _mode("check_finite", value)


def _mode_from_env() -> FiniteMode:
    raw = os.environ.get(_ENV, "")
    try:
        return _ENV_VALUES[raw.strip().lower()]
    except KeyError:
        raise ValueError(
            f"{_ENV}={raw!r} is not understood; use 1/0, true/false, on/off or auto"
        ) from None


_global_mode: FiniteMode = _mode_from_env()
_local = threading.local()  # .stack: the modes of the open check_finite() contexts


def set_check_finite(mode: bool | str) -> FiniteMode:
    """Set the process-wide finiteness switch and return the previous setting.

    ``True``: scan every checked tensor for NaN/inf (one host sync per scan on an accelerator);
    ``False``: never scan (shape, dtype and device checks still run); ``"auto"`` (the default,
    also ``RNNLAB_CHECK_FINITE=auto``): scan CPU tensors always, accelerator tensors only in
    whole-sequence entry points, never per step. A :class:`check_finite` context or a module's
    or call's ``check_finite=`` argument takes precedence; tracing/compiling turns it off.
    """
    global _global_mode
    previous = _global_mode
    _global_mode = _mode("mode", mode)
    return previous


def get_check_finite() -> FiniteMode:
    """The finiteness setting in force in this thread: the innermost :class:`check_finite`
    context's, else the process-wide one (:func:`set_check_finite`)."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else _global_mode


class check_finite:  # lower case: a context manager named like the setting (torch.no_grad)
    """``with rnnlab.check_finite(False): ...``: the finiteness setting for this thread inside
    the block (``True``, ``False`` or ``"auto"``), restored on exit; nestable. Usable as a
    decorator too. See :func:`set_check_finite`."""

    def __init__(self, mode: bool | str = True) -> None:
        self.mode = _mode("mode", mode)

    def __enter__(self) -> None:
        if not hasattr(_local, "stack"):
            _local.stack = []
        _local.stack.append(self.mode)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _local.stack.pop()

    def __call__(self, fn):  # type: ignore[no-untyped-def]
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            with check_finite(self.mode):
                return fn(*args, **kwargs)

        return wrapper


def functorch_active() -> bool:
    """True inside a ``torch.func`` transform (its interpreter stack is not empty)."""
    functorch = getattr(torch._C, "_functorch", None)
    peek = getattr(functorch, "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


def is_tracing() -> bool:
    """True while no concrete data is there to look at: ``torch.jit.trace``/``script``,
    ``torch.compile`` (Dynamo), ``torch.export`` or the capture of a CUDA graph (where a host
    sync is an error). Uses torch's public predicates only."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if torch.compiler.is_compiling():  # Dynamo, and torch.export (which traces with it)
        return True
    if torch.compiler.is_exporting():  # torch.export's non-strict mode
        return True
    # is_initialized, not is_available (20x cheaper): no capture without an initialised CUDA
    return torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()


@contextlib.contextmanager
def static_checks() -> Iterator[None]:
    """Wrap checks of shapes (not values): while ``torch.jit.trace`` runs, sizes are 0-d tensors
    and every comparison warns that it becomes a constant of the trace; for a shape check that
    is the intent, so the ``TracerWarning`` is silenced. A no-op otherwise."""
    if not torch.jit.is_tracing():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def finite_scan_wanted(
    x: torch.Tensor, check: bool | str | None = None, *, per_step: bool = False
) -> bool:
    """Whether to scan ``x`` for NaN/inf now.

    ``check``: the module's or call's ``check_finite`` (``None``: follow the switch,
    :func:`get_check_finite`). ``per_step``: the caller runs once per time step (a scan there
    on an accelerator would stall the launch queue at every step; ``"auto"`` skips it)."""
    if is_tracing():
        return False
    mode = get_check_finite() if check is None else _mode("check_finite", check)
    if mode == "auto":
        return x.device.type == "cpu" or not per_step
    return bool(mode)


def raise_if_not_finite(name: str, x: torch.Tensor) -> None:
    """The scan itself (one host sync on an accelerator): ``ValueError`` with the counts of NaN
    and inf if ``x`` has any. Callers decide with :func:`finite_scan_wanted` whether to call.

    A cheap exact first pass: a NaN or inf entry makes the IEEE sum NaN or inf (no addition
    turns either back into a finite number), so a finite sum proves every entry finite; the sum
    is one vectorised reduction without the boolean temporary of ``isfinite(x).all()``. Only a
    sum that is not finite (a NaN/inf, or finite entries whose sum overflows) goes on to the
    full scan, which decides."""
    # math.isfinite of the Python float: one small op instead of isfinite + bool on a tensor
    if x.is_floating_point() and math.isfinite(x.detach().sum().item()):
        return
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)")


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int,
    last_dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    finite: bool | str | None = None,
    layout: str = "",
    per_step: bool = False,
) -> torch.Tensor:
    """Validate a data tensor and return it.

    ``layout`` is a human description of the expected shape, e.g. ``"(batch, time, features)"``.
    ``finite``: whether to scan the values for NaN/inf: ``None`` (default) follows the switch
    (:func:`finite_scan_wanted`, with ``per_step``), ``True``/``False``/``"auto"`` overrides it;
    never while tracing or compiling.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    with static_checks():
        _check_metadata(name, x, ndim, last_dim, dtype, device, layout)
    if finite_scan_wanted(x, finite, per_step=per_step):
        raise_if_not_finite(name, x)
    return x


def _check_metadata(name: str, x: torch.Tensor, ndim: int, last_dim: int | None,
                    dtype: torch.dtype | None, device: torch.device | None, layout: str) -> None:
    """Shape, dtype and device of ``x``: metadata only, never the values."""
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
