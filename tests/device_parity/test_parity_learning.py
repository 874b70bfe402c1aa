"""Device parity of the learning rules (BPTT, RTRL, forward mode, UORO), trainers and clipping.

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from rnnlab.learning import (
    BPTT,
    ELSTMRTRL,
    RTRL,
    UORO,
    EpochTrainer,
    ForwardModeRTRL,
    GradientClipper,
    OnlineTrainer,
    SnAp1,
    clip_grad_norm_,
    clip_grad_value_,
    squared_error,
)
from rnnlab.models import ElmanRNN
from tests.device_parity._parity import (
    CPU,
    DEV,
    DTYPES,
    F32,
    F64,
    ONLINE_MODELS,
    OUT,
    PARITY_MARKS,
    B,
    D,
    H,
    T,
    _detach,
    _elstm_model,
    _sequence_data,
    assert_tensor,
    assert_tree,
    grads_of,
    moved,
    params_of,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


@pytest.mark.parametrize("truncation", [None, 3])
@DTYPES
def test_bptt(truncation, dtype):
    torch.manual_seed(50)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y, h0 = _sequence_data(51)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, h: torch.Tensor) -> dict[str, Any]:
        rule = BPTT(m, truncation=truncation, reduction="mean")
        res = rule.accumulate(xs, ys, h)
        out = {"outputs": res.outputs, "loss": res.loss, "final": res.final_state,
               "grads": {k: g.clone() for k, g in grads_of(m).items()}}
        m.zero_grad(set_to_none=True)
        rule.reset(B, h)
        online = [rule.step(xs[:, t], ys[:, t]) for t in range(T)]
        rule.flush()
        out.update(online=torch.stack(online, 1), online_grads=grads_of(m), state=rule.state,
                   last_loss=rule.last_loss)
        return out

    ref = run(copy.deepcopy(model), x, y, h0)
    assert_tree(run(moved(model, dtype), *to_dev((x, y, h0), dtype)), ref, dtype)


@DTYPES
def test_rtrl(dtype):
    torch.manual_seed(53)
    model = ElmanRNN(D, H, OUT, readout="sigmoid", dtype=F64)
    x, y, h0 = _sequence_data(54)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, h: torch.Tensor) -> dict[str, Any]:
        rule = RTRL(m, reduction="mean")
        rule.reset(B, h)
        # step 2 advances without a target: the influence still moves, no gradient is added
        outs = [rule.step(xs[:, t], None if t == 2 else ys[:, t]) for t in range(T)]
        return {"outputs": torch.stack(outs, 1), "grads": grads_of(m), "state": rule.state,
                "influence": {k: v.clone() for k, v in rule.influence.items()},
                "loss": rule.last_loss}

    ref = run(copy.deepcopy(model), x, y, h0)
    assert_tree(run(moved(model, dtype), *to_dev((x, y, h0), dtype)), ref, dtype)


def _run_online(rule: Any, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
    rule.reset(xs.shape[0])
    outs = [rule.step(xs[:, t], ys[:, t]) for t in range(xs.shape[1])]
    return {"outputs": torch.stack(outs, 1), "grads": grads_of(rule.model),
            "state": _detach(rule.state), "loss": rule.last_loss}


@DTYPES
def test_elstm_rtrl(dtype):
    model = _elstm_model()
    x, y, _ = _sequence_data(57)

    def run(m: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        rule = ELSTMRTRL(m)
        return _run_online(rule, xs, ys) | {"influence": rule.influence}

    ref = run(copy.deepcopy(model), x, y)
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


@pytest.mark.parametrize("model_name", list(ONLINE_MODELS))
@pytest.mark.parametrize("rule_cls", [ForwardModeRTRL, SnAp1], ids=["forward", "snap1"])
@DTYPES
def test_forward_mode_rules(model_name, rule_cls, dtype):
    model = ONLINE_MODELS[model_name]()
    x, y, _ = _sequence_data(61, steps=5)

    def run(m: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        rule = rule_cls(m)
        out = _run_online(rule, xs, ys)
        out["influence"] = rule.influence if rule_cls is ForwardModeRTRL else rule.values
        return out

    ref = run(copy.deepcopy(model), x, y)
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


def _uoro_reference(model: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, seed: int,
                    eps: float) -> dict[str, Any]:
    """UORO (Tallec & Ollivier 2018) written out on the CPU in float64 with explicit Jacobians,
    drawing the signs nu exactly as the rule does on DEVICE: one generator on DEVICE seeded
    with ``seed``, one ``randint(0, 2, (batch, S))`` per step. A device's generator gives the
    same numbers to the same calls whatever the dtype, so this is the rule's own noise."""
    noise = torch.Generator(device=DEV).manual_seed(seed)
    params = {"U": model.U.detach(), "W": model.W.detach(), "b": model.b.detach()}
    sizes = [p.numel() for p in params.values()]
    batch = xs.shape[0]
    s = torch.zeros(batch, H, dtype=F64)
    s_tilde = torch.zeros(batch, H, dtype=F64)
    theta_tilde = torch.zeros(batch, sum(sizes), dtype=F64)
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    outs = []
    for t in range(xs.shape[1]):
        nu = torch.randint(0, 2, (batch, H), generator=noise, device=DEV).to(CPU, F64) * 2 - 1
        for k in range(batch):
            def step(flat_theta: torch.Tensor, prev: torch.Tensor, k: int = k,
                     t: int = t) -> torch.Tensor:
                u, w, b = torch.split(flat_theta, sizes)
                return torch.tanh(u.view(H, D) @ xs[k, t] + w.view(H, H) @ prev + b)

            theta = torch.cat([p.reshape(-1) for p in params.values()])
            j_theta, j_s = torch.autograd.functional.jacobian(step, (theta, s[k]))
            js_s = j_s @ s_tilde[k]
            nu_j = nu[k] @ j_theta
            rho0 = math.sqrt(float(theta_tilde[k].norm()) / (float(js_s.norm()) + eps)) + eps
            rho1 = math.sqrt(float(nu_j.norm()) / (float(nu[k].norm()) + eps)) + eps
            s_tilde[k] = rho0 * js_s + rho1 * nu[k]
            theta_tilde[k] = theta_tilde[k] / rho0 + nu_j / rho1
            s[k] = step(theta, s[k])
        leaf = s.clone().requires_grad_(True)
        o = model.output(leaf)
        loss = (o - ys[:, t]).pow(2).sum()
        g_s, g_v, g_c = torch.autograd.grad(loss, [leaf, model.V, model.c])
        grads["V"] += g_v
        grads["c"] += g_c
        total = ((g_s * s_tilde).sum(1, keepdim=True) * theta_tilde).sum(0)
        for name, part in zip(params, torch.split(total, sizes), strict=True):
            grads[name] += part.view_as(params[name])
        outs.append(o.detach())
    return {"outputs": torch.stack(outs, 1), "grads": grads, "state": s,
            "state_tilde": s_tilde, "theta_tilde": theta_tilde}


