"""``captioning``: image to text on generated scenes (:mod:`rnnlab.tasks.captions`), three models
of the course against two baselines on an i.i.d. and a compositional test split.

Models (``--models``), all trained here from scratch, seeded:

* ``show-and-tell``: :class:`rnnlab.captioning.ShowAndTell` (Vinyals et al., "Show and tell",
  TPAMI 2016): a CNN encoder, the image embedding fed to an LSTM decoder;
* ``show-attend-tell``: :class:`rnnlab.captioning.ShowAttendTell` (Xu et al., "Show, attend
  and tell", ICML 2015): soft attention over the encoder's ``grid x grid`` regions at every
  word, trained with the doubly stochastic regulariser ``lambda sum_i (1 - sum_t alpha_ti)^2``
  (their eq. 14; ``--doubly-stochastic`` is ``lambda``);
* ``region-alignment``: :class:`rnnlab.captioning.alignment.RegionAlignment` (Karpathy &
  Fei-Fei, "Deep visual-semantic alignments", TPAMI 2017): regions and the words of a
  bidirectional RNN in one space, a max-margin ranking loss; retrieval both ways and the
  inferred word->region alignment.

Baselines in the same run (Devlin et al. 2015, "Language models for image captioning: the quirks
and what works", used both): ``most-frequent``, the most frequent training caption for every
image (ties: the alphabetically first), and ``nearest-neighbour``, the first caption of the
training image whose pooled encoder features ``(1/R) sum_r a_r`` under the trained
``show-and-tell`` encoder are closest in Euclidean distance (ties: the lowest index). It is
computed only when ``show-and-tell`` runs.

Training: Adam (Kingma & Ba 2015) with global-norm clipping; an epoch visits every training
image once with one of its captions drawn at random; after every epoch the captioners are
decoded greedily on the validation scenes and the epoch with the best semantic accuracy is kept
(model selection on validation, as Xu et al. selected on validation BLEU); the alignment model
keeps the epoch of the best validation ``R@1`` (mean of both ways). Each (model, seed) is one job
of :meth:`RunContext.run_jobs`: a stopped run resumed with ``--resume`` keeps the finished jobs.
Every captioner is saved in ``models/`` of the run folder (:func:`rnnlab.captioning.
save_captioner`), so ``rnnlab caption IMAGE --model RUN_DIR`` uses the run.

Metrics per test split (``iid``, ``compositional``) and model (``docs/captions.md`` has the
definitions): corpus BLEU-1..4 and CIDEr-D against the five references of each image; exact
semantic accuracy (the caption parsed back and matched against the scene graph; with the shares
outside the grammar and false); for ``show-attend-tell`` the attention correctness of Liu et al.
(AAAI 2017), the attention mass inside the box of the object each word names, on the generated
captions that match their scene (``attn_correct``, with the share of captions scored,
``attn_scored``) and teacher-forced on all five references (``attn_correct_ref``), each beside the
uniform-attention level (mean box area fraction, ``attn_uniform*``); for ``region-alignment``
recall@1/5/10 image->sentence and sentence->image over the split's images and all their
references (ties against the model), and word->region alignment accuracy (the argmax region of a
grounded word overlaps the object's box) beside its chance level.

Pictures: generated captions with one attention panel per word
(:func:`rnnlab.captioning.attention_overlay_png`) and word->region alignments with the
ground-truth boxes (:func:`rnnlab.captioning.alignment.alignment_png`) for ``--examples``
test images of each split (first seed); a bar chart of the table. Measured tables and times:
``docs/captioning_experiment.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab._random import make_generator
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    SeededOptions,
    aggregate,
    format_mean_std,
    option,
    register,
)
from rnnlab.tasks.captions import (
    CaptionSplits,
    Scene,
    attention_correctness,
    bleu_scores,
    caption_splits,
    cider_d,
    semantic_accuracy,
    semantic_match,
    tokenize,
)
from rnnlab.tasks.seq2seq import Vocabulary, pad_ids

MODELS = ("show-and-tell", "show-attend-tell", "region-alignment")
CAPTIONERS = ("show-and-tell", "show-attend-tell")
BASELINES = ("most-frequent", "nearest-neighbour")
SPLITS = ("iid", "compositional")
KINDS = ("shapes", "digits")
RECALL_KEYS = tuple(f"{d}@{k}" for d in ("i2s", "s2i") for k in (1, 5, 10))
METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "semantic", "unparsable", "wrong",
           "attn_correct", "attn_uniform", "attn_scored", "attn_correct_ref",
           "attn_uniform_ref", *RECALL_KEYS, "align_acc", "align_chance")

# The smoke-sized values ``quick=true`` puts in place of the options left at their defaults.
QUICK: dict[str, Any] = {
    "n_train": 64, "n_val": 12, "n_test": 16, "n_compositional": 16,
    "grid": 4, "channels": 4, "feature_size": 8, "embed_size": 8, "hidden_size": 16,
    "attention_size": 8, "epochs": 2, "batch_size": 32, "beam": 2, "examples": 1, "workers": 1,
    # the full-size settings (lr 0.003, no gate, lambda 0) give empty captions (eos first)
    # after two epochs: the smoke run keeps the faster-starting ones
    "lr": 0.01, "gate": True, "doubly_stochastic": 1.0,
}


@dataclass
class CaptioningConfig(SeededOptions):
    seeds: int = option(1, "seeds per model: seed, seed + 1, ... (weights and data)", low=1)
    kind: str = option("shapes", "scenes: shapes (PIL) or digits (scikit-learn's load_digits)",
                       choices=KINDS)
    models: tuple[str, ...] = option(MODELS, "models to train", choices=MODELS, unique=True)
    n_train: int = option(2000, "training scenes (5 captions each)", low=1)
    n_val: int = option(200, "validation scenes (model selection)", low=1)
    n_test: int = option(400, "i.i.d. test scenes", low=1)
    n_compositional: int = option(400, "compositional test scenes (held-out colour-noun "
                                       "pairs)", low=1)
    max_objects: int = option(4, "objects per scene: 2 .. max_objects", low=2)
    image_size: int = option(64, "canvas side in pixels (a multiple of grid)", low=24)
    grid: int = option(8, "encoder grid: grid x grid regions", low=1)
    channels: int = option(8, "channels of the encoder's first conv block", low=1)
    feature_size: int = option(32, "features per region", low=1)
    embed_size: int = option(32, "word embedding size (joint space of region-alignment)",
                             low=1)
    hidden_size: int = option(128, "LSTM / BRNN hidden units", low=1)
    attention_size: int = option(32, "width of the attention MLP (show-attend-tell)", low=1)
    doubly_stochastic: float = option(0.0, "lambda of the doubly stochastic attention "
                                           "regulariser (0: off; at 1 or 0.1 it held the "
                                           "attention at uniform)", low=0)
    gate: bool = option(False, "gating scalar beta of show-attend-tell (on, it closed to "
                               "~0.002 at lr 0.01 and the attention stayed uniform)")
    margin: float = option(1.0, "ranking margin of region-alignment", low=0)
    epochs: int = option(60, "training epochs (the best validation epoch is kept)", low=1)
    batch_size: int = option(32, "images per update", low=1)
    lr: float = option(0.003, "Adam learning rate of the captioners", low=0, low_open=True)
    alignment_lr: float = option(0.002, "Adam learning rate of region-alignment (at the "
                                        "captioners' 0.01 it did not learn: R@1 0)", low=0,
                                 low_open=True)
    clip: float = option(5.0, "gradient norm clipping threshold", low=0, low_open=True)
    beam: int = option(3, "beam width of the test captions (1: greedy)", low=1)
    examples: int = option(3, "test images per split shown in the pictures", low=0)
    workers: int = option(2, "jobs (model, seed) in parallel processes; results do not depend "
                             "on it", low=1)
    quick: bool = option(False, "smoke-sized run (< 30 s): small scenes, network and data, "
                                "except where an option is set to a non-default value")

    def validate(self) -> None:
        eff = effective_config(self)
        size, grid = eff.image_size, eff.grid
        if size % grid:
            raise ValueError(f"image_size ({size}) must be a multiple of grid ({grid}): the "
                             "regions are equal cells of the canvas")


def effective_config(cfg: CaptioningConfig) -> CaptioningConfig:
    """``cfg`` with the :data:`QUICK` values in place of the options still at their defaults
    (when ``quick``)."""
    if not cfg.quick:
        return cfg
    defaults = {f.name: f.default for f in dataclasses.fields(CaptioningConfig)}
    return dataclasses.replace(cfg, **{k: v for k, v in QUICK.items()
                                       if getattr(cfg, k) == defaults[k]})


# ------------------------------------------------------------------------------------------
# data
@functools.lru_cache(maxsize=2)
def make_splits(kind: str, seed: int, n_train: int, n_val: int, n_test: int,
                n_compositional: int, image_size: int, max_objects: int = 4) -> CaptionSplits:
    """The scenes of one seed (cached: every job of a seed uses the same scenes)."""
    return caption_splits(n_train, n_val, n_test, n_compositional, kind=kind, size=image_size,
                          n_objects=(2, max_objects), seed=seed)


def splits_of(cfg: CaptioningConfig, seed: int) -> CaptionSplits:
    return make_splits(cfg.kind, seed, cfg.n_train, cfg.n_val, cfg.n_test, cfg.n_compositional,
                       cfg.image_size, cfg.max_objects)


def build_vocabulary(scenes: Sequence[Scene]) -> Vocabulary:
    """The words of the training captions (``tokenize``); others map to ``<unk>``."""
    return Vocabulary.build(tokenize(c) for s in scenes for c in s.captions)


def test_sets(splits: CaptionSplits) -> dict[str, Any]:
    return {"iid": splits.test, "compositional": splits.compositional}


# ------------------------------------------------------------------------------------------
# baselines
def most_frequent_caption(scenes: Sequence[Scene]) -> str:
    """The most frequent caption of ``scenes`` (ties: the alphabetically first)."""
    counts = Counter(c for s in scenes for c in s.captions)
    if not counts:
        raise ValueError("no captions to count")
    return min(counts, key=lambda c: (-counts[c], c))


def nearest_neighbour_captions(train_features: torch.Tensor, train_captions: Sequence[str],
                               test_features: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """For every row of ``test_features`` ``(M, F)`` the caption of the row of
    ``train_features`` ``(N, F)`` closest in Euclidean distance (ties: the lowest index), and
    the indices chosen."""
    if train_features.dim() != 2 or test_features.dim() != 2 \
            or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"features must be (N, F) and (M, F), got "
                         f"{tuple(train_features.shape)} and {tuple(test_features.shape)}")
    if len(train_captions) != train_features.shape[0]:
        raise ValueError(f"{len(train_captions)} captions for {train_features.shape[0]} "
                         "training images")
    a = train_features.double()
    b = test_features.double()
    # exact squared distances (no |a|^2 - 2ab + |b|^2 cancellation), argmin takes the first
    d = torch.stack([((a - row) ** 2).sum(1) for row in b]) if len(b) else a.new_zeros(0, len(a))
    idx = d.argmin(dim=1)
    return [train_captions[int(i)] for i in idx], idx


# ------------------------------------------------------------------------------------------
# metrics
def caption_metrics(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D and semantic accuracy of one caption per scene against its
    references."""
    refs = [list(s.captions) for s in scenes]
    row = dict(bleu_scores(list(captions), refs))
    row["cider"] = cider_d(list(captions), refs)[0]
    sem = semantic_accuracy(list(captions), list(scenes))
    row.update(semantic=sem["accuracy"], unparsable=sem["unparsable"], wrong=sem["wrong"])
    return row


