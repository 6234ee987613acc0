"""The registered ``gaussian_quantile`` bottleneck: continuous while training, binned per channel
by the running statistics at inference, which equal a separate fit of the same latents."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import QUANTIZERS, STATS, GaussianQuantizer
from jaxtok.quantizers.latent_gaussian import LatentGaussianQuantizer


def _train(q, variables, z, steps, mask=None, seed=0):
  for i in range(steps):
    (zq, out), new = q.apply(variables, z, train=True, mask=mask, mutable=[STATS],
                             rngs={"quantizer": jax.random.PRNGKey(seed + i)})
    variables = {**variables, **new}
  return variables, zq, out


def test_running_statistics_are_the_fit_of_the_latents_and_inference_bins_with_them():
  q = QUANTIZERS.get("gaussian_quantile")(dim=3, levels=8, noise=0.0, l2=0.5, momentum=0.9)
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 5, 3)) * jnp.array([0.5, 2.0, 1.0]) + 3.0
  variables = q.init(jax.random.PRNGKey(1), z)
  variables, zq, out = _train(q, variables, z, steps=4)
  # The debiased EMA of one repeated batch is that batch's statistics, from the first step on.
  fit = GaussianQuantizer.fit(z, levels=8)
  stats = q.apply(variables, method="gaussian")
  np.testing.assert_allclose(stats.mean, fit.mean, rtol=1e-5)
  np.testing.assert_allclose(stats.std, fit.std, rtol=1e-4)
  # Training: continuous pass-through (noise 0) and the weighted L2 penalty.
  np.testing.assert_array_equal(zq, z)
  np.testing.assert_allclose(out.losses["latent_l2"], 0.5 * jnp.mean(z * z), rtol=1e-5)
  # Inference: the fitted bins' conditional means, codes [..., D] one level per channel.
  zq, out = q.apply(variables, z, train=False)
  assert out.codes.shape == z.shape and out.codes.dtype == jnp.int32 and out.losses == {}
  np.testing.assert_array_equal(out.codes, fit.encode(z))
  np.testing.assert_allclose(zq, fit.decode(fit.encode(z)), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(q.apply(variables, z, method="encode"), out.codes)
  np.testing.assert_allclose(q.apply(variables, out.codes, method="decode"), zq, atol=1e-6)
  # Equiprobable bins: every level of every channel is used on 100 draws per channel.
  assert float(out.metrics["usage"]) == 1.0
  # Bins at conditional means: E (u - Q(u))^2 = 1 - E Q(u)^2 = 1 - mean(centers^2) per unit
  # variance (0.05 at 8 levels), up to the sampling error of 100 latents per channel.
  expected = float(jnp.mean(fit.std ** 2) * (1 - jnp.mean(fit.centers ** 2)))
  assert abs(float(out.metrics["quant_mse"]) - expected) < 0.25 * expected


def test_noise_is_applied_in_training_only_and_masked_rows_leave_the_statistics_alone():
  q = LatentGaussianQuantizer(dim=2, levels=4, noise=0.1, momentum=0.0)
  z = jnp.concatenate([jnp.ones((3, 2)), 100.0 * jnp.ones((2, 2))])
  mask = jnp.array([1, 1, 1, 0, 0])
  variables = q.init(jax.random.PRNGKey(0), z)
  variables, zq, _ = _train(q, variables, z.at[:3].add(jnp.array([[0.0], [1.0], [2.0]])), 1,
                            mask=mask)
  stats = q.apply(variables, method="gaussian")
  np.testing.assert_allclose(stats.mean, [2.0, 2.0], rtol=1e-6)  # rows 0-2 only: 1, 2, 3
  noise = zq[:3] - (z[:3] + jnp.array([[0.0], [1.0], [2.0]]))
  assert 0.0 < float(jnp.std(noise)) < 0.3
  zq_eval, _ = q.apply(variables, z, train=False)
  assert not np.allclose(zq_eval[:3], z[:3])  # binned, not passed through


def test_bad_input_is_refused():
  q = LatentGaussianQuantizer(dim=4)
  with pytest.raises(ValueError, match="last dim 4"):
    q.init(jax.random.PRNGKey(0), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="levels >= 2"):
    LatentGaussianQuantizer(dim=4, levels=1).init(jax.random.PRNGKey(0), jnp.zeros((2, 4)))
  variables = q.init(jax.random.PRNGKey(0), jnp.zeros((2, 4)))
  with pytest.raises(TypeError, match="integer codes"):
    q.apply(variables, jnp.zeros((2, 4)), method="decode")
