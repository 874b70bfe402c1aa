"""Piano rolls, the JSB Chorales loader, the music21 chorales and the frame-level metrics.

Tolerances. The metrics are sums of n <= 88 x 16 positive per-key terms, each a few ulps from
its closed form (log1p, softplus): two evaluations in other orders differ by at most
(2 gamma_n + ~4 u) times the sum (tests.reference.gamma), i.e. 3e-13 relative in float64 for
n = 1408. float32 sums in torch's cascade order are within (log2 n + 4) eps, 2e-6 relative,
so 1e-5 there. Closed forms of a few terms of O(1) are held to 1e-12 absolute.
"""

import json
import math
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab.tasks import music
from rnnlab.tasks.music import (
    NUM_KEYS,
    bach_chorale_frames,
    bach_chorales,
    frame_accuracy,
    frame_counts,
    frame_nll,
    key_frequencies,
    load_piano_rolls,
    marginal_nll,
    next_step_batch,
    notes_to_roll,
    pad_rolls,
    piano_roll_batches,
    roll_to_notes,
    save_piano_rolls,
    score_to_frames,
)

JSB_PATH = Path(__file__).parents[2] / "shared" / "data" / "jsb-chorales-quarter.json"
needs_jsb = pytest.mark.skipif(
    not JSB_PATH.is_file(),
    reason=f"JSB Chorales file not found at {JSB_PATH} (the shared data folder beside the "
    "project); it is not part of the project",
)

SMALL = {
    "train": [[[60, 64, 67], [], [21, 108]], [[62], [62, 65]]],
    "valid": [[[48, 55, 64, 72]]],
    "test": [[[60], [64], [67], [72]]],
}


# ------------------------------------------------------------------------------------------------
# Rolls and files
# ------------------------------------------------------------------------------------------------
def test_notes_to_roll_hand_example_and_inverse():
    roll = notes_to_roll([[21, 108], [], [60, 64, 60]])
    expected = torch.zeros(3, 88)
    expected[0, 0] = expected[0, 87] = 1  # A0 is column 0, C8 column 87
    expected[2, 39] = expected[2, 43] = 1  # C4 = 60 -> 39, E4 = 64 -> 43; a repeat is one key
    assert torch.equal(roll, expected)
    assert roll_to_notes(roll) == [[21, 108], [], [60, 64]]
    assert notes_to_roll([[60.0]], dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        ([[20]], ValueError, "outside the piano range"),
        ([[109]], ValueError, "outside the piano range"),
        ([[60.5]], ValueError, "integer"),
        ([[float("nan")]], ValueError, "integer"),
        ([["C4"]], TypeError, "number"),
        ([60, 64], TypeError, "time step"),
        ([], ValueError, "no time steps"),
    ],
)
def test_notes_to_roll_rejects_bad_notes(frames, error, match):
    with pytest.raises(error, match=match):
        notes_to_roll(frames)


def _reference_roll(seq):
    """Independent numpy construction of a roll."""
    out = np.zeros((len(seq), 88))
    for t, step in enumerate(seq):
        for m in step:
            out[t, m - 21] = 1.0
    return out


