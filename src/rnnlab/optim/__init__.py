"""Optimizers beyond ``torch.optim``: Martens' Hessian-free optimizer."""

from rnnlab.optim.hessian_free import CGResult, GaussNewton, HessianFree, conjugate_gradient

__all__ = ["CGResult", "GaussNewton", "HessianFree", "conjugate_gradient"]
