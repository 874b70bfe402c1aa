"""brian2 2.9 side: the single neuron, the single dynamic synapse and the column of spec.py.

Written to be the same model as nest_sim.py, integrated exactly (``method="exact"``: the linear
system dv/dt = (-v + R (I_b + sum_k I_k)) / tau_m, dI_k/dt = -I_k / tau_k is solved by sympy,
so v is exact on the grid like NEST's propagators). brian2's example
``Maass_Natschlaeger_Markram_2002.py`` instead keeps each synapse's current as its own
clock-driven variable summed into the neuron, which holds the synaptic current constant over a step
for v (an O(dt) error); here each neuron owns one current per time constant and the synapses are
event driven: at a presynaptic spike the Markram-Tsodyks recursion (Maass et al. 2002, appendix)
runs on the synapse's (u, R, last spike time) and adds A u R to the target's current.

Time conventions (see nest_sim.py): brian2 stamps a spike with the start t of the step in which v
crossed threshold, i.e. one dt before NEST's stamp; ``spikes`` returned here add dt so both mean
"crossed in (t - dt, t]". An ``on_pre`` at clock time t changes the current after that step's
state update, so it acts from t + dt: input generators fire at (t_a - dt) to act from t_a, and a
recurrent delay d acts from the NEST stamp + d, as in NEST. Refractoriness: brian2 holds v while
t - lastspike < refractory (with lastspike = its stamp), i.e. for refractory - dt after the NEST
stamp; ``refractory = t_ref + dt`` makes the clamp last t_ref as in NEST.
"""

from __future__ import annotations

import time

import brian2 as b2
import numpy as np

from lsm_reference.spec import ColumnSpec, NeuronCase

VERSION = b2.__version__
b2.prefs.codegen.target = "numpy"
b2.BrianLogger.suppress_name("base")
b2.BrianLogger.log_level_error()

ms, mV, nA, Mohm = b2.ms, b2.mV, b2.nA, b2.Mohm


def set_target(target: str) -> None:
    """``numpy`` (pure runtime) or ``cython`` (runtime with compiled loops)."""
    b2.prefs.codegen.target = target


def _neurons(n: int, taus: np.ndarray, name: str = "neurons") -> b2.NeuronGroup:
    currents = " + ".join(f"I_{k}" for k in range(len(taus)))
    eqs = (
        f"dv/dt = (-v + R_in * (I_b + {currents})) / tau_m : volt (unless refractory)\n"
        + "".join(f"dI_{k}/dt = -I_{k} / ({float(t)} * ms) : amp\n" for k, t in enumerate(taus))
        + "tau_m : second (constant)\nR_in : ohm (constant)\nI_b : amp (constant)\n"
        + "v_th : volt (constant)\nv_reset : volt (constant)\nt_ref : second (constant)\n"
    )
    return b2.NeuronGroup(
        n,
        eqs,
        threshold="v >= v_th",
        reset="v = v_reset",
        refractory="t_ref",
        method="exact",
        name=name,
    )


def _set_neurons(g: b2.NeuronGroup, spec: ColumnSpec, copies: int, dt: float) -> None:
    def tile(a):
        return np.tile(np.asarray(a, float), copies)

    g.tau_m = tile(spec.tau_m) * ms
    g.R_in = tile(spec.r_in) * Mohm
    g.I_b = tile(spec.i_b) * nA
    g.v_th = tile(spec.v_th) * mV
    g.v_reset = tile(spec.v_reset) * mV
    g.t_ref = (tile(spec.t_ref) + dt) * ms
    g.v = tile(spec.v0) * mV


