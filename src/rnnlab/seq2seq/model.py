"""Encoder, attention, decoder and the encoder-decoder model (token ids in, logits out).

Three ways to give the decoder the source (``context=``):

* ``"last_state"`` (Cho et al. 2014, "Learning phrase representations using RNN
  encoder-decoder", eqs. 3-4 of Sec. 2.2): ``c`` is the encoder's last (top-layer) state,
  ``h_0 = tanh(V c)``, ``h_t = f(h_{t-1}, y_{t-1}, c)`` (``c`` concatenated to the input at every
  step) and ``P(y_t | ...) = g(h_t, y_{t-1}, c)``: a linear readout of ``[h_t; E y_{t-1}; c]``
  followed by the softmax, or with ``readout="maxout"`` Cho et al.'s deep output (Sec. 4.1: "a
  deep neural network with a single intermediate layer having 500 maxout units each pooling 2
  inputs", after Pascanu et al. 2014; App. A: the layer reads ``h_t``, ``y_{t-1}`` and ``c``):
  ``s~ = O_h h_t + O_y E y_{t-1} + O_c c`` (``2l`` units, one affine map of the concatenation),
  ``s_j = max(s~_{2j-1}, s~_{2j})``, ``logits = G s + b`` (``l = maxout_size``; the previous
  word enters through the decoder's embedding ``E``, as in Bahdanau et al.'s ``V_o E y``).
* ``"initial_state"`` (Sutskever et al. 2014, "Sequence to sequence learning with neural
  networks"): a deep LSTM encodes the source into its final state ``v``, which is the decoder's
  initial state: ``P(y_1..y_T' | x) = prod_t P(y_t | v, y_1..y_{t-1})``; ``reverse_source=True``
  feeds each source reversed (within its length), as they found helpful.
* ``"attention"``: a context ``c_t = sum_j a_tj h_j`` per step, ``a_t = softmax_j(e_tj)`` over the
  source positions (padding excluded):

  - ``"bahdanau"`` (Bahdanau et al. 2015, "Neural machine translation by jointly learning to
    align and translate", eq. 6 and App. A.1.2): ``e_tj = v^T tanh(W s_{t-1} + U h_j)`` with the
    previous decoder state ``s_{t-1}`` (top layer); ``s_t = f(s_{t-1}, y_{t-1}, c_t)`` and a linear
    readout of ``[s_t; E y_{t-1}; c_t]``, or with ``readout="maxout"`` their deep output with a
    maxout layer (App. A.2.2): ``t~ = U_o s_{t-1} + V_o E y_{t-1} + C_o c_t`` (``2l`` units, one
    affine map of the concatenation, so with a bias), ``t_j = max(t~_{2j-1}, t~_{2j})``,
    ``logits = W_o t + b`` (``l = maxout_size``);
  - ``"dot"`` / ``"general"`` (Luong et al. 2015, "Effective approaches to attention-based
    neural machine translation", eqs. 5-8): ``score(h_t, h_s) = h_t^T h_s`` or ``h_t^T W_a h_s``
    with the *current* decoder state ``h_t``; ``h~_t = tanh(W_c [c_t; h_t])``,
    ``p(y_t) = softmax(W_s h~_t)``; with ``input_feeding`` (their Sec. 3.3) ``h~_{t-1}`` is
    concatenated to the next input.

With attention the decoder starts from the encoder's final state (as Luong et al. do). A
bidirectional encoder has ``hidden_size // 2`` units per direction and its directions are
concatenated, so that encoder outputs and decoder states have the same size ``hidden_size``.

Variable lengths: the encoder runs on a ``PackedSequence`` (its final state is each sequence's
own last step, the backward direction starts at each sequence's own end), attention is masked to
``[0, length)``, and the decoder is causal, so extra padding changes no result.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab._native import inference_linear
from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_choice, check_int, check_number
from rnnlab.seq2seq._common import (
    additive_energy,
    check_ids,
    check_lengths,
    init_embedding,
    init_linear,
    length_mask,
    make_rnn,
    masked_softmax,
    positive,
)
from rnnlab.seq2seq._kernels import inference_ops

CONTEXTS = ("attention", "last_state", "initial_state")
ATTENTIONS = ("bahdanau", "dot", "general")
READOUTS = ("linear", "maxout")


class Seq2SeqOutput(NamedTuple):
    """``logits`` ``(B, T, V)``: position ``t`` predicts ``tgt[:, t]``; ``attention``
    ``(B, T, S)`` (rows sum to one over the source, exactly zero on padding) or None."""

    logits: torch.Tensor
    attention: torch.Tensor | None


def affine(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``; without gradients (decoding) through
    :func:`rnnlab._native.inference_linear` (oneDNN's matmul on the CPU in float32) where the
    layer is a plain ``nn.Linear`` with nothing hooked into its call (a subclass, a replaced
    ``forward``, its own or global forward hooks: those see their forward)."""
    if (torch.is_grad_enabled() or type(layer) is not nn.Linear or "forward" in vars(layer)
            or layer._forward_hooks or layer._forward_pre_hooks
            or nn.modules.module._global_forward_hooks
            or nn.modules.module._global_forward_pre_hooks):
        return layer(x)
    return inference_linear(x, layer.weight, layer.bias)


