"""RegionAlignment (Karpathy & Fei-Fei 2017): the score and the ranking loss against loops,
gradients against finite differences, padding invariance, Viterbi against brute force, the
alignment accuracy by hand, retrieval of a tiny trained model above chance, device/dtype moves,
save/rebuild and bad input."""

import itertools
import struct

import pytest
import torch

from rnnlab.captioning.alignment import (
    RegionAlignment,
    alignment_accuracy,
    alignment_png,
    encode_sentences,
    ranking_loss,
    score_matrix,
    viterbi_align,
)
from rnnlab.tasks.captions import SceneObject, box_mask, generate_scenes, tokenize
from rnnlab.tasks.captions.scenes import Scene, scene_relations
from rnnlab.tasks.seq2seq import Vocabulary

# float64 sums of at most a few hundred products of O(1) numbers: rounding ~1e-14, so 1e-12
# separates a real difference from reordering the additions (einsum vs the Python loop).
TOL = 1e-12
ENC = {"channels": 4, "feature_size": 8, "image_size": 32, "grid": 4}


def _model(vocab_size=12, **kw):
    kw = {**ENC, **kw}
    return RegionAlignment(vocab_size, embed_size=6, hidden_size=5, seed=0,
                           dtype=torch.float64, **kw)


def _batch(n=4, L=6, vocab_size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=g, dtype=torch.float64)
    tokens = torch.randint(1, vocab_size, (n, L), generator=g)
    lengths = torch.tensor([L, 1, 3, L - 1][:n])
    for b, n_b in enumerate(lengths.tolist()):
        tokens[b, n_b:] = 0
    return images, tokens, lengths


# -----------------------------------------------------------------------------------------------
# Score and loss against loops
@pytest.mark.parametrize("kind", ["max", "sum_pos"])
def test_score_matrix_against_loop(kind):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    s = torch.randn(4, 6, 4, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 1, 4])
    S = score_matrix(v, s, lengths, score=kind)
    assert S.shape == (3, 4)
    for k in range(3):
        for m in range(4):
            total = 0.0
            for t in range(int(lengths[m])):
                dots = [float(v[k, i] @ s[m, t]) for i in range(5)]
                total += max(dots) if kind == "max" else sum(max(0.0, d) for d in dots)
            assert abs(float(S[k, m]) - total) < TOL


def test_score_matrix_ignores_padding_values_exactly():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    s = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 3])
    s2 = s.clone()
    s2[1, 2:] = float("nan")  # whatever sits in the padding never reaches the score
    s2[2, 3:] = 1e300
    # the same products of the same real entries; 1e-12 absorbs any reordering of the sums
    torch.testing.assert_close(score_matrix(v, s2, lengths), score_matrix(v, s, lengths),
                               rtol=0, atol=TOL)


def _loss_loop(S, margin, groups):
    B = S.shape[0]
    total = 0.0
    for k in range(B):
        for m in range(B):
            if groups[m] == groups[k]:
                continue
            total += max(0.0, float(S[k, m] - S[k, k]) + margin)
            total += max(0.0, float(S[m, k] - S[k, k]) + margin)
    return total


def test_ranking_loss_against_loop():
    g = torch.Generator().manual_seed(3)
    S = torch.randn(5, 5, generator=g, dtype=torch.float64)
    ref = _loss_loop(S, 0.7, list(range(5)))
    assert ref > 0  # the random case exercises the hinge
    assert abs(float(ranking_loss(S, margin=0.7, reduction="sum")) - ref) < TOL
    assert abs(float(ranking_loss(S, margin=0.7)) - ref / 5) < TOL
    groups = [0, 1, 0, 2, 1]
    ref_g = _loss_loop(S, 0.7, groups)
    assert ref_g < ref
    out = ranking_loss(S, margin=0.7, groups=torch.tensor(groups), reduction="sum")
    assert abs(float(out) - ref_g) < TOL


