"""Offline digit synthesis with eSpeak NG (the espeakng-loader wheel, a locked dev dependency:
these tests skip only where that wheel cannot be imported at all)."""

import sys
import threading

import numpy as np
import pytest

pytest.importorskip("espeakng_loader", reason="the espeakng-loader wheel is not installed "
                    "(pip install espeakng-loader); it carries the eSpeak NG library")

from rnnlab.tasks.speech import synth
from rnnlab.tasks.speech.synth import (
    DIGIT_WORDS,
    native_sample_rate,
    resample,
    split_voices,
    synthesize,
    synthesize_digits,
    trim_silence,
    voice_variants,
)


def f0(wave: np.ndarray, rate: int, low: float = 50.0, high: float = 500.0) -> float:
    """Median fundamental frequency over the loud 40 ms frames by YIN's cumulative-mean-
    normalised difference (de Cheveigne & Kawahara 2002), an estimate independent of eSpeak."""
    n, tmax, tmin = int(0.04 * rate), int(rate / low), int(rate / high)
    starts = range(0, wave.size - n - tmax, n // 2)
    power = np.array([np.mean(wave[i:i + n] ** 2) for i in starts])
    estimates = []
    for i, p in zip(starts, power, strict=True):
        if p < 0.1 * power.max():
            continue
        x = wave[i:i + n + tmax]
        d = np.array([np.sum((x[:n] - x[t:t + n]) ** 2) for t in range(1, tmax + 1)])
        cmnd = d * np.arange(1, tmax + 1) / np.cumsum(d)
        below = np.flatnonzero(cmnd[tmin - 1:] < 0.2)
        if below.size:
            t = below[0] + tmin - 1
            while t + 1 < tmax and cmnd[t + 1] < cmnd[t]:
                t += 1  # descend to the local minimum
            estimates.append(rate / (t + 1))
    return float(np.median(estimates))


def test_library_loads_and_lists_the_variants():
    assert native_sample_rate() == 22050
    names = set(voice_variants())
    expected = {f"m{i}" for i in range(1, 8)} | {f"f{i}" for i in range(1, 5)}
    assert expected | {"croak", "whisper", "klatt"} <= names
    assert len(names) > 50


def test_a_word_is_float_in_range_trimmed_and_resampled():
    # A variant without pitch flutter: two in-process calls give the same samples.
    raw = synthesize("seven", variant="adam", sample_rate=22050, trim=False)
    eight = synthesize("seven", variant="adam", sample_rate=8000, trim=False)
    assert raw.dtype == np.float64 and np.abs(raw).max() <= 1.0 and np.abs(raw).max() > 0.05
    # resample_poly keeps the duration: len * 8000 / 22050 up to the ceiling of one sample.
    assert eight.size == int(np.ceil(raw.size * 8000 / 22050))
    np.testing.assert_array_equal(eight, resample(raw, 22050, 8000))
    trimmed = synthesize("seven", variant="adam", sample_rate=8000)
    assert trimmed.size <= eight.size
    # Padded with 0.2 s of silence each side, the word comes back within the 10 ms margins
    # (80 samples) and loses nothing louder than -35 dB of its peak window.
    padded = np.concatenate([np.zeros(1600), eight, np.zeros(1600)])
    cut = trim_silence(padded, 8000)
    assert eight.size - 160 <= cut.size <= eight.size + 160
    assert np.sum(cut ** 2) > 0.999 * np.sum(eight ** 2)


def test_resample_matches_a_sine_sampled_directly():
    t_in = np.arange(22050) / 22050
    t_out = np.arange(8000) / 8000
    y = resample(np.sin(2 * np.pi * 440 * t_in), 22050, 8000)
    # The Kaiser-windowed polyphase filter passes 440 Hz with ~1e-3 ripple; ends excluded
    # (the filter's half-length).
    np.testing.assert_allclose(y[200:-200], np.sin(2 * np.pi * 440 * t_out)[200:-200],
                               atol=5e-3)


def test_pitch_and_rate_parameters_act():
    low = synthesize("zero", variant="f2", pitch=30, sample_rate=16000)
    high = synthesize("zero", variant="f2", pitch=70, sample_rate=16000)
    # eSpeak's pitch scale 30 -> 70 raises this voice's fundamental from ~122 to ~200 Hz
    # (measured); YIN resolves it to ~1%.
    assert f0(high, 16000) > 1.3 * f0(low, 16000)
    # Words per minute 100 -> 300: the word is ~3x shorter (measured 3.2x).
    slow = synthesize("zero", variant="f2", rate=100)
    fast = synthesize("zero", variant="f2", rate=300)
    assert slow.size > 2.0 * fast.size


def test_digits_are_seeded_and_ordered():
    a = synthesize_digits(["m1", "f2"], repeats=1, digits=[3, 8], seed=5)
    b = synthesize_digits(["m1", "f2"], repeats=1, digits=[3, 8], seed=5)
    c = synthesize_digits(["m1", "f2"], repeats=1, digits=[3, 8], seed=6)
    assert len(a) == 4
    assert a.labels.tolist() == [3, 8, 3, 8] and a.voices == ("m1", "m1", "f2", "f2")
    for x, y in zip(a.waves, b.waves, strict=True):
        # Same seed, each batch from a fresh worker process: bit-identical.
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.pitches, c.pitches) or not np.array_equal(a.rates, c.rates)
    assert np.all((a.pitches >= 30) & (a.pitches <= 70))
    assert np.all((a.rates >= 130) & (a.rates <= 230))
    assert DIGIT_WORDS[a.labels[1]] == "eight"


