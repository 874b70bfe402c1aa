"""Metrics of generated captions: BLEU-1..4 and CIDEr-D against several references per image,
exact semantic accuracy, retrieval recall@K both ways and attention correctness.
See ``docs/captions.md`` ("Metrics").

* **BLEU-n** (Papineni et al. 2002), corpus level as the COCO caption evaluation computes it
  (Chen et al. 2015, arXiv:1504.00325): clipped n-gram counts summed over the corpus, each
  candidate n-gram count clipped by its largest count in any reference of the same image,
  ``p_k = sum clipped / sum candidate n-grams``, ``BLEU-n = BP * exp(sum_{k<=n} log(p_k) / n)``,
  ``BP = min(1, exp(1 - r / c))`` with ``c`` the total candidate length and ``r`` the sum over
  images of the reference length closest to the candidate's (the shorter on a tie). No
  smoothing: a zero precision gives 0. Scores in ``[0, 1]``.
* **CIDEr-D** (Vedantam, Zitnick & Parikh, CVPR 2015, Sec. 4 and the CIDEr-D paragraph):
  ``g^n(s)`` the TF-IDF vector of the n-grams of ``s``, ``g_k(s) = h_k(s) * log(I / df_k)``
  with ``h_k`` the count of n-gram ``k`` in ``s``, ``I`` the number of images and ``df_k`` the
  number of images whose references contain ``k`` (IDF from the references only),
  ``CIDEr-D_n(c, S) = 10/m sum_j exp(-(l(c) - l(s_j))^2 / (2 sigma^2))
  * (min(g^n(c), g^n(s_j)) . g^n(s_j)) / (|g^n(c)| |g^n(s_j)|)``, ``sigma = 6``,
  ``CIDEr-D = sum_{n=1}^{4} CIDEr-D_n / 4``; the corpus score is the mean over images.
  The term frequency is the raw count and an n-gram absent from every reference gets
  ``df = 1``, as in the authors' COCO evaluation code (``cider_scorer.py``); the paper divides
  ``h_k`` by the sentence's n-gram total (the two differ only through the clipping).
* **Retrieval recall@K**: the fraction of queries whose first correct item ranks within the
  top ``K``; ties go against the model (docs).
* **Attention correctness** (Liu et al., AAAI 2017): the attention mass a word puts inside the
  ground-truth box of the object it names, ``sum_cells alpha * box_mask``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from rnnlab._validation import check_positive_int
from rnnlab.tasks.captions.grammar import (
    box_mask,
    ground_caption,
    parse_caption,
    semantic_match,
    tokenize,
)
from rnnlab.tasks.captions.scenes import Scene

Caption = str | Sequence[str]

CIDER_SIGMA = 6.0  # Vedantam et al. 2015, CIDEr-D: Gaussian length penalty, sigma = 6
CIDER_SCALE = 10.0  # ibid.: CIDEr-D is multiplied by 10 (values comparable to other metrics)


def _tokens(c: Caption) -> list[str]:
    if isinstance(c, str):
        return tokenize(c)
    if not all(isinstance(w, str) for w in c):
        raise TypeError("a caption must be a str or a sequence of str tokens")
    return list(c)


def _prepare(candidates: Sequence[Caption], references: Sequence[Sequence[Caption]]
             ) -> tuple[list[list[str]], list[list[list[str]]]]:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but reference sets for "
                         f"{len(references)} images")
    if len(candidates) == 0:
        raise ValueError("no candidates to score")
    cands = [_tokens(c) for c in candidates]
    refs = []
    for i, rs in enumerate(references):
        if isinstance(rs, str) or len(rs) == 0:
            raise ValueError(f"image {i}: references must be a non-empty list of captions")
        refs.append([_tokens(r) for r in rs])
    return cands, refs


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_scores(candidates: Sequence[Caption], references: Sequence[Sequence[Caption]],
                max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..``max_n`` in ``[0, 1]`` (module docstring), e.g. ``{"bleu1": .., ...}``.
    Captions are strings (tokenised by :func:`tokenize`) or token lists."""
    max_n = check_positive_int("max_n", max_n)
    cands, refs = _prepare(candidates, references)
    hit = [0] * max_n
    total = [0] * max_n
    c_len = r_len = 0
    for cand, rs in zip(cands, refs, strict=True):
        c_len += len(cand)
        r_len += min((len(r) for r in rs), key=lambda n: (abs(n - len(cand)), n))
        for n in range(1, max_n + 1):
            counts = _ngrams(cand, n)
            most: Counter = Counter()
            for r in rs:
                most |= _ngrams(r, n)  # | keeps the largest count per n-gram
            hit[n - 1] += sum(min(v, most[g]) for g, v in counts.items())
            total[n - 1] += sum(counts.values())
    bp = 0.0 if c_len == 0 else min(1.0, math.exp(1.0 - r_len / c_len))
    out = {}
    for n in range(1, max_n + 1):
        if any(h == 0 for h in hit[:n]):
            out[f"bleu{n}"] = 0.0
        else:
            out[f"bleu{n}"] = bp * math.exp(sum(math.log(hit[k] / total[k])
                                                for k in range(n)) / n)
    return out