@DTYPES
def test_uoro_against_explicit_jacobians_with_the_device_noise(dtype):
    torch.manual_seed(62)
    model = ElmanRNN(D, H, OUT, readout="tanh", dtype=F64)
    x, y, _ = _sequence_data(63, steps=5)
    seed, eps = 7, 1e-7
    ref = _uoro_reference(model, x, y, seed, eps)
    m = moved(model, dtype)
    rule = UORO(m, seed=seed, eps=eps)
    assert rule.parameter_names == ["U", "W", "b"]
    got = _run_online(rule, *to_dev((x, y), dtype))
    got = {"outputs": got["outputs"], "grads": got["grads"], "state": got["state"],
           "state_tilde": rule.state_tilde, "theta_tilde": rule.theta_tilde}
    # float32: the rank-one estimate divides by rho0, rho1 (square roots of norm ratios), so a
    # relative error of the Jacobian products grows by a few more factors than a plain forward
    # pass; 10x the usual float32 tolerance.
    assert_tree(got, ref, dtype, loose=10.0 if dtype == F32 else 1.0)


@pytest.mark.parametrize("rule_name", ["rtrl", "bptt3", "forward"])
@DTYPES
def test_online_trainer(rule_name, dtype):
    torch.manual_seed(64)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y, _ = _sequence_data(65, batch=2)
    make = {"rtrl": RTRL, "bptt3": lambda m: BPTT(m, truncation=3),
            "forward": ForwardModeRTRL}[rule_name]

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        rule = make(m)
        rule.reset(2)
        trainer = OnlineTrainer(rule, torch.optim.SGD(m.parameters(), lr=0.05), clip_norm=0.5)
        outs = [trainer.step(xs[:, t], ys[:, t]) for t in range(T)]
        # one sample given as (D,) / (O,): the trainer adds the batch dimension
        rule.reset(1)
        single = trainer.step(xs[0, 0], ys[0, 0])
        return {"outputs": torch.stack(outs, 1), "single": single, "params": params_of(m),
                "running": trainer.running.value, "clipped": trainer.clipper.clipped,
                "skipped": trainer.clipper.skipped}

    ref = run(copy.deepcopy(model), x, y)
    assert ref["clipped"] > 0  # the threshold is low enough to act
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


