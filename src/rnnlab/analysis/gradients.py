"""Gradient diagnostics: how far back in time a gradient reaches, and how large it is.

State Jacobians (Bengio, Simard & Frasconi 1994; Hochreiter 1991; Pascanu, Mikolov & Bengio 2013).
For the Elman RNN ``h(s) = tanh(U x(s) + W h(s-1) + b)`` the Jacobian of one step is
``dh(s)/dh(s-1) = diag(1 - h(s)^2) W``, so by the chain rule::

    dh(t)/dh(t - tau) = prod_{s = t, t-1, ..., t-tau+1} diag(1 - h(s)^2) W

(the factor for s = t on the left). Every gradient that BPTT sends from a loss at time t to the
state, and hence to the weights, at time t - tau goes through this matrix, so its norm against
tau shows vanishing (geometric decay) or exploding (geometric growth) gradients. Since
``|1 - h^2| <= 1``, ``||dh(t)/dh(t-tau)|| <= ||W||^tau``: with ``||W|| < 1`` it must vanish;
with ``rho(W) > 1`` it may explode (Pascanu et al. 2013, sec. 2.1).

:func:`state_jacobians` computes the matrices with autograd for any model exposing the cell
protocol ``model.cell(x_t, state) -> state`` and ``model.initial_state(batch)``, so it needs no
closed form and applies unchanged to gated cells whose state is a tuple ``(h, c)``.

:class:`GradientNormTracker` records ``||dL/dtheta||`` per parameter (or per group) and in total
at every training step, with one host transfer per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rnnlab._tree import TreeLayout
from rnnlab._validation import (
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    check_tensor,
)

State = torch.Tensor | tuple[Any, ...]  # a tensor or a nested tuple of tensors

# The matrix norms torch.linalg.matrix_norm accepts.
MATRIX_NORMS: tuple[Any, ...] = ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf)


# ----------------------------------------------------------------------------------------------
# State Jacobians
# ----------------------------------------------------------------------------------------------
def _check_lags(lags: Iterable[int], t: int) -> list[int]:
    if isinstance(lags, int) and not isinstance(lags, bool):
        lags = [lags]
    out = []
    for tau in lags:
        tau = check_int("every lag", tau)
        if tau < 0:
            raise ValueError(f"lags must be >= 0, got lag {tau}")
        if tau > t:
            raise ValueError(
                f"lag tau={tau} is longer than the sequence up to t={t}: dh(t)/dh(t - tau) needs "
                f"t - tau >= 0 (h(0) is the initial state)"
            )
        out.append(tau)
    if not out:
        raise ValueError("lags is empty: give at least one lag tau")
    return out


def state_jacobians(
    model: nn.Module,
    x: torch.Tensor,
    lags: Iterable[int],
    t: int | None = None,
    *,
    h0: State | None = None,
    component: int | None = None,
    vectorize: bool = True,
) -> torch.Tensor:
    """The Jacobians ``dh(t)/dh(t - tau)`` for every ``tau`` in ``lags``, per sequence.

    Time is counted as in the course: ``h(0)`` is the initial state (``h0``, default
    ``model.initial_state(batch)``) and ``h(s) = model.cell(x(s), h(s-1))`` for ``s = 1..T``, with
    ``x(s) = x[:, s-1]``. ``t`` (1-based, default ``T``) is the step whose state is
    differentiated; ``0 <= tau <= t`` (``tau = t`` differentiates with respect to ``h(0)``,
    ``tau = 0`` gives the identity). A lag with ``tau > t`` raises ``ValueError``.

    Method: reverse-mode accumulation (the backward pass of BPTT, run on matrices). With
    ``G(s) = dh(t)/dh(s)`` and ``G(t) = I``, ``G(s-1) = G(s) dh(s)/dh(s-1)``; each step is one
    vector-Jacobian product of ``model.cell`` (``torch.func.vjp``) vectorized over the rows of
    ``G`` (``torch.func.vmap``; ``vectorize=False`` loops over rows instead, for cells that vmap
    cannot trace). The cell acts on each sequence separately, so one vjp over the batch gives the
    per-sequence products. Cost: ``max(lags)`` steps of ``S`` vjps each, ``S`` the state size.

    Tuple states (gated cells, e.g. ``(h, c)``; nested tuples for stacked layers): the Jacobian
    is that of the whole state, its tensors flattened and concatenated depth first
    (``component=None``, the default), which is the matrix whose products carry the gradient
    back in time; ``component=i`` returns the diagonal block of the ``i``-th tensor in that order
    (e.g. ``0`` for the h of ``(h, c)``): ``d state_i(t) / d state_i(t-tau)`` with the other
    tensors at ``t - tau`` held fixed. For a plain tensor state (Elman) ``component`` must be
    None or 0.

    Args:
        model: exposes ``cell(x_t, state) -> state`` and ``initial_state(batch) -> state``, or
            is itself a cell module (``model(x_t, state) -> state``, ``initial_state``).
        x: inputs ``(batch, time, features)``.
        lags: the lags tau (ints).
        t: the step differentiated, ``1 <= t <= T``; default ``T``.

    Returns:
        ``(batch, len(lags), S, S)``, detached, in the dtype and on the device of the state.
    """
    check = getattr(model, "check_input", None)
    if callable(check):
        check(x)
    else:
        check_tensor("x", x, ndim=3, layout="(batch, time, features)")
    batch, steps = x.shape[0], x.shape[1]
    if t is None:
        t = steps
    t = check_positive_int("t", t)
    if t > steps:
        raise ValueError(f"t={t} is past the end of the sequence (T={steps} steps)")
    lags = _check_lags(lags, t)

    cell = getattr(model, "cell", None)
    if cell is None and callable(model):
        cell = model  # a bare cell module: cell(x_t, state) -> state
    if not callable(cell) or not callable(getattr(model, "initial_state", None)):
        raise TypeError(
            f"{type(model).__name__} does not follow the cell protocol: it needs "
            "cell(x_t, state) (or to be the cell) and initial_state(batch)"
        )
    state = model.initial_state(batch) if h0 is None else h0
    layout = TreeLayout(state)
    if component is not None:
        component = check_int("component", component)
        if not 0 <= component < len(layout.sizes):
            raise ValueError(
                f"component={component} but the state has {len(layout.sizes)} tensor(s)"
            )
    flat = layout.concat(state, "model.initial_state").detach()
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("the initial state h0 contains non-finite values")

    # Forward pass: keep the (detached) states h(t - max_lag - 1 .. t - 1), the points at which
    # the step Jacobians are evaluated.
    first = t - max(lags)  # earliest state needed as a Jacobian's column index
    stored: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for s in range(1, t + 1):
            if s - 1 >= first:
                stored[s - 1] = flat
            flat = layout.concat(cell(x[:, s - 1], layout.split(flat)), "model.cell's state")

    lo, hi = (0, layout.total) if component is None else (
        layout.offsets[component], layout.offsets[component + 1]
    )
    rows = hi - lo
    eye = torch.eye(layout.total, dtype=flat.dtype, device=flat.device)[lo:hi]
    g = eye.unsqueeze(0).expand(batch, rows, layout.total).contiguous()  # G(t) rows, (B, R, S)
    wanted = {t - tau for tau in lags}
    found: dict[int, torch.Tensor] = {}
    if t in wanted:
        found[t] = g[:, :, lo:hi].clone()
    # The outer no_grad keeps autograd from recording the parameters; torch.func.vjp still
    # differentiates with respect to its own input.
    with torch.no_grad():
        for s in range(t, first, -1):
            x_s = x[:, s - 1]

            def step(prev: torch.Tensor, x_s: torch.Tensor = x_s) -> torch.Tensor:
                return layout.concat(cell(x_s, layout.split(prev)), "model.cell's state")

            _, pull = torch.func.vjp(step, stored[s - 1])
            if vectorize:
                g = torch.func.vmap(lambda v, pull=pull: pull(v)[0], in_dims=1, out_dims=1)(g)
            else:
                g = torch.stack([pull(g[:, r])[0] for r in range(rows)], dim=1)
            if s - 1 in wanted:
                found[s - 1] = g[:, :, lo:hi].clone()
    return torch.stack([found[t - tau] for tau in lags], dim=1)


def state_jacobian_norms(
    model: nn.Module,
    x: torch.Tensor,
    lags: Iterable[int],
    t: int | None = None,
    ord: str | float = "fro",
    *,
    h0: State | None = None,
    component: int | None = None,
    vectorize: bool = True,
) -> torch.Tensor:
    """``||dh(t)/dh(t - tau)||`` for every ``tau`` in ``lags``: a ``(batch, len(lags))`` tensor.

    ``ord`` is any matrix norm of ``torch.linalg.matrix_norm``: ``"fro"`` (Frobenius, default),
    ``2`` (spectral norm: the largest factor by which the Jacobian can stretch a gradient),
    ``"nuc"``, ``1``, ``inf``... The Jacobians, the time convention (``1 <= t <= T``,
    ``0 <= tau <= t``), tuple states and the other arguments are those of
    :func:`state_jacobians`.
    """
    check_choice("ord", ord, MATRIX_NORMS)
    jac = state_jacobians(model, x, lags, t, h0=h0, component=component, vectorize=vectorize)
    return torch.linalg.matrix_norm(jac, ord=ord)


# ----------------------------------------------------------------------------------------------
# Gradient-norm tracking
# ----------------------------------------------------------------------------------------------
def _norm_dtype(device: torch.device) -> torch.dtype:
    # float64 accumulation keeps exploding (but finite) float32 gradients from overflowing
    # to inf in the sum of squares; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


class GradientNormTracker:
    """Records ``||dL/dtheta||`` per parameter (or per group of parameters) and in total.

    Call :meth:`record` after the gradients are written (after ``backward()`` or a learning
    rule's step, before clipping and ``optimizer.zero_grad``). Each call computes one norm per
    parameter on its device, the group and total norms from those (``||(g_1, ..., g_k)||_p =
    ||(||g_1||_p, ..., ||g_k||_p)||_p``), and moves the results to the host once: one device
    synchronisation per recorded step, not one per parameter. ``every=k`` records only every
    k-th call.

    Args:
        params: an ``nn.Module`` (its ``named_parameters()``), a mapping or iterable of
            ``(name, parameter)`` pairs, or an iterable of parameters (named ``"0"``, ``"1"``...).
            Parameters with ``requires_grad=False`` are left out.
        groups: optional ``{group: [parameter names]}``; then one column per group instead of
            one per parameter (a parameter may belong to several groups; the total always covers
            every tracked parameter).
        norm_type: p of the vector p-norm (2 by default; ``math.inf`` for the max-norm).
        every: record every ``every``-th call.

    A parameter whose ``.grad`` is None counts as a zero gradient. Non-finite gradients give
    non-finite norms, recorded as they are (that is the diagnostic).

    ``history`` is a list of dicts ``{"step": k, <column>: norm, ..., "total": norm}``.
    """

    def __init__(
        self,
        params: nn.Module | Mapping[str, torch.Tensor] | Iterable[Any],
        groups: Mapping[str, Sequence[str]] | None = None,
        norm_type: float = 2.0,
        every: int = 1,
    ) -> None:
        named = self._named(params)
        if not named:
            raise ValueError("no parameters to track (none given, or none requires grad)")
        self.names = [n for n, _ in named]
        self._params = [p for _, p in named]
        # p > 0, inf for the max-norm
        self.norm_type = check_number("norm_type", norm_type, low=0.0, low_open=True,
                                      allow_inf=True)
        self.every = check_positive_int("every", every)
        self.groups: dict[str, list[int]] | None = None
        if groups is not None:
            if not isinstance(groups, Mapping) or not groups:
                raise ValueError("groups must be a non-empty mapping {group: [parameter names]}")
            index = {n: i for i, n in enumerate(self.names)}
            self.groups = {}
            for group, members in groups.items():
                if isinstance(members, str):
                    members = [members]
                unknown = [m for m in members if m not in index]
                if unknown:
                    raise ValueError(
                        f"group {group!r} names unknown parameters {unknown}; tracked: "
                        f"{self.names}"
                    )
                if not members:
                    raise ValueError(f"group {group!r} is empty")
                self.groups[str(group)] = [index[m] for m in members]
        self.columns = list(self.groups) if self.groups is not None else list(self.names)
        clash = {"step", "total"} & set(self.columns)
        if clash:
            raise ValueError(f"column names {sorted(clash)} are reserved; rename them")
        self.history: list[dict[str, float]] = []
        self._calls = 0

    @staticmethod
    def _named(params: Any) -> list[tuple[str, torch.Tensor]]:
        if isinstance(params, nn.Module):
            items = list(params.named_parameters())
        elif isinstance(params, Mapping):
            items = list(params.items())
        elif isinstance(params, torch.Tensor):
            items = [("0", params)]
        else:
            items = []
            for i, item in enumerate(params):
                if isinstance(item, torch.Tensor):
                    items.append((str(i), item))
                elif isinstance(item, tuple) and len(item) == 2 and isinstance(
                    item[1], torch.Tensor
                ):
                    items.append((str(item[0]), item[1]))
                else:
                    raise TypeError(
                        "params must be a module, a mapping or iterable of (name, tensor) pairs, "
                        f"or an iterable of tensors; got an item of type {type(item).__name__}"
                    )
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(f"parameter names must be unique, got {names}")
        return [(n, p) for n, p in items if p.requires_grad]

    def norms(self) -> torch.Tensor:
        """Current norms as a tensor on the parameters' device: the columns, then the total."""
        p = self.norm_type
        device = self._params[0].device
        dtype = _norm_dtype(device)
        per = torch.stack([
            torch.linalg.vector_norm(q.grad, p, dtype=dtype).to(device)
            if q.grad is not None else torch.zeros((), dtype=dtype, device=device)
            for q in self._params
        ])
        total = torch.linalg.vector_norm(per, p)
        if self.groups is None:
            cols = per
        else:
            cols = torch.stack([
                torch.linalg.vector_norm(per[idx], p) for idx in self.groups.values()
            ])
        return torch.cat([cols, total.unsqueeze(0)])

    def record(self, step: int | None = None) -> dict[str, float] | None:
        """Record the current gradient norms; return the new row (None when skipped by
        ``every``). ``step`` defaults to the number of calls so far (0-based)."""
        call = self._calls
        self._calls += 1
        if call % self.every:
            return None
        values = self.norms().tolist()  # the one host transfer
        row: dict[str, float] = {"step": call if step is None else step}
        row.update(zip(self.columns, values[:-1], strict=True))
        row["total"] = values[-1]
        self.history.append(row)
        return row

    def to_rows(self) -> list[dict[str, float]]:
        """A copy of ``history``: one dict per recorded step, ready for ``csv.DictWriter``."""
        return [dict(r) for r in self.history]

    def as_tensor(self) -> torch.Tensor:
        """``(recorded steps, len(columns) + 1)`` float64: the columns, then the total."""
        keys = [*self.columns, "total"]
        return torch.tensor([[r[k] for k in keys] for r in self.history],
                            dtype=torch.float64).reshape(len(self.history), len(keys))

    def reset(self) -> None:
        """Forget the history and the call count."""
        self.history.clear()
        self._calls = 0
