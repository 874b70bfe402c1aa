"""What every learning rule shares: the loss of the course and the ``param.grad`` contract."""

from __future__ import annotations

import abc

import torch
from torch import nn

REDUCTIONS = ("sum", "mean")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def squared_error(o: torch.Tensor, y: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """The course's loss ``e = ||y - o||^2`` summed over outputs (and time, if present).

    ``reduction="sum"`` also sums over the batch (the course's L for a batch of sequences);
    ``"mean"`` divides that sum by the batch size, so learning rates do not depend on it.
    """
    total = (y - o).pow(2).sum()
    return total / o.shape[0] if reduction == "mean" else total


def add_to_grad(param: nn.Parameter, grad: torch.Tensor) -> None:
    """``param.grad += grad`` (creating it if absent), as ``loss.backward()`` would."""
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad.add_(grad)


class LearningRule(abc.ABC):
    """A way to obtain gradients, separate from the model and from the optimizer.

    A rule adds the gradient of the loss to each parameter's ``.grad`` (as ``backward()`` does),
    so any ``torch.optim`` optimizer and ``torch.nn.utils.clip_grad_norm_`` plug in unchanged.
    Online use is one call per time step: ``o_t = rule.step(x_t, y_t)``. ``grad_ready`` tells
    an online trainer whether the last ``step`` wrote gradients that may be applied now.
    """

    model: nn.Module

    @abc.abstractmethod
    def reset(self, batch_size: int | None = None, h0: torch.Tensor | None = None) -> None:
        """Start new sequences (state h(0), and for RTRL zero influence tensors)."""

    @abc.abstractmethod
    def step(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        """Advance one time step for the whole batch and return o(t)."""

    @property
    @abc.abstractmethod
    def grad_ready(self) -> bool:
        """True when the last ``step`` finished writing gradients into ``.grad``."""
