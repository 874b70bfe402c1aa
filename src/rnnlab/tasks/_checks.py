"""Argument checks every task generator shares (number checks are in :mod:`rnnlab._validation`)."""

from __future__ import annotations

import torch


def check_float_dtype(dtype: object) -> torch.dtype:
    """Return ``dtype`` if it is a floating-point torch dtype, else raise ``TypeError``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` naming them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]
