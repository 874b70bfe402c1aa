"""Independent references for the tests: the course's equations written out plainly."""

from __future__ import annotations

import torch

ACT = {"tanh": torch.tanh, "identity": lambda a: a, "sigmoid": torch.sigmoid}


def elman_forward(U, W, b, V, c, x, readout="tanh", h0=None):
    """h(t) = tanh(U x(t) + W h(t-1) + b), o(t) = f(V h(t) + c), written per step and sample."""
    batch, steps, _ = x.shape
    h = torch.zeros(batch, W.shape[0], dtype=x.dtype) if h0 is None else h0
    hs, os_ = [], []
    for t in range(steps):
        h = torch.tanh(torch.einsum("nd,bd->bn", U, x[:, t]) + torch.einsum("nm,bm->bn", W, h) + b)
        hs.append(h)
        os_.append(ACT[readout](torch.einsum("on,bn->bo", V, h) + c))
    return torch.stack(os_, 1), torch.stack(hs, 1)


def elman_loss(params, x, y, readout="tanh", upto=None):
    """L = sum_{t < upto} sum_batch ||y(t) - o(t)||^2."""
    o, _ = elman_forward(*params, x, readout)
    upto = x.shape[1] if upto is None else upto
    return (y[:, :upto] - o[:, :upto]).pow(2).sum()


class CellNetwork(torch.nn.Module):
    """A minimal model of the cell protocol for the tests: o = V hidden(state) + c."""

    def __init__(self, cell, output_size):
        super().__init__()
        self.cell = cell
        self.input_size = cell.input_size
        p = next(cell.parameters())
        self.readout = torch.nn.Linear(cell.hidden_size, output_size, dtype=p.dtype)

    def initial_state(self, batch):
        return self.cell.initial_state(batch)

    def output(self, state):
        return self.readout(self.cell.hidden(state))


def unrolled_gradients(model, x, y, upto=None):
    """Plain autograd through the unrolled cell: the gradient of sum_t ||y - o||^2."""
    params = list(model.parameters())
    state = model.initial_state(x.shape[0])
    loss = 0.0
    upto = x.shape[1] if upto is None else upto
    for t in range(upto):
        state = model.cell(x[:, t], state)
        loss = loss + (y[:, t] - model.output(state)).pow(2).sum()
    return dict(zip([n for n, _ in model.named_parameters()],
                    torch.autograd.grad(loss, params, allow_unused=True), strict=True))


# ------------------------------------------------------------------------------------------------
# Round-off bounds: the tolerances of tests that compare floats computed along different paths
# (other kernels, BLAS calls, thread splits, devices, chunkings). Never bit equality there.
def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2, the largest relative error of one correctly rounded operation."""
    return float(torch.finfo(dtype).eps) / 2


def gamma(n: int, dtype: torch.dtype = torch.float64) -> float:
    """Higham's gamma_n = n u / (1 - n u): a sum or dot product of n terms, accumulated in any
    order, is within gamma_n * sum_i |term_i| of the exact value (Higham, "Accuracy and
    Stability of Numerical Algorithms", 2nd ed., 2002, eq. (3.5) and Lemma 3.1). Two
    evaluations that sum in different orders are thus within 2 gamma_n sum_i |term_i| of each
    other, whatever kernel, thread count or device each used."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma_{n} is unbounded in {dtype}")
    return nu / (1 - nu)


