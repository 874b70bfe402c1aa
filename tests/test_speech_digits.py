"""The spoken-digits data set: shapes, held-out voices, seeding, spike trains, static features."""

import numpy as np
import pytest
import torch

pytest.importorskip("espeakng_loader", reason="the espeakng-loader wheel is not installed "
                    "(pip install espeakng-loader); it carries the eSpeak NG library")

from rnnlab.tasks.speech import (
    bsa_encode,
    bsa_filter,
    cochleagram,
    spoken_digits,
    static_features,
    synthesize_digits,
    word_error_rate,
)

VOICES = ("m1", "f2", "croak")
SMALL = dict(voices=VOICES, n_test_voices=1, repeats=1, digits=[1, 7], seed=3)


@pytest.fixture(scope="module")
def small():
    return spoken_digits(spikes=True, spike_upsample=4, **SMALL)


def test_splits_hold_the_test_voices_out(small):
    train, test = small
    assert len(train) == 4 and len(test) == 2
    assert not set(train.voices) & set(test.voices)
    assert set(train.voices) | set(test.voices) == set(VOICES)
    assert sorted(train.labels.tolist()) == [1, 1, 7, 7]
    channels = train.centre_frequencies.numel()
    assert channels == 64 and train.inputs.shape[2] == channels
    assert train.inputs.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.frame_rate == 100.0


def test_inputs_are_the_normalised_cochleagrams(small):
    train, _ = small
    # Independent path: synthesise the same training utterances (same generator draws: the
    # split consumes one permutation first) and run the cochlea on each alone.
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(3, generator=gen).tolist()
    train_voices = tuple(v for i, v in enumerate(VOICES) if i not in set(order[:1]))
    utterances = synthesize_digits(train_voices, repeats=1, digits=[1, 7], generator=gen)
    for i, wave in enumerate(utterances.waves):
        gram = cochleagram(wave, 8000, decimation=80)[0]
        gram = gram / gram.max()
        n = int(train.lengths[i])
        assert n == gram.shape[0]
        # Batched with zero padding at the end vs alone: the filters are causal, so the kept
        # frames see the same samples; float32 storage rounds to 2^-24 relative of the peak 1.
        np.testing.assert_allclose(train.inputs[i, :n].double().numpy(), gram, rtol=0,
                                   atol=1e-6)
        assert torch.all(train.inputs[i, n:] == 0)


def test_spike_trains_are_the_bsa_code_of_the_inputs(small):
    train, _ = small
    assert train.spikes is not None and train.spike_upsample == 4
    assert train.spikes.shape == (4, train.inputs.shape[1] * 4, 64)
    assert set(torch.unique(train.spikes).tolist()) <= {0.0, 1.0}
    h = bsa_filter(20, 0.08)
    row = np.repeat(train.inputs[0, :, 10].double().numpy(), 4)
    expected = bsa_encode(row, h, 0.9 * h.sum())
    # float32-stored inputs vs the float64 ones the data set encoded: the same spike wherever
    # the criterion is not within rounding of its threshold; allow 1% of steps.
    mismatch = np.mean(expected != train.spikes[0, :, 10].numpy().astype(bool))
    assert mismatch <= 0.01
    assert train.spikes.sum() > 0


def test_same_seed_same_data():
    a_train, a_test = spoken_digits(**SMALL)
    b_train, b_test = spoken_digits(**SMALL)
    # Same seed, fresh synthesis processes, same computation: bit-identical.
    assert torch.equal(a_train.inputs, b_train.inputs) and torch.equal(a_test.inputs,
                                                                       b_test.inputs)
    assert a_train.spikes is None
    c_train, c_test = spoken_digits(**{**SMALL, "seed": 4})
    assert (c_test.voices != a_test.voices) or not torch.equal(c_train.inputs, a_train.inputs)


def test_static_features_match_a_hand_computation():
    x = torch.rand(2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([6, 4])
    feats = static_features(x, lengths, segments=2, bands=3)
    assert feats.shape == (2, 6)
    # Utterance 1: frames 0..3 -> segments [0, 2) and [2, 4); bands channels [0,2) [2,4) [4,6).
    expected = torch.log(1e-6 + torch.stack([x[1, a:b, c:c + 2].mean() for a, b in
                                             ((0, 2), (2, 4)) for c in (0, 2, 4)]))
    torch.testing.assert_close(feats[1], expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="fewer than segments"):
        static_features(x, lengths, segments=5)
    with pytest.raises(ValueError, match="lengths"):
        static_features(x, torch.tensor([8, 4]))


def test_word_error_rate_and_bad_input():
    assert word_error_rate(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.25
    with pytest.raises(ValueError, match="differ"):
        word_error_rate(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="n_test_voices"):
        spoken_digits(voices=("m1", "m2"), n_test_voices=2)
    with pytest.raises(ValueError, match="normalize"):
        spoken_digits(voices=VOICES, n_test_voices=1, spikes=True, normalize="none")
    with pytest.raises(ValueError, match="unknown voice variant"):
        spoken_digits(voices=("m1", "nope"), n_test_voices=1)
