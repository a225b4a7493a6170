"""The Archivist (seed Phase 3): lessons reflected from finished trials, injected into later prompts, credited by
outcome."""