def _empty_row() -> dict[str, float]:
    return dict.fromkeys(METRICS, math.nan)


def _encode_captions(vocab: Vocabulary, scenes: Sequence[Scene]) -> list[list[list[int]]]:
    return [[vocab.encode(tokenize(c)) for c in s.captions] for s in scenes]


def _batches(n: int, size: int):
    for k in range(0, n, size):
        yield slice(k, min(k + size, n))


@torch.no_grad()
def decode_captions(model: torch.nn.Module, vocab: Vocabulary, images: torch.Tensor, *,
                    beam: int = 1, batch_size: int = 128) -> tuple[list[str], list[Any]]:
    """The best caption of every image (greedy for ``beam = 1``, else beam search) and its
    attention ``(words, R)`` (None for a model without attention)."""
    from rnnlab.seq2seq import beam_search, greedy_decode

    model.eval()
    texts: list[str] = []
    attns: list[Any] = []
    for sl in _batches(images.shape[0], batch_size):
        x = images[sl]
        if beam == 1:
            d = greedy_decode(model, x, None)
            for i in range(x.shape[0]):
                n = int(d.lengths[i])
                texts.append(" ".join(vocab.decode(d.tokens[i, :n])))
                attns.append(None if d.attention is None else d.attention[i, :n].clone())
        else:
            for hs in beam_search(model, x, None, beam_size=beam, n_best=1):
                h = hs[0]
                words = vocab.decode(h.tokens)
                texts.append(" ".join(words))
                attns.append(None if h.attention is None else h.attention[:len(words)].clone())
    return texts, attns


