"""Intrinsic plasticity (IP): adapt each reservoir unit's gain and bias, not W.

A unit with net input ``x`` (everything summed before the non-linearity: ``W_in u + bias +
W x(t-1) (+ W_fb y)``), gain ``a`` and shift ``b`` outputs ``y = f(a x + b)``. IP adapts ``a``
and ``b`` online, one step at a time, by stochastic gradient descent on the Kullback–Leibler
divergence ``D(p_y || q)`` between the unit's output distribution and a target ``q``; W, W_in
and the bias are not touched.

* Triesch (2005), "A gradient rule for the plasticity of a neuron's intrinsic excitability"
  (ICANN 2005): logistic (Fermi) units ``y = 1 / (1 + exp(-(a x + b)))``, exponential target
  ``q(y) = exp(-y / mu) / mu``::

      db = lr (1 - (2 + 1/mu) y + y^2 / mu)
      da = lr / a + db x

* Schrauwen, Wardermann, Verstraeten, Steil & Stroobandt (2008), "Improving reservoirs using
  intrinsic plasticity", Neurocomputing 71: tanh units ``y = tanh(a x + b)``, Gaussian target
  ``N(mu, sigma^2)``::

      db = -lr (-mu / sigma^2 + y / sigma^2 (2 sigma^2 + 1 - y^2 + mu y))
      da = lr / a + db x

Both follow from ``D = E[log p_x] - E[log |dy/dx|] - E[log q(y)]`` with ``dy/dx = a f'(a x + b)``
(the derivation is written out in ``docs/reservoir_ip_deep.md``); ``db = -lr dD/db`` and
``da = -lr dD/da = lr / a + x db``. ``sigma`` is the target's standard deviation (ReservoirPy's
``IPReservoir`` calls its ``sigma`` a variance but uses it as a standard deviation, as here).

The reservoir state update is the leaky one of :class:`~rnnlab.reservoir.esn.EchoStateNetwork`:
``x(t) = (1 - leak) x(t-1) + leak y(t)``. IP works on ``y(t)``, the unit's activation before the
leaky integration (for ``leak = 1`` they coincide).

Batches. ``fit`` runs B sequences side by side; at step t the B per-sequence updates are
averaged (``a += mean_b da_b``, ``b += mean_b db_b``): one online gradient step on the
batch-mean KL divergence, so a batch of B sequences takes ``T`` updates per epoch, not ``B T``.
For B = 1 this is exactly the published rule. Each epoch restarts every sequence from the zero
state; the first ``washout`` steps of each epoch run the reservoir without updating ``a, b``.

Activation. The Triesch rule needs logistic units: ``EchoStateNetwork(...,
activation="logistic")`` (``f = sigmoid``; the deprecated ``LogisticEchoStateNetwork`` builds
the same); ``fit`` reads the model's ``activation`` attribute (``"tanh"`` when absent) and
refuses a rule/activation mismatch. The adapting loop runs the package's one reservoir step
(:mod:`rnnlab.reservoir._step`) in its three parts, since the rules need ``net`` and ``y``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rnnlab._validation import (
    check_int,
    check_number,
    check_positive_int,
    check_tensor,
    check_washout,
)
from rnnlab.reservoir._step import activate, integrate, net_input
from rnnlab.reservoir.deep import DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork, LogisticEchoStateNetwork

__all__ = [
    "RULES",
    "IntrinsicPlasticity",
    "LogisticEchoStateNetwork",  # deprecated; re-exported where it used to live
    "activation_of",
    "schrauwen_update",
    "triesch_update",
    "unit_outputs",
]

RULES = ("triesch", "schrauwen")
# The activation each published rule was derived for, and the output support of that unit.
RULE_ACTIVATION = {"triesch": "logistic", "schrauwen": "tanh"}
SUPPORT = {"logistic": (0.0, 1.0), "tanh": (-1.0, 1.0)}
DEFAULT_MU = {"triesch": 0.2, "schrauwen": 0.0}


def activation_of(model: torch.nn.Module) -> str:
    """The unit non-linearity of a reservoir: its ``activation`` attribute, else ``"tanh"``."""
    act = getattr(model, "activation", "tanh")
    if act not in SUPPORT:
        raise ValueError(f"unknown reservoir activation {act!r}; expected one of {tuple(SUPPORT)}")
    return act


# ------------------------------------------------------------------------------------------------
# The published update equations (vectorised: any broadcastable shapes)
def triesch_update(net: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lr: float, mu: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Triesch (2005) for logistic units and an exponential target of mean ``mu``.

    ``db = lr (1 - (2 + 1/mu) y + y^2/mu)``, ``da = lr/a + db net``; returns ``(da, db)``.
    """
    db = lr * (1.0 - (2.0 + 1.0 / mu) * y + y * y / mu)
    return lr / a + db * net, db


