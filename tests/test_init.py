"""Initialisers: orthogonality, spectra and seeds against numpy and closed forms.

Tolerances. Q^T Q = I is checked to 1e-12: Householder QR gives ||Q^T Q - I|| <= c n u with
c a small constant (Higham 2002, Thm 19.4), 1e-14 for n = 12. Eigenvalue moduli (numpy's
solver on a matrix scaled by ours) to 1e-10 relative: kappa n u ||W|| with the eigenvalue's
condition number kappa (1 for orthogonal W, measured below 3 for the sparse random ones), so
1e-14 kappa here. Seeded draws on the same path are compared bit for bit.
"""

import numpy as np
import pytest
import torch

from rnnlab.init import (
    INITIALIZERS,
    identity_,
    initialize,
    orthogonal_,
    pretrain_sequence_autoencoder,
    sparse_spectral_,
)
from rnnlab.models.elman import ElmanRNN
from tests.reference import elman_forward

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rho(w):
    return np.abs(np.linalg.eigvals(w.detach().double().numpy())).max()


# ----------------------------------------------------------------------------------------------
# orthogonal
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gain", [1.0, 0.7])
def test_orthogonal_gives_scaled_orthogonal_matrices(gain):
    w = torch.empty(12, 12, dtype=F64)
    out = orthogonal_(w, gain, generator=gen(0))
    assert out is w
    np.testing.assert_allclose((w.t() @ w).numpy(), gain**2 * np.eye(12), atol=1e-12)
    np.testing.assert_allclose((w @ w.t()).numpy(), gain**2 * np.eye(12), atol=1e-12)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(w.numpy())), gain, rtol=1e-10)
    # rectangular: orthonormal rows (wide) or columns (tall)
    wide, tall = torch.empty(3, 7, dtype=F64), torch.empty(7, 3, dtype=F64)
    orthogonal_(wide, gain, generator=gen(1))
    orthogonal_(tall, gain, generator=gen(1))
    np.testing.assert_allclose((wide @ wide.t()).numpy(), gain**2 * np.eye(3), atol=1e-12)
    np.testing.assert_allclose((tall.t() @ tall).numpy(), gain**2 * np.eye(3), atol=1e-12)


def test_orthogonal_on_a_model_is_seeded_and_dtype_independent():
    model = ElmanRNN(2, 10, 1)
    u_before = model.U.detach().clone()
    out = orthogonal_(model, generator=gen(3))
    assert out is model.W
    assert torch.equal(model.U, u_before)
    again = orthogonal_(torch.empty(10, 10), generator=gen(3))
    assert torch.equal(again, model.W.detach())  # the same call on the same draw
    other = orthogonal_(torch.empty(10, 10), generator=gen(4))
    assert not torch.allclose(other, again)
    in64 = orthogonal_(torch.empty(10, 10, dtype=F64), generator=gen(3))
    assert torch.equal(in64.float(), again)  # drawn and factored in float64, then cast
    # Haar: the diagonal sign fix makes det take both signs over draws, not always +1
    dets = {round(float(torch.linalg.det(orthogonal_(torch.empty(4, 4, dtype=F64),
                                                     generator=gen(s))))) for s in range(20)}
    assert dets == {-1, 1}


# ----------------------------------------------------------------------------------------------
# identity
# ----------------------------------------------------------------------------------------------
def test_identity_on_tensor_and_model():
    w = torch.randn(5, 5)
    identity_(w, 0.5)
    assert torch.equal(w, 0.5 * torch.eye(5))
    model = ElmanRNN(3, 6, 2, dtype=F64)
    v_before, u_before = model.V.detach().clone(), model.U.detach().clone()
    identity_(model)
    assert torch.equal(model.W.detach(), torch.eye(6, dtype=F64))
    assert torch.equal(model.b.detach(), torch.zeros(6, dtype=F64))
    assert torch.equal(model.U.detach(), u_before) and torch.equal(model.V.detach(), v_before)
    identity_(model, input_std=1e-3, generator=gen(0))
    expected_u = 1e-3 * torch.randn(6, 3, generator=gen(0), dtype=F64)
    assert torch.equal(model.U.detach(), expected_u)
    with pytest.raises(ValueError, match="square"):
        identity_(torch.empty(3, 4))
    with pytest.raises(ValueError, match="scale"):
        identity_(torch.empty(3, 3), 0.0)
    with pytest.raises(ValueError, match="input_std"):
        identity_(torch.empty(3, 3), input_std=0.1)


