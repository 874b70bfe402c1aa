"""Word–region alignment (Karpathy & Fei-Fei, "Deep visual-semantic alignments for generating
image descriptions", TPAMI 2017, Sec. 3.1): image regions and the words of a sentence are
embedded in one space, the image–sentence score is built from word–region dot products, and a
max-margin ranking objective over a batch makes true pairs score highest. See
docs/captioning_alignment.md.

Regions (Sec. 3.1.1, eq. 1): ``v_i = W_m f_i + b_m`` with ``f_i`` the ``ConvEncoder`` feature of
grid cell ``i`` (the paper: CNN features of detected boxes plus the whole image; here the grid
cells, plus the mean feature as the whole image with ``whole_image=True``).

Words (Sec. 3.1.2, eqs. 2-6), the bidirectional RNN (BRNN), ``f = ReLU``::

    x_t = W_w I_t                               (word embedding)
    e_t = f(W_e x_t + b_e)
    h^f_t = f(W_if e_t + W_f h^f_{t-1} + b_f)   (forward)
    h^b_t = f(W_ib e_t + W_b h^b_{t+1} + b_b)   (backward, within the sentence's own length)
    s_t = f(W_d (h^f_t + h^b_t) + b_d)

(the paper adds ``e_t`` directly, i.e. ``W_if = W_ib = I``; the input matrices of
``rnnlab.nn.RNN`` make this a superset.)

Score (Sec. 3.1.3): ``S_kl = sum_{t in g_l} max_{i in g_k} v_i^T s_t`` (eq. 8, ``score="max"``)
or ``sum_t sum_i max(0, v_i^T s_t)`` (eq. 7, ``score="sum_pos"``). Loss (eq. 9)::

    C = sum_k [ sum_{l != k} max(0, S_kl - S_kk + margin)
              + sum_{l != k} max(0, S_lk - S_kk + margin) ]

(eq. 9 also sums ``l = k``, a constant ``2 * margin`` per pair that has no gradient; it is left
out so that the loss is zero when every true pair wins by the margin.)

Alignment (Sec. 3.1.4): with unaries ``psi_j(a_j = i) = v_i^T s_j`` and
``psi_j(a_j, a_{j+1}) = beta 1[a_j = a_{j+1}]``, the alignment maximising
``E(a) = sum_j psi_j(a_j) + sum_j psi_j(a_j, a_{j+1})`` (the paper writes "minimize the energy";
with dot-product unaries the best alignment maximises it) is found exactly by dynamic
programming (Viterbi); ``beta = 0`` is the argmax region per word.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_choice, check_int, check_number
from rnnlab.captioning.encoder import ConvEncoder
from rnnlab.cells.base import uniform_init_
from rnnlab.nn import RNN
from rnnlab.tasks.captions import box_mask, ground_caption, retrieval_recall, tokenize

__all__ = [
    "SCORES",
    "RegionAlignment",
    "alignment_accuracy",
    "alignment_png",
    "encode_sentences",
    "ranking_loss",
    "score_matrix",
    "viterbi_align",
    "word_mask",
]

SCORES = ("max", "sum_pos")
# Elements of one (images, sentences, words, regions) dot-product block in score_matrix.
_BLOCK = 1 << 22


# -----------------------------------------------------------------------------------------------
# Functions on embeddings (testable without a model)
def _check_lengths(lengths: object, batch: int, time: int, device: torch.device) -> torch.Tensor:
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must have shape ({batch},) (one per sentence), "
                         f"got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    lengths = lengths.to(device=device, dtype=torch.long)
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1:
        raise ValueError(f"every sentence needs at least one word, got a length {lo} "
                         "(empty sentences cannot be scored)")
    if hi > time:
        raise ValueError(f"a length {hi} exceeds the {time} token columns")
    return lengths


def word_mask(lengths: torch.Tensor, time: int) -> torch.Tensor:
    """``(B, time)`` bool, true at the words ``t < lengths[b]``."""
    return torch.arange(time, device=lengths.device)[None, :] < lengths[:, None]


def score_matrix(regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, *,
                 score: str = "max") -> torch.Tensor:
    """``S`` ``(N, M)``: image ``k`` (regions ``(N, R, D)``) against sentence ``l`` (words
    ``(M, L, D)``, the first ``lengths[l]`` real): ``sum_t max_i v_i^T s_t`` (``"max"``, eq. 8)
    or ``sum_t sum_i max(0, v_i^T s_t)`` (``"sum_pos"``, eq. 7). Padding words are excluded
    exactly (``where``, not a multiplication, so no NaN/inf from them can leak in)."""
    check_choice("score", score, SCORES)
    if regions.dim() != 3 or words.dim() != 3 or regions.shape[-1] != words.shape[-1]:
        raise ValueError(f"regions (N, R, D) and words (M, L, D) must share D, got shapes "
                         f"{tuple(regions.shape)} and {tuple(words.shape)}")
    N, R, _ = regions.shape
    M, L, _ = words.shape
    mask = word_mask(_check_lengths(lengths, M, L, words.device), L)  # (M, L)
    step = max(1, _BLOCK // max(1, M * L * R))
    rows = []
    for n0 in range(0, N, step):
        dots = torch.einsum("nrd,mtd->nmtr", regions[n0:n0 + step], words)
        per_word = dots.amax(-1) if score == "max" else dots.clamp(min=0).sum(-1)
        rows.append(torch.where(mask, per_word, per_word.new_zeros(())).sum(-1))
    return torch.cat(rows, 0)


def ranking_loss(scores: torch.Tensor, *, margin: float = 1.0,
                 groups: torch.Tensor | Sequence[int] | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """Eq. 9 on a square score matrix (pair ``k`` = image ``k``, sentence ``k``)::

        sum_k sum_{l: g_l != g_k} [max(0, S_kl - S_kk + margin) + max(0, S_lk - S_kk + margin)]

    ``groups`` (default: all distinct) marks pairs showing the same image, which are not
    negatives of each other. ``reduction``: ``"sum"`` (the paper) or ``"mean"`` (sum / B)."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 \
            or scores.shape[0] != scores.shape[1]:
        raise ValueError("scores must be a square (B, B) tensor of image k vs sentence l, got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else scores}")
    margin = check_number("margin", margin, low=0.0)
    check_choice("reduction", reduction, ("mean", "sum"))
    B = scores.shape[0]
    if groups is None:
        positive = torch.eye(B, dtype=torch.bool, device=scores.device)
    else:
        g = torch.as_tensor(groups, device=scores.device)
        if g.shape != (B,):
            raise ValueError(f"groups must have shape ({B},), got {tuple(g.shape)}")
        positive = g[:, None] == g[None, :]
    diag = scores.diagonal()
    cost_s = (scores - diag[:, None] + margin).clamp(min=0)  # image k vs sentences l
    cost_i = (scores - diag[None, :] + margin).clamp(min=0)  # sentence k vs images l (column k)
    zero = scores.new_zeros(())
    total = torch.where(positive, zero, cost_s).sum() + torch.where(positive, zero, cost_i).sum()
    return total / B if reduction == "mean" else total


