"""Device parity of the tasks that take device= / dtype=.

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from rnnlab.tasks import (
    LONG_TERM_TASKS,
    channel_equalization,
    henon,
    lorenz,
    mackey_glass,
    narma,
    narma_targets,
    nearest_symbol,
    nmse,
    nrmse,
    one_step_ahead,
    sine_mixture,
    stream_one_step_ahead,
    symbol_error_rate,
)
from rnnlab.tasks.music import frame_accuracy, frame_nll, next_step_batch, notes_to_roll, pad_rolls
from rnnlab.tasks.text import CharVocabulary, bits_per_character, char_batches
from rnnlab.tasks.vowels import classification_accuracy
from tests.device_parity._parity import (
    DEV,
    DTYPES,
    F64,
    PARITY_MARKS,
    B,
    assert_tensor,
    assert_tree,
    on_device,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


LONG_TERM_ARGS: dict[str, dict[str, Any]] = {
    "delayed_recall": {"batch": B, "length": 9, "tau": 3, "distribution": "uniform"},
    "adding_problem": {"batch": B, "length": 20},
    "multiplication_problem": {"batch": B, "length": 12, "variant": "pascanu2013"},
    "temporal_order": {"batch": B, "length": 20},
    "random_permutation": {"batch": B, "length": 10},
    "noiseless_memorization": {"batch": B, "delay": 5},
}


@pytest.mark.parametrize("name", list(LONG_TERM_TASKS))
@DTYPES
def test_long_term_tasks(name, dtype):
    spec = LONG_TERM_TASKS[name]
    args = LONG_TERM_ARGS[name]
    ref = spec.generate(**args, seed=140, dtype=dtype)
    task = spec.generate(**args, seed=140, dtype=dtype, device=DEV)
    # drawn on the CPU in float64 and cast: the same numbers on every device
    for field in ("inputs", "targets", "mask", "lengths"):
        got, want = getattr(task, field), getattr(ref, field)
        assert on_device(got) and got.dtype == want.dtype, field
        assert torch.equal(got.cpu(), want), field
    for key, value in task.info.items():
        assert on_device(value), key
    # losses and scores on the device against the CPU float64 ones
    ref64 = spec.generate(**args, seed=140, dtype=F64)
    outputs = randn(*ref64.targets.shape, seed=141, scale=0.5) + ref64.targets

    def run(t: Any, out: torch.Tensor) -> dict:
        score = t.score(out)
        return {"loss": spec.loss(out, t), "success": score.success_rate,
                "step_accuracy": score.step_accuracy, "mse": score.mse,
                "correct": score.correct, "final": t.final_outputs(out), "valid": t.valid}

    # LongTermTask.to(): the float64 task itself moved, so that both runs score the same data
    got = run(ref64.to(DEV, dtype), to_dev(outputs, dtype))
    assert_tree(got, run(ref64, outputs), dtype, name)


@DTYPES
def test_series_tasks(dtype):
    makers: dict[str, Callable[..., Any]] = {
        "channel_equalization": lambda **f: channel_equalization(30, 20.0, batch=2, seed=1, **f),
        "narma": lambda **f: narma(30, batch=2, washout=5, seed=2, **f),
        "henon": lambda **f: henon(25, seed=3, **f),
        "lorenz": lambda **f: lorenz(20, seed=4, **f),
        "sine_mixture": lambda **f: sine_mixture(40, noise=0.1, seed=5, **f),
        "mackey_glass": lambda **f: mackey_glass(20, washout=50.0, seed=6, **f),
    }
    for name, make in makers.items():
        ref, got = make(dtype=F64), make(dtype=dtype, device=DEV)
        # each is computed in float64 on the CPU, then cast
        assert_tree(got, ref, dtype, name)
    pairs = list(stream_one_step_ahead([0.1, 0.4, -0.2], dtype=dtype, device=DEV))
    assert [(float(x), float(y)) for x, y in pairs] == [
        (float(torch.tensor(0.1, dtype=dtype)), float(torch.tensor(0.4, dtype=dtype))),
        (float(torch.tensor(0.4, dtype=dtype)), float(torch.tensor(-0.2, dtype=dtype)))]
    assert all(on_device(t) and t.dtype == dtype for pair in pairs for t in pair)

    u, _ = narma(25, batch=2, seed=7, dtype=F64)
    prediction = randn(2, 25, 1, seed=142)
    channel = channel_equalization(30, 20.0, seed=8, dtype=F64)

    def run(inputs: torch.Tensor, pred: torch.Tensor, received: torch.Tensor,
            symbols: torch.Tensor) -> dict:
        x, y = one_step_ahead(inputs[0, :, 0])
        return {"narma_targets": narma_targets(inputs), "x": x, "y": y,
                "nmse": nmse(pred, inputs), "nrmse": nrmse(pred, inputs),
                "nearest": nearest_symbol(received),
                "ser": symbol_error_rate(received, symbols)}

    ref = run(u, prediction, channel.inputs, channel.targets)
    got = run(*to_dev((u, prediction, channel.inputs, channel.targets), dtype))
    assert_tree(got, ref, dtype)


@DTYPES
def test_music_tasks(dtype):
    frames = [[[60, 64], [], [62]], [[21], [108, 60]], [[70], [71], [72], [73]]]
    rolls = [notes_to_roll(f, dtype=F64) for f in frames]
    scores = randn(3, 4, 88, seed=143)

    def run(rs: list[torch.Tensor], sc: torch.Tensor, **factory: Any) -> dict:
        batch = next_step_batch(rs, **factory)
        padded, lengths = pad_rolls(rs, **factory)
        return {"roll": notes_to_roll(frames[0], **factory), "inputs": batch.inputs,
                "targets": batch.targets, "mask": batch.mask, "padded": padded,
                "nll": frame_nll(sc, batch.targets, batch.mask),
                "nll_none": frame_nll(torch.sigmoid(sc), batch.targets, logits=False,
                                      reduction="none"),
                "accuracy": frame_accuracy(sc, batch.targets, batch.mask, threshold=0.0),
                "lengths": lengths, "batch_lengths": batch.lengths}

    ref = run(rolls, scores)
    got = run(rolls, to_dev(scores, dtype), dtype=dtype, device=DEV)
    # lengths stay on the CPU by design (pack_padded_sequence wants them there)
    for key in ("lengths", "batch_lengths"):
        assert torch.equal(got.pop(key), ref.pop(key))
    assert_tree(got, ref, dtype)


@DTYPES
def test_text_and_classification_tasks(dtype):
    text = "the cat sat on the mat; the dog sat on the log. " * 3
    vocab = CharVocabulary.from_text(text)

    def batches(**factory: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(char_batches(text, 6, 4, seed=3, vocabulary=vocab, one_hot=True,
                                 **factory))

    ref, got = batches(dtype=F64), batches(dtype=dtype, device=DEV)
    assert len(got) == len(ref)
    for (x, y), (x_ref, y_ref) in zip(got, ref, strict=True):
        assert_tensor(x, x_ref, dtype, name="one-hot inputs")
        assert_tensor(y, y_ref, dtype, name="targets")  # int64, on the device
    logits, targets = randn(2, 5, len(vocab), seed=144), ref[0][1][:2, :5]
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    scores, labels = randn(6, 3, seed=145), torch.tensor([0, 2, 1, 1, 0, 2])

    def run(lg: torch.Tensor, tg: torch.Tensor, m: torch.Tensor, sc: torch.Tensor,
            lab: torch.Tensor) -> dict:
        return {"bpc": bits_per_character(lg, tg), "bpc_masked": bits_per_character(lg, tg, m),
                "accuracy": classification_accuracy(sc, lab),
                "accuracy_indices": classification_accuracy(sc.argmax(1), lab)}

    assert_tree(run(*to_dev((logits, targets, mask, scores, labels), dtype)),
                run(logits, targets, mask, scores, labels), dtype)
