"""The liquid simulator: a batch of trials through one column, step by step (Maass et al. 2002).

Equations (units ms, mV, nA, MΩ). Neuron n, membrane potential V, synaptic current channels
I_k (one per distinct decay time constant tau_k: 3 ms excitatory, 6 ms inhibitory synapses):

    tau_m dV/dt = -V + R (I_b + sum_k I_k(t) + I_ext(t)),     dI_k/dt = -I_k / tau_k.

Over one step h = dt, with I_ext held constant, the linear system is solved exactly
(exponential Euler; the propagator of Rotter & Diesmann 1999, as NEST's ``iaf_psc_exp``):

    V(t+h) = V e^{-h/tau_m} + R (I_b + I_ext)(1 - e^{-h/tau_m}) + sum_k P_k I_k(t),
    P_k = R e^{-h/tau_m} (h/tau_m) phi(h (1/tau_m - 1/tau_k)),  phi(x) = (e^x - 1)/x, phi(0) = 1,
    I_k(t+h) = I_k(t) e^{-h/tau_k}.

If V(t+h) >= threshold, the neuron spikes at t+h, V is set to the reset potential and held
there for the refractory period (its currents keep decaying and summing). Spike detection is on
the step grid; delays and refractory periods are rounded to whole steps, so dt must be smaller
than both (checked).

Dynamic synapses (Markram, Wang & Tsodyks 1998; the paper's appendix): for the n-th spike
arriving at a synapse, with Delta_n the interval to the previous arrival,

    u_1 = U, R_1 = 1,
    u_{n+1} = U + u_n (1 - U) exp(-Delta_n / F),
    R_{n+1} = 1 + (R_n - R_n u_n - 1) exp(-Delta_n / D),
    the postsynaptic current jumps by A R_n u_n.

The between-spike decay is evaluated in closed form at each arrival (the synapse keeps
u_n (1 - U), R_n (1 - u_n) and the arrival step), so a step costs nothing for synapses that
receive no spike. A spike emitted at t arrives at t + delay: spikes wait in a ring buffer of
max(delay steps) + 1 slots; arrivals are expanded over the edge list sorted by presynaptic
neuron (one group per delay), and summed into the currents with ``index_add_``.

Step k (time t_k = k dt, state at t_k): (1) deliver arriving recurrent spikes and the input
spikes of bin k; (2) advance V and the currents to t_{k+1}; (3) threshold, reset, refractory.
The raster's index k therefore holds the spikes at time (k + 1) dt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_choice, check_int, check_number, check_tensor
from rnnlab.reservoir.lsm import _kernel
from rnnlab.reservoir.lsm.column import Column

BACKENDS = ("auto", "numba", "torch")

_CHUNK = 256  # steps of input projected at once (bounds the memory of the projected input)


class LiquidState(NamedTuple):
    """Everything a simulation carries from step to step (B trials, N neurons, E synapses)."""

    step: int                    # absolute step index k (time k dt)
    v: torch.Tensor              # (B, N) mV
    refractory: torch.Tensor     # (B, N) int32, steps left in the refractory period
    current: torch.Tensor        # (B, K, N) nA, one channel per synaptic time constant
    ring: torch.Tensor           # (L, B, N) bool, spikes emitted at steps k - L + 1 .. k
    facilitation: torch.Tensor   # (B, E) u_n (1 - U) after the last arrival
    recovery: torch.Tensor       # (B, E) R_n (1 - u_n) after the last arrival
    last: torch.Tensor           # (B, E) int64 step of the last arrival


class LiquidOutput(NamedTuple):
    spikes: torch.Tensor                 # (B, T, N) bool; index k: spikes at time (k + 1) dt
    state: LiquidState
    voltage: torch.Tensor | None         # (B, T, N) mV at the end of each step (after reset)
    current: torch.Tensor | None         # (B, T, N) nA synaptic current after step k's arrivals


def flush_denormal_active() -> bool:
    """Whether this thread flushes subnormal floats to zero (probed: 2e-38 * 0.25 is subnormal
    in float32)."""
    return float((torch.full((1,), 2e-38, dtype=torch.float32) * 0.25).item()) == 0.0


@contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block and restore the previous setting.

    Decaying currents in float32 underflow into subnormal numbers, which the CPU handles
    ~17x slower (docs/lsm.md); flushing them to zero changes values below 1.2e-38 only.

    numpy computes and caches its float limits (``np.finfo``; ``numpy.ma`` does so for every
    float type on import, which numba's argument typing triggers) on first use: done under the
    flush they would be cached wrong (smallest subnormal 0, with a warning), so they are
    computed here first."""
    import numpy.ma  # noqa: F401  (its import computes np.finfo of every float type)

    for t in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(t)
    before = flush_denormal_active()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def propagators(tau_m: torch.Tensor, taus: torch.Tensor, dt: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e^{-h/tau_m}, P)`` with ``P[k, n] = e^{-h/tau_m} (h/tau_m) phi(h (1/tau_m -
    1/tau_k))`` (times R gives the coefficient of I_k in V(t+h)); float64."""
    tm = tau_m.to(torch.float64)
    em = torch.exp(-dt / tm)
    x = dt * (1.0 / tm[None, :] - 1.0 / taus.to(torch.float64)[:, None])
    small = x.abs() < 1e-8
    phi = torch.where(small, 1.0 + x / 2, torch.expm1(x) / torch.where(small, 1.0, x))
    return em, em[None, :] * (dt / tm)[None, :] * phi


class LiquidColumn(nn.Module):
    """Simulates a :class:`~rnnlab.reservoir.lsm.column.Column` with time step ``dt`` (ms) for
    a batch of trials at once (see the module docstring for the equations and the step order).

    Moves with ``.to(device, dtype)``: the column is kept in float64 on the CPU and every
    coefficient is computed there and cast, so float32 and float64 runs start from the same
    numbers. Example::

        column = build_column(seed=0)
        liquid = LiquidColumn(column, dt=0.1)
        out = liquid(poisson_spike_trains(8, 1, rate=20.0, duration=200.0, dt=0.1), seed=1)
        out.spikes.shape  # (8, 2000, 135)
    """

    def __init__(self, column: Column, dt: float = 0.1, *, backend: str = "auto",
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.backend = check_choice("backend", backend, BACKENDS)
        if not isinstance(column, Column):
            raise TypeError(f"column must be a Column, got {type(column).__name__}")
        self.column = column.validate()
        self.dt = check_number("dt", dt, low=0.0, low_open=True)
        shortest_ref = float(column.refractory.min())
        if self.dt >= shortest_ref:
            raise ValueError(f"dt ({self.dt} ms) must be smaller than the shortest refractory "
                             f"period ({shortest_ref} ms)")
        if column.n_synapses:
            shortest_delay = float(column.delay.min())
            if self.dt >= shortest_delay:
                raise ValueError(f"dt ({self.dt} ms) must be smaller than the shortest delay "
                                 f"({shortest_delay} ms)")
        self.register_buffer("_anchor", torch.empty(0, device=device, dtype=dtype),
                             persistent=False)
        n = column.n_neurons
        self.refractory_steps = torch.round(column.refractory / self.dt).to(torch.int32)
        delay_steps = torch.round(column.delay / self.dt).to(torch.int64)
        self.delay_steps = delay_steps
        self.ring_size = int(delay_steps.max()) + 1 if column.n_synapses else 1
        taus = torch.unique(torch.cat([column.tau_s, column.input_tau]))
        self.taus = taus
        self.edge_channel = torch.searchsorted(taus, column.tau_s)
        self.input_channel = torch.searchsorted(taus, column.input_tau)
        # Arrivals: one group per delay; within a group the edges are sorted by pre (the edge
        # list is built that way; a stable sort keeps a hand-written list correct too).
        order = torch.sort(column.pre, stable=True).indices
        groups = []
        for d in torch.unique(delay_steps).tolist():
            edges = order[delay_steps[order] == d]
            deg = torch.bincount(column.pre[edges], minlength=n)
            ptr = torch.cat([torch.zeros(1, dtype=torch.int64), deg.cumsum(0)[:-1]])
            groups.append((int(d), edges, deg, ptr))
        self._groups = groups
        # The same groups for the numba kernel: one edge array, absolute row pointers.
        self._kernel_groups = (
            torch.tensor([g[0] for g in groups], dtype=torch.int64),
            torch.stack([torch.cat([torch.zeros(1, dtype=torch.int64), g[2].cumsum(0)])
                         + sum(int(h[1].numel()) for h in groups[:i])
                         for i, g in enumerate(groups)]) if groups
            else torch.zeros((0, n + 1), dtype=torch.int64),
            torch.cat([g[1] for g in groups]) if groups else torch.zeros(0, dtype=torch.int64),
        )
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, object]] = {}

    # ------------------------------------------------------------------------------------
    def resolved_backend(self) -> str:
        """The backend a call runs with: ``"numba"`` (the fused CPU kernel, where numba is
        installed and the module is on the CPU) or ``"torch"`` (any device)."""
        on_cpu = self._anchor.device.type == "cpu"
        if self.backend == "numba":
            if not _kernel.AVAILABLE:
                raise RuntimeError("backend='numba' needs numba (pip install 'rnnlab[fast]')")
            if not on_cpu:
                raise ValueError(f"backend='numba' runs on the CPU; the module is on "
                                 f"{self._anchor.device} (use backend='torch' or 'auto')")
            return "numba"
        if self.backend == "auto" and _kernel.AVAILABLE and on_cpu:
            return "numba"
        return "torch"

    @property
    def n_neurons(self) -> int:
        return self.column.n_neurons

    @property
    def n_inputs(self) -> int:
        return self.column.n_inputs

    def _derived(self) -> dict[str, object]:
        key = (self._anchor.device, self._anchor.dtype)
        if key in self._cache:
            return self._cache[key]
        col, dev, dt = self.column, self._anchor.device, self._anchor.dtype
        n = col.n_neurons
        em, P = propagators(col.tau_m, self.taus, self.dt)
        R = col.resistance

        def f(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=dev, dtype=dt)

        def i(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=dev)

        d: dict[str, object] = {
            "em": f(em), "P": f(P * R[None, :]), "hold": f(R * (1 - em)),
            "drift": f(R * col.background * (1 - em)),
            "decay": f(torch.exp(-self.dt / self.taus)[:, None].expand(-1, n)),
            "threshold": f(col.threshold), "reset": f(col.reset),
            "ref_steps": i(self.refractory_steps),
            "A": f(col.amplitude), "U": f(col.U), "invD": f(self.dt / col.D),
            "invF": f(self.dt / col.F),
            "target": i(self.edge_channel * n + col.post),
            "in_target": i(self.input_channel * n + torch.arange(n)),
            "W_in": f(col.input_weights),
            "groups": [(dd, i(e), i(g), i(p)) for dd, e, g, p in self._groups],
        }
        self._cache = {key: d}
        return d

    def initial_state(self, batch: int, *, seed: object = None,
                      generator: torch.Generator | None = None,
                      v0: torch.Tensor | None = None) -> LiquidState:
        """A resting liquid: synapses recovered (u = U, R = 1 at the first spike), currents 0,
        V drawn per trial and neuron uniformly from ``[v_init_low, v_init_high]`` (or ``v0``,
        ``(N,)`` or ``(batch, N)`` mV)."""
        batch = check_int("batch", batch, low=1)
        col, dev, dt = self.column, self._anchor.device, self._anchor.dtype
        n, e = col.n_neurons, col.n_synapses
        if v0 is None:
            gen = make_generator(seed, generator)
            u = torch.rand((batch, n), generator=gen, dtype=torch.float64)
            v = col.v_init_low + (col.v_init_high - col.v_init_low) * u
        else:
            v = torch.as_tensor(v0, dtype=torch.float64)
            if v.shape not in ((n,), (batch, n)):
                raise ValueError(f"v0 must have shape ({n},) or ({batch}, {n}), got "
                                 f"{tuple(v.shape)}")
            if not bool(torch.isfinite(v).all()):
                raise ValueError("v0 contains NaN or inf")
            v = v.expand(batch, n)
        k = len(self.taus)
        return LiquidState(
            step=0, v=v.to(device=dev, dtype=dt).contiguous(),
            refractory=torch.zeros((batch, n), dtype=torch.int32, device=dev),
            current=torch.zeros((batch, k, n), dtype=dt, device=dev),
            ring=torch.zeros((self.ring_size, batch, n), dtype=torch.bool, device=dev),
            facilitation=torch.zeros((batch, e), dtype=dt, device=dev),
            recovery=torch.ones((batch, e), dtype=dt, device=dev),
            last=torch.zeros((batch, e), dtype=torch.int64, device=dev),
        )

    def _check_inputs(self, spikes: torch.Tensor | None, current: torch.Tensor | None,
                      injection: torch.Tensor | None, steps: int | None, batch: int | None,
                      state: LiquidState | None) -> tuple[int, int]:
        dev, dt = self._anchor.device, self._anchor.dtype
        shapes = []
        if spikes is not None:
            check_tensor("spikes", spikes, ndim=3, last_dim=self.n_inputs, device=dev,
                         layout="(batch, time, n_inputs)", finite=True)
            if spikes.dtype != torch.bool and bool((spikes < 0).any()):
                raise ValueError("spikes must be non-negative spike counts")
            shapes.append(("spikes", spikes.shape))
        if current is not None:
            check_tensor("current", current, ndim=3, last_dim=self.n_inputs, dtype=dt,
                         device=dev, layout="(batch, time, n_inputs)", finite=True)
            shapes.append(("current", current.shape))
        if injection is not None:
            check_tensor("injection", injection, ndim=3, last_dim=self.n_neurons, dtype=dt,
                         device=dev, layout="(batch, time, neurons)", finite=True)
            shapes.append(("injection", injection.shape))
        for name, s in shapes[1:]:
            if s[:2] != shapes[0][1][:2]:
                raise ValueError(f"{name} has (batch, time) {tuple(s[:2])} but {shapes[0][0]} "
                                 f"has {tuple(shapes[0][1][:2])}")
        if shapes:
            b, t = int(shapes[0][1][0]), int(shapes[0][1][1])
            if steps is not None and check_int("steps", steps, low=1) != t:
                raise ValueError(f"steps ({steps}) differs from the input's length ({t})")
        else:
            if steps is None:
                raise ValueError("give an input (spikes, current or injection) or steps")
            t = check_int("steps", steps, low=1)
            b = state.v.shape[0] if state is not None else (
                1 if batch is None else check_int("batch", batch, low=1))
        if batch is not None and check_int("batch", batch, low=1) != b:
            raise ValueError(f"batch ({batch}) differs from the input's batch ({b})")
        if state is not None:
            if not isinstance(state, LiquidState):
                raise TypeError(f"state must be a LiquidState, got {type(state).__name__}")
            if tuple(state.v.shape) != (b, self.n_neurons):
                raise ValueError(f"state is for shape {tuple(state.v.shape)}, expected "
                                 f"({b}, {self.n_neurons})")
        return b, t

    def forward(self, spikes: torch.Tensor | None = None, *, current: torch.Tensor | None = None,
                injection: torch.Tensor | None = None, steps: int | None = None,
                batch: int | None = None, state: LiquidState | None = None, seed: object = None,
                generator: torch.Generator | None = None, record_voltage: bool = False,
                record_current: bool = False) -> LiquidOutput:
        """Simulate ``T`` steps. ``spikes``: input spike counts ``(B, T, n_inputs)`` through the
        input synapses; ``current``: analog input ``(B, T, n_inputs)`` injected as
        ``current @ input_weights`` nA; ``injection``: ``(B, T, N)`` nA into each neuron. With
        no input, ``steps`` (and ``batch``, default 1) set the run. ``state`` continues an
        earlier run; otherwise a fresh state is drawn from ``seed``/``generator``."""
        check_bool("record_voltage", record_voltage)
        check_bool("record_current", record_current)
        b, t = self._check_inputs(spikes, current, injection, steps, batch, state)
        if state is None:
            state = self.initial_state(b, seed=seed, generator=generator)
        run = self._run_numba if self.resolved_backend() == "numba" else self._run
        with flush_denormal():
            return run(state, t, spikes, current, injection, record_voltage, record_current)

    def _run_numba(self, state: LiquidState, t: int, spikes: torch.Tensor | None,
                   current: torch.Tensor | None, injection: torch.Tensor | None,
                   record_voltage: bool, record_current: bool) -> LiquidOutput:
        d = self._derived()
        dt = self._anchor.dtype
        b, n = state.v.shape
        e = self.column.n_synapses
        kch = state.current.shape[1]
        npf = torch.empty(0, dtype=dt).numpy().dtype

        def arr(x: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(x.detach().cpu().numpy())

        def own(x: torch.Tensor) -> np.ndarray:       # a private, writable copy
            return x.detach().cpu().numpy().copy()

        v, ref, cur = own(state.v), own(state.refractory), own(state.current)
        ring = np.ascontiguousarray(own(state.ring).transpose(1, 0, 2))       # (B, L, N)
        fac, rec, last = own(state.facilitation), own(state.recovery), own(state.last)
        raster = np.empty((b, t, n), dtype=np.bool_)
        dummy = _kernel.dummy(npf)
        volt = np.empty((b, t, n), dtype=npf) if record_voltage else dummy
        syn = np.empty((b, t, n), dtype=npf) if record_current else dummy
        sp = dummy if spikes is None else arr(spikes.to(dt))
        cu = dummy if current is None else arr(current)
        inj = dummy if injection is None else arr(injection)
        delays, gptr, gedges = (x.numpy() for x in self._kernel_groups)
        args = (b, t, state.step, n, kch, self.n_inputs, arr(d["em"]), arr(d["drift"]),
                arr(d["hold"]), arr(d["P"]), arr(d["decay"]), arr(d["threshold"]),
                arr(d["reset"]), arr(d["ref_steps"]), delays, gptr, gedges, arr(d["A"]),
                arr(d["U"]), arr(d["invD"]), arr(d["invF"]), arr(d["target"]),
                arr(d["in_target"]), arr(d["W_in"]), spikes is not None, sp,
                current is not None, cu, injection is not None, inj, v, ref, cur, ring, fac,
                rec, last, raster, record_voltage, volt, record_current, syn)
        _kernel.run_serial(*args)
        dev = self._anchor.device

        def back(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x).to(dev)

        new_state = LiquidState(
            step=state.step + t, v=back(v), refractory=back(ref), current=back(cur),
            ring=back(np.ascontiguousarray(ring.transpose(1, 0, 2))),
            facilitation=back(fac).view(b, e), recovery=back(rec).view(b, e),
            last=back(last).view(b, e))
        return LiquidOutput(back(raster), new_state, back(volt) if record_voltage else None,
                            back(syn) if record_current else None)

    def _run(self, state: LiquidState, t: int, spikes: torch.Tensor | None,
             current: torch.Tensor | None, injection: torch.Tensor | None,
             record_voltage: bool, record_current: bool) -> LiquidOutput:
        d = self._derived()
        dev, dt = self._anchor.device, self._anchor.dtype
        b, n = state.v.shape
        e = self.column.n_synapses
        kch = state.current.shape[1]
        v = state.v.clone()
        ref = state.refractory.clone()
        cur = state.current.clone()
        ring = state.ring.clone()
        fac = state.facilitation.clone().view(-1)
        rec = state.recovery.clone().view(-1)
        last = state.last.clone().view(-1)
        cur_flat = cur.view(-1)
        cur_rows = cur.view(b, kch * n)
        L = ring.shape[0]
        ring_any = [bool(x) for x in ring.reshape(L, -1).any(1).tolist()]
        em, P, decay = d["em"], d["P"], d["decay"]
        drift, hold = d["drift"], d["hold"]
        threshold, reset, ref_steps = d["threshold"], d["reset"], d["ref_steps"]
        A, U, invD, invF, target = d["A"], d["U"], d["invD"], d["invF"], d["target"]
        in_target, W_in = d["in_target"], d["W_in"]
        raster = torch.empty((b, t, n), dtype=torch.bool, device=dev)
        volt = torch.empty((b, t, n), dtype=dt, device=dev) if record_voltage else None
        syn = torch.empty((b, t, n), dtype=dt, device=dev) if record_current else None
        batch_offset_e = torch.arange(b, device=dev) * e
        batch_offset_c = torch.arange(b, device=dev) * (kch * n)
        k0 = state.step
        drive = held = None
        for j in range(t):
            k = k0 + j
            if j % _CHUNK == 0:
                sl = slice(j, min(j + _CHUNK, t))
                drive = None if spikes is None else spikes[:, sl].to(dt) @ W_in
                held = None
                if current is not None:
                    held = current[:, sl] @ W_in
                if injection is not None:
                    held = injection[:, sl] if held is None else held + injection[:, sl]
                if held is not None:
                    held = held * hold
            jj = j % _CHUNK
            # (1) recurrent arrivals: spikes emitted at step k - delay
            for delay, edges, deg, ptr in d["groups"]:
                slot = (k - delay) % L
                if not ring_any[slot]:
                    continue
                bi, pi = ring[slot].nonzero(as_tuple=True)
                cnt = deg[pi]
                total = int(cnt.sum())
                if total == 0:
                    continue
                first = ptr[pi]
                start = torch.repeat_interleave(first - (cnt.cumsum(0) - cnt), cnt,
                                                output_size=total)
                eid = edges[start + torch.arange(total, device=dev)]
                bb = torch.repeat_interleave(bi, cnt, output_size=total)
                flat = batch_offset_e[bb] + eid
                gap = (k - last[flat]).to(dt)
                u = U[eid] + fac[flat] * torch.exp(-gap * invF[eid])
                r = 1.0 + (rec[flat] - 1.0) * torch.exp(-gap * invD[eid])
                cur_flat.index_add_(0, batch_offset_c[bb] + target[eid], A[eid] * r * u)
                fac[flat] = u * (1.0 - U[eid])
                rec[flat] = r * (1.0 - u)
                last[flat] = k
            # input spikes of bin k
            if drive is not None:
                cur_rows.index_add_(1, in_target, drive[:, jj])
            if syn is not None:
                syn[:, j] = cur.sum(1)
            # (2) exact propagation to t_{k+1}
            v_new = torch.addcmul(drift, v, em)
            v_new += (P * cur).sum(1)
            if held is not None:
                v_new += held[:, jj]
            cur.mul_(decay)
            active = ref <= 0
            v = torch.where(active, v_new, v)
            ref = (ref - 1).clamp_(min=0)
            # (3) threshold, reset, refractory
            fired = active & (v >= threshold)
            v = torch.where(fired, reset, v)
            ref = torch.where(fired, ref_steps, ref)
            slot = (k + 1) % L
            ring[slot] = fired
            ring_any[slot] = bool(fired.any())
            raster[:, j] = fired
            if volt is not None:
                volt[:, j] = v
        new_state = LiquidState(
            step=k0 + t, v=v, refractory=ref, current=cur, ring=ring,
            facilitation=fac.view(b, e), recovery=rec.view(b, e), last=last.view(b, e))
        return LiquidOutput(raster, new_state, volt, syn)

    def extra_repr(self) -> str:
        return (f"neurons={self.n_neurons}, synapses={self.column.n_synapses}, "
                f"inputs={self.n_inputs}, dt={self.dt}")