def maxout(pre: torch.Tensor, size: int) -> torch.Tensor:
    """``t_j = max(pre_{2j-1}, pre_{2j})`` for ``j = 1..size`` over the last axis (pairs of
    neighbouring units; Goodfellow et al. 2013, "Maxout networks", with 2 pieces, as Bahdanau
    et al. 2015 App. A.2.2 use it)."""
    return pre.unflatten(-1, (size, 2)).amax(dim=-1)


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first ``lengths[b]`` entries reversed, the padding left in place."""
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, index)


class Encoder(nn.Module):
    """Embedding + an ``rnnlab.nn`` LSTM/GRU over padded token ids.

    ``forward(src, lengths) -> (outputs (B, S, hidden_size), mask (B, S), final)`` where ``final``
    is a tuple ``(h,)`` (GRU) or ``(h, c)`` (LSTM) of ``(B, num_layers, hidden_size)`` tensors,
    the directions concatenated; outputs are 0 on padding.
    """

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, *, cell: str = "lstm",
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 pad_id: int = 0, reverse_source: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.vocab_size = positive("vocab_size", vocab_size)
        self.hidden_size = positive("hidden_size", hidden_size)
        self.num_layers = positive("num_layers", num_layers)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.reverse_source = check_bool("reverse_source", reverse_source)
        self.pad_id = check_int("pad_id", pad_id, low=0, high=self.vocab_size - 1)
        self.cell = cell
        dirs = 2 if self.bidirectional else 1
        if self.hidden_size % dirs:
            raise ValueError(f"a bidirectional encoder needs an even hidden_size (two directions "
                             f"of hidden_size // 2), got {hidden_size}")
        g = make_generator(None, generator)
        self.embedding = nn.Embedding(self.vocab_size, positive("embed_size", embed_size),
                                      padding_idx=self.pad_id)
        init_embedding(self.embedding, g)
        self.dropout = nn.Dropout(dropout)
        self.rnn = make_rnn(cell, embed_size, self.hidden_size // dirs, self.num_layers,
                            dropout=dropout, bidirectional=self.bidirectional, generator=g)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        steps = src.shape[1]
        if self.reverse_source:
            src = reverse_within_lengths(src, lengths)
        x = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hx = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        parts = hx if isinstance(hx, tuple) else (hx,)
        dirs = 2 if self.bidirectional else 1
        final = []
        for p in parts:  # (L * dirs, B, H/dirs) -> (B, L, H), directions concatenated
            p = p.view(self.num_layers, dirs, p.shape[1], p.shape[2])
            final.append(p.permute(2, 0, 1, 3).reshape(p.shape[2], self.num_layers, -1))
        return out, length_mask(lengths, steps), tuple(final)


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015): ``e_j = v^T tanh(W q + U h_j)``; ``U h_j`` is computed once per
    source (``keys``)."""

    def __init__(self, query_size: int, key_size: int, attention_size: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.W = nn.Linear(query_size, attention_size, bias=False)
        self.U = nn.Linear(key_size, attention_size)
        self.v = nn.Linear(attention_size, 1, bias=False)
        for layer in (self.W, self.U, self.v):
            init_linear(layer, generator)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.U(memory)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``query`` ``(B, H)`` or ``(B, T, H)``; ``keys`` ``(B, S, A)`` -> ``(B, [T,] S)``."""
        q = self.W(query)
        if q.dim() == 2:
            return additive_energy(q[:, None, :], keys, self.v)
        return additive_energy(q[:, :, None, :], keys[:, None], self.v)

    def attend(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
               values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step: ``a_j = softmax_j(e_j)`` over the valid positions (``mask``, exactly
        0 elsewhere) and the context ``c = sum_j a_j values_j``; ``query`` ``(N, H)``, ``keys``
        ``(M, S, A)``, ``mask`` ``(M, S)``, ``values`` ``(M, S, D)`` -> ``(a (N, S), c (N, D))``,
        where ``N = G M`` and row ``n`` reads source ``n // G`` (a beam's rows share their
        sentence's source). Without gradients on the CPU one C++ kernel
        (``rnnlab_seq2seq.additive_attention``) computes the energies of the valid positions
        only, the softmax and the context."""
        q = affine(self.W, query)
        N, M = q.shape[0], keys.shape[0]
        if M == 0 or N % M:
            raise ValueError(f"{N} query rows cannot share {M} sources evenly")
        ops = inference_ops(q, keys, values)
        if ops is not None:
            return ops.additive_attention(q, keys, self.v.weight[0], mask, values)
        if M != N:
            rows = torch.arange(N, device=q.device) // (N // M)
            keys, mask, values = keys[rows], mask[rows], values[rows]
        attn = masked_softmax(additive_energy(q[:, None, :], keys, self.v), mask)
        return attn, torch.bmm(attn[:, None], values)[:, 0]


class MultiplicativeAttention(nn.Module):
    """Luong et al. (2015): ``dot`` ``h_t^T h_s`` or ``general`` ``h_t^T W_a h_s``
    (``W_a h_s`` computed once per source)."""

    def __init__(self, kind: str, query_size: int, key_size: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.kind = kind
        if kind == "dot":
            if query_size != key_size:
                raise ValueError(f"dot attention needs equal decoder and encoder sizes, got "
                                 f"{query_size} and {key_size}; use attention='general'")
            self.W_a = None
        else:
            self.W_a = nn.Linear(key_size, query_size, bias=False)
            init_linear(self.W_a, generator)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return memory if self.W_a is None else self.W_a(memory)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if query.dim() == 2:
            return torch.bmm(keys, query[:, :, None]).squeeze(-1)
        return torch.bmm(query, keys.transpose(1, 2))


class Seq2Seq(nn.Module):
    """Encoder-decoder over token ids (see the module docstring for the three contexts).

    ``forward(src, src_lengths, tgt, *, teacher_forcing=1.0, generator=None)`` with ``tgt`` the
    target ids followed by ``eos_id`` and padded: the decoder reads ``[bos, tgt[:, :-1]]`` and
    returns :class:`Seq2SeqOutput`. ``teacher_forcing < 1`` is scheduled sampling (Bengio et al.
    2015, "Scheduled sampling for sequence prediction with recurrent neural networks"): at each
    step and for each sequence independently, the previous target is replaced with probability
    ``1 - teacher_forcing`` by a token sampled from the model's own previous distribution.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, pad_id: int = 0,
                 bos_id: int = 1, eos_id: int = 2, unk_id: int | None = None,
                 context: str = "attention", attention: str = "bahdanau",
                 input_feeding: bool = True, cell: str = "lstm", embed_size: int = 32,
                 hidden_size: int = 64, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, reverse_source: bool = False,
                 max_source_length: int = 256, max_target_length: int = 256,
                 readout: str = "linear", maxout_size: int | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.src_vocab_size = positive("src_vocab_size", src_vocab_size)
        self.tgt_vocab_size = positive("tgt_vocab_size", tgt_vocab_size)
        smallest = min(self.src_vocab_size, self.tgt_vocab_size)
        self.pad_id = check_int("pad_id", pad_id, low=0, high=smallest - 1)
        self.bos_id = check_int("bos_id", bos_id, low=0, high=self.tgt_vocab_size - 1)
        self.eos_id = check_int("eos_id", eos_id, low=0, high=self.tgt_vocab_size - 1)
        self.unk_id = None if unk_id is None else check_int("unk_id", unk_id, low=0,
                                                             high=smallest - 1)
        if self.pad_id in (self.bos_id, self.eos_id):
            raise ValueError(f"pad_id ({pad_id}) must differ from bos_id and eos_id")
        self.context = check_choice("context", context, CONTEXTS)
        self.attention_kind = (check_choice("attention", attention, ATTENTIONS)
                               if self.context == "attention" else None)
        self.input_feeding = (check_bool("input_feeding", input_feeding)
                              and self.attention_kind in ("dot", "general"))
        self.cell = check_choice("cell", cell, ("lstm", "gru"))
        self.hidden_size = H = positive("hidden_size", hidden_size)
        self.embed_size = E = positive("embed_size", embed_size)
        self.num_layers = positive("num_layers", num_layers)
        check_number("dropout", dropout, low=0.0, high=1.0, high_open=True)
        self.max_source_length = positive("max_source_length", max_source_length)
        self.max_target_length = positive("max_target_length", max_target_length)
        self.readout_kind = check_choice("readout", readout, READOUTS)
        if self.readout_kind == "maxout" and not (self.context == "last_state"
                                                  or self.attention_kind == "bahdanau"):
            raise ValueError("readout='maxout' is the deep output of Cho et al. (2014) and "
                             "Bahdanau et al. (2015), which reads [state; E y_{t-1}; c]: it "
                             "needs a context c in the readout, context='last_state' or "
                             "context='attention' with attention='bahdanau' "
                             "(context='initial_state' has no c; Luong's attention has its "
                             "own output layer h~_t)")
        #: l of the maxout layer (2l pre-activations); the paper's 500 for 1000 units
        self.maxout_size = (None if self.readout_kind == "linear" else
                            max(1, H // 2) if maxout_size is None
                            else positive("maxout_size", maxout_size))
        g = make_generator(seed, generator)

        self.encoder = Encoder(self.src_vocab_size, E, H, cell=cell, num_layers=num_layers,
                               bidirectional=bidirectional, dropout=dropout, pad_id=pad_id,
                               reverse_source=reverse_source, generator=g)
        self.embedding = nn.Embedding(self.tgt_vocab_size, E, padding_idx=self.pad_id)
        init_embedding(self.embedding, g)
        self.dropout = nn.Dropout(dropout)
        extra = H if (self.context == "last_state" or self.attention_kind == "bahdanau"
                      or self.input_feeding) else 0
        self.rnn = make_rnn(cell, E + extra, H, self.num_layers, dropout=dropout, generator=g)
        self.attn: nn.Module | None = None
        self.bridge: nn.Linear | None = None
        if self.context == "last_state":
            self.bridge = nn.Linear(H, H)  # h_0 = tanh(V c)
            self.readout = self._output_layer(H + E + H, g)
        elif self.context == "initial_state":
            self.readout = nn.Linear(H, self.tgt_vocab_size)
        elif self.attention_kind == "bahdanau":
            self.attn = AdditiveAttention(H, H, H, g)
            self.readout = self._output_layer(H + E + H, g)
        else:
            self.attn = MultiplicativeAttention(self.attention_kind, H, H, g)
            self.combine = nn.Linear(2 * H, H, bias=False)  # W_c of Luong's eq. 5
            init_linear(self.combine, g)
            self.readout = nn.Linear(H, self.tgt_vocab_size)
        if self.bridge is not None:
            init_linear(self.bridge, g)
        init_linear(self.readout, g)

    def _output_layer(self, features: int, generator: torch.Generator) -> nn.Linear:
        """The last layer of the readout of ``features`` inputs: the linear readout itself, or
        with ``readout='maxout'`` ``W_o`` (Cho: ``G``) over the ``l`` maxout units, after
        creating (and initialising) the deep output's first map ``self.deep_output`` (Bahdanau:
        ``[U_o V_o C_o]``, Cho: ``[O_h O_y O_c]``) of the ``features`` inputs into ``2l``."""
        if self.maxout_size is None:
            return nn.Linear(features, self.tgt_vocab_size)
        self.deep_output = nn.Linear(features, 2 * self.maxout_size)
        init_linear(self.deep_output, generator)
        return nn.Linear(self.maxout_size, self.tgt_vocab_size)

    def _read_out(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the readout's inputs (``[state; E y_{t-1}; c]``, any leading axes): the
        linear readout, or the deep output with maxout (module docstring)."""
        x = self.dropout(features)
        if self.maxout_size is None:
            return affine(self.readout, x)
        return affine(self.readout, maxout(affine(self.deep_output, x), self.maxout_size))

    # ---------------------------------------------------------------- checks
    def check_source(self, src: object, src_lengths: object) -> tuple[torch.Tensor, torch.Tensor]:
        src = check_ids("src", src, self.src_vocab_size)
        lengths = check_lengths("src_lengths", src_lengths, src.shape[0], src.shape[1],
                                self.max_source_length, "max_source_length")
        return src, lengths

    def check_target(self, tgt: object, batch: int) -> torch.Tensor:
        tgt = check_ids("tgt", tgt, self.tgt_vocab_size)
        if tgt.shape[0] != batch:
            raise ValueError(f"tgt has {tgt.shape[0]} sequences but src has {batch}")
        if tgt.shape[1] > self.max_target_length:
            raise ValueError(f"tgt has {tgt.shape[1]} steps, beyond the model's "
                             f"max_target_length={self.max_target_length}")
        return tgt

    # ---------------------------------------------------------------- decoding protocol
    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The memory the decoder reads, a tuple of batch-first tensors: ``(outputs, mask, keys,
        context, h_0[, c_0])`` (``keys`` and ``context`` are 0-width when unused)."""
        src, lengths = self.check_source(src, src_lengths)
        out, mask, final = self.encoder(src, lengths)
        B = out.shape[0]
        empty = out.new_zeros(B, 0)
        keys = self.attn.keys(out) if self.attn is not None else out.new_zeros(B, 1, 0)
        if self.context == "last_state":
            c = final[0][:, -1]
            h0 = torch.tanh(self.bridge(c))[:, None].expand(B, self.num_layers, -1)
            init = (h0.contiguous(), *tuple(torch.zeros_like(h0) for _ in final[1:]))
            return (out, mask, keys, c, *init)
        return (out, mask, keys, empty, *tuple(final))

    def initial_state(self, memory: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``(h, [c,] feed)`` batch first: ``(B, L, H)`` each, and Luong's ``h~`` ``(B, H)``
        (0-width without input feeding)."""
        parts = memory[4:]
        B = parts[0].shape[0]
        feed = parts[0].new_zeros(B, self.hidden_size if self.input_feeding else 0)
        return (*tuple(parts), feed)

    def start_tokens(self, memory: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.full((memory[0].shape[0],), self.bos_id, dtype=torch.long,
                          device=memory[0].device)

    def num_outputs(self, memory: tuple[torch.Tensor, ...]) -> int:
        return self.tgt_vocab_size

    def beams_share_memory(self) -> bool:
        """Whether beam search may keep one copy of the memory per sentence for its ``K`` rows
        (row ``n`` reads sentence ``n // K``): Bahdanau attention does
        (:meth:`AdditiveAttention.attend`, ``K`` times less source to read per step); the other
        contexts read one memory row per decoder row, so beam search repeats every part."""
        return self.attention_kind == "bahdanau"

    def decode_lengths(self, memory: tuple[torch.Tensor, ...], max_len: int | None
                       ) -> torch.Tensor:
        limit = self.max_target_length if max_len is None else check_int(
            "max_len", max_len, low=1, high=self.max_target_length)
        return torch.full((memory[0].shape[0],), limit, dtype=torch.long)

    def step(self, prev: torch.Tensor, state: tuple[torch.Tensor, ...],
             memory: tuple[torch.Tensor, ...], *, normalize: bool = True
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        """One decoder step for decoding: log-probabilities ``(N, V)`` (``pad`` and ``bos``
        excluded: they are never targets), the new state, the attention ``(N, S)`` or None.
        ``normalize=False`` returns the logits instead (``-inf`` on ``pad`` and ``bos``), whose
        ``log_softmax`` are those log-probabilities: beam search's C++ kernel normalises only
        the candidates it keeps (rnnlab.seq2seq.decoding.beam_step)."""
        logits, state, attn = self._step(prev, state, memory)
        never = [self.pad_id] if self.bos_id == self.eos_id else [self.pad_id, self.bos_id]
        # in place: the readout's fresh output (its backward does not need it)
        logits.index_fill_(1, torch.tensor(never, device=logits.device), -math.inf)
        return (torch.log_softmax(logits, dim=-1) if normalize else logits), state, attn

    # ---------------------------------------------------------------- the decoder
    def _rnn(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The decoder RNN on ``x`` ``(B, T, D)`` from batch-first state parts ``(B, L, H)``."""
        hx = tuple(s.transpose(0, 1).contiguous() for s in state)
        out, new = self.rnn(x, hx if self.cell == "lstm" else hx[0])
        new = new if isinstance(new, tuple) else (new,)
        return out, tuple(s.transpose(0, 1) for s in new)

    def _step(self, prev: torch.Tensor, state: tuple[torch.Tensor, ...],
              memory: tuple[torch.Tensor, ...]
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        out_enc, mask, keys, c = memory[:4]
        *rnn_state, feed = state
        e = self.dropout(self.embedding(prev))
        attn = None
        if self.context == "last_state":
            x = torch.cat([e, c], dim=-1)
        elif self.attention_kind == "bahdanau":
            s_prev = rnn_state[0][:, -1]
            # the source rows may be shared by G decoder rows each (beams_share_memory)
            attn, ctx = self.attn.attend(s_prev, keys, mask, out_enc)
            x = torch.cat([e, ctx], dim=-1)
        else:
            x = torch.cat([e, feed], dim=-1) if self.input_feeding else e
        out, rnn_state = self._rnn(x[:, None], tuple(rnn_state))
        s = out[:, 0]
        if self.context == "last_state":
            logits = self._read_out(torch.cat([s, e, c], dim=-1))
        elif self.context == "initial_state":
            logits = affine(self.readout, self.dropout(s))
        elif self.attention_kind == "bahdanau":
            # Bahdanau's deep output reads s_{t-1} (App. A.2.2); the linear readout s_t
            s_read = s if self.maxout_size is None else s_prev
            logits = self._read_out(torch.cat([s_read, e, ctx], dim=-1))
        else:
            attn = masked_softmax(self.attn.scores(s, keys), mask)
            ctx = torch.bmm(attn[:, None], out_enc)[:, 0]
            h_tilde = torch.tanh(affine(self.combine, torch.cat([ctx, s], dim=-1)))
            logits = affine(self.readout, self.dropout(h_tilde))
            if self.input_feeding:
                feed = h_tilde
        return logits, (*tuple(rnn_state), feed), attn

    def _parallel(self, inp: torch.Tensor, state: tuple[torch.Tensor, ...],
                  memory: tuple[torch.Tensor, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All steps at once under teacher forcing, where no step's input depends on the
        previous step's output (every context but Bahdanau's and input feeding)."""
        out_enc, mask, keys, c = memory[:4]
        e = self.dropout(self.embedding(inp))
        T = inp.shape[1]
        if self.context == "last_state":
            cT = c[:, None].expand(-1, T, -1)
            out, _ = self._rnn(torch.cat([e, cT], dim=-1), state[:-1])
            return self._read_out(torch.cat([out, e, cT], dim=-1)), None
        out, _ = self._rnn(e, state[:-1])
        if self.context == "initial_state":
            return self.readout(self.dropout(out)), None
        attn = masked_softmax(self.attn.scores(out, keys), mask[:, None, :])
        ctx = torch.bmm(attn, out_enc)
        h_tilde = torch.tanh(self.combine(torch.cat([ctx, out], dim=-1)))
        return self.readout(self.dropout(h_tilde)), attn

    def decoder_input(self, tgt: torch.Tensor) -> torch.Tensor:
        """``[bos, tgt[:, :-1]]``."""
        bos = torch.full_like(tgt[:, :1], self.bos_id)
        return torch.cat([bos, tgt[:, :-1]], dim=1)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt: torch.Tensor, *,
                teacher_forcing: float = 1.0, generator: torch.Generator | None = None,
                step_by_step: bool = False) -> Seq2SeqOutput:
        memory = self.encode(src, src_lengths)
        tgt = self.check_target(tgt, memory[0].shape[0])
        p = check_number("teacher_forcing", teacher_forcing, low=0.0, high=1.0)
        inp = self.decoder_input(tgt)
        state = self.initial_state(memory)
        parallel = self.attention_kind != "bahdanau" and not self.input_feeding
        if p == 1.0 and parallel and not check_bool("step_by_step", step_by_step):
            logits, attn = self._parallel(inp, state, memory)
            return Seq2SeqOutput(logits, attn)
        g = make_generator(None, generator) if p < 1.0 else None
        logits_all, attn_all = [], []
        prev = inp[:, 0]
        for t in range(inp.shape[1]):
            if t > 0:
                prev = inp[:, t]
                if p < 1.0:  # scheduled sampling: the model's own sample with prob. 1 - p
                    probs = torch.softmax(logits_all[-1].detach().float(), dim=-1).cpu()
                    sample = torch.multinomial(probs, 1, generator=g)[:, 0]
                    coin = torch.rand(prev.shape[0], generator=g) >= p
                    prev = torch.where(coin.to(prev.device), sample.to(prev.device), prev)
            logits, state, attn = self._step(prev, state, memory)
            logits_all.append(logits)
            if attn is not None:
                attn_all.append(attn)
        return Seq2SeqOutput(torch.stack(logits_all, dim=1),
                             torch.stack(attn_all, dim=1) if attn_all else None)

    def loss(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt: torch.Tensor,
             tgt_lengths: torch.Tensor, *, label_smoothing: float = 0.0,
             teacher_forcing: float = 1.0, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Mean per-token cross-entropy (with label smoothing) over the valid target steps."""
        from rnnlab.seq2seq.training import sequence_loss

        out = self(src, src_lengths, tgt, teacher_forcing=teacher_forcing, generator=generator)
        lengths = check_lengths("tgt_lengths", tgt_lengths, tgt.shape[0], tgt.shape[1])
        return sequence_loss(out.logits, tgt, length_mask(lengths.to(tgt.device), tgt.shape[1]),
                             label_smoothing=label_smoothing)
