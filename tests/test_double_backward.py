"""Second and forward-mode derivatives through the sequence layers (issue 10, item 3).

The fused and hand-written impls of a layer are first-order fast paths. Before this was fixed,
double backward through the hand-written LSTM sequence silently dropped the dependence of its
gradient on the parameters (``once_differentiable``'s error node is never reached by a grad with
respect to a dummy cotangent), so ``gradgradcheck`` failed and ``HessianFree(model=None)``
computed a wrong Gauss-Newton product without an error; ``torch.func`` raised functorch's
``setup_context`` error.

References: ``torch.autograd.gradgradcheck`` (second derivatives against finite differences of
the first), central finite differences of the outputs, the explicit Jacobian from first-order
reverse mode of the loop (``torch.autograd.functional.jacobian``), and the plain loop impl.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from rnnlab.cells import VARIANTS, ElmanCell, GRUCell, LSTMCell, StackedCell, twice_differentiable
from rnnlab.models.recurrent import RecurrentLayer, RecurrentNetwork
from rnnlab.optim import GaussNewton, HessianFree

F64 = torch.float64
EPS = torch.finfo(F64).eps


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Weights away from the initializer's small range, so every gate saturates differently."""
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def _graph_nodes(t: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``t``."""
    seen, names, todo = set(), set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names


def _layer_function(cell, impl, lengths=None, return_states=True):
    """``f(x, *state0, *params) -> (outputs, *final, *states)`` through ``RecurrentLayer``."""
    names = [n for n, _ in cell.named_parameters()]
    layer = RecurrentLayer(cell, impl=impl)
    k = len(cell.initial_state(1))

    def f(x, *rest):
        params = {f"cell.{n}": v for n, v in zip(names, rest[k:], strict=True)}
        y, final, *states = functional_call(
            layer, params, (x, tuple(rest[:k])),
            {"lengths": lengths, "return_states": return_states},
        )
        return (y, *final, *(states[0] if states else ()))

    return f


def _inputs(cell, batch=2, steps=4, seed=1):
    g = _gen(seed)
    x = torch.randn(batch, steps, cell.input_size, generator=g, dtype=F64)
    s0 = [torch.randn(s.shape, generator=g, dtype=F64) for s in cell.initial_state(batch)]
    params = [p.detach().clone() for p in cell.parameters()]
    return [t.requires_grad_() for t in (x, *s0, *params)]


# ---------------------------------------------------------------------------------------------
# gradgradcheck: second derivatives against finite differences of the first
LSTM_CASES = [
    # (peepholes, impl, lengths): the default LSTM (peepholes: "auto" is "handwritten"),
    # torch.nn.LSTM's math (peepholes=False: "auto" is "fused"), with and without padding
    (True, "auto", None),
    (True, "handwritten", [3, 1]),
    (False, "handwritten", None),
    (False, "fused", [3, 1]),
]


@pytest.mark.parametrize(("peepholes", "impl", "lengths"), LSTM_CASES)
def test_lstm_layer_gradgradcheck(peepholes, impl, lengths):
    cell = LSTMCell(2, 2, peepholes=peepholes, dtype=F64)
    _randomize(cell)
    f = _layer_function(cell, impl, None if lengths is None else torch.tensor(lengths),
                        return_states=impl != "fused")  # the fused kernel does not return c(t)
    # gradgradcheck's own tolerances (atol 1e-5, rtol 1e-3) compare against central differences
    # with step 1e-6 in float64: truncation ~1e-12, rounding ~1e-10, far inside them. The default
    # layer gets the full check, the others its random-projection form (fast_mode), which any
    # missing dependence of the gradient on an input fails as surely.
    full = peepholes and impl == "auto"
    assert torch.autograd.gradgradcheck(f, tuple(_inputs(cell, steps=3)), fast_mode=not full)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "FGR"])
def test_handwritten_double_backward_equals_the_loop(variant):
    """Hessian-vector products ``d/dtheta (g . d loss/dtheta)`` through every variant's flags."""
    cell = LSTMCell(2, 3, variant=variant, dtype=F64)
    _randomize(cell, seed=3)
    results = []
    for impl in ("handwritten", "loop"):
        inputs = _inputs(cell, batch=3, steps=5, seed=4)
        outs = _layer_function(cell, impl, torch.tensor([5, 2, 4]))(*inputs)
        g = _gen(5)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=F64)).sum() for o in outs)
        grads = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
        dot = sum((gr * torch.randn(gr.shape, generator=g, dtype=F64)).sum()
                  for gr in grads if gr is not None)
        hvp = torch.autograd.grad(dot, inputs, allow_unused=True)
        results.append([torch.zeros_like(t) if h is None else h
                        for h, t in zip(hvp, inputs, strict=True)])
    # Same equations, different op order (the first-order part of the handwritten path's graph is
    # the loop itself): entries are O(1) sums of ~T*(D+H+1) = 30 products per pre-activation
    # and T = 5 steps, so rounding is ~1e2 * eps; 1e4 * eps leaves a 100x margin.
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e4 * EPS, rtol=1e4 * EPS)