def generated_attention_correctness(texts: Sequence[str], attns: Sequence[Any],
                                    scenes: Sequence[Scene], *, size: int, grid: int
                                    ) -> tuple[float, float, float]:
    """Mean attention correctness and uniform level over the captions that match their scene
    (the others name no object to look at), and the share of captions scored."""
    hit, chance, scored = [], [], 0
    for text, a, scene in zip(texts, attns, scenes, strict=True):
        if a is None or not semantic_match(text, scene):
            continue
        c, u = attention_correctness(a.reshape(-1, grid, grid), text, scene, size=size)
        if math.isfinite(c):
            hit.append(c)
            chance.append(u)
            scored += 1
    if not hit:
        return math.nan, math.nan, 0.0
    return sum(hit) / len(hit), sum(chance) / len(chance), scored / len(texts)


@torch.no_grad()
def reference_attention_correctness(model: torch.nn.Module, vocab: Vocabulary,
                                    images: torch.Tensor, scenes: Sequence[Scene], *,
                                    size: int, grid: int, batch_size: int = 128
                                    ) -> tuple[float, float]:
    """Attention correctness teacher-forced on every reference caption (row ``t`` of the
    attention: while emitting word ``t`` after the true words before it)."""
    model.eval()
    hit, chance = [], []
    n_caps = len(scenes[0].captions)
    for j in range(n_caps):
        for sl in _batches(len(scenes), batch_size):
            texts = [s.captions[j] for s in scenes[sl]]
            tokens, lengths = pad_ids([vocab.encode(tokenize(t)) for t in texts], vocab.pad_id)
            attn = model(images[sl], tokens, lengths).attention
            for i, (text, scene) in enumerate(zip(texts, scenes[sl], strict=True)):
                n = int(lengths[i]) - 1  # the eos step names nothing
                c, u = attention_correctness(attn[i, :n].reshape(n, grid, grid), text, scene,
                                             size=size)
                if math.isfinite(c):
                    hit.append(c)
                    chance.append(u)
    if not hit:
        return math.nan, math.nan
    return sum(hit) / len(hit), sum(chance) / len(chance)


