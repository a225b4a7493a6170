"""The benchmark core: tasks, environments, verifier, trials, episodes."""
