"""Leaky-integrator echo state network (Jaeger 2001; Jaeger, Lukosevicius, Popovici & Siewert 2007).

State update, for a batch of sequences, with N units, D inputs and O outputs::

    net(t)  = W_in u(t) + bias + W x(t-1) + W_fb y(t-1)
    x(t)    = (1 - a) * x(t-1) + a * tanh(g * net(t) + s)            x(-1) = x0 (default 0)

* ``W_in [1; u(t)]`` of the papers is written ``W_in u(t) + bias``: the bias column of the
  augmented input matrix is the separate buffer ``bias`` (uniform on ``[-bias_scaling,
  bias_scaling]``), which is also how ReservoirPy's ``Reservoir`` stores it (``Win``, ``bias``).
* ``a`` is the leak rate (the buffer ``leak``: one number per unit, so per-unit leaks are
  possible); ``a = 1`` is the plain ESN of Jaeger (2001).
* ``g`` (buffer ``a``) and ``s`` (buffer ``b``) are per-unit gain and shift, 1 and 0 by default:
  the hooks for intrinsic plasticity, which adapts them so that ``tanh(g * net + s)`` has a
  prescribed output distribution (Schrauwen, Wardermann, Verstraeten, Steil & Stroobandt 2008).
* ``W_fb y(t-1)`` is the output feedback (Jaeger 2001): during training the teacher signal is fed
  back (teacher forcing: ``y(t-1)`` is the target at ``t-1``), in generation the network's own
  readout output.

Length: this module is the network class whole (about 550 lines): its constructor's checks,
the choice of the time loop's backend (numba, CUDA graphs, eager torch; dense or CSR) and the run
methods; the step itself (:mod:`rnnlab.reservoir._step`), the backends, the weight builders
(:mod:`rnnlab.reservoir.topology`), and what the shallow and the deep network share (the checks,
``forward`` and the closed loop of ``generate``: :mod:`rnnlab.reservoir._generate`) live in
their own modules.

The readout is not part of this module: fit one of :mod:`rnnlab.reservoir.readout` on the states.

Computation. The input (and teacher) projection of a whole sequence is one matmul outside the
time loop (``drive = W_in u + bias + W_fb y_prev`` for all steps at once); the loop
(:meth:`EchoStateNetwork.recur`) only adds ``W x(t-1)`` and applies the non-linearity and the
leak, each step the package's one reservoir step (:mod:`rnnlab.reservoir._step`). On the CPU
that loop is by default the fused numba kernel of :mod:`rnnlab.reservoir._numba` (tanh units;
``kernel="auto"``, see :func:`~rnnlab.reservoir._numba.numba_is_faster`); on CUDA the torch
loop replayed as CUDA graphs (:mod:`rnnlab.reservoir.cuda_graphs`); and otherwise (autograd,
no numba, logistic units, ``kernel="torch"``) the eager torch loop. In the torch loop ``W x``
uses torch's sparse CSR matmul on the CPU when it is faster than dense: ``sparse=None``
(automatic) uses CSR on the CPU when the density of W is at most
``d* = c * min(N, 4000) / 1000`` with ``c = 0.12`` (float64) or ``0.05`` (other dtypes), doubled
(up to 0.25) for batches of 8 or more, and N >= 400 (N >= 256 for such batches); dense otherwise,
and always dense on CUDA. The rule comes from measurements (the crossover density grows with N,
is lower in float32 and higher for batches); the table is in ``docs/reservoir.md`` ("Dense or
CSR: measured"). ``sparse=True/False`` forces the choice.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from rnnlab._random import make_generator
from rnnlab._validation import (
    check_int,
    check_number,
    check_positive_int,
    check_tensor,
)
from rnnlab.reservoir import _numba as _kernels
from rnnlab.reservoir import cuda_graphs as _cuda_graphs
from rnnlab.reservoir import topology as topo
from rnnlab.reservoir._generate import ReservoirModule
from rnnlab.reservoir._step import check_activation
from rnnlab.reservoir._step import step as reservoir_step

# The automatic dense/CSR rule (measured; see the module docstring).
SPARSE_MIN_UNITS = 400
SPARSE_MIN_UNITS_BATCHED = 256
SPARSE_BATCH = 8


def _cuda_autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cuda")
    except TypeError:  # torch < 2.4 takes no device and answers for CUDA
        return torch.is_autocast_enabled()


def sparse_density_threshold(units: int, dtype: torch.dtype, batch: int = 1) -> float:
    """Largest density of W at which the CSR kernel is used automatically (CPU), 0 if never."""
    min_units = SPARSE_MIN_UNITS_BATCHED if batch >= SPARSE_BATCH else SPARSE_MIN_UNITS
    if units < min_units:
        return 0.0
    c = 0.12 if dtype == torch.float64 else 0.05
    d = c * min(units, 4000) / 1000
    return min(2 * d, 0.25) if batch >= SPARSE_BATCH else d
INPUT_WEIGHTS = topo.INPUT_WEIGHTS


def _outside_this_file() -> int:
    """The ``stacklevel`` of the first frame outside this module, counted from the caller: the
    warning then names the user's line also when ``LogisticEchoStateNetwork`` passes the sizes
    on (Python 3.12's ``skip_file_prefixes`` does this; 3.11 is supported)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _sizes(sizes: tuple[Any, ...], units: Any, input_size: Any, output_size: Any
           ) -> tuple[Any, Any, Any]:
    """``(units, input_size, output_size)`` from the deprecated positional spelling
    ``EchoStateNetwork(units, input_size, output_size)`` (warns) or the keywords."""
    if sizes:
        if len(sizes) > 3:
            raise TypeError(f"EchoStateNetwork takes at most 3 positional sizes (units, "
                            f"input_size, output_size, deprecated), got {len(sizes)}")
        warnings.warn("EchoStateNetwork(units, input_size, ...) with positional sizes is "
                      "deprecated: the order will become (input_size, units), as for torch's "
                      "RNNs and DeepEchoStateNetwork; write EchoStateNetwork(input_size=..., "
                      "units=...) now", DeprecationWarning, stacklevel=_outside_this_file())
        given = {"units": units, "input_size": input_size, "output_size": output_size}
        for name, value in zip(("units", "input_size", "output_size"), sizes, strict=False):
            if given[name] is not None:
                raise TypeError(f"EchoStateNetwork got multiple values for {name!r}")
            given[name] = value
        units, input_size, output_size = given["units"], given["input_size"], given["output_size"]
    for name, value in (("input_size", input_size), ("units", units)):
        if value is None:
            raise TypeError(f"EchoStateNetwork needs {name}=: write "
                            f"EchoStateNetwork(input_size=..., units=...)")
    # None (the default) is "not given", so that a positional output size and an explicit
    # output_size=0 are told apart
    return units, input_size, 0 if output_size is None else output_size


