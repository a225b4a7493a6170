"""The Trainer (seed Phase 4): agent profiles compared in honest A/B runs with racing, power planning, and
profiles evolved with GEPA — all through the overnight runner."""
