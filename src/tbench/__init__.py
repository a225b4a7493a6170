"""tbench: run Terminal-Bench suites overnight, record each iteration as an Episode, compare, learn."""

__version__ = "0.1.0"
