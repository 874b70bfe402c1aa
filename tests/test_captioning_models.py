"""Captioning models: the region encoder, ShowAndTell and ShowAttendTell (attention, padding,
decoding protocol, gradients, overfitting, devices)."""

from __future__ import annotations

import pytest
import torch

from rnnlab.captioning import CaptionOutput, ConvEncoder, ShowAndTell, ShowAttendTell
from rnnlab.seq2seq import beam_search, greedy_decode
from rnnlab.tasks.captions import box_mask, generate_scenes, tokenize
from rnnlab.tasks.seq2seq import Vocabulary, pad_ids

MODELS = (ShowAndTell, ShowAttendTell)
TINY = {"image_size": 16, "grid": 4, "channels": 3, "feature_size": 6, "embed_size": 5,
        "hidden_size": 7, "max_caption_length": 8}


def tiny(cls, dtype=torch.float64, **kw):
    return cls(11, **{**TINY, **kw}, seed=0, dtype=dtype)


def batch(dtype=torch.float64, B=3):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(B, 3, 16, 16, generator=g, dtype=dtype)
    tokens = torch.tensor([[4, 5, 6, 2], [7, 2, 0, 0], [8, 9, 2, 0]])[:B]
    lengths = torch.tensor([4, 2, 3])[:B]
    return images, tokens, lengths