def matmul_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on the difference between two evaluations of ``a @ b`` that sum the
    inner products in different orders: 2 gamma_k (|a| @ |b|), k the inner size (see
    :func:`gamma`). Computed in float64 (its own round-off is negligible against the bound)."""
    k = a.shape[-1]
    return 2 * gamma(k, a.dtype) * (a.detach().abs().double() @ b.detach().abs().double())


def assert_within(got: torch.Tensor, want: torch.Tensor, bound: torch.Tensor | float,
                  what: str = "") -> None:
    """|got - want| <= bound elementwise (``bound`` broadcasts), with the worst ratio in the
    message."""
    got_, want_ = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    gap = (got_ - want_).abs()
    bound_ = torch.as_tensor(bound, dtype=torch.float64).expand_as(gap)
    bad = gap > bound_
    if bool(bad.any()):
        ratio = float((gap / bound_.clamp_min(torch.finfo(torch.float64).tiny)).max())
        raise AssertionError(f"{what}: {int(bad.sum())} of {gap.numel()} elements differ by "
                             f"more than the round-off bound (worst {ratio:.3g} x the bound, "
                             f"max gap {float(gap.max()):.3g})")


def esn_state_gap(esn: torch.nn.Module, steps: int, input_max: float = 1.0,
                  feedback_max: float = 0.0, state_max: float = 1.0,
                  input_gap: float = 0.0, feedback_gap: float = 0.0,
                  state_gap: float = 0.0) -> float:
    """Tolerance for two evaluations of an echo state network's states over ``steps`` steps that
    differ only in the order of their sums (another kernel, chunking, batch or loop; a numpy
    reference), derived from the update (``rnnlab.reservoir.esn``)

        x(t) = (1 - a) x(t-1) + a tanh(g (W_in u(t) + bias + W_fb y(t-1) + W x(t-1)) + s).

    One step: the net input sums k terms (the nonzeros of a row of [W W_in W_fb], the bias)
    whose sizes add up to at most m = ||W|| state_max + ||W_in|| input_max + ||W_fb||
    feedback_max + max|bias| (infinity norms, the largest row sums of |.|; |x| <= state_max,
    1 for tanh units started at 0), so two evaluations differ by at most 2 gamma_k m
    (:func:`gamma`); times a g, plus 16 u for gain, shift, tanh (libm's and the numba
    kernel's are within 2 ulp) and leak in both: delta. Over the steps: a gap in x(t-1) is
    carried on by the Jacobians diag(1 - a) + diag(a g tanh') W, whose products shrink like
    rho_eff^t, rho_eff the spectral radius of diag(1 - a) + diag(a g) W (the Jacobian at the
    origin, where tanh' = 1 is largest), so the gaps add up to at most delta (1 + rho_eff +
    ... + rho_eff^(steps-1)). That is a first-order estimate (the
    transient growth of non-normal products is left out) built on the worst case of each
    step's round-off, which rarely aligns: the gaps seen are far below it. ``input_gap``,
    ``feedback_gap``: u and y themselves differ by up to that much (the states of a layer
    below, a fed-back output), which adds max(a g) (||W_in|| input_gap + ||W_fb||
    feedback_gap) to delta; ``state_gap``: x(-1) differs by that much, which adds
    rho_eff^steps state_gap. Logistic units (``LogisticEchoStateNetwork``) have slope <= 1/4
    in place of tanh's 1, which scales a g by 1/4 throughout."""
    w = esn.W.detach().to("cpu", torch.float64)
    w = w.to_dense() if w.layout != torch.strided else w
    dtype = esn.W.dtype

    def inf_norm(m: torch.Tensor | None) -> float:
        return 0.0 if m is None else float(m.detach().to("cpu", torch.float64).abs().sum(1).max())

    w_fb = getattr(esn, "W_fb", None)
    k = int((w != 0).sum(1).max()) + esn.W_in.shape[1] + 1 + (0 if w_fb is None
                                                              else w_fb.shape[1])
    leak = esn.leak.detach().to("cpu", torch.float64).abs()
    slope = 0.25 if getattr(esn, "activation", "tanh") == "logistic" else 1.0  # max sigma'(z)
    gain = slope * esn.a.detach().to("cpu", torch.float64).abs()
    m = (inf_norm(w) * state_max + inf_norm(esn.W_in) * input_max + inf_norm(w_fb) * feedback_max
         + float(esn.bias.detach().to("cpu", torch.float64).abs().max()))
    carried = inf_norm(esn.W_in) * input_gap + inf_norm(w_fb) * feedback_gap
    delta = float((leak * gain).max()) * (2 * gamma(k, dtype) * m + carried) \
        + 16 * unit_roundoff(dtype)
    jac = torch.diag(1 - leak.expand(w.shape[0])) + (leak * gain).expand(w.shape[0])[:, None] * w
    rate = float(torch.linalg.eigvals(jac).abs().max())
    growth = steps if rate == 1 else (rate**steps - 1) / (rate - 1)
    return delta * growth + rate**steps * state_gap


def deep_esn_state_gaps(model: torch.nn.Module, steps: int, input_max: float = 1.0,
                        feedback_max: float = 0.0, state_max: float = 1.0,
                        input_gap: float = 0.0, feedback_gap: float = 0.0,
                        state_gaps: list[float] | None = None) -> list[float]:
    """:func:`esn_state_gap` for every layer of a ``DeepEchoStateNetwork``: layer l > 0 of a
    deepESN or deepESN-IA reads the states of layer l - 1 (|x| <= 1), so their gap enters as
    its ``input_gap`` (plus u's own ``input_gap``); a groupedESN's layers all read u alone.
    ``state_gaps``: each layer's gap in x(-1)."""
    gaps: list[float] = []
    for i, layer in enumerate(model.layers):
        stacked = i > 0 and model.variant != "groupedESN"
        width = max(input_max, state_max) if stacked else input_max
        gaps.append(esn_state_gap(layer, steps, width, feedback_max, state_max,
                                  input_gap=input_gap + (gaps[-1] if stacked else 0.0),
                                  feedback_gap=feedback_gap,
                                  state_gap=0.0 if state_gaps is None else state_gaps[i]))
    return gaps


def carried_gaps(jacobians: list[torch.Tensor], delta: float) -> list[float]:
    """First-order gaps of a recurrence x(t) = F_t(x(t-1)), t = 0..T-1, evaluated twice with
    round-off gaps of at most ``delta`` (infinity norm) added at every step: a gap made at step
    r reaches step t multiplied by the Jacobians J_t ... J_(r+1) (J_t = dF_t/dx along the
    trajectory), so e(t) <= sum_(r <= t) ||J_t ... J_(r+1)||_inf delta to first order. For loops
    whose worst-case norms explode (a readout fed back) while the actual products do not."""
    gaps = []
    for t in range(len(jacobians)):
        total, prod = 0.0, torch.eye(jacobians[0].shape[0], dtype=torch.float64)
        for r in range(t, -1, -1):
            total += float(prod.abs().sum(1).max()) * delta
            prod = prod @ jacobians[r].double()
        gaps.append(total)
    return gaps
