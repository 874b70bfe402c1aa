"""Pieces the ``seq2seq`` and ``pointer-net`` experiments and ``rnnlab translate`` share:
parameter matching, training through :class:`rnnlab.train.Trainer` (checkpoints, resume, early
stopping, averaging of the last epochs' weights), decoding to token lists, and the translator
bundle (a trained model with its vocabularies) saved in a run folder.

Training folder of one model (``<run>/jobs/<job>/``): the trainer's ``checkpoint.pt`` and
``metrics.csv``/``metrics.jsonl``, and with ``--average-last K`` the model's weights at the end
of each of the last ``K`` epochs (``snapshots/epoch_NNNN.pt``). ``rnnlab run ... --resume RUN``
continues every model from its checkpoint (a finished one is not trained again).

Bundle layout (``<run>/models/<name>/``): ``model.pt`` (the ``state_dict``), ``model.json``
(the ``Seq2Seq`` constructor arguments, the tokenizer's name and the vocabularies' digests),
``src_vocab.json``, ``tgt_vocab.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab.experiments.registry import RunContext, SeededOptions, option
from rnnlab.tasks.seq2seq import Pairs, Vocabulary, get_tokenizer, pad_ids

BUNDLE_FORMAT = "rnnlab.translator/1"


@dataclass
class TrainingOptions(SeededOptions):
    """The training options both experiments share."""

    seeds: int = option(1, "seeds per model (weights and data)", low=1)
    epochs: int = option(6, "passes over the training set (Adam, one update per batch)",
                         low=1)
    batch_size: int = option(64, "sequences per update", low=1)
    lr: float = option(0.005, "Adam learning rate", low=0, low_open=True)
    clip: float = option(1.0, "gradient norm clipping threshold", low=0, low_open=True)
    train_size: int = option(4000, "training examples per task", low=1)
    test_size: int = option(600, "test examples per task", low=1)
    patience: int = option(0, "early stopping: epochs without a better validation loss (on "
                              "10% of the training examples, held out) before training "
                              "stops, the best epoch's weights restored; 0: every epoch",
                           low=0)
    average_last: int = option(3, "use the mean of the weights at the end of the last K "
                                  "epochs (checkpoint averaging; all epochs when there are "
                                  "fewer); 0 or 1: the last weights", low=0)
    checkpoint_every: int = option(100, "also write a resumable checkpoint every this many "
                                        "updates (one is written after every epoch)", low=1)

    def validate(self) -> None:
        if self.patience > 0 and self.average_last > 1:
            raise ValueError("choose early stopping (patience) or checkpoint averaging "
                             "(average_last), not both: the best epoch's weights and the "
                             "mean of the last epochs' are different models (give "
                             "--average-last 0 with --patience)")


def build_seq2seq(spec: dict[str, Any], width: int, src_vocab: Vocabulary,
                  tgt_vocab: Vocabulary, embed_size: int, max_len: int, seed: int = 0
                  ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A ``Seq2Seq`` of the given kind (``spec``: constructor options such as ``context``) and
    width over the two vocabularies, with its constructor arguments (saved in bundles)."""
    from rnnlab.seq2seq import Seq2Seq

    kwargs = {"src_vocab_size": len(src_vocab), "tgt_vocab_size": len(tgt_vocab),
              "pad_id": src_vocab.pad_id, "bos_id": tgt_vocab.bos_id,
              "eos_id": tgt_vocab.eos_id, "unk_id": src_vocab.unk_id,
              "embed_size": embed_size, "hidden_size": width, "max_source_length": max_len,
              "max_target_length": max_len, "seed": seed, **spec}
    return Seq2Seq(**kwargs), kwargs


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def match_width(build: Callable[[int], torch.nn.Module], target: int, *, low: int = 4,
                high: int = 512, step: int = 2) -> int:
    """The width (a multiple of ``step``) whose model has the parameter count closest to
    ``target``; counts grow with the width, so a bisection finds it."""
    lo, hi = low // step, high // step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_parameters(build(mid * step)) < target:
            lo = mid
        else:
            hi = mid
    return min((lo * step, hi * step), key=lambda w: abs(count_parameters(build(w)) - target))


def trainer_callbacks() -> list[Callable[[Any, str], None]]:
    """Extra ``Trainer`` callbacks for every model trained here (none; tests stop runs with
    one)."""
    return []


