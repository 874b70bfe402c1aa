"""Japanese Vowels: speaker classification from variable-length sequences (Kudo, Toyama &
Shimbo 1999, "Multidimensional curve classification using passing-through regions", Pattern
Recognition Letters 20(11–13); UCI repository), and the accuracy metric.

Nine male speakers uttered the vowels /ae/; each utterance is a sequence of 12 LPC cepstrum
coefficients per frame, 7 to 29 frames long. The standard split has 270 training sequences
(30 per speaker) and 370 test sequences (24 to 88 per speaker). The task is to name the
speaker (9 classes) from the whole sequence; ESNs classify it from the last or mean state
(Jaeger, Lukoševičius, Popovici & Siewert 2007, Neural Networks 20(3), used it to benchmark
leaky-integrator ESNs).

The data are the copy bundled inside the ``aeon`` package (``aeon/datasets/data/``), in the
sktime/aeon ``.ts`` text format, parsed here: nothing is downloaded, and ``aeon.datasets``
(slow to import) is not imported. The tests check the result against
``aeon.datasets.load_classification("JapaneseVowels", split=...)``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from rnnlab._validation import check_int
from rnnlab.tasks._checks import check_float_dtype

NAME = "JapaneseVowels"
N_CLASSES = 9
N_FEATURES = 12
_INSTALL_HINT = 'pip install "rnnlab[data]"'


class VowelsSplit(NamedTuple):
    """One split of Japanese Vowels, zero-padded at the end of time."""

    inputs: torch.Tensor  # (batch, time, 12) float, zero after each sequence's length
    lengths: torch.Tensor  # (batch,) int64, frames of each sequence
    labels: torch.Tensor  # (batch,) int64 in 0..8 (speaker 1..9)


def _bundled_file(split: str) -> str:
    try:
        import aeon
    except ImportError as err:
        raise ImportError(
            f"Japanese Vowels is read from the copy bundled with the aeon package, which is not "
            f"installed: {_INSTALL_HINT} (or pip install aeon)"
        ) from err
    path = os.path.join(
        os.path.dirname(aeon.__file__), "datasets", "data", NAME, f"{NAME}_{split.upper()}.ts"
    )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"this aeon installation does not bundle {NAME} ({path} is missing); rnnlab reads "
            "only the offline copy and never downloads it"
        )
    return path


def _read_ts(path: str) -> tuple[list[torch.Tensor], list[str]]:
    """Parse a multivariate ``.ts`` file: after the ``@data`` line, one case per line, its
    channels separated by ``:``, values by ``,``, the class label last."""
    series: list[torch.Tensor] = []
    labels: list[str] = []
    in_data = False
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                in_data = line.lower() == "@data"
                continue
            *channels, label = line.split(":")
            try:
                rows = [[float(v) for v in channel.split(",")] for channel in channels]
            except ValueError as err:
                raise ValueError(f"{path}:{number}: unreadable value ({err})") from err
            if len(rows) != N_FEATURES or len({len(r) for r in rows}) != 1:
                raise ValueError(
                    f"{path}:{number}: expected {N_FEATURES} channels of equal length, got "
                    f"lengths {[len(r) for r in rows]}"
                )
            series.append(torch.tensor(rows, dtype=torch.float64).T)  # (time, features)
            labels.append(label.strip())
    if not series:
        raise ValueError(f"{path} contains no cases")
    return series, labels


def japanese_vowels(
    split: str = "train",
    *,
    pad_to: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> VowelsSplit:
    """The ``"train"`` (270 sequences) or ``"test"`` (370) split as padded tensors.

    ``inputs[i, :lengths[i]]`` is sequence ``i`` (frames x 12 coefficients); frames beyond its
    length are zero. The time dimension is the longest sequence of the split, or ``pad_to``
    (which must be at least that: pass 29 to give both splits the same shape). Labels are
    the speaker numbers 1..9 shifted to 0..8.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_float_dtype(dtype)
    x_list, y = _read_ts(_bundled_file(split))
    lengths = [int(seq.shape[0]) for seq in x_list]
    longest = max(lengths)
    if pad_to is None:
        pad_to = longest
    pad_to = check_int(f"pad_to (the longest {split} sequence has {longest} steps)", pad_to,
                       low=longest)
    inputs = torch.zeros(len(x_list), pad_to, N_FEATURES, dtype=torch.float64)
    for i, seq in enumerate(x_list):
        inputs[i, : seq.shape[0]] = seq
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"the bundled {NAME} {split} file contains missing values")
    labels = torch.tensor([int(label) - 1 for label in y], dtype=torch.int64)
    if int(labels.min()) < 0 or int(labels.max()) >= N_CLASSES:
        raise ValueError(f"unexpected labels in {NAME}: {sorted(set(y))}")
    return VowelsSplit(
        inputs=inputs.to(dtype=dtype, device=device),
        lengths=torch.tensor(lengths, dtype=torch.int64, device=device),
        labels=labels.to(device),
    )


def classification_accuracy(prediction: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of correct classes. ``prediction`` is either class indices ``(batch,)``
    (integer) or scores ``(batch, classes)`` (float), whose argmax is the class."""
    if not isinstance(prediction, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("prediction and labels must be torch.Tensors")
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty (batch,) tensor, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if prediction.dim() == 2:
        if not prediction.dtype.is_floating_point:
            raise TypeError(
                f"scores (batch, classes) must be floating point, got {prediction.dtype}"
            )
        if not bool(torch.isfinite(prediction).all()):
            raise ValueError("prediction scores contain NaN or inf")
        if int(labels.min()) < 0 or int(labels.max()) >= prediction.shape[1]:
            raise ValueError(
                f"labels must lie in [0, {prediction.shape[1]}) for {prediction.shape[1]} scores"
            )
        predicted = prediction.argmax(dim=1)
    elif prediction.dim() == 1:
        if prediction.dtype.is_floating_point or prediction.dtype == torch.bool:
            raise TypeError(
                f"1-D predictions must be integer class indices, got {prediction.dtype}; "
                "pass (batch, classes) scores to take their argmax"
            )
        predicted = prediction
    else:
        raise ValueError(
            f"prediction must be (batch,) indices or (batch, classes) scores, "
            f"got shape {tuple(prediction.shape)}"
        )
    if predicted.shape[0] != labels.shape[0]:
        raise ValueError(f"{predicted.shape[0]} predictions for {labels.shape[0]} labels")
    return float((predicted.to(labels.device) == labels).double().mean())