def single_neuron(case: NeuronCase) -> dict[str, np.ndarray]:
    """As nest_sim.single_neuron: v at the end of each step, spike times (NEST stamps)."""
    c = case
    dt, input_times = c.dt, c.input_times
    b2.start_scope()
    b2.defaultclock.dt = dt * ms
    g = _neurons(1, np.array([c.tau_syn]))
    g.tau_m, g.R_in, g.I_b = c.tau_m * ms, c.r_in * Mohm, c.i_b * nA
    g.v_th, g.v_reset, g.t_ref, g.v = c.v_th * mV, c.v_reset * mV, (c.t_ref + dt) * ms, c.v0 * mV
    objs = [g]
    if input_times is not None and len(input_times):
        gen = b2.SpikeGeneratorGroup(1, np.zeros(len(input_times), int),
                                     (np.asarray(input_times) - dt) * ms)
        s = b2.Synapses(gen, g, on_pre=f"I_0_post += {c.input_weight} * nA")
        s.connect()
        objs += [gen, s]
    # the monitor records at the start of a step (before the update): shifted by one below
    mon = b2.StateMonitor(g, "v", record=0, when="end")
    sm = b2.SpikeMonitor(g)
    net = b2.Network([*objs, mon, sm])
    net.run(c.t_stop * ms)
    return {
        "t": np.asarray(mon.t / ms) + dt,
        "v": np.asarray(mon.v[0] / mV),
        "spikes": np.sort(np.asarray(sm.t / ms)) + dt,
    }


_TM_PRE = """
R = 1 + (R - u * R - 1) * exp(-(t - tlast) / D)
u = U + u * (1 - U) * exp(-(t - tlast) / F)
tlast = t
{target} += A * u * R
"""
_TM_MODEL = """
A : amp (constant)
U : 1 (constant)
D : second (constant)
F : second (constant)
u : 1
R : 1
tlast : second
"""


def synapse_efficacies(spike_times: np.ndarray, *, U: float, D: float, F: float,
                       dt: float = 0.1) -> np.ndarray:
    """Relative amplitudes u_n R_n (A = 1) of one synapse, recorded at each presynaptic spike."""
    b2.start_scope()
    b2.defaultclock.dt = dt * ms
    times = np.asarray(spike_times, float)
    gen = b2.SpikeGeneratorGroup(1, np.zeros(times.size, int), times * ms)
    post = b2.NeuronGroup(1, "amp_sum : amp\nn_spk : 1")
    s = b2.Synapses(gen, post, _TM_MODEL + "a_last : 1",
                    on_pre=_TM_PRE.format(target="amp_sum_post") + "a_last = u * R\n"
                    + "n_spk_post += 1", method="exact")
    s.connect()
    s.A, s.U, s.D, s.F, s.u, s.R, s.tlast = 1 * nA, U, D * ms, F * ms, 0.0, 1.0, 0 * ms
    mon = b2.StateMonitor(s, "a_last", record=0, when="end")
    net = b2.Network([gen, post, s, mon])
    net.run((times.max() + 2 * dt) * ms)
    a = np.asarray(mon.a_last[0])
    k = np.rint(times / dt).astype(int)
    return a[k]


