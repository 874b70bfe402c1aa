"""Using a captioner: checkpoints (save/load/find), images from files, caption_images, the
attention overlay and ``rnnlab caption`` (issue 15, items 5 and 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from rnnlab.captioning import (
    ShowAndTell,
    ShowAttendTell,
    attention_overlay_png,
    caption_images,
    checkpoint_name,
    find_captioner,
    load_captioner,
    load_image,
    save_captioner,
)
from rnnlab.cli import app
from rnnlab.seq2seq import greedy_decode
from rnnlab.tasks.seq2seq import Vocabulary

runner = CliRunner()
CAPTIONS = [["a", "red", "circle"], ["the", "blue", "square", "above", "a", "red", "circle"],
            ["a", "green", "triangle"]]
SMALL = {"image_size": 16, "grid": 4, "channels": 3, "feature_size": 6, "embed_size": 8,
         "hidden_size": 8, "max_caption_length": 6}


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.build(CAPTIONS)


def make(cls, vocab, **kw):
    return cls(len(vocab), pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
               **{**SMALL, **kw}, seed=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, vocab):
    folder = tmp_path_factory.mktemp("run")
    save_captioner(folder, make(ShowAttendTell, vocab), vocab, {"epochs": 1})
    save_captioner(folder, make(ShowAndTell, vocab), vocab)
    return folder


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB").save(path)
    return path


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("cls", [ShowAndTell, ShowAttendTell])
def test_round_trip_gives_the_same_model(tmp_path, vocab, cls):
    model = make(cls, vocab, dtype=torch.float64).eval()
    path = save_captioner(tmp_path, model, vocab, {"note": "x"})
    assert path.name == checkpoint_name(model.kind) == f"captioner_{model.kind}.pt"
    loaded, v, config = load_captioner(tmp_path)
    assert type(loaded) is cls and v == vocab and config == {"note": "x"}
    assert next(loaded.parameters()).dtype == torch.float64 and not loaded.training
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    tokens, lengths = torch.tensor([[4, 5, 2], [6, 2, 0]]), torch.tensor([3, 2])
    # the same float64 computation repeated on the same machine: bit equality holds
    assert torch.equal(model(x, tokens, lengths).logits, loaded(x, tokens, lengths).logits)
    assert not (tmp_path / f".{path.name}.tmp").exists()


def test_find_captioner_choices(run_dir, tmp_path, vocab):
    assert find_captioner(run_dir).name == "captioner_show_attend_tell.pt"
    assert find_captioner(run_dir, "show_and_tell").name == "captioner_show_and_tell.pt"
    assert find_captioner(run_dir, "captioner_show_and_tell").name == \
        "captioner_show_and_tell.pt"
    file = run_dir / "captioner_show_and_tell.pt"
    assert find_captioner(file) == file
    with pytest.raises(ValueError, match="choose from"):
        find_captioner(run_dir, "nope")
    with pytest.raises(FileNotFoundError, match="no captioner checkpoint"):
        find_captioner(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        find_captioner(tmp_path / "missing")
    (tmp_path / "models").mkdir()
    m = make(ShowAndTell, vocab)
    save_captioner(tmp_path / "models", m, vocab, tag="seed0")
    save_captioner(tmp_path / "models", m, vocab, tag="seed1")
    with pytest.raises(ValueError, match="holds 2 captioners"):
        find_captioner(tmp_path)
    assert find_captioner(tmp_path, "captioner_show_and_tell-seed1").name == \
        "captioner_show_and_tell-seed1.pt"


def test_load_refuses_other_vocabulary_kind_version_and_foreign_files(run_dir, tmp_path, vocab):
    other = Vocabulary.build([["a", "red", "circle", "square"]])
    with pytest.raises(ValueError, match="another vocabulary"):
        load_captioner(run_dir, vocab=other)
    with pytest.raises(ValueError, match="not a show_and_tell"):
        load_captioner(run_dir / "captioner_show_attend_tell.pt", kind="show_and_tell")
    blob = torch.load(run_dir / "captioner_show_and_tell.pt", weights_only=True)
    bad = tmp_path / "v99.pt"
    torch.save({**blob, "format_version": 99}, bad)
    with pytest.raises(ValueError, match="format version 99"):
        load_captioner(bad)
    shapes = tmp_path / "shapes.pt"
    state = dict(blob["state_dict"])
    state["readout.weight"] = torch.zeros(3, 3)
    torch.save({**blob, "state_dict": state}, shapes)
    with pytest.raises(ValueError, match=r"do not fit.*readout\.weight"):
        load_captioner(shapes)
    tampered = tmp_path / "vocab.pt"
    torch.save({**blob, "vocab": other.to_dict()}, tampered)
    with pytest.raises(ValueError, match="fingerprint"):
        load_captioner(tampered)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        load_captioner(text)
    with pytest.raises(ValueError, match="does not fit the model"):
        save_captioner(tmp_path, make(ShowAndTell, vocab), other)
    with pytest.raises(TypeError, match="JSON"):
        save_captioner(tmp_path, make(ShowAndTell, vocab), vocab, {"x": object()})


# --------------------------------------------------------------------------- images
def _save(tmp_path, name, array, mode=None):
    path = tmp_path / name
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_load_image_resizes_and_converts_modes(tmp_path):
    colour = np.zeros((20, 20, 3), dtype=np.uint8)
    colour[:] = (255, 0, 128)
    x = load_image(_save(tmp_path, "c.png", colour), 16, 3)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    # a flat colour stays that colour after resampling (Lanczos weights sum to one; 8-bit
    # rounding: within 1/255)
    assert torch.allclose(x, torch.tensor([1.0, 0.0, 128 / 255])[:, None, None], atol=1 / 255)
    grey = load_image(_save(tmp_path, "c2.png", colour), 16, 1)
    # ITU-R 601 luma (PIL's "L"): (299 R + 587 G + 114 B) / 1000
    assert grey.shape == (1, 16, 16)
    assert abs(float(grey.mean()) - (299 * 255 + 114 * 128) / 1000 / 255) < 1.5 / 255
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    rgba[:8, :, 3] = 255  # top half opaque green, bottom half transparent -> black
    y = load_image(_save(tmp_path, "a.png", rgba, "RGBA"), 16, 3)
    assert torch.equal(y[1, :8], torch.ones(8, 16)) and torch.equal(y[:, 8:],
                                                                      torch.zeros(3, 8, 16))
    lum = _save(tmp_path, "l.png", np.full((16, 16), 51, dtype=np.uint8), "L")
    assert torch.allclose(load_image(lum, 16, 3), torch.full((3, 16, 16), 0.2))
    pal = Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "p.png")
    assert torch.allclose(load_image(tmp_path / "p.png", 16, 3), x, atol=2 / 255)
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:] = 255
    w = load_image(_save(tmp_path, "w.png", wide), 30, 3)
    # padded to 30x30 with black, centred: rows 10..19 white, the rest black
    assert torch.equal(w[:, 10:20], torch.ones(3, 10, 30))
    assert torch.equal(w[:, :10], torch.zeros(3, 10, 30))
    deep = Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16))
    deep.save(tmp_path / "d.png")
    assert torch.allclose(load_image(tmp_path / "d.png", 16, 1), torch.ones(1, 16, 16))
    # 32-bit float grey (mode "F", e.g. a TIFF): values in [0, 1] keep their level (8-bit
    # rounding: within 1/255), values up to 255 are read as 8-bit levels
    Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32), "F").save(tmp_path / "f.tif")
    assert torch.allclose(load_image(tmp_path / "f.tif", 16, 1), torch.full((1, 16, 16), 0.5),
                          atol=1 / 255)
    Image.fromarray(np.full((16, 16), 51.0, dtype=np.float32), "F").save(tmp_path / "g.tif")
    assert torch.allclose(load_image(tmp_path / "g.tif", 16, 3), torch.full((3, 16, 16), 0.2))


def test_load_image_refuses_bad_files(tmp_path, image_file):
    with pytest.raises(FileNotFoundError, match="no image file"):
        load_image(tmp_path / "missing.png", 16, 3)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(empty, 16, 3)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ValueError, match="not an image file"):
        load_image(junk, 16, 3)
    cut = tmp_path / "cut.png"
    cut.write_bytes(image_file.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot read the image"):
        load_image(cut, 16, 3)
    with pytest.raises(ValueError, match="4-channel"):
        load_image(image_file, 16, 4)


# --------------------------------------------------------------------------- captions
def test_caption_images_matches_greedy_and_carries_attention(run_dir, vocab, image_file):
    model, v, _ = load_captioner(run_dir)
    x = load_image(image_file, 16, 3)
    greedy = greedy_decode(model, x[None], None)
    (best,) = caption_images(model, v, x, beam=1)[0]
    L = int(greedy.lengths[0])
    assert best.words == v.decode(greedy.tokens[0, :L].tolist(), strip=False)
    assert best.text == " ".join(best.words)
    assert abs(best.log_prob - float(greedy.log_prob[0])) < 1e-4  # float32 sums, <= 7 terms
    assert best.attention.shape == (len(best.words), 16)
    assert torch.allclose(best.attention.sum(-1), torch.ones(len(best.words)), atol=1e-5)
    three = caption_images(model, v, [x, x], beam=3, n_best=3)
    assert len(three) == 2 and len(three[0]) == 3
    assert [c.score for c in three[0]] == sorted((c.score for c in three[0]), reverse=True)
    with pytest.raises(ValueError, match="n_best"):
        caption_images(model, v, x, beam=2, n_best=3)
    with pytest.raises(ValueError, match="channels"):
        caption_images(model, v, torch.rand(4, 16, 16))
    with pytest.raises(ValueError, match="does not fit the model"):
        caption_images(model, Vocabulary.build([["a"]]), x)


def test_attention_overlay_png(tmp_path):
    image = torch.rand(3, 16, 16)
    att = torch.softmax(torch.randn(3, 16), dim=-1)
    path = attention_overlay_png(image, ["a", "red", "circle"], att, 4, tmp_path / "o.png",
                                 title="a red circle")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
    attention_overlay_png(image[:1], ["a"], att[:1].view(1, 4, 4), 4, tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"\(3, 16\)"):
        attention_overlay_png(image, ["a", "red", "circle"], att[:, :9], 4, tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        attention_overlay_png(image, [], att[:0], 4, tmp_path / "x.png")


# --------------------------------------------------------------------------- CLI
def test_cli_caption_prints_n_best_and_writes_overlay(run_dir, vocab, image_file, tmp_path):
    model, v, _ = load_captioner(run_dir)
    expected = caption_images(model, v, load_image(image_file, 16, 3), beam=3, n_best=2)[0]
    out = tmp_path / "overlay.png"
    res = runner.invoke(app, ["caption", str(image_file), "--model", str(run_dir), "--beam", "3",
                              "--n-best", "2", "--overlay", str(out)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if "\t" in line]
    assert lines == [f"{c.score:.4f}\t{c.text}" for c in expected]
    if expected[0].words:
        assert out.is_file()
    res = runner.invoke(app, ["caption", str(image_file), "--model",
                              str(run_dir / "captioner_show_and_tell.pt")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "RUN", "--beam", "2", "--n-best", "3"], "--n-best (3) cannot exceed --beam"),
    (["--model", "MISSING"], "no captioner at"),
    (["--model", "RUN", "--name", "show_and_tell", "--overlay", "OUT"], "needs an attention"),
    (["--model", "RUN", "--overlay", "NOFOLDER"], "no folder"),
    (["--model", "RUN", "--overlay", "TMP"], "is a folder"),
    (["--model", "OTHERVOCAB"], "not an rnnlab captioner"),
])
def test_cli_caption_bad_input(run_dir, image_file, tmp_path, args, message):
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something else"}, foreign)
    subst = {"RUN": str(run_dir), "MISSING": str(tmp_path / "nothing"),
             "OUT": str(tmp_path / "o.png"), "NOFOLDER": str(tmp_path / "no" / "o.png"),
             "OTHERVOCAB": str(foreign), "TMP": str(tmp_path)}
    res = runner.invoke(app, ["caption", str(image_file), *[subst.get(a, a) for a in args]])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_cli_caption_bad_image(run_dir, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"garbage" * 20)
    res = runner.invoke(app, ["caption", str(junk), "--model", str(run_dir)])
    assert res.exit_code == 2 and "not an image file" in res.output
    res = runner.invoke(app, ["caption", str(tmp_path / "none.png"), "--model", str(run_dir)])
    assert res.exit_code == 2 and "no image file" in res.output
