"""Gradient clipping and a guard against non-finite gradients, for any learning rule.

Norm clipping (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
networks", Algorithm 1): with ``g`` all gradients concatenated and a threshold ``theta``::

    if ||g|| > theta:   g <- (theta / ||g||) g

It keeps the direction of the step and bounds its length, so a step taken on the steep "wall"
of an exploding-gradient region cannot throw the weights far away. Value clipping (the
elementwise clipping of Mikolov's 2012 thesis, discussed by Pascanu et al. 2013) clamps each
component, ``g_i <- max(-v, min(v, g_i))``: it also bounds the step, but changes its direction.

Learning rules here write ``param.grad`` (BPTT through autograd, RTRL by hand), so clipping
acts on ``.grad`` between the rule and ``optimizer.step()``, whatever the rule and optimizer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from rnnlab._validation import check_choice, check_number

Params = torch.Tensor | nn.Module | Iterable[torch.Tensor]

MODES = ("norm", "value")


def _params(parameters: Params) -> list[torch.Tensor]:
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    if isinstance(parameters, nn.Module):
        return list(parameters.parameters())
    out = list(parameters)
    for p in out:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameters must be tensors, got {type(p).__name__}")
    return out


def _check_threshold(name: str, value: float) -> float:
    # > 0; inf is allowed (a threshold that never clips)
    return check_number(name, value, low=0.0, low_open=True, allow_inf=True)


def _check_norm_type(norm_type: float) -> float:
    """``p`` of a vector p-norm: a number > 0, ``math.inf`` for the max-norm."""
    return check_number("norm_type", norm_type, low=0.0, low_open=True, allow_inf=True)


def _total_norm(grads: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    """``||(g_1, ..., g_k)||_p`` computed as the p-norm of the per-tensor p-norms, in float64
    (float32 on MPS) so that large but finite float32 gradients do not overflow to inf."""
    device = grads[0].device
    dtype = torch.float32 if device.type == "mps" else torch.float64
    per = torch.stack([
        torch.linalg.vector_norm(g, norm_type, dtype=dtype).to(device) for g in grads
    ])
    return torch.linalg.vector_norm(per, norm_type)


def _grads_and_norm(
    parameters: Params, norm_type: float
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The parameters' ``.grad`` tensors and their total ``norm_type``-norm (a 0-dim float64 zero
    when no parameter has a grad)."""
    norm_type = _check_norm_type(norm_type)
    grads = [p.grad for p in _params(parameters) if p.grad is not None]
    if not grads:
        return grads, torch.zeros((), dtype=torch.float64)
    return grads, _total_norm(grads, norm_type)


