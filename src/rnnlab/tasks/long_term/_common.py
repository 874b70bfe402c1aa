"""What every long-term-dependency task shares: the batch and score containers and the spec of a
registered task. The generators' drawing helpers are in ``_draw``, the metrics' in ``_scoring``.

See :mod:`rnnlab.tasks.long_term` for the sources and conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from rnnlab.tasks._checks import check_float_dtype

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
            check_float_dtype(dtype)
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
