"""Average state entropy of a reservoir: Renyi's quadratic entropy of the units' activations.

Ozturk, Xu & Principe (2007), "Analysis and design of echo state networks", Neural Computation
19(1), measure the richness of a reservoir by the *average state entropy* (ASE); the deep ESN
literature (Gallicchio & Micheli 2017; Gallicchio, Micheli & Pedrelli 2017, "Deep reservoir
computing: a critical experimental analysis", Neurocomputing 268) uses it layer by layer. At
every time step ``t`` the M activations ``x_1(t) .. x_M(t)`` of the units are M samples of one
scalar distribution (the "instantaneous" entropy across units); its Renyi quadratic entropy
``H2 = -log integral p(x)^2 dx`` is estimated with a Gaussian Parzen window of width ``sigma``
(Principe 2010, "Information theoretic learning", ch. 2)::

    V(t)  = (1 / M^2) sum_{i,j} G_{sigma sqrt 2}(x_i(t) - x_j(t)),
    G_s(z) = exp(-z^2 / (2 s^2)) / (sqrt(2 pi) s),
    H2(t) = -log V(t),              ASE = (1 / T) sum_t H2(t).

(The convolution of two Gaussian windows of width sigma is one of width ``sigma sqrt 2``, so V
is the exact integral of the squared Parzen estimate.) Computed as
``H2 = log(2 sqrt(pi) sigma) + 2 log M - logsumexp_{i,j}(-(x_i - x_j)^2 / (4 sigma^2))`` in
float64, which does not underflow however far apart the samples are.

Kernel width. ``kernel_size=None`` (or ``"silverman"``) uses Silverman's rule of thumb at every
step, ``sigma(t) = 1.06 s(t) M^(-1/5)`` with ``s(t)`` the sample standard deviation (``M - 1``
denominator) of the M activations (the normal-reference rule of Silverman 1986, "Density
estimation for statistics and data analysis", section 3.4.2); it makes H2 shift by exactly
``log c`` when the states are scaled by ``c``. A number fixes sigma for all steps (the papers
above fix it relative to the states' spread; pass the value you want).

What to expect (derived in ``docs/memory_entropy.md``): for M samples of ``N(0, s^2)`` and a
fixed sigma, ``E[V] = (M - 1) / (M 2 sqrt(pi) sqrt(s^2 + sigma^2)) + 1 / (M 2 sqrt(pi) sigma)``,
which tends to ``1 / (2 sqrt(pi) s)``, the exact ``H2 = log(2 sqrt(pi) s)`` of the Gaussian, as
``M -> infinity`` and ``sigma -> 0`` with ``M sigma -> infinity``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rnnlab._validation import check_choice, check_number, check_tensor

REDUCTIONS = ("mean", "none")
SILVERMAN = 1.06
# Pairwise differences computed at once (elements of a (batch, steps, M, M) block).
_PAIR_CHUNK_ELEMENTS = 1 << 22


def _kernel(x: torch.Tensor, kernel_size: float | str | None) -> torch.Tensor:
    """sigma per (batch, time) for float64 states x (batch, time, M)."""
    m = x.shape[-1]
    if kernel_size is None or (isinstance(kernel_size, str) and kernel_size == "silverman"):
        sigma = SILVERMAN * x.std(dim=-1, correction=1) * m ** (-0.2)
        bad = sigma <= 0
        if bool(bad.any()):
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"all {m} units have the same activation at batch {b}, time step {t}: "
                f"Silverman's kernel width is 0 and the entropy estimate -inf; drop those steps "
                f"(e.g. the washout) or pass a fixed kernel_size")
        return sigma
    if isinstance(kernel_size, str):
        raise ValueError(f"kernel_size must be None, 'silverman' or a positive number, "
                         f"got {kernel_size!r}")
    value = check_number("kernel_size", kernel_size, low=0.0, low_open=True)
    return torch.full(x.shape[:2], value, dtype=torch.float64, device=x.device)


def state_entropy(
    states: torch.Tensor,
    kernel_size: float | str | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Renyi quadratic entropy of the units' activations at each step (module docstring).

    Args:
        states: ``(batch, time, units)`` reservoir states (float; any device), M = units >= 2.
        kernel_size: Parzen window width sigma: ``None``/``"silverman"`` (per step, Silverman's
            rule) or a positive number (fixed).
        reduction: ``"mean"``: the average state entropy over time, shape ``(batch,)``;
            ``"none"``: H2 at every step, ``(batch, time)``.

    Returns a float64 tensor on the states' device.
    """
    check_tensor("states", states, ndim=3, layout="(batch, time, units)")
    if not states.is_floating_point():
        raise TypeError(f"states must be floating point, got {states.dtype}")
    check_choice("reduction", reduction, REDUCTIONS)
    batch, steps, m = states.shape
    if m < 2:
        raise ValueError(f"the entropy across units needs at least 2 units, got {m}")
    x = states.detach().to(torch.float64)
    sigma = _kernel(x, kernel_size)
    # (batch, time) flattened so that the chunks bound the memory whatever the batch size.
    xf = x.reshape(batch * steps, m)
    sf = sigma.reshape(batch * steps)
    h = torch.empty(batch * steps, dtype=torch.float64, device=x.device)
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // (m * m))
    for i0 in range(0, batch * steps, chunk):
        i1 = min(i0 + chunk, batch * steps)
        xc, sc = xf[i0:i1], sf[i0:i1]
        d2 = (xc.unsqueeze(-1) - xc.unsqueeze(-2)).square_()
        d2 = d2.div_(-4.0 * sc.square()[:, None, None])
        lse = torch.logsumexp(d2.flatten(-2), dim=-1)
        h[i0:i1] = torch.log(2.0 * math.sqrt(math.pi) * sc) + 2.0 * math.log(m) - lse
    h = h.view(batch, steps)
    return h.mean(1) if reduction == "mean" else h


