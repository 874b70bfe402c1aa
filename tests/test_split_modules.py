"""The old import paths of the split modules still give the very objects of their new homes.

``rnnlab.tasks.music`` (now the Bach-chorale builder over ``rnnlab.tasks.piano_roll``),
``rnnlab.tasks.long_term`` (now a package, one module per task) and
``rnnlab.optim.hessian_free`` (now beside ``gauss_newton`` and ``cg``) re-export what they
exported before the split (issue 11, part 6).
"""

import importlib

import pytest

import rnnlab.optim
import rnnlab.tasks
from rnnlab.optim import cg, gauss_newton, hessian_free
from rnnlab.tasks import long_term, music, piano_roll

# What each old path exported before the split (its public module-level names).
MUSIC_NAMES = (
    "HIGHEST_MIDI LOWEST_MIDI NUM_KEYS SPLITS PianoRollBatch bach_chorale_frames bach_chorales "
    "default_cache_dir frame_accuracy frame_counts frame_nll key_frequencies load_piano_rolls "
    "marginal_nll next_step_batch notes_to_roll pad_rolls piano_roll_batches roll_to_notes "
    "rolls_from_dict save_piano_rolls score_to_frames"
).split()
LONG_TERM_NAMES = (
    "HS_ABS_TOLERANCE HS_CLASS_TOLERANCE LONG_TERM_TASKS MARKER_VARIANTS PASCANU_SQ_TOLERANCE "
    "PERMUTATION_VARIANTS RECALL_DISTRIBUTIONS RUN_ERROR_RATE TEMPORAL_ORDER_SYMBOLS "
    "TEMPORAL_ORDER_VARIANTS LongTermTask LongTermTaskSpec TaskScore adding_problem "
    "adding_problem_score delayed_recall delayed_recall_score final_outputs "
    "masked_cross_entropy masked_mse multiplication_problem multiplication_problem_score "
    "noiseless_memorization noiseless_memorization_score random_permutation "
    "random_permutation_score temporal_order temporal_order_score"
).split()
HESSIAN_FREE_NAMES = ("CGResult", "GaussNewton", "HessianFree", "conjugate_gradient")


@pytest.mark.parametrize(("module", "names"), [(music, MUSIC_NAMES),
                                               (long_term, LONG_TERM_NAMES),
                                               (hessian_free, HESSIAN_FREE_NAMES)])
def test_old_paths_export_the_same_names(module, names):
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module.__name__} lost {missing}"


def test_music_re_exports_the_piano_roll_objects():
    for name in piano_roll.__all__:
        assert getattr(music, name) is getattr(piano_roll, name), name


def test_optim_names_are_the_objects_of_their_own_modules():
    cg_solver = cg.conjugate_gradient
    assert hessian_free.conjugate_gradient is cg_solver is rnnlab.optim.conjugate_gradient
    assert hessian_free.CGResult is cg.CGResult is rnnlab.optim.CGResult
    assert hessian_free.GaussNewton is gauss_newton.GaussNewton is rnnlab.optim.GaussNewton


def test_registry_is_one_spec_per_task_module_in_the_old_order():
    order = ("recall", "adding", "multiplication", "order", "permutation", "memorization")
    specs = [importlib.import_module(f"rnnlab.tasks.long_term.{m}").SPEC for m in order]
    assert list(long_term.LONG_TERM_TASKS.values()) == specs
    assert list(long_term.LONG_TERM_TASKS) == [
        "delayed_recall", "adding_problem", "multiplication_problem", "temporal_order",
        "random_permutation", "noiseless_memorization"]
    for spec in specs:  # the generator and metric a spec names are the exported ones
        assert getattr(long_term, spec.name) is spec.generate
        assert getattr(long_term, f"{spec.name}_score") is spec.score
    assert rnnlab.tasks.LONG_TERM_TASKS is long_term.LONG_TERM_TASKS
