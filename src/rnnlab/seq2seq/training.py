"""Training pieces: the masked sequence loss with label smoothing, one training step, the
scheduled-sampling schedules, checkpoint averaging."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rnnlab._validation import check_choice, check_int, check_number


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                  *, label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``targets`` ``(B, T)`` under ``logits`` ``(B, T, V)`` over the steps where
    ``mask`` ``(B, T)`` is True (all when None).

    With label smoothing ``eps`` (Szegedy et al. 2016, "Rethinking the Inception architecture",
    Sec. 7) the target distribution is ``(1 - eps) * onehot + eps * uniform`` over the classes
    whose logit is finite (a pointer network's ``-inf`` positions are impossible, not classes):
    ``loss = (1 - eps) * (-log p_y) + eps * mean_k(-log p_k)``. ``reduction``: ``"mean"`` per
    valid token, ``"sum"``, or ``"none"`` (``(B, T)``, 0 where masked).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (batch, time, classes), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets of shape {tuple(targets.shape)} must be (batch, time) = "
                         f"{tuple(logits.shape[:2])}")
    eps = check_number("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    elif mask.shape != targets.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} must match targets "
                         f"{tuple(targets.shape)}")
    mask = mask.bool()
    classes = logits.shape[-1]
    safe = torch.where(mask, targets, torch.zeros_like(targets)).long()
    if mask.any() and (int(safe.min()) < 0 or int(safe.max()) >= classes):
        raise ValueError(f"targets hold ids outside [0, {classes})")
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, safe[..., None]).squeeze(-1)
    if eps > 0.0:
        finite = torch.isfinite(logits)
        smooth = -torch.where(finite, logp, torch.zeros_like(logp)).sum(-1)
        smooth = smooth / finite.sum(-1).clamp(min=1)
        nll = (1.0 - eps) * nll + eps * smooth
    # where, not a product: a masked step may be -inf/NaN (an all-masked pointer row)
    per_token = torch.where(mask, nll, torch.zeros_like(nll))
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp(min=1)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batch: Sequence[torch.Tensor], *, label_smoothing: float = 0.0,
               teacher_forcing: float = 1.0, clip: float | None = None,
               generator: torch.Generator | None = None) -> float:
    """One update on ``batch = (src, src_lengths, tgt, tgt_lengths)`` (a ``Seq2Seq``) or
    ``(inputs, lengths, targets, target_lengths)`` (a ``PointerNetwork``): zero the gradients,
    ``model.loss(...).backward()``, clip the global gradient norm to ``clip`` (Pascanu et al.
    2013), ``optimizer.step()``. Returns the loss (mean per token)."""
    if len(batch) != 4:
        raise ValueError(f"batch must be (src, src_lengths, tgt, tgt_lengths), got {len(batch)} "
                         "tensors")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(*batch, label_smoothing=label_smoothing, teacher_forcing=teacher_forcing,
                      generator=generator)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(),
                                       check_number("clip", clip, low=0.0, low_open=True))
    optimizer.step()
    return float(loss.detach())


def scheduled_sampling_probability(step: int, schedule: str = "inverse_sigmoid", *,
                                   k: float = 1000.0, c: float = 1e-4,
                                   eps: float = 0.0) -> float:
    """The teacher-forcing probability ``eps_i`` at training step ``i`` (Bengio et al. 2015,
    Sec. 2.4): ``"linear"`` ``max(eps, k - c i)`` (give ``k <= 1``), ``"exponential"`` ``k^i``
    (``k < 1``), ``"inverse_sigmoid"`` ``k / (k + exp(i / k))`` (``k >= 1``)."""
    i = check_int("step", step, low=0)
    kind = check_choice("schedule", schedule, ("linear", "exponential", "inverse_sigmoid"))
    if kind == "linear":
        k = check_number("k", k, low=0.0, high=1.0)
        return max(check_number("eps", eps, low=0.0, high=1.0),
                   k - check_number("c", c, low=0.0) * i)
    if kind == "exponential":
        return check_number("k", k, low=0.0, high=1.0, high_open=True) ** i
    k = check_number("k", k, low=1.0)
    return k / (k + math.exp(min(i / k, 700.0)))


def _model_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj.get("format") == "rnnlab.train.checkpoint":
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds neither a state dict nor an rnnlab.train checkpoint")
    return obj


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """The elementwise mean of the model state dicts in ``paths`` (files of
    ``torch.save(model.state_dict())`` or ``rnnlab.train`` checkpoints), as Vaswani et al. (2017)
    average the last checkpoints. Floating tensors are averaged in float64 and cast back; integer
    tensors (counters) must agree. Every file must have the same keys and shapes."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("average_checkpoints needs at least one path")
    states = [_model_state(torch.load(p, map_location="cpu", weights_only=True), p)
              for p in paths]
    first = states[0]
    out: dict[str, torch.Tensor] = OrderedDict()
    if hasattr(first, "_metadata"):  # rnnlab.nn layers keep their options there (docs/nn.md)
        out._metadata = first._metadata  # type: ignore[attr-defined]
    for p, s in zip(paths[1:], states[1:], strict=True):
        if s.keys() != first.keys():
            raise ValueError(f"{p} has other keys than {paths[0]}: "
                             f"{sorted(set(s) ^ set(first))}")
        for k, v in s.items():
            if v.shape != first[k].shape:
                raise ValueError(f"{p}: {k} has shape {tuple(v.shape)}, {paths[0]} "
                                 f"{tuple(first[k].shape)}")
    for k, v in first.items():
        if v.is_floating_point():
            total = sum(s[k].double() for s in states)
            out[k] = (total / len(states)).to(v.dtype)
        else:
            for p, s in zip(paths[1:], states[1:], strict=True):
                if not torch.equal(s[k], v):
                    raise ValueError(f"{k} is an integer tensor that differs between "
                                     f"{paths[0]} and {p}: it cannot be averaged")
            out[k] = v.clone()
    return out


