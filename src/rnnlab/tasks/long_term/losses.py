"""Differentiable losses of the long-term-dependency tasks, over the masked steps."""

from __future__ import annotations

import torch

from rnnlab.tasks.long_term._common import LongTermTask


def _loss_inputs(outputs: object, task: LongTermTask) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(task, LongTermTask):
        raise TypeError(f"task must be a LongTermTask, got {type(task).__name__}")
    if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
        raise TypeError("outputs must be a floating-point torch.Tensor")
    batch, t_max, n_out = task.targets.shape
    if outputs.dim() == 2 and tuple(outputs.shape) == (batch, n_out) and \
            bool((task.mask.sum(1) == 1).all()):
        return outputs, task.targets[task.mask].to(outputs.dtype)
    if tuple(outputs.shape) != (batch, t_max, n_out):
        raise ValueError(f"outputs must have shape {(batch, t_max, n_out)} like the targets "
                         f"(or {(batch, n_out)} for a task with one scored step), "
                         f"got {tuple(outputs.shape)}")
    return outputs[task.mask], task.targets[task.mask].to(outputs.dtype)


def masked_mse(outputs: torch.Tensor, task: LongTermTask) -> torch.Tensor:
    """Differentiable loss: mean over the masked steps of ``||o(t) - y(t)||^2``.

    Pascanu's code uses this (summed over output units, averaged over sequences) for the
    adding and multiplication problems.
    """
    out, target = _loss_inputs(outputs, task)
    return (out - target).pow(2).sum(-1).mean()


def masked_cross_entropy(logits: torch.Tensor, task: LongTermTask) -> torch.Tensor:
    """Differentiable loss for the symbol tasks: mean over the masked steps of
    ``-sum_k y_k log softmax(logits)_k`` (targets are one-hot)."""
    out, target = _loss_inputs(logits, task)
    return -(target * torch.log_softmax(out, dim=-1)).sum(-1).mean()
