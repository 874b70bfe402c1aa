"""The cost meters measure what they claim: bytes, seconds and exponents."""

import math
import time

import pytest
import torch

from rnnlab import ElmanRNN
from rnnlab.analysis import fit_power_law, peak_memory_bytes, time_per_call
from rnnlab.learning import BPTT

MB40 = 10_000_000 * 4  # torch.empty(10_000_000) in float32


def close(value: float, expected: float, rel: float = 0.03) -> bool:
    return abs(value - expected) <= rel * expected


# --- peak_memory_bytes -------------------------------------------------------------------------
def test_peak_memory_of_one_allocation_is_its_size():
    peak = peak_memory_bytes(lambda: torch.empty(10_000_000))
    assert close(peak, MB40), peak


def test_peak_memory_counts_dtype_size():
    peak = peak_memory_bytes(lambda: torch.empty(1_000_000, dtype=torch.float64))
    assert close(peak, 8_000_000), peak


def test_sequential_alloc_free_do_not_add_up():
    def sequential():
        for _ in range(3):
            a = torch.empty(10_000_000)
            del a

    peak = peak_memory_bytes(sequential)
    assert close(peak, MB40), peak


def test_simultaneous_allocations_add_up():
    def together():
        a = torch.empty(10_000_000)
        b = torch.empty(10_000_000)
        return a, b

    peak = peak_memory_bytes(together)
    assert close(peak, 2 * MB40), peak


def test_memory_allocated_before_and_kept_is_not_counted():
    held = torch.empty(10_000_000)

    def use_held():
        held.fill_(1.0)  # in place: no allocation
        return torch.empty(1_000_000)

    peak = peak_memory_bytes(use_held)
    assert close(peak, 4_000_000), peak


def test_cpu_frees_of_memory_from_before_are_invisible_so_the_peak_is_an_upper_bound():
    # The documented CPU limitation: the profiler does not know the size of a block allocated
    # before it started, so freeing it does not lower the level and reusing the room counts.
    held = [torch.empty(10_000_000)]

    def free_then_allocate():
        held.pop()
        return torch.empty(10_000_000)

    peak = peak_memory_bytes(free_then_allocate)
    assert close(peak, MB40), peak


def test_temporaries_inside_an_operator_are_seen():
    x = torch.randn(1000, 1000)
    # (x @ x) allocates its 4 MB result inside aten::mm; the sum keeps only a scalar.
    peak = peak_memory_bytes(lambda: (x @ x).sum())
    assert close(peak, 4_000_000), peak


def test_nothing_allocated_gives_zero():
    assert peak_memory_bytes(lambda: None) == 0


def test_peak_memory_of_bptt_grows_linearly_with_sequence_length():
    model = ElmanRNN(1, 32, 1)
    lengths = [50, 100, 200, 400]
    peaks = []
    for steps in lengths:
        x, y = torch.randn(4, steps, 1), torch.randn(4, steps, 1)
        peaks.append(peak_memory_bytes(lambda x=x, y=y: BPTT(model).accumulate(x, y)))
    slope, _ = fit_power_law(lengths, peaks)
    assert 0.9 < slope < 1.1, (slope, peaks)
    # At least the stored states, (batch, T, N) floats, are live at the peak.
    assert peaks[-1] > 4 * 400 * 32 * 4


def test_peak_memory_rejects_other_devices():
    with pytest.raises(ValueError, match="cpu and cuda"):
        peak_memory_bytes(lambda: None, device="meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_on_cuda():
    peak = peak_memory_bytes(lambda: torch.empty(10_000_000, device="cuda"), device="cuda")
    assert close(peak, MB40), peak


# --- time_per_call -----------------------------------------------------------------------------
def test_time_per_call_measures_sleep_and_counts_calls():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)

    t = time_per_call(fn, repeats=3, warmup=2)
    assert len(calls) == 5
    assert 0.009 < t < 0.05, t


def test_time_per_call_is_the_median():
    durations = iter([0.0, 0.001, 0.03, 0.001])  # the warmup call, then three timed ones

    def fn():
        time.sleep(next(durations))

    assert time_per_call(fn, repeats=3, warmup=1) < 0.02


def test_time_per_call_uses_the_given_clock():
    ticks = iter(range(100))
    # A fake clock that advances by 1 at every reading: each timed call lasts exactly 1.
    assert time_per_call(lambda: None, repeats=4, warmup=0, timer=lambda: float(next(ticks))) == 1.0


def test_time_per_call_cpu_clock_leaves_out_sleep():
    # This thread's CPU clock: process_time would also count other threads still spinning
    # (OpenMP/BLAS pools wait busily for a while after their work), which depends on the
    # thread settings the suite runs under.
    assert time_per_call(lambda: time.sleep(0.02), repeats=2, warmup=0,
                         timer=time.thread_time) < 0.01


def test_time_per_call_validates():
    with pytest.raises(ValueError):
        time_per_call(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        time_per_call(lambda: None, warmup=-1)


# --- fit_power_law -----------------------------------------------------------------------------
@pytest.mark.parametrize("exponent, scale", [(1.0, 1.0), (2.0, 3.5), (4.0, 1e-9), (-0.5, 7.0)])
def test_fit_power_law_recovers_an_exact_power_law(exponent, scale):
    xs = [16, 32, 64, 128, 256]
    ys = [scale * x**exponent for x in xs]
    slope, intercept = fit_power_law(xs, ys)
    assert slope == pytest.approx(exponent, abs=1e-12)
    assert intercept == pytest.approx(math.log(scale), abs=1e-9)


def test_fit_power_law_is_least_squares_in_log_space():
    xs = [1.0, 2.0, 4.0]
    ys = [1.0, 4.0, 8.0]  # log2 y = 0, 2, 3 at log2 x = 0, 1, 2: slope 1.5 in any base
    slope, _ = fit_power_law(xs, ys)
    assert slope == pytest.approx(1.5)


def test_fit_power_law_validates():
    with pytest.raises(ValueError, match="length"):
        fit_power_law([1, 2], [1])
    with pytest.raises(ValueError, match="at least 2"):
        fit_power_law([1], [1])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([0, 1], [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        fit_power_law([2, 2], [1, 2])
