"""The C++ inference kernels of the decoders (``seq2seq_kernels.cpp``, ops ``rnnlab_seq2seq``).

* ``additive_energy(query (N, A), keys (N, S, A), v (A,)) -> (N, S)``: ``v^T tanh(q_n + k_ns)``
  per row and source position, vectorised over the attention size, without the ``(N, S, A)``
  temporary of the torch expression;
* ``additive_attention(query, keys, v, mask (N, S), values (N, S, D)) -> (attention, context)``:
  the same energies on the valid positions, their softmax over the source and the context
  ``sum_s a_s values_s`` in one pass;
* ``beam_topk(logp (B * Kt, V), scores (B, Kt) float64, n) -> (top, index)``: the ``n`` best
  float64 totals ``scores[b, k] + logp[b * Kt + k, t]`` per sentence, sorted, and their indices
  ``k * V + t``, without materialising the ``(B, Kt * V)`` totals.

No gradients (decoding only); CPU float32/float64. Built and loaded by
:class:`rnnlab._native.NativeOps` (compiled on first use; ``RNNLAB_FUSED=0`` or a failed build
leaves the torch expressions in charge, which compute the same functions: see
:func:`rnnlab.seq2seq._common.additive_energy` and :func:`rnnlab.seq2seq.decoding.top_candidates`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rnnlab._native import NativeOps

NATIVE = NativeOps("rnnlab_seq2seq", [Path(__file__).with_name("seq2seq_kernels.cpp")],
                   fallback="the seq2seq attention and beam selection run as torch expressions")


def inference_ops(*tensors: torch.Tensor) -> Any | None:
    """``torch.ops.rnnlab_seq2seq`` when the kernels apply: every tensor on the CPU in float32 or
    float64, none of them needing a gradient, native code on and built; else None."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return NATIVE.ops() if NATIVE.usable(*tensors) else None


__all__ = ["NATIVE", "inference_ops"]
