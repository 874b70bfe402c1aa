"""Metrics of polyphonic next-step prediction: frame NLL, frame accuracy, the marginal baseline.

Evaluation (Boulanger-Lewandowski, Bengio & Vincent, ICML 2012; also Pascanu et al. 2014, Greff
et al. 2017): the model outputs, for every time step t, independent Bernoulli probabilities
``p_k(t) = sigmoid(s_k(t))`` for the 88 keys of frame t given the frames before it. The
frame-level negative log-likelihood is::

    NLL = (1 / F) * sum_{sequences} sum_{t} sum_{k=1}^{88}
              -[ y_k(t) log p_k(t) + (1 - y_k(t)) log(1 - p_k(t)) ]

in nats per time step, where F is the number of frames of all sequences of the set: the average
is per frame over all frames of all sequences (long chorales weigh more), not a mean of
per-sequence means. Accuracy (Bay, Ehmann & Downie, ISMIR 2009, as used by Boulanger-Lewandowski
et al. 2012) sums the counts over all frames before taking the ratio::

    ACC = sum_t TP(t) / sum_t (TP(t) + FP(t) + FN(t)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rnnlab._validation import check_tensor
from rnnlab.tasks.piano_roll.roll import NUM_KEYS, _check_binary, _check_rolls


def _check_mask(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    if mask is None:
        return None
    check_tensor("mask", mask, ndim=2, layout="(batch, time)")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    if mask.dtype != torch.bool:
        _check_binary("mask", mask)
        mask = mask != 0
    return mask


def _check_pair(name: str, scores: torch.Tensor, targets: torch.Tensor) -> None:
    check_tensor(name, scores, ndim=3, layout="(batch, time, keys)")
    check_tensor("targets", targets, ndim=3, layout="(batch, time, keys)")
    if scores.shape != targets.shape:
        raise ValueError(
            f"{name} {tuple(scores.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    _check_binary("targets", targets)


def frame_nll(
    scores: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    logits: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Frame-level negative log-likelihood in nats (Boulanger-Lewandowski et al. 2012).

    Per frame, ``sum_k -[y_k log p_k + (1 - y_k) log(1 - p_k)]`` over the keys (independent
    Bernoulli per key), with ``p = sigmoid(scores)`` when ``logits`` (computed stably as
    ``y softplus(-s) + (1 - y) softplus(s)``), else ``p = scores`` (probabilities in [0, 1],
    each log clamped at -100 like ``torch.nn.functional.binary_cross_entropy``).

    ``reduction``: ``"mean"`` (default) the average over the frames where ``mask`` is True
    (all frames without a mask), i.e. nats per time step; ``"sum"`` the total, to be divided by
    the total number of frames when evaluating a set batch by batch; ``"none"`` the
    ``(batch, time)`` per-frame NLL, zero on masked frames. Differentiable in ``scores``.
    """
    _check_pair("scores" if logits else "probabilities", scores, targets)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    mask = _check_mask(mask, scores.shape[:2])
    y = targets.to(scores.dtype)
    if logits:
        softplus = torch.nn.functional.softplus
        per_key = y * softplus(-scores) + (1 - y) * softplus(scores)
    else:
        if bool(((scores < 0) | (scores > 1)).any()):
            raise ValueError("probabilities must lie in [0, 1]; pass logits=True for raw scores")
        log_p = torch.log(scores).clamp_min(-100.0)
        log_q = torch.log1p(-scores).clamp_min(-100.0)
        per_key = -(y * log_p + (1 - y) * log_q)
    per_frame = per_key.sum(dim=-1)
    if mask is not None:
        per_frame = torch.where(mask, per_frame, per_frame.new_zeros(()))
    if reduction == "none":
        return per_frame
    total = per_frame.sum()
    if reduction == "sum":
        return total
    count = int(mask.sum()) if mask is not None else per_frame.numel()
    if count == 0:
        raise ValueError("mask selects no frames: the mean NLL is undefined")
    return total / count


def frame_counts(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    threshold: float | None = None,
) -> tuple[int, int, int]:
    """True positives, false positives and false negatives summed over all (masked) frames.

    ``predictions`` are 0/1 (or bool) key states, or, with ``threshold``, scores whose keys are
    on where ``predictions > threshold`` (0.5 for probabilities, 0.0 for logits).
    """
    if predictions.dtype == torch.bool:
        predictions = predictions.to(targets.dtype if targets.is_floating_point() else torch.int64)
    check_tensor("predictions", predictions, ndim=3, layout="(batch, time, keys)")
    if threshold is None:
        _check_binary("predictions", predictions)
        on = predictions != 0
    else:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        on = predictions > threshold
    _check_pair("predictions", predictions, targets)
    truth = targets != 0
    mask = _check_mask(mask, predictions.shape[:2])
    keep = mask.unsqueeze(-1) if mask is not None else torch.ones_like(on)
    tp = int((on & truth & keep).sum())
    fp = int((on & ~truth & keep).sum())
    fn = int((~on & truth & keep).sum())
    return tp, fp, fn


def frame_accuracy(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    threshold: float | None = None,
) -> float:
    """Frame-level accuracy ``sum_t TP(t) / sum_t (TP(t) + FP(t) + FN(t))`` (Bay et al. 2009,
    as reported by Boulanger-Lewandowski et al. 2012): counts summed over all frames, then one
    ratio. Silent frames predicted silent add nothing; when there is nothing at all to count
    (no note in either) the accuracy is 1.0. See :func:`frame_counts` for the arguments.
    """
    tp, fp, fn = frame_counts(predictions, targets, mask, threshold=threshold)
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def key_frequencies(
    rolls: Sequence[torch.Tensor], *, smoothing: float = 1.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Per-key probability of being down over all frames, add-``smoothing`` (Laplace):
    ``p_k = (n_k + a) / (F + 2a)`` with n_k the frames where key k is down, F all frames."""
    _check_rolls(rolls)
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
    counts = torch.zeros(NUM_KEYS, dtype=dtype)
    frames = 0
    for r in rolls:
        _check_binary("roll", r)
        counts += r.detach().to("cpu", dtype).sum(0)
        frames += r.shape[0]
    return (counts + smoothing) / (frames + 2 * smoothing)


def marginal_nll(
    train_rolls: Sequence[torch.Tensor],
    eval_rolls: Sequence[torch.Tensor],
    *,
    smoothing: float = 1.0,
) -> float:
    """Chance-level reference: the frame NLL (nats per frame, over all frames of ``eval_rolls``)
    of a model that ignores the past and predicts every key with its smoothed frequency in
    ``train_rolls`` (:func:`key_frequencies`). A sequence model must beat this number. With
    ``smoothing=0`` a key never seen in training makes the NLL infinite if it ever sounds."""
    p = key_frequencies(train_rolls, smoothing=smoothing)
    _check_rolls(eval_rolls, "eval_rolls")
    total, frames = 0.0, 0
    for r in eval_rolls:
        y = r.detach().to("cpu", torch.float64)
        # xlogy: a key never down in training (p = 0, only with smoothing 0) costs nothing while
        # it stays up, and an infinite NLL the first time it is down.
        total += float(-(torch.xlogy(y, p) + torch.xlogy(1 - y, 1 - p)).sum())
        frames += r.shape[0]
    return total / frames