def layer_state_entropy(
    states: torch.Tensor | Sequence[torch.Tensor],
    layer_sizes: Sequence[int] | None = None,
    kernel_size: float | str | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """:func:`state_entropy` of each layer of a deep reservoir, computed layer by layer.

    Args:
        states: either one ``(batch, time, sum(layer_sizes))`` tensor with the layers' states
            side by side (layer 1 first, the layout of a deep ESN's concatenated states), or a
            sequence of per-layer ``(batch, time, units_l)`` tensors (then ``layer_sizes`` is
            not given).
        layer_sizes: units per layer, for the concatenated form.
        kernel_size, reduction: as for :func:`state_entropy`, applied to each layer alone.

    Returns ``(batch, layers)`` for ``reduction="mean"``, ``(batch, time, layers)`` for
    ``"none"``.
    """
    if isinstance(states, torch.Tensor):
        if layer_sizes is None:
            raise ValueError("layer_sizes is needed when the states of all layers come as one "
                             "tensor")
        sizes = list(layer_sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                            for s in sizes):
            raise ValueError(f"layer_sizes must be positive ints, got {layer_sizes!r}")
        check_tensor("states", states, ndim=3, layout="(batch, time, units)")
        if sum(sizes) != states.shape[-1]:
            raise ValueError(f"layer_sizes sum to {sum(sizes)} but the states have "
                             f"{states.shape[-1]} units")
        layers = list(torch.split(states, sizes, dim=-1))
    else:
        if layer_sizes is not None:
            raise ValueError("give layer_sizes only with one concatenated states tensor")
        layers = list(states)
        if not layers:
            raise ValueError("states is an empty sequence of layers")
        shapes = set()
        for i, s in enumerate(layers):
            check_tensor(f"states[{i}]", s, ndim=3, layout="(batch, time, units)")
            shapes.add(tuple(s.shape[:2]))
        if len(shapes) > 1:
            raise ValueError(f"the layers' states must share (batch, time), got {sorted(shapes)}")
    out = [state_entropy(s, kernel_size, reduction=reduction) for s in layers]
    return torch.stack(out, dim=-1)
