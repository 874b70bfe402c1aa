"""What every learning rule shares: the loss of the course and the ``param.grad`` contract."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import nn

from rnnlab._validation import check_choice, check_tensor

REDUCTIONS = ("sum", "mean")


def check_reduction(reduction: str) -> str:
    check_choice("reduction", reduction, REDUCTIONS)
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

    @staticmethod
    def _check_step_target(y_t: torch.Tensor, o: torch.Tensor) -> None:
        """A step's target must be a finite ``(batch, outputs)`` tensor shaped like the output."""
        check_tensor("y_t", y_t, ndim=2, dtype=o.dtype, device=o.device,
                     layout="(batch, outputs)")
        if y_t.shape != o.shape:
            raise ValueError(f"y_t has shape {tuple(y_t.shape)}, outputs are {tuple(o.shape)}")

    @staticmethod
    def _state_gradient(
        loss: torch.Tensor, leaf: torch.Tensor, direct: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """``dloss/dleaf``, after adding ``dloss/dp`` to ``p.grad`` for each ``p`` of ``direct``.

        The step of the forward-mode rules: the loss reaches the readout parameters (``direct``)
        through autograd, the recurrent ones only through the state ``leaf``, whose gradient the
        rule then multiplies by its influence matrix (``dL/dtheta = dL/ds . ds/dtheta``).
        """
        grads = torch.autograd.grad(loss, [leaf, *direct], allow_unused=True)
        for p, g in zip(direct, grads[1:], strict=True):
            if g is not None:
                add_to_grad(p, g)
        return grads[0]

    def _begin_step(self, x_t: torch.Tensor, batch: int | None) -> None:
        """Before a step on ``x_t``: reset for its batch when the rule has no state yet
        (``batch`` None), else check that it continues the ``batch`` sequences the rule holds."""
        if batch is None:
            self.reset(x_t.shape[0])
        elif x_t.shape[0] != batch:
            raise ValueError(
                f"x_t has batch size {x_t.shape[0]} but the rule was reset for batch size "
                f"{batch}; call rule.reset({x_t.shape[0]}) to start new sequences"
            )

    @property
    @abc.abstractmethod
    def grad_ready(self) -> bool:
        """True when the last ``step`` finished writing gradients into ``.grad``."""
