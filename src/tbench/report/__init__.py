"""The run report: report.md and a self-contained report.html, from the statistics layer (tbench.stats)."""
