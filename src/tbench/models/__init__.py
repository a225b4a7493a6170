"""Every schema that crosses a file boundary, in one place: tasks and suites, trial results and their parts,
iteration results, deltas, summaries, run config and state, model and learning settings, lessons, episodes,
trajectories — and the run folder's layout and the grading policy that every count follows.

This package imports nothing of tbench but `tbench.errors`, so any layer may use it (see docs/tbench/README.md,
"Package map"; tests/test_layers.py enforces the direction).
"""