def test_loss_zero_when_diagonal_wins_by_margin():
    B = 4
    off = torch.randn(B, B, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    S = off.clone()
    # diagonal k = max off-diagonal + 1 + k: beats every row and column by the margin
    S.diagonal().copy_(off.max() + 1.0 + 1e-9 + torch.arange(B, dtype=torch.float64))
    assert float(ranking_loss(S, margin=1.0, reduction="sum")) == 0.0
    # One off-diagonal entry 0.25 inside the margin of its row costs exactly 0.25; its column
    # compares it with S_22 = S_11 + 1, still clear by 0.75.
    S[1, 2] = S[1, 1] - 0.75
    assert float(ranking_loss(S, margin=1.0, reduction="sum")) == pytest.approx(0.25, abs=TOL)


def test_model_loss_and_scores_are_the_loops_on_its_own_embeddings():
    m = _model()
    images, tokens, lengths = _batch()
    with torch.no_grad():
        v = m.region_embeddings(images)
        s = m.word_embeddings(tokens, lengths)
        S = m.scores(images, tokens, lengths)
    for k in range(4):
        for j in range(4):
            ref = sum(max(float(v[k, i] @ s[j, t]) for i in range(v.shape[1]))
                      for t in range(int(lengths[j])))
            assert abs(float(S[k, j]) - ref) < TOL
    ref_loss = _loss_loop(S.detach(), 1.0, list(range(4))) / 4
    assert abs(float(m.loss(images, tokens, lengths).detach()) - ref_loss) < TOL


def test_brnn_is_the_papers_recurrence():
    """s_t from the paper's equations 2-6 run by hand, step by step."""
    m = _model()
    _, tokens, lengths = _batch()
    s = m.word_embeddings(tokens, lengths)
    r = m.brnn
    for b in range(tokens.shape[0]):
        n = int(lengths[b])
        e = torch.relu(m.word_in(m.embedding.weight[tokens[b, :n]]))
        hf, hb = [None] * n, [None] * n
        h = torch.zeros(5, dtype=torch.float64)
        for t in range(n):
            h = torch.relu(r.weight_ih_l0 @ e[t] + r.bias_ih_l0 + r.weight_hh_l0 @ h + r.bias_hh_l0)
            hf[t] = h
        h = torch.zeros(5, dtype=torch.float64)
        for t in reversed(range(n)):
            h = torch.relu(r.weight_ih_l0_reverse @ e[t] + r.bias_ih_l0_reverse
                           + r.weight_hh_l0_reverse @ h + r.bias_hh_l0_reverse)
            hb[t] = h
        for t in range(n):
            ref = torch.relu(m.word_out(hf[t] + hb[t]))
            assert torch.allclose(s[b, t], ref, atol=TOL, rtol=0)
        assert torch.all(s[b, n:] == 0)


# -----------------------------------------------------------------------------------------------
# Padding, gradients
def test_padding_never_changes_a_score():
    m = _model()
    images, tokens, lengths = _batch()
    S = m.scores(images, tokens, lengths)
    # More padding columns, and garbage ids (not the pad id) after each length.
    wide = torch.cat([tokens, torch.zeros(4, 3, dtype=torch.long)], 1)
    g = torch.Generator().manual_seed(5)
    for b, n in enumerate(lengths.tolist()):
        wide[b, n:] = torch.randint(1, 12, (wide.shape[1] - n,), generator=g)
    # Different batch composition and padding: rounding differs at ~1e-16 relative; 1e-10.
    assert torch.allclose(m.scores(images, wide, lengths), S, atol=1e-10, rtol=0)
    one = m.scores(images, tokens[2:3, :3], lengths[2:3])
    assert torch.allclose(one[:, 0], S[:, 2], atol=1e-10, rtol=0)
    a = m.align(images, tokens, lengths, smooth=0.5)
    a_wide = m.align(images, wide, lengths, smooth=0.5)
    assert torch.equal(a_wide[:, :tokens.shape[1]], a) and bool((a_wide[:, 6:] == -1).all())


def test_gradients_pass_gradcheck():
    m = _model(channels=2, feature_size=3, image_size=8, grid=2)
    g = torch.Generator().manual_seed(6)
    images = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64)
    tokens = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]])
    lengths = torch.tensor([3, 2, 1])
    names = ["region.weight", "word_out.weight", "brnn.weight_hh_l0_reverse",
             "encoder.project.weight", "embedding.weight"]
    params = dict(m.named_parameters())
    # a small margin keeps some hinges active and others off at this initialisation
    m.margin = 0.05

    def f(*tensors):
        return _loss_with(m, dict(zip(names, tensors, strict=True)), images, tokens, lengths)

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert float(f(*inputs).detach()) > 0
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def _loss_with(m, over, images, tokens, lengths):
    class Loss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images, tokens, lengths):
            return self.inner.loss(images, tokens, lengths, reduction="sum")

    return torch.func.functional_call(Loss(m), {f"inner.{k}": v for k, v in over.items()},
                                      (images, tokens, lengths))


