"""Online approximations of RTRL with lower cost, for any model following the cell protocol.

* :class:`UORO` — Unbiased Online Recurrent Optimization (Tallec & Ollivier 2018, ICLR; arXiv
  2017). The influence ``M(t) = ds(t)/dtheta`` is replaced by a rank-one estimate
  ``s~(t) theta~(t)^T`` with ``E[s~ theta~^T] = M``. With random signs ``nu`` (+-1) each step::

      s~(t)     = rho0 J_s s~(t-1) + rho1 nu
      theta~(t) = theta~(t-1) / rho0 + (nu^T J_theta) / rho1
      rho0 = sqrt(||theta~|| / ||J_s s~||),  rho1 = sqrt(||nu^T J_theta|| / ||nu||)

  (the rho's minimise the variance). The gradient estimate is ``(g^T s~) theta~``. Per step: one
  Jacobian-vector product (forward mode) and one vector-Jacobian product (reverse mode) of the
  transition, i.e. O(cost of a step) = O(S^2 + P) time and O(S + P) memory per sample.

* :class:`SnAp1` — the Sparse n-step Approximation with n = 1 (Menick, Elsen, Evci, Osindero,
  Simonyan & Graves 2021, ICLR). ``M`` is kept only on the sparsity pattern of the immediate
  Jacobian ``J_theta`` (for an Elman or LSTM cell: the influence of a parameter on the unit(s) its
  row feeds), and updated as ``M(t) = J_theta(t) + (J_s(t) M(t-1)) restricted to that pattern``.
  Storage O(nnz) = O(P); the update costs O(sum over columns of m_p^2) with m_p the entries of
  column p (1 for Elman, 2 for an LSTM (h, c)). This generic implementation still obtains
  ``J_s`` and ``J_theta`` densely from ``torch.func.jacrev`` (O(S P) per sample per step); the
  saving over exact RTRL is the O(S^2 P) product and the O(S P) influence storage. SnAp-1 is
  exact when the recurrence is element-wise (a diagonal ``J_s``).
"""

from __future__ import annotations

import torch
from torch.func import jacrev, jvp, vjp, vmap

from rnnlab.learning.forward_mode import CellRule


