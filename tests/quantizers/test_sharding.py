"""Quantizer statistics are identical with the batch sharded over 8 devices and unsharded.

Batch reductions inside jit are global under GSPMD, so EMA sums, usage, k-means and dead-code
replacement (which samples encoder outputs from the whole batch) must not depend on the layout.
"""

import json
import os

import numpy as np
import pytest

from tests.subproc import run_python

_SNIPPET = """
import json
import jax, jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P, AxisType
from jaxtok.quantizers import VectorQuantizer, ResidualVQ

assert jax.device_count() == 8
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
STATS = "quantizer_stats"
key = jax.random.key(0)
z = jax.random.normal(key, (32, 6, 4)) * 2 + 3.0
mask = (jnp.arange(32) % 5 != 0).astype(jnp.float32)[:, None] * jnp.ones((32, 6))
mods = {
    "vq_ema": VectorQuantizer(num_codes=16, dim=4, ema=True, kmeans_init=True,
                              dead_code_threshold=1.0, usage_decay=0.5),
    "vq_param": VectorQuantizer(num_codes=16, dim=4, kmeans_init=True, dead_code_threshold=1.0,
                                distance="cosine", usage_decay=0.5),
    "rvq": ResidualVQ(num_levels=2, num_codes=8, dim=4, ema=True, quantize_dropout=0.5),
}
result = {}
for name, q in mods.items():
  v = jax.jit(q.init)(jax.random.key(1), z)

  @jax.jit
  def step(v, z, mask):
    (z_q, out), new = q.apply(v, z, train=True, mask=mask, mutable=[STATS])
    return {**v, **new}, out.codes, out.metrics, sum(out.losses.values())

  runs = []
  for sharded in (False, True):
    zz, mm, vv = z, mask, v
    if sharded:
      zz = jax.device_put(z, NamedSharding(mesh, P("data")))
      mm = jax.device_put(mask, NamedSharding(mesh, P("data")))
    for _ in range(2):
      vv, codes, metrics, loss = step(vv, zz, mm)
    if sharded:
      assert len(codes.sharding.device_set) == 8
    leaves = [np.asarray(x).astype(np.float64).ravel().tolist()
              for x in jax.tree.leaves(vv.get(STATS, {}))]
    runs.append({"stats": leaves, "codes": np.asarray(codes).ravel().tolist(),
                 "usage": float(metrics["usage"]), "loss": float(loss)})
  result[name] = runs
print("RESULT" + json.dumps(result))
"""


@pytest.mark.slow  # 18 s on 2 cores (tests/durations.json)
def test_statistics_identical_sharded_and_unsharded():
  cache = os.path.join(os.path.expanduser("~"), ".cache", "jaxtok-tests-jax")
  proc = run_python(_SNIPPET, devices=8, env={
      "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", cache),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][0]
  result = json.loads(line[len("RESULT"):])
  assert set(result) == {"vq_ema", "vq_param", "rvq"}
  for name, (plain, sharded) in result.items():
    assert plain["codes"] == sharded["codes"], name
    assert len(plain["stats"]) == len(sharded["stats"]), name
    for a, b in zip(plain["stats"], sharded["stats"], strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    # Sharded reductions sum in another order: float32 last-bit differences, also near zero.
    np.testing.assert_allclose(plain["usage"], sharded["usage"], rtol=1e-6, atol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(plain["loss"], sharded["loss"], rtol=1e-5, atol=1e-6,
                               err_msg=name)
  # The statistics did move: k-means ran (the 'initialized' flag, the third leaf in sorted
  # order after 'ema_count' and 'ema_sum', is set).
  assert result["vq_ema"][0]["stats"][2] == [1.0]
