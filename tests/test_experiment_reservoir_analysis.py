"""The reservoir-analysis experiments: ``memory-capacity``, ``intrinsic-plasticity`` and
``deep-esn-entropy``, end to end on tiny configurations, against closed forms and independent
re-computations."""

import math

import numpy as np
import pytest
import torch

from rnnlab.analysis.memory import memory_capacity
from rnnlab.experiments import get_experiment, list_experiments, resolve_config, run_experiment
from rnnlab.experiments.deep_esn_entropy import DeepESNEntropyConfig, build, driving_input
from rnnlab.experiments.intrinsic_plasticity import mean_state_jacobian
from rnnlab.experiments.memory_capacity import MemoryCapacityConfig, build_reservoir
from rnnlab.reservoir.deep import DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.plasticity import LogisticEchoStateNetwork

MC_TINY = {"units": "10", "layers": "2", "density": "0.5", "layer-density": "0.8",
           "spectral-radii": "0.5,0.9", "train-length": "200", "test-length": "100",
           "batch": "2", "ip-steps": "200", "ip-washout": "20", "seeds": "2"}


def test_registered():
    names = {e.name for e in list_experiments()}
    assert {"memory-capacity", "intrinsic-plasticity", "deep-esn-entropy"} <= names


# ------------------------------------------------------------------------------------------------
# memory-capacity
def test_memory_capacity_end_to_end(tmp_path):
    models = ["ESN", "ESN+IP", "deepESN", "deepESN-IA", "groupedESN+IP", "DLR", "DLRB", "SCR"]
    result, run_dir = run_experiment(
        "memory-capacity",
        {**MC_TINY, "models": ",".join(models), "leak-models": "ESN,SCR", "leaks": "0.5,1.0",
         "leak-rho": "0.9"},
        out_dir=tmp_path)
    rows = result.rows
    assert len(rows) == len(models) * 2 + 2 * 2
    assert set(rows[0]) == {"panel", "model", "rho", "leak", "mc_mean", "mc_std", "linear_mc",
                            "rho_W", "eff_rho", "seeds", "ip_failed"}
    n, b = 10, 0.05
    for r in rows:
        assert r["ip_failed"] == 0 and r["seeds"] == 2
        # Jaeger (2001): MC <= N for i.i.d. input (N = all state features, also for deep ESNs)
        assert 0.5 < r["mc_mean"] <= n
        base = r["model"].removesuffix("+IP")
        # rho(W) against closed forms: the scaled random W and SCR have rho = the x value, a
        # delay line is nilpotent, DLRB is tridiagonal Toeplitz: 2 sqrt(r b) cos(pi / (N + 1))
        expected = {"DLR": 0.0, "DLRB": 2 * math.sqrt(r["rho"] * b) * math.cos(math.pi / (n + 1))
                    }.get(base, r["rho"])
        assert r["rho_W"] == pytest.approx(expected, abs=1e-9)
        if r["model"].endswith("+IP"):
            assert r["linear_mc"] is None and r["eff_rho"] != pytest.approx(r["rho_W"])
        elif base in ("ESN", "DLR", "DLRB", "SCR"):
            assert r["linear_mc"] is not None and 0 < r["linear_mc"] <= n
        else:
            assert r["linear_mc"] is None
    # SCR with leak a: eigenvalues 1 - a + a r w_k (w_k the N-th roots of unity): rho = 1 - a + a r
    scr = next(r for r in rows if r["panel"] == "leak" and r["model"] == "SCR"
               and r["leak"] == 0.5)
    assert scr["eff_rho"] == pytest.approx(0.5 + 0.5 * 0.9, abs=1e-9)
    # the leak panel's point at the rho panel's leak is the same measurement
    same = [r["mc_mean"] for r in rows if r["model"] == "ESN" and r["rho"] == 0.9
            and r["leak"] == 1.0]
    assert len(same) == 2 and same[0] == same[1]
    metrics = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(metrics) == 1 + 2 * (len(models) * 2 + 2)     # header + unique measurements
    assert (run_dir / "memory_capacity.png").is_file()
    assert "Peak MC" in result.summary


