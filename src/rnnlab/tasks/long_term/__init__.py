"""Long-term-dependency tasks: delayed recall and the "pathological" problems.

Sources (each generator's docstring gives its exact definition and success criterion):

- Hochreiter & Schmidhuber (1997), *Long short-term memory*, Neural Computation 9(8):
  experiment 4 (adding), 5 (multiplication), 6a/6b (temporal order), 2 (long noise-free lags).
- Martens & Sutskever (2011), *Learning recurrent neural networks with Hessian-free
  optimization*, ICML: the same problems rescaled to a length T, plus random permutation and
  noiseless memorization.
- Pascanu, Mikolov & Bengio (2013), *On the difficulty of training recurrent neural networks*,
  ICML, and its published code (github.com/pascanur/trainingRNNs), which fixes the details
  the papers leave open (positions, ranges, scaling, criteria).

Where these sources disagree, the generator takes a named ``variant``. Every generator returns
a :class:`LongTermTask`: ``inputs`` ``(batch, time, D)`` and ``targets`` ``(batch, time, O)``
float tensors, zero-padded to the longest sequence, a boolean ``mask`` ``(batch, time)`` of the
steps where the loss and the metric apply, and ``lengths`` ``(batch,)``. Data are drawn on the
CPU in float64 from a seeded ``torch.Generator`` (so a seed gives the same data on every
device), then cast; targets are computed from the inputs *as cast*, so the target is exactly
the defined function of what the network sees.

Conventions: positions are 0-based (the papers count from 1; each docstring translates).
A metric returns a :class:`TaskScore`; ``chance`` on a task is the success rate of the best
prediction that ignores the inputs (derived in closed form in each docstring and in
``docs/tasks_long_term.md``).

Layout: one module per task, each holding its generator, its metric and its registry entry
``SPEC`` (:mod:`~rnnlab.tasks.long_term.recall`, :mod:`~rnnlab.tasks.long_term.adding`,
:mod:`~rnnlab.tasks.long_term.multiplication`, :mod:`~rnnlab.tasks.long_term.order`,
:mod:`~rnnlab.tasks.long_term.permutation`, :mod:`~rnnlab.tasks.long_term.memorization`);
:mod:`~rnnlab.tasks.long_term.losses` the masked losses; the private ``_common`` the containers
every task shares, ``_draw`` the generators' drawing helpers, ``_scoring`` the metrics' checks,
``_marker`` the generator of the adding and multiplication problems. This package re-exports
every public name and holds the registry :data:`LONG_TERM_TASKS`.
"""

from rnnlab.tasks.long_term import (
    adding,
    memorization,
    multiplication,
    order,
    permutation,
    recall,
)
from rnnlab.tasks.long_term._common import (
    RUN_ERROR_RATE,
    LongTermTask,
    LongTermTaskSpec,
    TaskScore,
    final_outputs,
)
from rnnlab.tasks.long_term._marker import (
    HS_ABS_TOLERANCE,
    MARKER_VARIANTS,
    PASCANU_SQ_TOLERANCE,
)
from rnnlab.tasks.long_term.adding import adding_problem, adding_problem_score
from rnnlab.tasks.long_term.losses import masked_cross_entropy, masked_mse
from rnnlab.tasks.long_term.memorization import (
    noiseless_memorization,
    noiseless_memorization_score,
)
from rnnlab.tasks.long_term.multiplication import (
    multiplication_problem,
    multiplication_problem_score,
)
from rnnlab.tasks.long_term.order import (
    HS_CLASS_TOLERANCE,
    TEMPORAL_ORDER_SYMBOLS,
    TEMPORAL_ORDER_VARIANTS,
    temporal_order,
    temporal_order_score,
)
from rnnlab.tasks.long_term.permutation import (
    PERMUTATION_VARIANTS,
    random_permutation,
    random_permutation_score,
)
from rnnlab.tasks.long_term.recall import (
    RECALL_DISTRIBUTIONS,
    delayed_recall,
    delayed_recall_score,
)

LONG_TERM_TASKS: dict[str, LongTermTaskSpec] = {
    module.SPEC.name: module.SPEC
    for module in (recall, adding, multiplication, order, permutation, memorization)
}

__all__ = [
    "HS_ABS_TOLERANCE",
    "HS_CLASS_TOLERANCE",
    "LONG_TERM_TASKS",
    "MARKER_VARIANTS",
    "PASCANU_SQ_TOLERANCE",
    "PERMUTATION_VARIANTS",
    "RECALL_DISTRIBUTIONS",
    "RUN_ERROR_RATE",
    "TEMPORAL_ORDER_SYMBOLS",
    "TEMPORAL_ORDER_VARIANTS",
    "LongTermTask",
    "LongTermTaskSpec",
    "TaskScore",
    "adding_problem",
    "adding_problem_score",
    "delayed_recall",
    "delayed_recall_score",
    "final_outputs",
    "masked_cross_entropy",
    "masked_mse",
    "multiplication_problem",
    "multiplication_problem_score",
    "noiseless_memorization",
    "noiseless_memorization_score",
    "random_permutation",
    "random_permutation_score",
    "temporal_order",
    "temporal_order_score",
]
