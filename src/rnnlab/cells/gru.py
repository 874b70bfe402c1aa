"""The gated recurrent unit in Cho et al.'s form and in PyTorch's form.

Gates in torch.nn's order r (reset), z (update), n (candidate); ``weight_ih`` (3H x D),
``weight_hh`` (3H x H), ``bias_ih``, ``bias_hh`` (3H)::

    r(t) = sigma(W_ir x(t) + b_ir + W_hr h(t-1) + b_hr)
    z(t) = sigma(W_iz x(t) + b_iz + W_hz h(t-1) + b_hz)
    form "cho":   n(t) = tanh(W_in x(t) + b_in + W_hn (r(t) * h(t-1)) + b_hn)
    form "torch": n(t) = tanh(W_in x(t) + b_in + r(t) * (W_hn h(t-1) + b_hn))
    h(t) = z(t) * h(t-1) + (1 - z(t)) * n(t)

"cho" is Cho et al. 2014 ("Learning phrase representations using RNN encoder-decoder for
statistical machine translation", eqs. 5-8; the course's form: the reset gate acts on h(t-1)
*before* the recurrent matrix). "torch" applies it after the matrix product, which lets all three
recurrent products be one matmul (``torch.nn.GRU``, following cuDNN); with form="torch" this cell
is exactly ``nn.GRU``/``nn.GRUCell``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnlab._validation import check_choice
from rnnlab.cells.base import (
    State,
    TorchLayoutCell,
    add_affine_parameters,
    affine_weights,
    init_sizes,
    torch_shaped,
)

FORMS = ("cho", "torch")


class GRUCell(TorchLayoutCell):
    """GRU step; state ``h`` ``(batch, H)``.

    Args:
        input_size: D.
        hidden_size: H.
        bias: whether ``bias_ih``/``bias_hh`` exist (as ``torch.nn.GRUCell``).
        form: ``"cho"`` (reset before the recurrent matrix, Cho et al. 2014) or ``"torch"``
            (reset after it, as ``torch.nn.GRU``); keyword only.
        generator: seeds the initialization (uniform(-1/sqrt(H), 1/sqrt(H)), as torch.nn.GRU).
        device, dtype: as for any ``torch.nn`` module.

    The order before (``form``, ``bias`` positional) still works for one release, with a
    ``DeprecationWarning``. Example: ``GRUCell(3, 8, form="torch")`` is ``torch.nn.GRUCell(3, 8)``.
    """

    @torch_shaped("form", "bias")
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        form: str = "cho",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        bias = init_sizes(self, input_size, hidden_size, bias)
        self.form = check_choice("form", form, FORMS)
        add_affine_parameters(self, 3 * self.hidden_size, bias, device=device, dtype=dtype)
        self.reset_parameters(generator)
        self.layout_for_cudnn()

    def step(self, u_t: torch.Tensor, state: State) -> torch.Tensor:
        h: torch.Tensor = state  # type: ignore[assignment]
        hs = self.hidden_size
        x_r, x_z, x_n = u_t.chunk(3, -1)
        if self.form == "torch":
            h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, -1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:
            b_rz = None if self.bias_hh is None else self.bias_hh[: 2 * hs]
            b_n = None if self.bias_hh is None else self.bias_hh[2 * hs:]
            h_r, h_z = F.linear(h, self.weight_hh[: 2 * hs], b_rz).chunk(2, -1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + F.linear(r * h, self.weight_hh[2 * hs:], b_n))
        # z * h + (1 - z) * n, with one multiply fewer
        return n + z * (h - n)

    def available_impls(self, return_states: bool = False) -> tuple[str, ...]:
        return ("fused", "loop") if self.form == "torch" else ("loop",)

    def fused_weights(self) -> tuple[str, list[torch.Tensor]] | None:
        if self.form != "torch":
            return None
        return "gru", affine_weights(self)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, form={self.form!r}, "
            f"bias={self.bias_ih is not None}"
        )


__all__ = ["FORMS", "GRUCell"]