def test_memory_capacity_is_seeded(tmp_path):
    opts = {**MC_TINY, "models": "ESN,deepESN+IP", "spectral-radii": "0.8", "leak-models": "",
            "seeds": "1"}
    a, _ = run_experiment("memory-capacity", opts, out_dir=tmp_path / "a")
    b, _ = run_experiment("memory-capacity", opts, out_dir=tmp_path / "b")
    c, _ = run_experiment("memory-capacity", {**opts, "seed": "5"}, out_dir=tmp_path / "c")
    assert [r["mc_mean"] for r in a.rows] == [r["mc_mean"] for r in b.rows]
    assert [r["mc_mean"] for r in a.rows] != [r["mc_mean"] for r in c.rows]


def test_memory_capacity_tiny_input_reaches_linear_theory(tmp_path):
    """At input scaling 1e-4 the tanh is linear to ~1e-8: a well-conditioned DLR (r = 0.95)
    and SCR measure their linear-systems MC; for the DLR that is N - 1 exactly (MC_k = 1 for
    k = 1..N-1, 0 after: no sampling error, since r^2 = 1 or 0)."""
    n = 8
    result, _ = run_experiment(
        "memory-capacity",
        {"models": "DLR,SCR", "spectral-radii": "0.95", "leak-models": "", "units": str(n),
         "layers": "1", "input-scaling": "1e-4", "train-length": "1000", "test-length": "1000",
         "batch": "2", "seeds": "1"},
        out_dir=tmp_path)
    dlr, scr = result.rows
    assert dlr["linear_mc"] == pytest.approx(n - 1, abs=1e-8)
    assert dlr["mc_mean"] == pytest.approx(n - 1, abs=0.05)
    # SCR's MC_k lie strictly between 0 and 1, where r^2 on 2000 test samples has a sampling
    # error of ~0.01-0.03 per delay, correlated across delays (over seeds the total varied by
    # up to 0.25 around the theory)
    assert scr["mc_mean"] == pytest.approx(scr["linear_mc"], abs=0.3)


def test_memory_capacity_follows_the_deepesn_code_settings(tmp_path):
    """The defaults are the DeepESN code's MC example (input, inter-layer and bias scaling 0.1,
    dense layers, pseudo-inverse readout); a deep row equals memory_capacity called directly
    on the network built from those settings, and the layers above the first add memory.
    (That an absolute ridge discards small upper layers is tested in test_memory_capacity.)"""
    cfg = resolve_config(get_experiment("memory-capacity"), {})
    assert isinstance(cfg, MemoryCapacityConfig)
    assert (cfg.input_scaling, cfg.inter_scaling, cfg.bias_scaling) == (0.1, 0.1, 0.1)
    assert (cfg.density, cfg.layer_density, cfg.ridge) == (1.0, 1.0, 0.0)
    opts = {"models": "deepESN", "spectral-radii": "0.9", "leak-models": "", "units": "20",
            "layers": "4", "train-length": "400", "test-length": "200", "batch": "2",
            "seeds": "1"}
    result, _ = run_experiment("memory-capacity", opts, out_dir=tmp_path)
    cfg = resolve_config(get_experiment("memory-capacity"), opts)
    deep = DeepEchoStateNetwork(1, 5, 4, spectral_radius=0.9, input_scaling=0.1,
                                inter_scaling=0.1, bias_scaling=0.1, density=1.0, seed=0,
                                dtype=torch.float64)
    model = build_reservoir(cfg, "deepESN", 0.9, 1.0, 0)
    for a, b in zip(model.state_dict().values(), deep.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)   # the same draw, copied weights
    kw = {"n_delays": 40, "train_length": 400, "test_length": 200, "washout": 40, "batch": 2,
          "seed": 1_000_003}
    direct = memory_capacity(deep, **kw)
    # The same computation on the same numbers (1e-12: far below a sample's weight in r^2).
    assert result.rows[0]["mc_mean"] == pytest.approx(direct.mc, abs=1e-12)
    # The layers above the first add memory: measured 4.8 to 11.2 over network seeds 0-5.
    with torch.no_grad():
        first = memory_capacity(_Layers(deep, 1), **kw)
    assert direct.mc > first.mc + 2.5


