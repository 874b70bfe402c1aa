"""Using a trained captioner: checkpoints, images from files, captions with their attention,
and attention overlays.

A checkpoint (``save_captioner``) is one file written atomically (``rnnlab._files``): the model
kind and constructor arguments, the weights, the vocabulary's tokens and SHA-256 fingerprint and
a free ``config`` dict (the experiment's options). ``load_captioner`` checks the format, the
version, the kind, the vocabulary and every weight's name and shape before it builds anything,
so a wrong file gives one clear error and never a half-loaded model. In a run folder the file
is ``captioner_<kind>.pt`` (optionally ``captioner_<kind>-<tag>.pt``), in the folder itself or
in its ``models/`` subfolder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rnnlab._files import atomic_save, load_versioned
from rnnlab._validation import check_choice, check_int, check_positive_int
from rnnlab.captioning.alignment import RegionAlignment
from rnnlab.captioning.models import ShowAndTell, ShowAttendTell, _Captioner
from rnnlab.seq2seq import beam_search
from rnnlab.seq2seq.decoding import PENALTIES
from rnnlab.tasks.seq2seq import Vocabulary

__all__ = ["KINDS", "MODEL_KINDS", "Caption", "attention_overlay_png", "caption_images",
           "checkpoint_name", "find_captioner", "load_captioner", "load_image", "save_captioner"]

KINDS: dict[str, type[_Captioner]] = {"show_and_tell": ShowAndTell,
                                      "show_attend_tell": ShowAttendTell}
# every model the checkpoint format holds: the captioners, and the alignment model (which scores
# and aligns but does not caption, so `find_captioner` and `caption_images` never pick it)
MODEL_KINDS: dict[str, type[torch.nn.Module]] = {**KINDS, "region_alignment": RegionAlignment}
FORMAT = "rnnlab.captioner"
FORMAT_VERSION = 1
_WHAT = "rnnlab captioner checkpoint"


def checkpoint_name(kind: str, tag: str | None = None) -> str:
    """``captioner_<kind>.pt`` or ``captioner_<kind>-<tag>.pt``: the file a run folder holds."""
    check_choice("kind", kind, tuple(MODEL_KINDS))
    return f"captioner_{kind}" + (f"-{tag}" if tag else "") + ".pt"


def _check_vocab(model: _Captioner | RegionAlignment, vocab: Vocabulary) -> None:
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a rnnlab.tasks.seq2seq.Vocabulary, got "
                        f"{type(vocab).__name__}")
    ids = (len(vocab), vocab.pad_id, vocab.bos_id, vocab.eos_id)
    # the alignment model reads words only: no start or end token of its own
    want = (model.vocab_size, model.pad_id, getattr(model, "bos_id", vocab.bos_id),
            getattr(model, "eos_id", vocab.eos_id))
    if ids != want:
        raise ValueError(f"the vocabulary (size, pad, bos, eos ids) {ids} does not fit the model "
                         f"{want}: it was built with another vocabulary")


def save_captioner(path: str | Path, model: _Captioner | RegionAlignment, vocab: Vocabulary,
                   config: dict[str, Any] | None = None, *, tag: str | None = None) -> Path:
    """Write ``model`` with its ``vocab`` (and a JSON-able ``config``) atomically to ``path``: a
    file, or a folder (then ``path / checkpoint_name(model.kind, tag)``). Returns the file."""
    if not isinstance(model, (_Captioner, RegionAlignment)) or model.kind not in MODEL_KINDS:
        raise TypeError(f"model must be a ShowAndTell, ShowAttendTell or RegionAlignment, got "
                        f"{type(model).__name__}")
    _check_vocab(model, vocab)
    config = {} if config is None else config
    try:
        config = json.loads(json.dumps(config))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"config must be JSON-serialisable ({exc})") from None
    path = Path(path)
    if path.is_dir():
        path = path / checkpoint_name(model.kind, tag)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no folder {path.parent} to save the captioner in")
    from rnnlab import __version__

    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "rnnlab_version": __version__,
            "kind": model.kind, "model_config": model.config(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "vocab": vocab.to_dict(), "vocab_digest": vocab.digest(), "config": config}
    return atomic_save(blob, path)


def find_captioner(path: str | Path, name: str | None = None) -> Path:
    """The checkpoint file of ``path``: the file itself, or the ``captioner_*.pt`` of a run
    folder (or of its ``models/``). With several, ``name`` (a file stem such as
    ``captioner_show_and_tell``, or a kind) chooses; without it the one ``show_attend_tell``
    checkpoint is taken (it has the attention to overlay), else the choices are listed."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no captioner at {path} (neither a file nor a folder)")
    found = sorted({p for folder in (path, path / "models") if folder.is_dir()
                    for p in folder.glob("captioner_*.pt") if p.is_file()})
    if not found:
        raise FileNotFoundError(f"{path} holds no captioner checkpoint (captioner_*.pt, in the "
                                "folder or its models/): give the run folder of the captioning "
                                "experiment or a checkpoint file")
    stems = [p.stem for p in found]
    if name is not None:
        hits = [p for p in found if p.stem in (name, f"captioner_{name}")]
        if len(hits) != 1:
            raise ValueError(f"no captioner {name!r} in {path}; choose from {', '.join(stems)}")
        return hits[0]
    if len(found) == 1:
        return found[0]
    attend = [p for p in found if p.stem == "captioner_show_attend_tell"]
    if len(attend) == 1:
        return attend[0]
    raise ValueError(f"{path} holds {len(found)} captioners; choose one with a name: "
                     f"{', '.join(stems)}")


