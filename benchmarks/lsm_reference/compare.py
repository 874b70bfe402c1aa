"""Side by side: rnnlab's liquid against NEST and brian2 (issue 13, item 4), trajectories.

Run in the reference environment (docs/lsm_reference.md):
``/tmp/refvenv/bin/python benchmarks/lsm_reference/compare.py`` (about a minute on one core);
``--record tests/data/lsm_nest_reference.npz`` also writes the small NEST trajectories that
tests/test_lsm_reference.py compares rnnlab against without NEST (see tests/data/README.md).

Cases, all at dt = 0.1 ms (the paper's step and brian2's example's):

(a) one LIF neuron (tau_m 30 ms, R 1 MOhm, threshold 15 mV, reset 13.5 mV, refractory 3 ms)
    under a constant 16 nA from 0 mV, and under a 200 Hz Poisson train of 18 nA current jumps
    (tau_s 3 ms) on top of the 13.5 nA background;
(b) one Markram-Tsodyks synapse with the paper's EE parameters (U 0.5, D 1.1 s, F 0.05 s) under a
    regular 20 Hz train (20 spikes) and a 20 Hz Poisson train (2 s); efficacy u_n R_n per spike;
(c) rnnlab's 15x3x3 column (build_column(seed=0), one input channel), exported edge by edge into
    NEST and brian2 with the same initial potentials, driven by one 20 Hz Poisson input train.

Tolerances. NEST's iaf_psc_exp(_multisynapse) and rnnlab integrate the same linear system with
the same exact propagator, brian2 ("exact") solves it with sympy: they differ by rounding only.
One step is ~10 floating-point operations on numbers of size |V| <= V_s = 20 mV, and an error in V
decays by e^{-dt/tau_m} per step, so it accumulates to at most ~ 10 eps V_s tau_m / dt: 6.6e-12 mV
in float64 (eps 1.1e-16) and 3.6e-3 mV in float32 (eps 6e-8); we allow 10x that (currents are
rounded too). Spike times then agree exactly unless V passes within the tolerance of the
threshold at some step, which the script reports (``margin``). The synapse's efficacy is a product
of a few exponentials: tolerance 100 eps per spike and chain length.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lsm_reference import spec as S  # noqa: E402

DT = 0.1
EPS = {"float64": np.finfo(np.float64).eps, "float32": np.finfo(np.float32).eps}


def v_tolerance(dtype: str, tau_m: float = 30.0, v_scale: float = 20.0, dt: float = DT) -> float:
    """10x the accumulated rounding bound 10 eps V_s tau_m / dt (module docstring)."""
    return 10 * 10 * EPS[dtype] * v_scale * tau_m / dt


def match_fraction(a: dict, b: dict, dt: float = DT) -> float:
    """Fraction of spikes (same neuron, |t_a - t_b| <= dt) matched one to one, over the larger
    count; 1.0 when both are empty."""
    total = max(a["time"].size, b["time"].size)
    if total == 0:
        return 1.0
    matched = 0
    for n in np.union1d(a["neuron"], b["neuron"]):
        ta = np.sort(a["time"][a["neuron"] == n])
        tb = np.sort(b["time"][b["neuron"] == n])
        i = j = 0
        while i < ta.size and j < tb.size:
            if abs(ta[i] - tb[j]) <= dt * (1 + 1e-9):
                matched += 1
                i += 1
                j += 1
            elif ta[i] < tb[j]:
                i += 1
            else:
                j += 1
    return matched / total


def threshold_margin(v: np.ndarray, theta: float = 15.0, reset: float = 13.5) -> float:
    """The closest approach of V to threshold from below (mV), reset values left out."""
    below = v[(v < theta) & (v != reset)]
    return float(np.min(theta - below)) if below.size else float("nan")


def _one(times: np.ndarray) -> dict[str, np.ndarray]:
    return {"neuron": np.zeros(times.size, np.int64), "time": times}


def neuron_cases(rng: np.random.Generator) -> dict[str, S.NeuronCase]:
    poisson = S.poisson_train(200.0, 300.0, DT, rng)
    return {
        "constant 16 nA": S.NeuronCase(dt=DT, t_stop=300.0, i_b=16.0, v0=0.0),
        "Poisson 200 Hz x 18 nA": S.NeuronCase(dt=DT, t_stop=300.0, i_b=13.5, v0=13.5,
                                               input_times=poisson[poisson >= 2 * DT],
                                               input_weight=18.0, tau_syn=3.0),
    }


def synapse_cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
    p = S.poisson_train(20.0, 2000.0, DT, rng)
    p = p[p >= 1.0]
    p = p[np.concatenate([[True], np.diff(p) >= 5 * DT])]  # the driver neuron's dead time
    return {"regular 20 Hz": S.regular_train(20.0, 20), "Poisson 20 Hz": p}


EE = dict(U=0.5, D=1100.0, F=50.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=1000.0, help="column run (ms)")
    ap.add_argument("--record", default=None, help="write the CI reference .npz here")
    ap.add_argument("--no-brian", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from lsm_reference import nest_sim as N
    from lsm_reference import rnnlab_side as L

    sims = {"NEST": N}
    if not args.no_brian:
        from lsm_reference import brian_sim as B

        sims["brian2"] = B
    print(f"NEST {N.VERSION}, threads {N.threads()}; torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}" + ("" if args.no_brian else f"; brian2 {B.VERSION}"))
    print(f"dt = {DT} ms; V tolerance float64 {v_tolerance('float64'):.1e} mV, float32 "
          f"{v_tolerance('float32'):.1e} mV")
    rng = np.random.default_rng(args.seed)
    record: dict[str, np.ndarray] = {}

    print("\n(a) single LIF neuron: max |V - V_NEST| (mV); spikes; spike times equal / matched "
          "within dt; margin = closest approach of V_NEST to threshold from below (mV)")
    for ci, (name, kw) in enumerate(neuron_cases(rng).items()):
        ref = N.single_neuron(kw)
        margin = threshold_margin(ref["v"])
        rows = {"NEST": ref}
        for sname, mod in sims.items():
            if sname != "NEST":
                rows[sname] = mod.single_neuron(kw)
        rows["rnnlab f64"] = L.single_neuron(kw)
        rows["rnnlab f32"] = L.single_neuron(kw, dtype=torch.float32)
        if kw.input_times is None:
            from rnnlab.reservoir.lsm import lif_rate

            rate = lif_rate(kw.i_b, tau_m=30.0, resistance=1.0, threshold=15.0, reset=13.5,
                            refractory=3.0)
            isi = np.diff(ref["spikes"])
            print(f"  {name}: closed-form period {1000 / rate:.4f} ms; NEST ISIs "
                  f"{np.unique(np.round(isi, 6))} (the grid rounds the crossing up to k dt)")
        for sname, r in rows.items():
            same = r["spikes"].size == ref["spikes"].size and np.allclose(
                r["spikes"], ref["spikes"], atol=1e-9)
            dv = float(np.max(np.abs(r["v"] - ref["v"])))
            frac = match_fraction(_one(r["spikes"]), _one(ref["spikes"]))
            print(f"  {name:24s} {sname:10s} {dv:9.2e} {r['spikes'].size:4d} "
                  f"{'yes' if same else 'no':4s} {frac:6.3f} {margin:.2e}")
        record[f"neuron{ci}_v"] = ref["v"][::10].astype(np.float64)
        record[f"neuron{ci}_spikes"] = ref["spikes"]
        if kw.input_times is not None:
            record[f"neuron{ci}_input"] = kw.input_times

    print("\n(b) dynamic synapse U=0.5 D=1100 F=50 ms: max |u R - (u R)_NEST tsodyks2|")
    for ci, (name, times) in enumerate(synapse_cases(rng).items()):
        ref = N.synapse_efficacies(times, **EE, dt=DT)
        from rnnlab.reservoir.lsm import tsodyks_markram_efficacies

        rows = {
            "rnnlab LiquidColumn f64": L.synapse_efficacies(times, **EE, dt=DT),
            "rnnlab LiquidColumn f32": L.synapse_efficacies(times, **EE, dt=DT,
                                                            dtype=torch.float32),
            "rnnlab closed recursion": tsodyks_markram_efficacies(times, **EE).numpy(),
            "NEST tsodyks_synapse (3-state)": N.synapse_efficacies(
                times, **EE, dt=DT, model="tsodyks_synapse", tau_psc=3.0),
        }
        if "brian2" in sims:
            rows["brian2 (event driven)"] = B.synapse_efficacies(times, **EE, dt=DT)
        print(f"  {name}: {times.size} spikes, last efficacy {ref[-1]:.6f}")
        for sname, a in rows.items():
            print(f"    {sname:32s} {np.max(np.abs(a - ref)):9.2e}")
        record[f"synapse{ci}_times"] = times
        record[f"synapse{ci}_eff"] = ref

    print(f"\n(c) the column, {args.duration:g} ms, one 20 Hz Poisson input train")
    col, spec = L.maass_column(seed=args.seed, dt=DT)
    print(f"  rnnlab build_column(seed={args.seed}): {spec.n} neurons, {spec.pre.size} synapses,"
          f" {spec.in_post.size} input synapses")
    inp = S.poisson_train(20.0, args.duration, DT, rng)
    inp = inp[inp >= 2 * DT]
    ref = N.column(spec, inp, args.duration, dt=DT, record_v=True)
    rows = {"NEST": ref}
    if "brian2" in sims:
        rows["brian2"] = B.column(spec, inp, args.duration, dt=DT, record_v=True)
    rows["rnnlab f64"] = L.column(col, spec, inp, args.duration, dt=DT, record_v=True)
    rows["rnnlab f32"] = L.column(col, spec, inp, args.duration, dt=DT, dtype=torch.float32,
                                  record_v=True)
    rows["NEST tsodyks_synapse"] = N.column(spec, inp, args.duration, dt=DT,
                                            synapse="tsodyks_synapse")
    print("  simulator              spikes  rate(Hz)  match<=dt  max|dV| before 1st mismatch")
    for sname, r in rows.items():
        frac = match_fraction(r, ref)
        if "v" in r:
            bad = np.flatnonzero(np.abs(r["v"] - ref["v"]).max(1) > 0.5)
            upto = bad[0] if bad.size else r["v"].shape[0]
            dv = float(np.max(np.abs(r["v"][:upto] - ref["v"][:upto]))) if upto else float("nan")
            dvs = f"{dv:9.2e} (first {upto * DT:.1f} ms)"
        else:
            dvs = "-"
        rate = r["time"].size / spec.n / (args.duration / 1000)
        print(f"  {sname:22s} {r['time'].size:6d} {rate:8.2f}  {frac:9.4f}  {dvs}")
    if args.record:
        write_record(args.record, record)
    return 0


def small_column(seed: int = 3) -> S.ColumnSpec:
    """A 3x3x3 column with float32-representable parameters (small enough to commit)."""
    s = S.maass_column((3, 3, 3), seed=seed, dt=DT)
    for f in ("v0", "weight", "U", "D", "F", "in_weight"):
        setattr(s, f, getattr(s, f).astype(np.float32).astype(np.float64))
    return s


def write_record(path: str, record: dict[str, np.ndarray]) -> None:
    """Add the small column's NEST raster and potentials and save everything (float64)."""
    from lsm_reference import nest_sim as N

    col = small_column()
    rng = np.random.default_rng(7)
    inp = S.poisson_train(40.0, 200.0, DT, rng)
    inp = inp[inp >= 2 * DT]
    ref = N.column(col, inp, 200.0, dt=DT, record_v=True)
    record["column_input"] = inp
    record["column_spike_neuron"] = ref["neuron"].astype(np.int16)
    record["column_spike_step"] = np.rint(ref["time"] / DT).astype(np.int32)
    record["column_v"] = ref["v"][::20, :5].astype(np.float64)  # 100 samples, 5 neurons
    fields = {f"col_{k}": v for k, v in vars(col).items()}
    fields["col_pre"] = col.pre.astype(np.int16)
    fields["col_post"] = col.post.astype(np.int16)
    fields["col_in_channel"] = col.in_channel.astype(np.int16)
    fields["col_in_post"] = col.in_post.astype(np.int16)
    for k in ("col_weight", "col_U", "col_D", "col_F", "col_v0", "col_in_weight"):
        fields[k] = fields[k].astype(np.float32)  # exact: they were rounded to float32
    np.savez_compressed(path, nest_version=np.array(N.VERSION), dt=np.array(DT), **record,
                        **fields)
    print(f"\nwrote {path} ({os.path.getsize(path)} bytes): small column {col.n} neurons, "
          f"{col.pre.size} synapses, {ref['time'].size} NEST spikes in 200 ms")


if __name__ == "__main__":
    raise SystemExit(main())