def test_handwritten_partial_derivatives_when_the_input_depends_on_a_weight():
    """The double-backward path returns each input's own partial derivative: with ``x`` built
    from ``weight_ih``, the path through ``x`` is autograd's to add, not the Function's."""
    cell = LSTMCell(2, 3, dtype=F64)
    _randomize(cell, seed=6)
    base = torch.randn(2, 4, 2, generator=_gen(7), dtype=F64)
    results = []
    for impl in ("handwritten", "loop"):
        x = base * cell.weight_ih.sum()
        y, _ = RecurrentLayer(cell, impl=impl)(x)
        params = list(cell.parameters())
        grads = torch.autograd.grad(y.pow(2).sum(), params, create_graph=True)
        # and the second order: the gradient of the squared gradient norm
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), params)
        results.append([*grads, *second])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e4 * EPS, rtol=1e4 * EPS)  # as above


# ---------------------------------------------------------------------------------------------
# The Gauss-Newton product of HessianFree on RecurrentNetwork(LSTMCell(1, 6), 1)
def _lstm_network(impl: str) -> RecurrentNetwork:
    cell = LSTMCell(1, 6, dtype=F64, generator=_gen(0))
    return RecurrentNetwork(cell, 1, impl=impl, generator=_gen(1))


def _recall_batch():
    g = _gen(2)
    x = torch.randn(4, 7, 1, generator=g, dtype=F64)
    y = torch.randn(4, 7, 1, generator=g, dtype=F64)
    return x, y


