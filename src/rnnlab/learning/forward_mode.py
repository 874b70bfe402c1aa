"""Exact RTRL for any cell, by forward-mode differentiation with ``torch.func``.

For a recurrent model with state ``s(t) = F(x(t), s(t-1); theta)`` (a tensor or a tuple of
tensors, flattened to one vector of size S per sample) and any readout ``o(t) = g(s(t))``,
RTRL carries ``M(t) = ds(t)/dtheta`` (S x P per sample) and updates it every step:

    M(t) = J_s(t) M(t-1) + J_theta(t),   J_s = dF/ds(t-1),  J_theta = dF/dtheta (immediate)
    de(t)/dtheta = (de(t)/ds(t))^T M(t)

(Williams & Zipser 1989, in the general form of e.g. Marschall, Cho & Savin 2020). ``J_s`` and
``J_theta`` come from one ``torch.func.jacrev`` of the transition, vmapped over the batch; the
product ``J_s M`` is one batched matmul. Per step: O(S^2 P) time and O(S P) memory per sample
(an LSTM of N units: S = 2N, P = 4N(N + D + 1)).

The model protocol: ``model.cell(x_t, state) -> state`` (pure: no in-place updates),
``model.initial_state(batch) -> state`` and ``model.output(state) -> o``. Parameters that the
transition depends on get their gradient through ``M``; all other parameters (the readout) get
theirs directly from autograd on the step's loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from rnnlab._tree import tree_concat, tree_leaves, tree_split
from rnnlab._validation import check_positive_int, check_tensor
from rnnlab.learning.base import (
    LearningRule,
    add_to_grad,
    check_reduction,
    check_saved_tensor,
    clone_state,
    load_checked,
    saved_state_to,
    squared_error,
)

State = torch.Tensor | tuple[torch.Tensor, ...]


def flatten_state(state: State) -> torch.Tensor:
    """Deprecated: ``rnnlab.cells.concat_state`` (this name returns a ``(batch, S)`` tensor,
    unlike ``rnnlab.cells.flatten_state``, which returns the list of leaves)."""
    warnings.warn(
        "rnnlab.learning.forward_mode.flatten_state is deprecated: write "
        "rnnlab.cells.concat_state(state) for the (batch, S) tensor (rnnlab.cells.flatten_state "
        "returns the list of leaves)", DeprecationWarning, stacklevel=2,
    )
    return tree_concat(state)


def unflatten_state(flat: torch.Tensor, like: State) -> State:
    """Deprecated: ``rnnlab.cells.split_state``, the inverse of ``concat_state``."""
    warnings.warn(
        "rnnlab.learning.forward_mode.unflatten_state is deprecated: write "
        "rnnlab.cells.split_state(flat, like)", DeprecationWarning, stacklevel=2,
    )
    return tree_split(flat, like)


class _Transition(nn.Module):
    """Presents ``model.cell`` as a module whose forward is the transition, so that
    ``functional_call`` can swap the model's parameters by name."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, state: State) -> State:
        return self.model.cell(x, state)