def viterbi_align(unary: torch.Tensor, lengths: torch.Tensor, beta: float) -> torch.Tensor:
    """The alignment ``a`` ``(B, L)`` maximising ``sum_j unary[b, j, a_j] + beta sum_j
    1[a_j = a_{j+1}]`` over the first ``lengths[b]`` words (``-1`` after them), exactly, by
    dynamic programming: ``delta_j(i) = unary_j(i) + max(delta_{j-1}(i) + beta,
    max_i' delta_{j-1}(i'))`` (valid for ``beta >= 0``); ties keep the region, then the lowest
    index. ``beta = 0`` is the argmax per word (ties to the lowest index)."""
    beta = check_number("beta", beta, low=0.0)
    if unary.dim() != 3:
        raise ValueError(f"unary must be (B, L, R), got shape {tuple(unary.shape)}")
    B, L, R = unary.shape
    lengths = _check_lengths(lengths, B, L, unary.device)
    mask = word_mask(lengths, L)
    if beta == 0.0:  # independent words (and ties to the lowest index, as argmax)
        return torch.where(mask, unary.argmax(-1), torch.full_like(mask, -1, dtype=torch.long))
    delta = unary[:, 0]
    back = []
    for j in range(1, L):
        best, arg = delta.max(-1, keepdim=True)
        stay = delta + beta
        keep = stay >= best  # staying on region i is at least as good as the best jump
        back.append(torch.where(keep, torch.arange(R, device=unary.device).expand(B, R),
                                arg.expand(B, R)))
        new = unary[:, j] + torch.where(keep, stay, best)
        delta = torch.where((j < lengths)[:, None], new, delta)
    a = delta.argmax(-1)
    out = torch.full((B, L), -1, dtype=torch.long, device=unary.device)
    for j in reversed(range(L)):
        active = j < lengths
        out[:, j] = torch.where(active, a, out[:, j])
        if j > 0:
            a = torch.where(active, back[j - 1].gather(1, a[:, None]).squeeze(1), a)
    return out


