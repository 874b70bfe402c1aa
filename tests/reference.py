"""Independent references for the tests: the course's equations written out plainly."""

from __future__ import annotations

import torch

ACT = {"tanh": torch.tanh, "identity": lambda a: a, "sigmoid": torch.sigmoid}


def elman_forward(U, W, b, V, c, x, readout="tanh", h0=None):
    """h(t) = tanh(U x(t) + W h(t-1) + b), o(t) = f(V h(t) + c), written per step and sample."""
    batch, steps, _ = x.shape
    h = torch.zeros(batch, W.shape[0], dtype=x.dtype) if h0 is None else h0
    hs, os_ = [], []
    for t in range(steps):
        h = torch.tanh(torch.einsum("nd,bd->bn", U, x[:, t]) + torch.einsum("nm,bm->bn", W, h) + b)
        hs.append(h)
        os_.append(ACT[readout](torch.einsum("on,bn->bo", V, h) + c))
    return torch.stack(os_, 1), torch.stack(hs, 1)


def elman_loss(params, x, y, readout="tanh", upto=None):
    """L = sum_{t < upto} sum_batch ||y(t) - o(t)||^2."""
    o, _ = elman_forward(*params, x, readout)
    upto = x.shape[1] if upto is None else upto
    return (y[:, :upto] - o[:, :upto]).pow(2).sum()


class CellNetwork(torch.nn.Module):
    """A minimal model of the cell protocol for the tests: o = V hidden(state) + c."""

    def __init__(self, cell, output_size):
        super().__init__()
        self.cell = cell
        self.input_size = cell.input_size
        p = next(cell.parameters())
        self.readout = torch.nn.Linear(cell.hidden_size, output_size, dtype=p.dtype)

    def initial_state(self, batch):
        return self.cell.initial_state(batch)

    def output(self, state):
        return self.readout(self.cell.hidden(state))


def unrolled_gradients(model, x, y, upto=None):
    """Plain autograd through the unrolled cell: the gradient of sum_t ||y - o||^2."""
    params = list(model.parameters())
    state = model.initial_state(x.shape[0])
    loss = 0.0
    upto = x.shape[1] if upto is None else upto
    for t in range(upto):
        state = model.cell(x[:, t], state)
        loss = loss + (y[:, t] - model.output(state)).pow(2).sum()
    return dict(zip([n for n, _ in model.named_parameters()],
                    torch.autograd.grad(loss, params, allow_unused=True), strict=True))