def load_captioner(path: str | Path, *, name: str | None = None,
                   vocab: Vocabulary | None = None, kind: str | None = None,
                   device: torch.device | str | None = None
                   ) -> tuple[_Captioner, Vocabulary, dict[str, Any]]:
    """``(model, vocab, config)`` from a checkpoint file or run folder (:func:`find_captioner`),
    the model in eval mode on ``device``. Given ``vocab`` (or ``kind``), a checkpoint trained
    with another vocabulary (another kind) is refused; a foreign, damaged or other-version file
    too, each with a ``ValueError`` naming the problem, before any model is built."""
    file = find_captioner(path, name)
    blob = load_versioned(file, name=file.name, format_name=FORMAT, version=FORMAT_VERSION,
                          what=_WHAT)
    found = blob.get("kind")
    if found not in MODEL_KINDS:
        raise ValueError(f"{file} holds a captioner of unknown kind {found!r}; this rnnlab "
                         f"reads {', '.join(MODEL_KINDS)}")
    if kind is not None and found != check_choice("kind", kind, tuple(MODEL_KINDS)):
        raise ValueError(f"{file} holds a {found} captioner, not a {kind}")
    try:
        stored = Vocabulary.from_dict(blob["vocab"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{file} has no readable vocabulary ({exc})") from None
    if stored.digest() != blob.get("vocab_digest"):
        raise ValueError(f"{file}: the stored vocabulary does not match its fingerprint (the "
                         "file is damaged)")
    if vocab is not None and vocab.digest() != stored.digest():
        raise ValueError(f"{file} was trained with another vocabulary (fingerprint "
                         f"{stored.digest()[:12]}, given {vocab.digest()[:12]}): its token ids "
                         "would mean other words")
    cfg, state = blob.get("model_config"), blob.get("state_dict")
    if not isinstance(cfg, dict) or not isinstance(state, dict) or not state:
        raise ValueError(f"{file} has no model configuration or weights")
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    try:  # a fresh model; the checkpoint's weights go in only once all of them fit
        model = MODEL_KINDS[found](**cfg, dtype=floats[0] if floats else None)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file} has an unusable model configuration ({exc})") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        shapes = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        raise ValueError(f"{file}: the weights do not fit a {found} of its configuration "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}, other shapes "
                         f"{shapes[:3]})")
    model.load_state_dict(state)
    if len(stored) != model.vocab_size:
        raise ValueError(f"{file}: vocabulary of {len(stored)} tokens for a model of "
                         f"{model.vocab_size} outputs")
    return model.to(device).eval(), stored, dict(blob.get("config") or {})


