"""Spike encoding of analog signals: Ben's Spiker Algorithm (BSA) and Hough's (HSA).

B. Schrauwen & J. Van Campenhout, "BSA, a fast and accurate spike train encoding scheme",
IJCNN 2003, pp. 2825-2830. A spike train ``s(t)`` in {0, 1} is *decoded* by convolution with a
finite impulse response ``h`` of length ``F``: ``x_hat(t) = sum_k s(t - k) h(k)``. BSA encodes by
walking along time and, at each ``t``, comparing the error of the window ``x(t..t+F-1)`` with the
filter subtracted to the error without it,

    e1 = sum_k |x(t + k) - h(k)|,     e2 = sum_k |x(t + k)|,

emitting a spike and subtracting ``h`` from the window when ``e1 <= e2 - threshold``. HSA
(Hough, de Garis, Korkin, Gers & Nawa 1999; the baseline of the BSA paper) spikes only where the
filter fits under the signal everywhere in the window, ``x(t + k) >= h(k)`` for all ``k``; its
modified form (also in the BSA paper) tolerates a total shortfall ``sum_k max(h(k) - x(t+k), 0)
<= threshold``. Both need a non-negative signal whose scale matches the filter's (one spike
adds at most ``max(h)``; a spike every step reconstructs ``sum(h)``).

Windows running past the end of the signal are scored on their part inside it only: the
decoded signal is truncated there too.
"""

from __future__ import annotations

import numpy as np

from rnnlab._validation import check_int, check_number


def _check_signal_and_filter(signal: object, fir: object) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(signal, dtype=np.float64)
    h = np.asarray(fir, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"signal must have a non-empty last (time) axis, got shape {x.shape}")
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"fir must be a non-empty 1-D filter, got shape {h.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(h))):
        raise ValueError("signal and fir must be finite (got NaN or inf)")
    if x.min() < 0.0:
        raise ValueError(f"signal must be non-negative for a unipolar spike code, min "
                         f"{x.min():.3g}: shift or rectify it first")
    return x, h


def _walk(x: np.ndarray, h: np.ndarray, fires: object) -> np.ndarray:
    """Shared time walk: ``fires(window, valid)`` -> bool mask over the leading axes."""
    steps, width = x.shape[-1], h.size
    residual = np.concatenate([x, np.zeros((*x.shape[:-1], width))], axis=-1)
    spikes = np.zeros(x.shape, dtype=bool)
    for t in range(steps):
        valid = min(width, steps - t)
        window = residual[..., t:t + valid]
        spike = fires(window, h[:valid])
        spikes[..., t] = spike
        window -= np.where(spike[..., None], h[:valid], 0.0)
    return spikes


def bsa_encode(signal: np.ndarray, fir: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """BSA spike train of ``signal`` (..., time), non-negative, for the decoding filter ``fir``:
    a bool array of ``signal``'s shape (every leading index is its own channel)."""
    x, h = _check_signal_and_filter(signal, fir)
    threshold = check_number("threshold", threshold)

    def fires(window: np.ndarray, taps: np.ndarray) -> np.ndarray:
        e1 = np.abs(window - taps).sum(axis=-1)
        e2 = np.abs(window).sum(axis=-1)
        return e1 <= e2 - threshold

    return _walk(x, h, fires)


def hsa_encode(signal: np.ndarray, fir: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Hough's spike encoding (``threshold=0``) or its modified, thresholded form, in the
    layout of :func:`bsa_encode`."""
    x, h = _check_signal_and_filter(signal, fir)
    threshold = check_number("threshold", threshold, low=0.0)

    def fires(window: np.ndarray, taps: np.ndarray) -> np.ndarray:
        return np.maximum(taps - window, 0.0).sum(axis=-1) <= threshold

    return _walk(x, h, fires)


def spike_decode(spikes: np.ndarray, fir: np.ndarray) -> np.ndarray:
    """``x_hat(t) = sum_k s(t - k) h(k)`` along the last axis, truncated to the train's length."""
    s = np.asarray(spikes, dtype=np.float64)
    h = np.asarray(fir, dtype=np.float64)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"fir must be a non-empty 1-D filter, got shape {h.shape}")
    from scipy.signal import lfilter

    return lfilter(h, [1.0], s, axis=-1)


def bsa_filter(length: int = 16, cutoff: float = 0.1, scale: float = 1.0) -> np.ndarray:
    """A low-pass decoding filter: the Hamming-windowed sinc of ``scipy.signal.firwin`` with
    ``length`` taps and ``cutoff`` a fraction of Nyquist, scaled to sum ``scale`` (the level a
    spike on every step reconstructs)."""
    from scipy.signal import firwin

    length = check_int("length", length, low=2)
    cutoff = check_number("cutoff", cutoff, low=0.0, high=1.0, low_open=True, high_open=True)
    scale = check_number("scale", scale, low=0.0, low_open=True)
    h = firwin(length, cutoff)
    return h * (scale / h.sum())


def snr_db(signal: np.ndarray, estimate: np.ndarray) -> float:
    """``10 log10(sum x^2 / sum (x - x_hat)^2)`` in dB."""
    x = np.asarray(signal, dtype=np.float64)
    e = x - np.asarray(estimate, dtype=np.float64)
    return float(10.0 * np.log10(np.sum(x * x) / np.sum(e * e)))
