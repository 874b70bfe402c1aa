"""Shared pieces of the sequence-to-sequence package: input checks, layer choice, initialization,
masked softmax."""

from __future__ import annotations

import math

import torch
from torch import nn

import rnnlab.nn as rnn
from rnnlab._tree import tree_map
from rnnlab._validation import check_choice, check_positive_int
from rnnlab.seq2seq._kernels import inference_ops

CELLS = {"lstm": rnn.LSTM, "gru": rnn.GRU}


def make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int, *,
             dropout: float = 0.0, bidirectional: bool = False,
             generator: torch.Generator | None = None) -> nn.Module:
    """An ``rnnlab.nn`` LSTM or GRU, batch first, without the per-call NaN scan (the entry points
    check their inputs once; a scan per decoder step would cost a host sync each)."""
    cls = CELLS[check_choice("cell", cell, tuple(CELLS))]
    return cls(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
               dropout=dropout if num_layers > 1 else 0.0, generator=generator,
               check_finite=False)


def init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """torch's default for ``nn.Linear`` (weights and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)))
    drawn from ``generator`` so that a seed fixes the model."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)


def init_embedding(layer: nn.Embedding, generator: torch.Generator) -> None:
    """N(0, 1) like torch's ``nn.Embedding``, from ``generator``; the padding row stays zero."""
    with torch.no_grad():
        layer.weight.normal_(generator=generator)
        if layer.padding_idx is not None:
            layer.weight[layer.padding_idx].zero_()


def additive_energy(query: torch.Tensor, keys: torch.Tensor, v: nn.Linear) -> torch.Tensor:
    """``v^T tanh(query + keys)`` over the last axis (the two broadcast against each other),
    computed as ``2 v^T sigmoid(2 query + 2 keys) - sum(v)`` (``tanh(x) = 2 sigmoid(2x) - 1``:
    the same value in real arithmetic, and ``2 query + 2 keys`` is exactly ``2 (query + keys)``
    in floating point; the rounding error is about one unit in the last place of
    ``sum |v_k|``).

    The sum is the largest elementwise tensor of an attention step (batch x source x attention
    size): torch's CPU ``tanh`` ran 8x slower than its ``sigmoid`` here, the factor 2 rides on
    the addition (one pass), and without gradients the sum (a temporary) is transformed in place
    instead of allocating new large buffers (docs/seq2seq.md, Speed).

    A decoder step (``query`` ``(N, 1, A)``, ``keys`` ``(N, S, A)``) without gradients on the CPU
    runs the C++ kernel ``rnnlab_seq2seq.additive_energy`` (rnnlab.seq2seq._kernels: the same
    sum, ``tanh`` from torch's vectorised ``exp``, no ``(N, S, A)`` temporary)."""
    w = v.weight[0]
    if query.dim() == 3 and keys.dim() == 3 and query.shape[1] == 1 \
            and query.shape[0] == keys.shape[0]:
        ops = inference_ops(query, keys, w)
        if ops is not None:
            return ops.additive_energy(query[:, 0], keys, w)
    z = torch.add(query * 2.0, keys, alpha=2.0)
    s = z.sigmoid() if torch.is_grad_enabled() and z.requires_grad else z.sigmoid_()
    return s @ (2.0 * w) - w.sum()


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis where ``mask`` is True; exactly 0 elsewhere (``scores``, a
    temporary of the caller, is overwritten when no gradient flows through it)."""
    if torch.is_grad_enabled() and scores.requires_grad:
        return torch.softmax(scores.masked_fill(~mask, -math.inf), dim=-1)
    return torch.softmax(scores.masked_fill_(~mask, -math.inf), dim=-1)


def check_ids(name: str, x: object, vocab_size: int | None, *, ndim: int = 2) -> torch.Tensor:
    """An integer tensor of ``ndim`` dims, non-empty, every id in ``[0, vocab_size)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions (batch, time), got shape "
                         f"{tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): empty sequences cannot be "
                         "encoded or decoded")
    if vocab_size is not None:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"{name} holds id {bad} outside the vocabulary [0, {vocab_size})")
    return x.long()


def check_lengths(name: str, lengths: object, batch: int, steps: int,
                  limit: int | None = None, limit_name: str = "") -> torch.Tensor:
    """``(batch,)`` integer lengths in ``[1, steps]`` (and ``<= limit``)."""
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(lengths.shape)}")
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1:
        raise ValueError(f"{name} holds {low}: empty sequences cannot be encoded or decoded")
    if high > steps:
        raise ValueError(f"{name} holds {high} but the padded tensor has only {steps} steps")
    if limit is not None and high > limit:
        raise ValueError(f"{name} holds {high}, beyond the model's {limit_name}={limit}")
    return lengths.long()


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``(B, steps)`` bool: True at positions before each length."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def reorder(tree: tuple, index: torch.Tensor) -> tuple:
    """Rows ``index`` of every tensor of a batch-first tree (beam search's reordering)."""
    return tree_map(lambda t: t.index_select(0, index), tree)


def positive(name: str, value: object) -> int:
    return check_positive_int(name, value)
