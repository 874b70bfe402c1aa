"""The ``captioning`` experiment at its quick size: the run's files, one table row recomputed
from the saved captions, resume after the first job, and the baselines on hand-made cases."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from rnnlab.experiments import captioning as cap
from rnnlab.experiments.registry import run_experiment
from rnnlab.tasks.captions import Scene, SceneObject, semantic_match, tokenize

QUICK = {"quick": "true"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return run_experiment("captioning", QUICK, out_dir=tmp_path_factory.mktemp("cap") / "run")


def _rows(result, model: str | None = None) -> list[dict]:
    return [r for r in result.rows if model is None or r["model"] == model]


def test_quick_run_writes_table_pictures_and_models(quick_run):
    result, run_dir = quick_run
    assert [(r["split"], r["model"]) for r in result.rows] == [
        (s, m) for s in cap.SPLITS for m in cap.ORDER]
    for r in result.rows:
        captioner = r["model"] != "region-alignment"
        assert math.isfinite(r["bleu1"]) == captioner
        assert math.isfinite(r["i2s@1"]) == (not captioner)
        assert math.isfinite(r["attn_correct_ref"]) == (r["model"] == "show-attend-tell")
        for key in ("bleu1", "bleu4", "semantic", "i2s@1", "s2i@10", "align_acc"):
            assert not math.isfinite(r[key]) or 0.0 <= r[key] <= 1.0
    assert (run_dir / "table.csv").is_file() and (run_dir / "metrics.csv").is_file()
    pngs = {p.name for p in run_dir.glob("*.png")}
    assert {"captioning_scores.png", "attention_iid_0.png", "attention_compositional_0.png",
            "alignment_iid_0.png", "alignment_compositional_0.png"} <= pngs
    for p in run_dir.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    models = {p.name for p in (run_dir / "models").iterdir()}
    assert {"captioner_show_and_tell.pt", "captioner_show_attend_tell.pt",
            "region_alignment_seed0.pt"} <= models
    done = result.figures["done_when"]
    assert set(done) == set(cap.SPLITS)


def _bleu1(candidates: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-1 written out (Papineni et al. 2002): clipped unigram precision times the
    brevity penalty with the closest reference length (the shorter on a tie)."""
    clipped = total = c_len = r_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        c = tokenize(cand)
        rs = [tokenize(r) for r in refs]
        counts = Counter(c)
        best: Counter = Counter()
        for r in rs:
            best |= Counter(r)
        clipped += sum(min(n, best[w]) for w, n in counts.items())
        total += len(c)
        c_len += len(c)
        r_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]
    if clipped == 0:
        return 0.0
    bp = 1.0 if c_len > r_len else math.exp(1 - r_len / c_len)
    return bp * clipped / total


@pytest.mark.parametrize("model", ["show-attend-tell", "nearest-neighbour", "most-frequent"])
def test_a_row_recomputed_from_the_saved_captions(quick_run, model):
    result, run_dir = quick_run
    cfg = cap.effective_config(cap.CaptioningConfig(quick=True))
    # the scenes regenerated from their options, not taken from the experiment's cache
    from rnnlab.tasks.captions import caption_splits

    splits = caption_splits(cfg.n_train, cfg.n_val, cfg.n_test, cfg.n_compositional,
                            kind=cfg.kind, size=cfg.image_size, seed=0)
    for split, data in (("iid", splits.test), ("compositional", splits.compositional)):
        texts = (run_dir / "captions" / f"{split}_{model}_seed0.txt").read_text().split("\n")[:-1]
        assert len(texts) == len(data.scenes)
        row = next(r for r in result.rows if r["split"] == split and r["model"] == model)
        semantic = sum(semantic_match(t, s) for t, s in zip(texts, data.scenes, strict=True))
        # a mean of n zeros and ones: exact up to the division's rounding
        assert row["semantic"] == pytest.approx(semantic / len(texts), abs=1e-12)
        bleu1 = _bleu1(texts, [list(s.captions) for s in data.scenes])
        # the same sums in another order: rounding of a few operations on numbers <= 1
        assert row["bleu1"] == pytest.approx(bleu1, abs=1e-12)
        if model == "most-frequent":
            assert len(set(texts)) == 1


