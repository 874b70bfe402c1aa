"""NEST 3.10 side: the single neuron, the single dynamic synapse and the column of spec.py.

Models: ``iaf_psc_exp`` / ``iaf_psc_exp_multisynapse`` (LIF with exponentially decaying current
synapses, integrated exactly on the grid: Rotter & Diesmann 1999, the propagator matrix of the
linear system (V, I_syn) over one step) and ``tsodyks2_synapse`` (the Markram-Tsodyks recursion of
Maass et al. 2002, eq. in their appendix: A_n = A u_n R_n, u_{n+1} = U + u_n (1 - U) e^{-Δ/F},
R_{n+1} = 1 + (R_n - u_n R_n - 1) e^{-Δ/D}, u_1 = U, R_1 = 1; NEST needs u = U at the start for
u_1 = U) or ``tsodyks_synapse`` (the three-state form of Tsodyks, Pawelzik & Markram 1998 that
brian2's example uses; the recovered fraction refills from the inactive state, which the
synaptic current has to leave first, so tau_psc must equal the target's synaptic tau).

Time convention (the same in every file here): a spike "acts from" time t when the current jump it
causes is present from t on. An input spike acting from t is a ``spike_generator`` spike at t - dt
with delay dt. A neuron whose potential crosses threshold in the step (k dt, (k+1) dt] spikes at
(k+1) dt (NEST's stamp) and, with delay d, acts on its targets from (k+1) dt + d.

Units: spec.py's ms, mV, nA, MOhm; NEST wants pA and pF (C_m = tau_m / R).
"""

from __future__ import annotations

import os
import time

import numpy as np

from lsm_reference.spec import ColumnSpec, NeuronCase

os.environ.setdefault("PYNEST_QUIET", "1")
import nest

try:
    nest.verbosity = nest.VerbosityLevel.ERROR
except AttributeError:  # older NEST
    nest.set_verbosity("M_ERROR")

VERSION = nest.__version__ if hasattr(nest, "__version__") else str(nest.version())


_TAIL = 5.0  # ms simulated past t_stop so that every recorder has flushed t <= t_stop


def _reset(dt: float, threads: int = 1, seed: int = 1) -> None:
    nest.ResetKernel()
    nest.SetKernelStatus(
        {"resolution": dt, "local_num_threads": threads, "rng_seed": seed, "print_time": False}
    )


def threads() -> int:
    return int(nest.GetKernelStatus("local_num_threads"))


def single_neuron(case: NeuronCase) -> dict[str, np.ndarray]:
    """One LIF neuron: constant current ``i_b`` [nA] plus current jumps acting from ``input_times``.

    Returns ``v`` (mV at t = dt, 2 dt, ..., t_stop: the end of each step) and ``spikes`` (ms).
    """
    c = case
    dt, t_stop, tau_m, input_times = c.dt, c.t_stop, c.tau_m, c.input_times
    _reset(dt)
    n = nest.Create(
        "iaf_psc_exp",
        params={
            "E_L": 0.0,
            "V_m": c.v0,
            "V_th": c.v_th,
            "V_reset": c.v_reset,
            "tau_m": tau_m,
            "C_m": 1000.0 * tau_m / c.r_in,
            "t_ref": c.t_ref,
            "I_e": 1000.0 * c.i_b,
            "tau_syn_ex": c.tau_syn,
            "tau_syn_in": c.tau_syn,
        },
    )
    if input_times is not None and len(input_times):
        sg = nest.Create("spike_generator", params={"spike_times": np.asarray(input_times) - dt})
        nest.Connect(sg, n, syn_spec={"weight": 1000.0 * c.input_weight, "delay": dt})
    mm = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": dt})
    sr = nest.Create("spike_recorder")
    nest.Connect(mm, n)
    nest.Connect(n, sr)
    # NEST hands the multimeter its data one min_delay slice late: run past t_stop, then cut
    nest.Simulate(t_stop + _TAIL)
    ev = mm.events
    keep = ev["times"] <= t_stop + dt / 2
    order = np.argsort(ev["times"][keep])
    spikes = np.sort(sr.events["times"])
    return {
        "t": ev["times"][keep][order],
        "v": ev["V_m"][keep][order],
        "spikes": spikes[spikes <= t_stop + dt / 2],
    }


