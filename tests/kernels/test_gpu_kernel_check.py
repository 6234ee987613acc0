"""benchmarks/gpu_kernel_check.py, the compiled-kernel check for a lent accelerator, run here in
interpret mode on small cases: it must pass a correct kernel and fail a wrong one."""

import jax.numpy as jnp
import pytest

from benchmarks import gpu_kernel_check as check


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_tree_case_passes_the_kernel_and_catches_a_wrong_scale(monkeypatch):
  err, ok = check._tree_case((2, 3, 4, 2, 16, 40), "float32", "gpu", True, seed=1)
  assert ok and err < 1e-5
  real = check.tree_attention
  # A kernel that ignores the 1/sqrt(D) scale is a different function: the check must say so.
  monkeypatch.setattr(check, "tree_attention", lambda *a, **kw: real(
      *a, **({**kw, "scale": 1.0} if kw.get("backend") == "gpu" else kw)))
  err, ok = check._tree_case((2, 3, 4, 2, 16, 40), "float32", "gpu", True, seed=1)
  assert not ok and err > 1e-2


def test_code_case_passes_the_kernel_and_catches_wrong_indices(monkeypatch):
  same, ndiff, _, ok = check._code_case((300, 8, 50, "l2"), "gpu", True, seed=0)
  assert ok and same == 1.0 and ndiff == 0
  real = check.nearest_codeword

  def off_by_one(z, c, **kw):
    idx, dist = real(z, c, **kw)
    return (jnp.where(idx > 0, idx - 1, idx), dist) if kw.get("backend") == "gpu" else (idx, dist)

  monkeypatch.setattr(check, "nearest_codeword", off_by_one)
  same, ndiff, _, ok = check._code_case((300, 8, 50, "l2"), "gpu", True, seed=0)
  assert not ok and ndiff > 0
