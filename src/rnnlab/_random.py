"""The one rule for seeds and generators.

Every random draw in rnnlab comes from a ``torch.Generator`` on the CPU, so that a seed gives the
same numbers on every device (the tensors are moved afterwards). A constructor takes either a
``generator`` (used as given, and advanced) or a ``seed`` (a Python or numpy integer; ``None``
means 0, so that a default construction is reproducible).
"""

from __future__ import annotations

import torch

from rnnlab._validation import check_int


def make_generator(seed: object = None, generator: torch.Generator | None = None
                   ) -> torch.Generator:
    """``generator`` if given (it must be a CPU ``torch.Generator``), else a new CPU generator
    seeded with ``seed`` (``None`` means 0)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            # Drawing on the CPU makes a seed give the same numbers on every device.
            raise ValueError(f"generator must be a CPU generator, got one on {generator.device}")
        return generator
    return torch.Generator().manual_seed(check_int("seed", 0 if seed is None else seed))
