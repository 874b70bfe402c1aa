"""Captioners: a convolutional encoder (``ConvEncoder``) and an LSTM decoder of the caption.

``ShowAndTell`` (Vinyals et al., "Show and tell: lessons learned from the 2015 MSCOCO image
captioning challenge", TPAMI 2016, Sec. 3.1, eqs. 10-12): the image is fed once, as the first
input of the LSTM, and the words follow::

    x_{-1} = LN(W_I CNN(I)),   x_t = W_e S_t  (t = 0..N-1, S_0 = bos),
    p_{t+1} = softmax(W_o LSTM(x_t))

(here ``CNN(I)`` is the flattened grid of region features, so the embedding keeps where things
are, as the fully connected layer of their CNN does; ``LN`` is a layer normalisation, Ba et al.
2016, that puts the image input on the unit scale of the word embeddings ``W_e S_t ~ N(0, 1)``
it shares the LSTM's input weights with).

``ShowAttendTell`` (Xu et al., "Show, attend and tell: neural image caption generation with
visual attention", ICML 2015, Sec. 3.1.2 and 4.2.1; soft, deterministic attention): over the
``L`` region features ``a_i`` of the encoder, at every word ``t``::

    e_ti = f_att(a_i, h_{t-1}) = w^T tanh(W_a a_i + W_h h_{t-1} + b)
    alpha_t = softmax_i(e_ti),      z_t = beta_t sum_i alpha_ti a_i,
    beta_t = sigmoid(f_beta(h_{t-1}))          (the gating scalar of Sec. 4.2.1; gate=False: 1)
    h_t, c_t = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p(y_t) = softmax(L_o tanh(E y_{t-1} + L_h h_t + L_z z_t))     (deep output, their eq. 7;
                                                                   deep_output=False: L_o h_t)
    h_0 = tanh(f_init,h(mean_i a_i)),  c_0 = tanh(f_init,c(mean_i a_i))

and the loss adds the doubly stochastic regulariser (their eq. 14)
``lambda sum_i (1 - sum_t alpha_ti)^2``, which asks every region to receive, summed over the
caption, about one unit of attention.

Captions are ``tokens (B, T)``: the ids followed by ``eos``, right-padded with ``pad``, and
``lengths (B,)`` counting the ``eos``; the decoder reads ``[bos, tokens[:, :-1]]`` and is causal,
so padding never changes a result. Both models follow the decoding protocol of
:mod:`rnnlab.seq2seq.decoding` (images as the source; its ``lengths`` are ignored), so
``greedy_decode`` and ``beam_search`` run on them unchanged.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

import rnnlab.nn as rnn
from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_int, check_number, check_positive_int
from rnnlab.captioning.encoder import ConvEncoder
from rnnlab.cells.base import uniform_init_
from rnnlab.seq2seq import sequence_loss

__all__ = ["CaptionOutput", "ShowAndTell", "ShowAttendTell"]


class CaptionOutput(NamedTuple):
    """``logits`` ``(B, T, V)``: position ``t`` predicts ``tokens[:, t]``; ``attention``
    ``(B, T, R)`` over the ``R`` regions (rows sum to one, zero rows on padding) or None."""

    logits: torch.Tensor
    attention: torch.Tensor | None


def _linear(n_in: int, n_out: int, g: torch.Generator, *, bias: bool = True,
            **kw: Any) -> nn.Linear:
    """``nn.Linear`` with torch's default bound ``1 / sqrt(n_in)``, drawn from ``g``."""
    layer = nn.Linear(n_in, n_out, bias=bias, **kw)
    with torch.no_grad():
        uniform_init_(layer.weight, 1.0 / math.sqrt(n_in), g)
        if bias:
            uniform_init_(layer.bias, 1.0 / math.sqrt(n_in), g)
    return layer


