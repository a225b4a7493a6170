"""The one statistics layer: every figure tbench writes or prints — summary.json, delta.json, an episode's
summary, report.md/html, `tbench compare`, the learning proof — is computed here from trial results, by the
grading policy's tally (models/results.py: one graded-rate rule, one flaky rule)."""