def recurrent_parameter_names(model: nn.Module, input_size: int) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters the transition uses,
    found by differentiating one step at a random input (autograd reports the unused ones)."""
    params = dict(model.named_parameters())
    ref = next(iter(params.values()))
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(2, input_size, generator=gen, dtype=ref.dtype).to(ref.device)
    state = model.initial_state(2)
    flat = tree_concat(state)
    flat = flat + 0.1 * torch.randn(flat.shape, generator=gen, dtype=ref.dtype).to(ref.device)
    state = tree_split(flat, state)
    with torch.enable_grad():
        out = tree_concat(model.cell(x, state)).sum()
        grads = torch.autograd.grad(out, list(params.values()), allow_unused=True)
    return [name for name, g in zip(params, grads, strict=True) if g is not None]


class CellRule(LearningRule):
    """What the forward-mode rules share: the cell protocol, the split of the parameters into
    recurrent ones (gradient through an influence estimate) and readout ones (direct gradient),
    input checks, the step's loss. Subclasses implement ``_reset_influence``, ``_advance``
    (new flat state, influence update) and ``_recurrent_gradient`` (``g^T M`` as one vector)."""

    def __init__(
        self,
        model: nn.Module,
        input_size: int | None = None,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        reduction: str = "sum",
    ) -> None:
        for attr in ("cell", "initial_state", "output"):
            if not hasattr(model, attr):
                raise TypeError(f"{type(model).__name__} has no {attr!r}: it does not follow the "
                                "cell protocol (cell, initial_state, output)")
        self.model = model
        self.input_size = check_positive_int(
            "input_size", input_size if input_size is not None else model.input_size
        )
        self.reduction = check_reduction(reduction)
        self.loss = loss
        self._transition = _Transition(model)
        self.parameter_names = recurrent_parameter_names(model, self.input_size)
        if not self.parameter_names:
            raise ValueError("the model's transition uses no parameters: nothing to learn online")
        names = set(self.parameter_names)
        self.readout_names = [n for n, _ in model.named_parameters() if n not in names]
        self._state: State | None = None
        self.last_loss: torch.Tensor | None = None

    @property
    def grad_ready(self) -> bool:
        return True

    @property
    def state(self) -> State | None:
        return self._state

    @property
    def n_parameters(self) -> int:
        """P: the number of recurrent parameters (columns of the influence matrix)."""
        return sum(self.model.get_parameter(n).numel() for n in self.parameter_names)

    def reset(self, batch_size: int | None = None, h0: State | None = None) -> None:
        batch_size = 1 if batch_size is None else check_positive_int("batch_size", batch_size)
        self._state = self.model.initial_state(batch_size) if h0 is None else h0
        flat = tree_concat(self._state).detach()
        if flat.shape[0] != batch_size:
            raise ValueError(f"h0 has batch size {flat.shape[0]}, expected {batch_size}")
        self._reset_influence(flat)

    def _params(self) -> dict[str, torch.Tensor]:
        return {f"model.{n}": self.model.get_parameter(n).detach() for n in self.parameter_names}

    def _single_step(self) -> Callable:
        """``f(params, x, s) -> s'`` for ONE sample (flat state), for ``torch.func``."""
        like = self._state

        def single(p: dict, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            state = tree_split(s.unsqueeze(0), like)
            return tree_concat(functional_call(self._transition, p, (x.unsqueeze(0), state)))[0]

        return single

    def _flat_params(self, per_param: dict[str, torch.Tensor], batch: int, rows: int = 0
                     ) -> torch.Tensor:
        """Concatenate ``{"model.name": (batch, [rows,] *shape)}`` into ``(batch, [rows,] P)``."""
        lead = (batch, rows) if rows else (batch,)
        return torch.cat([per_param[f"model.{n}"].reshape(*lead, -1)
                          for n in self.parameter_names], dim=-1)

    #: the attributes that hold the influence estimate (saved by ``state_dict``)
    _influence_keys: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """The online state: ``{"kind": class name, "state": the network state (a tensor or
        tuple of tensors, batch first) or None (not started), then one entry per influence
        attribute}`` (``ForwardModeRTRL``: ``influence``; ``UORO``: ``state_tilde``,
        ``theta_tilde``, ``generator`` (the sign generator's state); ``SnAp1``: ``values``);
        copies, in the model's dtype."""
        out: dict[str, Any] = {"kind": type(self).__name__, "state": clone_state(self._state)}
        for key in self._influence_keys:
            value = None if self._state is None else getattr(self, key)
            if isinstance(value, torch.Generator):
                value = value.get_state()
            elif value is not None:
                value = value.detach().clone()
            out[key] = value
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (for the same model), onto the model's
        device; a state of another rule, model size or dtype raises ``ValueError`` and
        changes nothing."""
        load_checked(self, saved, ("state", *self._influence_keys), self._load_state)

    def _load_state(self, saved: dict[str, Any]) -> None:
        state = saved["state"]
        if state is None:
            self._state, self.last_loss = None, None
            return
        batch = tree_leaves(state)[0].shape[0]
        self.reset(batch, h0=saved_state_to(state, self.model.initial_state(batch)))
        for key in self._influence_keys:
            current = getattr(self, key)
            if isinstance(current, torch.Generator):
                current.set_state(saved[key].cpu())
            else:
                setattr(self, key, check_saved_tensor(key, saved[key], current))

    def _reset_influence(self, flat: torch.Tensor) -> None:
        raise NotImplementedError

    def _advance(self, x_t: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _recurrent_gradient(self, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _loss(self, o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss is not None:
            return self.loss(o, y)
        return squared_error(o, y, self.reduction)

    def step(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        """Advance one step; with a target, add the step's (estimated) gradient to ``.grad``."""
        ref = self.model.get_parameter(self.parameter_names[0])
        check_tensor("x_t", x_t, ndim=2, last_dim=self.input_size, dtype=ref.dtype,
                     device=ref.device, layout="(batch, features)")
        batch = None if self._state is None else tree_leaves(self._state)[0].shape[0]
        self._begin_step(x_t, batch)
        flat = tree_concat(self._state).detach()
        with torch.no_grad():
            new_flat = self._advance(x_t, flat)
        new_state = tree_split(new_flat, self._state)
        self._state = new_state
        leaf = new_flat.detach().requires_grad_(True)
        with torch.enable_grad():
            o = self.model.output(tree_split(leaf, new_state))
            self.last_loss = None
            if y_t is not None:
                self._check_step_target(y_t, o)
                loss = self._loss(o, y_t)
                readout = [self.model.get_parameter(n) for n in self.readout_names]
                g_state = self._state_gradient(loss, leaf, readout)
                self.last_loss = loss.detach()
                with torch.no_grad():
                    total = self._recurrent_gradient(g_state)
                start = 0
                for name in self.parameter_names:
                    param = self.model.get_parameter(name)
                    add_to_grad(param, total[start : start + param.numel()].view_as(param))
                    start += param.numel()
        return o.detach()


class ForwardModeRTRL(CellRule):
    """Exact RTRL for any model following the cell protocol (LSTM, GRU, stacked, ...).

    Args:
        model: ``model.cell``, ``model.initial_state``, ``model.output`` as described above.
        input_size: D (default: ``model.input_size``).
        loss: ``loss(o_t, y_t) -> scalar`` summed over the batch; default the course's squared
            error (with ``reduction``).
        reduction: ``"sum"`` or ``"mean"`` over the batch for the default loss.

    ``rule.influence`` is ``M(t)``, ``(batch, S, P)``, columns ordered as
    ``rule.parameter_names`` (each parameter flattened row-major).
    """

    influence: torch.Tensor
    _influence_keys = ("influence",)

    def _reset_influence(self, flat: torch.Tensor) -> None:
        self.influence = flat.new_zeros(flat.shape[0], flat.shape[1], self.n_parameters)

    def _advance(self, x_t: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        single = self._single_step()

        def with_aux(p: dict, x: torch.Tensor, s: torch.Tensor):
            new = single(p, x, s)
            return new, new

        jac = vmap(jacrev(with_aux, argnums=(0, 2), has_aux=True), in_dims=(None, 0, 0))
        (j_params, j_state), new_flat = jac(self._params(), x_t, flat)
        j_theta = self._flat_params(j_params, flat.shape[0], rows=flat.shape[1])
        self.influence = torch.baddbmm(j_theta, j_state, self.influence)
        return new_flat

    def _recurrent_gradient(self, g: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bs,bsp->p", g, self.influence)
