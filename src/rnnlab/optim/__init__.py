"""Optimizers beyond ``torch.optim``: Martens' Hessian-free optimizer, with its Gauss-Newton
operator and its conjugate-gradient solver."""

from rnnlab.optim.cg import CGResult, conjugate_gradient
from rnnlab.optim.gauss_newton import GaussNewton
from rnnlab.optim.hessian_free import HessianFree

__all__ = ["CGResult", "GaussNewton", "HessianFree", "conjugate_gradient"]
