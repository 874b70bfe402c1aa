"""What every learning rule shares: the loss of the course and the ``param.grad`` contract."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rnnlab._tree import tree_leaves, tree_map
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


def clone_state(state: Any) -> Any:
    """A detached copy of a state tree (None stays None), for a rule's ``state_dict``."""
    return None if state is None else tree_map(lambda t: t.detach().clone(), state)


def check_saved_tensor(name: str, saved: Any, like: torch.Tensor) -> torch.Tensor:
    """A saved tensor of a rule's state, moved to ``like``'s device after checking that it has
    ``like``'s shape and dtype (a state of another model or batch size is refused, not cast)."""
    if not isinstance(saved, torch.Tensor):
        raise ValueError(f"the saved {name} must be a tensor, got {type(saved).__name__}")
    if saved.shape != like.shape or saved.dtype != like.dtype:
        raise ValueError(f"the saved {name} is {tuple(saved.shape)} {saved.dtype}, this rule "
                         f"expects {tuple(like.shape)} {like.dtype} (another model, batch size "
                         "or dtype)")
    return saved.to(like.device)


def saved_state_to(saved: Any, like: Any, name: str = "state") -> Any:
    """A saved state tree checked leaf by leaf against ``like`` (the model's initial state for
    the same batch size) and moved to its device."""
    got, want = tree_leaves(saved), tree_leaves(like)
    if len(got) != len(want):
        raise ValueError(f"the saved {name} has {len(got)} tensors, the model's state has "
                         f"{len(want)}")
    return tree_map(lambda s, w: check_saved_tensor(name, s, w), saved, like)


def load_checked(rule: LearningRule, saved: Any, keys: Sequence[str],
                 load: Callable[[dict[str, Any]], None]) -> None:
    """What every rule's ``load_state_dict`` does: check that ``saved`` is this rule's kind with
    ``keys``, run ``load(saved)``, and if that fails put the previous state back (nothing is
    half-loaded), then re-raise."""
    kind = type(rule).__name__
    if not isinstance(saved, dict) or saved.get("kind") != kind:
        found = saved.get("kind") if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"this is the state of a {found}, not of a {kind}")
    missing = [k for k in keys if k not in saved]
    if missing:
        raise ValueError(f"the saved {kind} state lacks {missing}")
    backup = rule.state_dict()  # type: ignore[attr-defined]
    try:
        load(saved)
    except Exception:
        load(backup)
        raise


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
