"""What every long-term-dependency task shares: the batch and score containers, the spec of a
registered task, the drawing helpers of the generators and the checks of the metrics.

See :mod:`rnnlab.tasks.long_term` for the sources and conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from rnnlab._random import make_generator

# Pascanu 2013: a run succeeds when fewer than 1% of fresh test sequences are wrong.
RUN_ERROR_RATE = 0.01


# ------------------------------------------------------------------------------------------
# Containers
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LongTermTask:
    """A batch of one long-term-dependency task.

    Attributes:
        name: the registry name (a key of :data:`~rnnlab.tasks.long_term.LONG_TERM_TASKS`).
        variant: which source's definition was used (see the generator).
        inputs: ``(batch, time, D)``; steps at or beyond ``lengths`` are zero.
        targets: ``(batch, time, O)``; zero where ``mask`` is False.
        mask: ``(batch, time)`` bool, the steps where the loss applies and the metric reads.
        lengths: ``(batch,)`` int64, the length of each sequence (``time == lengths.max()``).
        params: the generator's arguments (``length``, ``tau``, ...).
        info: ground truth the generator used (``positions``, ``values``, ``labels``, ...), for
            analysis; the metric itself reads only ``targets`` and ``mask``.
        chance: success rate (the metric's ``success_rate``) of the best input-independent
            prediction.
        chance_step: the same for the metric's ``step_accuracy``.
    """

    name: str
    variant: str
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    params: dict[str, object] = field(default_factory=dict)
    info: dict[str, torch.Tensor] = field(default_factory=dict)
    chance: float = math.nan
    chance_step: float = math.nan

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def max_length(self) -> int:
        return self.inputs.shape[1]

    @property
    def input_size(self) -> int:
        return self.inputs.shape[2]

    @property
    def output_size(self) -> int:
        return self.targets.shape[2]

    @property
    def valid(self) -> torch.Tensor:
        """``(batch, time)`` bool: True at the steps that belong to the sequence (not padding)."""
        steps = torch.arange(self.max_length, device=self.lengths.device)
        return steps.unsqueeze(0) < self.lengths.unsqueeze(1)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LongTermTask:
        """A copy with the float tensors moved/cast (``mask``/``lengths`` only moved)."""
        if dtype is not None:
            _check_dtype(dtype)
        info = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                for k, v in self.info.items()}
        return replace(
            self,
            inputs=self.inputs.to(device=device, dtype=dtype),
            targets=self.targets.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            lengths=self.lengths.to(device=device),
            info=info,
        )

    def final_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """``outputs[b, lengths[b] - 1]``: each sequence's output at its own last step."""
        return final_outputs(outputs, self.lengths)

    def score(self, outputs: torch.Tensor) -> TaskScore:
        """The task's metric (``LONG_TERM_TASKS[name].score``, see
        :data:`~rnnlab.tasks.long_term.LONG_TERM_TASKS`) with its defaults."""
        # The registry (the package's __init__) imports every task module, and they import this
        # one: look it up when called, not when this module is loaded.
        from rnnlab.tasks.long_term import LONG_TERM_TASKS

        return LONG_TERM_TASKS[self.name].score(outputs, self)


@dataclass(frozen=True, eq=False)
class TaskScore:
    """What a task's metric returns.

    Attributes:
        success_rate: fraction of sequences processed correctly, by the source's criterion.
        step_accuracy: fraction of scored steps that are correct (equals ``success_rate`` for
            tasks scored at the last step only).
        mse: mean over scored steps of the squared error summed over output units.
        correct: ``(batch,)`` bool, which sequences are correct.
        criterion: the per-sequence criterion, in words.
    """

    success_rate: float
    step_accuracy: float
    mse: float
    correct: torch.Tensor
    criterion: str

    @property
    def error_rate(self) -> float:
        return 1.0 - self.success_rate

    @property
    def solved(self) -> bool:
        """Pascanu et al. (2013): a run is successful when under 1% of test sequences are wrong.

        (H&S 1997 instead report the number of wrong sequences out of 2560 test sequences.)
        """
        return self.error_rate < RUN_ERROR_RATE


@dataclass(frozen=True)
class LongTermTaskSpec:
    """A registered task: its generator, its metric, its loss and its source."""

    name: str
    generate: Callable[..., LongTermTask]
    score: Callable[..., TaskScore]
    loss: Callable[[torch.Tensor, LongTermTask], torch.Tensor]
    source: str
    variants: tuple[str, ...]


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------
def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("give either seed or generator, not both")
    return make_generator(seed, generator)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def _check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


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


def final_outputs(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, O)``: ``outputs[b, lengths[b] - 1]`` from ``(batch, time, O)`` outputs.

    A causal RNN run over the zero-padded batch gives, at ``lengths[b] - 1``, exactly its output
    on the unpadded sequence ``b``, so one padded batch serves variable lengths.
    """
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor, got {type(outputs).__name__}")
    if outputs.dim() != 3:
        raise ValueError("outputs must be a (batch, time, features) tensor, got shape "
                         f"{tuple(outputs.shape)}")
    if not isinstance(lengths, torch.Tensor) or lengths.is_floating_point() or \
            lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError("lengths must be an integer torch.Tensor")
    if lengths.dim() != 1 or lengths.shape[0] != outputs.shape[0]:
        raise ValueError(f"lengths must be (batch,) = ({outputs.shape[0]},), "
                         f"got {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > outputs.shape[1]).any()):
        raise ValueError(f"lengths must lie in [1, {outputs.shape[1]}] (the time dimension)")
    rows = torch.arange(outputs.shape[0], device=outputs.device)
    return outputs[rows, lengths.to(outputs.device) - 1]


# ------------------------------------------------------------------------------------------
# Metric helpers
# ------------------------------------------------------------------------------------------
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