@torch.no_grad()
def pooled_features(encoder: torch.nn.Module, images: torch.Tensor,
                    batch_size: int = 256) -> torch.Tensor:
    """The mean region feature of every image under ``encoder``."""
    encoder.eval()
    return torch.cat([encoder.pooled(encoder(images[sl]))
                      for sl in _batches(images.shape[0], batch_size)])


# ------------------------------------------------------------------------------------------
# training
def build_model(cfg: CaptioningConfig, name: str, vocab: Vocabulary, seed: int
                ) -> torch.nn.Module:
    if name == "region-alignment":
        from rnnlab.captioning.alignment import RegionAlignment

        return RegionAlignment(len(vocab), embed_size=cfg.embed_size,
                               hidden_size=cfg.hidden_size, margin=cfg.margin,
                               pad_id=vocab.pad_id, image_size=cfg.image_size,
                               grid=cfg.grid, channels=cfg.channels,
                               feature_size=cfg.feature_size, seed=seed)
    from rnnlab.captioning import ShowAndTell, ShowAttendTell

    common = {"pad_id": vocab.pad_id, "bos_id": vocab.bos_id, "eos_id": vocab.eos_id,
              "image_size": cfg.image_size, "grid": cfg.grid, "channels": cfg.channels,
              "feature_size": cfg.feature_size, "embed_size": cfg.embed_size,
              "hidden_size": cfg.hidden_size, "seed": seed}
    if name == "show-and-tell":
        return ShowAndTell(len(vocab), **common)
    return ShowAttendTell(len(vocab), attention_size=cfg.attention_size, gate=cfg.gate,
                          doubly_stochastic=cfg.doubly_stochastic, **common)


