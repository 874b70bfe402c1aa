"""Initializations of the recurrent weights that make long-term dependencies learnable.

Each initializer takes a tensor or a model, changes it in place and returns the tensor. A model's
recurrent matrix is its parameter ``W`` (the :class:`~rnnlab.ElmanRNN`) or, for any model of the
cell protocol (a :class:`~rnnlab.models.RecurrentNetwork` over a cell), ``model.cell.weight_hh``
(for gated cells the gates' blocks stacked, ``(gates * N, N)``: :func:`orthogonal_` then gives it
orthonormal columns; the square-only schemes refuse it). Its input matrix is ``U`` or
``cell.weight_ih``, its hidden biases ``b`` or ``cell.bias_ih``/``cell.bias_hh``. Randomness comes
from ``generator`` (a ``torch.Generator``; None uses torch's global generator). Random numbers
are drawn in float64 on the generator's device (the CPU by default) and then copied, so one seed
gives the same matrix, up to rounding, whatever the tensor's dtype and device.

* :func:`orthogonal_` (Saxe, McClelland & Ganguli 2014): ``W = gain * Q``, Q a random orthogonal
  matrix (Haar distributed): every singular value of W equals ``gain``, so a linear
  recurrence neither shrinks nor grows any direction, and ``||W^k||_2 = gain^k`` exactly.
* :func:`identity_` (IRNN; Le, Jaitly & Hinton 2015): ``W = scale * I``, biases 0. With ReLU
  units and zero input the state is copied unchanged from step to step, so the error derivative
  flows back unchanged too. The Elman RNN here uses tanh: around ``h = 0``, ``tanh`` is the
  identity to first order, so ``W = I`` makes the step Jacobian ``diag(1 - h^2)`` close to I for
  small states, but it shrinks as units saturate (``|1 - h^2| < 1``), and ``h(t) = tanh(h(t-1)
  + U x(t))`` keeps integrating its input: a marginally stable start, not the exact identity
  map that ReLU gives.
* :func:`sparse_spectral_` (Sutskever, Martens, Dahl & Hinton 2013, after Martens 2010's sparse
  initialization): each unit gets exactly ``k = 15`` nonzero incoming weights drawn from a unit
  Gaussian, then W is rescaled to a spectral radius ``rho(W)`` (1.1 for tanh in the paper).
  Slightly above 1, the linearized dynamics neither forget quickly nor, thanks to the saturation
  of tanh, diverge.
* :func:`sparse_singular_` (Pascanu's GroundHog code, ``sample_weights``): ``k = 20`` nonzero
  outgoing weights per input unit, uniform, then W scaled to a largest singular value of 1;
  rectangular matrices too (the deep-transition layers).
* :func:`pretrain_sequence_autoencoder` (Dai & Le 2015, "Semi-supervised sequence learning"):
  unsupervised pre-training of U, W, b as a sequence autoencoder (or a next-step predictor, their
  "language model" variant), by BPTT, on the task's input sequences alone.

:func:`initialize` applies one of these by name (:data:`INITIALIZERS`) to a whole model.

(Over 500 lines: the initialisation schemes of the course share one way to find a model's
matrices and one seeding rule, and each scheme is short; split per scheme they would repeat it.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rnnlab._validation import check_choice, check_number, check_positive_int, check_tensor
from rnnlab.cells.base import RecurrentCell, run_cell
from rnnlab.learning.clipping import clip_grad_norm_

Target = torch.Tensor | nn.Module


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _cell_tensor(model: nn.Module, name: str) -> torch.Tensor | None:
    """``model.cell.<name>`` when the model runs a cell that has such a tensor, else None."""
    cell = getattr(model, "cell", None)
    value = getattr(cell, name, None) if isinstance(cell, nn.Module) else None
    return value if isinstance(value, torch.Tensor) else None


def _weight(target: Target) -> torch.Tensor:
    """The tensor to initialize: ``target`` itself, or a model's recurrent matrix (``W``, else
    ``model.cell.weight_hh``)."""
    if isinstance(target, torch.Tensor):
        return target
    if isinstance(target, nn.Module):
        w = getattr(target, "W", None)
        if not isinstance(w, torch.Tensor):
            w = _cell_tensor(target, "weight_hh")
        if isinstance(w, torch.Tensor):
            return w
        raise TypeError(
            f"{type(target).__name__} has no recurrent matrix (a parameter W, or a cell with "
            "weight_hh; a stack of cells has one per layer): pass the weight tensor itself, "
            "e.g. model.cell.layers[0].weight_hh"
        )
    raise TypeError(
        f"expected a tensor or a model with a recurrent matrix, got {type(target).__name__}"
    )


def _input_weight(model: nn.Module) -> torch.Tensor | None:
    u = getattr(model, "U", None)
    return u if isinstance(u, torch.Tensor) else _cell_tensor(model, "weight_ih")


def _square(w: torch.Tensor, what: str) -> int:
    if w.dim() != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"{what} needs a square matrix (N x N), got shape {tuple(w.shape)}")
    return w.shape[0]


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _randn(*shape: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64,
                       device=_draw_device(generator))


def _copy(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        dst.copy_(src)
    return dst


def _spectral_radius(m: torch.Tensor) -> float:
    """``max |lambda_i(m)|`` from the eigenvalues (``torch.linalg.eigvals``), in float64."""
    return float(torch.linalg.eigvals(m.detach().to("cpu", torch.float64)).abs().max())


def _zero_bias(model: nn.Module) -> None:
    """Zero the hidden biases: ``b``, else the cell's ``bias_ih`` and ``bias_hh``."""
    b = getattr(model, "b", None)
    biases = [b] if isinstance(b, torch.Tensor) else [
        t for t in (_cell_tensor(model, "bias_ih"), _cell_tensor(model, "bias_hh"))
        if t is not None
    ]
    with torch.no_grad():
        for t in biases:
            t.zero_()