def synapse_efficacies(
    spike_times: np.ndarray,
    *,
    U: float,
    D: float,
    F: float,
    dt: float = 0.1,
    model: str = "tsodyks2_synapse",
    tau_psc: float = 3.0,
) -> np.ndarray:
    """Relative PSC amplitude (A = 1) of one dynamic synapse at each presynaptic spike.

    The presynaptic spikes come from a ``parrot_neuron`` (a generator cannot drive a plastic
    synapse); ``weight_recorder`` logs the weight each spike carries (u_n R_n for A = 1).
    """
    _reset(dt)
    times = np.asarray(spike_times, float)
    sg = nest.Create("spike_generator", params={"spike_times": times - dt})
    parrot = nest.Create("parrot_neuron")
    target = nest.Create("iaf_psc_exp", params={"V_th": 1e12, "tau_syn_ex": tau_psc})
    wr = nest.Create("weight_recorder")
    nest.CopyModel(model, "dyn_syn", {"weight_recorder": wr})
    syn = {"synapse_model": "dyn_syn", "U": U, "tau_rec": D, "tau_fac": F, "weight": 1.0,
           "delay": dt, "x": 1.0}
    if model == "tsodyks2_synapse":
        syn["u"] = U  # NEST sends u * x first, then updates: u_1 = U needs u = U
    else:
        syn["tau_psc"] = tau_psc
        syn["u"] = 0.0  # the three-state model's u jumps to U at the first spike
        syn["y"] = 0.0
    nest.Connect(sg, parrot, syn_spec={"delay": dt})
    nest.Connect(parrot, target, syn_spec=syn)
    nest.Simulate(float(times.max()) + 5 * dt)
    ev = wr.events
    order = np.argsort(ev["times"])
    return ev["weights"][order]


def build_column(
    spec: ColumnSpec,
    input_times: list[np.ndarray],
    *,
    copies: int = 1,
    synapse: str = "tsodyks2_synapse",
    record_v: bool = False,
    dt: float = 0.1,
):
    """Create ``copies`` independent copies of the column (copy c gets ``input_times[c]``).

    Neurons: ``iaf_psc_exp_multisynapse`` with one receptor per distinct current time constant
    (the paper's input current decays with 3 ms into E and 6 ms into I neurons, which one
    ``iaf_psc_exp`` with E/I ports by sign cannot express). Recurrent edges are connected
    one-to-one from the edge list with their own U, D, F, delay and amplitude.
    """
    taus = spec.taus()
    port = {float(t): i + 1 for i, t in enumerate(taus)}
    n = spec.n
    neu = nest.Create(
        "iaf_psc_exp_multisynapse",
        n * copies,
        params={"E_L": 0.0, "tau_syn": taus.tolist()},
    )

    def tile(a):
        return np.tile(np.asarray(a, float), copies)

    neu.set(
        V_m=tile(spec.v0),
        V_th=tile(spec.v_th),
        V_reset=tile(spec.v_reset),
        tau_m=tile(spec.tau_m),
        C_m=tile(1000.0 * spec.tau_m / spec.r_in),
        t_ref=tile(spec.t_ref),
        I_e=tile(1000.0 * spec.i_b),
    )
    first = neu[0].global_id
    m = spec.pre.size
    off = np.repeat(np.arange(copies) * n, m)
    pre_ids = np.tile(spec.pre, copies) + off + first
    post_ids = np.tile(spec.post, copies) + off + first
    syn = {
        "synapse_model": synapse,
        "weight": np.tile(1000.0 * spec.weight, copies),
        "delay": np.tile(spec.delay, copies),
        "U": np.tile(spec.U, copies),
        "tau_rec": np.tile(spec.D, copies),
        "tau_fac": np.tile(spec.F, copies),
        "receptor_type": np.tile([port[float(t)] for t in spec.tau_syn], copies),
        "x": np.ones(m * copies),
    }
    if synapse == "tsodyks2_synapse":
        syn["u"] = np.tile(spec.U, copies)
    else:
        syn["tau_psc"] = np.tile(spec.tau_syn, copies)
        syn["u"] = np.zeros(m * copies)
        syn["y"] = np.zeros(m * copies)
    nest.Connect(pre_ids, post_ids, "one_to_one", syn_spec=syn)
    n_ch = int(spec.in_channel.max()) + 1 if spec.in_channel.size else 0
    for c in range(copies):
        gens = nest.Create("spike_generator", n_ch)
        for ch in range(n_ch):
            t = np.asarray(input_times[c][ch] if n_ch > 1 else input_times[c], float)
            gens[ch].spike_times = (t - dt).tolist()
        if not spec.in_post.size:
            continue
        nest.Connect(
            (gens[0].global_id + spec.in_channel).tolist(),
            (spec.in_post + c * n + first).tolist(),
            "one_to_one",
            syn_spec={
                "weight": 1000.0 * spec.in_weight,
                "delay": spec.in_delay,
                "receptor_type": np.array([port[float(t)] for t in spec.in_tau]),
            },
        )
    sr = nest.Create("spike_recorder")
    nest.Connect(neu, sr)
    mm = None
    if record_v:
        mm = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": dt})
        nest.Connect(mm, neu)
    return neu, sr, mm