class UORO(CellRule):
    """Unbiased Online Recurrent Optimization (rank-one, unbiased, noisy influence estimate).

    Same arguments as :class:`~rnnlab.learning.forward_mode.ForwardModeRTRL`, plus ``seed`` for
    the random signs and ``eps`` (the paper's epsilon guarding the rho's).
    """

    _influence_keys = ("state_tilde", "theta_tilde", "generator")

    def __init__(self, model, input_size=None, loss=None, reduction="sum", seed: int = 0,
                 eps: float = 1e-7) -> None:
        super().__init__(model, input_size, loss, reduction)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps = eps
        self.seed = seed
        #: the generator of the random signs nu, re-seeded with ``seed`` at every ``reset``
        self.generator: torch.Generator | None = None
        self.state_tilde: torch.Tensor | None = None
        self.theta_tilde: torch.Tensor | None = None

    @property
    def _generator(self) -> torch.Generator | None:
        """The old (private) name of :attr:`generator`, kept working."""
        return self.generator

    @_generator.setter
    def _generator(self, value: torch.Generator | None) -> None:
        self.generator = value

    def _reset_influence(self, flat: torch.Tensor) -> None:
        self.generator = torch.Generator(device=flat.device).manual_seed(self.seed)
        self.state_tilde = torch.zeros_like(flat)
        self.theta_tilde = flat.new_zeros(flat.shape[0], self.n_parameters)

    def _advance(self, x_t: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        single = self._single_step()
        params = self._params()
        nu = torch.randint(0, 2, flat.shape, generator=self.generator, device=flat.device)
        nu = nu.to(flat.dtype) * 2 - 1

        def one(x: torch.Tensor, s: torch.Tensor, s_tilde: torch.Tensor, nu_b: torch.Tensor):
            new, tangent = jvp(lambda s_: single(params, x, s_), (s,), (s_tilde,))
            _, pullback = vjp(lambda p: single(p, x, s), params)
            return new, tangent, pullback(nu_b)[0]

        new_flat, js_s, nu_j = vmap(one)(x_t, flat, self.state_tilde, nu)
        nu_j = self._flat_params(nu_j, flat.shape[0])
        eps = self.eps
        rho0 = torch.sqrt(self.theta_tilde.norm(dim=1) / (js_s.norm(dim=1) + eps)) + eps
        rho1 = torch.sqrt(nu_j.norm(dim=1) / (nu.norm(dim=1) + eps)) + eps
        self.state_tilde = rho0.unsqueeze(1) * js_s + rho1.unsqueeze(1) * nu
        self.theta_tilde = self.theta_tilde / rho0.unsqueeze(1) + nu_j / rho1.unsqueeze(1)
        return new_flat

    def _recurrent_gradient(self, g: torch.Tensor) -> torch.Tensor:
        return ((g * self.state_tilde).sum(1, keepdim=True) * self.theta_tilde).sum(0)


class SnAp1(CellRule):
    """SnAp-1: the influence kept on the sparsity pattern of the immediate Jacobian.

    The pattern is found once per ``reset`` from the immediate Jacobian at a few random inputs
    and states (an entry is kept if it is non-zero for any of them). ``rule.pattern`` is the
    ``(S, P)`` boolean mask; ``rule.values`` the kept entries, ``(batch, nnz)``.
    """

    pattern: torch.Tensor
    values: torch.Tensor
    _influence_keys = ("values",)

    def _find_pattern(self, flat: torch.Tensor) -> torch.Tensor:
        single = self._single_step()
        params = self._params()
        gen = torch.Generator(device="cpu").manual_seed(1)
        mask = torch.zeros(flat.shape[1], self.n_parameters, dtype=torch.bool,
                           device=flat.device)
        for _ in range(3):
            x = torch.randn(self.input_size, generator=gen, dtype=flat.dtype).to(flat.device)
            s = torch.randn(flat.shape[1], generator=gen, dtype=flat.dtype).to(flat.device)
            jac = jacrev(single, argnums=0)(params, x, s * 0.5)
            mask |= self._flat_params(jac, 1, rows=flat.shape[1])[0] != 0
        return mask

    def _reset_influence(self, flat: torch.Tensor) -> None:
        self.pattern = self._find_pattern(flat)
        rows, cols = self.pattern.nonzero(as_tuple=True)
        self._rows, self._cols = rows, cols
        # Pairs (e, e') of kept entries in the same column: (J_s M)[k, p] sums over the l with
        # (l, p) kept, so only J_s[k, l] for such pairs is read.
        same = cols.unsqueeze(0) == cols.unsqueeze(1)            # (nnz, nnz)
        dst, src = same.nonzero(as_tuple=True)
        self._pair_dst, self._pair_src = dst, src
        self._pair_k, self._pair_l = rows[dst], rows[src]
        self.values = flat.new_zeros(flat.shape[0], rows.numel())

    def _advance(self, x_t: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        single = self._single_step()

        def with_aux(p, x, s):
            new = single(p, x, s)
            return new, new

        jac = vmap(jacrev(with_aux, argnums=(0, 2), has_aux=True), in_dims=(None, 0, 0))
        (j_params, j_state), new_flat = jac(self._params(), x_t, flat)
        j_theta = self._flat_params(j_params, flat.shape[0], rows=flat.shape[1])
        immediate = j_theta[:, self._rows, self._cols]
        carried = j_state[:, self._pair_k, self._pair_l] * self.values[:, self._pair_src]
        self.values = immediate.index_add(1, self._pair_dst, carried)
        return new_flat

    def _recurrent_gradient(self, g: torch.Tensor) -> torch.Tensor:
        per_entry = (g[:, self._rows] * self.values).sum(0)
        out = per_entry.new_zeros(self.n_parameters)
        return out.index_add(0, self._cols, per_entry)
