"""The gradient-flow experiment: dL(T)/ds(t) checked against the explicit backward recursion
(tanh RNN) and central finite differences (LSTM h and c, GRU), the reach against a closed form,
and the run folder, determinism and bad options."""

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from rnnlab.cli import app
from rnnlab.experiments import get_experiment, resolve_config, run_experiment
from rnnlab.experiments.gradient_flow import build_network, gradient_reach, state_gradients
from tests.reference import assert_within, carried_gaps, gamma, unit_roundoff

F64 = torch.float64


def _randomize(model, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


# ------------------------------------------------------------------------------------------
# tanh RNN: the explicit backward recursion
def test_rnn_gradients_equal_the_explicit_backward_recursion():
    batch, steps, d, n = 3, 14, 2, 5
    model = build_network("rnn", d, n, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    _randomize(model, 0.6, 1)
    x = torch.randn(batch, steps, d, dtype=F64)
    y = torch.randn(batch, 2, dtype=F64)
    grads, losses = state_gradients(model, x, y)
    assert len(grads) == 1 and grads[0].shape == (batch, steps, n)

    # forward and backward by hand: h(t) = tanh(U x(t) + W h(t-1) + b), o = V h(T) + c
    cell = model.cell
    u, w = cell.weight_ih.detach(), cell.weight_hh.detach()
    b = (cell.bias_ih + cell.bias_hh).detach()
    v, c = model.readout.weight.detach(), model.readout.bias.detach()
    h = torch.zeros(batch, n, dtype=F64)
    hs = []
    for t in range(steps):
        h = torch.tanh(x[:, t] @ u.T + h @ w.T + b)
        hs.append(h)
    err = hs[-1] @ v.T + c - y
    # Tolerances from the computation. The cell adds its two biases separately, this loop
    # sums them first: per step the pre-activations differ by at most 2 gamma_(d+n+2) times
    # |x||U^T| + |h||W^T| + |b_ih| + |b_hh| (tests.reference.gamma), tanh adds 2 ulp in each;
    # the gaps are carried on by the Jacobians diag(1 - h(t)^2) W (carried_gaps). Then o =
    # V h + c moves by ||V|| e + 2 gamma_(n+1) (|V||h| + |c|), and L = |o - y|^2 / 2 by
    # |o - y| . gap_o + gap_o^2 + 2 gamma_2 L.
    step_terms = (x.abs() @ u.abs().T + (cell.bias_ih.abs() + cell.bias_hh.abs()).detach()
                  + torch.stack([torch.zeros(batch, n, dtype=F64), *hs[:-1]], 1).abs()
                  @ w.abs().T)
    delta = 2 * gamma(d + n + 2) * float(step_terms.max()) + 4 * unit_roundoff(F64)
    gap_h = max(max(carried_gaps([(1 - hs[t][i] ** 2)[:, None] * w for t in range(steps)],
                                 delta)) for i in range(batch))
    gap_o = (float(v.abs().sum(1).max()) * gap_h
             + 2 * gamma(n + 1) * float((hs[-1].abs() @ v.abs().T + c.abs()).max()))
    loss_ref = 0.5 * (err**2).sum(1)
    assert_within(losses, loss_ref, err.abs().sum(1) * gap_o + 2 * gap_o**2
                  + 2 * gamma(2) * loss_ref, "losses")
    g = err @ v  # dL/dh(T) = V^T (o - y)
    expected = [g]
    for t in range(steps - 2, -1, -1):
        g = (g * (1 - hs[t + 1] ** 2)) @ w  # g(t) = W^T diag(1 - h(t+1)^2) g(t+1)
        expected.append(g)
    expected = torch.stack(expected[::-1], 1)
    # The backward pass repeats these products (transposed) on states and errors that differ
    # by gap_h and gap_o: dL/dh(T) moves by ||V^T|| gap_o + 2 gamma_2 |o - y||V|; each step
    # back adds 2 gamma_n |W^T||g| and ||W^T|| |g| 2 gap_h (from 1 - h^2), carried back by
    # the Jacobians' transposes. One delta, the larger of the two, covers both.
    g_max = float(expected.abs().max())
    g_delta = max(float(v.abs().sum(0).max()) * gap_o
                  + 2 * gamma(2) * float((err.abs() @ v.abs()).max()),
                  (2 * gamma(n) + 2 * gap_h) * g_max * float(w.abs().sum(0).max()))
    for i in range(batch):
        # step k back gives g(T-1-k) = (diag(1 - h(T-k)^2) W)^T g(T-k); index 0: the start
        jacs = [torch.eye(n, dtype=F64)] + [((1 - hs[steps - k][i] ** 2)[:, None] * w).T
                                            for k in range(1, steps)]
        bound = torch.tensor(carried_gaps(jacs, g_delta)[::-1], dtype=F64)[:, None]
        assert_within(grads[0][i], expected[i], bound, f"dL/dh of sequence {i}")
    assert float(expected[:, 0].abs().max()) > 1e-6  # the check reaches the first step


# ------------------------------------------------------------------------------------------
# LSTM and GRU: central finite differences
def _loss_from(model, x, y, t, state):
    """The loss when the state after step t is ``state`` (steps t+1..T rerun)."""
    for s in range(t + 1, x.shape[1]):
        state = model.cell(x[:, s], state)
    return float(0.5 * (model.output(state) - y).pow(2).sum())


def _states(model, x):
    state, out = model.initial_state(x.shape[0]), []
    with torch.no_grad():
        for s in range(x.shape[1]):
            state = model.cell(x[:, s], state)
            out.append(state)
    return out


def test_lstm_h_and_c_gradients_match_finite_differences():
    torch.manual_seed(3)
    d, n, steps, eps = 2, 3, 6, 1e-6
    model = build_network("lstm", d, n, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    _randomize(model, 0.8, 2)  # peepholes included: every path is non-trivial
    x = torch.randn(1, steps, d, dtype=F64)
    y = torch.randn(1, 1, dtype=F64)
    (g_h, g_c), _ = state_gradients(model, x, y)
    states = _states(model, x)
    cell = model.cell
    bias = cell.bias_ih + cell.bias_hh
    with torch.no_grad():
        for t in range(steps):
            h_t, c_t = states[t]
            h_prev = states[t - 1][0] if t > 0 else torch.zeros(1, n, dtype=F64)
            # a_o(t) without the peephole term, from the weights (gate order i, f, g, o)
            a_o = (x[:, t] @ cell.weight_ih.T + h_prev @ cell.weight_hh.T + bias)[:, 3 * n:]
            fd_h, fd_c = torch.zeros(n, dtype=F64), torch.zeros(n, dtype=F64)
            for i in range(n):
                e = torch.zeros(1, n, dtype=F64)
                e[0, i] = eps
                fd_h[i] = (_loss_from(model, x, y, t, (h_t + e, c_t))
                           - _loss_from(model, x, y, t, (h_t - e, c_t))) / (2 * eps)

                def through_h(c_new, a_o=a_o):
                    # h(t) = o(t) tanh(c(t)), o(t) = sigma(a_o + p_o * c(t)): dL/dc(t) is total
                    o = torch.sigmoid(a_o + cell.peephole_o * c_new)
                    return (o * torch.tanh(c_new), c_new)

                fd_c[i] = (_loss_from(model, x, y, t, through_h(c_t + e))
                           - _loss_from(model, x, y, t, through_h(c_t - e))) / (2 * eps)
            assert torch.allclose(g_h[0, t], fd_h, rtol=1e-6, atol=1e-9), t
            assert torch.allclose(g_c[0, t], fd_c, rtol=1e-6, atol=1e-9), t
    assert float(g_c[0, 0].abs().max()) > 1e-4 and float(g_h[0, 0].abs().max()) > 1e-4


@pytest.mark.parametrize("form", ["cho", "torch"])
def test_gru_gradients_match_finite_differences(form):
    torch.manual_seed(4)
    d, n, steps, eps = 2, 3, 6, 1e-6
    model = build_network("gru", d, n, 1, gru_form=form,
                          generator=torch.Generator().manual_seed(0), dtype=F64)
    _randomize(model, 0.8, 5)
    x = torch.randn(1, steps, d, dtype=F64)
    y = torch.randn(1, 1, dtype=F64)
    (g_h,), _ = state_gradients(model, x, y)
    states = _states(model, x)
    with torch.no_grad():
        for t in range(steps):
            fd = torch.zeros(n, dtype=F64)
            for i in range(n):
                e = torch.zeros(1, n, dtype=F64)
                e[0, i] = eps
                fd[i] = (_loss_from(model, x, y, t, states[t] + e)
                         - _loss_from(model, x, y, t, states[t] - e)) / (2 * eps)
            assert torch.allclose(g_h[0, t], fd, rtol=1e-6, atol=1e-9), t
    assert float(g_h[0, 0].abs().max()) > 1e-4


def test_float32_gradients_agree_with_float64():
    x = torch.randn(2, 20, 2, dtype=F64)
    y = torch.rand(2, 1, dtype=F64)
    for kind in ("rnn", "lstm", "gru"):
        m64 = build_network(kind, 2, 6, generator=torch.Generator().manual_seed(7), dtype=F64)
        m32 = build_network(kind, 2, 6, generator=torch.Generator().manual_seed(7),
                            dtype=torch.float32)
        m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
        g64, _ = state_gradients(m64, x, y)
        g32, _ = state_gradients(m32, x.float(), y.float())
        for a, b in zip(g64, g32, strict=True):
            assert b.dtype == torch.float32
            # relative to each step's norm: the gradients span many orders of magnitude
            scale = a.norm(dim=-1, keepdim=True)
            assert float(((b.double() - a) / scale).abs().max()) < 1e-4, kind


def test_state_gradients_reject_bad_input():
    model = build_network("lstm", 2, 4, dtype=F64)
    x = torch.randn(2, 5, 2, dtype=F64)
    y = torch.zeros(2, 1, dtype=F64)
    with pytest.raises(ValueError, match="features"):
        state_gradients(model, torch.randn(2, 5, 3, dtype=F64), y)
    bad = x.clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        state_gradients(model, bad, y)
    with pytest.raises(ValueError, match="target"):
        state_gradients(model, x, torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="rows"):
        state_gradients(model, x, torch.zeros(3, 1, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        state_gradients(model, x.float(), y)
    with pytest.raises(TypeError, match="RecurrentNetwork"):
        state_gradients(model.cell, x, y)
    with pytest.raises(ValueError, match="unknown model"):
        build_network("transformer", 2, 4)


# ------------------------------------------------------------------------------------------
def test_gradient_reach_closed_form():
    steps = 40
    norms = 0.5 ** torch.arange(steps - 1, -1, -1, dtype=F64)  # norms[T - k] = 2^-k
    # 2^-9 = 1.95e-3 >= 1e-3 > 2^-10 = 9.8e-4: the first step below is 10 back
    assert gradient_reach(norms, 1e-3) == 10
    assert gradient_reach(norms, 0.3) == 2  # 0.5 >= 0.3 > 0.25
    assert gradient_reach(torch.ones(steps, dtype=F64), 1e-3) is None
    rising = norms.flip(0)  # grows going back: never below
    assert gradient_reach(rising, 1e-3) is None
    with pytest.raises(ValueError, match="fraction"):
        gradient_reach(norms, 1.5)
    with pytest.raises(ValueError, match="non-finite"):
        gradient_reach(torch.tensor([1.0, float("nan")]), 1e-3)


# ------------------------------------------------------------------------------------------
SMALL = {"length": "40", "hidden-size": "16", "train-steps": "2", "batch": "4"}


def test_run_writes_table_plot_and_metrics(tmp_path):
    result, run_dir = run_experiment("gradient-flow", SMALL, out_dir=tmp_path)
    for name in ("config.json", "metrics.csv", "table.csv", "result.json", "gradient_flow.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "gradient_flow.png").read_bytes()[:4] == b"\x89PNG"
    assert [(r["model"], r["state"]) for r in result.rows] == [
        ("tanh RNN", "h"), ("LSTM", "h"), ("LSTM", "c"), ("GRU", "h")]
    length = result.figures["length"]
    assert 40 <= length <= 44  # H&S 1997: L uniform on [T, T + T/10]
    with open(run_dir / "metrics.csv") as fh:
        metrics = list(csv.DictReader(fh))
    assert sum(m["phase"] == "train" for m in metrics) == 3 * 2
    per_panel: dict[tuple[str, str], list[float]] = {}
    for m in metrics:
        if m["phase"] == "gradient":
            per_panel.setdefault((m["model"], m["state"]), []).append(float(m["value"]))
    assert all(len(v) == length for v in per_panel.values()) and len(per_panel) == 4
    # the table's numbers are those of the logged per-step norms
    for row, key in zip(result.rows, per_panel, strict=True):
        norms = torch.tensor(per_panel[key], dtype=F64)
        assert row["norm_T"] == pytest.approx(float(norms[-1]), rel=1e-12)
        assert row["norm_T-10"] == pytest.approx(float(norms[-11]), rel=1e-12)
        assert "norm_T-50" not in row  # not inside a sequence of length < 51
        assert row["reach"] == gradient_reach(norms, 1e-3)
        assert row["train_loss"] is not None and row["train_loss"] > 0
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["plots"] == ["gradient_flow.png"] and len(saved["rows"]) == 4
    with open(run_dir / "table.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4


def test_table_norm_equals_a_direct_computation_and_seed_repeats(tmp_path):
    opts = {"length": "30", "hidden-size": "8", "models": "rnn,lstm",
            "task": "delayed-recall", "tau": "20"}
    a, _ = run_experiment("gradient-flow", opts, out_dir=tmp_path / "a")
    b, _ = run_experiment("gradient-flow", opts, out_dir=tmp_path / "b")
    assert a.rows == b.rows
    c, _ = run_experiment("gradient-flow", {**opts, "seed": "1"}, out_dir=tmp_path / "c")
    assert c.rows != a.rows
    assert a.figures["sources"] == [30 - 1 - 20]
    # Rebuild the untrained tanh RNN and the sequence and differentiate with torch's fused
    # nn.RNN: a zero input delta(t) added to the pre-activation a(t) through identity input
    # weights gives dL/ddelta(t) = dL/da(t) = (1 - h(t)^2) * dL/dh(t).
    from rnnlab.tasks.long_term import delayed_recall

    task = delayed_recall(1, 30, 20, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = build_network("rnn", 1, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    rnn = torch.nn.RNN(1 + 8, 8, batch_first=True, dtype=F64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.cat([model.cell.weight_ih, torch.eye(8, dtype=F64)], 1))
        rnn.weight_hh_l0.copy_(model.cell.weight_hh)
        rnn.bias_ih_l0.copy_(model.cell.bias_ih)
        rnn.bias_hh_l0.copy_(model.cell.bias_hh)
    delta = torch.zeros(1, 30, 8, dtype=F64, requires_grad=True)
    hs, _ = rnn(torch.cat([task.inputs, delta], -1))
    out = model.readout(hs[:, -1])
    (0.5 * (out - task.targets[:, -1]).pow(2).sum()).backward()
    norms = (delta.grad[0] / (1 - hs[0].detach() ** 2)).norm(dim=1)
    assert a.rows[0]["norm_T"] == pytest.approx(float(norms[-1]), rel=1e-10)
    assert a.rows[0]["norm_T-10"] == pytest.approx(float(norms[-11]), rel=1e-10)
    assert a.rows[0]["rel_norm_at_source"] == pytest.approx(
        float(norms[9] / norms[-1]), rel=1e-10)


def test_lstm_cell_state_reaches_further_than_the_tanh_rnn_at_init(tmp_path):
    # forget bias 1: c(t) keeps ~sigma(1) = 0.73 of its gradient per step; the tanh RNN's
    # factor is at most ||W|| (about 0.6 at torch's init) times tanh' <= 1.
    result, _ = run_experiment("gradient-flow", {"length": "60", "models": "rnn,lstm"},
                               out_dir=tmp_path)
    f = result.figures
    assert f["reach_lstm_c"] > f["reach_rnn_h"]


def test_bad_options_raise():
    exp = get_experiment("gradient-flow")
    for overrides, match in [
        ({"task": "copying"}, "task"),
        ({"models": "rnn,transformer"}, "unknown model"),
        ({"models": "rnn,rnn"}, "twice"),
        ({"length": "5"}, "length"),
        ({"length": "0"}, "length"),
        ({"hidden-size": "0"}, "hidden_size"),
        ({"task": "delayed-recall", "length": "30", "tau": "30"}, "tau"),
        ({"train-steps": "-1"}, "train_steps"),
        ({"lr": "0"}, "lr"),
        ({"fraction": "1.5"}, "fraction"),
        ({"floor": "0"}, "floor"),
        ({"gru-form": "keras"}, "gru_form"),
        ({"dtype": "float16"}, "dtype"),
        ({"variant": "mine"}, "variant"),
        ({"clip-norm": "-1"}, "clip_norm"),
        ({"device": "potato"}, "device"),
    ]:
        with pytest.raises(ValueError, match=match):
            resolve_config(exp, overrides)
    with pytest.raises(ValueError, match="expects int"):
        resolve_config(exp, {"length": "long"})


def test_cli_runs_gradient_flow(tmp_path):
    out = CliRunner().invoke(app, ["run", "gradient-flow", "--length", "20", "--hidden-size",
                                   "4", "--models", "gru", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "reach" in out.output and (tmp_path / "gradient_flow.png").is_file()
