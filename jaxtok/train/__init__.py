"""Training infrastructure: state, sharding, checkpoints, the loop, metric writers."""