def column(
    spec: ColumnSpec,
    input_times: np.ndarray | list[np.ndarray],
    t_stop: float,
    *,
    dt: float = 0.1,
    synapse: str = "tsodyks2_synapse",
    record_v: bool = False,
    n_threads: int = 1,
) -> dict[str, np.ndarray]:
    """Simulate the column once; spikes as (neuron, time) sorted by time then neuron."""
    _reset(dt, n_threads)
    neu, sr, mm = build_column(spec, [input_times], synapse=synapse, record_v=record_v, dt=dt)
    nest.Simulate(t_stop + _TAIL)
    first = neu[0].global_id
    ev = sr.events
    keep = ev["times"] <= t_stop + dt / 2
    idx = ev["senders"][keep] - first
    t = ev["times"][keep]
    order = np.lexsort((idx, t))
    out = {"neuron": idx[order], "time": t[order]}
    if mm is not None:
        e = mm.events
        steps = round(t_stop / dt)
        v = np.zeros((steps, spec.n))
        k = np.rint(e["times"] / dt).astype(int) - 1
        keep = k < steps
        v[k[keep], e["senders"][keep] - first] = e["V_m"][keep]
        out["v"] = v
    return out


def column_throughput(
    spec: ColumnSpec,
    inputs: list[np.ndarray],
    t_stop: float,
    *,
    copies: int,
    dt: float = 0.1,
    n_threads: int = 1,
) -> tuple[float, int]:
    """Seconds for ``len(inputs)`` stimuli, ``copies`` columns per NEST network (build included).

    ``copies = 1`` is one stimulus per simulation (ResetKernel, build, Simulate each time);
    ``copies = len(inputs)`` puts every stimulus into its own independent copy of the column in one
    network and simulates them together. Returns (seconds, total output spikes).
    """
    t0 = time.perf_counter()
    total = 0
    for s in range(0, len(inputs), copies):
        _reset(dt, n_threads)
        batch = inputs[s : s + copies]
        _, sr, _ = build_column(spec, batch, copies=len(batch), dt=dt)
        nest.Simulate(t_stop)
        total += int(sr.n_events)
    return time.perf_counter() - t0, total
