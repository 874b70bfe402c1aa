"""The one reservoir step, shared by every torch loop of the package.

The leaky-integrator update (Jaeger 2001; Jaeger, Lukosevicius, Popovici & Siewert 2007), with
the per-unit gain ``g`` and shift ``s`` of intrinsic plasticity (Schrauwen et al. 2008) and
``f`` the unit non-linearity (``tanh``, or the logistic ``sigmoid`` of Triesch 2005)::

    net(t) = drive(t) + W x(t-1)                 drive(t) = W_in u(t) + bias (+ W_fb y(t-1))
    y(t)   = f(g net(t) + s)
    x(t)   = (1 - a) x(t-1) + a y(t)              (torch.lerp(x(t-1), y(t), a))

Split into its three parts (:func:`net_input`, :func:`activate`, :func:`integrate`) because the
intrinsic-plasticity loop needs ``net`` and ``y`` themselves; :func:`step` composes them, with
an ``out=`` form that writes the state into preallocated memory (the eager loop without
autograd and the CUDA-graph recording). Users: :meth:`EchoStateNetwork.recur
<rnnlab.reservoir.esn.EchoStateNetwork.recur>` (dense and CSR), the CUDA-graph replay
(:mod:`rnnlab.reservoir.cuda_graphs`) and :mod:`rnnlab.reservoir.plasticity`. The numba
kernels (:mod:`rnnlab.reservoir._numba`) compile the same equation in their own loop (tests
hold them to this one).
"""

from __future__ import annotations

import torch

ACTIVATIONS = ("tanh", "logistic")


def check_activation(activation: str) -> str:
    """``activation`` if it is one of :data:`ACTIVATIONS`, else a ``ValueError``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def net_input(drive_t: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
              sparse: bool = False) -> torch.Tensor:
    """``drive(t) + W x(t-1)``, ``(batch, N)``. ``weight`` is W transposed (dense, ``sparse``
    False: one ``addmm``) or W itself as a ``torch.sparse_csr`` tensor (``sparse`` True:
    ``(W x^T)^T``, CSR times a dense ``(N, batch)`` block)."""
    if sparse:
        return torch.addmm(drive_t.t(), weight, x.t()).t()
    return torch.addmm(drive_t, x, weight)


def activate(net: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor, plain: bool,
             activation: str = "tanh", out: torch.Tensor | None = None) -> torch.Tensor:
    """``y = f(g net + s)``; ``plain``: g = 1 and s = 0 (skips the multiply-add, which would
    not change a value). With ``out`` the result is written there; ``out=net`` is in place."""
    pre = net if plain else torch.addcmul(shift, gain, net)
    fn = torch.sigmoid if activation == "logistic" else torch.tanh
    if out is None:
        return fn(pre)
    return fn(pre, out=out)


def integrate(x: torch.Tensor, y: torch.Tensor, leak: torch.Tensor, full_leak: bool,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """``(1 - a) x + a y`` (``torch.lerp``); ``full_leak``: a = 1, the state is ``y``."""
    if full_leak:
        return y if out is None else out.copy_(y)
    if out is None:
        return torch.lerp(x, y, leak)
    return torch.lerp(x, y, leak, out=out)


def step(drive_t: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, gain: torch.Tensor,
         shift: torch.Tensor, leak: torch.Tensor, plain: bool, full_leak: bool,
         out: torch.Tensor | None = None, *, activation: str = "tanh",
         sparse: bool = False) -> torch.Tensor:
    """One reservoir step x(t-1) -> x(t) (module docstring); ``weight`` as in
    :func:`net_input`. ``out=None`` builds new tensors (and records autograd); with ``out``
    ``(batch, N)`` (a strided view is fine, and so is the memory of ``drive_t``, which is read
    first) the state is written there. The dense form then writes the non-linearity into the
    matmul's result and the leak straight into ``out`` (no other temporary), and returns
    ``out``; the CSR form computes a new state, copies it into ``out`` and returns the new
    tensor."""
    net = net_input(drive_t, x, weight, sparse)
    if out is None or sparse:
        y = activate(net, gain, shift, plain, activation)
        new = integrate(x, y, leak, full_leak)
        if out is not None:
            out.copy_(new)
        return new
    if full_leak:
        return activate(net, gain, shift, plain, activation, out=out)
    pre = net if plain else torch.addcmul(shift, gain, net)
    y = pre.sigmoid_() if activation == "logistic" else pre.tanh_()
    return torch.lerp(x, y, leak, out=out)