@DTYPES
def test_epoch_trainer(dtype):
    torch.manual_seed(66)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y = randn(6, T, D, seed=67), randn(6, T, OUT, seed=68, scale=0.5)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        trainer = EpochTrainer(BPTT(m, truncation=4, reduction="mean"),
                               torch.optim.Adam(m.parameters(), lr=0.01), clip_norm=1.0)
        history = trainer.fit(xs, ys, epochs=2, batch_size=4, seed=3)
        return {"history": history, "params": params_of(m)}

    ref = run(copy.deepcopy(model), x, y)
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


@DTYPES
def test_gradient_clipping(dtype):
    torch.manual_seed(69)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y, _ = _sequence_data(70)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def backward() -> None:
            m.zero_grad(set_to_none=True)
            squared_error(m(xs)[0], ys).backward()

        backward()
        out["norm"] = clip_grad_norm_(m.parameters(), 0.1)
        out["after_norm"] = {k: g.clone() for k, g in grads_of(m).items()}
        backward()
        out["value_norm"] = clip_grad_value_(m, 0.01, norm_type=1.0)
        out["after_value"] = {k: g.clone() for k, g in grads_of(m).items()}
        backward()
        res = GradientClipper("norm", 0.2, norm_type=math.inf)(m)
        out["clipper"] = (res.norm, res.clipped, res.finite)
        out["after_clipper"] = {k: g.clone() for k, g in grads_of(m).items()}
        backward()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        res = GradientClipper("value", 0.05).step(opt)
        out["step"] = (res.norm, res.clipped, res.finite, res.stepped)
        out["params"] = params_of(m)
        backward()
        m.W.grad[0, 0] = math.nan
        with pytest.warns(RuntimeWarning, match="non-finite"):
            res = GradientClipper("norm", 1.0).step(opt)
        out["nonfinite"] = (res.finite, res.stepped, [p.grad for p in m.parameters()])
        return out

    ref = run(copy.deepcopy(model), x, y)
    got = run(moved(model, dtype), *to_dev((x, y), dtype))
    # The norms are accumulated in float64 on the gradients' device, whatever their dtype.
    for key in ("norm", "value_norm"):
        assert_tensor(got.pop(key), ref.pop(key), dtype, out_dtype=F64, name=key)
    assert_tree(got, ref, dtype)