def cider_d(candidates: Sequence[Caption], references: Sequence[Sequence[Caption]], *,
            sigma: float = CIDER_SIGMA, max_n: int = 4) -> tuple[float, list[float]]:
    """CIDEr-D (module docstring): ``(corpus score, per-image scores)``. The IDF comes from
    ``references`` (all images passed), so score a whole test set in one call."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    max_n = check_positive_int("max_n", max_n)
    cands, refs = _prepare(candidates, references)
    n_images = len(refs)
    df: list[Counter] = []
    for n in range(1, max_n + 1):
        d: Counter = Counter()
        for rs in refs:
            d.update(set().union(*(_ngrams(r, n) for r in rs)))
        df.append(d)

    def vec(tokens: list[str], n: int) -> tuple[dict, float]:
        # An n-gram absent from every reference gets df = 1 (the largest idf, log I), as in the
        # authors' code: it cannot match, but it lengthens the candidate's vector.
        v = {g: h * math.log(n_images / max(1, df[n - 1][g]))
             for g, h in _ngrams(tokens, n).items()}
        return v, math.sqrt(sum(x * x for x in v.values()))

    scores = []
    for cand, rs in zip(cands, refs, strict=True):
        cv = [vec(cand, n) for n in range(1, max_n + 1)]
        total = 0.0
        for r in rs:
            penalty = math.exp(-((len(cand) - len(r)) ** 2) / (2.0 * sigma ** 2))
            for n in range(1, max_n + 1):
                (gc, nc), (gr, nr) = cv[n - 1], vec(r, n)
                if nc == 0.0 or nr == 0.0:
                    continue
                dot = sum(min(x, gr[g]) * gr[g] for g, x in gc.items() if g in gr)
                total += penalty * dot / (nc * nr) / max_n
        scores.append(CIDER_SCALE * total / len(rs))
    return sum(scores) / len(scores), scores


def semantic_accuracy(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, float]:
    """Exact semantic accuracy: the fraction of captions that parse and match their scene
    (:func:`semantic_match`), with the fractions that do not parse (``unparsable``) and that
    parse but state something false (``wrong``); the three sum to one."""
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions but {len(scenes)} scenes")
    if len(captions) == 0:
        raise ValueError("no captions to score")
    ok = unparsable = 0
    for c, s in zip(captions, scenes, strict=True):
        if semantic_match(c, s):
            ok += 1
        else:
            try:
                parse_caption(c)
            except ValueError:
                unparsable += 1
    n = len(captions)
    return {"accuracy": ok / n, "unparsable": unparsable / n,
            "wrong": (n - ok - unparsable) / n}


def _ranks(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    # For each row: min over correct items c of #{wrong items w : s_w >= s_c} (ties count
    # against the model: a constant scorer never looks good).
    s = scores.to(torch.float64)
    wrong = torch.where(correct, torch.tensor(-math.inf, dtype=s.dtype), s)
    # #{wrong >= s_c} = items - #{entries < s_c} of the sorted row (the -inf masks included).
    ahead = s.shape[1] - torch.searchsorted(wrong.sort(-1).values.contiguous(), s.contiguous(),
                                            side="left")
    big = torch.iinfo(ahead.dtype).max
    return torch.where(correct, ahead, torch.full_like(ahead, big)).min(-1).values


def retrieval_recall(scores: torch.Tensor, image_of: Sequence[int],
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K both ways from an ``(n_images, n_sentences)`` score matrix; sentence ``j``
    describes image ``image_of[j]``. ``i2s@K``: fraction of images with a correct sentence
    ranked in the top K; ``s2i@K``: fraction of sentences whose image is in the top K. The
    rank of a correct item is the number of wrong items scoring at least as high (ties go
    against the model); recall@K counts ranks < K."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError("scores must be a 2-D tensor (n_images, n_sentences)")
    if not scores.dtype.is_floating_point or not bool(torch.isfinite(scores).all()):
        raise ValueError("scores must be finite floats (no NaN or inf)")
    n_img, n_sen = scores.shape
    idx = torch.as_tensor(list(image_of), dtype=torch.long)
    if idx.shape != (n_sen,):
        raise ValueError(f"image_of has {idx.numel()} entries for {n_sen} sentences")
    if n_sen and (idx.min() < 0 or idx.max() >= n_img):
        raise ValueError(f"image_of entries must lie in [0, {n_img})")
    if not bool(torch.isin(torch.arange(n_img), idx).all()):
        raise ValueError("every image needs at least one sentence in image_of")
    ks = [check_positive_int("k", k) for k in ks]
    correct = idx[None, :] == torch.arange(n_img)[:, None]  # (images, sentences)
    r_i2s = _ranks(scores.detach().cpu(), correct)
    r_s2i = _ranks(scores.detach().cpu().T, correct.T)
    out = {}
    for k in ks:
        out[f"i2s@{k}"] = float((r_i2s < k).double().mean())
        out[f"s2i@{k}"] = float((r_s2i < k).double().mean())
    return out


def attention_correctness(attention: torch.Tensor, sentence: str, scene: Scene, *,
                          size: int, nouns_only: bool = False) -> tuple[float, float]:
    """Liu et al. (2017) attention correctness of one caption: the mean, over the words that
    name a scene object (:func:`ground_caption`; with ``nouns_only`` only the last word of each
    noun phrase), of the attention mass inside that object's box, and the same mean for uniform
    attention (the chance level). ``attention`` is ``(T, grid, grid)`` with ``T`` the number of
    tokens of ``tokenize(sentence)``: row ``t`` is the attention while emitting word ``t``
    over a uniform ``grid`` x ``grid`` partition of the ``size`` x ``size`` canvas; each row
    must sum to one. Returns ``nan`` for both if no word is grounded."""
    if not isinstance(attention, torch.Tensor) or attention.dim() != 3 \
            or attention.shape[1] != attention.shape[2]:
        raise ValueError("attention must be a (T, grid, grid) tensor")
    a = attention.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
        raise ValueError("attention must be finite and non-negative")
    # Row sums of float32 softmax outputs are 1 within ~grid^2 * eps32; allow 1e-4.
    if not torch.allclose(a.sum((1, 2)), torch.ones(a.shape[0], dtype=a.dtype), atol=1e-4):
        raise ValueError("each attention map must sum to one")
    grounding = ground_caption(sentence, scene)
    if len(grounding) != a.shape[0]:
        raise ValueError(f"attention has {a.shape[0]} rows for {len(grounding)} tokens")
    words = [t for t, o in enumerate(grounding) if o is not None]
    if nouns_only:
        words = [t for t in words if t + 1 == len(grounding) or grounding[t + 1] != grounding[t]]
    if not words:
        return math.nan, math.nan
    grid = a.shape[1]
    masks = {o: box_mask(scene.objects[o].box, size, grid) for o in set(grounding) - {None}}
    hit = [float((a[t] * masks[grounding[t]]).sum()) for t in words]
    chance = [float(masks[grounding[t]].mean()) for t in words]
    return sum(hit) / len(hit), sum(chance) / len(chance)