class _Layers(torch.nn.Module):
    """The states of a deep ESN's first ``n`` layers only."""

    def __init__(self, deep: DeepEchoStateNetwork, n: int) -> None:
        super().__init__()
        self.deep, self.n, self.input_size = deep, n, 1

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.deep.layer_states(inputs)[: self.n], -1)


@pytest.mark.parametrize("overrides, match", [
    ({"models": "ESN,fooESN"}, "unknown model"),
    ({"bias-scaling": "-0.1"}, "bias_scaling"),
    ({"ridge": "-1"}, "ridge"),
    ({"leak-models": "SCR+XY"}, "unknown model"),
    ({"units": "100", "layers": "7"}, "must divide"),
    ({"leak": "1.5"}, "leak"),
    ({"spectral-radii": "0,0.9"}, "spectral_radii"),
    ({"n-delays": "50", "washout": "20"}, "washout"),
    ({"det-input": "ones"}, "det_input"),
    ({"ip-washout": "2000"}, "ip_washout"),
    ({"torch-threads": "0"}, "torch_threads"),
])
def test_memory_capacity_bad_options(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(get_experiment("memory-capacity"), overrides)


# ------------------------------------------------------------------------------------------------
# intrinsic-plasticity
def test_intrinsic_plasticity_end_to_end(tmp_path):
    result, run_dir = run_experiment(
        "intrinsic-plasticity",
        {"units": "20", "density": "0.3", "washout": "50", "train-length": "400",
         "test-length": "200", "ip-epochs": "3", "ip-lr": "2e-3", "seeds": "1"},
        out_dir=tmp_path)
    rows = {(r["rule"], r["stage"]): r for r in result.rows}
    assert set(rows) == {(r, s) for r in ("schrauwen", "triesch") for s in ("before", "after")}
    for r in result.rows:
        assert all(math.isfinite(r[k]) for k in ("kl", "unit_mean", "unit_std", "nrmse",
                                                  "rho_jacobian", "rho_diag_aW"))
        assert 0 < r["nrmse"] < 2
    for rule in ("schrauwen", "triesch"):
        before, after = rows[(rule, "before")], rows[(rule, "after")]
        assert before["rho_diag_aW"] == pytest.approx(0.9, abs=1e-9)   # a = 1: rho(W)
        assert after["kl"] < before["kl"]
        assert abs(after["unit_std"] - after["target_std"]) < \
            abs(before["unit_std"] - before["target_std"])
    # the Triesch rule pulls the logistic units' mean from ~0.5 toward the exponential's
    t_before, t_after = rows[("triesch", "before")], rows[("triesch", "after")]
    assert abs(t_after["unit_mean"] - t_after["target_mean"]) < \
        0.5 * abs(t_before["unit_mean"] - t_before["target_mean"])
    # truncated targets, closed forms: Exp(mean mu) on (0, 1) has mean mu - e^(-1/mu)/(1 -
    # e^(-1/mu)); N(0, 0.2^2) on (-1, 1) loses a 5-sigma tail: mean 0, std 0.2 (to 1e-5)
    mu = 0.2
    assert t_after["target_mean"] == pytest.approx(
        mu - math.exp(-1 / mu) / (1 - math.exp(-1 / mu)), abs=1e-5)
    assert rows[("schrauwen", "after")]["target_mean"] == pytest.approx(0.0, abs=1e-9)
    assert rows[("schrauwen", "after")]["target_std"] == pytest.approx(0.2, abs=1e-5)
    assert (run_dir / "intrinsic_plasticity.png").is_file()
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 1 + 4


@pytest.mark.parametrize("cls", [EchoStateNetwork, LogisticEchoStateNetwork])
def test_mean_state_jacobian_against_finite_differences(cls):
    """J equals the central-difference Jacobian of ``esn.step`` at the mean input and mean
    previous state (leak < 1, non-trivial gains, shifts and bias)."""
    esn = cls(input_size=2, units=12, spectral_radius=0.9, density=0.5, leak=0.6, input_scaling=0.7,
              bias_scaling=0.3, seed=3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    esn.a.copy_(0.5 + torch.rand(12, generator=gen, dtype=torch.float64))
    esn.b.copy_(0.4 * torch.rand(12, generator=gen, dtype=torch.float64) - 0.2)
    u = torch.rand(3, 60, 2, generator=gen, dtype=torch.float64)
    washout = 10
    jac = mean_state_jacobian(esn, u, washout)
    with torch.no_grad():
        xs = esn.states(u)
        prev = torch.cat([torch.zeros(3, 1, 12, dtype=torch.float64), xs[:, :-1]], 1)
        x_bar = prev[:, washout:].reshape(-1, 12).mean(0, keepdim=True)
        u_bar = u[:, washout:].reshape(-1, 2).mean(0, keepdim=True)
        h = 1e-6
        fd = torch.empty(12, 12, dtype=torch.float64)
        for j in range(12):
            e = torch.zeros(1, 12, dtype=torch.float64)
            e[0, j] = h
            fd[:, j] = (esn.step(u_bar, x_bar + e) - esn.step(u_bar, x_bar - e))[0] / (2 * h)
    torch.testing.assert_close(jac, fd, atol=1e-8, rtol=0)


def test_mean_state_jacobian_at_the_origin_is_w():
    """Zero input, no bias, a = 1, b = 0: the state stays 0, tanh'(0) = 1, so J = W."""
    esn = EchoStateNetwork(input_size=1, units=15, spectral_radius=0.8, density=0.4, seed=1,
                           dtype=torch.float64)
    jac = mean_state_jacobian(esn, torch.zeros(1, 20, 1, dtype=torch.float64), 5)
    torch.testing.assert_close(jac, esn.W, atol=0, rtol=0)


def test_mean_state_jacobian_bad_input():
    esn = EchoStateNetwork(input_size=1, units=5, density=0.8, dtype=torch.float64)
    with pytest.raises(ValueError, match="washout"):
        mean_state_jacobian(esn, torch.zeros(1, 4, 1, dtype=torch.float64), 4)
    with pytest.raises(ValueError, match=r"NaN|inf|finite"):
        mean_state_jacobian(esn, torch.full((1, 4, 1), math.nan, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        mean_state_jacobian(esn, torch.zeros(1, 4, 1))


@pytest.mark.parametrize("overrides, match", [
    ({"rules": "oja"}, "unknown IP rule"),
    ({"task": "lorenz"}, "task"),
    ({"ip-lr": "0"}, "lr"),
    ({"mu-triesch": "1.5"}, "mu"),
    ({"sigma": "-0.1"}, "sigma"),
    ({"leak": "0"}, "leak"),
    ({"bins": "1"}, "bins"),
])
def test_intrinsic_plasticity_bad_options(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(get_experiment("intrinsic-plasticity"), overrides)


# ------------------------------------------------------------------------------------------------
# deep-esn-entropy
def _renyi_numpy(x: np.ndarray) -> float:
    """ASE of (time, M) states by the definition: a Gaussian Parzen window with Silverman's
    width, H2(t) = -log((1/M^2) sum_ij N(x_i - x_j; 0, 2 sigma^2)), averaged over t."""
    m = x.shape[1]
    hs = []
    for row in x:
        sigma = 1.06 * row.std(ddof=1) * m ** -0.2
        d = row[:, None] - row[None, :]
        v = np.exp(-d ** 2 / (4 * sigma ** 2)).sum() / (m * m * 2 * math.sqrt(math.pi) * sigma)
        hs.append(-math.log(v))
    return float(np.mean(hs))


def test_deep_esn_entropy_end_to_end(tmp_path):
    opts = {"units": "24", "layers": "3", "steps": "150", "washout": "30", "seeds": "1",
            "layer-density": "0.5", "density": "0.3"}
    result, run_dir = run_experiment("deep-esn-entropy", opts, out_dir=tmp_path)
    rows = result.rows
    assert len(rows) == 2 * (2 + 3 * 3)          # (ESN all, groups; 3 variants x 3 layers) x IP
    assert all(math.isfinite(r["entropy_mean"]) for r in rows)
    for ip in (False, True):
        first = [r["entropy_mean"] for r in rows if r["ip"] == ip and r["layer"] == "1"]
        # layer 1 is drawn first from the seed in every variant (and IP adapts it first on the
        # same input): the same network, the same entropy. Each variant runs it in its own
        # stack, so compare to a tolerance, not bit for bit: the same operations on the same
        # numbers, at most re-associated by BLAS (~n eps relative on entropies of order 1).
        assert len(first) == 3 and max(first) - min(first) <= 1e-12
    # one value re-computed by the definition (numpy) on the same network and input
    cfg = resolve_config(get_experiment("deep-esn-entropy"), opts)
    assert isinstance(cfg, DeepESNEntropyConfig)
    deep = build(cfg, "deepESN", cfg.seed)
    with torch.no_grad():
        x2 = deep.layer_states(driving_input(cfg, cfg.seed))[1][0, cfg.washout:].numpy()
    row = next(r for r in rows if r["model"] == "deepESN" and not r["ip"] and r["layer"] == "2")
    assert row["entropy_mean"] == pytest.approx(_renyi_numpy(x2), abs=1e-10)
    assert row["spread"] == pytest.approx(float(x2.std(axis=1, ddof=1).mean()), abs=1e-12)
    assert (run_dir / "deep_esn_entropy.png").is_file()


def test_deep_esn_entropy_follows_the_deepesn_code_settings():
    cfg = resolve_config(get_experiment("deep-esn-entropy"), {})
    assert isinstance(cfg, DeepESNEntropyConfig)
    assert (cfg.input_scaling, cfg.inter_scaling, cfg.bias_scaling) == (0.1, 0.1, 0.1)
    assert (cfg.density, cfg.layer_density) == (1.0, 1.0)
    small = resolve_config(get_experiment("deep-esn-entropy"), {"units": "20", "layers": "4"})
    for name in ("ESN", "deepESN"):
        model = build(small, name, 0)
        for esn in getattr(model, "layers", [model]):
            # dense W, every bias weight within the scaling, the bias actually drawn
            assert bool((esn.W != 0).all())
            assert 0 < float(esn.bias.abs().max()) <= 0.1
    deep = build(small, "deepESN", 0)
    assert float(deep.layers[1].W_in.abs().max()) <= 0.1   # inter-layer weights


@pytest.mark.parametrize("overrides, match", [
    ({"bias-scaling": "-1"}, "bias_scaling"),
    ({"variants": "deepESN,wideESN"}, "unknown variant"),
    ({"units": "100", "layers": "3"}, "must divide"),
    ({"units": "10", "layers": "10"}, "at least 2 units"),
    ({"input": "sine"}, "input"),
    ({"kernel-size": "-1"}, "kernel_size"),
    ({"ip-lr": "-1"}, "lr"),
])
def test_deep_esn_entropy_bad_options(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(get_experiment("deep-esn-entropy"), overrides)
