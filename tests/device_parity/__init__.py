"""Device and dtype parity: every public model, learner and analysis of rnnlab, moved to a second
device (``RNNLAB_TEST_DEVICE``, default ``cuda``) in float64 and float32, against the same
computation on the CPU in float64.

Each test builds its object seeded on the CPU in float64, runs it there as the reference, then
runs ``copy.deepcopy(obj).to(DEVICE, dtype)`` (or the object built with ``device=``/``dtype=``)
on the inputs moved alike, and checks that every output, gradient and state is on ``DEVICE``
with the expected dtype and equals the reference: float64 to round-off, float32 to the
precision float32 can carry through a few recurrent steps. A tensor created inside the library
without ``device=``/``dtype=`` shows up here as a device or dtype failure.

Every module is skipped when ``DEVICE`` is not usable, so a CI without a GPU skips it; with
``RNNLAB_TEST_DEVICE=cpu`` it runs on the CPU, where device bugs are invisible but the float32
runs still catch dtype bugs.

One module per concept: ``test_parity_cells``, ``_models``, ``_learning``, ``_optim``,
``_analysis``, ``_reservoirs``, ``_tasks``, ``_state_dict``; ``_parity`` holds the device, the
comparison helpers and the cases several modules share, ``conftest`` the fixtures.
"""
