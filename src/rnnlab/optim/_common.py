"""What the Gauss-Newton operator and the Hessian-free optimizer share: the parameters as one
flat vector (CG works on one vector holding every parameter) and the checks of the closures."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

Tensor = torch.Tensor
Forward = Callable[[], Tensor]
Loss = Callable[[Tensor], Tensor]


def _flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    parts, start = [], 0
    for t in like:
        n = t.numel()
        parts.append(vec[start:start + n].view_as(t))
        start += n
    return parts


def _check_params(params: Iterable[Tensor]) -> list[Tensor]:
    params = list(params)
    if not params:
        raise ValueError("params is empty: the optimizer has nothing to optimize")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"params[{i}] has dtype {p.dtype}; Hessian-free needs floating point")
        if p.is_sparse:
            raise ValueError(f"params[{i}] is sparse; Hessian-free supports dense parameters only")
    dtypes = {p.dtype for p in params}
    devices = {p.device for p in params}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            "all parameters must share one dtype and one device (they form a single vector), "
            f"got dtypes {sorted(map(str, dtypes))} and devices {sorted(map(str, devices))}"
        )
    return params


def _param_names(model: nn.Module, params: Sequence[Tensor]) -> list[str]:
    names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(
            f"params {missing} are not parameters of the model given as model=; pass the "
            "model whose parameters are optimized (or leave model=None)"
        )
    return [names[id(p)] for p in params]


def _check_output(name: str, out: object) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{name}() must return one torch.Tensor, got {type(out).__name__}; for a model that "
            "returns a tuple select the outputs, e.g. lambda: model(x)[0]"
        )
    if not out.is_floating_point():
        raise TypeError(f"{name}() returned dtype {out.dtype}; a floating point tensor is needed")
    return out


def _check_scalar(value: object) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"loss(outputs) must return a scalar tensor, got {shape}")
    return value.reshape(())