def test_nearest_neighbour_captions_of_the_run(quick_run):
    """The baseline's captions are those of the training image closest under the saved
    show-and-tell encoder (recomputed with torch.cdist)."""
    from rnnlab.captioning import load_captioner

    _, run_dir = quick_run
    model, _, _ = load_captioner(run_dir / "models" / "captioner_show_and_tell.pt")
    cfg = cap.effective_config(cap.CaptioningConfig(quick=True))
    splits = cap.splits_of(cfg, 0)
    with torch.no_grad():
        f_train = model.encoder(splits.train.images).mean(1).double()
        f_test = model.encoder(splits.test.images).mean(1).double()
    d = torch.cdist(f_test, f_train)
    texts = (run_dir / "captions" / "iid_nearest-neighbour_seed0.txt").read_text().split("\n")
    for i, row in enumerate(d):
        # every training image within rounding of the minimum distance is an acceptable answer
        near = (row <= row.min() * (1 + 1e-9) + 1e-12).nonzero().flatten().tolist()
        assert texts[i] in {splits.train.scenes[j].captions[0] for j in near}


def test_resume_after_the_first_job_gives_the_same_table(quick_run, tmp_path, monkeypatch):
    """Stop at the second job, resume: the first job is not run again, and the rows equal the
    uninterrupted run's (each job is independent of the others, so a run of two of the models
    reproduces their rows of the full run)."""
    whole, _ = quick_run
    options = {**QUICK, "models": "show-and-tell,region-alignment"}
    real = cap.run_job
    calls: list[str] = []

    def stop_at_second(cfg, name, *args):
        calls.append(name)
        if name == "region-alignment":
            raise KeyboardInterrupt("stopped")
        return real(cfg, name, *args)

    monkeypatch.setattr(cap, "run_job", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("captioning", options, out_dir=tmp_path / "run")
    monkeypatch.setattr(cap, "run_job", lambda cfg, name, *a: calls.append(name) or real(
        cfg, name, *a))
    result, _ = run_experiment("captioning", options, out_dir=tmp_path / "run", resume=True)
    assert calls == ["show-and-tell", "region-alignment", "region-alignment"]
    kept = [r for r in whole.rows if r["model"] != "show-attend-tell"]
    assert [(r["split"], r["model"]) for r in result.rows] == [
        (r["split"], r["model"]) for r in kept]
    for a, b in zip(result.rows, kept, strict=True):
        for key, value in a.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(b[key]), key
            elif isinstance(value, float):
                # same machine, thread count and operations: equal up to summation order
                assert value == pytest.approx(b[key], rel=1e-9, abs=1e-12), (a["model"], key)
            else:
                assert value == b[key]


# ------------------------------------------------------------------------------------------
def _scene(captions: tuple[str, ...]) -> Scene:
    obj = SceneObject("circle", "red", "small", (0, 0, 10, 10))
    return Scene("shapes", 64, (obj,), frozenset(), captions)


def test_most_frequent_caption_by_hand():
    scenes = [_scene(("a red circle", "the red circle")), _scene(("a red circle", "b")),
              _scene(("the red circle", "a blue square"))]
    # "a red circle" and "the red circle" twice each: the alphabetically first wins
    assert cap.most_frequent_caption(scenes) == "a red circle"
    assert cap.most_frequent_caption([_scene(("z", "y", "z"))]) == "z"
    with pytest.raises(ValueError, match="no captions"):
        cap.most_frequent_caption([_scene(())])


def test_nearest_neighbour_by_hand():
    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    test = torch.tensor([[0.9, 0.1], [0.0, 1.5], [0.5, 0.0], [-3.0, 0.0]])
    texts, idx = cap.nearest_neighbour_captions(train, ["a", "b", "c"], test)
    # [0.5, 0] is 0.5 from both [0, 0] and [1, 0]: the lower index
    assert idx.tolist() == [1, 2, 0, 0] and texts == ["b", "c", "a", "a"]
    with pytest.raises(ValueError, match="features"):
        cap.nearest_neighbour_captions(train, ["a", "b", "c"], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="captions"):
        cap.nearest_neighbour_captions(train, ["a"], test)


def test_uniform_attention_scores_the_uniform_level():
    scene = Scene("shapes", 64, (SceneObject("circle", "red", "large", (8, 8, 28, 28)),
                                 SceneObject("square", "blue", "small", (40, 40, 50, 50))),
                  frozenset(), ())
    text = "a red circle and the blue square"
    uniform = torch.full((len(tokenize(text)), 16), 1 / 16)
    hit, level, scored = cap.generated_attention_correctness([text, "a green disk"],
                                                             [uniform, uniform[:3]],
                                                             [scene, scene], size=64, grid=4)
    assert scored == 0.5  # the second caption is false: nothing to score
    assert hit == pytest.approx(level, abs=1e-12)
    # all the mass on the cell (0, 0)..: the circle's box covers cells (0..1, 0..1) partly
    peaked = torch.zeros(len(tokenize(text)), 16)
    peaked[:, 5] = 1.0  # cell (1, 1) = pixels 16..32, inside the circle's 8..28 for 12/16
    hit, _, _ = cap.generated_attention_correctness([text], [peaked], [scene], size=64, grid=4)
    # words 0-2 on the circle score (12/16)^2, words 4-6 on the square score 0
    assert hit == pytest.approx((3 * (12 / 16) ** 2 + 0.0) / 6, abs=1e-12)


def test_bad_options():
    with pytest.raises(ValueError, match="multiple of grid"):
        run_experiment("captioning", {"image-size": "60", "grid": "8"}, out_dir=None)
    with pytest.raises(ValueError, match="kind"):
        run_experiment("captioning", {"kind": "faces"}, out_dir=None)


def test_quick_leaves_set_options_alone():
    cfg = cap.effective_config(cap.CaptioningConfig(quick=True, epochs=7))
    assert cfg.epochs == 7 and cfg.n_train == cap.QUICK["n_train"]
    assert cap.effective_config(cap.CaptioningConfig()) == cap.CaptioningConfig()


def test_caption_cli_on_the_run(quick_run, tmp_path):
    from typer.testing import CliRunner

    from rnnlab.cli import app

    _, run_dir = quick_run
    res = CliRunner().invoke(app, ["caption", "--help"])
    if res.exit_code != 0:
        pytest.skip("the `rnnlab caption` command is not there")
    from PIL import Image

    cfg = cap.effective_config(cap.CaptioningConfig(quick=True))
    image = cap.splits_of(cfg, 0).test.images[0]
    path = tmp_path / "scene.png"
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    res = CliRunner().invoke(app, ["caption", str(path), "--model", str(run_dir), "--overlay",
                                   str(tmp_path / "overlay.png")])
    assert res.exit_code == 0, res.output
    assert res.output.strip()
    assert Path(tmp_path / "overlay.png").is_file()


def test_attention_options_reach_the_model():
    """gate and doubly_stochastic go to ShowAttendTell (defaults: no gate, lambda 0; the quick
    size keeps the gate and lambda 1, see QUICK)."""
    from rnnlab.tasks.seq2seq import Vocabulary

    vocab = Vocabulary.build([["a", "red", "ball"]])
    small = {"grid": 4, "channels": 2, "feature_size": 4, "embed_size": 4, "hidden_size": 4,
             "attention_size": 4}
    m = cap.build_model(cap.CaptioningConfig(**small), "show-attend-tell", vocab, 0)
    assert m.beta is None and m.doubly_stochastic == 0.0
    m = cap.build_model(cap.CaptioningConfig(gate=True, doubly_stochastic=0.5, **small),
                        "show-attend-tell", vocab, 0)
    assert m.beta is not None and m.doubly_stochastic == 0.5
    q = cap.effective_config(cap.CaptioningConfig(quick=True))
    assert q.gate and q.doubly_stochastic == 1.0 and q.lr == 0.01
