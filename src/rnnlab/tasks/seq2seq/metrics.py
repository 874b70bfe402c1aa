"""Metrics of sequence-to-sequence output, each also bucketed by source length.

* exact match: the fraction of hypotheses equal to their reference, token for token;
* token accuracy: the fraction of reference positions ``i`` with ``hyp[i] == ref[i]``
  (a hypothesis that is too short misses the rest; extra tokens are not counted);
* BLEU (Papineni et al. 2002) and chrF (Popovic 2015) by ``sacrebleu`` (Post 2018, "A call for
  clarity in reporting BLEU scores"), scored offline; :func:`signatures` gives the strings that
  name the exact settings, to print beside every score. Token sequences are joined by spaces and
  scored with ``tokenize="none"`` (the tokens are the words); strings use sacrebleu's defaults
  (``13a``).

BLEU = BP * exp(sum_n 1/4 log p_n), p_n the clipped n-gram precisions (n = 1..4), BP =
min(1, exp(1 - r/c)). chrF_beta = (1 + beta^2) P R / (beta^2 P + R) with P, R the character
n-gram precision and recall averaged over n = 1..6, beta = 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Seq = Sequence[str] | str


def _check(hyps: Sequence[Seq], refs: Sequence[Seq]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if len(hyps) == 0:
        raise ValueError("no hypotheses to score")


def exact_match(hyps: Sequence[Seq], refs: Sequence[Seq]) -> float:
    """Fraction of hypotheses identical to their reference."""
    _check(hyps, refs)
    return sum(list(h) == list(r) for h, r in zip(hyps, refs, strict=True)) / len(refs)


def token_accuracy(hyps: Sequence[Seq], refs: Sequence[Seq]) -> float:
    """Fraction of reference tokens matched at the same position, over all references."""
    _check(hyps, refs)
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("every reference is empty")
    hit = sum(sum(a == b for a, b in zip(h, r, strict=False))
              for h, r in zip(hyps, refs, strict=True))
    return hit / total


def _texts(xs: Sequence[Seq]) -> tuple[list[str], bool]:
    tokens = not all(isinstance(x, str) for x in xs)
    return [x if isinstance(x, str) else " ".join(x) for x in xs], tokens


def _sacrebleu():
    try:
        import sacrebleu.metrics as m
    except ImportError as e:  # pragma: no cover
        raise ImportError("BLEU and chrF need 'sacrebleu': pip install sacrebleu") from e
    return m


def bleu(hyps: Sequence[Seq], refs: Sequence[Seq]) -> float:
    """Corpus BLEU (0-100) of ``hyps`` against one reference each, by sacrebleu."""
    _check(hyps, refs)
    h, tok = _texts(hyps)
    r, _ = _texts(refs)
    metric = _sacrebleu().BLEU(tokenize="none" if tok else "13a")
    return float(metric.corpus_score(h, [r]).score)


def chrf(hyps: Sequence[Seq], refs: Sequence[Seq]) -> float:
    """Corpus chrF (0-100, beta = 2, character n-grams up to 6) by sacrebleu. Token sequences
    are joined by spaces first (chrF ignores whitespace)."""
    _check(hyps, refs)
    h, _ = _texts(hyps)
    r, _ = _texts(refs)
    return float(_sacrebleu().CHRF().corpus_score(h, [r]).score)


def signatures(tokens: bool = True) -> dict[str, str]:
    """sacrebleu's signatures of the settings :func:`bleu` and :func:`chrf` use."""
    m = _sacrebleu()
    b = m.BLEU(tokenize="none" if tokens else "13a")
    c = m.CHRF()
    # A signature lists nrefs only after a scoring call.
    b.corpus_score(["a"], [["a"]])
    c.corpus_score(["a"], [["a"]])
    return {"bleu": str(b.get_signature()), "chrf": str(c.get_signature())}


METRICS: dict[str, Callable[[Sequence[Seq], Sequence[Seq]], float]] = {
    "exact_match": exact_match, "token_accuracy": token_accuracy, "bleu": bleu, "chrf": chrf}


def bucket_edges(lengths: Sequence[int], width: int) -> list[tuple[int, int]]:
    """Consecutive ``[lo, hi]`` length ranges of ``width`` covering ``lengths``."""
    if width < 1:
        raise ValueError(f"bucket width must be >= 1, got {width}")
    lo, hi = min(lengths), max(lengths)
    start = (lo - 1) // width * width + 1
    return [(a, a + width - 1) for a in range(start, hi + 1, width)]


def bucketed(hyps: Sequence[Seq], refs: Sequence[Seq], source_lengths: Sequence[int], *,
             buckets: Sequence[tuple[int, int]] | int = 5,
             metrics: Sequence[str] = ("exact_match", "token_accuracy", "bleu", "chrf"),
             ) -> list[dict]:
    """Every metric per source-length bucket: one row ``{"lo", "hi", "n", metric: value}`` per
    non-empty bucket. ``buckets``: ``[lo, hi]`` ranges, or a width (:func:`bucket_edges`)."""
    _check(hyps, refs)
    if len(source_lengths) != len(refs):
        raise ValueError(f"{len(source_lengths)} source lengths for {len(refs)} references")
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metrics {bad}: choose from {sorted(METRICS)}")
    if isinstance(buckets, int):
        buckets = bucket_edges(source_lengths, buckets)
    rows = []
    for lo, hi in buckets:
        idx = [i for i, n in enumerate(source_lengths) if lo <= n <= hi]
        if not idx:
            continue
        h = [hyps[i] for i in idx]
        r = [refs[i] for i in idx]
        rows.append({"lo": lo, "hi": hi, "n": len(idx),
                     **{m: METRICS[m](h, r) for m in metrics}})
    return rows
