"""Lyon's passive ear model against its design equations and published properties (Lyon 1982;
Slaney, Apple TR #13, 1988)."""

import numpy as np
import pytest

from rnnlab.tasks.speech.lyon import (
    AGC_STATE_LIMIT,
    cascade_response,
    cochleagram,
    design_lyon_filters,
    ear_bandwidth,
)

FS = 8000.0


@pytest.fixture(scope="module")
def filters():
    return design_lyon_filters(FS)


@pytest.fixture(scope="module")
def characteristic(filters):
    """Each channel's best frequency: the peak of its cascade response on a fine grid."""
    grid = np.linspace(20.0, FS / 2 - 10.0, 16000)
    return grid[np.argmax(cascade_response(filters, grid), axis=0)], grid[1] - grid[0]


def test_centre_frequencies_follow_the_stated_spacing(filters):
    cf, q, step, eb = (filters.centre_frequencies, filters.ear_q, filters.step_factor,
                       filters.break_frequency)
    assert np.all(np.diff(cf) < 0)
    # Closed form: asinh(f_n / E_b) falls by step/Q per channel (the solution of
    # df/dn = -step * BW(f)); float64 asinh/sinh round-trips to ~1e-15 relative.
    np.testing.assert_allclose(np.diff(np.arcsinh(cf / eb)), -step / q, rtol=1e-9)
    # First-order form of the same law: f_n - f_(n+1) = step * BW(f) to O(step / Q) relative.
    mid = 0.5 * (cf[:-1] + cf[1:])
    np.testing.assert_allclose(-np.diff(cf), step * ear_bandwidth(mid, q, eb),
                               rtol=(step / q) ** 2)
    # Bandwidth law: constant Q above the break frequency, constant bandwidth below.
    assert ear_bandwidth(20000.0) / 20000.0 == pytest.approx(1 / q, rel=2e-3)
    assert ear_bandwidth(10.0) == pytest.approx(eb / q, rel=1e-4)
    assert filters.channels == 64  # floor(Q/step * (asinh(f_top/E_b) - asinh(f_low/E_b)))


def test_cascade_ends_where_the_pole_q_would_fall_below_one_half(filters):
    q = filters.centre_frequencies / filters.bandwidths
    assert np.all(q > 0.5)
    eb, qe, step = filters.break_frequency, filters.ear_q, filters.step_factor
    next_f = eb * np.sinh(np.arcsinh(filters.centre_frequencies[-1] / eb) - step / qe)
    assert next_f / float(ear_bandwidth(next_f, qe, eb)) < 0.5
    # The first section's zeros stay below Nyquist.
    assert filters.zero_frequencies[0] < FS / 2


def test_sections_place_poles_and_zeros_at_the_stated_frequencies(filters):
    fs = filters.sample_rate
    for n in (0, 20, 40, filters.channels - 1):
        b, a = filters.sections[n, :3], filters.sections[n, 3:]
        pole = np.roots(a)[0]
        f, bw = filters.centre_frequencies[n], filters.bandwidths[n]
        q = f / bw
        # Impulse invariance of s = -w/(2Q) + i w sqrt(1 - 1/(4Q^2)); np.roots is accurate to
        # ~1e-12 on these well-separated quadratics.
        assert abs(pole) == pytest.approx(np.exp(-np.pi * f / (q * fs)), rel=1e-9)
        assert abs(np.angle(pole)) == pytest.approx(
            2 * np.pi * f * np.sqrt(1 - 1 / (4 * q * q)) / fs, rel=1e-9)
        zero = np.roots(b)[0]
        zf = f + 1.5 * filters.step_factor * bw
        assert abs(zero) == pytest.approx(np.exp(-np.pi * bw / (5 * fs)), rel=1e-9)
        assert abs(np.angle(zero)) == pytest.approx(
            2 * np.pi * zf * np.sqrt(1 - 1 / (4 * (5 * zf / bw) ** 2)) / fs, rel=1e-9)
    # DC gain of section n is f_(n-1) / f_n.
    dc = filters.sections[:, :3].sum(axis=1) / filters.sections[:, 3:].sum(axis=1)
    cf = filters.centre_frequencies
    np.testing.assert_allclose(dc[1:], cf[:-1] / cf[1:], rtol=1e-12)