# ----------------------------------------------------------------------------------------------
# sparse, scaled to a spectral radius
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "k", "target", "dtype"), [
    (40, 15, 1.1, F64), (20, 3, 0.9, F64), (30, None, 1.1, torch.float32), (6, 6, 1.5, F64),
])
def test_sparse_spectral_rows_and_radius(n, k, target, dtype):
    w = torch.empty(n, n, dtype=dtype)
    sparse_spectral_(w, k, target, generator=gen(n))
    expected_k = min(15, n) if k is None else k
    assert (torch.count_nonzero(w, dim=1) == expected_k).all()
    rtol = 1e-10 if dtype == F64 else 1e-5
    assert rho(w) == pytest.approx(target, rel=rtol)


def test_sparse_spectral_values_are_a_scaled_unit_gaussian():
    n, k = 200, 15
    w = sparse_spectral_(torch.empty(n, n, dtype=F64), k, 1.1, generator=gen(1))
    vals = w[w != 0]
    # one common scale: the nonzeros divided by their own std look like N(0, 1) draws
    z = vals / vals.std()
    assert abs(float(z.mean())) < 0.05
    assert float((z.abs() < 1).double().mean()) == pytest.approx(0.6827, abs=0.02)


def test_sparse_spectral_seeded_and_bad_arguments():
    a = sparse_spectral_(torch.empty(20, 20), generator=gen(5))
    b = sparse_spectral_(torch.empty(20, 20), generator=gen(5))
    c = sparse_spectral_(torch.empty(20, 20), generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    model = ElmanRNN(2, 8, 1, dtype=F64)
    assert sparse_spectral_(model, 4, generator=gen(0)) is model.W
    with pytest.raises(ValueError, match="k=9"):
        sparse_spectral_(model, 9)
    with pytest.raises(ValueError, match="square"):
        sparse_spectral_(torch.empty(4, 5))
    with pytest.raises(ValueError, match="spectral_radius"):
        sparse_spectral_(model, 3, 0.0)
    with pytest.raises(ValueError, match="spectral_radius"):
        sparse_spectral_(model, 3, -1.1)
    with pytest.raises(ValueError, match="positive integer"):
        sparse_spectral_(model, 0)
    with pytest.raises(TypeError, match="no recurrent matrix"):
        sparse_spectral_(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------
def test_registry_and_initialize():
    assert set(INITIALIZERS) >= {"default", "orthogonal", "identity", "sparse_spectral",
                                 "pretrained"}
    model = ElmanRNN(2, 12, 1, dtype=F64)
    ref = ElmanRNN(2, 12, 1, dtype=F64)
    ref.reset_parameters(generator=torch.Generator().manual_seed(9))
    initialize(model, "default", seed=9)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)

    initialize(model, "orthogonal", seed=9, gain=0.9)
    w = model.W.detach().numpy()
    np.testing.assert_allclose(w.T @ w, 0.81 * np.eye(12), atol=1e-12)
    assert torch.equal(model.b.detach(), torch.zeros(12, dtype=F64))
    assert torch.equal(model.V, ref.V) and torch.equal(model.U, ref.U)

    initialize(model, "identity", seed=9, scale=0.5)
    assert torch.equal(model.W.detach(), 0.5 * torch.eye(12, dtype=F64))

    initialize(model, "sparse_spectral", seed=9)
    assert (torch.count_nonzero(model.W, dim=1) == 12).all()
    assert rho(model.W) == pytest.approx(1.1, rel=1e-10)
    first = model.W.detach().clone()
    initialize(model, "sparse_spectral", seed=9, k=4, spectral_radius=0.95)
    assert (torch.count_nonzero(model.W, dim=1) == 4).all()
    assert rho(model.W) == pytest.approx(0.95, rel=1e-10)
    initialize(model, "sparse_spectral", seed=9)
    assert torch.equal(model.W.detach(), first)  # the seed alone decides

    with pytest.raises(ValueError, match="unknown initializer"):
        initialize(model, "xavier")
    with pytest.raises(ValueError, match="inputs"):
        initialize(model, "pretrained", seed=0)
    with pytest.raises(TypeError, match="no options"):
        initialize(model, "default", gain=2.0)


# ----------------------------------------------------------------------------------------------
# unsupervised pre-training
# ----------------------------------------------------------------------------------------------
def objective_states(params, x, objective):
    """The states the decoder reads and the targets, from the course's equations (independent
    of rnnlab.init)."""
    U, W, b, V, c = params
    _, hs = elman_forward(U, W, b, V, c, x)
    if objective == "language_model":
        return hs[:, :-1], x[:, 1:]
    shifted = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
    _, dec = elman_forward(U, W, b, V, c, shifted, h0=hs[:, -1])
    return dec, x


def decoder_error(params, dec_w, dec_b, x, objective):
    h, target = objective_states(params, x, objective)
    return float((h @ dec_w.t() + dec_b - target).pow(2).mean())


def best_linear_decoder_error(params, x, objective):
    """The least error any affine decoder can reach from these states (numpy least squares)."""
    h, target = objective_states(params, x, objective)
    feats = h.reshape(-1, h.shape[-1]).numpy()
    feats = np.hstack([feats, np.ones((feats.shape[0], 1))])
    y = target.reshape(-1, target.shape[-1]).numpy()
    coef, *_ = np.linalg.lstsq(feats, y, rcond=None)
    return float(((feats @ coef - y) ** 2).mean())


@pytest.mark.parametrize("objective", ["autoencoder", "language_model"])
def test_pretraining_lowers_the_error_and_changes_only_u_w_b(objective):
    torch.manual_seed(0)
    model = ElmanRNN(2, 12, 1, dtype=F64)
    # inputs with temporal structure: random sinusoids, so x(t+1) is predictable from the past
    t = torch.arange(6, dtype=F64)
    freq, phase = torch.rand(48, 1, 2, dtype=F64), 6 * torch.rand(48, 1, 2, dtype=F64)
    x = torch.sin(freq * t[None, :, None] + phase)
    names = ("U", "W", "b", "V", "c")
    before = {n: model.get_parameter(n).detach().clone() for n in names}
    model.V.grad = torch.ones_like(model.V)  # existing grads must survive
    report = pretrain_sequence_autoencoder(model, x, epochs=80, lr=2e-2, objective=objective,
                                           batch_size=16, generator=gen(1))
    after = [model.get_parameter(n).detach() for n in names]
    final = decoder_error(after, report.decoder_weight, report.decoder_bias, x, objective)
    assert report.final_error == pytest.approx(final, rel=1e-10)
    assert len(report.losses) == 80
    assert final < 0.5 * report.initial_error
    # The trained recurrence beats the best decoder that the untrained one allows: the
    # improvement is in U, W, b, not only in the decoder.
    assert final < 0.9 * best_linear_decoder_error([before[n] for n in names], x, objective)
    for n in ("U", "W", "b"):
        assert not torch.allclose(model.get_parameter(n), before[n]), n
    for n in ("V", "c"):
        assert torch.equal(model.get_parameter(n), before[n]), n
    assert torch.equal(model.V.grad, torch.ones_like(model.V))
    assert model.W.grad is None and model.W.requires_grad


def test_pretraining_is_seeded_and_validates():
    torch.manual_seed(1)
    x = torch.randn(8, 4, 2, dtype=F64)
    runs = []
    for _ in range(2):
        model = ElmanRNN(2, 5, 1, dtype=F64)
        initialize(model, "pretrained", seed=3, inputs=x, epochs=3, batch_size=3)
        runs.append(model.W.detach().clone())
    assert torch.equal(runs[0], runs[1])
    model = ElmanRNN(2, 5, 1, dtype=F64)
    with pytest.raises(ValueError, match="lr"):
        pretrain_sequence_autoencoder(model, x, epochs=1, lr=0.0)
    with pytest.raises(ValueError, match="objective"):
        pretrain_sequence_autoencoder(model, x, epochs=1, objective="contrastive")
    with pytest.raises(ValueError, match="at least 2 steps"):
        pretrain_sequence_autoencoder(model, x[:, :1], objective="language_model")
    with pytest.raises(TypeError, match="dtype"):
        pretrain_sequence_autoencoder(model, x.float())
    bad = x.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        pretrain_sequence_autoencoder(model, bad)
    with pytest.raises(ValueError, match="positive integer"):
        pretrain_sequence_autoencoder(model, x, epochs=0)