class _Captioner(nn.Module):
    """What both captioners share: the encoder, the word embedding, the checks, the loss and
    the decoding protocol around a model-specific ``_step`` / ``_teacher_forced``."""

    kind = ""

    def __init__(self, vocab_size: int, *, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
                 in_channels: int = 3, image_size: int = 64, grid: int = 8, channels: int = 16,
                 feature_size: int = 64, embed_size: int = 64, hidden_size: int = 128,
                 dropout: float = 0.0, max_caption_length: int = 32, seed: int | None = None,
                 generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.vocab_size = V = check_int("vocab_size", vocab_size, low=3)
        self.pad_id = check_int("pad_id", pad_id, low=0, high=V - 1)
        self.bos_id = check_int("bos_id", bos_id, low=0, high=V - 1)
        self.eos_id = check_int("eos_id", eos_id, low=0, high=V - 1)
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError(f"pad_id, bos_id and eos_id must differ, got {pad_id}, {bos_id}, "
                             f"{eos_id}")
        self.embed_size = E = check_positive_int("embed_size", embed_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.dropout_p = check_number("dropout", dropout, low=0.0, high=1.0, high_open=True)
        self.max_caption_length = check_positive_int("max_caption_length", max_caption_length)
        self._config = {"vocab_size": V, "pad_id": self.pad_id, "bos_id": self.bos_id,
                        "eos_id": self.eos_id, "in_channels": in_channels,
                        "image_size": image_size, "grid": grid, "channels": channels,
                        "feature_size": feature_size, "embed_size": E,
                        "hidden_size": self.hidden_size, "dropout": self.dropout_p,
                        "max_caption_length": self.max_caption_length}
        self._g = make_generator(seed, generator)
        self._kw = {"device": device, "dtype": dtype}
        self.encoder = ConvEncoder(in_channels, channels=channels, feature_size=feature_size,
                                   image_size=image_size, grid=grid, generator=self._g,
                                   **self._kw)
        self.embedding = nn.Embedding(V, E, padding_idx=self.pad_id, **self._kw)
        with torch.no_grad():  # N(0, 1) as torch's default, from the seed; pad row zero
            w = torch.randn(self.embedding.weight.shape, generator=self._g,
                            dtype=self.embedding.weight.dtype)
            w[self.pad_id] = 0.0
            self.embedding.weight.copy_(w)
        self.dropout = nn.Dropout(self.dropout_p)

    def _lstm(self, input_size: int) -> nn.Module:
        """A one-layer ``rnnlab.nn.LSTM``, batch first, without the per-call NaN scan (the entry
        points check their inputs once; a scan per decoder step would cost a host sync each)."""
        return rnn.LSTM(input_size, self.hidden_size, 1, batch_first=True, generator=self._g,
                        check_finite=False, **self._kw)

    @staticmethod
    def _run(lstm: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lstm`` over ``x (B, T, D)`` from ``(h, c)`` ``(B, H)`` each."""
        out, (h1, c1) = lstm(x, (h[None].contiguous(), c[None].contiguous()))
        return out, h1[0], c1[0]

    # ---------------------------------------------------------------- properties
    @property
    def num_regions(self) -> int:
        return self.encoder.num_regions

    @property
    def grid(self) -> int:
        return self.encoder.grid

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able): ``type(model)(**model.config())`` rebuilds
        the architecture."""
        return dict(self._config)

    # ---------------------------------------------------------------- checks
    def check_captions(self, tokens: object, lengths: object, batch: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` ``(batch, T)`` integer ids in ``[0, vocab_size)``, ``T <=
        max_caption_length``; ``lengths`` ``(batch,)`` integers in ``[1, T]``."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor of token ids, got "
                            f"{type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must hold integer token ids, got dtype {tokens.dtype}")
        if tokens.dim() != 2 or tokens.shape[0] != batch or tokens.shape[1] == 0:
            raise ValueError(f"tokens must have shape ({batch}, T) with T >= 1 (one caption per "
                             f"image), got {tuple(tokens.shape)}")
        if tokens.shape[1] > self.max_caption_length:
            raise ValueError(f"tokens has {tokens.shape[1]} steps, beyond the model's "
                             f"max_caption_length={self.max_caption_length}")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"tokens hold id {low if low < 0 else high} outside the "
                             f"vocabulary [0, {self.vocab_size})")
        if not isinstance(lengths, torch.Tensor):
            raise TypeError(f"lengths must be a torch.Tensor, got {type(lengths).__name__}")
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]:
            raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}] (the eos counted), got "
                             f"{int(lengths.min())}..{int(lengths.max())}")
        return tokens.long(), lengths.long().to(tokens.device)

    @staticmethod
    def _check_image_lengths(lengths: object, batch: int) -> None:
        if lengths is None:
            return
        if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point \
                or lengths.shape != (batch,):
            raise ValueError(f"the source lengths of images must be None or a ({batch},) "
                             "integer tensor (they are ignored: an image has no length)")

    # ---------------------------------------------------------------- decoding protocol
    def encode(self, images: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, ...]:
        """The memory the decoder reads: a tuple of batch-first tensors (model-specific)."""
        regions = self.encoder(images)
        self._check_image_lengths(lengths, regions.shape[0])
        return self._memory(regions)

    def initial_state(self, memory: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``(h_0, c_0)``, ``(B, hidden_size)`` each."""
        return (memory[-2], memory[-1])

    def start_tokens(self, memory: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.full((memory[0].shape[0],), self.bos_id, dtype=torch.long,
                          device=memory[0].device)

    def num_outputs(self, memory: tuple[torch.Tensor, ...]) -> int:
        return self.vocab_size

    def decode_lengths(self, memory: tuple[torch.Tensor, ...], max_len: int | None
                       ) -> torch.Tensor:
        limit = self.max_caption_length if max_len is None else check_int(
            "max_len", max_len, low=1, high=self.max_caption_length)
        return torch.full((memory[0].shape[0],), limit, dtype=torch.long)

    def step(self, prev: torch.Tensor, state: tuple[torch.Tensor, ...],
             memory: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        """One decoder step: log-probabilities ``(N, V)`` (``pad`` and ``bos`` excluded: they are
        never targets), the new state and the attention ``(N, R)`` (or None)."""
        logits, state, attn = self._step(prev, state, memory)
        never = torch.zeros(self.vocab_size, dtype=torch.bool, device=logits.device)
        never[self.pad_id] = True
        never[self.bos_id] = True
        return torch.log_softmax(logits.masked_fill(never, -math.inf), dim=-1), state, attn

    # ---------------------------------------------------------------- training
    def decoder_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[bos, tokens[:, :-1]]``."""
        return torch.cat([torch.full_like(tokens[:, :1], self.bos_id), tokens[:, :-1]], dim=1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
                ) -> CaptionOutput:
        """Teacher-forced logits ``(B, T, V)`` (and attention ``(B, T, R)``)."""
        memory = self.encode(images)
        tokens, lengths = self.check_captions(tokens, lengths, memory[0].shape[0])
        logits, attn = self._teacher_forced(self.decoder_input(tokens), memory)
        if attn is not None:  # zero rows on padding: no word is emitted there
            valid = torch.arange(tokens.shape[1], device=attn.device)[None, :] < lengths[:, None]
            attn = attn * valid[..., None].to(attn.dtype)
        return CaptionOutput(logits, attn)

    def loss(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, *,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy over the real tokens (``eos`` included, padding excluded), plus the
        model's regulariser divided by the same token count."""
        out = self(images, tokens, lengths)
        lengths = lengths.long().to(out.logits.device)
        mask = torch.arange(tokens.shape[1], device=lengths.device)[None, :] < lengths[:, None]
        ce = sequence_loss(out.logits, tokens.long(), mask, label_smoothing=label_smoothing)
        return ce + self._regulariser(out, mask)

    def _regulariser(self, out: CaptionOutput, mask: torch.Tensor) -> torch.Tensor:
        return out.logits.new_zeros(())

    # model-specific
    def _memory(self, regions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _step(self, prev: torch.Tensor, state: tuple[torch.Tensor, ...],
              memory: tuple[torch.Tensor, ...]
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        raise NotImplementedError

    def _teacher_forced(self, inp: torch.Tensor, memory: tuple[torch.Tensor, ...]
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class ShowAndTell(_Captioner):
    """Vinyals et al. (2016): the image embedding is the LSTM's first input (see the module
    docstring). ``forward(images, tokens, lengths) -> CaptionOutput(logits, None)``.

    Example::

        >>> m = ShowAndTell(10, image_size=16, grid=4, channels=4, feature_size=8,
        ...                 embed_size=8, hidden_size=16, seed=0)
        >>> m(torch.rand(2, 3, 16, 16), torch.tensor([[4, 5, 2], [6, 2, 0]]),
        ...   torch.tensor([3, 2])).logits.shape
        torch.Size([2, 3, 10])
    """

    kind = "show_and_tell"

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        R, F = self.encoder.num_regions, self.encoder.feature_size
        self.image_embedding = _linear(R * F, self.embed_size, self._g, **self._kw)  # W_I
        # x_{-1} on the scale of the N(0, 1) word embeddings it shares W_ih with: a smaller
        # image input left the LSTM on the image-blind language-model plateau in our runs
        self.image_norm = nn.LayerNorm(self.embed_size, **self._kw)
        self.rnn = self._lstm(self.embed_size)
        self.readout = _linear(self.hidden_size, self.vocab_size, self._g, **self._kw)

    def _memory(self, regions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(x_{-1}, h_0, c_0)``: the image embedding and the state after reading it."""
        x = self.dropout(self.image_norm(self.image_embedding(regions.flatten(1))))
        zero = x.new_zeros(x.shape[0], self.hidden_size)
        _, h, c = self._run(self.rnn, x[:, None], zero, zero)
        return (x, h, c)

    def _step(self, prev, state, memory):
        out, h, c = self._run(self.rnn, self.dropout(self.embedding(prev))[:, None], *state)
        return self.readout(self.dropout(out[:, 0])), (h, c), None

    def _teacher_forced(self, inp, memory):
        out, _, _ = self._run(self.rnn, self.dropout(self.embedding(inp)), memory[1], memory[2])
        return self.readout(self.dropout(out)), None


class ShowAttendTell(_Captioner):
    """Xu et al. (2015): soft attention over the encoder's grid of regions at every word, the
    gating scalar, the deep output and the doubly stochastic regulariser (see the module
    docstring). ``attention_size``: the width of ``f_att``; ``doubly_stochastic``: ``lambda``
    (0 switches the regulariser off). ``forward -> CaptionOutput(logits, attention (B, T, R))``.
    """

    kind = "show_attend_tell"

    def __init__(self, vocab_size: int, *, attention_size: int = 64, gate: bool = True,
                 deep_output: bool = True, doubly_stochastic: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        A = check_positive_int("attention_size", attention_size)
        self.gate = check_bool("gate", gate)
        self.deep_output = check_bool("deep_output", deep_output)
        self.doubly_stochastic = check_number("doubly_stochastic", doubly_stochastic, low=0.0)
        self._config.update(attention_size=A, gate=self.gate, deep_output=self.deep_output,
                            doubly_stochastic=self.doubly_stochastic)
        F, H, E, V, g, kw = (self.encoder.feature_size, self.hidden_size, self.embed_size,
                             self.vocab_size, self._g, self._kw)
        self.init_h = _linear(F, H, g, **kw)       # f_init,h
        self.init_c = _linear(F, H, g, **kw)       # f_init,c
        self.att_region = _linear(F, A, g, **kw)   # W_a (and b)
        self.att_hidden = _linear(H, A, g, bias=False, **kw)  # W_h
        self.att_score = _linear(A, 1, g, bias=False, **kw)   # w
        self.beta = _linear(H, 1, g, **kw) if self.gate else None  # f_beta
        self.rnn = self._lstm(E + F)
        if self.deep_output:
            self.out_hidden = _linear(H, E, g, **kw)              # L_h
            self.out_context = _linear(F, E, g, bias=False, **kw)  # L_z
            self.readout = _linear(E, V, g, **kw)                  # L_o
        else:
            self.readout = _linear(H, V, g, **kw)

    def _memory(self, regions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(a, W_a a + b, h_0, c_0)``."""
        mean = ConvEncoder.pooled(regions)
        return (regions, self.att_region(regions), torch.tanh(self.init_h(mean)),
                torch.tanh(self.init_c(mean)))

    def _attend(self, h: torch.Tensor, memory: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_t (N, F), alpha_t (N, R))`` from ``h_{t-1}``."""
        regions, keys = memory[0], memory[1]
        e = self.att_score(torch.tanh(keys + self.att_hidden(h)[:, None]))[..., 0]
        alpha = torch.softmax(e, dim=-1)
        z = torch.bmm(alpha[:, None], regions)[:, 0]
        if self.beta is not None:
            z = torch.sigmoid(self.beta(h)) * z
        return z, alpha

    def _step(self, prev, state, memory):
        h, c = state
        e = self.dropout(self.embedding(prev))
        z, alpha = self._attend(h, memory)
        out, h, c = self._run(self.rnn, torch.cat([e, z], dim=-1)[:, None], h, c)
        s = self.dropout(out[:, 0])
        if self.deep_output:
            logits = self.readout(self.dropout(torch.tanh(
                e + self.out_hidden(s) + self.out_context(z))))
        else:
            logits = self.readout(s)
        return logits, (h, c), alpha

    def _teacher_forced(self, inp, memory):
        state = self.initial_state(memory)
        logits, alphas = [], []
        for t in range(inp.shape[1]):  # attention reads h_{t-1}: one step at a time
            lg, state, alpha = self._step(inp[:, t], state, memory)
            logits.append(lg)
            alphas.append(alpha)
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)

    def _regulariser(self, out: CaptionOutput, mask: torch.Tensor) -> torch.Tensor:
        """``lambda sum_b sum_i (1 - sum_t alpha_bti)^2 / N_tokens`` (Xu et al. eq. 14 per
        caption, scaled like the token-mean cross-entropy: the per-caption sums of Xu et al.'s
        objective divided by the number of tokens)."""
        if self.doubly_stochastic == 0.0:
            return out.logits.new_zeros(())
        coverage = out.attention.sum(dim=1)  # padding rows are zero
        return self.doubly_stochastic * ((1.0 - coverage) ** 2).sum() / mask.sum()