def _val_score(cfg: CaptioningConfig, name: str, model: torch.nn.Module, vocab: Vocabulary,
               splits: CaptionSplits) -> float:
    val = splits.val
    if name == "region-alignment":
        from rnnlab.captioning.alignment import encode_sentences

        sentences = [c for s in val.scenes for c in s.captions]
        tokens, lengths = encode_sentences(vocab, sentences)
        image_of = [i for i, s in enumerate(val.scenes) for _ in s.captions]
        model.eval()
        r = model.retrieval(val.images, tokens, lengths, image_of)
        return (r["i2s@1"] + r["s2i@1"]) / 2
    texts, _ = decode_captions(model, vocab, val.images, beam=1)
    return semantic_accuracy(texts, val.scenes)["accuracy"]


def train_model(cfg: CaptioningConfig, name: str, model: torch.nn.Module, vocab: Vocabulary,
                splits: CaptionSplits, seed: int) -> list[dict[str, float]]:
    """Adam with clipping for ``cfg.epochs`` epochs (one random caption per image per epoch);
    the weights of the best validation epoch are loaded at the end. Returns one row per
    epoch (mean training loss, validation score)."""
    g = make_generator(seed)
    images = splits.train.images
    caps = _encode_captions(vocab, splits.train.scenes)
    lr = cfg.alignment_lr if name == "region-alignment" else cfg.lr
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = images.shape[0]
    best, best_state, history = -math.inf, None, []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=g)
        pick = torch.randint(0, 1 << 30, (n,), generator=g)
        losses = []
        for sl in _batches(n, cfg.batch_size):
            idx = order[sl]
            chosen = [caps[int(i)][int(pick[int(i)]) % len(caps[int(i)])] for i in idx]
            if name == "region-alignment":
                # the words without eos (what encode_sentences gives)
                tokens, lengths = pad_ids([c[:-1] for c in chosen], vocab.pad_id)
                loss = model.loss(images[idx], tokens, lengths)
            else:
                tokens, lengths = pad_ids(chosen, vocab.pad_id)
                loss = model.loss(images[idx], tokens, lengths)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            losses.append(float(loss.detach()))
        score = _val_score(cfg, name, model, vocab, splits)
        history.append({"epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
                        "val_score": score})
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


# ------------------------------------------------------------------------------------------
# one job: train, save, evaluate, draw
def _save(run_dir: Path, name: str, model: torch.nn.Module, vocab: Vocabulary, seed: int,
          first: bool, cfg: CaptioningConfig) -> Path:
    folder = run_dir / "models"
    folder.mkdir(parents=True, exist_ok=True)
    info = {"experiment": "captioning", "model": name, "seed": seed, "kind": cfg.kind}
    from rnnlab.captioning import save_captioner

    if name == "region-alignment":
        # not captioner_*.pt: `rnnlab caption` looks for captioners only; load_captioner reads it
        return save_captioner(folder / f"region_alignment_seed{seed}.pt", model, vocab,
                              config=info)
    # the first seed's captioner under the name `rnnlab caption --model RUN_DIR` looks for
    # (captioner_<kind>.pt), the others tagged captioner_<kind>-seed<k>.pt
    return save_captioner(folder, model, vocab, config=info, tag=None if first else f"seed{seed}")


def _write_captions(run_dir: Path, split: str, name: str, seed: int,
                    texts: Sequence[str]) -> None:
    folder = run_dir / "captions"
    folder.mkdir(exist_ok=True)
    (folder / f"{split}_{name}_seed{seed}.txt").write_text("".join(t + "\n" for t in texts))


def _row(split: str, name: str, seed: int, n: int, values: dict[str, float]
         ) -> dict[str, Any]:
    row = {"split": split, "model": name, "seed": seed, "n": n, **_empty_row()}
    unknown = set(values) - set(METRICS)
    if unknown:
        raise KeyError(f"metrics {sorted(unknown)} are not table columns")
    row.update(values)
    return row


