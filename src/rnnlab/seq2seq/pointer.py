"""Pointer network (Vinyals, Fortunato & Jaitly 2015, "Pointer networks", eq. 3).

An encoder RNN reads the input vectors ``P_1..P_n`` into states ``e_j``; a decoder RNN, fed the
input vector chosen at the previous step (a learned start vector first), has states ``d_i``; the
output distribution over input positions *is* the attention:

    u_j^i = v^T tanh(W1 e_j + W2 d_i),    p(C_i | C_1..C_{i-1}, P) = softmax_j(u^i)

over the valid positions (padding excluded and, with ``mask_chosen``, the positions already
chosen: the output is then a permutation, as for sorting).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_int, check_number, check_tensor
from rnnlab.seq2seq._common import (
    additive_energy,
    check_ids,
    check_lengths,
    init_linear,
    length_mask,
    make_rnn,
    positive,
)


class PointerOutput(NamedTuple):
    """``logits`` ``(B, T, S)``: ``u`` with ``-inf`` on excluded positions."""

    logits: torch.Tensor


class PointerNetwork(nn.Module):
    """``forward(inputs (B, S, D) float, lengths (B,), targets (B, T) positions)`` under teacher
    forcing; decode with :func:`rnnlab.seq2seq.greedy_decode` / ``beam_search`` (the tokens are
    positions; without ``eos`` each output has as many steps as its input has elements)."""

    eos_id = None
    pad_id = 0

    def __init__(self, input_size: int, hidden_size: int, *, cell: str = "lstm",
                 num_layers: int = 1, mask_chosen: bool = True, max_length: int = 1024,
                 seed: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.input_size = positive("input_size", input_size)
        self.hidden_size = H = positive("hidden_size", hidden_size)
        self.num_layers = positive("num_layers", num_layers)
        self.mask_chosen = check_bool("mask_chosen", mask_chosen)
        self.max_length = positive("max_length", max_length)
        self.cell = cell
        g = make_generator(seed, generator)
        self.embed = nn.Linear(self.input_size, H)
        init_linear(self.embed, g)
        self.encoder = make_rnn(cell, H, H, self.num_layers, generator=g)
        self.decoder = make_rnn(cell, H, H, self.num_layers, generator=g)
        self.start = nn.Parameter(torch.empty(H).uniform_(-1.0, 1.0, generator=g))
        self.W1 = nn.Linear(H, H, bias=False)
        self.W2 = nn.Linear(H, H, bias=False)
        self.v = nn.Linear(H, 1, bias=False)
        for layer in (self.W1, self.W2, self.v):
            init_linear(layer, g)

    def check_source(self, inputs: object, lengths: object) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_tensor("inputs", inputs, ndim=3, last_dim=self.input_size,
                         layout="(batch, elements, features)")
        if not x.is_floating_point():
            raise TypeError(f"inputs must be a floating tensor, got {x.dtype}")
        lengths = check_lengths("lengths", lengths, x.shape[0], x.shape[1], self.max_length,
                                "max_length")
        return x, lengths

    # ------------------------------------------------------------ decoding protocol
    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(e, mask, W1 e, embedded inputs, h_0[, c_0])``, batch first."""
        x, lengths = self.check_source(inputs, lengths)
        emb = self.embed(x)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hx = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        parts = hx if isinstance(hx, tuple) else (hx,)
        final = tuple(p.transpose(0, 1) for p in parts)
        return (out, length_mask(lengths.to(x.device), x.shape[1]), self.W1(out), emb, *final)

    def initial_state(self, memory: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``(h, [c,] chosen)``: the encoder's final state and the positions chosen so far."""
        return (*tuple(memory[4:]), torch.zeros_like(memory[1]))

    def start_tokens(self, memory: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.full((memory[0].shape[0],), -1, dtype=torch.long, device=memory[0].device)

    def num_outputs(self, memory: tuple[torch.Tensor, ...]) -> int:
        return memory[0].shape[1]

    def decode_lengths(self, memory: tuple[torch.Tensor, ...], max_len: int | None
                       ) -> torch.Tensor:
        lengths = memory[1].sum(dim=1).cpu()
        if max_len is None:
            return lengths
        limit = check_int("max_len", max_len, low=1)
        if self.mask_chosen:
            return lengths.clamp(max=limit)
        return torch.full_like(lengths, limit)

    def _scores(self, d: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``u = v^T tanh(W1 e_j + W2 d)`` for ``d`` ``(B, H)`` or ``(B, T, H)``."""
        q = self.W2(d)
        if q.dim() == 2:
            return additive_energy(q[:, None], keys, self.v)
        return additive_energy(q[:, :, None], keys[:, None], self.v)

    @staticmethod
    def _mask(u: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # a row with nothing allowed (a step past a sequence's end) stays finite: it is padding
        nothing = ~allowed.any(dim=-1, keepdim=True)
        return u.masked_fill(~allowed & ~nothing, -math.inf)

    def _run(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        hx = tuple(s.transpose(0, 1).contiguous() for s in state)
        out, new = self.decoder(x, hx if len(hx) == 2 else hx[0])
        new = new if isinstance(new, tuple) else (new,)
        return out, tuple(s.transpose(0, 1) for s in new)

    def step(self, prev: torch.Tensor, state: tuple[torch.Tensor, ...],
             memory: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        _e, mask, keys, emb = memory[:4]
        *rnn_state, chosen = state
        first = prev < 0
        idx = prev.clamp(min=0)
        picked = emb[torch.arange(emb.shape[0], device=emb.device), idx]
        x = torch.where(first[:, None], self.start.expand_as(picked), picked)
        if self.mask_chosen:
            hit = torch.zeros_like(chosen).scatter_(1, idx[:, None], True) & ~first[:, None]
            chosen = chosen | hit
        out, rnn_state = self._run(x[:, None], tuple(rnn_state))
        u = self._mask(self._scores(out[:, 0], keys), mask & ~chosen)
        logp = torch.log_softmax(u, dim=-1)
        return logp, (*tuple(rnn_state), chosen), logp.exp()

    # ------------------------------------------------------------ training
    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, *,
                teacher_forcing: float = 1.0, generator: torch.Generator | None = None
                ) -> PointerOutput:
        memory = self.encode(inputs, lengths)
        e, mask, keys, emb = memory[:4]
        S = e.shape[1]
        targets = check_ids("targets", targets, S)
        if targets.shape[0] != e.shape[0]:
            raise ValueError(f"targets has {targets.shape[0]} rows but inputs {e.shape[0]}")
        if check_number("teacher_forcing", teacher_forcing, low=0.0, high=1.0) != 1.0:
            raise ValueError("PointerNetwork trains with teacher forcing only "
                             "(teacher_forcing=1.0)")
        B, T = targets.shape
        fed = emb.gather(1, targets[:, :-1, None].expand(-1, -1, emb.shape[-1]))
        x = torch.cat([self.start.expand(B, 1, -1), fed], dim=1)
        out, _ = self._run(x, tuple(memory[4:]))
        allowed = mask[:, None, :].expand(B, T, S)
        if self.mask_chosen:  # positions chosen at steps before t (exclusive cumulative count)
            onehot = torch.nn.functional.one_hot(targets, S).to(torch.long)
            before = (onehot.cumsum(dim=1) - onehot) > 0
            allowed = allowed & ~before
        return PointerOutput(self._mask(self._scores(out, keys), allowed))

    def loss(self, inputs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor, *, label_smoothing: float = 0.0,
             teacher_forcing: float = 1.0, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Mean per-step cross-entropy over the valid target steps."""
        from rnnlab.seq2seq.training import sequence_loss

        out = self(inputs, lengths, targets, teacher_forcing=teacher_forcing)
        tl = check_lengths("target_lengths", target_lengths, targets.shape[0], targets.shape[1])
        valid = length_mask(tl.to(targets.device), targets.shape[1])
        beyond = valid & (targets >= lengths.to(targets.device)[:, None])
        if bool(beyond.any()):
            b, t = beyond.nonzero()[0].tolist()
            raise ValueError(f"targets[{b}, {t}] = {int(targets[b, t])} points past the end of "
                             f"input {b} (length {int(lengths[b])})")
        return sequence_loss(out.logits, targets, valid, label_smoothing=label_smoothing)