# ----------------------------------------------------------------------------------- images
def load_image(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """The image file ``path`` as a ``(channels, size, size)`` float32 tensor in ``[0, 1]``.

    Modes are converted (palette, grey, grey+alpha, RGBA, CMYK, 16-bit ... to RGB for
    ``channels=3``, to grey ``L`` for ``channels=1``; transparency is composited over black, the
    scenes' background); a non-square image is padded with black to a square (centred, so no
    object is cut or stretched) and then resized to ``size`` (Lanczos). Unreadable, empty or
    other files, and channel counts other than 1 or 3, are refused with a ``ValueError`` (a
    missing file: ``FileNotFoundError``)."""
    from PIL import Image, UnidentifiedImageError

    size = check_positive_int("size", size)
    channels = check_int("channels", channels)
    if channels not in (1, 3):
        raise ValueError(f"the model takes {channels}-channel images; image files are "
                         "converted to 1 (grey) or 3 (RGB) channels only")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not an image")
    try:
        with Image.open(path) as im:
            im.load()
            img = im.copy()
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read the image {path} ({exc})") from None
    if img.width == 0 or img.height == 0:
        raise ValueError(f"{path} is an empty image ({img.width}x{img.height} pixels)")
    try:
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, rgba)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
            import numpy as np

            a = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
            img = Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8), "L")
        if img.mode == "F":  # 32-bit float grey: [0, 1] (or 0..255 when any value exceeds 1)
            import numpy as np

            a = np.asarray(img, dtype=np.float64)
            if not np.isfinite(a).all():
                raise ValueError("the image holds NaN or inf pixel values")
            scale = 255.0 if a.max() <= 1.0 else 1.0
            img = Image.fromarray(np.clip(a * scale, 0, 255).round().astype(np.uint8), "L")
        img = img.convert("RGB" if channels == 3 else "L")
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot convert the image {path} (mode {img.mode}) to "
                         f"{'RGB' if channels == 3 else 'grey'} ({exc})") from None
    if img.width != img.height:
        side = max(img.width, img.height)
        square = Image.new(img.mode, (side, side), 0)
        square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = square
    if img.width != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    import numpy as np

    a = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 255.0
    return a[None] if channels == 1 else a.permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------- captions
class Caption(NamedTuple):
    """One generated caption: ``words`` (no ``eos``), ``text`` (the words joined by spaces),
    ``score`` (beam search's, after the length penalty), ``log_prob`` (``eos`` included),
    ``ended`` (whether it ended with ``eos``) and ``attention`` ``(len(words), R)`` while
    emitting each word (``ShowAttendTell``; None for ``ShowAndTell``)."""

    words: list[str]
    text: str
    score: float
    log_prob: float
    ended: bool
    attention: torch.Tensor | None


def _as_batch(model: _Captioner, images: object) -> torch.Tensor:
    if isinstance(images, list | tuple):
        if not images:
            raise ValueError("images is an empty list")
        for i, x in enumerate(images):
            if not isinstance(x, torch.Tensor) or x.dim() != 3:
                raise ValueError(f"images[{i}] must be a (channels, height, width) tensor")
        images = torch.stack(list(images))
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images[None]
    return model.encoder.check_images(images)