def _evaluate_captioner(cfg: CaptioningConfig, name: str, model: torch.nn.Module,
                        vocab: Vocabulary, splits: CaptionSplits, seed: int, run_dir: Path,
                        draw: bool) -> tuple[list[dict[str, Any]], list[str]]:
    rows, pictures = [], []
    size, grid = cfg.image_size, cfg.grid
    if name == "show-and-tell":  # the nearest-neighbour baseline needs this encoder
        train_feats = pooled_features(model.encoder, splits.train.images)
        train_caps = [s.captions[0] for s in splits.train.scenes]
    for split, data in test_sets(splits).items():
        texts, attns = decode_captions(model, vocab, data.images, beam=cfg.beam)
        _write_captions(run_dir, split, name, seed, texts)
        values = caption_metrics(texts, data.scenes)
        if name == "show-attend-tell":
            c, u, scored = generated_attention_correctness(texts, attns, data.scenes,
                                                           size=size, grid=grid)
            cr, ur = reference_attention_correctness(model, vocab, data.images, data.scenes,
                                                     size=size, grid=grid)
            values.update(attn_correct=c, attn_uniform=u, attn_scored=scored,
                          attn_correct_ref=cr, attn_uniform_ref=ur)
            if draw:
                pictures += _draw_attention(run_dir, split, data, texts, attns, cfg)
        rows.append(_row(split, name, seed, len(data), values))
        if name == "show-and-tell":
            nn_texts, _ = nearest_neighbour_captions(
                train_feats, train_caps, pooled_features(model.encoder, data.images))
            _write_captions(run_dir, split, "nearest-neighbour", seed, nn_texts)
            rows.append(_row(split, "nearest-neighbour", seed, len(data),
                             caption_metrics(nn_texts, data.scenes)))
    return rows, pictures


def _evaluate_alignment(cfg: CaptioningConfig, model: torch.nn.Module, vocab: Vocabulary,
                        splits: CaptionSplits, seed: int, run_dir: Path, draw: bool
                        ) -> tuple[list[dict[str, Any]], list[str]]:
    from rnnlab.captioning.alignment import alignment_accuracy, encode_sentences

    rows, pictures = [], []
    model.eval()
    for split, data in test_sets(splits).items():
        sentences = [c for s in data.scenes for c in s.captions]
        image_of = [i for i, s in enumerate(data.scenes) for _ in s.captions]
        tokens, lengths = encode_sentences(vocab, sentences)
        values: dict[str, float] = dict(model.retrieval(data.images, tokens, lengths, image_of))
        rows_of: list[list[int]] = []
        for sl in _batches(len(sentences), 256):
            a = model.align(data.images[image_of[sl]], tokens[sl], lengths[sl])
            rows_of += [a[j, :int(n)].tolist() for j, n in enumerate(lengths[sl])]
        acc, chance = alignment_accuracy(rows_of, sentences,
                                         [data.scenes[i] for i in image_of],
                                         size=cfg.image_size, grid=cfg.grid)
        values.update(align_acc=acc, align_chance=chance)
        rows.append(_row(split, "region-alignment", seed, len(data), values))
        if draw:
            pictures += _draw_alignment(run_dir, split, data, sentences, image_of, rows_of, cfg)
    return rows, pictures


def _draw_attention(run_dir: Path, split: str, data: Any, texts: Sequence[str],
                    attns: Sequence[Any], cfg: CaptioningConfig) -> list[str]:
    from rnnlab.captioning import attention_overlay_png

    names = []
    for i in range(min(cfg.examples, len(texts))):
        words = texts[i].split()
        if not words or attns[i] is None:
            continue
        name = f"attention_{split}_{i}.png"
        attention_overlay_png(data.images[i], words, attns[i], cfg.grid, run_dir / name)
        names.append(name)
    return names