class EchoStateNetwork(ReservoirModule):
    """Leaky-integrator echo state network; ``esn(u) -> (states, final_state)``.

    Args:
        input_size: D, features of u(t) (a keyword: see below).
        units: N, number of reservoir units (a keyword).
        output_size: O, features of the output y(t) that is fed back (0 or None: none).
            Feedback is on when ``output_size > 0`` and ``feedback_scaling > 0``.
        topology: ``"random"`` (sparse random, :func:`~rnnlab.reservoir.topology.sparse_random`),
            ``"dlr"``, ``"dlrb"``, ``"scr"`` (Rodan & Tino 2011), or a user matrix (N x N,
            torch/numpy/scipy) or builder (:func:`~rnnlab.reservoir.topology.weight_from`:
            called with ``(N, N)``, and ``generator=`` when it takes one).
        spectral_radius: rho(W) to scale W to. ``None`` means 0.9 for ``"random"`` and no
            scaling for the deterministic topologies (their weights are ``r``, ``backward_weight``)
            and for a user W. For ``"scr"`` it sets ``r`` (rho = r exactly); a ``"dlr"`` cannot be
            scaled (all its eigenvalues are 0) and raises. rho(W) is computed by
            :func:`rnnlab.analysis.spectral.spectral_radius` (exact structural cases, then all
            eigenvalues or ARPACK's Arnoldi method, picked by a measured cost model: see
            ``docs/reservoir.md``).
        density: fraction of non-zero entries of the random W, in (0, 1].
        distribution: ``"uniform"`` (on [-1, 1]) or ``"normal"`` values of the random W.
        r: the delay-line / cycle weight of DLR, DLRB and SCR.
        backward_weight: DLRB's feedback weight b (``W[i, i+1]``).
        leak: leak rate a in (0, 1], one number or one per unit.
        input_scaling: ``"uniform"`` input weights are uniform on ``[-s, s]`` (s one number or
            one per input feature); for the sign patterns it is their absolute value v.
        input_weights: ``"uniform"``, ``"sign_random"`` (|v| with seeded random signs),
            ``"sign_pi"`` (signs from the digits of pi, Rodan & Tino 2011), or a user N x D matrix
            or builder (called with ``(N, D)``, as for ``topology``).
        digit_offset: first digit of pi used by ``"sign_pi"`` (0: the leading 3).
        bias_scaling: the bias is uniform on ``[-bias_scaling, bias_scaling]`` (0: no bias).
        feedback_scaling: W_fb is uniform on ``[-feedback_scaling, feedback_scaling]``.
        sparse: use a sparse CSR kernel for ``W x`` in the torch loop (``None``: automatic,
            see the module doc).
        kernel: the time loop: ``"numba"`` (the fused CPU kernel of
            :mod:`rnnlab.reservoir._numba`), ``"torch"`` (the eager torch loop, any device),
            ``"cuda_graph"`` (the torch loop recorded and replayed as CUDA graphs,
            :mod:`rnnlab.reservoir.cuda_graphs`), or ``"auto"``: where no autograd graph is
            needed, numba when it is installed, the module is float32/float64 on the CPU and
            W is sparse enough (:func:`~rnnlab.reservoir._numba.numba_is_faster`), CUDA
            graphs on CUDA for runs of at least ``GRAPH_MIN_STEPS`` steps; else the eager
            loop. All give the same states (to round-off). Logistic units run the torch
            loop (eager, dense or CSR) only.
        activation: the unit non-linearity f: ``"tanh"`` (the equation above) or
            ``"logistic"`` (``sigmoid``: Fermi units, for the Triesch (2005) rule of
            intrinsic plasticity; the slope at the origin is 1/4, so the linearisation around
            a state is ``(1 - a) I + a diag(g y (1 - y)) W``).
        W, W_in: the recurrent and input weights themselves, as ReservoirPy's ``W=``/``Win=``:
            a matrix or a builder; the same as ``topology=W`` and ``input_weights=W_in`` (give
            one spelling of each).
        seed, generator: randomness; W, then W_in, then the bias, then W_fb are drawn in that
            order from one CPU generator (``generator``, or a new one seeded with ``seed``,
            default 0), in float64 and then cast, so one seed gives the same network in every
            dtype.
        device, dtype: as for any ``torch.nn`` module.

    Sizes are keywords: ``EchoStateNetwork(input_size=D, units=N)``. The old positional
    ``EchoStateNetwork(N, D[, O])`` still builds the same network for one release, with a
    ``DeprecationWarning``: the order will become ``(input_size, units)``, as for torch's RNNs
    and :class:`~rnnlab.reservoir.deep.DeepEchoStateNetwork`.

    Fixed weights are buffers (``W``, ``W_in``, ``bias``, ``W_fb``, ``leak``, ``a``, ``b``): they
    move with ``.to()`` and are saved by ``state_dict``. Tensors are batch first: inputs
    ``(batch, time, D)``, states ``(batch, time, N)``, a state ``(batch, N)``.
    """

    # the class default, for modules pickled before the attribute existed
    activation = "tanh"

    def __init__(
        self,
        *sizes: int,
        input_size: int | None = None,
        units: int | None = None,
        output_size: int | None = None,
        topology: str | Any = "random",
        spectral_radius: float | None = None,
        density: float = 0.1,
        distribution: str = "uniform",
        r: float = 0.5,
        backward_weight: float = 0.05,
        leak: float | Sequence[float] | torch.Tensor = 1.0,
        input_scaling: float | Sequence[float] | torch.Tensor = 1.0,
        input_weights: str | Any = "uniform",
        digit_offset: int = 0,
        bias_scaling: float = 0.0,
        feedback_scaling: float = 0.0,
        sparse: bool | None = None,
        kernel: str = "auto",
        activation: str = "tanh",
        W: Any = None,
        W_in: Any = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        units, input_size, output_size = _sizes(sizes, units, input_size, output_size)
        n = check_positive_int("units", units)
        d = check_positive_int("input_size", input_size)
        output_size = check_int("output_size", output_size, low=0)
        if sparse not in (None, True, False):
            raise ValueError(f"sparse must be None, True or False, got {sparse!r}")
        activation = check_activation(activation)
        if activation != "tanh" and kernel in ("numba", "cuda_graph"):
            raise ValueError(f"kernel={kernel!r} compiles tanh units only; {activation} units "
                             f"run the torch loop: use kernel='auto' or 'torch'")
        if kernel not in _kernels.KERNELS:
            raise ValueError(f"kernel must be one of {_kernels.KERNELS}, got {kernel!r}")
        if kernel == "numba" and not _kernels.numba_available():
            raise ImportError("kernel='numba' needs the numba package (pip install numba); "
                              "kernel='auto' falls back to the torch loop without it")
        bias_scaling = check_number("bias_scaling", bias_scaling, low=0.0)
        feedback_scaling = check_number("feedback_scaling", feedback_scaling, low=0.0)
        if feedback_scaling > 0 and output_size == 0:
            raise ValueError("feedback_scaling > 0 needs output_size > 0 (the fed-back outputs)")
        if spectral_radius is not None:
            spectral_radius = check_number("spectral_radius", spectral_radius, low=0.0,
                                            low_open=True)
        if W is not None:
            if not (isinstance(topology, str) and topology == "random"):
                raise ValueError("give W= or topology=, not both (W= is a user W or builder)")
            topology = W
        if W_in is not None:
            if not (isinstance(input_weights, str) and input_weights == "uniform"):
                raise ValueError("give W_in= or input_weights=, not both")
            input_weights = W_in
        self.units, self.input_size, self.output_size = n, d, output_size
        self.sparse = sparse
        self.kernel = kernel
        self.activation = activation
        gen = make_generator(seed, generator)

        # --- recurrent weights
        w, self.topology = topo.build_recurrent(
            topology, n, spectral_radius=spectral_radius, density=density,
            distribution=distribution, r=r, backward_weight=backward_weight, generator=gen)
        # --- input weights, bias, feedback weights (drawn in this order, always, so that e.g.
        # changing bias_scaling does not change W_fb)
        w_in, self.input_weights = topo.build_input(
            input_weights, n, d, scaling=input_scaling, digit_offset=digit_offset, generator=gen)
        bias = bias_scaling * (2.0 * torch.rand(n, generator=gen, dtype=torch.float64) - 1.0)
        w_fb = None
        if output_size > 0:
            w_fb = feedback_scaling * (
                2.0 * torch.rand(n, output_size, generator=gen, dtype=torch.float64) - 1.0)
            if feedback_scaling == 0:
                w_fb = None
        leak_t = torch.as_tensor(leak, dtype=torch.float64).detach().cpu()
        if leak_t.dim() == 0:
            leak_t = leak_t.expand(n).clone()
        if leak_t.shape != (n,):
            raise ValueError(f"leak must be one number or one per unit ({n}), "
                             f"got shape {tuple(leak_t.shape)}")
        if not bool(((leak_t > 0) & (leak_t <= 1)).all()):
            bad = leak_t[(leak_t <= 0) | (leak_t > 1)]
            raise ValueError(f"leak must be in (0, 1], got {bad[:5].tolist()}")

        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self.register_buffer("W", w.to(**factory))
        self.register_buffer("W_in", w_in.to(**factory))
        self.register_buffer("bias", bias.to(**factory))
        self.register_buffer("W_fb", None if w_fb is None else w_fb.to(**factory))
        self.register_buffer("leak", leak_t.to(**factory))
        self.register_buffer("a", torch.ones(n, **factory))
        self.register_buffer("b", torch.zeros(n, **factory))
        self._csr_key: tuple | None = None
        self._csr: torch.Tensor | None = None
        self._kernel_csr: _kernels.CSRArrays | None = None
        self._density: float = 1.0

    # --------------------------------------------------------------------------------------------
    @property
    def has_feedback(self) -> bool:
        return self.W_fb is not None

    def _ref(self) -> torch.Tensor:
        return self.W

    def _state_size(self) -> int:
        return self.units

    def uses_sparse(self, batch: int = 1) -> bool:
        """Whether ``W x`` runs as a sparse CSR matmul for this batch size, device and W."""
        self._refresh_operator()
        if self.sparse is not None:
            return self.sparse
        return (self.W.device.type == "cpu"
                and self._density <= sparse_density_threshold(self.units, self.W.dtype, batch))

    def uses_numba(self, batch: int = 1) -> bool:
        """Whether the time loop runs the numba kernel for this batch size, device, dtype and W
        (when no autograd graph is needed; see ``kernel`` in the class doc)."""
        if (self.kernel in ("torch", "cuda_graph") or self.activation != "tanh"
                or not _kernels.numba_available()):
            return False
        if self.W.device.type != "cpu" or self.W.dtype not in _kernels.NUMBA_DTYPES:
            return False
        if self.kernel == "numba":
            return True
        self._refresh_operator()
        return _kernels.numba_is_faster(self.units, self._density, batch, self.W.dtype)

    def kernel_operator(self) -> _kernels.CSRArrays:
        """W as the numba kernel's CSR arrays (cached until W, its device or dtype changes)."""
        self._refresh_operator()
        if self._kernel_csr is None:
            self._kernel_csr = _kernels.csr_arrays(self.W)
        return self._kernel_csr

    def _numba_applies(self, drive: torch.Tensor, state: torch.Tensor) -> bool:
        if not self.uses_numba(drive.shape[0]):
            if self.kernel == "numba":
                raise ValueError(f"kernel='numba' runs float32/float64 tensors on the CPU; this "
                                 f"ESN is {self.W.dtype} on {self.W.device} (use kernel='auto' "
                                 f"or 'torch')")
            return False
        graph = torch.is_grad_enabled() and any(
            t.requires_grad for t in (drive, state, self.W, self.leak, self.a, self.b))
        if graph:
            if self.kernel == "numba":
                raise ValueError("kernel='numba' records no autograd graph, and one is needed "
                                 "here (an input requires grad): use kernel='auto' or 'torch'")
            return False
        return True

    def uses_cuda_graph(self, batch: int = 1, steps: int = _cuda_graphs.GRAPH_MIN_STEPS
                        ) -> bool:
        """Whether the time loop over ``steps`` steps of ``batch`` sequences is replayed as a
        CUDA graph (:mod:`rnnlab.reservoir.cuda_graphs`; when no autograd graph is needed):
        on CUDA with ``kernel="auto"`` or ``"cuda_graph"``, a dense W (see ``sparse``) and at
        least ``GRAPH_MIN_STEPS`` steps."""
        if (self.kernel not in ("auto", "cuda_graph") or self.W.device.type != "cuda"
                or self.activation != "tanh"):
            return False
        return steps >= _cuda_graphs.GRAPH_MIN_STEPS and not self.uses_sparse(batch)

    def _graph_applies(self, drive: torch.Tensor, graph: bool) -> bool:
        """Whether ``recur`` replays CUDA graphs over ``drive``; ``graph``: an autograd graph
        is needed (errors where ``kernel="cuda_graph"`` cannot run)."""
        if self.kernel == "cuda_graph":
            if self.W.device.type != "cuda":
                raise ValueError(f"kernel='cuda_graph' runs on CUDA; this ESN is on "
                                 f"{self.W.device} (use kernel='auto' or 'torch')")
            if self.uses_sparse(drive.shape[0]):
                raise ValueError("kernel='cuda_graph' records the dense step: it does not go "
                                 "with sparse=True")
            if graph:
                raise ValueError("kernel='cuda_graph' records no autograd graph, and one is "
                                 "needed here (an input requires grad): use kernel='auto' or "
                                 "'torch'")
        if graph or (self.W.device.type == "cuda" and _cuda_autocast_on()):
            # autocast's casts would be frozen into the recording: eager under autocast
            return False
        return self.uses_cuda_graph(drive.shape[0], drive.shape[1])

    def recurrent_csr(self) -> torch.Tensor:
        """W as a ``torch.sparse_csr`` tensor (cached until W, its device or dtype changes)."""
        self._refresh_operator()
        if self._csr is None:
            self._csr = topo.to_csr(self.W)
        return self._csr

    def _refresh_operator(self) -> None:
        w = self.W
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if key != self._csr_key:
            self._csr_key, self._csr, self._kernel_csr = key, None, None
            self._density = float((w != 0).sum()) / (self.units * self.units)

    # --------------------------------------------------------------------------------------------
    def _check_outputs(self, y: torch.Tensor, batch: int, name: str, ndim: int) -> torch.Tensor:
        layout = "(batch, time, outputs)" if ndim == 3 else "(batch, outputs)"
        check_tensor(name, y, ndim=ndim, last_dim=self.output_size, dtype=self.W.dtype,
                     device=self.W.device, layout=layout)
        if y.shape[0] != batch:
            raise ValueError(f"{name} has batch size {y.shape[0]}, expected {batch}")
        return y

    def input_drive(
        self,
        inputs: torch.Tensor,
        teacher: torch.Tensor | None = None,
        feedback0: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``W_in u(t) + bias (+ W_fb y(t-1))`` for every step, ``(batch, time, N)``, as one
        matmul each (outside the time loop). ``y(t-1)`` is ``teacher[:, t-1]`` and, at t = 0,
        ``feedback0`` (default 0). ``out``: a contiguous ``(batch, time, N)`` tensor of the
        ESN's dtype and device to write into (e.g. a buffer reused chunk after chunk), or
        ``None`` for a new one."""
        self._check_inputs(inputs)
        batch, steps, _ = inputs.shape
        if out is None:
            drive = torch.addmm(self.bias, inputs.reshape(batch * steps, -1), self.W_in.t())
        else:
            if (tuple(out.shape) != (batch, steps, self.units) or out.dtype != self.W.dtype
                    or out.device != self.W.device or not out.is_contiguous()):
                layout = "contiguous" if out.is_contiguous() else "not contiguous"
                raise ValueError(f"out must be a contiguous {self.W.dtype} tensor of shape "
                                 f"{(batch, steps, self.units)} on {self.W.device}, got "
                                 f"{out.dtype} {tuple(out.shape)} on {out.device} ({layout})")
            if torch.is_grad_enabled() and any(
                    t.requires_grad for t in (inputs, self.W_in, self.bias, teacher, feedback0)
                    if t is not None):
                raise ValueError("out= writes the drive in place, which records no autograd "
                                 "graph: leave out=None when an input requires grad (or run "
                                 "under torch.no_grad())")
            drive = torch.addmm(self.bias, inputs.reshape(batch * steps, -1), self.W_in.t(),
                                out=out.view(batch * steps, self.units))
        drive = drive.view(batch, steps, self.units)
        self._check_teacher(teacher, feedback0)
        if self.has_feedback:
            self._check_outputs(teacher, batch, "teacher", 3)
            if teacher.shape[1] != steps:
                raise ValueError(f"teacher has {teacher.shape[1]} steps, inputs have {steps}")
            y0 = (teacher.new_zeros(batch, self.output_size) if feedback0 is None
                  else self._check_outputs(feedback0, batch, "feedback0", 2))
            y_prev = torch.cat([y0.unsqueeze(1), teacher[:, :-1]], dim=1)
            drive.add_((y_prev.reshape(batch * steps, -1) @ self.W_fb.t()).view_as(drive))
        return drive

    def recur(
        self, drive: torch.Tensor, state: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The time loop: ``x(t) = (1 - a) x(t-1) + a f(g (drive(t) + W x(t-1)) + s)``.

        ``drive`` is ``(batch, time, N)`` (see :meth:`input_drive`), ``state`` is x(-1). Writes
        the states into ``out`` (may be ``drive`` itself: step t reads ``drive[:, t]`` before
        writing it) or a new tensor, and returns it. Runs the fused numba kernel
        (:func:`rnnlab.reservoir._numba.recur_numba`) where :meth:`uses_numba` says so and no
        autograd graph is needed, else the torch loop below (each step is
        :func:`rnnlab.reservoir._step.step`, dense or CSR), whose dense step is replayed as
        CUDA graphs where :meth:`uses_cuda_graph` says so (:mod:`rnnlab.reservoir.cuda_graphs`).
        """
        if self._numba_applies(drive, state):
            return _kernels.recur_numba(self.kernel_operator(), drive, state, out, self.leak,
                                        self.a, self.b)
        batch, steps, _ = drive.shape
        if out is None:
            out = torch.empty_like(drive)
        elif (out.shape != drive.shape or out.dtype != drive.dtype
              or out.device != drive.device):
            # the steps below write into out[:, t] with out=, which would resize a wrong one
            raise ValueError(f"out must be a {drive.dtype} tensor of shape "
                             f"{tuple(drive.shape)} on {drive.device} (the drive's), got "
                             f"{out.dtype} {tuple(out.shape)} on {out.device}")
        leak = self.leak
        full_leak = bool((leak == 1).all())
        a, b, act = self.a, self.b, self.activation
        # gain 1 and shift 0 let the step skip its multiply-add, but not where their gradient
        # is wanted (it would be lost)
        plain = (not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))
                 and bool((a == 1).all()) and bool((b == 0).all()))
        x = state
        # out= writes record no autograd: where a graph is needed, steps go to new tensors
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (drive, state, out, self.W, leak, a, b))
        use_graph = self._graph_applies(drive, needs_grad)
        if self.uses_sparse(batch):
            wc = self.recurrent_csr()
            for t in range(steps):
                x = reservoir_step(drive[:, t], x, wc, a, b, leak, plain, full_leak, out[:, t],
                                   activation=act, sparse=True)
            return out
        done = 0
        loop = _cuda_graphs.graph_loop(self, batch, plain, full_leak) if use_graph else None
        if loop is not None:
            done = loop.run(drive, state, out)
            if done:
                x = out[:, done - 1]
        w_t = self.W.t()
        if needs_grad:
            # new tensors, copied into out (CopySlices records)
            for t in range(steps):
                x = reservoir_step(drive[:, t], x, w_t, a, b, leak, plain, full_leak,
                                   activation=act)
                out[:, t] = x
            return out
        for t in range(done, steps):
            # written straight into out[:, t] (which may be drive[:, t]: read first)
            x = reservoir_step(drive[:, t], x, w_t, a, b, leak, plain, full_leak, out[:, t],
                               activation=act)
        return out

    def states(
        self,
        inputs: torch.Tensor,
        state0: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None,
        feedback0: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All states x(0..T-1), ``(batch, time, N)``, from x(-1) = ``state0`` (default 0);
        ``out`` as in :meth:`input_drive`: the states then overwrite the drive in it and it is
        returned, except where an autograd graph is needed (``state0`` requires grad), which
        collects the states in a new tensor."""
        drive = self.input_drive(inputs, teacher, feedback0, out=out)
        batch = inputs.shape[0]
        x0 = self.initial_state(batch) if state0 is None else \
            self._check_state(state0, batch, "state0")
        needs_graph = torch.is_grad_enabled() and (drive.requires_grad or x0.requires_grad)
        if needs_graph:
            # In-place writes into an autograd input would break backward: collect instead.
            return self._recur_graph(drive, x0)
        return self.recur(drive, x0, out=drive)

    def _recur_graph(self, drive: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        xs, x = [], x0
        for t in range(drive.shape[1]):
            x = self.recur(drive[:, t:t + 1], x)[:, 0]
            xs.append(x)
        return torch.stack(xs, dim=1)

    def step(
        self, u_t: torch.Tensor, state: torch.Tensor, feedback: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One update: ``u_t`` ``(batch, D)``, ``state`` x(t-1) ``(batch, N)``, ``feedback``
        y(t-1) ``(batch, O)`` (needed iff the ESN has output feedback); returns x(t)."""
        self._check_step(u_t, state, feedback)
        batch = u_t.shape[0]
        drive = torch.addmm(self.bias, u_t, self.W_in.t())
        if feedback is not None:
            self._check_outputs(feedback, batch, "feedback", 2)
            drive = torch.addmm(drive, feedback, self.W_fb.t())
        return self.recur(drive.unsqueeze(1), state)[:, 0]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        self._csr_key, self._csr, self._kernel_csr = None, None, None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"units={self.units}, input_size={self.input_size}, output_size={self.output_size}, "
            f"topology={self.topology!r}, input_weights={self.input_weights!r}, "
            f"feedback={self.has_feedback}, sparse={self.sparse}, kernel={self.kernel!r}, "
            f"activation={self.activation!r}, "
            f"dtype={self.W.dtype}, device={self.W.device}"
        )


class LogisticEchoStateNetwork(EchoStateNetwork):
    """Deprecated: ``EchoStateNetwork(..., activation="logistic")``.

    Kept for one release so that existing code runs: it warns (``DeprecationWarning``) and
    builds the same network as ``EchoStateNetwork(*args, activation="logistic", **kwargs)``
    (the same weights from the same seed, the same states).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn("LogisticEchoStateNetwork is deprecated: use "
                      "EchoStateNetwork(..., activation='logistic')", DeprecationWarning,
                      stacklevel=2)
        if kwargs.get("activation", "logistic") != "logistic":
            raise ValueError("LogisticEchoStateNetwork has logistic units; for others use "
                             "EchoStateNetwork(..., activation=...)")
        kwargs["activation"] = "logistic"
        super().__init__(*args, **kwargs)
