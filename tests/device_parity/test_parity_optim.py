"""Device parity of the optimizers (Hessian-free, conjugate gradient).

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

import copy

import pytest
import torch

from rnnlab.models import ElmanRNN
from rnnlab.optim import HessianFree, conjugate_gradient
from tests.device_parity._parity import (
    DTYPES,
    F32,
    F64,
    OUT,
    PARITY_MARKS,
    D,
    H,
    _sequence_data,
    assert_tree,
    moved,
    on_device,
    params_of,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


@pytest.mark.parametrize("backend", ["func", "autograd"])
@DTYPES
def test_hessian_free_steps(backend, dtype):
    torch.manual_seed(80)
    model = ElmanRNN(D, H, OUT, readout="tanh", dtype=F64)
    x, y, _ = _sequence_data(81)
    v = randn(sum(p.numel() for p in model.parameters()), seed=82)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, vec: torch.Tensor) -> dict:
        # autograd backend: also the preconditioner and structural damping (Martens &
        # Sutskever 2011), so that every curvature product runs on the device.
        extras = backend == "autograd"
        opt = HessianFree(m.parameters(), damping=1.0, model=None if extras else m,
                          max_cg_iters=6, preconditioner=extras,
                          structural_damping=0.1 if extras else 0.0)
        hidden = (lambda: m.hidden_states(xs)) if extras else None

        def forward() -> torch.Tensor:
            return m(xs)[0]

        def loss(out: torch.Tensor) -> torch.Tensor:
            return (out - ys).pow(2).sum()

        # two steps: the second starts CG from the decayed first solution
        values = [opt.step(forward, loss, hidden) for _ in range(2)]
        last = opt.last_step
        gn = opt.gauss_newton(forward, loss)
        return {"values": values, "params": params_of(m), "damping": opt.damping,
                "cg": (last["cg_iterations"], last["cg_stop"], last["backtrack_iteration"]),
                "alpha": last["alpha"], "new_loss": last["new_loss"],
                "cg_init": opt.state["cg_init"], "gn_v": gn.matvec(vec),
                "gradient": gn.gradient, "square_gradients": gn.per_sample_square_gradients(),
                "damped_v": opt.curvature_operator(forward, loss, hidden)(vec)}

    ref = run(copy.deepcopy(model), x, y, v)
    got = run(moved(model, dtype), *to_dev((x, y, v), dtype))
    # The step is the output of a CG solve (a few iterations) and of comparisons between
    # losses; in float32 its round-off is that of a linear solve, 10x the plain tolerance.
    assert_tree(got, ref, dtype, loose=10.0 if dtype == F32 else 1.0)


@DTYPES
def test_hessian_free_skipped_step_returns_on_the_device(dtype):
    # A step refused for a bad damping must answer like the others: the loss slot holds a NaN
    # of the parameters' dtype on their device (the other skips return the loss there).
    model = moved(ElmanRNN(D, H, OUT, dtype=F64), dtype)
    x, y, _ = to_dev(_sequence_data(83), dtype)
    opt = HessianFree(model.parameters(), model=model)
    opt.param_groups[0]["damping"] = -1.0
    with pytest.warns(RuntimeWarning, match="skipped"):
        value = opt.step(lambda: model(x)[0], lambda out: (out - y).pow(2).sum())
    assert on_device(value) and value.dtype == dtype and bool(torch.isnan(value))


@DTYPES
def test_conjugate_gradient(dtype):
    m = randn(8, 8, seed=84)
    a = m @ m.t() / 8 + torch.eye(8, dtype=F64)
    b, x0 = randn(8, seed=85), randn(8, seed=86, scale=0.1)
    precond = a.diagonal().clone()

    def run(mat: torch.Tensor, rhs: torch.Tensor, start: torch.Tensor, pre: torch.Tensor):
        res = conjugate_gradient(lambda vec: mat @ vec, rhs, start, max_iters=5,
                                 preconditioner=pre)
        return {"x": res.x, "iterations": res.iterations, "stop": res.stop_reason,
                "phi": res.phi, "saved": res.saved, "restarted": res.restarted}

    ref = run(a, b, x0, precond)
    assert_tree(run(*to_dev((a, b, x0, precond), dtype)), ref, dtype)