# --------------------------------------------------------------------------- encoder
def test_encoder_shapes_and_region_order():
    """Region r is grid cell (r // grid, r % grid) of box_mask: the pixels of a cell (found by
    box_mask) move region r and otherwise only regions of the neighbouring cells (a region's
    receptive field is its cell and one cell around it); a transposed or shifted order fails."""
    enc = ConvEncoder(1, channels=4, feature_size=5, image_size=32, grid=4, coords=False,
                      seed=0, dtype=torch.float64)
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    regions = enc(x)
    assert regions.shape == (1, 16, 5)
    assert torch.equal(ConvEncoder.pooled(regions), regions.mean(1))
    for box in [(24, 0, 32, 8), (0, 24, 8, 32), (16, 8, 24, 16), (8, 8, 16, 16)]:
        r = int(box_mask(box, 32, 4).flatten().argmax())
        assert float(box_mask(box, 32, 4).flatten()[r]) == 1.0
        pixels = torch.zeros(32, 32, dtype=torch.float64)
        pixels[box[1]:box[3], box[0]:box[2]] = 1.0
        moved = []
        for k in range(16):
            (g,) = torch.autograd.grad(regions[0, k].sum(), x, retain_graph=True)
            if float((g[0, 0].abs() * pixels).sum()) > 0:
                moved.append(k)
        assert r in moved
        assert all(abs(k // 4 - r // 4) <= 1 and abs(k % 4 - r % 4) <= 1 for k in moved)


@pytest.mark.parametrize(("size", "grid", "blocks", "pool"), [(64, 8, 3, 1), (48, 8, 1, 3),
                                                              (8, 8, 0, 1)])
def test_encoder_cells_exact(size, grid, blocks, pool):
    enc = ConvEncoder(3, channels=2, feature_size=3, image_size=size, grid=grid, seed=0)
    assert (enc.blocks, enc.cell_pool) == (blocks, pool)
    assert enc(torch.rand(2, 3, size, size)).shape == (2, grid * grid, 3)


def test_encoder_bad_input():
    enc = ConvEncoder(3, channels=2, feature_size=3, image_size=16, grid=4, seed=0)
    with pytest.raises(ValueError, match="channels"):
        enc(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="16x16"):
        enc(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match="batch axis"):
        enc(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        enc(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        enc(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="multiple of grid"):
        ConvEncoder(3, image_size=30, grid=4)
    with pytest.raises(ValueError, match="grid"):
        ConvEncoder(3, image_size=16, grid=0)


def test_same_seed_same_model():
    a, b = tiny(ShowAttendTell), tiny(ShowAttendTell)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    c = ShowAttendTell(11, **TINY, seed=1, dtype=torch.float64)
    assert not torch.equal(a.readout.weight, c.readout.weight)


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("cls", MODELS)
def test_forward_shapes_and_attention_sums_to_one(cls):
    m = tiny(cls)
    images, tokens, lengths = batch()
    out = m(images, tokens, lengths)
    assert isinstance(out, CaptionOutput) and out.logits.shape == (3, 4, 11)
    if cls is ShowAndTell:
        assert out.attention is None
        return
    assert out.attention.shape == (3, 4, 16)
    valid = torch.arange(4)[None, :] < lengths[:, None]
    sums = out.attention.sum(-1)
    # softmax over 16 float64 entries: row sums are 1 within ~16 eps
    assert torch.allclose(sums[valid], torch.ones_like(sums[valid]), atol=1e-13, rtol=0)
    assert bool((out.attention >= 0).all())
    assert torch.equal(sums[~valid], torch.zeros_like(sums[~valid]))
    _, _, attn = m.step(torch.tensor([1, 1, 1]), m.initial_state(m.encode(images)),
                            m.encode(images))
    assert torch.allclose(attn.sum(-1), torch.ones(3, dtype=attn.dtype), atol=1e-13, rtol=0)


@pytest.mark.parametrize("cls", MODELS)
def test_padding_never_changes_a_result(cls):
    m = tiny(cls)
    images, tokens, lengths = batch()
    padded = torch.cat([tokens, torch.zeros(3, 3, dtype=torch.long)], dim=1)
    a, b = m(images, tokens, lengths), m(images, padded, lengths)
    valid = torch.arange(4)[None, :] < lengths[:, None]
    # the same float64 operations on the same rows; differences come only from BLAS blocking
    # over a longer time axis, a few ulps of values O(1)
    assert torch.allclose(a.logits[valid], b.logits[:, :4][valid], atol=1e-10, rtol=0)
    if a.attention is not None:
        assert torch.allclose(a.attention, b.attention[:, :4], atol=1e-10, rtol=0)
        assert torch.equal(b.attention[:, 4:], torch.zeros_like(b.attention[:, 4:]))
    la, lb = m.loss(images, tokens, lengths), m.loss(images, padded, lengths)
    assert abs(float(la.detach()) - float(lb.detach())) < 1e-10


@pytest.mark.parametrize("cls", MODELS)
def test_teacher_forcing_matches_stepwise_decoding(cls):
    """The teacher-forced logits (ShowAndTell: one LSTM call over the sequence) equal the
    decoding protocol's step-by-step log-probabilities fed the same tokens."""
    m = tiny(cls)
    images, tokens, lengths = batch()
    out = m(images, tokens, lengths)
    memory = m.encode(images, None)
    state, prev = m.initial_state(memory), m.start_tokens(memory)
    for t in range(tokens.shape[1]):
        logp, state, attn = m.step(prev, state, memory)
        ref = torch.log_softmax(out.logits[:, t].masked_fill(
            torch.arange(11) < 2, float("-inf")), dim=-1)  # pad 0 and bos 1 excluded
        valid = t < lengths
        assert torch.allclose(logp[valid], ref[valid], atol=1e-12, rtol=0)
        if attn is not None:
            assert torch.allclose(attn[valid], out.attention[valid, t], atol=1e-12, rtol=0)
        prev = tokens[:, t]


def test_show_and_tell_feeds_the_image_first():
    """Vinyals et al.: the state before the first word is the LSTM run on the image
    embedding from zero: checked against torch.nn.LSTM carrying the same weights."""
    m = tiny(ShowAndTell)
    images, tokens, lengths = batch()
    ref = torch.nn.LSTM(5, 7, batch_first=True, dtype=torch.float64)
    ref.load_state_dict({k: v for k, v in m.rnn.state_dict().items() if k in
                         ref.state_dict()})
    x_img = m.image_norm(m.image_embedding(m.encoder(images).flatten(1)))
    seq = torch.cat([x_img[:, None], m.embedding(m.decoder_input(tokens))], dim=1)
    out, _ = ref(seq)
    expected = m.readout(out[:, 1:])
    assert torch.allclose(m(images, tokens, lengths).logits, expected, atol=1e-12, rtol=0)


def test_doubly_stochastic_regulariser_closed_form():
    lam = 0.7
    m = tiny(ShowAttendTell, doubly_stochastic=lam).requires_grad_(False)
    images, tokens, lengths = batch()
    out = m(images, tokens, lengths)
    ce = torch.nn.functional.cross_entropy(
        out.logits[torch.arange(4)[None] < lengths[:, None]],
        tokens[torch.arange(4)[None] < lengths[:, None]])
    reg = sum(float(((1 - out.attention[b, :int(lengths[b])].detach().sum(0)) ** 2).sum())
              for b in range(3))
    expected = float(ce) + lam * reg / int(lengths.sum())
    assert abs(float(m.loss(images, tokens, lengths)) - expected) < 1e-12
    m0 = tiny(ShowAttendTell, doubly_stochastic=0.0).requires_grad_(False)
    assert abs(float(m0.loss(images, tokens, lengths)) - float(ce)) < 1e-12


class _Loss(torch.nn.Module):
    def __init__(self, model, tokens, lengths):
        super().__init__()
        self.m, self.tokens, self.lengths = model, tokens, lengths

    def forward(self, images):
        out = self.m(images, self.tokens, self.lengths)
        extra = out.attention.sum() if out.attention is not None else 0.0
        # logits on padding read the pad embedding, which nn.Embedding(padding_idx) freezes:
        # only the real positions enter
        valid = torch.arange(self.tokens.shape[1])[None] < self.lengths[:, None]
        return (self.m.loss(images, self.tokens, self.lengths)
                + out.logits[valid].tanh().sum() + extra)


@pytest.mark.parametrize("cls", MODELS)
def test_gradients_match_finite_differences(cls):
    """torch.autograd.gradcheck (central differences, float64) of the loss, the logits and the
    attention with respect to the images and parameters of every part (encoder, embedding,
    attention, gate, initial state, readout)."""
    m = cls(11, image_size=8, grid=4, channels=2, feature_size=3, embed_size=3,
            hidden_size=4, max_caption_length=8, seed=0, dtype=torch.float64)
    images, tokens, lengths = batch(B=2)
    images = images[:, :, :8, :8]
    names = ["readout.weight", "embedding.weight", "encoder.project.weight", "rnn.weight_hh_l0"]
    if cls is ShowAttendTell:
        names += ["att_hidden.weight", "att_region.bias", "beta.weight", "init_h.weight"]
    params = dict(m.named_parameters())
    wrapper = _Loss(m, tokens, lengths)

    def f(x, *ps):
        return torch.func.functional_call(
            wrapper, {f"m.{n}": p for n, p in zip(names, ps, strict=True)}, (x,), strict=False)

    inputs = (images.clone().requires_grad_(),
              *(params[n].detach().clone().requires_grad_() for n in names))
    # fast mode: central differences along random directions of every input against the
    # analytical directional derivative (float64, eps 1e-6: truncation ~1e-12, rounding ~1e-10)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("cls", MODELS)
def test_loss_gradient_matches_finite_differences(cls):
    """The loss (masked cross-entropy + regulariser) against central differences on a few
    coordinates of the readout (error O(eps^2) ~ 1e-8 of terms O(1))."""
    m = tiny(cls)
    images, tokens, lengths = batch()
    m.zero_grad()
    m.loss(images, tokens, lengths).backward()
    w = m.readout.weight
    eps = 1e-5
    for i, j in [(0, 0), (3, 2), (10, 4)]:
        with torch.no_grad():
            w[i, j] += eps
            up = float(m.loss(images, tokens, lengths))
            w[i, j] -= 2 * eps
            down = float(m.loss(images, tokens, lengths))
            w[i, j] += eps
        assert abs((up - down) / (2 * eps) - float(w.grad[i, j])) < 1e-7


@pytest.mark.parametrize("cls", MODELS)
def test_beam_width_one_equals_greedy(cls):
    m = tiny(cls).eval()
    images, _, _ = batch()
    g = greedy_decode(m, images, None)
    hyps = beam_search(m, images, None, beam_size=1)
    for b in range(3):
        h = hyps[b][0]
        assert torch.equal(h.tokens, g.tokens[b, :int(g.lengths[b])])
        # the same log-probabilities summed in float64 (greedy) and in float64 (beam)
        assert abs(h.log_prob - float(g.log_prob[b])) < 1e-10
        if cls is ShowAttendTell:
            L = int(g.lengths[b])
            assert torch.allclose(h.attention[:L], g.attention[b, :L], atol=1e-12, rtol=0)
            assert torch.allclose(h.attention.sum(-1), torch.ones(h.attention.shape[0],
                                  dtype=h.attention.dtype), atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", MODELS)
def test_beam_n_best_sorted_and_never_pad_or_bos(cls):
    m = tiny(cls).eval()
    images, _, _ = batch()
    hyps = beam_search(m, images, torch.ones(3, dtype=torch.long), beam_size=4, n_best=3,
                       max_len=5)
    for h in hyps:
        assert [x.score for x in h] == sorted((x.score for x in h), reverse=True)
        for x in h:
            assert not bool(((x.tokens == 0) | (x.tokens == 1)).any())
            assert len(x.tokens) <= 5


def test_bad_captions_and_lengths():
    m = tiny(ShowAttendTell)
    images, tokens, lengths = batch()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m(images, tokens + 20, lengths)
    with pytest.raises(TypeError, match="integer"):
        m(images, tokens.double(), lengths)
    with pytest.raises(ValueError, match="lengths must lie"):
        m(images, tokens, torch.tensor([5, 1, 1]))
    with pytest.raises(ValueError, match="shape"):
        m(images, tokens[:2], lengths)
    with pytest.raises(ValueError, match="max_caption_length"):
        m(images, torch.full((3, 9), 4), lengths)
    with pytest.raises(ValueError, match="source lengths"):
        greedy_decode(m, images, torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(m, images, None, max_len=20)
    with pytest.raises(ValueError, match="must differ"):
        ShowAndTell(11, pad_id=0, bos_id=0, **TINY)
    with pytest.raises(ValueError, match="doubly_stochastic"):
        ShowAttendTell(11, doubly_stochastic=-1.0, **TINY)


@pytest.mark.parametrize("cls", MODELS)
def test_config_rebuilds(cls):
    m = tiny(cls, dtype=torch.float32)
    again = cls(**m.config())
    assert again.config() == m.config()
    assert again.kind == m.kind
    assert {k: v.shape for k, v in again.state_dict().items()} == \
        {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize("cls", MODELS)
def test_dtype_and_device_moves(cls):
    m32 = cls(11, **TINY, seed=0)
    images, tokens, lengths = batch(dtype=torch.float32)
    out32 = m32(images, tokens, lengths).logits
    m64 = m32.to(torch.float64)
    out64 = m64(images.double(), tokens, lengths).logits
    assert out64.dtype == torch.float64
    # float32 against float64 through a few layers of width <= 64: errors ~1e-6 relative
    assert torch.allclose(out32.double(), out64, atol=1e-4, rtol=1e-4)
    g = greedy_decode(m64, images.double(), None)
    assert g.log_prob.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", MODELS)
def test_cuda_matches_cpu(cls):
    m = tiny(cls)
    images, tokens, lengths = batch()
    ref = m(images, tokens, lengths).logits
    mc = m.to("cuda")
    out = mc(images.cuda(), tokens.cuda(), lengths.cuda()).logits
    assert torch.allclose(out.cpu(), ref, atol=1e-10, rtol=0)
    hyps = beam_search(mc, images.cuda(), None, beam_size=2)
    assert len(hyps) == 3


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize("cls", MODELS)
def test_tiny_model_overfits_a_handful_of_scenes(cls):
    torch.manual_seed(0)
    scenes = generate_scenes(6, size=32, n_objects=(1, 2), seed=3)
    captions = [tokenize(s.captions[0]) for s in scenes.scenes]
    vocab = Vocabulary.build(captions)
    tokens, lengths = pad_ids([vocab.encode(c) for c in captions], vocab.pad_id)
    m = cls(len(vocab), pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
            image_size=32, grid=4, channels=8, feature_size=16, embed_size=16,
            hidden_size=32, max_caption_length=24, seed=0)
    # Adam steps: accuracy reached 0.95-0.97 by step 75-100 and 1.0 by ~125 for seeds 0 and 1
    # of both models
    opt = torch.optim.Adam(m.parameters(), lr=1e-2 if cls is ShowAttendTell else 5e-3)
    for _ in range(130):
        opt.zero_grad()
        m.loss(scenes.images, tokens, lengths).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        pred = m(scenes.images, tokens, lengths).logits.argmax(-1)
    valid = torch.arange(tokens.shape[1])[None] < lengths[:, None]
    acc = float((pred == tokens)[valid].double().mean())
    # chance is ~1/len(vocab); an image-blind language model reaches ~0.81 on these captions
    assert acc > 0.9
    g = greedy_decode(m, scenes.images, None)
    exact = sum(vocab.decode(g.tokens[b, :int(g.lengths[b])]) == captions[b] for b in range(6))
    assert exact >= 5
