"""The checks and summary every long-term-dependency metric shares."""

from __future__ import annotations

import torch

from rnnlab.tasks.long_term._common import LongTermTask, TaskScore


def _check_task(task: object, name: str) -> LongTermTask:
    if not isinstance(task, LongTermTask):
        raise TypeError(f"task must be a LongTermTask, got {type(task).__name__}")
    if task.name != name:
        raise ValueError(f"this metric scores {name!r} tasks, got a {task.name!r} task")
    return task


def _scored(outputs: object, task: LongTermTask, score_mask: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs and targets at the scored steps, ``(N, O)`` float64, and their sequence rows."""
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor, got {type(outputs).__name__}")
    if not outputs.is_floating_point():
        raise TypeError(f"outputs must be a floating-point tensor, got {outputs.dtype}")
    if outputs.device != task.targets.device:
        raise ValueError(f"outputs are on {outputs.device} but the task is on "
                         f"{task.targets.device}; move one of them")
    batch, t_max, n_out = task.targets.shape
    per_row = score_mask.sum(1)
    if outputs.dim() == 2:
        if not bool((per_row == 1).all()):
            raise ValueError("this task scores several steps per sequence: pass the outputs "
                             f"of every step, shape {(batch, t_max, n_out)}")
        if tuple(outputs.shape) != (batch, n_out):
            raise ValueError(f"final outputs must have shape {(batch, n_out)} "
                             f"(batch, outputs), got {tuple(outputs.shape)}")
        out = outputs
    elif outputs.dim() == 3:
        if tuple(outputs.shape) != (batch, t_max, n_out):
            raise ValueError(f"outputs must have shape {(batch, t_max, n_out)} "
                             f"(batch, time, outputs) like the targets, got "
                             f"{tuple(outputs.shape)}")
        out = outputs[score_mask]
    else:
        raise ValueError("outputs must be (batch, time, outputs) or, for tasks scored at the "
                         f"last step, (batch, outputs); got shape {tuple(outputs.shape)}")
    out = out.detach().to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        n_nan = int(torch.isnan(out).sum())
        raise ValueError(f"outputs contain non-finite values at scored steps ({n_nan} NaN, "
                         f"{int(torch.isinf(out).sum())} inf)")
    target = task.targets[score_mask].to(torch.float64)
    rows = score_mask.nonzero()[:, 0]
    return out, target, rows


def _summarise(step_ok: torch.Tensor, out: torch.Tensor, target: torch.Tensor,
               rows: torch.Tensor, batch: int, criterion: str) -> TaskScore:
    wrong = torch.zeros(batch, dtype=torch.int64, device=rows.device)
    wrong.index_add_(0, rows, (~step_ok).to(torch.int64))
    correct = wrong == 0
    return TaskScore(
        success_rate=float(correct.to(torch.float64).mean()),
        step_accuracy=float(step_ok.to(torch.float64).mean()),
        mse=float((out - target).pow(2).sum(1).mean()),
        correct=correct,
        criterion=criterion,
    )