def test_characteristic_frequencies_decrease_along_the_cascade(filters, characteristic):
    best, _ = characteristic
    assert np.all(np.diff(best) < 0)
    # The best frequency sits just below the pole frequency (the next section's notch cuts
    # above it): within 10% of it above the break frequency, where the sections are sharp.
    ratio = best / filters.centre_frequencies
    assert np.all(ratio < 1.0)
    sharp = filters.centre_frequencies > filters.break_frequency
    assert np.all(ratio[sharp] > 0.9)


@pytest.mark.parametrize("tone", [300.0, 500.0, 1000.0, 2000.0, 3000.0])
def test_a_tone_peaks_at_the_channel_tuned_nearest_to_it(filters, characteristic, tone):
    best, _ = characteristic
    nearest = int(np.argmin(np.abs(best - tone)))
    linear = int(np.argmax(cascade_response(filters, [tone])[0]))
    # Between two channels' best frequencies (channels are 1/4 bandwidth apart) the asymmetric
    # tuning curves may favour the neighbour: allow one channel.
    assert abs(linear - nearest) <= 1
    # The time-domain model (no AGC, no lateral inhibition) agrees with the transfer function.
    t = np.arange(int(0.25 * FS)) / FS
    gram = cochleagram(0.05 * np.sin(2 * np.pi * tone * t), FS, agc=False, differ=False)
    assert abs(int(np.argmax(gram[0, 5:].mean(axis=0))) - nearest) <= 1


def test_outputs_are_non_negative_and_frame_rate_is_stated():
    rng = np.random.default_rng(0)
    waves = rng.normal(size=(3, 2003)) * 0.2
    for agc in (True, False):
        gram = cochleagram(waves, FS, decimation=40, agc=agc)
        assert gram.shape == (3, 2003 // 40, 64)
        assert gram.min() >= 0.0 and gram.max() > 0.0
    # Frame k is the smoothed output at sample (k + 1) * decimation - 1: a click at sample
    # 1000 first shows in frame 1000 // 40 = 25 (causal filters; earlier frames are zero).
    click = np.zeros(2000)
    click[1000] = 1.0
    gram = cochleagram(click, FS, decimation=40, agc=False, differ=False)
    assert np.all(gram[0, :25] == 0.0) and gram[0, 25].max() > 0.0


def test_agc_compresses_a_louder_input():
    t = np.arange(int(0.6 * FS)) / FS
    quiet = 0.02 * np.sin(2 * np.pi * 1000 * t)
    loud = 10.0 * quiet  # +20 dB
    tail = slice(30, None)  # after the slowest AGC stage has mostly adapted

    def level(x, agc):
        return cochleagram(x, FS, agc=agc, differ=False)[0, tail].mean()

    # Without AGC the model is linear up to the rectifier: 10x in, 10x out (to rounding).
    assert level(loud, False) / level(quiet, False) == pytest.approx(10.0, rel=1e-9)
    # With AGC a 20 dB louder tone gives far less than 20 dB more output; measured 1.1x here.
    assert level(loud, True) / level(quiet, True) < 2.0
    assert AGC_STATE_LIMIT < 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="sample_rate"):
        design_lyon_filters(0.0)
    with pytest.raises(ValueError, match="at least 2"):
        design_lyon_filters(700.0, step_factor=8.0)
    with pytest.raises(ValueError, match="finite"):
        cochleagram(np.array([0.0, np.nan] * 100), FS)
    with pytest.raises(ValueError, match="decimation"):
        cochleagram(np.zeros(10), FS, decimation=80)
    with pytest.raises(ValueError, match="designed for"):
        cochleagram(np.zeros(1000), FS, filters=design_lyon_filters(16000.0))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        cochleagram(np.zeros((2, 2, 100)), FS)
