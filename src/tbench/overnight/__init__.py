"""The overnight loop: iterations of a suite, state for resume, results and episodes."""