def test_score_gradients_against_gradcheck_sum_pos():
    g = torch.Generator().manual_seed(7)
    v = torch.randn(3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 3])
    for kind in ("max", "sum_pos"):
        assert torch.autograd.gradcheck(
            lambda a, b, k=kind: ranking_loss(score_matrix(a, b, lengths, score=k), margin=2.0),
            (v, s), eps=1e-6, atol=1e-7)


# -----------------------------------------------------------------------------------------------
# Alignment
def _energy(u, a, beta):
    return sum(float(u[j, a[j]]) for j in range(len(a))) + beta * sum(
        a[j] == a[j + 1] for j in range(len(a) - 1))


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.5, 10.0])
def test_viterbi_equals_brute_force(beta):
    g = torch.Generator().manual_seed(8)
    B, L, R = 6, 5, 3
    u = torch.randn(B, L, R, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 2, 3, 4, 5])
    a = viterbi_align(u, lengths, beta)
    for b in range(B):
        n = int(lengths[b])
        best = max(itertools.product(range(R), repeat=n), key=lambda x: _energy(u[b], x, beta))
        assert tuple(a[b, :n].tolist()) == best  # random floats: a unique optimum
        assert abs(_energy(u[b], a[b, :n].tolist(), beta) - _energy(u[b], best, beta)) < TOL
        assert bool((a[b, n:] == -1).all())
    if beta == 0.0:
        assert torch.equal(a[0], u[0].argmax(-1))
    if beta == 10.0:  # beyond the spread of the unaries: one region for the whole sentence
        assert all(len(set(a[b, :int(lengths[b])].tolist())) == 1 for b in range(B))


