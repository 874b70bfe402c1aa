"""Trainers: true online learning from a stream, and epoch training for BPTT."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from rnnlab._validation import check_positive_int, check_tensor
from rnnlab.learning.base import LearningRule
from rnnlab.learning.bptt import BPTT
from rnnlab.learning.clipping import GradientClipper


@dataclass
class RunningLoss:
    """Exponential moving average of a loss with bias correction (as in Adam's moments).

    ``value = (1 - beta) sum_s beta^(t-s) loss_s / (1 - beta^t)``; ``mean`` is the plain mean.
    """

    beta: float = 0.99
    _ema: float = 0.0
    _sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")

    def update(self, loss: float) -> float:
        self.count += 1
        self._ema = self.beta * self._ema + (1.0 - self.beta) * loss
        self._sum += loss
        return self.value

    @property
    def value(self) -> float:
        if self.count == 0:
            return math.nan
        return self._ema / (1.0 - self.beta**self.count)

    @property
    def mean(self) -> float:
        return self._sum / self.count if self.count else math.nan


def _make_clipper(clip_norm: float | None, clipper: GradientClipper | None) -> GradientClipper:
    """The trainer's clipper: the one given, or norm clipping at ``clip_norm`` (none: inf, which
    still drops non-finite gradients and skips that optimizer step)."""
    if clipper is not None:
        if clip_norm is not None:
            raise ValueError("give clip_norm or clipper, not both")
        return clipper
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm}")
    return GradientClipper("norm", math.inf if clip_norm is None else clip_norm)


@dataclass
class OnlineTrainer:
    """Updates the weights at every time step from a stream (true online learning).

    Each sample ``(x_t, y_t)`` is seen once, used for one ``rule.step`` and dropped: nothing of
    the stream is stored. When the rule has written gradients (every step for RTRL, at the end
    of each chunk for truncated BPTT), they are clipped (``clip_norm``: norm clipping, or any
    :class:`~rnnlab.learning.clipping.GradientClipper`, e.g. value clipping) and the optimizer
    steps; a non-finite gradient is dropped and that step skipped (counted in
    ``clipper.skipped``), so NaN never reaches the weights.
    """

    rule: LearningRule
    optimizer: torch.optim.Optimizer
    clip_norm: float | None = None
    running: RunningLoss = field(default_factory=RunningLoss)
    clipper: GradientClipper | None = None

    def __post_init__(self) -> None:
        self.clipper = _make_clipper(self.clip_norm, self.clipper)
        self._params = [p for p in self.rule.model.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, x_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        """One sample (``(D,)`` or ``(batch, D)``): predict o(t), learn from y(t), return o(t)."""
        if x_t.dim() == 1:
            x_t = x_t.unsqueeze(0)
        if y_t.dim() == 1:
            y_t = y_t.unsqueeze(0)
        o = self.rule.step(x_t, y_t)
        loss = self.rule.last_loss
        if loss is not None:
            self.running.update(float(loss))
        if self.rule.grad_ready:
            self.clipper.step(self.optimizer, self._params)
            self.optimizer.zero_grad(set_to_none=True)
        return o

    def run(
        self,
        stream: Iterable[tuple[torch.Tensor, torch.Tensor]],
        callback: Callable[[int, torch.Tensor, torch.Tensor, float], None] | None = None,
    ) -> RunningLoss:
        """Consume ``stream``; after each step call ``callback(t, o_t, y_t, running_loss)``."""
        for t, (x_t, y_t) in enumerate(stream):
            o = self.step(x_t, y_t)
            if callback is not None:
                callback(t, o, y_t, self.running.value)
        return self.running


@dataclass
class EpochTrainer:
    """Minibatch epochs over a stored data set with a :class:`BPTT` rule.

    For each minibatch: zero the gradients, ``rule.accumulate`` (which, when truncated, sums
    the gradients of every chunk), clip (``clip_norm`` or a ``clipper``), one optimizer step
    (skipped if the gradient is not finite).
    """

    rule: BPTT
    optimizer: torch.optim.Optimizer
    clip_norm: float | None = None
    history: list[float] = field(default_factory=list)
    clipper: GradientClipper | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rule, BPTT):
            raise TypeError(f"EpochTrainer needs a BPTT rule, got {type(self.rule).__name__}")
        self.clipper = _make_clipper(self.clip_norm, self.clipper)
        self._params = [p for p in self.rule.model.parameters() if p.requires_grad]

    def fit(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        callback: Callable[[int, float], None] | None = None,
    ) -> list[float]:
        """Train for ``epochs``; return (and append to ``history``) the mean loss per sequence
        of each epoch. ``inputs``: ``(sequences, time, D)``; the order is shuffled by ``seed``."""
        check_positive_int("epochs", epochs)
        check_positive_int("batch_size", batch_size)
        check_tensor("inputs", inputs, ndim=3, layout="(sequences, time, features)")
        if targets.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"inputs have {inputs.shape[0]} sequences but targets have {targets.shape[0]}"
            )
        gen = torch.Generator().manual_seed(seed)
        count = inputs.shape[0]
        for epoch in range(epochs):
            order = torch.randperm(count, generator=gen).to(inputs.device)
            total = 0.0
            for start in range(0, count, batch_size):
                idx = order[start : start + batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                result = self.rule.accumulate(inputs[idx], targets[idx])
                if not math.isfinite(result.loss):
                    raise FloatingPointError(
                        f"loss became {result.loss} in epoch {epoch}; lower the learning rate "
                        "or set clip_norm"
                    )
                self.clipper.step(self.optimizer, self._params)
                scale = len(idx) if self.rule.reduction == "mean" else 1
                total += result.loss * scale
            self.history.append(total / count)
            if callback is not None:
                callback(epoch, self.history[-1])
        return self.history