def _draw_alignment(run_dir: Path, split: str, data: Any, sentences: Sequence[str],
                    image_of: Sequence[int], rows_of: Sequence[Sequence[int]],
                    cfg: CaptioningConfig) -> list[str]:
    from rnnlab.captioning.alignment import alignment_png

    names = []
    first: dict[int, int] = {}
    for j, i in enumerate(image_of):  # the first reference of each image
        first.setdefault(i, j)
    for i in range(min(cfg.examples, len(data))):
        j = first[i]
        name = f"alignment_{split}_{i}.png"
        alignment_png(data.images[i], tokenize(sentences[j]), rows_of[j],
                      [o.box for o in data.scenes[i].objects], run_dir / name, grid=cfg.grid,
                      title=f"{split} test image {i}: word -> region")
        names.append(name)
    return names


def run_job(cfg: CaptioningConfig, name: str, seed: int, run_dir: str, first: bool
            ) -> dict[str, Any]:
    """Train model ``name`` on the scenes of ``seed``, save it, evaluate it (and the
    nearest-neighbour baseline with the show-and-tell encoder) on both test splits, draw the
    pictures (``first``: the run's first seed)."""
    import time

    wall, cpu = time.perf_counter(), time.process_time()
    splits = splits_of(cfg, seed)
    vocab = build_vocabulary(splits.train.scenes)
    model = build_model(cfg, name, vocab, seed)
    history = train_model(cfg, name, model, vocab, splits, seed)
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    folder = Path(run_dir)
    _save(folder, name, model, vocab, seed, first, cfg)
    draw = first and cfg.examples > 0
    if name == "region-alignment":
        rows, pictures = _evaluate_alignment(cfg, model, vocab, splits, seed, folder, draw)
    else:
        rows, pictures = _evaluate_captioner(cfg, name, model, vocab, splits, seed, folder,
                                             draw)
    return {"rows": rows, "pictures": pictures, "history": history,
            "params": sum(p.numel() for p in model.parameters()),
            "times": {"train_wall_s": train_wall, "train_cpu_s": train_cpu,
                      "wall_s": time.perf_counter() - wall,
                      "cpu_s": time.process_time() - cpu}}


def baseline_rows(cfg: CaptioningConfig, seed: int, run_dir: Path) -> list[dict[str, Any]]:
    """The most-frequent-caption baseline of one seed on both test splits."""
    splits = splits_of(cfg, seed)
    caption = most_frequent_caption(splits.train.scenes)
    rows = []
    for split, data in test_sets(splits).items():
        texts = [caption] * len(data)
        _write_captions(run_dir, split, "most-frequent", seed, texts)
        rows.append(_row(split, "most-frequent", seed, len(data),
                         caption_metrics(texts, data.scenes)))
    return rows


# ------------------------------------------------------------------------------------------
ORDER = ("most-frequent", "nearest-neighbour", *MODELS)
SHOWN_STD = ("bleu4", "cider", "semantic", "attn_correct", "attn_correct_ref", "i2s@1",
             "s2i@1", "align_acc")


@register("captioning", "image to text on generated scenes: Show and Tell, Show Attend and "
          "Tell, region alignment vs nearest-neighbour and most-frequent captions, i.i.d. and "
          "compositional tests", CaptioningConfig)
def run(cfg: CaptioningConfig, ctx: RunContext) -> ExperimentResult:
    cfg = effective_config(cfg)
    seeds = ctx.seeds(cfg)
    names = [m for m in MODELS if m in cfg.models]  # show-and-tell first: its encoder is used
    jobs = [(cfg, name, seed, str(ctx.run_dir), seed == seeds[0])
            for seed in seeds for name in names]
    outs = ctx.run_jobs("models x seeds", run_job, jobs, workers=cfg.workers, log=False)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        rows += baseline_rows(cfg, seed, ctx.run_dir)
    for out in outs:
        rows += out["rows"]
    for r in rows:
        ctx.log_metrics(r)
    groups = [(s, m) for s in SPLITS for m in ORDER]
    table = aggregate(rows, ("split", "model"), METRICS, std=SHOWN_STD, count="seeds",
                      groups=groups, columns={"n": lambda rs: rs[0]["n"]})
    pictures = [ctx.run_dir / p for out in outs for p in out["pictures"]]
    plots = [plot_scores(ctx, table), *pictures]
    figures = {
        "jobs": [{"model": j[1], "seed": j[2], "params": o["params"], **o["times"],
                  "history": o["history"]} for j, o in zip(jobs, outs, strict=True)],
        "done_when": done_when(table),
    }
    return ExperimentResult(title="captioning: captions, attention and alignment on generated "
                                  "scenes", rows=table, plots=plots,
                            summary=summarise(table), figures=figures)


