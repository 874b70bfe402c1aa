"""The drawing helpers of the long-term-dependency generators: the random stream, argument
checks, lengths, positions, one-hot codes and the finished batch."""

from __future__ import annotations

import torch

from rnnlab._random import make_generator
from rnnlab.tasks.long_term._common import LongTermTask


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("give either seed or generator, not both")
    return make_generator(seed, generator)


def _uniform_int(low: torch.Tensor | int, high: torch.Tensor | int, shape: tuple[int, ...],
                 gen: torch.Generator) -> torch.Tensor:
    """Integers uniform on ``[low, high]`` (inclusive; per-element bounds allowed)."""
    low_t = torch.as_tensor(low, dtype=torch.int64).expand(shape)
    high_t = torch.as_tensor(high, dtype=torch.int64).expand(shape)
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    span = (high_t - low_t + 1).to(torch.float64)
    return low_t + torch.minimum(torch.floor(u * span).to(torch.int64), high_t - low_t)


def _variable_lengths(batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """Lengths uniform on ``{T, ..., T + floor(T/10)}`` (H&S 1997: "between T and T + T/10")."""
    return _uniform_int(length, length + length // 10, (batch,), gen)


def _valid(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    return torch.arange(max_length).unsqueeze(0) < lengths.unsqueeze(1)


def _one_hot(symbols: torch.Tensor, n: int, valid: torch.Tensor) -> torch.Tensor:
    """One-hot float64 codes, all-zero where ``valid`` is False (padding)."""
    codes = torch.nn.functional.one_hot(symbols.clamp(min=0), n).to(torch.float64)
    return codes * valid.unsqueeze(-1)


def _last_step_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    mask = torch.zeros(lengths.shape[0], max_length, dtype=torch.bool)
    mask[torch.arange(lengths.shape[0]), lengths - 1] = True
    return mask


def _finish(name: str, variant: str, inputs: torch.Tensor, targets: torch.Tensor,
            mask: torch.Tensor, lengths: torch.Tensor, params: dict[str, object],
            info: dict[str, torch.Tensor], chance: float, chance_step: float,
            dtype: torch.dtype, device: torch.device | str | None) -> LongTermTask:
    return LongTermTask(
        name=name, variant=variant,
        inputs=inputs.to(device=device, dtype=dtype),
        targets=targets.to(device=device, dtype=dtype),
        mask=mask.to(device=device), lengths=lengths.to(device=device),
        params=params,
        info={k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
              for k, v in info.items()},
        chance=chance, chance_step=chance_step,
    )