# ----------------------------------------------------------------------------------------------
# initializers
# ----------------------------------------------------------------------------------------------
def orthogonal_(
    target: Target, gain: float = 1.0, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``W <- gain * Q`` with Q uniformly (Haar) distributed on the orthogonal matrices.

    Saxe, McClelland & Ganguli 2014 ("Exact solutions to the nonlinear dynamics of learning in
    deep linear neural networks"): orthogonal weights keep every singular value at ``gain``, so
    products of them, ``W^k``, keep norm ``gain^k``. Q is the Q factor of a Gaussian matrix with
    the signs of R's diagonal folded in (Mezzadri 2007), which makes it Haar distributed. A
    non-square ``(r, c)`` tensor gets orthonormal rows (r <= c) or columns (r > c), times
    ``gain``. On a model, only ``W`` changes.
    """
    w = _weight(target)
    if w.dim() != 2:
        raise ValueError(f"orthogonal_ needs a matrix, got shape {tuple(w.shape)}")
    gain = check_number("gain", gain, low=0.0, low_open=True)
    rows, cols = w.shape
    a = _randn(max(rows, cols), min(rows, cols), generator=generator)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1.0)
    if rows < cols:
        q = q.t()
    return _copy(w, gain * q)


def identity_(
    target: Target,
    scale: float = 1.0,
    *,
    input_std: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``W <- scale * I`` (the IRNN of Le, Jaitly & Hinton 2015; ``scale < 1`` is their scaled
    variant, which forgets at rate ``scale``; they used 0.01 I for speech).

    On a model the hidden bias ``b`` is also set to 0, as in the paper; with ``input_std`` the
    input weights are drawn ``U ~ N(0, input_std^2)`` (the paper drew its non-recurrent weights
    with std 0.001), otherwise U is left as it is. ``generator`` is used only for U. The paper's
    units are ReLU; for the tanh units of :class:`~rnnlab.ElmanRNN` see the module docstring.
    """
    w = _weight(target)
    n = _square(w, "identity_")
    scale = check_number("scale", scale, low=0.0, low_open=True)
    _copy(w, scale * torch.eye(n, dtype=torch.float64))
    if isinstance(target, nn.Module):
        _zero_bias(target)
        if input_std is not None:
            input_std = check_number("input_std", input_std, low=0.0, low_open=True)
            u = _input_weight(target)
            if u is None:
                raise TypeError(
                    f"{type(target).__name__} has no input matrix (U or cell.weight_ih) for "
                    "input_std"
                )
            _copy(u, input_std * _randn(*u.shape, generator=generator))
    elif input_std is not None:
        raise ValueError("input_std applies to a model's U; pass the model, not a tensor")
    return w


def sparse_spectral_(
    target: Target,
    k: int | None = None,
    spectral_radius: float = 1.1,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sparse initialization scaled to a spectral radius (Sutskever, Martens, Dahl & Hinton 2013).

    Each row i of W (the incoming weights of unit i, since ``h_i = tanh(sum_j W_ij h_j + ...)``)
    gets exactly ``k`` nonzero entries, in columns chosen uniformly without replacement (a
    self-connection is allowed), with values from N(0, 1); then ``W <- W * spectral_radius /
    rho(W)``, ``rho`` from the eigenvalues (``torch.linalg.eigvals``). ``k`` defaults to
    ``min(15, N)`` (the paper's 15); an explicit ``k > N`` is an error. On a model, only ``W``
    changes.

    Raises ``ValueError`` for a non-square W, ``k`` outside ``1..N``, ``spectral_radius <= 0``,
    or a draw whose spectral radius is 0 (a nilpotent pattern, possible for tiny ``k``: use
    another seed or a larger ``k``).
    """
    w = _weight(target)
    n = _square(w, "sparse_spectral_")
    if k is None:
        k = min(15, n)
    k = check_positive_int("k", k)
    if k > n:
        raise ValueError(f"k={k} nonzero incoming weights per unit but there are only N={n} units")
    spectral_radius = check_number("spectral_radius", spectral_radius, low=0.0, low_open=True)
    device = _draw_device(generator)
    # A random permutation per row (argsort of uniforms); its first k entries are the columns.
    cols = torch.rand(n, n, generator=generator, device=device).argsort(dim=1)[:, :k]
    m = torch.zeros(n, n, dtype=torch.float64, device=device)
    m.scatter_(1, cols, _randn(n, k, generator=generator))
    rho = _spectral_radius(m)
    if not rho > 1e-12 * float(m.abs().max()):
        raise ValueError(
            f"the sparse draw (k={k}) has spectral radius {rho:.3g} and cannot be scaled; "
            "use a larger k or another seed"
        )
    return _copy(w, m * (spectral_radius / rho))


def sparse_singular_(
    target: Target,
    k: int = 20,
    scale: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sparse initialization scaled to a largest singular value (Pascanu's GroundHog code).

    GroundHog's ``sample_weights`` (``groundhog/utils/utils.py``; used for the recurrent layers
    of its deep-transition tutorial with ``rec_sparse = 20``, ``rec_scale = 1``): each *input*
    unit j (a column of W here, ``y = W x``; a row of GroundHog's ``x W``) gets ``min(k, rows)``
    nonzero outgoing weights, in rows chosen uniformly without replacement, with values from
    U(-scale, scale) rescaled so that the column's Euclidean norm is ``scale``; then
    ``W <- W * scale / sigma_max(W)``, so the largest singular value (the spectral norm, which
    bounds how much one step can stretch a state) is exactly ``scale``. Unlike
    :func:`sparse_spectral_` the matrix may be rectangular. On a model, only its recurrent
    matrix changes (``W`` or ``cell.weight_hh``).

    Raises ``ValueError`` for a tensor that is not 2-D, ``k < 1`` or ``scale <= 0``.
    """
    w = _weight(target)
    if w.dim() != 2:
        raise ValueError(f"sparse_singular_ needs a 2-D weight, got shape {tuple(w.shape)}")
    k = check_positive_int("k", k)
    scale = check_number("scale", scale, low=0.0, low_open=True)
    rows, cols = w.shape
    k = min(k, rows)  # as GroundHog: numpy.minimum(sizeY, sparsity)
    device = _draw_device(generator)
    # one random permutation of the rows per column (argsort of uniforms), first k kept
    picked = torch.rand(cols, rows, generator=generator, device=device).argsort(dim=1)[:, :k]
    values = torch.rand(cols, k, generator=generator, dtype=torch.float64, device=device) * 2 - 1
    # GroundHog draws U(-scale, scale) and then sets each column's norm to scale: only the
    # direction of the draw survives, so U(-1, 1) is the same
    values = values * (scale / values.norm(dim=1, keepdim=True))
    m = torch.zeros(cols, rows, dtype=torch.float64, device=device)
    m.scatter_(1, picked, values)
    m = m.T
    return _copy(w, m * (scale / float(torch.linalg.matrix_norm(m, ord=2))))


# ----------------------------------------------------------------------------------------------
# unsupervised pre-training
# ----------------------------------------------------------------------------------------------
OBJECTIVES = ("autoencoder", "language_model")


@dataclass
class PretrainReport:
    """Outcome of :func:`pretrain_sequence_autoencoder`.

    ``initial_error`` / ``final_error``: the mean squared error per input component (over
    sequences, steps and features) of the objective's reconstruction, on all ``inputs``, before
    and after training. ``losses``: the same error averaged over each epoch's minibatches, as
    trained. ``decoder_weight`` (D x N) and ``decoder_bias`` (D): the auxiliary linear decoder
    ``x_hat = decoder_weight h + decoder_bias``, dropped from the model but returned so the
    errors can be checked.
    """

    objective: str
    initial_error: float
    final_error: float
    losses: list[float] = field(default_factory=list)
    decoder_weight: torch.Tensor | None = None
    decoder_bias: torch.Tensor | None = None


def _require_recurrence(model: nn.Module) -> None:
    """Pre-training and initialize() need a recurrent matrix and a way to run the recurrence."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a model (an nn.Module), got {type(model).__name__}")
    _weight(model)
    if not isinstance(getattr(model, "cell", None), RecurrentCell) and not callable(
        getattr(model, "hidden_states", None)
    ):
        raise TypeError(
            f"{type(model).__name__} runs no cell (model.cell, a RecurrentCell) and has no "
            "hidden_states(x, h0) method"
        )


def _recurrent_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The parameters of the recurrence (the cell's; U, W, b for an Elman-type model)."""
    cell = getattr(model, "cell", None)
    if isinstance(cell, RecurrentCell):
        return list(cell.parameters())
    return [model.U, model.W, model.b]


def _run(model: nn.Module, x: torch.Tensor, state0: Any = None) -> tuple[torch.Tensor, Any]:
    """``(hidden outputs (batch, time, N), final state)`` of the model's recurrence over x."""
    cell = getattr(model, "cell", None)
    if isinstance(cell, RecurrentCell):
        outputs, final, _ = run_cell(cell, x, state0, impl=getattr(model, "impl", "auto"))
        return outputs, final
    states = model.hidden_states(x, state0)
    return states, states[:, -1]


def reconstruction(
    model: nn.Module,
    decoder_weight: torch.Tensor,
    decoder_bias: torch.Tensor,
    x: torch.Tensor,
    objective: str = "autoencoder",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-training objective's prediction and its target, both ``(batch, steps, D)``.

    * ``"autoencoder"`` (Dai & Le 2015's sequence autoencoder, with the encoder's weights reused
      by the decoder as in the paper): the network reads ``x(1..T)`` from ``h(0) = 0``; from
      ``h(T)`` it keeps running, fed the previous input (``0, x(1), ..., x(T-1)``; teacher
      forcing), and the decoder reads ``x_hat(s)`` off each of these states; target
      ``x(1..T)``.
    * ``"language_model"`` (their recurrent language-model variant): ``x_hat(t+1)`` is read off
      ``h(t)``; target ``x(2..T)``.
    """
    check_choice("objective", objective, OBJECTIVES)
    states, final = _run(model, x)
    if objective == "language_model":
        return states[:, :-1] @ decoder_weight.t() + decoder_bias, x[:, 1:]
    shifted = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
    decoded, _ = _run(model, shifted, final)
    return decoded @ decoder_weight.t() + decoder_bias, x


def pretrain_sequence_autoencoder(
    model: nn.Module,
    inputs: torch.Tensor,
    epochs: int = 50,
    lr: float = 1e-2,
    *,
    objective: str = "autoencoder",
    batch_size: int | None = None,
    clip_norm: float | None = 1.0,
    generator: torch.Generator | None = None,
) -> PretrainReport:
    """Unsupervised pre-training of U, W and b (Dai & Le 2015, "Semi-supervised sequence learning").

    Trains the model's recurrence together with an auxiliary linear decoder to minimise the mean
    squared reconstruction error of :func:`reconstruction` (``objective="autoencoder"``: the
    sequence autoencoder; ``"language_model"``: next-input prediction) by full BPTT (autograd)
    with Adam (learning rate ``lr``), minibatches of ``batch_size`` sequences (default: all) in
    an order shuffled by ``generator``, and the gradient norm clipped to ``clip_norm``
    (Pascanu et al. 2013; None for no clipping). Afterwards the decoder is dropped and U, W, b
    keep their trained values: the supervised task then starts from a recurrence that already
    carries information about its inputs through time. The readout V, c is not touched (it is
    not part of the objective), nor are existing ``.grad`` fields of any parameter.

    Args:
        model: an Elman-type model (parameters U, W, b and ``hidden_states(x, h0)``) or any
            network over a cell (``model.cell``): the cell's parameters are trained.
        inputs: the task's input sequences ``(sequences, time, D)``, no targets needed
            (``time >= 2`` for ``"language_model"``).

    Returns:
        a :class:`PretrainReport`.
    """
    _require_recurrence(model)
    check_choice("objective", objective, OBJECTIVES)
    check = getattr(model, "check_input", None)
    if callable(check):
        check(inputs, "inputs")
    else:
        check_tensor("inputs", inputs, ndim=3, layout="(sequences, time, features)")
    if objective == "language_model" and inputs.shape[1] < 2:
        raise ValueError("the language_model objective needs sequences of at least 2 steps")
    epochs = check_positive_int("epochs", epochs)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    count = inputs.shape[0]
    batch_size = count if batch_size is None else check_positive_int("batch_size", batch_size)
    if clip_norm is not None:
        clip_norm = check_number("clip_norm", clip_norm, low=0.0, low_open=True)

    w = _weight(model)
    n, d = w.shape[1], inputs.shape[2]  # N: the columns of W (gated cells stack gate rows)
    # Decoder initialised like nn.Linear (uniform +-1/sqrt(fan_in)), from the generator.
    bound = 1.0 / math.sqrt(n)
    draw = _draw_device(generator)
    dec_w = (torch.rand(d, n, generator=generator, dtype=torch.float64, device=draw) * 2 - 1)
    dec_b = (torch.rand(d, generator=generator, dtype=torch.float64, device=draw) * 2 - 1)
    dec_w = (dec_w * bound).to(w.device, w.dtype).requires_grad_(True)
    dec_b = (dec_b * bound).to(w.device, w.dtype).requires_grad_(True)

    trained = _recurrent_parameters(model)
    saved_grads = [p.grad for p in trained]
    saved_flags = [p.requires_grad for p in trained]
    params = [*trained, dec_w, dec_b]

    def error(x: torch.Tensor) -> torch.Tensor:
        pred, target = reconstruction(model, dec_w, dec_b, x, objective)
        return (pred - target).pow(2).mean()

    try:
        for p in trained:
            p.requires_grad_(True)
            p.grad = None
        optimizer = torch.optim.Adam(params, lr=lr)
        with torch.no_grad():
            initial = float(error(inputs))
        losses = []
        for _ in range(epochs):
            order = torch.randperm(count, generator=generator, device=draw).to(inputs.device)
            total, batches = 0.0, 0
            for start in range(0, count, batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = error(inputs[order[start : start + batch_size]])
                loss.backward()
                if clip_norm is not None:
                    clip_grad_norm_(params, clip_norm)
                optimizer.step()
                total += float(loss.detach())
                batches += 1
            losses.append(total / batches)
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(
                    f"pre-training loss became {losses[-1]}; lower lr or set clip_norm"
                )
        with torch.no_grad():
            final = float(error(inputs))
    finally:
        for p, g, flag in zip(trained, saved_grads, saved_flags, strict=True):
            p.grad = g
            p.requires_grad_(flag)
    return PretrainReport(objective, initial, final, losses,
                          dec_w.detach(), dec_b.detach())


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------
def _init_default(model: nn.Module, *, generator: torch.Generator | None = None) -> None:
    """``model.reset_parameters``: U, W, b, V, c ~ U(-1/sqrt(N), 1/sqrt(N)), as ``nn.RNN``; for a
    network over a cell without it, the cell's ``reset_parameters`` then ``reset_readout``."""
    reset = getattr(model, "reset_parameters", None)
    if callable(reset):
        reset(generator=generator)
        return
    cell_reset = getattr(getattr(model, "cell", None), "reset_parameters", None)
    readout_reset = getattr(model, "reset_readout", None)
    if not callable(cell_reset) or not callable(readout_reset):
        raise TypeError(
            f"{type(model).__name__} has no reset_parameters(generator) (nor a cell with one "
            "and reset_readout(generator))"
        )
    cell_reset(generator=generator)
    readout_reset(generator=generator)


def _init_orthogonal(
    model: nn.Module, *, gain: float = 1.0, generator: torch.Generator | None = None
) -> None:
    orthogonal_(model, gain, generator=generator)
    _zero_bias(model)


def _init_identity(
    model: nn.Module,
    *,
    scale: float = 1.0,
    input_std: float | None = None,
    generator: torch.Generator | None = None,
) -> None:
    identity_(model, scale, input_std=input_std, generator=generator)


def _init_sparse_spectral(
    model: nn.Module,
    *,
    k: int | None = None,
    spectral_radius: float = 1.1,
    generator: torch.Generator | None = None,
) -> None:
    sparse_spectral_(model, k, spectral_radius, generator=generator)
    _zero_bias(model)


def _init_pretrained(
    model: nn.Module,
    *,
    inputs: torch.Tensor | None = None,
    base: str | None = None,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> None:
    if inputs is None:
        raise ValueError("the 'pretrained' initializer needs inputs=<(sequences, time, D) tensor>")
    if base is not None:
        if base == "pretrained" or base not in INITIALIZERS:
            raise ValueError(
                f"base must be None or one of {sorted(set(INITIALIZERS) - {'pretrained'})}, "
                f"got {base!r}"
            )
        INITIALIZERS[base](model, generator=generator)
    pretrain_sequence_autoencoder(model, inputs, generator=generator, **kwargs)


# name -> f(model, *, generator=None, **options): changes the model in place, on top of what it
# holds ("default" redraws everything); initialize() is the entry point.
INITIALIZERS: dict[str, Callable[..., None]] = {
    "default": _init_default,
    "orthogonal": _init_orthogonal,
    "identity": _init_identity,
    "sparse_spectral": _init_sparse_spectral,
    "pretrained": _init_pretrained,
}


def initialize(
    model: nn.Module,
    name: str,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Initialize a model by name and return it: an Elman-type model or any network over a cell
    (the recurrent matrix, input matrix and biases as in the module docstring).

    First every parameter is reset with ``model.reset_parameters(generator)`` (U, W, b, V, c ~
    U(-1/sqrt(N), 1/sqrt(N)), as ``nn.RNN``; a network over a cell: the cell's
    ``reset_parameters`` and the network's ``reset_readout``), so the result depends only on
    the seed, not on what the model held; then ``name`` sets:

    ===============  ============================================================================
    name             sets
    ===============  ============================================================================
    default          nothing more
    orthogonal       W = gain * orthogonal (``gain=1.0``); b = 0
    identity         W = scale * I (``scale=1.0``); b = 0; U ~ N(0, input_std^2) if ``input_std``
    sparse_spectral  W: k (``min(15, N)``) N(0, 1) weights per unit, rescaled to rho(W) =
                     ``spectral_radius`` (1.1); b = 0
    pretrained       the ``base`` initializer if given (e.g. ``"orthogonal"``), then
                     :func:`pretrain_sequence_autoencoder` on ``inputs=`` (its keyword arguments
                     ``epochs``, ``lr``, ``objective``, ``batch_size``, ``clip_norm`` pass through)
    ===============  ============================================================================

    U (except with ``input_std``) and the readout V, c keep the default draw: the schemes
    concern the recurrence. Extra keyword arguments go to the named initializer. Randomness:
    ``generator``, else a fresh generator on the model's device seeded with ``seed`` (the same
    seed gives the same model on the same kind of device), else torch's global generator.
    """
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}")
    _require_recurrence(model)
    if name in ("identity", "sparse_spectral"):
        _square(_weight(model), name)  # refuse before anything is changed
    if generator is None and seed is not None:
        # On the model's device: reset_parameters draws in place there.
        generator = torch.Generator(device=_weight(model).device).manual_seed(int(seed))
    _init_default(model, generator=generator)
    if name != "default":
        INITIALIZERS[name](model, generator=generator, **kwargs)
    elif kwargs:
        raise TypeError(f"the default initializer takes no options, got {sorted(kwargs)}")
    return model