@pytest.mark.parametrize("backend", ["autograd", "func"])
def test_gauss_newton_product_of_the_default_lstm_network(backend):
    x, y = _recall_batch()

    def loss(o):
        return 0.5 * (o - y).pow(2).sum()  # H_L = I

    ref_net = _lstm_network("loop")
    params = list(ref_net.parameters())
    n = sum(p.numel() for p in params)
    v = torch.randn(n, generator=_gen(3), dtype=F64)

    # Reference 1: the explicit Jacobian, rows by first-order reverse mode of the loop
    def outputs(*ps):
        names = [k for k, _ in ref_net.named_parameters()]
        return functional_call(ref_net, dict(zip(names, ps, strict=True)), (x,))[0]

    jac = torch.autograd.functional.jacobian(outputs, tuple(p.detach() for p in params))
    jac = torch.cat([j.reshape(x.shape[0] * x.shape[1], -1) for j in jac], dim=1)
    jv_ref, gv_ref = jac @ v, jac.T @ (jac @ v)

    # Reference 2: central differences of the outputs along v (independent of autograd)
    theta = parameters_to_vector(params).detach().clone()

    def central(h):
        with torch.no_grad():
            vector_to_parameters(theta + h * v, params)
            plus = ref_net(x)[0]
            vector_to_parameters(theta - h * v, params)
            minus = ref_net(x)[0]
            vector_to_parameters(theta, params)
        return ((plus - minus) / (2 * h)).reshape(-1)

    h = 1e-4
    fd, fd2 = central(h), central(2 * h)

    net = _lstm_network("auto")  # the default: the hand-written sequence at first order
    assert "_LSTMSequenceBackward" in _graph_nodes(net(x)[0])
    gn = GaussNewton(lambda: net(x)[0], loss, list(net.parameters()),
                     model=net if backend == "func" else None)
    jv, gv = gn.jvp(v).reshape(-1), gn.matvec(v)

    # Explicit products: forward error of a dot product of length m is <= m * eps * sum|terms|
    # (Higham, Accuracy and Stability, eq. 3.5); J's entries themselves come from a different op
    # order (reverse rows vs double vjp / forward mode), each within ~T*(D+H+1)*eps = 56 eps
    # relative; both bounded by (n + rows + 56) * eps * |J| |v| (|J|: absolute values).
    absj = jac.abs()
    tol_jv = (n + 56) * EPS * (absj @ v.abs())
    tol_gv = (n + jac.shape[0] + 56) * EPS * (absj.T @ (absj @ v.abs()))
    assert ((jv - jv_ref).abs() <= tol_jv).all(), (jv - jv_ref).abs().max()
    assert ((gv - gv_ref).abs() <= tol_gv).all(), (gv - gv_ref).abs().max()
    # Central differences: the truncation error of step h is ~C h^2, so |fd(h) - fd(2h)| ~ 3 C h^2
    # bounds it with a factor 3 to spare; rounding adds ~eps * |F| / h per entry.
    tol_fd = (fd - fd2).abs() + 10 * EPS * (ref_net(x)[0].abs().max()) / h
    assert ((jv - fd).abs() <= tol_fd).all(), (jv - fd).abs().max()
    # and the loop impl's own operator
    gn_loop = GaussNewton(lambda: ref_net(x)[0], loss, params)
    torch.testing.assert_close(gn_loop.matvec(v), gv, rtol=0.0,
                               atol=(n + jac.shape[0] + 56) * EPS * float(gv.abs().max()))


def test_hessian_free_trains_the_default_lstm_like_the_loop():
    x, y = _recall_batch()

    def loss(o):
        return 0.5 * (o - y).pow(2).sum()

    runs = []
    for impl in ("auto", "loop"):
        net = _lstm_network(impl)
        opt = HessianFree(net.parameters(), max_cg_iters=20, model=None)
        for _ in range(3):
            opt.step(lambda net=net: net(x)[0], loss)
            assert not opt.last_step["skipped"]
        runs.append(parameters_to_vector(net.parameters()).detach())
    # The products and gradients come from the same loop graph in both runs; only the objective
    # values that CG backtracking and the line search compare differ, by rounding (~1e-15
    # relative), which changes no discrete choice here and then enters CG's solution at most
    # amplified by its condition number (damping 1, ||G|| ~ 1e2): 1e-9 relative is 1e4 above it.
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Automatic choice of the twice-differentiable path
CELLS = {
    "lstm": lambda: LSTMCell(2, 3, dtype=F64),
    "lstm-np": lambda: LSTMCell(2, 3, peepholes=False, dtype=F64),
    "gru": lambda: GRUCell(2, 3, form="torch", dtype=F64),
    "elman": lambda: ElmanCell(2, 3, dtype=F64),
    "stacked": lambda: StackedCell([LSTMCell(2, 3, dtype=F64), GRUCell(3, 3, form="torch",
                                                                       dtype=F64)]),
}


def _spy_fast_path(monkeypatch, cell) -> list[str]:
    """Record every call of a cell's (or a stack's layers') fast whole-sequence impl."""
    calls: list[str] = []
    for layer in getattr(cell, "layers", [cell]):
        original = layer._sequence

        def spy(impl, *args, original=original):
            calls.append(impl)
            return original(impl, *args)

        monkeypatch.setattr(layer, "_sequence", spy)
    return calls