class TrainerAdapter(torch.nn.Module):
    """Lets :class:`rnnlab.train.Trainer` (full BPTT) train a ``Seq2Seq`` or a
    ``PointerNetwork``: the trainer takes ``(inputs, targets, mask)`` tensors of equal
    ``(batch, time)`` and calls ``model(inputs, None) -> (outputs, state)`` and
    ``loss(outputs, targets, mask)``.

    ``pack(src, src_lengths, tgt, tgt_lengths) -> (x, y, mask)`` puts the source and the
    lengths into channels of ``x`` ``(B, T, C)`` with ``T = max(S, T')``: ``[src id, src length,
    tgt id, tgt length]`` (``C = 4``; ids are exact in float32 below 2^24) for a ``Seq2Seq``,
    ``[x_1..x_D, length, target position, target length]`` (``C = D + 3``, in the inputs'
    dtype) for a ``PointerNetwork`` over ``D`` features; ``y`` ``(B, T, 1)`` holds the target
    ids and ``mask`` the valid target steps. ``forward`` unpacks them and returns the
    teacher-forced logits padded to ``T``; :meth:`loss` is :func:`sequence_loss` (mean per
    token, with ``label_smoothing``). The trainer's checkpoints hold ``model.``-prefixed keys:
    load them into the adapter (or use ``adapter.model``). Usage::

        adapter = TrainerAdapter(seq2seq, label_smoothing=0.1)
        trainer = Trainer(adapter, opt, loss=adapter.loss, run_dir=..., clip=1.0)
        trainer.fit(adapter.pack(src, src_lengths, tgt, tgt_lengths), epochs=10)
    """

    def __init__(self, model: torch.nn.Module, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        from rnnlab.seq2seq.pointer import PointerNetwork

        self.model = model
        self.label_smoothing = check_number("label_smoothing", label_smoothing, low=0.0,
                                            high=1.0, high_open=True)
        #: features per source element (a pointer network's inputs), None for token ids
        self.features = model.input_size if isinstance(model, PointerNetwork) else None
        # the attributes rnnlab.learning.BPTT asks of a model (it only calls forward here)
        self.cell = None
        self.output = None
        self.input_size = 4 if self.features is None else self.features + 3
        self.output_size = 1

    def initial_state(self, batch: int) -> None:
        return None

    def check_input(self, x: torch.Tensor) -> None:
        return None

    def check_state(self, state: Any, batch: int) -> None:
        return None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pack(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt: torch.Tensor,
             tgt_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, S = src.shape[:2]
        T = max(S, tgt.shape[1])
        if self.features is None:
            if src.dim() != 2 or src.is_floating_point():
                raise ValueError(f"a Seq2Seq source must be (batch, time) token ids, got "
                                 f"{src.dtype} of shape {tuple(src.shape)}")
            if max(int(src.max()), int(tgt.max())) >= 2 ** 24:
                raise ValueError("ids of 2^24 or more are not exact in float32")
            dtype, D = torch.float32, 1
        else:
            if src.dim() != 3 or src.shape[2] != self.features or not src.is_floating_point():
                raise ValueError(f"a pointer network's inputs must be floating (batch, elements, "
                                 f"{self.features}), got {src.dtype} of shape "
                                 f"{tuple(src.shape)}")
            dtype, D = src.dtype, self.features
        x = torch.zeros(B, T, D + 3, dtype=dtype)
        x[:, :S, :D] = src.reshape(B, S, D).to(dtype)
        x[:, :, D] = src_lengths.to(dtype)[:, None]
        x[:, :tgt.shape[1], D + 1] = tgt.to(dtype)
        x[:, :, D + 2] = tgt_lengths.to(dtype)[:, None]
        y = torch.zeros(B, T, 1, dtype=dtype)
        y[:, :tgt.shape[1], 0] = tgt.to(dtype)
        mask = torch.arange(T)[None, :] < tgt_lengths[:, None]
        return x, y, mask

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, None]:
        D = 1 if self.features is None else self.features
        src_lengths = x[:, 0, D].long()
        tgt_lengths = x[:, 0, D + 2].long()
        S, T = int(src_lengths.max()), int(tgt_lengths.max())
        src = x[:, :S, 0].long() if self.features is None else x[:, :S, :D]
        out = self.model(src, src_lengths, x[:, :T, D + 1].long())
        logits = torch.nn.functional.pad(out.logits, (0, 0, 0, x.shape[1] - T))
        return logits, None

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None
             ) -> torch.Tensor:
        return sequence_loss(outputs, targets[..., 0].long(), mask,
                             label_smoothing=self.label_smoothing)