def fit_model(ctx: RunContext, job: str, model: torch.nn.Module,
              data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
              cfg: TrainingOptions, seed: int) -> list[dict[str, Any]]:
    """Train ``model`` (a ``Seq2Seq`` or ``PointerNetwork``) on ``data = (src, src_lengths,
    tgt, tgt_lengths)`` with :class:`rnnlab.train.Trainer`: ``cfg.epochs`` epochs of Adam
    (Kingma & Ba 2015) with norm clipping, minibatches shuffled by a generator seeded with
    ``seed``, checkpoints in ``ctx.job_dir(job)``. A resumed run (``ctx.resume_dir``) continues
    from the job's checkpoint. With ``cfg.patience`` the last 10 % of the (already shuffled)
    examples are held out for early stopping and the best epoch's weights restored; with
    ``cfg.average_last = K > 1`` the weights become the mean of the last ``K`` epoch-end
    snapshots, all of them with fewer epochs (:func:`rnnlab.seq2seq.average_checkpoints`, as
    Vaswani et al. 2017 average their last checkpoints). Returns the trainer's epoch rows; the
    model is left in eval mode."""
    from rnnlab._files import atomic_save
    from rnnlab.learning import BPTT
    from rnnlab.seq2seq import TrainerAdapter, average_checkpoints
    from rnnlab.train import Trainer

    adapter = TrainerAdapter(model)
    x, y, mask = adapter.pack(*data)
    train, val = (x, y, mask), None
    if cfg.patience > 0:
        n_val = max(1, x.shape[0] // 10)
        if n_val >= x.shape[0]:
            raise ValueError("early stopping needs at least 2 training examples")
        train = (x[:-n_val], y[:-n_val], mask[:-n_val])
        val = (x[-n_val:], y[-n_val:], mask[-n_val:])
    folder = ctx.job_dir(job)
    snapshots = folder / "snapshots"
    keep = min(cfg.average_last, cfg.epochs) if cfg.average_last > 1 else 0

    def snapshot(trainer: Any, event: str) -> None:
        if keep and event == "epoch":
            epoch = trainer.position.epoch
            snapshots.mkdir(exist_ok=True)
            atomic_save(model.state_dict(), snapshots / f"epoch_{epoch:04d}.pt")
            stale = snapshots / f"epoch_{epoch - keep:04d}.pt"
            stale.unlink(missing_ok=True)

    opt = torch.optim.Adam(adapter.parameters(), lr=cfg.lr)
    # reduction "mean": the reported losses are per target token (the gradient is the same)
    trainer = Trainer(adapter, opt, BPTT(adapter, reduction="mean"), loss=adapter.loss,
                      clip=cfg.clip,
                      batch_size=cfg.batch_size, seed=seed,
                      patience=cfg.patience or None, restore_best=cfg.patience > 0,
                      run_dir=folder, checkpoint_every=cfg.checkpoint_every, progress=False,
                      callbacks=[snapshot, *trainer_callbacks()])
    if ctx.resume_dir is not None and (folder / "checkpoint.pt").is_file():
        trainer.resume()
    rows = trainer.fit(train, epochs=cfg.epochs, val=val)
    if keep:
        files = sorted(snapshots.glob("epoch_*.pt"))[-keep:]
        model.load_state_dict(average_checkpoints(files))
    model.eval()
    return rows


def encode_pairs(pairs: Pairs, src_vocab: Vocabulary, tgt_vocab: Vocabulary
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(src, src_lengths, tgt, tgt_lengths)`` of a whole data set (targets end in eos)."""
    src, sl = pad_ids([src_vocab.encode(s, add_eos=False) for s in pairs.sources],
                      src_vocab.pad_id)
    tgt, tl = pad_ids([tgt_vocab.encode(t) for t in pairs.targets], tgt_vocab.pad_id)
    return src, sl, tgt, tl


@torch.no_grad()
def decode_pairs(model: torch.nn.Module, sources: Sequence[Sequence[str]],
                 src_vocab: Vocabulary, tgt_vocab: Vocabulary, *, batch_size: int = 256,
                 max_len: int | None = None, beam_size: int = 1, n_best: int = 1,
                 length_penalty: str = "none"
                 ) -> tuple[list[list[list[str]]], list[torch.Tensor | None]]:
    """Greedy (``beam_size=1``) or beam-search output for every source: ``n_best`` token lists
    each (one for greedy) and the best hypothesis's attention ``(L, S)`` or None."""
    from rnnlab.seq2seq import beam_search, greedy_decode

    model.eval()
    outs: list[list[list[str]]] = []
    attns: list[torch.Tensor | None] = []
    for k in range(0, len(sources), batch_size):
        chunk = list(sources[k:k + batch_size])
        src, lengths = pad_ids([src_vocab.encode(s, add_eos=False) for s in chunk],
                               src_vocab.pad_id)
        if beam_size == 1 and n_best == 1:
            d = greedy_decode(model, src, lengths, max_len=max_len)
            for i in range(len(chunk)):
                n = int(d.lengths[i])
                outs.append([tgt_vocab.decode(d.tokens[i, :n])])
                attns.append(None if d.attention is None else d.attention[i, :n, :len(chunk[i])])
        else:
            hyps = beam_search(model, src, lengths, beam_size=beam_size, max_len=max_len,
                               length_penalty=length_penalty, n_best=n_best)
            for i, hs in enumerate(hyps):
                outs.append([tgt_vocab.decode(h.tokens) for h in hs])
                a = hs[0].attention
                attns.append(None if a is None else a[:, :len(chunk[i])])
    return outs, attns


# -----------------------------------------------------------------------------------------------
def save_translator(folder: Path, model: torch.nn.Module, kwargs: dict[str, Any],
                    src_vocab: Vocabulary, tgt_vocab: Vocabulary, tokenizer: str,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a translator bundle (module docstring) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    src_vocab.save(folder / "src_vocab.json")
    tgt_vocab.save(folder / "tgt_vocab.json")
    meta = {"format": BUNDLE_FORMAT, "kwargs": kwargs, "tokenizer": tokenizer,
            "src_vocab": src_vocab.digest(), "tgt_vocab": tgt_vocab.digest(), **(extra or {})}
    (folder / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def load_translator(folder: str | Path) -> tuple[torch.nn.Module, Vocabulary, Vocabulary, Any,
                                                  dict[str, Any]]:
    """``(model, src_vocab, tgt_vocab, tokenizer, meta)`` from a bundle; refuses a bundle whose
    vocabularies are not the ones the model was trained with."""
    from rnnlab.seq2seq import Seq2Seq

    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder} holds no translator (no model.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{meta_path} is not a translator bundle ({BUNDLE_FORMAT})")
    src_vocab = Vocabulary.load(folder / "src_vocab.json")
    tgt_vocab = Vocabulary.load(folder / "tgt_vocab.json")
    if (src_vocab.digest(), tgt_vocab.digest()) != (meta["src_vocab"], meta["tgt_vocab"]):
        raise ValueError(f"the vocabularies in {folder} differ from the ones the model was "
                         "trained with (digest mismatch)")
    model = Seq2Seq(**meta["kwargs"])
    if (len(src_vocab), len(tgt_vocab)) != (model.src_vocab_size, model.tgt_vocab_size):
        raise ValueError(f"the vocabularies in {folder} have {len(src_vocab)}/{len(tgt_vocab)} "
                         f"entries, the model {model.src_vocab_size}/{model.tgt_vocab_size}")
    try:
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    except RuntimeError as exc:  # torch lists every mismatching tensor
        raise ValueError(f"{folder / 'model.pt'} is not the model model.json describes (another "
                         f"vocabulary or size): {exc}") from None
    model.eval()
    return model, src_vocab, tgt_vocab, get_tokenizer(meta["tokenizer"]), meta


def find_translator(run_dir: str | Path, name: str | None = None) -> Path:
    """The bundle folder of a run: ``run_dir`` itself when it is one, else
    ``run_dir/models/<name>`` (``name`` may be left out when the run saved one model)."""
    run_dir = Path(run_dir)
    if (run_dir / "model.json").is_file() and name is None:
        return run_dir
    models = run_dir / "models"
    found = sorted(p.name for p in models.iterdir() if (p / "model.json").is_file()) \
        if models.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{run_dir} holds no trained model (no model.json, no models/): "
                                "give the folder of a `rnnlab run seq2seq` run")
    if name is None:
        if len(found) > 1:
            raise ValueError(f"{run_dir} holds {len(found)} models; choose one with --name: "
                             f"{', '.join(found)}")
        name = found[0]
    if name not in found:
        raise ValueError(f"no model {name!r} in {models}; choose from {', '.join(found)}")
    return models / name


def translate(folder: str | Path, texts: Sequence[str], *, beam_size: int = 5, n_best: int = 1,
              length_penalty: str = "average") -> list[list[str]]:
    """``n_best`` outputs (best first) for every text, by the translator bundle in ``folder``
    (beam search; ``beam_size=1, n_best=1`` is greedy). Characters or words the model never saw
    map to its ``<unk>``; an empty text is an error."""
    model, src_vocab, tgt_vocab, tok, _ = load_translator(folder)
    if n_best > beam_size:
        raise ValueError(f"n_best ({n_best}) cannot exceed the beam width ({beam_size})")
    sources = []
    for i, t in enumerate(texts):
        s = tok.tokenize(t)
        if not s:
            raise ValueError(f"input {i + 1} is empty")
        if len(s) > model.max_source_length:
            raise ValueError(f"input {i + 1} has {len(s)} tokens, beyond the model's "
                             f"max_source_length={model.max_source_length}")
        sources.append(s)
    outs, _ = decode_pairs(model, sources, src_vocab, tgt_vocab, beam_size=beam_size,
                           n_best=n_best, length_penalty=length_penalty)
    return [[tok.detokenize(o) for o in hyps] for hyps in outs]
