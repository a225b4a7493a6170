"""Iteration deltas, run summary and the markdown report."""

from tbench.report.summary import IterationDelta, RunSummary, compute_delta, summarize_run

__all__ = ["IterationDelta", "RunSummary", "compute_delta", "summarize_run"]