@pytest.mark.parametrize("suffix", [".json", ".pickle", ""])
def test_load_formats_round_trip(tmp_path, suffix):
    path = tmp_path / f"set{suffix}"
    if suffix == ".pickle":
        # Old pickles hold floats, tuples or numpy arrays rather than lists of ints.
        data = {k: [[tuple(float(m) for m in step) for step in seq] for seq in v]
                for k, v in SMALL.items()}
        data["train"] = [[np.array(step, dtype=np.int64) for step in seq]
                         for seq in SMALL["train"]]
        path.write_bytes(pickle.dumps(data, protocol=2))
    else:
        path.write_text(json.dumps(SMALL))
    rolls = load_piano_rolls(path)
    assert [len(rolls[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    for split, seqs in SMALL.items():
        for seq, roll in zip(seqs, rolls[split], strict=True):
            np.testing.assert_array_equal(roll.numpy(), _reference_roll(seq))
    out = tmp_path / "again.json"
    save_piano_rolls(rolls, out)
    assert json.loads(out.read_text()) == {k: [[sorted(s) for s in q] for q in v]
                                           for k, v in SMALL.items()}


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no piano-roll file"):
        load_piano_rolls(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [], "valid": []}))
    with pytest.raises(ValueError, match=r"missing \['test'\]"):
        load_piano_rolls(bad)
    bad.write_text(json.dumps({**SMALL, "extra": []}))
    with pytest.raises(ValueError, match="unexpected"):
        load_piano_rolls(bad)
    bad.write_text(json.dumps({**SMALL, "test": [[[60], [200]]]}))
    with pytest.raises(ValueError, match=r"test\[0\], step 1: MIDI note 200"):
        load_piano_rolls(bad)
    odd = tmp_path / "data.txt"
    odd.write_text("hello")
    with pytest.raises(ValueError, match="JSON or pickle"):
        load_piano_rolls(odd)


@needs_jsb
def test_jsb_chorales_counts_and_content():
    rolls = load_piano_rolls(JSB_PATH)
    assert {s: len(v) for s, v in rolls.items()} == {"train": 229, "valid": 76, "test": 77}
    raw = json.loads(JSB_PATH.read_text())
    for split in ("train", "valid", "test"):
        for seq, roll in zip(raw[split], rolls[split], strict=True):
            assert roll.shape == (len(seq), NUM_KEYS) and roll.dtype == torch.float32
            np.testing.assert_array_equal(roll.numpy(), _reference_roll(seq))


# ------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------
def test_next_step_batch_shifts_and_masks():
    a = notes_to_roll([[60], [62], [64]])
    b = notes_to_roll([[48], [50]])
    batch = next_step_batch([a, b])
    assert batch.inputs.shape == batch.targets.shape == (2, 3, 88)
    assert batch.lengths.tolist() == [3, 2]
    assert batch.mask.tolist() == [[True, True, True], [True, True, False]]
    # Input at step s is frame s-1 (silence first); target is frame s.
    assert torch.equal(batch.inputs[0], torch.cat([torch.zeros(1, 88), a[:2]]))
    assert torch.equal(batch.targets[0], a)
    assert torch.equal(batch.targets[1, :2], b) and batch.targets[1, 2].sum() == 0
    plain = next_step_batch([a, b], prepend_silence=False)
    assert plain.lengths.tolist() == [2, 1]
    assert torch.equal(plain.inputs[0], a[:2]) and torch.equal(plain.targets[0], a[1:])
    assert torch.equal(plain.inputs[1, :1], b[:1]) and torch.equal(plain.targets[1, :1], b[1:])
    # The lengths are what pack_padded_sequence needs: it keeps exactly the masked steps.
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        batch.targets, batch.lengths, batch_first=True, enforce_sorted=False)
    assert packed.data.shape[0] == int(batch.mask.sum())
    with pytest.raises(ValueError, match="fewer than 2 frames"):
        next_step_batch([notes_to_roll([[60]])], prepend_silence=False)


