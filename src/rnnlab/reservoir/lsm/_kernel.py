"""The numba backend of the liquid: the whole time loop of :mod:`.simulate` in one CPU call.

Private to :mod:`rnnlab.reservoir.lsm`. Same equations and step order as the torch loop in
``simulate.py`` (tests hold the two together within round-off): (1) arrivals of delayed
recurrent spikes through the dynamic synapses and of the input spikes, (2) exact propagation
of V and the current channels over one step, (3) threshold, reset, refractory period.

Why a kernel: a step of the 135-neuron column is ~20 small torch calls, each paying a dispatch
cost that dwarfs its arithmetic (the per-step work is ~N + arriving synapses). Here each trial
runs its whole time loop in compiled code with its state in cache, one trial after another on
one thread (a ``prange`` over trials was tried: numba's parallel compilation took minutes on
the loaded 2-core machine, so it is left out; trials are independent, so processes can split a
batch).

Imports without numba (:data:`AVAILABLE` is then False and the torch loop is used).
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
except ImportError:  # numba is optional (the "fast" extra): the torch loop is the fallback
    numba = None

AVAILABLE = numba is not None


def _trial(b, t, k0, n, kch, n_in, em, drift, hold, P, decay, threshold,
           reset, ref_steps, delays, gptr, gedges, A, U, invD, invF, target, in_target, W_in,
           has_spikes, spikes, has_current, current, has_injection, injection, v, ref, cur,
           ring, fac, rec, last, raster, rec_v, volt, rec_i, syn):
    ring_len = ring.shape[1]
    n_groups = delays.shape[0]
    cur_b = cur[b]
    # spikes per ring slot: most slots are empty, and then the scan over neurons is skipped
    count = np.zeros(ring_len, dtype=np.int64)
    for s in range(ring_len):
        for i in range(n):
            if ring[b, s, i]:
                count[s] += 1
    for j in range(t):
        k = k0 + j
        # (1) recurrent arrivals: spikes emitted at step k - delay
        for g in range(n_groups):
            slot = (k - delays[g]) % ring_len
            if count[slot] == 0:
                continue
            for i in range(n):
                if ring[b, slot, i]:
                    for q in range(gptr[g, i], gptr[g, i + 1]):
                        e = gedges[q]
                        gap = k - last[b, e]
                        u = U[e] + fac[b, e] * math.exp(-gap * invF[e])
                        r = 1.0 + (rec[b, e] - 1.0) * math.exp(-gap * invD[e])
                        c = target[e]
                        cur_b[c // n, c % n] += A[e] * r * u
                        fac[b, e] = u * (1.0 - U[e])
                        rec[b, e] = r * (1.0 - u)
                        last[b, e] = k
        if has_spikes:
            for c in range(n_in):
                x = spikes[b, j, c]
                if x != 0:
                    for i in range(n):
                        w = W_in[c, i]
                        if w != 0:
                            tg = in_target[i]
                            cur_b[tg // n, tg % n] += x * w
        if rec_i:
            for i in range(n):
                s = 0.0
                for ch in range(kch):
                    s += cur_b[ch, i]
                syn[b, j, i] = s
        # (2) exact propagation, (3) threshold, reset, refractory
        nxt = (k + 1) % ring_len
        count[nxt] = 0
        for i in range(n):
            vn = v[b, i] * em[i] + drift[i]
            for ch in range(kch):
                vn += P[ch, i] * cur_b[ch, i]
                cur_b[ch, i] *= decay[ch, i]
            if has_current or has_injection:
                s = 0.0
                if has_current:
                    for c in range(n_in):
                        s += current[b, j, c] * W_in[c, i]
                if has_injection:
                    s += injection[b, j, i]
                vn += s * hold[i]
            fired = False
            if ref[b, i] > 0:
                ref[b, i] -= 1
            else:
                v[b, i] = vn
                if vn >= threshold[i]:
                    fired = True
                    count[nxt] += 1
                    v[b, i] = reset[i]
                    ref[b, i] = ref_steps[i]
            ring[b, nxt, i] = fired
            raster[b, j, i] = fired
            if rec_v:
                volt[b, j, i] = v[b, i]


# The argument list of one trial (after the trial index); see ``simulate.py`` for the
# meaning of each array.
def _run_serial(batch, t, k0, n, kch, n_in, em, drift, hold, P, decay, threshold, reset, ref_steps,
        delays, gptr, gedges, A, U, invD, invF, target, in_target, W_in, has_spikes, spikes,
        has_current, current, has_injection, injection, v, ref, cur, ring, fac, rec, last, raster,
        rec_v, volt, rec_i, syn):
    for b in range(batch):
        _trial_c(b, t, k0, n, kch, n_in, em, drift, hold, P, decay, threshold, reset, ref_steps,
                delays, gptr, gedges, A, U, invD, invF, target, in_target, W_in, has_spikes,
                spikes, has_current, current, has_injection, injection, v, ref, cur, ring, fac,
                rec, last, raster, rec_v, volt, rec_i, syn)


if AVAILABLE:
    _trial_c = numba.njit(cache=True, nogil=True)(_trial)
    run_serial = numba.njit(cache=True, nogil=True)(_run_serial)
else:  # pragma: no cover - exercised only without numba
    run_serial = None


def dummy(dtype: np.dtype) -> np.ndarray:
    """A (1, 1, 1) placeholder for an absent input or record."""
    return np.zeros((1, 1, 1), dtype=dtype)