def _get(table: list[dict], split: str, model: str, key: str) -> float:
    for r in table:
        if r["split"] == split and r["model"] == model:
            return r[key]
    return math.nan


def done_when(table: list[dict]) -> dict[str, Any]:
    """Issue 15's criteria per split: show-attend-tell's semantic accuracy above both
    baselines', and its attention correctness against the uniform level."""
    out = {}
    for split in SPLITS:
        sat = _get(table, split, "show-attend-tell", "semantic")
        base = [_get(table, split, b, "semantic") for b in BASELINES]
        out[split] = {
            "semantic_attention_model": sat,
            "semantic_baselines": dict(zip(BASELINES, base, strict=True)),
            "beats_baselines": all(math.isfinite(b) and sat > b for b in base)
            if math.isfinite(sat) else None,
            "attn_correct": _get(table, split, "show-attend-tell", "attn_correct"),
            "attn_uniform": _get(table, split, "show-attend-tell", "attn_uniform"),
            "attn_correct_ref": _get(table, split, "show-attend-tell", "attn_correct_ref"),
            "attn_uniform_ref": _get(table, split, "show-attend-tell", "attn_uniform_ref"),
        }
    return out


def summarise(table: list[dict]) -> str:
    parts = []
    for split in SPLITS:
        bits = []
        for r in (r for r in table if r["split"] == split):
            if math.isfinite(r["semantic"]):
                bits.append(f"{r['model']} semantic "
                            f"{format_mean_std(r['semantic'], r['semantic_std'])}, CIDEr-D "
                            f"{r['cider']:.2f}")
            if math.isfinite(r["attn_correct_ref"]):
                bits.append(f"attention correctness {r['attn_correct']:.3f} (generated, "
                            f"uniform {r['attn_uniform']:.3f}), {r['attn_correct_ref']:.3f} "
                            f"(references, uniform {r['attn_uniform_ref']:.3f})")
            if math.isfinite(r["align_acc"]):
                bits.append(f"region-alignment R@1 i2s {r['i2s@1']:.2f} s2i {r['s2i@1']:.2f}, "
                            f"alignment {r['align_acc']:.2f} (chance {r['align_chance']:.2f})")
        parts.append(f"{split}: " + "; ".join(bits))
    return ". ".join(parts) + "."


def plot_scores(ctx: RunContext, table: list[dict]) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.38
    names = [m for m in ORDER if m != "region-alignment"]  # the models that caption
    for k, (key, title) in enumerate((("semantic", "exact semantic accuracy"),
                                      ("cider", "CIDEr-D"))):
        ax = axes[k]
        for j, split in enumerate(SPLITS):
            rs = [r for r in table if r["split"] == split and math.isfinite(r[key])]
            xs = [names.index(r["model"]) + (j - 0.5) * width for r in rs]
            ax.bar(xs, [r[key] for r in rs], width, label=split)
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    ax = axes[2]
    labels = []
    for j, split in enumerate(SPLITS):
        for i, (hit, uni, what) in enumerate((("attn_correct", "attn_uniform", "generated"),
                                              ("attn_correct_ref", "attn_uniform_ref",
                                               "references"))):
            x = 2 * j + i
            ax.bar(x - 0.2, _get(table, split, "show-attend-tell", hit), 0.4,
                   color="tab:blue", label="attention" if x == 0 else None)
            ax.bar(x + 0.2, _get(table, split, "show-attend-tell", uni), 0.4,
                   color="tab:gray", label="uniform" if x == 0 else None)
            labels.append(f"{split[:5]}\n{what}")
        x = 4 + j
        ax.bar(x - 0.2, _get(table, split, "region-alignment", "align_acc"), 0.4,
               color="tab:green", label="alignment" if j == 0 else None)
        ax.bar(x + 0.2, _get(table, split, "region-alignment", "align_chance"), 0.4,
               color="tab:gray")
    labels += [f"{s[:5]}\nalignment" for s in SPLITS]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_title("attention mass in the named box / alignment hits")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return ctx.save_figure(fig, "captioning_scores")