def build_column(spec: ColumnSpec, input_times: list[np.ndarray], *, copies: int = 1,
                 dt: float = 0.1) -> tuple[b2.Network, b2.NeuronGroup, b2.SpikeMonitor]:
    """``copies`` independent copies of the column in one network (copy c gets input_times[c])."""
    taus = spec.taus()
    port = {float(t): k for k, t in enumerate(taus)}
    n = spec.n
    g = _neurons(n * copies, taus)
    _set_neurons(g, spec, copies, dt)
    objs: list = [g]
    for tau in np.unique(spec.tau_syn):
        sel = np.flatnonzero(spec.tau_syn == tau)
        if not sel.size:
            continue
        s = b2.Synapses(g, g, _TM_MODEL,
                        on_pre=_TM_PRE.format(target=f"I_{port[float(tau)]}_post"),
                        method="exact", name=f"rec_{port[float(tau)]}")
        o = np.repeat(np.arange(copies) * n, sel.size)
        s.connect(i=np.tile(spec.pre[sel], copies) + o, j=np.tile(spec.post[sel], copies) + o)
        s.A = np.tile(spec.weight[sel], copies) * nA
        s.U = np.tile(spec.U[sel], copies)
        s.D = np.tile(spec.D[sel], copies) * ms
        s.F = np.tile(spec.F[sel], copies) * ms
        s.u, s.R, s.tlast = 0.0, 1.0, 0 * ms
        s.delay = np.tile(spec.delay[sel], copies) * ms
        objs.append(s)
    n_ch = int(spec.in_channel.max()) + 1 if spec.in_channel.size else 0
    if n_ch:
        idx, tt = [], []
        for c in range(copies):
            trains = input_times[c] if n_ch > 1 else [input_times[c]]
            for ch in range(n_ch):
                t = np.asarray(trains[ch], float) - dt
                idx.append(np.full(t.size, c * n_ch + ch))
                tt.append(t)
        gen = b2.SpikeGeneratorGroup(n_ch * copies, np.concatenate(idx), np.concatenate(tt) * ms)
        objs.append(gen)
        for tau in np.unique(spec.in_tau):
            sel = np.flatnonzero(spec.in_tau == tau)
            k = port[float(tau)]
            s = b2.Synapses(gen, g, "w : amp (constant)", on_pre=f"I_{k}_post += w",
                            name=f"inp_{k}")
            s.connect(i=(np.arange(copies)[:, None] * n_ch + spec.in_channel[sel]).ravel(),
                      j=(np.arange(copies)[:, None] * n + spec.in_post[sel]).ravel())
            s.w = np.tile(spec.in_weight[sel], copies) * nA
            # in_delay = dt is the "acts one step later" of the generator shift above
            objs.append(s)
    sm = b2.SpikeMonitor(g)
    return b2.Network([*objs, sm]), g, sm


def column(spec: ColumnSpec, input_times: np.ndarray, t_stop: float, *, dt: float = 0.1,
           record_v: bool = False) -> dict[str, np.ndarray]:
    b2.start_scope()
    b2.defaultclock.dt = dt * ms
    net, g, sm = build_column(spec, [input_times], dt=dt)
    mon = None
    if record_v:
        mon = b2.StateMonitor(g, "v", record=True, when="end")
        net.add(mon)
    net.run(t_stop * ms)
    idx = np.asarray(sm.i)
    t = np.asarray(sm.t / ms) + dt
    order = np.lexsort((idx, t))
    out = {"neuron": idx[order], "time": t[order]}
    if mon is not None:
        out["v"] = np.asarray(mon.v / mV).T
    return out


def column_throughput(spec: ColumnSpec, inputs: list[np.ndarray], t_stop: float, *,
                      copies: int, dt: float = 0.1) -> tuple[float, int]:
    """Seconds for ``len(inputs)`` stimuli, ``copies`` columns per network (build included)."""
    t0 = time.perf_counter()
    total = 0
    for s in range(0, len(inputs), copies):
        b2.start_scope()
        b2.defaultclock.dt = dt * ms
        batch = inputs[s : s + copies]
        net, _, sm = build_column(spec, batch, copies=len(batch), dt=dt)
        net.run(t_stop * ms)
        total += int(sm.num_spikes)
    return time.perf_counter() - t0, total


def standalone_throughput(spec: ColumnSpec, inputs: list[np.ndarray], t_stop: float, *,
                          dt: float = 0.1, directory: str | None = None
                          ) -> tuple[float, float, int]:
    """``cpp_standalone``: all ``inputs`` as copies in one network, generated, compiled and run
    once, then the binary run again: returns that rerun's (child CPU s, wall s, spikes).

    Switches this process's brian2 device for good: call it last."""
    import resource
    import tempfile

    def child_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    directory = directory or tempfile.mkdtemp(prefix="brian2_lsm_")
    b2.set_device("cpp_standalone", directory=directory, build_on_run=True)
    b2.prefs.devices.cpp_standalone.openmp_threads = 0  # serial, like the other contenders
    b2.defaultclock.dt = dt * ms
    net, _, sm = build_column(spec, inputs, copies=len(inputs), dt=dt)
    net.run(t_stop * ms)
    c0, w0 = child_cpu(), time.perf_counter()
    b2.device.run()
    return child_cpu() - c0, time.perf_counter() - w0, int(sm.num_spikes)