@pytest.mark.parametrize("kind", list(CELLS))
def test_twice_differentiable_makes_auto_run_the_loop(kind, monkeypatch):
    cell = CELLS[kind]()
    calls = _spy_fast_path(monkeypatch, cell)
    x = torch.randn(2, 4, 2, dtype=F64, requires_grad=True)
    with twice_differentiable():
        y, _ = RecurrentLayer(cell)(x, lengths=[4, 2])
        with twice_differentiable():  # re-entrant
            RecurrentLayer(cell)(x)
        RecurrentLayer(cell)(x)
    assert calls == [] and "_LSTMSequenceBackward" not in _graph_nodes(y)
    RecurrentLayer(cell)(x)  # the context has ended: the fast path again
    assert calls


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("lengths", [None, [4, 2]])
def test_torch_func_jvp_and_grad_through_the_auto_layer(kind, lengths):
    cell = CELLS[kind]()
    _randomize(cell, seed=8)
    x = torch.randn(2, 4, 2, generator=_gen(9), dtype=F64)
    names = [n for n, _ in cell.named_parameters()]
    primals = tuple(p.detach() for p in cell.parameters())
    tangents = tuple(torch.randn(p.shape, generator=_gen(10 + k), dtype=F64)
                     for k, p in enumerate(primals))

    def f(impl):
        layer = RecurrentLayer(cell, impl=impl)

        def run(*ps):
            params = {f"cell.{n}": p for n, p in zip(names, ps, strict=True)}
            return functional_call(layer, params, (x,), {"lengths": lengths})[0]

        return run

    _, jv = torch.func.jvp(f("auto"), primals, tangents)
    _, jv_loop = torch.func.jvp(f("loop"), primals, tangents)
    # both run the loop under the transform: identical graphs
    torch.testing.assert_close(jv, jv_loop, atol=0.0, rtol=0.0)
    # and against first-order reverse mode of the fast path (a different op order): entries are
    # O(1) sums of ~T*(D+H+1)*P terms, so 1e4 * eps is ample
    y = f("auto")(*(p.clone().requires_grad_() for p in primals))
    explicit = torch.autograd.functional.jacobian(f("auto"), primals)
    jv_ref = sum((j.reshape(y.numel(), -1) @ t.reshape(-1)).reshape(y.shape)
                 for j, t in zip(explicit, tangents, strict=True))
    torch.testing.assert_close(jv, jv_ref, atol=1e4 * EPS, rtol=1e4 * EPS)
    grads = torch.func.grad(lambda *ps: f("auto")(*ps).pow(2).sum(), argnums=0)(*primals)
    assert torch.isfinite(grads).all()
    # plain forward-mode AD (dual tensors) chooses the loop as well
    with fwAD.dual_level():
        dual_x = fwAD.make_dual(x, torch.ones_like(x))
        out = RecurrentLayer(cell)(dual_x, lengths=lengths)[0]
        tangent = fwAD.unpack_dual(out).tangent
    assert tangent is not None and torch.isfinite(tangent).all()


@pytest.mark.parametrize(("kind", "impl"), [("lstm", "handwritten"), ("lstm-np", "fused"),
                                            ("gru", "fused"), ("elman", "fused"),
                                            ("stacked", "handwritten")])
def test_explicit_fast_impl_under_forward_mode_names_the_loop(kind, impl, monkeypatch):
    cell = CELLS[kind]()
    if kind == "stacked":
        cell = StackedCell([LSTMCell(2, 3, dtype=F64), LSTMCell(3, 3, dtype=F64)])
    layer = RecurrentLayer(cell, impl=impl)
    x = torch.randn(2, 4, 2, dtype=F64)
    with pytest.raises(RuntimeError, match=rf"impl='{impl}'.*torch\.func.*impl='loop'"):
        torch.func.jvp(lambda x: layer(x, lengths=[4, 2])[0], (x,), (torch.ones_like(x),))
    with pytest.raises(RuntimeError, match=rf"impl='{impl}'.*forward-mode AD.*impl='loop'"):
        with fwAD.dual_level():
            layer(fwAD.make_dual(x, torch.ones_like(x)))
    # an explicit choice outside forward mode is honoured, also under twice_differentiable()
    calls = _spy_fast_path(monkeypatch, cell)
    with twice_differentiable():
        layer(x.clone().requires_grad_())
    assert calls and set(calls) == {impl}
