"""Token-level RL configs (see docs/rl.md)."""
