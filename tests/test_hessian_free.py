"""Hessian-free optimizer: every piece against an independent reference.

References: ``numpy.linalg.solve`` / explicit quadratics for CG and the HF step on a quadratic;
explicit ``J^T H J`` built from ``torch.autograd.functional.jacobian`` of the plain reference
network (``tests/reference.py``) and closed-form loss Hessians for the curvature products;
per-sample autograd gradients for the preconditioner; closed-form scalar computations for the
Levenberg-Marquardt rule and the Armijo search.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.models.elman import ElmanRNN
from rnnlab.optim import GaussNewton, HessianFree, conjugate_gradient
from rnnlab.optim.hessian_free import _cg_backtrack
from tests.reference import elman_forward

F64 = torch.float64
BACKENDS = ["autograd", "func"]


def _spd(d: int, eigs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A = Q diag(eigs) Q^T with a random orthogonal Q; also returns R with A = R^T R."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a = q @ np.diag(eigs) @ q.T
    r = np.diag(np.sqrt(eigs)) @ q.T
    return a, r


class _LinearModel(nn.Module):
    """outputs = R theta; with loss 1/2 ||R theta - y||^2 the Gauss-Newton matrix is R^T R."""

    def __init__(self, r: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("R", torch.tensor(r, dtype=F64))
        self.theta = nn.Parameter(torch.zeros(r.shape[1], dtype=F64))

    def forward(self) -> torch.Tensor:
        return self.R @ self.theta


def _explicit_jacobian(fn, params) -> torch.Tensor:
    """d fn(*params).flatten() / d (flat params), by reverse-mode rows."""
    jac = torch.autograd.functional.jacobian(fn, tuple(p.detach() for p in params))
    rows = fn(*params).numel()
    return torch.cat([j.reshape(rows, -1) for j in jac], dim=1)


def _full_matrix(matvec, n: int) -> torch.Tensor:
    eye = torch.eye(n, dtype=F64)
    return torch.stack([matvec(eye[i]) for i in range(n)], dim=1)


def _model_arg(backend: str, model: nn.Module) -> nn.Module | None:
    return model if backend == "func" else None


# ---------------------------------------------------------------------------------------------
# (1) conjugate gradient and one HF step on a quadratic


def test_cg_solves_spd_system_in_dim_iterations():
    d = 8
    a, _ = _spd(d, np.linspace(1.0, 10.0, d), seed=0)
    b = np.random.default_rng(1).standard_normal(d)
    at, bt = torch.tensor(a), torch.tensor(b)
    ref = np.linalg.solve(a, b)
    res = conjugate_gradient(lambda v: at @ v, bt, max_iters=d)
    assert res.iterations <= d
    np.testing.assert_allclose(res.x.numpy(), ref, rtol=0, atol=1e-10)
    # phi tracked through r is the explicit quadratic at each saved iterate.
    for i, x, phi in res.saved:
        explicit = 0.5 * x @ at @ x - bt @ x
        assert phi == pytest.approx(float(explicit), rel=1e-10, abs=1e-12)
        assert res.phi[i] == phi
    # The same system with fewer iterations is not solved: the check above can fail.
    short = conjugate_gradient(lambda v: at @ v, bt, max_iters=d - 3)
    assert np.abs(short.x.numpy() - ref).max() > 1e-4
    # A diagonal preconditioner changes the path, not the solution.
    pre = conjugate_gradient(lambda v: at @ v, bt, max_iters=d,
                             preconditioner=torch.tensor(np.diag(a)).abs() ** 0.75)
    np.testing.assert_allclose(pre.x.numpy(), ref, rtol=0, atol=1e-10)


def test_cg_relative_progress_rule_matches_its_definition():
    d, eps = 150, 5e-4
    a, _ = _spd(d, np.logspace(-4, 0, d), seed=2)
    b = np.random.default_rng(3).standard_normal(d)
    at, bt = torch.tensor(a), torch.tensor(b)
    res = conjugate_gradient(lambda v: at @ v, bt, max_iters=d, progress_eps=eps)
    assert res.stop_reason == "relative_progress"
    assert res.iterations < d
    phi = res.phi
    x = res.x
    assert phi[-1] == pytest.approx(float(0.5 * x @ at @ x - bt @ x), rel=1e-9)

    def rule(i: int) -> bool:
        k = max(10, math.ceil(0.1 * i))
        return i > k and phi[i] < 0 and (phi[i] - phi[i - k]) / phi[i] < k * eps

    stop = res.iterations
    assert rule(stop)
    assert not any(rule(i) for i in range(1, stop))


def test_cg_saves_iterates_at_geometric_iterations_and_restarts_bad_warm_start():
    d = 60
    a, _ = _spd(d, np.logspace(-3, 0, d), seed=4)
    at = torch.tensor(a)
    bt = torch.tensor(np.random.default_rng(5).standard_normal(d))
    res = conjugate_gradient(lambda v: at @ v, bt, max_iters=30, progress_eps=1e-12)
    expected = sorted({math.ceil(1.3**j) for j in range(40) if 1.3**j <= 30} | {30})
    assert [i for i, _, _ in res.saved] == expected
    # A warm start with phi(x0) > 0 is discarded; a good one is used as given.
    bad = -10.0 * torch.linalg.solve(at, bt)
    r_bad = conjugate_gradient(lambda v: at @ v, bt, bad, max_iters=5)
    assert r_bad.restarted and r_bad.phi[0] == 0.0
    good = 0.5 * torch.linalg.solve(at, bt)
    r_good = conjugate_gradient(lambda v: at @ v, bt, good, max_iters=5)
    assert not r_good.restarted
    assert r_good.phi[0] == pytest.approx(float(0.5 * good @ at @ good - bt @ good), rel=1e-10)


def test_cg_backtracking_walks_back_while_the_objective_falls():
    vals = {0: 5.0, 1: 1.0, 2: 2.0, 3: 3.0}
    cands = [torch.tensor(float(i)) for i in range(4)]
    idx, f, tried = _cg_backtrack(cands, lambda x: vals[int(x)])
    assert (idx, f, tried) == (1, 1.0, [3.0, 2.0, 1.0, 5.0])
    vals = {0: 5.0, 1: 3.0, 2: 4.0, 3: 2.0}
    idx, f, tried = _cg_backtrack(cands, lambda x: vals[int(x)])
    assert (idx, f, tried) == (3, 2.0, [2.0, 4.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hf_step_reaches_the_minimum_of_a_quadratic(backend):
    d = 8
    a, r = _spd(d, np.linspace(0.5, 6.0, d), seed=6)
    b = np.random.default_rng(7).standard_normal(d)
    model = _LinearModel(r)
    y = torch.tensor(np.linalg.solve(r.T, b))  # 1/2||R x - y||^2 = 1/2 x^T A x - b^T x + const
    opt = HessianFree(model.parameters(), damping=1e-12, max_cg_iters=d,
                      model=_model_arg(backend, model))
    opt.step(model, lambda out: 0.5 * (out - y).pow(2).sum())
    np.testing.assert_allclose(model.theta.detach().numpy(), np.linalg.solve(a, b), atol=1e-9)
    info = opt.last_step
    assert info["cg_iterations"] <= d and info["alpha"] == 1.0
    # On an exact quadratic the model predicts the decrease: rho = 1 (up to the tiny damping).
    assert info["rho"] == pytest.approx(1.0, abs=1e-8)


# ---------------------------------------------------------------------------------------------
# (2) Gauss-Newton products against J^T H J built explicitly


def _mlp_case(loss_name: str):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(F64)
    x = torch.randn(6, 3, dtype=F64)
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]

    def fn(*ps):
        return torch.func.functional_call(net, dict(zip(names, ps, strict=True)), (x,))

    logits = fn(*params).detach()
    if loss_name == "mse":
        y = torch.randn(6, 4, dtype=F64)

        def loss(out):
            return (out - y).pow(2).sum()

        h = 2.0 * torch.eye(24, dtype=F64)
    else:
        target = torch.tensor([0, 1, 2, 3, 1, 2])

        def loss(out):
            return F.cross_entropy(out, target, reduction="sum")

        # Softmax cross-entropy on logits: per sample H = diag(p) - p p^T.
        p = torch.softmax(logits, dim=1)
        h = torch.block_diag(*[torch.diag(pi) - torch.outer(pi, pi) for pi in p])
    return net, x, params, fn, loss, h


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_gauss_newton_product_equals_explicit_jthj(backend, loss_name):
    net, x, params, fn, loss, h = _mlp_case(loss_name)
    jac = _explicit_jacobian(fn, params)
    g_explicit = jac.T @ h @ jac
    gn = GaussNewton(lambda: net(x), loss, params, model=_model_arg(backend, net))
    g_op = _full_matrix(gn.matvec, jac.shape[1])
    torch.testing.assert_close(g_op, g_explicit, rtol=1e-10, atol=1e-12)
    # The gradient it carries is autograd's gradient of the whole objective.
    grads = torch.autograd.grad(loss(net(x)), params)
    torch.testing.assert_close(gn.gradient, torch.cat([g.reshape(-1) for g in grads]))
    # G is symmetric positive semi-definite for these convex losses.
    assert float(torch.linalg.eigvalsh(g_op).min()) > -1e-10


def test_gauss_newton_of_the_elman_rnn_equals_explicit_jthj():
    torch.manual_seed(1)
    model = ElmanRNN(2, 3, 2, readout="tanh", dtype=F64)
    x = torch.randn(2, 4, 2, dtype=F64)
    y = torch.randn(2, 4, 2, dtype=F64)
    params = list(model.parameters())
    jac = _explicit_jacobian(lambda *ps: elman_forward(*ps, x, "tanh")[0], params)
    g_explicit = 2.0 * jac.T @ jac  # H of sum (o - y)^2 is 2 I
    for backend in BACKENDS:
        gn = GaussNewton(lambda: model(x)[0], lambda o: (o - y).pow(2).sum(), params,
                         model=_model_arg(backend, model))
        torch.testing.assert_close(_full_matrix(gn.matvec, jac.shape[1]), g_explicit,
                                   rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (3) structural damping and the preconditioner


@pytest.mark.parametrize("backend", BACKENDS)
def test_damped_curvature_with_structural_damping_equals_explicit_matrix(backend):
    torch.manual_seed(2)
    model = ElmanRNN(2, 3, 1, readout="identity", dtype=F64)
    x = torch.randn(2, 5, 2, dtype=F64)
    y = torch.randn(2, 5, 1, dtype=F64)
    params = list(model.parameters())
    lam, mu = 0.7, 0.3
    j_o = _explicit_jacobian(lambda *ps: elman_forward(*ps, x, "identity")[0], params)
    j_h = _explicit_jacobian(lambda *ps: elman_forward(*ps, x, "identity")[1], params)
    n = j_o.shape[1]
    a_explicit = j_o.T @ j_o + lam * torch.eye(n, dtype=F64) + lam * mu * j_h.T @ j_h
    opt = HessianFree(params, damping=lam, structural_damping=mu,
                      model=_model_arg(backend, model))
    op = opt.curvature_operator(lambda: model(x)[0], lambda o: 0.5 * (o - y).pow(2).sum(),
                                hidden=lambda: model.hidden_states(x))
    torch.testing.assert_close(_full_matrix(op, n), a_explicit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_preconditioner_diagonal_is_sum_of_squared_per_sample_gradients(backend):
    torch.manual_seed(3)
    model = ElmanRNN(2, 4, 1, readout="tanh", dtype=F64)
    x = torch.randn(5, 6, 2, dtype=F64)
    y = torch.randn(5, 6, 1, dtype=F64)
    params = list(model.parameters())
    expected = torch.zeros(sum(p.numel() for p in params), dtype=F64)
    for i in range(5):
        li = (model(x[i:i + 1])[0] - y[i:i + 1]).pow(2).sum()
        expected += torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, params)]).pow(2)
    gn = GaussNewton(lambda: model(x)[0], lambda o: (o - y).pow(2).sum(), params,
                     model=_model_arg(backend, model))
    torch.testing.assert_close(gn.per_sample_square_gradients(chunk_size=2), expected)


# ---------------------------------------------------------------------------------------------
# (4) training


def _recall_data(batch: int = 32, steps: int = 10, delay: int = 2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, 1, dtype=F64, generator=g)
    y = torch.zeros_like(x)
    y[:, delay:] = x[:, :-delay]
    return x, y


@pytest.mark.parametrize("backend,extras", [
    ("autograd", {}),
    ("func", {"structural_damping": 0.1, "preconditioner": True}),
])
def test_hf_trains_an_elman_rnn_on_delayed_recall(backend, extras):
    x, y = _recall_data()
    model = ElmanRNN(1, 8, 1, readout="identity", dtype=F64)
    model.reset_parameters(torch.Generator().manual_seed(1))
    opt = HessianFree(model.parameters(), damping=1.0, max_cg_iters=50,
                      model=_model_arg(backend, model), **extras)

    def loss(o):
        return (o - y).pow(2).sum() / x.shape[0]

    hidden = (lambda: model.hidden_states(x)) if extras else None
    start = float(loss(model(x)[0].detach()))
    for _ in range(5):
        opt.step(lambda: model(x)[0], loss, hidden=hidden)
        assert not opt.last_step["skipped"]
    final = float(loss(model(x)[0].detach()))
    assert final < start / 10, (start, final)
    assert opt.skipped_steps == 0


def test_backends_give_the_same_step_and_runs_are_reproducible():
    x, y = _recall_data(batch=8, steps=6)
    results = []
    for backend in ["autograd", "func", "func"]:
        model = ElmanRNN(1, 4, 1, readout="identity", dtype=F64)
        model.reset_parameters(torch.Generator().manual_seed(5))
        opt = HessianFree(model.parameters(), max_cg_iters=20, model=_model_arg(backend, model))
        opt.step(lambda m=model: m(x)[0], lambda o: (o - y).pow(2).sum())
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    # Same mathematics, different rounding (amplified by CG): close, not equal.
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-9)
    assert torch.equal(results[1], results[2])


def test_float32_step_keeps_dtype_and_decreases_the_loss():
    x, y = _recall_data(batch=8, steps=6)
    x, y = x.float(), y.float()
    model = ElmanRNN(1, 4, 1, readout="identity", dtype=torch.float32)
    opt = HessianFree(model.parameters(), max_cg_iters=20, model=model)
    before = opt.step(lambda: model(x)[0], lambda o: (o - y).pow(2).sum())
    after = float((model(x)[0].detach() - y).pow(2).sum())
    assert all(p.dtype == torch.float32 and bool(torch.isfinite(p).all())
               for p in model.parameters())
    assert after < float(before)


# ---------------------------------------------------------------------------------------------
# (5) bad input


@pytest.mark.parametrize("kwargs,name", [
    ({"damping": 0.0}, "damping"),
    ({"damping": -1.0}, "damping"),
    ({"damping": math.nan}, "damping"),
    ({"lr": 0.0}, "lr"),
    ({"max_cg_iters": 0}, "max_cg_iters"),
    ({"cg_decay": 1.5}, "cg_decay"),
    ({"cg_backtrack_gamma": 1.0}, "cg_backtrack_gamma"),
    ({"precond_exponent": 2.0}, "precond_exponent"),
    ({"structural_damping": -0.1}, "structural_damping"),
    ({"damping_boost": 0.5}, "damping_boost"),
    ({"damping_drop": 1.0}, "damping_drop"),
    ({"armijo_c": 0.0}, "armijo_c"),
    ({"ls_decay": 1.0}, "ls_decay"),
    ({"cg_progress_eps": 0.0}, "cg_progress_eps"),
])
def test_invalid_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HessianFree([nn.Parameter(torch.zeros(2))], **kwargs)


def test_misuse_raises():
    model = ElmanRNN(1, 2, 1)
    other = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="not parameters of the model"):
        HessianFree([other], model=model)
    with pytest.raises(ValueError, match="groups"):
        HessianFree([{"params": [model.U]}, {"params": [model.W]}])
    x = torch.randn(2, 3, 1)
    opt = HessianFree(model.parameters(), structural_damping=0.1)
    with pytest.raises(ValueError, match="hidden"):
        opt.step(lambda: model(x)[0], lambda o: o.pow(2).sum())
    opt = HessianFree(model.parameters())
    with pytest.raises(ValueError, match="structural_damping"):
        opt.step(lambda: model(x)[0], lambda o: o.pow(2).sum(), hidden=lambda: model(x)[1])
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: model(x)[0], lambda o: o.pow(2))
    with pytest.raises(TypeError, match=r"one torch\.Tensor"):
        opt.step(lambda: model(x), lambda o: o.pow(2).sum())


def _small_problem():
    model = ElmanRNN(1, 3, 1, readout="identity", dtype=F64)
    x, y = _recall_data(batch=4, steps=5)
    return model, x, y


@pytest.mark.parametrize("case", ["nan_loss", "nan_gradient", "zero_damping", "nan_damping"])
def test_bad_step_is_skipped_with_a_warning_and_weights_unchanged(case):
    model, x, y = _small_problem()
    opt = HessianFree(model.parameters(), model=model)
    before = [p.detach().clone() for p in model.parameters()]

    def loss(o):
        if case == "nan_loss":
            return (o - y).pow(2).sum() * math.nan
        if case == "nan_gradient":  # value 0, gradient inf * 0 = NaN
            return torch.sqrt((o - o.detach()).pow(2).sum())
        return (o - y).pow(2).sum()

    if case == "zero_damping":
        opt.param_groups[0]["damping"] = 0.0
    if case == "nan_damping":
        opt.param_groups[0]["damping"] = math.nan
    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step(lambda: model(x)[0], loss)
    assert opt.skipped_steps == 1 and opt.state["skipped_steps"] == 1
    assert opt.last_step["skipped"]
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    # A good step afterwards works and is not counted as skipped.
    opt.param_groups[0]["damping"] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: model(x)[0], lambda o: (o - y).pow(2).sum())
    assert opt.skipped_steps == 1
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_non_finite_trial_points_are_rejected_by_the_line_search():
    theta = nn.Parameter(torch.zeros(1, dtype=F64))
    # f = 1/2 (theta - 3)^2, undefined (NaN) beyond theta = 2: the full step lands there.
    def loss(o):
        return torch.where(o > 2, math.nan, 0.5 * (o - 3.0) ** 2).sum()

    opt = HessianFree([theta], damping=1e-6)
    opt.step(lambda: theta * 1.0, loss)
    info = opt.last_step
    # Independent Armijo search over alpha = 0.8^j on the known p = 3 / (1 + lambda).
    p, f0 = 3.0 / (1.0 + 1e-6), 4.5
    alpha = next(a for a in (0.8**j for j in range(60))
                 if a * p <= 2 and 0.5 * (a * p - 3) ** 2 <= f0 + 1e-2 * a * (-3.0 * p))
    assert info["alpha"] == pytest.approx(alpha)
    value = float(theta.detach())
    assert value == pytest.approx(alpha * p) and math.isfinite(value)
    assert info["rho"] == -math.inf and info["next_damping"] == pytest.approx(1.5e-6)


# ---------------------------------------------------------------------------------------------
# (6) Levenberg-Marquardt rule and Armijo line search, against closed forms


@pytest.mark.parametrize("target,factor", [(4.0, 1.5), (1.0, 2.0 / 3.0)])
def test_levenberg_marquardt_and_armijo_on_a_scalar_model(target, factor):
    # outputs = sin(theta), loss = 1/2 (sin(theta) - target)^2, theta = 0: G = cos^2 0 = 1,
    # g = -target, p = target / (1 + lambda), q(p) = -target^2 / (2 (1 + lambda)).
    lam = 0.1
    theta = nn.Parameter(torch.zeros(1, dtype=F64))
    opt = HessianFree([theta], damping=lam)
    opt.step(lambda: torch.sin(theta), lambda o: 0.5 * (o - target).pow(2).sum())
    info = opt.last_step

    def f(t: float) -> float:
        return 0.5 * (math.sin(t) - target) ** 2

    p = target / (1 + lam)
    q = -(target**2) / (2 * (1 + lam))
    rho = (f(p) - f(0.0)) / q
    assert info["rho"] == pytest.approx(rho, rel=1e-10)
    assert (rho < 0.25) == (factor > 1)
    assert opt.damping == pytest.approx(lam * factor)
    alpha = next(a for a in (0.8**j for j in range(60))
                 if f(a * p) <= f(0) + 1e-2 * a * (-target * p))
    assert info["alpha"] == pytest.approx(alpha)
    assert float(theta.detach()) == pytest.approx(alpha * p, rel=1e-12)
    if target == 4.0:
        assert alpha < 1.0  # the full step overshoots: the line search had to shrink it


def test_warm_start_is_the_decayed_previous_solution_and_state_round_trips():
    model, x, y = _small_problem()
    opt = HessianFree(model.parameters(), max_cg_iters=15, cg_decay=0.5)
    opt.step(lambda: model(x)[0], lambda o: (o - y).pow(2).sum())
    prev = opt.state["cg_init"].clone()
    state = opt.state_dict()
    opt2 = HessianFree(model.parameters(), max_cg_iters=15, cg_decay=0.5)
    opt2.load_state_dict(state)
    assert opt2.damping == opt.damping
    torch.testing.assert_close(opt2.state["cg_init"], prev)
    # The next CG run starts at 0.5 * prev unless that is worse than zero.
    gn = opt2.gauss_newton(lambda: model(x)[0], lambda o: (o - y).pow(2).sum())
    op = opt2.curvature_operator(lambda: model(x)[0], lambda o: (o - y).pow(2).sum())
    x0 = 0.5 * prev
    phi0 = float(0.5 * x0 @ op(x0) + gn.gradient @ x0)
    opt2.step(lambda: model(x)[0], lambda o: (o - y).pow(2).sum())
    info = opt2.last_step
    assert info["cg_restarted"] == (phi0 >= 0)
    assert info["cg_initial_objective"] == (0.0 if phi0 >= 0 else pytest.approx(phi0, rel=1e-9))
