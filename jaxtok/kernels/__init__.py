"""Pallas kernels, one folder per op: kernel.py (Pallas), reference.py (jnp), ops.py (dispatch)."""
