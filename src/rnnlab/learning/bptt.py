"""Backpropagation through time, full or truncated (Werbos 1990; Williams & Peng 1990).

Full BPTT unrolls the whole sequence and lets autograd compute ``dL/dtheta`` with
``L = sum_t e(t)``: O(N T) memory for the stored states and O(N^2 T) time.

Truncated BPTT with truncation ``k`` is the epochwise-chunk variant BPTT(k, k) of Williams &
Peng: the sequence is cut into chunks of ``k`` steps; the state is carried from chunk to chunk
but detached, so each chunk's loss is backpropagated through at most ``k`` steps and gradients
are written after every chunk. It equals full BPTT when ``k >= T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rnnlab._tree import tree_leaves as flatten_state
from rnnlab._tree import tree_map as map_state
from rnnlab._validation import check_positive_int, check_tensor
from rnnlab.cells.base import State
from rnnlab.learning.base import (
    LearningRule,
    check_reduction,
    clone_state,
    load_checked,
    saved_state_to,
    squared_error,
)


@dataclass
class SequenceResult:
    """What a rule returns for a whole sequence: outputs ``(batch, time, O)``, the summed loss
    (a float) and the final state (detached)."""

    outputs: torch.Tensor
    loss: float
    final_state: State


def _detach(state: State) -> State:
    return map_state(torch.Tensor.detach, state)


class BPTT(LearningRule):
    """Backpropagation through time for any network of the model protocol.

    The protocol (``ElmanRNN`` and ``RecurrentNetwork`` over any cell follow it):
    ``model(x, state0) -> (outputs, final_state)`` for ``(batch, time, D)`` inputs;
    ``model.cell(x_t, state) -> state`` and ``model.output(state) -> o_t`` for one step;
    ``initial_state(batch)``, ``check_input(x)``, ``check_state(state, batch)``, ``input_size``,
    ``output_size``, ``dtype`` and ``device``. A state is a tensor or a nested tuple of tensors
    (the LSTM's ``(h, c)``).

    Args:
        model: the network.
        truncation: None for full BPTT, or k >= 1 for truncated BPTT(k, k).
        reduction: ``"sum"`` (the course's loss) or ``"mean"`` over the batch.

    Two ways to use it:

    * ``rule.accumulate(x, y)``: a whole ``(batch, time, features)`` sequence at once.
    * ``rule.step(x_t, y_t)``: online, one step at a time; the graph of the current chunk is kept
      and backpropagated when it reaches ``truncation`` steps (``grad_ready`` is then True), or when
      ``rule.flush()`` is called (always needed for full BPTT).
    """

    def __init__(
        self, model: torch.nn.Module, truncation: int | None = None, reduction: str = "sum"
    ) -> None:
        missing = [name for name in ("cell", "output", "initial_state", "check_input",
                                     "check_state", "input_size", "output_size", "dtype",
                                     "device") if not hasattr(model, name)]
        if missing:
            raise TypeError(f"BPTT needs a model of the model protocol (ElmanRNN, "
                            f"RecurrentNetwork); {type(model).__name__} lacks {missing}")
        self.model = model
        self.truncation = None if truncation is None else check_positive_int(
            "truncation", truncation
        )
        self.reduction = check_reduction(reduction)
        self._h: State | None = None
        self._pending: torch.Tensor | None = None
        self._chunk_steps = 0
        self._grad_ready = False
        self.last_loss: torch.Tensor | None = None

    def _check_targets(self, y: torch.Tensor, x: torch.Tensor) -> None:
        m = self.model
        check_tensor("y", y, ndim=x.dim(), last_dim=m.output_size, dtype=m.dtype,
                     device=m.device)
        if y.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                f"targets of shape {tuple(y.shape)} do not match inputs of shape {tuple(x.shape)}"
            )

    # ---------------------------------------------------------------------------------------
    def accumulate(
        self, x: torch.Tensor, y: torch.Tensor, h0: State | None = None
    ) -> SequenceResult:
        """Add ``dL/dtheta`` for the sequences ``x`` ``(batch, time, D)`` with targets ``y``."""
        m = self.model
        m.check_input(x)
        self._check_targets(y, x)
        steps = x.shape[1]
        k = steps if self.truncation is None else self.truncation
        h = h0
        outputs, total = [], 0.0
        for start in range(0, steps, k):
            out, h = m(x[:, start : start + k], None if h is None else _detach(h))
            loss = squared_error(out, y[:, start : start + k], self.reduction)
            loss.backward()
            outputs.append(out.detach())
            total += float(loss.detach())
        return SequenceResult(torch.cat(outputs, dim=1), total, _detach(h))

    # ---------------------------------------------------------------------------------------
    @property
    def grad_ready(self) -> bool:
        return self._grad_ready

    def reset(self, batch_size: int | None = None, h0: State | None = None) -> None:
        """Start new sequences. Pending (not yet backpropagated) losses are dropped."""
        m = self.model
        if h0 is not None:
            if batch_size is None:
                leaves = flatten_state(h0)
                if not leaves or leaves[0].dim() == 0:
                    raise ValueError("h0 must be a (batch, features) tensor or a tuple of them")
                batch_size = leaves[0].shape[0]
            self._h = map_state(lambda t: t.detach().clone(), m.check_state(h0, batch_size))
        else:
            batch_size = 1 if batch_size is None else batch_size
            self._h = m.initial_state(batch_size)
        self._pending = None
        self._chunk_steps = 0
        self._grad_ready = False

    def step(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        """Advance one step, keeping the graph; backpropagate when a chunk is complete."""
        m = self.model
        check_tensor("x_t", x_t, ndim=2, last_dim=m.input_size, dtype=m.dtype,
                     device=m.device, layout="(batch, features)")
        self._begin_step(x_t, None if self._h is None else self._batch)
        h = m.cell(x_t, self._h)
        o = m.output(h)
        self.last_loss = None
        if y_t is not None:
            self._check_targets(y_t, x_t)
            loss = squared_error(o, y_t, self.reduction)
            self.last_loss = loss.detach()
            self._pending = loss if self._pending is None else self._pending + loss
        self._h = h
        self._chunk_steps += 1
        self._grad_ready = False
        if self.truncation is not None and self._chunk_steps >= self.truncation:
            self.flush()
        return o.detach()

    def flush(self) -> None:
        """Backpropagate the pending chunk's loss into ``.grad`` and detach the state."""
        if self._pending is not None:
            self._pending.backward()
        self._pending = None
        if self._h is not None:
            self._h = _detach(self._h)
        self._chunk_steps = 0
        self._grad_ready = True

    @property
    def _batch(self) -> int:
        return flatten_state(self._h)[0].shape[0]

    @property
    def state(self) -> State | None:
        return None if self._h is None else _detach(self._h)

    # ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The online state: ``{"kind": "BPTT", "state": the carried (detached) network state
        or None, "grad_ready": bool}``. Only between truncation chunks: a chunk in progress
        holds an autograd graph, which cannot be saved (``RuntimeError``)."""
        if self._chunk_steps:
            raise RuntimeError(f"BPTT is {self._chunk_steps} step(s) into a truncation chunk "
                               "(an autograd graph is pending): its state can be saved only "
                               "between chunks (after flush())")
        return {"kind": "BPTT", "state": clone_state(self._h), "grad_ready": self._grad_ready}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (for the same model); a state of another
        rule, shape or dtype raises ``ValueError`` and changes nothing."""
        load_checked(self, saved, ("state", "grad_ready"), self._load_state)

    def _load_state(self, saved: dict[str, Any]) -> None:
        state = saved["state"]
        if state is None:
            self._h = None
        else:
            batch = flatten_state(state)[0].shape[0]
            self.reset(batch, h0=saved_state_to(state, self.model.initial_state(batch)))
        self._pending, self._chunk_steps = None, 0
        self._grad_ready = bool(saved["grad_ready"])