@torch.no_grad()
def caption_images(model: _Captioner, vocab: Vocabulary, images: torch.Tensor | Sequence, *,
                   beam: int = 3, n_best: int = 1, max_len: int | None = None,
                   length_penalty: str = "none", alpha: float = 0.6) -> list[list[Caption]]:
    """``n_best`` captions (best first) of every image by beam search of width ``beam``
    (``rnnlab.seq2seq.beam_search``; ``beam=1`` is greedy decoding). ``images``: ``(B, C, H, W)``,
    one ``(C, H, W)`` image or a list of them, floats in ``[0, 1]``."""
    if not isinstance(model, _Captioner):
        raise TypeError(f"model must be a ShowAndTell or ShowAttendTell, got "
                        f"{type(model).__name__}")
    _check_vocab(model, vocab)
    beam = check_positive_int("beam", beam)
    n_best = check_positive_int("n_best", n_best)
    if n_best > beam:
        raise ValueError(f"n_best ({n_best}) cannot exceed the beam width ({beam})")
    check_choice("length_penalty", length_penalty, PENALTIES)
    x = _as_batch(model, images)
    p = next(model.parameters())
    x = x.to(p.device, p.dtype)
    was_training = model.training
    model.eval()
    try:
        hyps = beam_search(model, x, None, beam_size=beam, n_best=n_best, max_len=max_len,
                           length_penalty=length_penalty, alpha=alpha)
    finally:
        model.train(was_training)
    out = []
    for per_image in hyps:
        caps = []
        for h in per_image:
            words = vocab.decode(h.tokens.tolist(), strip=False)
            att = None if h.attention is None else h.attention[:len(words)].float().cpu()
            caps.append(Caption(words, " ".join(words), float(h.score), float(h.log_prob),
                                bool(h.ended), att))
        out.append(caps)
    return out


# ----------------------------------------------------------------------------------- overlay
def attention_overlay_png(image: torch.Tensor, words: Sequence[str], attention: torch.Tensor,
                          grid: int, path: str | Path, *, columns: int = 5,
                          title: str | None = None) -> Path:
    """A PNG with the image and one panel per word: the word's attention over the ``grid x grid``
    regions drawn over the image (each region's weight, relative to the word's largest, lights its
    cell, as ``box_mask`` partitions the image; dark and dimmed = little attention). ``image``:
    ``(C, H, W)`` in ``[0, 1]``; ``attention``: ``(len(words), grid^2)`` or
    ``(len(words), grid, grid)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = check_positive_int("grid", grid)
    columns = check_positive_int("columns", columns)
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError("image must be a (1 or 3, height, width) tensor")
    words = [str(w) for w in words]
    if not words:
        raise ValueError("no words to draw: the caption is empty")
    if not isinstance(attention, torch.Tensor):
        raise TypeError(f"attention must be a tensor, got {type(attention).__name__}")
    a = attention.detach().to("cpu", torch.float64)
    if a.dim() == 3:
        a = a.flatten(1)
    if a.dim() != 2 or a.shape != (len(words), grid * grid):
        raise ValueError(f"attention must be ({len(words)}, {grid * grid}) for {len(words)} "
                         f"words over a {grid}x{grid} grid, got {tuple(attention.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("attention holds NaN or inf")
    img = image.detach().to("cpu", torch.float64).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    H, W = img.shape[1], img.shape[2]
    panels = len(words) + 1
    cols = min(columns, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(2.2 * cols, 2.5 * rows))
    FigureCanvasAgg(fig)
    for k in range(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        if k == 0:
            shown, label = img, "image"
        else:  # each cell's weight over its pixels (nearest: the cells are the regions)
            m = a[k - 1].view(1, 1, grid, grid)
            m = torch.nn.functional.interpolate(m, size=(H, W), mode="nearest")[0]
            m = m / max(float(m.max()), 1e-12)
            # the image dimmed outside the attention, the attended cells lit (grey on the
            # black background of the scenes)
            shown, label = (img * (0.3 + 0.7 * m) + 0.5 * m).clamp(0, 1), words[k - 1]
        ax.imshow(shown.permute(1, 2, 0).numpy(), vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, format="png")  # PNG whatever the suffix says
    return path