def test_pad_rolls_and_dtype_device():
    rolls = [notes_to_roll([[60]] * n) for n in (1, 4, 2)]
    x, lengths = pad_rolls(rolls, dtype=torch.float64)
    assert x.shape == (3, 4, 88) and x.dtype == torch.float64
    assert lengths.tolist() == [1, 4, 2] and lengths.dtype == torch.int64
    assert x[:, :, 39].tolist() == [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    with pytest.raises(ValueError, match="expected 88"):
        pad_rolls([torch.zeros(3, 12)])
    with pytest.raises(ValueError, match="empty"):
        pad_rolls([])


def test_piano_roll_batches_seeded_and_complete():
    rolls = [notes_to_roll([[40 + i]] * (i + 2)) for i in range(7)]

    def order(seed):
        seen = []
        for batch in piano_roll_batches(rolls, 3, seed=seed):
            seen += [int(torch.nonzero(t[0])[0]) + 21 - 40 for t in batch.targets]
        return seen

    assert sorted(order(0)) == list(range(7))
    assert order(0) == order(0)
    assert order(0) != order(1) or order(0) != order(2)
    unshuffled = [b.lengths.tolist() for b in piano_roll_batches(rolls, 3, shuffle=False)]
    assert unshuffled == [[2, 3, 4], [5, 6, 7], [8]]
    assert len(list(piano_roll_batches(rolls, 3, shuffle=False, drop_last=True))) == 2


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def test_frame_nll_hand_computed():
    # Two keys, two frames: p = (0.8, 0.3) with y = (1, 0), p = (0.5, 0.9) with y = (0, 0).
    p = torch.tensor([[[0.8, 0.3], [0.5, 0.9]]], dtype=torch.float64)
    y = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    f1 = -math.log(0.8) - math.log(0.7)
    f2 = -math.log(0.5) - math.log(0.1)
    assert float(frame_nll(p, y, logits=False)) == pytest.approx((f1 + f2) / 2, abs=1e-12)
    s = torch.log(p) - torch.log1p(-p)  # the logits of the same probabilities
    assert float(frame_nll(s, y)) == pytest.approx((f1 + f2) / 2, abs=1e-12)
    mask = torch.tensor([[True, False]])
    assert float(frame_nll(s, y, mask)) == pytest.approx(f1, abs=1e-12)
    assert float(frame_nll(s, y, reduction="sum")) == pytest.approx(f1 + f2, abs=1e-12)
    per_frame = frame_nll(s, y, mask, reduction="none")
    assert per_frame.shape == (1, 2)
    assert per_frame.tolist()[0] == pytest.approx([f1, 0.0], abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frame_nll_matches_torch_bce(dtype):
    g = torch.Generator().manual_seed(0)
    s = (3 * torch.randn(4, 7, 88, generator=g)).to(dtype)
    y = (torch.rand(4, 7, 88, generator=g) < 0.05).to(dtype)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([[7], [3], [5], [1]])
    bce = F.binary_cross_entropy_with_logits(s, y, reduction="none").sum(-1)
    ref = bce[mask].sum() / mask.sum()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(frame_nll(s, y, mask), ref, rtol=tol, atol=0)
    probs = torch.sigmoid(s)
    ref_p = F.binary_cross_entropy(probs, y, reduction="none").sum(-1)[mask].sum() / mask.sum()
    assert torch.allclose(frame_nll(probs, y, mask, logits=False), ref_p, rtol=tol * 10, atol=0)
    # A model saying 1/2 for every key costs 88 ln 2 nats per frame (closed form).
    half = frame_nll(torch.zeros_like(s), y, mask)
    assert float(half) == pytest.approx(88 * math.log(2), rel=tol)


def test_frame_nll_gradient_and_padding():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 88, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(2, 3, 88, generator=g) < 0.1).double()
    mask = torch.tensor([[True, True, True], [True, False, False]])
    frame_nll(s, y, mask).backward()
    # d/ds of the mean NLL is (sigmoid(s) - y) / frames on real frames, 0 on padding.
    expected = (torch.sigmoid(s) - y).detach() * mask.unsqueeze(-1) / 4
    assert torch.allclose(s.grad, expected, atol=1e-14)
    # Whatever sits in the padding does not change the value, even extreme scores.
    s2 = s.detach().clone()
    s2[1, 1:] = 1e4
    same = float(frame_nll(s.detach(), y, mask))
    assert float(frame_nll(s2, y, mask)) == pytest.approx(same, abs=1e-12)
    extreme = frame_nll(torch.full((1, 1, 88), 1e4), torch.ones(1, 1, 88))
    assert math.isfinite(float(extreme)) and float(extreme) == 0.0


def test_frame_metric_errors():
    s, y = torch.zeros(1, 2, 88), torch.zeros(1, 2, 88)
    with pytest.raises(ValueError, match="differ in shape"):
        frame_nll(s, torch.zeros(1, 3, 88))
    with pytest.raises(ValueError, match="only 0 and 1"):
        frame_nll(s, torch.full((1, 2, 88), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        frame_nll(torch.full((1, 2, 88), 1.5), y, logits=False)
    with pytest.raises(ValueError, match="non-finite"):
        frame_nll(torch.full((1, 2, 88), float("nan")), y)
    with pytest.raises(ValueError, match="mask has shape"):
        frame_nll(s, y, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no frames"):
        frame_nll(s, y, torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        frame_nll(s, y, reduction="average")
    with pytest.raises(ValueError, match="only 0 and 1"):
        frame_accuracy(torch.full((1, 2, 88), 0.7), y)


def test_frame_accuracy_sums_counts_before_the_ratio():
    y = torch.zeros(1, 3, 88)
    pred = torch.zeros(1, 3, 88)
    y[0, 0, [0, 1, 2]] = 1
    pred[0, 0, [0, 1, 2, 3]] = 1  # frame 0: TP 3, FP 1
    y[0, 1, [5, 6]] = 1  # frame 1: FN 2
    # frame 2 silent in both: counts nothing.
    assert frame_counts(pred, y) == (3, 1, 2)
    assert frame_accuracy(pred, y) == pytest.approx(3 / 6)
    # The mean of per-frame ratios would be (3/4 + 0) / 2 = 0.375: not what is measured.
    assert frame_accuracy(pred, y) != pytest.approx(0.375)
    assert frame_accuracy(pred, y, torch.tensor([[True, False, True]])) == pytest.approx(3 / 4)
    probs = 0.2 + 0.6 * pred  # 0.8 where predicted on
    assert frame_accuracy(probs, y, threshold=0.5) == pytest.approx(0.5)
    assert frame_accuracy(pred.bool(), y) == pytest.approx(0.5)
    assert frame_accuracy(torch.zeros(1, 2, 88), torch.zeros(1, 2, 88)) == 1.0


def test_marginal_nll_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    train = [notes_to_roll([[60, 64], [60], [67]]), notes_to_roll([[60, 67]])]
    test = [notes_to_roll([[60], [64, 67], []])]
    p = key_frequencies(train, smoothing=0.5)
    counts = np.zeros(88)
    for m in (60, 64, 60, 67, 60, 67):
        counts[m - 21] += 1
    np.testing.assert_allclose(p.numpy(), (counts + 0.5) / (4 + 1.0), rtol=1e-15)
    y = torch.cat(test).numpy()
    ref = -stats.bernoulli.logpmf(y, p.numpy()[None, :]).sum() / y.shape[0]
    assert marginal_nll(train, test, smoothing=0.5) == pytest.approx(ref, rel=1e-12)
    # Unsmoothed, on its own training set, the NLL is the sum of the keys' binary entropies.
    q = key_frequencies(train, smoothing=0.0).numpy()
    q = q[(q > 0) & (q < 1)]
    entropy = float(-(q * np.log(q) + (1 - q) * np.log(1 - q)).sum())
    assert marginal_nll(train, train, smoothing=0.0) == pytest.approx(entropy, rel=1e-12)
    with pytest.raises(ValueError, match="smoothing"):
        key_frequencies(train, smoothing=-1.0)


@needs_jsb
def test_jsb_marginal_reference_number():
    rolls = load_piano_rolls(JSB_PATH)
    nll = marginal_nll(rolls["train"], rolls["test"])
    # Checked by brute force: the same model through frame_nll on one padded batch.
    p = key_frequencies(rolls["train"])
    batch = next_step_batch(rolls["test"], dtype=torch.float64)
    logits = (torch.log(p) - torch.log1p(-p)).expand_as(batch.targets)
    assert float(frame_nll(logits, batch.targets, batch.mask)) == pytest.approx(nll, rel=1e-10)
    # Far below the 88 ln 2 = 61.0 nats of a coin per key; far above published RNN results (~8).
    assert 10.0 < nll < 88 * math.log(2)


# ------------------------------------------------------------------------------------------------
# music21 chorales
# ------------------------------------------------------------------------------------------------
def _two_part_score():
    m21 = pytest.importorskip("music21")
    from music21 import chord, meter, note, stream, tie

    def measure(number, elements, padding=0.0, ts=None):
        m = stream.Measure(number=number)
        if ts:
            m.timeSignature = meter.TimeSignature(ts)
        m.paddingLeft = padding
        for e in elements:
            m.append(e)
        return m

    def tied(n, kind):
        n.tie = tie.Tie(kind)
        return n

    upper, lower = stream.Part(), stream.Part()
    # Pickup of an eighth (the bar misses 3.5 quarters): the beats fall on offsets 0.5, 1.5, ...
    upper.append(measure(0, [note.Note("G4", quarterLength=0.5)], padding=3.5, ts="4/4"))
    upper.append(measure(1, [tied(note.Note("C5", quarterLength=2), "start"),
                             tied(note.Note("C5", quarterLength=1), "stop"),
                             note.Rest(quarterLength=1)]))
    upper.append(measure(2, [note.Note("F5", quarterLength=1).getGrace(),
                             note.Note("E5", quarterLength=0.25)]))
    lower.append(measure(0, [tied(chord.Chord(["C4", "E4"], quarterLength=0.5), "start")],
                         padding=3.5, ts="4/4"))
    lower.append(measure(1, [tied(chord.Chord(["C4", "E4"], quarterLength=1), "stop"),
                             note.Rest(quarterLength=1), note.Note("G3", quarterLength=2)]))
    lower.append(measure(2, [note.Rest(quarterLength=0.25)]))
    score = stream.Score()
    score.insert(0, upper)
    score.insert(0, lower)
    return m21, score


def test_score_to_frames_hand_built_score():
    _, score = _two_part_score()
    # Beats at 0.5 .. 4.5; G4 (0 - 0.5) falls between beats; the grace note has no duration.
    assert score_to_frames(score) == [
        [60, 64, 72],  # 0.5: chord C4 E4 (tied over the bar) and C5
        [72],  # 1.5: C5 held; the lower part rests
        [55, 72],  # 2.5: C5 tied on; G3 starts
        [55],  # 3.5: G3 held; the upper part rests
        [76],  # 4.5: E5 (a sixteenth on the beat)
    ]


def test_score_to_frames_agrees_with_music21_chordify():
    m21 = pytest.importorskip("music21")
    score = m21.corpus.parse("bach/bwv10.7")
    frames = score_to_frames(score)
    # Independent path: music21's own chordify merges all parts into chords of sounding notes.
    chords = list(score.chordify().flatten().notes)
    pad = score.parts[0].getElementsByClass("Measure").first().paddingLeft
    t = Fraction(-pad) % 1
    ref = []
    end = max(Fraction(c.offset) + Fraction(c.quarterLength) for c in chords)
    spans = [(Fraction(c.offset), Fraction(c.offset) + Fraction(c.quarterLength), c)
             for c in chords]
    while t < end:
        ref.append(sorted({p.midi for s, e, c in spans if s <= t < e for p in c.pitches}))
        t += 1
    assert frames == ref
    assert len(frames) == 88  # 22 bars of 4/4
    assert all(1 <= len(f) <= 4 for f in frames)


@needs_jsb
@pytest.mark.parametrize(("work", "shift", "split", "index"),
                         [("bach/bwv153.9", 12, "test", 33), ("bach/bwv145.5", 6, "train", 221)])
def test_music21_sampling_reproduces_a_jsb_chorale(work, shift, split, index):
    """Published data as the reference: sampled from music21's score, these chorales equal
    their Boulanger-Lewandowski JSB sequences frame for frame, up to JSB's transposition."""
    m21 = pytest.importorskip("music21")
    frames = score_to_frames(m21.corpus.parse(work))
    jsb = json.loads(JSB_PATH.read_text())[split][index]
    assert [[m + shift for m in f] for f in frames] == [sorted(f) for f in jsb]


def test_bach_chorales_split_seed_and_cache(tmp_path, monkeypatch):
    pytest.importorskip("music21")
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "env"))
    assert music.default_cache_dir() == tmp_path / "env"
    frames = bach_chorale_frames(limit=3)
    assert len(frames) == 3
    # bwv1.6 (first by name) has a horn part besides the four voices: skipped.
    assert "bwv1.6" not in frames and "bwv10.7" in frames
    assert (tmp_path / "env" / "bach_chorales_quarter.json").is_file()

    def no_parsing(path):
        raise AssertionError(f"parsed {path} although it is cached")

    monkeypatch.setattr(music, "_parse_chorale", no_parsing)
    assert bach_chorale_frames(limit=3) == frames
    a = bach_chorales(limit=3, seed=0)
    b = bach_chorales(limit=3, seed=0)
    assert [len(a[s]) for s in ("train", "valid", "test")] == [1, 1, 1]
    for split in a:
        assert all(torch.equal(x, y) for x, y in zip(a[split], b[split], strict=True))
    all_rolls = {tuple(map(tuple, f)) for f in frames.values()}
    got = {tuple(map(tuple, roll_to_notes(r))) for split in a.values() for r in split}
    assert got == all_rolls  # a partition of the chorales
    orders = {tuple(roll_to_notes(bach_chorales(limit=3, seed=s)["test"][0])[0])
              for s in range(6)}
    assert len(orders) > 1  # the seed changes the split


def test_bach_chorales_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        bach_chorales(limit=2, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="sum to 1"):
        bach_chorales(limit=3, fractions=(0.5, 0.2, 0.2), cache_dir=tmp_path)
    with pytest.raises(TypeError, match="limit"):
        bach_chorale_frames(limit=2.5, cache_dir=tmp_path)


def test_missing_music21_is_a_clear_import_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(ImportError, match="pip install music21"):
        bach_chorale_frames(limit=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_and_metrics_on_cuda():
    rolls = [notes_to_roll([[60], [64, 67]]), notes_to_roll([[48]])]
    batch = next_step_batch(rolls, device="cuda", dtype=torch.float64)
    assert batch.inputs.is_cuda and batch.mask.is_cuda and not batch.lengths.is_cuda
    scores = torch.zeros_like(batch.targets)
    value = frame_nll(scores, batch.targets, batch.mask)
    assert value.is_cuda and float(value) == pytest.approx(88 * math.log(2), rel=1e-12)
    assert frame_accuracy(batch.targets, batch.targets, batch.mask) == 1.0