def clip_grad_norm_(
    parameters: Params,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> torch.Tensor:
    """Norm clipping (Pascanu et al. 2013): if ``||g|| > max_norm``, ``g <- max_norm g / ||g||``.

    ``g`` is the concatenation of every ``.grad`` in ``parameters`` (parameters without a grad
    are skipped), ``||.||`` the ``norm_type``-norm. Returns the norm *before* clipping (a 0-dim
    float64 tensor; 0 when no parameter has a grad). No host synchronisation.

    Differs from ``torch.nn.utils.clip_grad_norm_`` in two ways: the scale is exactly
    ``max_norm / ||g||`` (no ``1e-6`` added to the norm), and a non-finite norm never rescales
    (scaling by ``max_norm / inf = 0`` would turn inf entries into NaN): the gradients are left as
    they are, and the returned norm tells the caller (or, with ``error_if_nonfinite``, a
    ``FloatingPointError`` is raised). :class:`GradientClipper` acts on that.
    """
    max_norm = _check_threshold("max_norm", max_norm)
    grads, total = _grads_and_norm(parameters, norm_type)
    if not grads:
        return total
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise FloatingPointError(
            f"the total {float(norm_type)}-norm of the gradients is {float(total)}; not clipping"
        )
    scale = torch.where(
        torch.isfinite(total) & (total > max_norm), max_norm / total, torch.ones_like(total)
    )
    for g in grads:
        g.mul_(scale.to(device=g.device, dtype=g.dtype))
    return total


def clip_grad_value_(
    parameters: Params, clip_value: float, norm_type: float = 2.0
) -> torch.Tensor:
    """Value clipping: ``g_i <- max(-clip_value, min(clip_value, g_i))`` for every component.

    Returns the ``norm_type``-norm of all gradients *before* clipping, as
    :func:`clip_grad_norm_` does (NaN entries stay NaN; see :class:`GradientClipper`).
    """
    clip_value = _check_threshold("clip_value", clip_value)
    grads, total = _grads_and_norm(parameters, norm_type)
    for g in grads:
        g.clamp_(-clip_value, clip_value)
    return total


@dataclass(frozen=True)
class ClipResult:
    """What one :class:`GradientClipper` call found and did.

    ``norm``: the gradient norm before clipping (NaN or inf when non-finite); ``clipped``: the
    gradients were changed by clipping; ``finite``: every gradient entry was finite (if not, the
    gradients were dropped and the optimizer step must be skipped); ``stepped``: set by
    :meth:`GradientClipper.step`, whether the optimizer stepped.
    """

    norm: float
    clipped: bool
    finite: bool
    stepped: bool = False


class GradientClipper:
    """Clip gradients by norm or by value, and refuse non-finite gradients.

    Use between a learning rule (which writes ``param.grad``) and the optimizer::

        clipper = GradientClipper("norm", 1.0)
        ...  # rule.accumulate(x, y), or rule.step(x_t, y_t) until rule.grad_ready
        result = clipper.step(optimizer)     # clip; optimizer.step() only if finite
        optimizer.zero_grad()

    or ``result = clipper(params)`` and ``if result.finite: optimizer.step()``.

    Non-finite gradients (any NaN or inf entry): the clipper sets every ``.grad`` it was given
    to ``None`` and returns ``finite=False``; :meth:`step` then does not call the optimizer. So
    no NaN reaches the weights, and even a caller that steps anyway leaves them untouched:
    ``torch.optim`` optimizers skip parameters whose grad is None. It says so: a
    ``RuntimeWarning`` (``warn=True``), the counters ``skipped`` / ``calls``, or, with
    ``on_nonfinite="raise"``, a ``FloatingPointError`` (after dropping the gradients).

    Args:
        mode: ``"norm"`` (Pascanu et al. 2013) or ``"value"`` (elementwise).
        threshold: the norm bound theta, or the value bound v; > 0.
        norm_type: the p of the reported (and, for ``"norm"``, clipped) norm.
        on_nonfinite: ``"skip"`` (default) or ``"raise"``.
        warn: warn when a step is skipped.

    Cost: one host synchronisation per call (to decide whether to skip).
    """

    def __init__(
        self,
        mode: str = "norm",
        threshold: float = 1.0,
        norm_type: float = 2.0,
        on_nonfinite: str = "skip",
        warn: bool = True,
    ) -> None:
        check_choice("mode", mode, MODES)
        check_choice("on_nonfinite", on_nonfinite, ("skip", "raise"))
        self.mode = mode
        self.threshold = _check_threshold("threshold", threshold)
        self.norm_type = _check_norm_type(norm_type)
        self.on_nonfinite = on_nonfinite
        self.warn = warn
        self.calls = 0
        self.clipped = 0
        self.skipped = 0
        self.last: ClipResult | None = None

    def __call__(self, parameters: Params) -> ClipResult:
        """Clip the gradients of ``parameters`` in place; see the class docstring."""
        params = [p for p in _params(parameters) if p.grad is not None]
        self.calls += 1
        if not params:
            self.last = ClipResult(0.0, False, True)
            return self.last
        grads = [p.grad for p in params]
        total = _total_norm(grads, self.norm_type)
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        if self.mode == "norm":
            exceeds = total > self.threshold
        else:
            exceeds = torch.stack([
                g.abs().max().to(device=total.device, dtype=total.dtype)
                for g in grads if g.numel()
            ] or [total.new_zeros(())]).max() > self.threshold
        norm, ok, over = torch.stack(
            [total, finite.to(total.dtype), exceeds.to(total.dtype)]
        ).tolist()  # the one synchronisation
        if not ok:
            for p in params:
                p.grad = None
            self.skipped += 1
            self.last = ClipResult(norm, False, False)
            message = (
                f"non-finite gradient (norm {norm}) at call {self.calls}: gradients dropped, "
                f"the optimizer step must be skipped ({self.skipped} skipped so far)"
            )
            if self.on_nonfinite == "raise":
                raise FloatingPointError(message)
            if self.warn:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            return self.last
        if over:
            if self.mode == "norm":
                scale = self.threshold / total
                for g in grads:
                    g.mul_(scale.to(device=g.device, dtype=g.dtype))
            else:
                for g in grads:
                    g.clamp_(-self.threshold, self.threshold)
            self.clipped += 1
        self.last = ClipResult(norm, bool(over), True)
        return self.last

    def step(
        self, optimizer: torch.optim.Optimizer, parameters: Params | None = None
    ) -> ClipResult:
        """Clip the gradients of ``parameters`` (default: every parameter of ``optimizer``), then
        ``optimizer.step()`` only if they were finite. Gradients are not zeroed afterwards."""
        if parameters is None:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
        result = self(parameters)
        if result.finite:
            optimizer.step()
        self.last = ClipResult(result.norm, result.clipped, result.finite, result.finite)
        return self.last

    def __repr__(self) -> str:
        return (
            f"GradientClipper(mode={self.mode!r}, threshold={self.threshold}, "
            f"norm_type={self.norm_type}, calls={self.calls}, clipped={self.clipped}, "
            f"skipped={self.skipped})"
        )
