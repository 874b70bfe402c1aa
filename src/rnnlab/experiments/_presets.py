"""Named presets of an experiment's options: one rule for ``preset=paper`` and friends.

A preset is a mapping ``{field: value}`` over the fields of an experiment's config dataclass.
Applying it puts each value in place of the field only where the field still holds its
declared default, so every option the user set explicitly wins over the preset. (An option
set explicitly *to* its default cannot be told apart from one left alone; the preset then
replaces it too. The experiments' docs say so.)

``long-term``, ``deep-rnn`` and ``lstm-variants`` read their presets through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def apply_preset(cfg: C, values: Mapping[str, Any]) -> C:
    """``cfg`` (a dataclass instance) with ``values`` put in place of the fields that still hold
    their declared defaults; a new object, ``cfg`` is not changed.

    Raises ``TypeError`` if ``cfg`` is not a dataclass instance and ``ValueError`` naming the
    fields of ``values`` that the dataclass does not have (a preset out of step with its
    config would otherwise be silently half applied).
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"apply_preset needs a dataclass instance, got {type(cfg).__name__}")
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f"the preset sets fields that {type(cfg).__name__} does not have: "
                         f"{', '.join(unknown)}")
    changes = {k: v for k, v in values.items() if getattr(cfg, k) == defaults[k]}
    return dataclasses.replace(cfg, **changes)


__all__ = ["apply_preset"]
