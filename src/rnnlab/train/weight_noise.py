"""Weight noise: the gradient of every update taken at randomly perturbed weights.

Jim, Giles & Horne (1996, "An analysis of noise in recurrent neural networks: convergence and
generalization", IEEE TNN 7(6)) add noise to the weights of a recurrent network during training
as a regulariser; Graves (2011, "Practical variational inference for neural networks") writes it
as the simplest variational posterior; Pascanu's GroundHog code trains its deep RNNs with it
(``state['weight_noise_amount'] = 0.075`` in ``tutorials/DT_RNN_Tut.py``). Per update::

    n ~ N(0, std^2 I)   (one draw per weight, fresh for every update)
    g = grad_W  L(W + n; minibatch)
    W <- optimizer step of W with g      (the clean weights move; n is discarded)

Biases are left unperturbed by default (GroundHog's ``state['no_noise_bias'] = True``); validation
and testing use the clean weights. With truncated BPTT one draw covers all chunks of a minibatch
(they make one update). The noise comes from the object's own generator, seeded with ``seed``,
and its state is part of a :class:`~rnnlab.train.Trainer` checkpoint, so a resumed run draws the
same noise as one never stopped. The clean weights are copied before the perturbation and copied
back after the backward pass, so no rounding of ``(W + n) - n`` is left in them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rnnlab._validation import check_bool, check_int, check_number


def is_bias(name: str) -> bool:
    """Whether the parameter called ``name`` (a ``named_parameters`` key) is a bias: its last
    component starts with ``bias`` (``bias``, ``bias_ih``, ``bias_hh``, ...)."""
    return name.rsplit(".", 1)[-1].startswith("bias")


class WeightNoise:
    """Gaussian weight noise of standard deviation ``std`` for :class:`~rnnlab.train.Trainer`
    (its ``weight_noise`` argument; see the module docstring for the rule and its sources).

    Args:
        std: the noise's standard deviation (> 0).
        biases: perturb biases too (default False, as GroundHog).
        seed: seed of the noise's own CPU generator (draws are made on the CPU in float64 and
            then cast and copied, so one seed gives the same noise, up to rounding, on every
            device and dtype; on a GPU that is one host-to-device copy per parameter and
            update). Under ``distributed=True`` every rank must use the same seed: the ranks'
            gradients are averaged, which is the whole batch's gradient at one ``W + n`` only
            if they all draw the same ``n``.
    """

    def __init__(self, std: float, *, biases: bool = False, seed: int = 0) -> None:
        self.std = check_number("std", std, low=0.0, low_open=True)
        self.biases = check_bool("biases", biases)
        self.seed = check_int("seed", seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.draws = 0

    def parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The trainable parameters of ``model`` that get noise, in ``named_parameters`` order
        (a parameter shared by two modules once); ``ValueError`` if there is none."""
        chosen = [(name, p) for name, p in model.named_parameters()
                  if p.requires_grad and (self.biases or not is_bias(name))]
        if not chosen:
            raise ValueError("weight noise found no parameter to perturb in "
                             f"{type(model).__name__} (biases={self.biases})")
        return chosen

    def draw(self, like: torch.Tensor) -> torch.Tensor:
        """One noise tensor shaped, typed and placed as ``like``."""
        n = torch.randn(like.shape, generator=self.generator, dtype=torch.float64)
        return (n * self.std).to(dtype=like.dtype, device=like.device)

    @contextmanager
    def perturbed(self, model: nn.Module) -> Iterator[None]:
        """Inside the block the weights of ``model`` are ``W + n`` (a fresh draw); on leaving it
        (also on an exception) they are the clean ``W`` again, bit for bit. Gradients written
        inside the block stay in ``.grad``: they are the gradients at ``W + n``."""
        chosen = self.parameters(model)
        clean = [p.detach().clone() for _, p in chosen]
        self.draws += 1
        try:
            # inside the try: a failure while adding (a device out of memory, a signal) still
            # puts every weight back
            with torch.no_grad():
                for _, p in chosen:
                    p.add_(self.draw(p))
            yield
        finally:
            with torch.no_grad():
                for (_, p), c in zip(chosen, clean, strict=True):
                    p.copy_(c)

    def state_dict(self) -> dict[str, Any]:
        return {"std": self.std, "biases": self.biases, "seed": self.seed,
                "draws": self.draws, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {"std": self.std, "biases": self.biases, "seed": self.seed}
        theirs = {k: state[k] for k in mine}
        if mine != theirs:
            raise ValueError(f"the saved weight noise {theirs} differs from this one {mine}")
        self.draws = int(state["draws"])
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"WeightNoise(std={self.std}, biases={self.biases}, seed={self.seed})"


__all__ = ["WeightNoise", "is_bias"]