def encode_sentences(vocab, sentences: Sequence[str] | Sequence[Sequence[str]], *,
                     device: torch.device | str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens (B, L) long, lengths (B,))``: the words of each sentence (``tokenize`` applied
    to strings; no ``bos``/``eos``), padded with ``vocab.pad_id``. Empty sentences are refused."""
    from rnnlab.tasks.seq2seq.vocab import pad_ids

    rows = [vocab.encode(tokenize(s) if isinstance(s, str) else list(s), add_eos=False)
            for s in sentences]
    return pad_ids(rows, vocab.pad_id, device=device)


# -----------------------------------------------------------------------------------------------
class RegionAlignment(nn.Module):
    """Karpathy & Fei-Fei's alignment model over the grid regions of a :class:`ConvEncoder`
    (module docstring for the equations).

    ``vocab_size``: word ids ``0 .. vocab_size - 1``; ``embed_size``: the joint space ``D`` of
    ``v_i`` and ``s_t``; ``word_size``: ``x_t`` (default ``embed_size``); ``hidden_size``: the
    BRNN's; ``score``: ``"max"`` (eq. 8) or ``"sum_pos"`` (eq. 7); ``whole_image``: add the mean
    region feature as one more region (index ``grid^2``); ``margin``: of eq. 9; ``pad_id``: the
    padding id (its embedding is fixed at zero); ``in_channels``, ``image_size``, ``grid``,
    ``channels``, ``feature_size``, ``coords``: the :class:`ConvEncoder`'s;
    ``seed``/``generator``: the initialisation (encoder first, then the rest).
    """

    kind = "region_alignment"

    def __init__(self, vocab_size: int, *, embed_size: int = 64, word_size: int | None = None,
                 hidden_size: int = 64, score: str = "max", whole_image: bool = False,
                 margin: float = 1.0, pad_id: int = 0, in_channels: int = 3,
                 image_size: int = 64, grid: int = 8, channels: int = 32,
                 feature_size: int = 64, coords: bool = True, seed: int | None = None,
                 generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, low=2)
        self.embed_size = check_int("embed_size", embed_size, low=1)
        self.word_size = check_int("word_size", embed_size if word_size is None else word_size,
                                   low=1)
        self.hidden_size = check_int("hidden_size", hidden_size, low=1)
        self.score_kind = check_choice("score", score, SCORES)
        self.whole_image = check_bool("whole_image", whole_image)
        self.margin = check_number("margin", margin, low=0.0)
        self.pad_id = check_int("pad_id", pad_id, low=0, high=self.vocab_size - 1)
        g = make_generator(seed, generator)
        kw = {"device": device, "dtype": dtype}
        self.encoder = ConvEncoder(in_channels, channels=channels, feature_size=feature_size,
                                   image_size=image_size, grid=grid, coords=coords,
                                   generator=g, **kw)
        F_, D, H = self.encoder.feature_size, self.embed_size, self.hidden_size
        self.region = nn.Linear(F_, D, **kw)                       # W_m, b_m
        self.embedding = nn.Embedding(self.vocab_size, self.word_size,
                                      padding_idx=self.pad_id, **kw)  # W_w
        self.word_in = nn.Linear(self.word_size, H, **kw)         # W_e, b_e
        self.brnn = RNN(H, H, nonlinearity="relu", batch_first=True, bidirectional=True,
                        generator=g, **kw)
        self.word_out = nn.Linear(H, D, **kw)                     # W_d, b_d
        with torch.no_grad():
            for lin in (self.region, self.word_in, self.word_out):
                bound = 1.0 / math.sqrt(lin.in_features)  # torch's default bound, seeded
                uniform_init_(lin.weight, bound, g)
                uniform_init_(lin.bias, bound, g)
            uniform_init_(self.embedding.weight, math.sqrt(3.0), g)  # unit variance
            self.embedding.weight[self.pad_id].zero_()

    # -------------------------------------------------------------------------------------------
    @property
    def grid(self) -> int:
        return self.encoder.grid

    @property
    def num_regions(self) -> int:
        """Grid cells, plus one for the whole image with ``whole_image``."""
        return self.encoder.num_regions + int(self.whole_image)

    def config(self) -> dict:
        """The constructor's keyword arguments (JSON-able): ``from_config(config())`` rebuilds
        the architecture; the weights come from ``state_dict()``."""
        e = self.encoder
        return {"vocab_size": self.vocab_size, "embed_size": self.embed_size,
                "word_size": self.word_size, "hidden_size": self.hidden_size,
                "score": self.score_kind, "whole_image": self.whole_image,
                "margin": self.margin, "pad_id": self.pad_id,
                "in_channels": e.in_channels, "image_size": e.image_size, "grid": e.grid,
                "channels": e.channels, "feature_size": e.feature_size, "coords": e.coords}

    @classmethod
    def from_config(cls, config: Mapping, **kwargs) -> RegionAlignment:
        """A model of the architecture ``config`` (``device=``, ``dtype=``, ``seed=`` may be
        added)."""
        return cls(**dict(config), **kwargs)

    # -------------------------------------------------------------------------------------------
    def check_tokens(self, tokens: object, lengths: object) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L)`` integer ids in ``[0, vocab_size)`` and ``(B,)`` lengths in ``[1, L]``."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor of word ids, got "
                            f"{type(tokens).__name__}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, words), got shape {tuple(tokens.shape)}")
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"tokens is empty (shape {tuple(tokens.shape)})")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        device = self.region.weight.device
        if tokens.device != device:
            raise ValueError(f"tokens are on {tokens.device} but the model is on {device}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{lo}, {hi}]")
        return tokens.long(), _check_lengths(lengths, tokens.shape[0], tokens.shape[1], device)

    def region_embeddings(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """``v`` ``(N, num_regions, embed_size)`` (eq. 1), encoded ``batch_size`` images at a
        time."""
        images = self.encoder.check_images(images)
        feats = torch.cat([self.encoder(images[i:i + batch_size])
                           for i in range(0, images.shape[0], batch_size)], 0)
        if self.whole_image:
            feats = torch.cat([feats, ConvEncoder.pooled(feats)[:, None]], 1)
        return self.region(feats)

    def word_embeddings(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``s`` ``(B, L, embed_size)`` (eqs. 2-6), zero after each sentence's length."""
        tokens, lengths = self.check_tokens(tokens, lengths)
        e = torch.relu(self.word_in(self.embedding(tokens)))
        packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.brnn(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        H = self.hidden_size
        s = torch.relu(self.word_out(h[..., :H] + h[..., H:]))
        return torch.where(word_mask(lengths, tokens.shape[1])[..., None], s, s.new_zeros(()))

    def scores(self, images: torch.Tensor, tokens: torch.Tensor,
               lengths: torch.Tensor) -> torch.Tensor:
        """``S`` ``(n_images, n_sentences)``: every image against every sentence."""
        words = self.word_embeddings(tokens, lengths)
        return score_matrix(self.region_embeddings(images), words, lengths,
                            score=self.score_kind)

    def loss(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, *,
             groups: torch.Tensor | Sequence[int] | None = None,
             reduction: str = "mean") -> torch.Tensor:
        """Eq. 9 over the batch, pair ``k`` = (image ``k``, sentence ``k``); see
        :func:`ranking_loss` for ``groups`` and ``reduction``."""
        n_img = images.shape[0] if isinstance(images, torch.Tensor) else None
        if isinstance(tokens, torch.Tensor) and n_img is not None and tokens.dim() >= 1 \
                and tokens.shape[0] != n_img:
            raise ValueError(f"loss pairs image k with sentence k: got {n_img} images and "
                             f"{tokens.shape[0]} sentences")
        return ranking_loss(self.scores(images, tokens, lengths), margin=self.margin,
                            groups=groups, reduction=reduction)

    @torch.no_grad()
    def retrieval(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                  image_of: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
        """Recall@K both ways (``retrieval_recall``) of sentence ``j`` describing image
        ``image_of[j]``."""
        return retrieval_recall(self.scores(images, tokens, lengths).double().cpu(), image_of,
                                ks)

    def unaries(self, images: torch.Tensor, tokens: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """``v_i^T s_t`` ``(B, L, num_regions)`` of image ``b`` with its sentence ``b``."""
        self._check_pairs(images, tokens)
        v = self.region_embeddings(images)
        s = self.word_embeddings(tokens, lengths)
        return torch.einsum("brd,btd->btr", v, s)

    @torch.no_grad()
    def align(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, *,
              smooth: float = 0.0) -> torch.Tensor:
        """The region of each word ``(B, L)`` long (``-1`` after the length) for image ``b``
        with sentence ``b``: the argmax region (``smooth = 0``) or the MRF alignment with
        ``beta = smooth`` (Sec. 3.1.4, :func:`viterbi_align`)."""
        smooth = check_number("smooth", smooth, low=0.0)
        u = self.unaries(images, tokens, lengths)
        return viterbi_align(u, lengths, smooth)

    def _check_pairs(self, images: object, tokens: object) -> None:
        if isinstance(images, torch.Tensor) and isinstance(tokens, torch.Tensor) \
                and images.dim() == 4 and tokens.dim() == 2 \
                and images.shape[0] != tokens.shape[0]:
            raise ValueError(f"alignment pairs image b with sentence b: got {images.shape[0]} "
                             f"images and {tokens.shape[0]} sentences")

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, embed_size={self.embed_size}, "
                f"hidden_size={self.hidden_size}, score={self.score_kind!r}, "
                f"whole_image={self.whole_image}, margin={self.margin}")


# -----------------------------------------------------------------------------------------------
def alignment_accuracy(alignments: Sequence[Sequence[int]] | torch.Tensor,
                       sentences: Sequence[str], scenes: Sequence, *, size: int,
                       grid: int, nouns_only: bool = False) -> tuple[float, float]:
    """``(accuracy, chance)`` over all grounded words (``ground_caption``; with ``nouns_only``
    the last word of each noun phrase, as ``attention_correctness``) of all sentences:
    ``accuracy`` the fraction whose aligned grid region overlaps the box of the object the word
    names (``box_mask(box, size, grid).flatten()[region] > 0``; the whole-image region
    ``grid^2`` counts as a miss), ``chance`` the same for a region drawn uniformly from the
    grid (the mean fraction of cells the box overlaps)."""
    grid = check_int("grid", grid, low=1)
    nouns_only = check_bool("nouns_only", nouns_only)
    if len(alignments) != len(sentences) or len(sentences) != len(scenes):
        raise ValueError(f"alignments ({len(alignments)}), sentences ({len(sentences)}) and "
                         f"scenes ({len(scenes)}) must have the same length")
    hits = 0
    chance = 0.0
    count = 0
    n_cells = grid * grid
    for row, sentence, scene in zip(alignments, sentences, scenes, strict=True):
        regions = torch.as_tensor(row).tolist() if isinstance(row, torch.Tensor) else list(row)
        owner = ground_caption(sentence, scene)
        if len(regions) < len(owner):
            raise ValueError(f"an alignment of {len(regions)} regions for a sentence of "
                             f"{len(owner)} words: {sentence!r}")
        for t, obj in enumerate(owner):
            r = int(regions[t])
            if not 0 <= r <= n_cells:
                raise ValueError(f"region {r} of word {t} lies outside [0, {n_cells}]")
            if obj is None or (nouns_only and t + 1 < len(owner) and owner[t + 1] == obj):
                continue
            inside = box_mask(scene.objects[obj].box, size, grid).flatten() > 0
            hits += int(r < n_cells and bool(inside[r]))
            chance += float(inside.double().mean())
            count += 1
    if count == 0:
        raise ValueError("no grounded words: the sentences name no objects")
    return hits / count, chance / count


def alignment_png(image: torch.Tensor, words: Sequence[str], regions_per_word: Sequence[int],
                  boxes: Sequence[Sequence[int]], path: str | Path, *, grid: int,
                  title: str | None = None) -> Path:
    """A picture of one word->region alignment: the image with its ground-truth ``boxes``
    (dashed white, numbered) and, per word, its grid cell outlined in the word's colour with
    the word's position written in it (the legend lists ``t: word -> cell``); a word aligned to
    the whole image (index ``grid^2``) outlines the frame. matplotlib's Agg backend."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    grid = check_int("grid", grid, low=1)
    img = image.detach().cpu() if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"image must be (C, H, W) with 1 or 3 channels, got "
                         f"{tuple(img.shape)}")
    regions = [int(r) for r in (regions_per_word.tolist()
                                if isinstance(regions_per_word, torch.Tensor)
                                else regions_per_word)]
    regions = regions[:len(words)]
    if len(regions) != len(words):
        raise ValueError(f"{len(words)} words but {len(regions)} regions")
    H, W = img.shape[1:]
    cell_h, cell_w = H / grid, W / grid
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.05, 0.6, 0.88))
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).float().numpy().squeeze(),
              cmap="gray" if img.shape[0] == 1 else None, interpolation="nearest")
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                               edgecolor="white", linestyle="--", linewidth=1.0))
        ax.text(x0, y0 - 1, str(k), color="white", fontsize=7, va="bottom")
    cmap = colormaps["tab10"]
    colours = [cmap(i % 10) for i in range(len(words))]
    # In each cell, the positions t of the words aligned to it (the legend gives the words).
    stacked: dict[int, int] = {}
    per_line = 3
    for t, r in enumerate(regions):
        if r < 0:
            continue
        if r >= grid * grid:
            ax.add_patch(Rectangle((-0.5, -0.5), W, H, fill=False, edgecolor=colours[t],
                                   linewidth=2.0))
            continue
        row, col = divmod(r, grid)
        n = stacked.get(r, 0)
        stacked[r] = n + 1
        if n == 0:
            ax.add_patch(Rectangle((col * cell_w - 0.5, row * cell_h - 0.5), cell_w, cell_h,
                                   fill=False, edgecolor=colours[t], linewidth=1.5))
        ax.text(col * cell_w + (0.1 + n % per_line / per_line) * cell_w,
                row * cell_h + (0.25 + (n // per_line) * 0.3) * cell_h, str(t),
                color=colours[t], fontsize=5, va="center", clip_on=True)
    ax.set_xticks([])
    ax.set_yticks([])
    legend = fig.add_axes((0.64, 0.05, 0.34, 0.88))
    legend.axis("off")
    for t, (word, r) in enumerate(zip(words, regions, strict=True)):
        where = ("image" if r >= grid * grid else f"r{r // grid},c{r % grid}") if r >= 0 \
            else "-"
        legend.text(0.0, 1.0 - (t + 0.5) / max(len(words), 12), f"{t}: {word}  → {where}",
                    color=colours[t], fontsize=8, transform=legend.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    fig.savefig(path)
    return path