def schrauwen_update(net: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lr: float, mu: float,
                     sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Schrauwen et al. (2008) for tanh units and a Gaussian target ``N(mu, sigma^2)``.

    ``db = -lr (-mu/sigma^2 + y/sigma^2 (2 sigma^2 + 1 - y^2 + mu y))``, ``da = lr/a + db net``;
    returns ``(da, db)``.
    """
    s2 = sigma * sigma
    db = -lr * (-mu / s2 + y / s2 * (2.0 * s2 + 1.0 - y * y + mu * y))
    return lr / a + db * net, db


# ------------------------------------------------------------------------------------------------
class IntrinsicPlasticity:
    """Intrinsic-plasticity pre-training of a reservoir's gains ``a`` and shifts ``b``.

    Args:
        rule: ``"schrauwen"`` (tanh units, Gaussian target; Schrauwen et al. 2008) or
            ``"triesch"`` (logistic units, exponential target; Triesch 2005).
        lr: learning rate eta > 0.
        mu: target mean: in (-1, 1) for ``"schrauwen"`` (default 0), in (0, 1) for
            ``"triesch"`` (default 0.2; the exponential's mean, 1/lambda).
        sigma: target standard deviation > 0 (``"schrauwen"`` only).
        epochs: passes over the data.
        bins: histogram bins on the output support for the KL-divergence estimate.

    ``fit(model, inputs, washout)`` adapts ``model.a`` and ``model.b`` in place (a shallow
    :class:`EchoStateNetwork` (tanh or logistic units), or every layer of a
    :class:`~rnnlab.reservoir.deep.DeepEchoStateNetwork`, first to last, each on the states of
    the already adapted layers before it) and returns the history.

    Defaults (``lr = 5e-4``, ``sigma = 0.2``) are this library's choices, not the papers'.
    """

    def __init__(
        self,
        rule: str = "schrauwen",
        lr: float = 5e-4,
        mu: float | None = None,
        sigma: float = 0.2,
        epochs: int = 1,
        bins: int = 50,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.rule = rule
        self.lr = check_number("lr", lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.mu = DEFAULT_MU[rule] if mu is None else check_number("mu", mu)
        self.sigma = check_number("sigma", sigma)
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0 (the target's standard deviation), "
                             f"got {self.sigma}")
        lo, hi = SUPPORT[self.activation]
        if not lo < self.mu < hi:
            raise ValueError(
                f"mu={self.mu} is outside the output support ({lo}, {hi}) of the "
                f"{self.activation} units of the {rule!r} rule")
        self.epochs = check_positive_int("epochs", epochs)
        self.bins = check_positive_int("bins", bins)
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")

    @property
    def activation(self) -> str:
        """The unit non-linearity this rule is derived for."""
        return RULE_ACTIVATION[self.rule]

    def update(self, net: torch.Tensor, y: torch.Tensor, a: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(da, db)`` of this rule for net inputs ``net``, outputs ``y`` and gains ``a``."""
        if self.rule == "triesch":
            return triesch_update(net, y, a, self.lr, self.mu)
        return schrauwen_update(net, y, a, self.lr, self.mu, self.sigma)

    # --------------------------------------------------------------------------------------------
    # The target distribution and the KL-divergence estimate
    def bin_edges(self, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> torch.Tensor:
        """``bins + 1`` equal-width edges spanning the output support."""
        lo, hi = SUPPORT[self.activation]
        return torch.linspace(lo, hi, self.bins + 1, dtype=dtype, device=device)

    def target_bin_probabilities(self, device: torch.device | str | None = None
                                 ) -> torch.Tensor:
        """Probability of each histogram bin under the target truncated to the output support
        (renormalised on it), float64: the exponential on (0, 1) or the Gaussian on (-1, 1)."""
        e = self.bin_edges(torch.float64, device)
        lo, hi = e[:-1], e[1:]
        if self.rule == "triesch":
            # P(lo < Y < hi) = exp(-lo/mu) (1 - exp(-(hi - lo)/mu)), written with expm1 so that
            # narrow bins far in the tail keep their relative precision.
            p = torch.exp(-lo / self.mu) * -torch.expm1(-(hi - lo) / self.mu)
        else:
            zl, zh = (lo - self.mu) / self.sigma, (hi - self.mu) / self.sigma
            # Phi(z) = erfc(-z / sqrt 2) / 2 keeps its relative precision for z << 0 (torch's
            # ndtr returns 0 below z = -8.3); bins above the mean go through the survival
            # function Phi(-z), since 1 - Phi(z) loses all digits for z >> 0.
            def phi(z: torch.Tensor) -> torch.Tensor:
                return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))

            p = torch.where(zh <= 0, phi(zh) - phi(zl), phi(-zl) - phi(-zh))
        return p / p.sum()

    def kl_divergence(self, outputs: torch.Tensor) -> torch.Tensor:
        """Per-unit histogram estimate of ``D(p_y || q)`` in nats, shape ``(N,)``.

        ``outputs`` is ``(..., N)`` (every leading position one sample of each unit); each
        unit's samples are binned into ``bins`` equal bins on the support and
        ``sum_k p_k log(p_k / q_k)`` is taken over the non-empty bins, with ``q_k`` from
        :meth:`target_bin_probabilities`. The estimate is biased upwards by about
        ``(non-empty bins - 1) / (2 M)`` for M samples per unit.
        """
        y = _as_samples(outputs)
        lo, hi = SUPPORT[self.activation]
        idx = ((y.double() - lo) * (self.bins / (hi - lo))).floor().clamp_(0, self.bins - 1)
        counts = torch.zeros(y.shape[1], self.bins, dtype=torch.float64, device=y.device)
        counts.scatter_add_(1, idx.long().t(), torch.ones_like(idx).t())
        p = counts / y.shape[0]
        q = self.target_bin_probabilities(y.device).clamp_min(torch.finfo(torch.float64).tiny)
        terms = torch.where(p > 0, p * (torch.log(torch.where(p > 0, p, 1.0)) - torch.log(q)),
                            torch.zeros_like(p))
        return terms.sum(1)

    def statistics(self, outputs: torch.Tensor) -> dict[str, float]:
        """``mean`` and ``std`` (per unit over samples, then averaged over units) and ``kl``
        (mean over units of :meth:`kl_divergence`) of unit outputs ``(..., N)``."""
        y = _as_samples(outputs).double()
        return {"mean": float(y.mean(0).mean()),
                "std": float(y.std(0, unbiased=False).mean()),
                "kl": float(self.kl_divergence(y).mean())}

    # --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, model: torch.nn.Module, inputs: torch.Tensor, washout: int = 0,
            teacher: torch.Tensor | None = None, *, frozen_stats: bool = False
            ) -> dict[str, list[float]]:
        """Adapt ``a`` and ``b`` of ``model`` on ``inputs`` ``(batch, time, D)``.

        ``teacher`` (shallow ESN with output feedback only) is fed back as in
        :meth:`EchoStateNetwork.input_drive`. Returns the history: a dict of equal-length lists
        ``layer``, ``epoch``, ``mean``, ``std``, ``kl`` (one entry per layer and epoch; layer 0
        for a shallow ESN), the statistics of the outputs produced during that epoch (while
        adapting, after the washout). With ``frozen_stats=True`` also ``frozen_mean``,
        ``frozen_std``, ``frozen_kl``: the same statistics of a second run over the data with
        ``a, b`` frozen at the end of the epoch (one more pass per epoch). The two can differ
        much: while adapting, ``b`` follows slow drifts of the net input, and gains grown by IP
        can push a frozen reservoir past the echo state regime (see
        ``docs/reservoir_ip_deep.md``). Raises ``ValueError`` if, at the end of an epoch, a gain
        is not positive or ``a``/``b`` are not finite (too large a learning rate).
        """
        layers, deep = _layers(model)
        self._check_activation(layers)
        washout = _check_washout(washout, inputs)
        if deep is not None and teacher is not None:
            raise ValueError("teacher is only for a shallow ESN with output feedback")
        keys = ["layer", "epoch", "mean", "std", "kl"]
        if frozen_stats:
            keys += ["frozen_mean", "frozen_std", "frozen_kl"]
        history: dict[str, list[float]] = {k: [] for k in keys}
        prev = None
        for index, esn in enumerate(layers):
            layer_in = inputs if deep is None else deep.layer_input(index, inputs, prev)
            for epoch in range(self.epochs):
                y = _run(esn, layer_in, washout, teacher, self)
                # The rules descend a KL divergence that has log(a) in it: a gain that crossed
                # zero (or a non-finite value) means the step was too large, not a solution.
                if not (bool(torch.isfinite(esn.a).all()) and bool(torch.isfinite(esn.b).all())
                        and bool((esn.a > 0).all())):
                    raise ValueError(
                        f"intrinsic plasticity diverged (a gain <= 0 or a non-finite gain/bias "
                        f"in layer {index}, epoch {epoch}): lower lr (now {self.lr})")
                stats = self.statistics(y)
                history["layer"].append(index)
                history["epoch"].append(epoch)
                for key in ("mean", "std", "kl"):
                    history[key].append(stats[key])
                if frozen_stats:
                    frozen = self.statistics(_run(esn, layer_in, washout, teacher, None))
                    for key in ("mean", "std", "kl"):
                        history["frozen_" + key].append(frozen[key])
            if deep is not None and index + 1 < len(layers):
                prev = esn.states(layer_in)
        return history

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, inputs: torch.Tensor, washout: int = 0,
                 teacher: torch.Tensor | None = None) -> list[dict[str, float]]:
        """:meth:`statistics` of the unit outputs of every layer (one dict per layer; a
        shallow ESN has one) with ``a, b`` frozen."""
        self._check_activation(_layers(model)[0])
        return [self.statistics(y) for y in unit_outputs(model, inputs, washout, teacher)]

    def _check_activation(self, layers: list[EchoStateNetwork]) -> None:
        for esn in layers:
            act = activation_of(esn)
            if act != self.activation:
                raise ValueError(
                    f"the {self.rule!r} rule is derived for {self.activation} units but the "
                    f"reservoir has {act} units: use "
                    + ("activation='logistic' (EchoStateNetwork or DeepEchoStateNetwork)"
                       if self.rule == "triesch" else "a tanh EchoStateNetwork")
                    + f", or rule={'schrauwen' if self.rule == 'triesch' else 'triesch'!r}")

    def __repr__(self) -> str:
        extra = f", sigma={self.sigma}" if self.rule == "schrauwen" else ""
        return (f"IntrinsicPlasticity(rule={self.rule!r}, lr={self.lr}, mu={self.mu}{extra}, "
                f"epochs={self.epochs})")


# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def unit_outputs(model: torch.nn.Module, inputs: torch.Tensor, washout: int = 0,
                 teacher: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The unit activations ``y(t) = f(a net(t) + b)`` (before the leaky integration) of every
    layer, each ``(batch, time - washout, N_l)``; a list with one tensor for a shallow ESN."""
    layers, deep = _layers(model)
    washout = _check_washout(washout, inputs)
    if deep is not None and teacher is not None:
        raise ValueError("teacher is only for a shallow ESN with output feedback")
    outs, prev = [], None
    for index, esn in enumerate(layers):
        layer_in = inputs if deep is None else deep.layer_input(index, inputs, prev)
        outs.append(_run(esn, layer_in, washout, teacher, None))
        if deep is not None and index + 1 < len(layers):
            prev = esn.states(layer_in)
    return outs


def _run(esn: EchoStateNetwork, inputs: torch.Tensor, washout: int,
         teacher: torch.Tensor | None, ip: IntrinsicPlasticity | None) -> torch.Tensor:
    """Run ``esn`` over ``inputs`` from the zero state, returning the activations y after the
    washout; with ``ip``, update ``esn.a`` and ``esn.b`` in place at every step after it."""
    drive = esn.input_drive(inputs, teacher)
    batch, steps, _ = drive.shape
    act = activation_of(esn)
    sparse = esn.uses_sparse(batch)
    weight = esn.recurrent_csr() if sparse else esn.W.t()
    a, b, leak = esn.a, esn.b, esn.leak
    full_leak = bool((leak == 1).all())
    ys = drive.new_empty(batch, steps - washout, esn.units)
    x = esn.initial_state(batch)
    for t in range(steps):
        net = net_input(drive[:, t], x, weight, sparse)
        # never ``plain``: a and b change during the loop
        y = activate(net, a, b, False, act)
        if t >= washout:
            ys[:, t - washout] = y
            if ip is not None:
                da, db = ip.update(net, y, a)
                # Batch mean of the per-sequence updates (module docstring).
                a.add_(da.mean(0))
                b.add_(db.mean(0))
        x = integrate(x, y, leak, full_leak)
    return ys


def _layers(model: torch.nn.Module) -> tuple[list[EchoStateNetwork], Any]:
    if isinstance(model, DeepEchoStateNetwork):
        return list(model.layers), model
    if isinstance(model, EchoStateNetwork):
        return [model], None
    raise TypeError(f"model must be an EchoStateNetwork or a DeepEchoStateNetwork, "
                    f"got {type(model).__name__}")


def _check_washout(washout: Any, inputs: Any) -> int:
    washout = check_int("washout", washout, low=0)
    check_tensor("inputs", inputs, ndim=3, layout="(batch, time, features)")
    check_washout(washout, inputs.shape[1])
    return washout


def _as_samples(outputs: torch.Tensor) -> torch.Tensor:
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor, got {type(outputs).__name__}")
    if outputs.dim() < 1 or outputs.numel() == 0:
        raise ValueError(f"outputs must be a non-empty (..., units) tensor, "
                         f"got shape {tuple(outputs.shape)}")
    y = outputs.reshape(-1, outputs.shape[-1])
    check_tensor("outputs", y, ndim=2, layout="(samples, units)")
    return y