def test_fresh_process_makes_a_batch_independent_of_history():
    job = dict(repeats=1, digits=[7, 7], seed=3)
    fresh = synthesize_digits(["m3"], **job)
    synthesize("hello there, how are you", variant="m3")  # moves the flutter index
    again = synthesize_digits(["m3"], **job)
    for x, y in zip(fresh.waves, again.waves, strict=True):
        np.testing.assert_array_equal(x, y)
    # In this process the same word differs slightly with history (pitch flutter: a few
    # samples in ~3000), but stays the same word: lengths within 2%.
    local = synthesize_digits(["m3"], fresh_process=False, **job)
    for x, y in zip(fresh.waves, local.waves, strict=True):
        assert abs(x.size - y.size) <= 0.02 * x.size


def test_cache_reads_back_what_it_wrote(tmp_path):
    first = synthesize_digits(["m2"], digits=[1, 2], seed=0, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    again = synthesize_digits(["m2"], digits=[1, 2], seed=0, cache_dir=tmp_path)
    for x, y in zip(first.waves, again.waves, strict=True):
        np.testing.assert_array_equal(x, y)


def test_concurrent_threads_get_the_serial_result():
    # Variants without pitch flutter: their in-process output does not depend on what the
    # library spoke before (measured), so any difference here would come from interleaving.
    voices = ["adam", "david", "shelby", "klatt6"]
    serial = {v: synthesize("four", variant=v) for v in voices}
    results: dict[str, np.ndarray] = {}

    def work(v: str) -> None:
        results[v] = synthesize("four", variant=v)

    threads = [threading.Thread(target=work, args=(v,)) for v in voices for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The module lock serialises the library: each thread gets its own voice's samples.
    for v in voices:
        np.testing.assert_array_equal(results[v], serial[v])
    assert synth._LOCK.acquire(blocking=False)
    synth._LOCK.release()


def test_voice_split_holds_voices_out():
    voices = voice_variants()[:12]
    train, test = split_voices(voices, 3, seed=1)
    assert len(test) == 3 and not set(train) & set(test)
    assert set(train) | set(test) == set(voices)
    assert split_voices(voices, 3, seed=1) == (train, test)
    assert split_voices(voices, 3, seed=2) != (train, test)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown voice variant"):
        synthesize("one", variant="nonexistent")
    with pytest.raises(ValueError, match="pitch"):
        synthesize("one", pitch=101)
    with pytest.raises(ValueError, match="text"):
        synthesize("  ")
    with pytest.raises(ValueError, match="must not repeat"):
        synthesize_digits(["m1", "m1"])
    with pytest.raises(ValueError, match="rate"):
        synthesize_digits(["m1"], rate=(200, 100))
    with pytest.raises(ValueError, match="n_test"):
        split_voices(["m1", "m2"], 2)
    with pytest.raises(ValueError, match="1-D"):
        trim_silence(np.zeros((2, 2)), 8000)


def test_clear_errors_when_the_library_is_missing(monkeypatch, tmp_path):
    from rnnlab.tasks.speech import _espeak

    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    with pytest.raises(ImportError, match="pip install espeakng-loader"):
        _espeak.Engine()
    monkeypatch.undo()
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path",
                        lambda: str(tmp_path / "libespeak-ng.so"))
    with pytest.raises(OSError, match="cannot load the eSpeak NG library"):
        _espeak.Engine()
