"""Lyon's passive ear model: a cochleagram from a cascade of filters, rectification and AGC.

R. F. Lyon, "A computational model of filtering, detection and compression in the cochlea",
ICASSP 1982, pp. 1282-1285; the design equations and constants below are those of M. Slaney,
"Lyon's Cochlear Model", Apple Technical Report #13 (1988). Written here from those
descriptions in numpy/scipy.

**Place and bandwidth.** The basilar membrane is a cascade of second-order sections, one per
place, from the base (high frequencies) to the apex (low). At characteristic frequency ``f`` a
section's bandwidth is

    BW(f) = sqrt(f**2 + E_b**2) / Q_ear,

constant-Q above the break frequency ``E_b`` (1000 Hz) and constant-bandwidth below it; the ear
Q is 8. Adjacent channels are ``step_factor`` bandwidths apart (``Q_ear / 32`` = 0.25 by
default), i.e. ``df/dn = -step_factor * BW(f)``, whose solution is

    asinh(f_n / E_b) = asinh(f_top / E_b) - n * step_factor / Q_ear,      n = 1, 2, ...

The top frequency ``f_top`` is the Nyquist frequency lowered so that the first section's zeros
(``zero_offset`` = 1.5 steps above its pole) still fit below Nyquist:
``f_top = fs/2 - (zero_offset - 1) * step_factor * BW(fs/2)``. The cascade stops before the
pole Q ``f / BW(f)`` would fall below 1/2 (real poles), i.e. at ``f > E_b / sqrt(4 Q_ear**2 - 1)``.

**Sections.** Section ``n`` has a complex pole pair at (``f_n``, Q = ``f_n / BW(f_n)``) and a
complex zero pair at (``f_n + zero_offset * step_factor * BW(f_n)``, Q = ``sharpness *
f_zero / BW(f_n)``, sharpness 5), so each section is a resonance followed by a notch just above
it. A pair at (f, Q) sits at ``z = r exp(+-i theta)`` with ``r = exp(-pi f / (Q fs))`` and
``theta = 2 pi f sqrt(1 - 1/(4 Q**2)) / fs`` (the impulse-invariant image of the analog pair
``s = -w/(2Q) +- i w sqrt(1 - 1/(4Q**2))``). The DC gain of section n is ``f_(n-1) / f_n``
(the first: that of the second), so the cascade's low-frequency gain grows toward the apex as
the membrane's does. In front of the cascade sit the outer/middle-ear pre-emphasis (one zero,
corner 300 Hz) and a compensator (zeros at DC and Nyquist, poles at ``f_top`` with the first
section's Q), both of unit gain at fs/4.

**Detection and compression.** Each place's output is half-wave rectified (inner hair cells),
then passes four coupled automatic-gain-control stages: stage ``j`` multiplies its input by
``1 - a_j`` and updates its state toward ``a_j <- (1 - eps_j) * mean3(a_j) + eps_j * y_j /
target_j`` (``mean3``: the average of a channel's state and its two neighbours', coupling the
gain across places; the state is kept below 0.9), with time constants 640, 160, 40, 10 ms
(``eps = 1 - exp(-1/(tau fs))``) and targets 0.0032, 0.0016, 0.0008, 0.0004. A loud input
raises the states and so lowers the gain: the output grows far slower than the input. An
optional lateral-inhibition stage subtracts each channel's basal neighbour and rectifies again.
Finally each channel is low-pass filtered (two real poles, time constant ``tau_factor *
decimation / fs``, unit DC gain) and every ``decimation``-th sample kept: the frame rate is
``fs / decimation``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnlab._validation import check_bool, check_int, check_number

AGC_TIME_CONSTANTS = (0.64, 0.16, 0.04, 0.01)  # seconds, Slaney (1988)
AGC_TARGETS = (0.0032, 0.0016, 0.0008, 0.0004)
AGC_STATE_LIMIT = 0.9


@dataclass(frozen=True)
class LyonFilters:
    """The designed cascade. ``sections[n]`` and ``front[k]`` are second-order sections in
    ``scipy.signal.sosfilt`` layout ``(b0, b1, b2, 1, a1, a2)``; channel ``n`` (0-based) is the
    output of sections ``0..n`` behind both front filters."""

    sample_rate: float
    ear_q: float
    step_factor: float
    break_frequency: float
    top_frequency: float
    centre_frequencies: np.ndarray  # (channels,) pole frequencies, decreasing, Hz
    bandwidths: np.ndarray  # (channels,) BW(f_n), Hz
    zero_frequencies: np.ndarray  # (channels,) Hz
    sections: np.ndarray  # (channels, 6)
    front: np.ndarray  # (2, 6)

    @property
    def channels(self) -> int:
        return int(self.centre_frequencies.size)


def ear_bandwidth(f: np.ndarray | float, ear_q: float = 8.0,
                  break_frequency: float = 1000.0) -> np.ndarray:
    """``BW(f) = sqrt(f^2 + E_b^2) / Q_ear`` (Hz)."""
    f = np.asarray(f, dtype=np.float64)
    return np.sqrt(f * f + break_frequency ** 2) / ear_q


def _pair(f: np.ndarray, q: np.ndarray, fs: float) -> np.ndarray:
    """Polynomials ``1 - 2 r cos(theta) z^-1 + r^2 z^-2`` of the pairs at (f, Q); (n, 3)."""
    r = np.exp(-np.pi * f / (q * fs))
    theta = 2.0 * np.pi * f * np.sqrt(1.0 - 1.0 / (4.0 * q * q)) / fs
    return np.stack([np.ones_like(r), -2.0 * r * np.cos(theta), r * r], axis=-1)


def _gain_at(b: np.ndarray, a: np.ndarray, f: float, fs: float) -> float:
    z = np.exp(-1j * 2.0 * np.pi * f / fs * np.arange(3))
    return float(abs(b @ z) / abs(a @ z))


def design_lyon_filters(sample_rate: float, *, ear_q: float = 8.0,
                        step_factor: float | None = None, break_frequency: float = 1000.0,
                        zero_offset: float = 1.5, sharpness: float = 5.0,
                        preemphasis_corner: float = 300.0) -> LyonFilters:
    """The filter cascade of Lyon's model for ``sample_rate`` (equations in the module doc;
    defaults are Slaney's: Q_ear 8, step factor Q_ear/32, E_b 1000 Hz, zero offset 1.5,
    sharpness 5, pre-emphasis corner 300 Hz)."""
    fs = check_number("sample_rate", sample_rate, low=0.0, low_open=True)
    ear_q = check_number("ear_q", ear_q, low=1.0, low_open=True)
    step = ear_q / 32.0 if step_factor is None else check_number(
        "step_factor", step_factor, low=0.0, low_open=True)
    eb = check_number("break_frequency", break_frequency, low=0.0, low_open=True)
    zero_offset = check_number("zero_offset", zero_offset, low=0.0, low_open=True)
    sharpness = check_number("sharpness", sharpness, low=0.0, low_open=True)
    corner = check_number("preemphasis_corner", preemphasis_corner, low=0.0, low_open=True,
                          high=fs / 2, high_open=True)
    nyquist = fs / 2.0
    top = nyquist - (zero_offset - 1.0) * step * float(ear_bandwidth(nyquist, ear_q, eb))
    low = eb / np.sqrt(4.0 * ear_q * ear_q - 1.0)  # pole Q = 1/2 here
    span = np.arcsinh(max(top, 0.0) / eb) - np.arcsinh(low / eb)
    channels = int(np.floor(ear_q * span / step)) if span > 0 else 0
    if channels < 2:
        raise ValueError(f"sample_rate {fs} Hz with ear_q {ear_q} and step_factor {step} "
                         f"leaves {channels} channel(s); need at least 2")
    n = np.arange(1, channels + 1)
    cf = eb * np.sinh(np.arcsinh(top / eb) - n * step / ear_q)
    bw = ear_bandwidth(cf, ear_q, eb)
    zf = cf + zero_offset * step * bw
    zeros = _pair(zf, sharpness * zf / bw, fs)
    poles = _pair(cf, cf / bw, fs)
    dc = np.empty(channels)
    dc[1:] = cf[:-1] / cf[1:]
    dc[0] = dc[1]
    # Scale each section's numerator so that H(z=1) = dc.
    zeros = zeros * (dc * poles.sum(axis=1) / zeros.sum(axis=1))[:, None]
    sections = np.concatenate([zeros, poles], axis=1)
    pre_b = np.array([1.0, -np.exp(-2.0 * np.pi * corner / fs), 0.0])
    pre_a = np.array([1.0, 0.0, 0.0])
    comp_a = _pair(np.array([top]), np.array([cf[0] / bw[0]]), fs)[0]
    comp_b = np.array([1.0, 0.0, -1.0])
    front = []
    for b, a in ((pre_b, pre_a), (comp_b, comp_a)):
        front.append(np.concatenate([b / _gain_at(b, a, fs / 4.0, fs), a]))
    return LyonFilters(fs, ear_q, step, eb, top, cf, bw, zf, sections, np.array(front))


def cascade_response(filters: LyonFilters, frequencies: np.ndarray) -> np.ndarray:
    """Magnitude of the linear transfer function from the input to every channel,
    ``(len(frequencies), channels)``: the product of the front filters' and sections 0..n's
    responses ``|H(exp(i 2 pi f / fs))|``."""
    f = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    z = np.exp(-1j * 2.0 * np.pi * f[:, None] / filters.sample_rate * np.arange(3))
    def mag(sos: np.ndarray) -> np.ndarray:
        return np.abs(z @ sos[:, :3].T) / np.abs(z @ sos[:, 3:].T)
    front = np.prod(mag(filters.front), axis=1, keepdims=True)
    return front * np.cumprod(mag(filters.sections), axis=1)


def _agc(x: np.ndarray, sample_rate: float) -> np.ndarray:
    """The four coupled AGC stages over ``x`` (batch, time, channels), in place and returned."""
    eps = [1.0 - np.exp(-1.0 / (tau * sample_rate)) for tau in AGC_TIME_CONSTANTS]
    gain_in = [e / t for e, t in zip(eps, AGC_TARGETS, strict=True)]
    keep = [(1.0 - e) / 3.0 for e in eps]
    batch, steps, channels = x.shape
    states = [np.zeros((batch, channels + 2)) for _ in eps]
    for t in range(steps):
        y = x[:, t, :]
        for state, g, k in zip(states, gain_in, keep, strict=True):
            inner = state[:, 1:-1]
            y = y * (1.0 - inner)
            # Edge channels see themselves as their missing neighbour.
            state[:, 0] = inner[:, 0]
            state[:, -1] = inner[:, -1]
            new = g * y + k * (state[:, :-2] + inner + state[:, 2:])
            np.minimum(new, AGC_STATE_LIMIT, out=inner)
        x[:, t, :] = y
    return x


def cochleagram(waves: np.ndarray, sample_rate: float, *, decimation: int = 80,
                ear_q: float = 8.0, step_factor: float | None = None, agc: bool = True,
                differ: bool = True, tau_factor: float = 3.0,
                filters: LyonFilters | None = None) -> np.ndarray:
    """Lyon's passive-ear cochleagram of ``waves`` (time,) or (batch, time), as
    ``(batch, time // decimation, channels)`` float64, non-negative; channel 0 is the highest
    frequency (``filters.centre_frequencies``). The frame rate is ``sample_rate / decimation``.

    ``agc=False`` skips the gain control (the output is then the rectified, smoothed linear
    cascade), ``differ=False`` the lateral inhibition. ``filters`` reuses a design from
    :func:`design_lyon_filters` (its sample rate must match).
    """
    from scipy.signal import lfilter, sosfilt

    x = np.asarray(waves, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"waves must be (time,) or (batch, time) with time > 0, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("waves must be finite (got NaN or inf)")
    fs = check_number("sample_rate", sample_rate, low=0.0, low_open=True)
    decimation = check_int("decimation", decimation, low=1)
    agc = check_bool("agc", agc)
    differ = check_bool("differ", differ)
    tau_factor = check_number("tau_factor", tau_factor, low=0.0, low_open=True)
    if x.shape[1] < decimation:
        raise ValueError(f"waves have {x.shape[1]} samples, fewer than decimation {decimation}")
    if filters is None:
        filters = design_lyon_filters(fs, ear_q=ear_q, step_factor=step_factor)
    elif filters.sample_rate != fs:
        raise ValueError(f"filters were designed for {filters.sample_rate} Hz, not {fs} Hz")
    frames = x.shape[1] // decimation
    x = x[:, :frames * decimation]
    y = sosfilt(filters.front, x, axis=-1)
    out = np.empty((x.shape[0], x.shape[1], filters.channels))
    for n, section in enumerate(filters.sections):
        y = lfilter(section[:3], section[3:], y, axis=-1)
        np.maximum(y, 0.0, out=out[:, :, n])
    if agc:
        _agc(out, fs)
    if differ:
        out[:, :, 1:] = np.maximum(out[:, :, :-1] - out[:, :, 1:], 0.0)
    if decimation > 1:
        # Two real poles at 1 - eps, unit gain at DC, before keeping every decimation-th sample.
        eps = 1.0 - np.exp(-1.0 / (tau_factor * decimation))
        pole = 1.0 - eps
        out = lfilter([eps * eps], [1.0, -2.0 * pole, pole * pole], out, axis=1)
        out = out[:, decimation - 1::decimation, :]
    # The smoothing filter has no negative taps, so the output stays >= 0 up to rounding.
    return np.maximum(out, 0.0)