def test_model_align_is_argmax_of_its_unaries():
    m = _model(whole_image=True)
    images, tokens, lengths = _batch()
    u = m.unaries(images, tokens, lengths)
    assert u.shape == (4, 6, 17)
    a = m.align(images, tokens, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(a[b, :n], u[b, :n].argmax(-1))


def _hand_scene():
    objs = (SceneObject("circle", "red", "large", (0, 0, 16, 16)),
            SceneObject("square", "blue", "small", (20, 20, 28, 28)))
    return Scene("shapes", 32, objs, scene_relations(objs, 32))


def test_alignment_accuracy_by_hand():
    scene = _hand_scene()
    sentence = "a red circle and a blue square"
    # words: a red circle and a blue square -> objects 0 0 0 - 1 1 1; grid 4 (8-pixel cells):
    # the circle covers cells (0,0),(0,1),(1,0),(1,1) = 0, 1, 4, 5; the square cells 10, 11,
    # 14, 15 (x, y in [20, 28) meets columns/rows 2 and 3).
    regions = [0, 5, 3, 9, 10, 16, 15]  # hit, hit, miss, (filler), hit, whole image = miss, hit
    acc, chance = alignment_accuracy([regions], [sentence], [scene], size=32, grid=4)
    assert acc == pytest.approx(4 / 6, abs=TOL)
    assert chance == pytest.approx((3 * 4 / 16 + 3 * 4 / 16) / 6, abs=TOL)
    # nouns only: "circle" (region 3, miss) and "square" (region 15, hit)
    acc, chance = alignment_accuracy([regions], [sentence], [scene], size=32, grid=4,
                                     nouns_only=True)
    assert acc == pytest.approx(1 / 2, abs=TOL) and chance == pytest.approx(1 / 4, abs=TOL)
    # independent count of the cells each box overlaps, from pixels
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        cells = {(y // 8, x // 8) for y in range(y0, y1) for x in range(x0, x1)}
        assert len(cells) == int((box_mask(obj.box, 32, 4) > 0).sum())
    with pytest.raises(ValueError, match="outside"):
        alignment_accuracy([[0, 0, 0, 0, 0, 0, 17]], [sentence], [scene], size=32, grid=4)
    with pytest.raises(ValueError, match="7 words"):
        alignment_accuracy([[0, 0]], [sentence], [scene], size=32, grid=4)


def test_alignment_png(tmp_path):
    scene = _hand_scene()
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(9))
    words = tokenize("a red circle and a blue square")
    out = alignment_png(img, words, [0, 5, 3, 9, 10, 16, 15], [o.box for o in scene.objects],
                        tmp_path / "a.png", grid=4, title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert w > 200 and h > 200
    with pytest.raises(ValueError, match="7 words but 2 regions"):
        alignment_png(img, words, [0, 1], [], tmp_path / "b.png", grid=4)


# -----------------------------------------------------------------------------------------------
# Learning: retrieval above chance
def _train(seed, n=40, steps=150):
    torch.manual_seed(seed)
    ss = generate_scenes(n, size=32, n_objects=(2, 3), seed=seed)
    caps = [c for s in ss.scenes for c in s.captions]
    image_of = [i for i, s in enumerate(ss.scenes) for _ in s.captions]
    vocab = Vocabulary.build([tokenize(c) for c in caps])
    tokens, lengths = encode_sentences(vocab, caps)
    m = RegionAlignment(len(vocab), embed_size=32, hidden_size=32, seed=seed, channels=8,
                        feature_size=32, image_size=32, grid=4)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        imgs = torch.randperm(n, generator=g)[:20]
        rows = imgs * 5 + torch.randint(0, 5, (20,), generator=g)
        loss = m.loss(ss.images[imgs], tokens[rows], lengths[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), ss, tokens, lengths, image_of


def test_tiny_model_retrieves_above_chance():
    # 40 images x 5 captions: a random scorer ranks a correct item first with probability
    # 5/200 = 1/40 (i2s) and 1/40 (s2i). Measured after 150 steps on seeds 0-4 (training
    # scenes; docs/captioning_alignment.md): i2s@1 >= 0.62, s2i@1 >= 0.42; the threshold 0.2 is
    # 8x chance and under half the worst seed.
    m, ss, tokens, lengths, image_of = _train(0)
    rec = m.retrieval(ss.images, tokens, lengths, image_of)
    assert rec["i2s@1"] > 0.2 and rec["s2i@1"] > 0.2, rec
    assert rec["i2s@10"] >= rec["i2s@5"] >= rec["i2s@1"]


# -----------------------------------------------------------------------------------------------
# Devices, dtypes, save/rebuild
def test_dtype_move_and_config_roundtrip():
    m = _model(score="sum_pos", whole_image=True)
    images, tokens, lengths = _batch()
    S64 = m.scores(images, tokens, lengths)
    m32 = RegionAlignment.from_config(m.config(), dtype=torch.float32)
    m32.load_state_dict(m.state_dict())
    S32 = m32.scores(images.float(), tokens, lengths)
    assert S32.dtype == torch.float32
    # float32 rounding of O(1) sums over ~20 products and a few layers: ~1e-6 relative
    assert torch.allclose(S32.double(), S64, rtol=1e-4, atol=1e-5)
    back = m32.to(torch.float64)
    assert torch.allclose(back.scores(images, tokens, lengths), S64, atol=1e-5, rtol=0)
    rebuilt = RegionAlignment.from_config(m.config(), dtype=torch.float64)
    # a plain dict of CPU copies (what a checkpoint keeps), without the state dict's metadata
    rebuilt.load_state_dict({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})
    torch.testing.assert_close(rebuilt.scores(images, tokens, lengths), S64, rtol=0, atol=TOL)
    assert rebuilt.config() == m.config()
    import json
    assert json.loads(json.dumps(m.config())) == m.config()
    assert torch.equal(type(m)(**m.config(), dtype=torch.float64).region.weight,
                       RegionAlignment(**m.config(), dtype=torch.float64).region.weight)


def test_checkpoint_roundtrip_through_save_captioner(tmp_path):
    """The alignment model goes through the captioners' checkpoint format: same scores back
    (the same weights and arithmetic: equal to 1e-12), another vocabulary refused, and the
    file is not taken by `find_captioner` (it cannot caption)."""
    from rnnlab.captioning import find_captioner, load_captioner, save_captioner

    vocab = Vocabulary([f"w{i}" for i in range(8)])  # 4 specials + 8 words = 12 ids
    m = _model(vocab_size=len(vocab), pad_id=vocab.pad_id)
    images, tokens, lengths = _batch(vocab_size=len(vocab))
    path = save_captioner(tmp_path / "region_alignment_seed0.pt", m, vocab)
    back, vocab_back, _ = load_captioner(path, kind="region_alignment")
    assert isinstance(back, RegionAlignment) and vocab_back == vocab
    assert torch.allclose(back.scores(images, tokens, lengths), m.scores(images, tokens, lengths),
                          atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="another vocabulary"):
        load_captioner(path, vocab=Vocabulary([f"v{i}" for i in range(8)]))
    with pytest.raises(FileNotFoundError, match="no captioner checkpoint"):
        find_captioner(tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    m = _model()
    images, tokens, lengths = _batch()
    S = m.scores(images, tokens, lengths)
    a = m.align(images, tokens, lengths, smooth=0.5)
    mc = m.to("cuda")
    Sc = mc.scores(images.cuda(), tokens.cuda(), lengths.cuda())
    assert torch.allclose(Sc.cpu(), S, atol=1e-10, rtol=0)
    # across devices the unaries differ by rounding (~1e-12), which may flip a near tie: the
    # CUDA alignment must be optimal for the CPU unaries up to that rounding, not bit-equal
    ac = mc.align(images.cuda(), tokens.cuda(), lengths.cuda(), smooth=0.5).cpu()
    u = m.to("cpu").unaries(images, tokens, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert abs(_energy(u[b], ac[b, :n].tolist(), 0.5)
                   - _energy(u[b], a[b, :n].tolist(), 0.5)) < 1e-9
        assert bool((ac[b, n:] == -1).all())


def test_seeded_initialisation_is_reproducible():
    a, b = _model(), _model()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    c = RegionAlignment(12, embed_size=6, hidden_size=5, seed=1, dtype=torch.float64, **ENC)
    assert not torch.equal(a.region.weight, c.region.weight)


# -----------------------------------------------------------------------------------------------
# Bad input
def test_bad_input():
    m = _model()
    images, tokens, lengths = _batch()
    with pytest.raises(ValueError, match="exceeds"):
        m.scores(images, tokens, torch.tensor([7, 1, 1, 1]))
    with pytest.raises(ValueError, match="at least one word"):
        m.scores(images, tokens, torch.tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        m.scores(images, tokens, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"tokens must be \(batch, words\)"):
        m.scores(images, tokens[0], lengths)
    with pytest.raises(TypeError, match="integer ids"):
        m.scores(images, tokens.double(), lengths)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 12\)"):
        m.scores(images, tokens + 20, lengths)
    with pytest.raises(ValueError, match="empty"):
        m.scores(images, tokens[:, :0], lengths)
    with pytest.raises(ValueError, match="3 images and 4 sentences"):
        m.loss(images[:3], tokens, lengths)
    with pytest.raises(ValueError, match="3 images and 4 sentences"):
        m.align(images[:3], tokens, lengths)
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        m.align(images, tokens, lengths, smooth=-1.0)
    with pytest.raises(ValueError, match="channels"):
        m.scores(images[:, :1], tokens, lengths)
    with pytest.raises(ValueError, match="square"):
        ranking_loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="score must be one of"):
        _model(score="mean")
    with pytest.raises(ValueError, match="multiple of grid"):
        _model(grid=5)
    with pytest.raises(ValueError, match="vocab_size"):
        RegionAlignment(1)
    with pytest.raises(ValueError, match="pad_id"):
        RegionAlignment(5, pad_id=5)
    with pytest.raises(ValueError, match="margin"):
        RegionAlignment(5, margin=-1.0)
    with pytest.raises(ValueError, match="empty"):
        encode_sentences(Vocabulary(["a"]), ["a", ""])
