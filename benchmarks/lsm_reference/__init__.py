"""NEST and brian2 side by side with rnnlab's liquid state machine (issue 13, item 4).

Modules: ``spec`` (a simulator-neutral column), ``nest_sim``, ``brian_sim``, ``rnnlab_side``;
scripts: ``compare.py`` (trajectories) and ``../bench_lsm.py`` (throughput). Import as
``lsm_reference.<module>`` with ``benchmarks/`` on ``sys.path``; see docs/lsm_reference.md.
"""
