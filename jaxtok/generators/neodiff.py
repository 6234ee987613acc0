"""NeoDiff: non-simultaneous continuous text diffusion (arXiv 2505.22165), the released recipe.

Two clocks: an extrinsic time ``t`` per sequence and an intrinsic level ``tau_i`` in ``[0, M]``
per token. ``poisson``: ``tau = clamp(round(lam + (P - lam) / sqrt(lam) * f(t)), 0, M)`` with
``P ~ Poisson(lam)``, ``lam = f(t) = 2 M t``; ``uniform``: ``tau = t M`` for every token (plain
continuous diffusion, the "simultaneous" baseline). Token embeddings ``x0`` (normalised, so they
cannot collapse under the MSE) are noised with the sqrt schedule ``abar(s) = 1 - sqrt(s + 1e-4)``
(clipped to [0, 1]) at ``s = tau / M``, with ONE noise scale for training and decoding (the
released code trains at 6.5 and decodes at 1.0; we do not copy that, nor its tau = 1 at t > 0.99).

The denoiser reads the clean condition tokens and the noised target, each target token told its
own ``tau_i / M``; it predicts ``x0_hat`` and logits through the same embedding table. The time
predictor (one block on the detached ``x0_hat`` plus an embedding of ``t``) regresses
``tau / M``; its labels rank the tokens of each sequence by loss and give rank ``r`` the Poisson
quantile ``F^-1_lam((r + 0.5) / n)`` through the same spread and clamp.

``mdlm``: the masked-diffusion baseline (MDLM, Sahoo et al., 2024) on the SAME denoiser, so the
arms differ only in the forward process: a clean byte enters as its embedding at tau = 0, a
[MASK] (id V) as z = 0 (the mean of pure noise) at tau = M; trained with MDLM's NELBO
(``masked_diffusion_loss``) and sampled with MDLM's ancestral sampler (``ddpm_sample``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.special import gammaincc

from jaxtok.generators.losses import masked_diffusion_loss
from jaxtok.generators.samplers.mdlm import ddpm_sample
from jaxtok.nn import Transformer

PROCESSES = ("poisson", "uniform")  # the continuous processes
ARMS = PROCESSES + ("mdlm",)


def abar(s: jnp.ndarray) -> jnp.ndarray:
  """The sqrt schedule ``1 - sqrt(s + 1e-4)``, clipped to [0, 1] (it is -5e-5 at s = 1)."""
  return jnp.clip(1.0 - jnp.sqrt(s + 1e-4), 0.0, 1.0)


def spread_clamp(count: jnp.ndarray, lam: jnp.ndarray, num_levels: int) -> jnp.ndarray:
  """``clamp(round(lam + (count - lam) / sqrt(lam) * 2 M t), 0, M)``, with ``2 M t = lam``."""
  z = (count - lam) / jnp.sqrt(jnp.maximum(lam, 1e-6))
  return jnp.clip(jnp.round(lam + z * lam), 0, num_levels)


def forward_tau(rng: jax.Array, t: jnp.ndarray, length: int, num_levels: int,
                process: str) -> jnp.ndarray:
  """float32 [B, N] intrinsic levels in [0, M] for extrinsic times ``t`` [B]."""
  if process not in PROCESSES:
    raise ValueError(f"process must be one of {PROCESSES}, got {process!r}")
  t = t[:, None]
  if process == "uniform":
    return jnp.broadcast_to(t * num_levels, (t.shape[0], length)).astype(jnp.float32)
  lam = 2.0 * num_levels * t
  count = jax.random.poisson(rng, jnp.broadcast_to(lam, (t.shape[0], length))).astype(jnp.float32)
  return spread_clamp(count, lam, num_levels)


def noise(rng: jax.Array, x0: jnp.ndarray, tau: jnp.ndarray, num_levels: int,
          noise_scale: float) -> jnp.ndarray:
  """``z = sqrt(abar) x0 + sqrt(1 - abar) * noise_scale * eps`` at ``s = tau / M`` per token."""
  a = abar(tau / num_levels)[..., None]
  return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise_scale * jax.random.normal(rng, x0.shape)


def poisson_quantile(p: jnp.ndarray, lam: jnp.ndarray, kmax: int) -> jnp.ndarray:
  """Smallest ``k <= kmax`` with ``P(Poisson(lam) <= k) >= p`` (broadcast over p and lam)."""
  k = jnp.arange(kmax + 1, dtype=jnp.float32)
  cdf = gammaincc(k + 1.0, jnp.maximum(lam, 1e-6)[..., None])  # P(X <= k)
  return jnp.sum(cdf < p[..., None], axis=-1).astype(jnp.float32)


def tau_labels(token_loss: jnp.ndarray, t: jnp.ndarray, num_levels: int) -> jnp.ndarray:
  """float32 [B, N]: rank tokens by ``token_loss`` inside each row (easiest first) and give rank
  r the spread/clamped Poisson quantile ``F^-1_lam((r + 0.5) / N)``, ``lam = 2 M t``."""
  n = token_loss.shape[-1]
  rank = jnp.argsort(jnp.argsort(token_loss, axis=-1), axis=-1).astype(jnp.float32)
  lam = jnp.broadcast_to(2.0 * num_levels * t[:, None], rank.shape)
  q = poisson_quantile((rank + 0.5) / n, lam, kmax=4 * num_levels + 40)
  return spread_clamp(q, lam, num_levels)


def time_features(x: jnp.ndarray, dim: int) -> jnp.ndarray:
  """Sinusoidal features of ``x`` in [0, 1] ([...] -> [..., dim])."""
  freqs = jnp.exp(-jnp.log(1000.0) * jnp.arange(dim // 2) / (dim // 2))
  ang = 1000.0 * x[..., None] * freqs
  return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)


class NeoDiff(nn.Module):
  """Denoiser and time predictor over ``cond`` int [B, C] and noised target ``z`` [B, N, E]."""

  vocab_size: int
  cond_len: int
  target_len: int
  embed_dim: int = 64
  dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 512

  def setup(self):
    self.embedding = self.param("embedding", nn.initializers.normal(1.0),
                                (self.vocab_size, self.embed_dim))
    self.cond_in = nn.Dense(self.dim)
    self.z_in = nn.Dense(self.dim)
    self.time_mlp = nn.Sequential([nn.Dense(self.dim), nn.silu, nn.Dense(self.dim)])
    self.pos = self.param("pos", nn.initializers.normal(0.02),
                          (self.cond_len + self.target_len, self.dim))
    self.body = Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                            mlp_dim=self.mlp_dim)
    self.x0_out = nn.Dense(self.embed_dim)
    self.tp_in = nn.Dense(self.dim)
    self.tp_time = nn.Sequential([nn.Dense(self.dim), nn.silu, nn.Dense(self.dim)])
    self.tp_body = Transformer(num_layers=1, num_heads=self.num_heads, mlp_dim=self.mlp_dim)
    self.tp_out = nn.Dense(1)

  def embed(self, tokens: jnp.ndarray) -> jnp.ndarray:
    """Normalised embeddings (zero mean, unit variance per vector): ``x0`` [..., E]."""
    e = self.embedding[tokens]
    e = e - e.mean(-1, keepdims=True)
    return e / jnp.sqrt(e.var(-1, keepdims=True) + 1e-6)

  def logits(self, x0_hat: jnp.ndarray) -> jnp.ndarray:
    table = self.embed(jnp.arange(self.vocab_size))
    return x0_hat @ table.T / jnp.sqrt(self.embed_dim)

  def _context(self, cond):
    return self.cond_in(self.embed(cond))

  def denoise(self, cond, z, tau_frac):
    """``(x0_hat [B, N, E], logits [B, N, V])``; ``tau_frac`` [B, N] is each token's tau / M."""
    h = self.z_in(z) + self.time_mlp(time_features(tau_frac, self.dim))
    x = jnp.concatenate([self._context(cond), h], axis=1) + self.pos
    x0_hat = self.x0_out(self.body(x)[:, self.cond_len:])
    return x0_hat, self.logits(x0_hat)

  def predict_tau(self, cond, x0_hat, t):
    """tau / M in [0, 1] per target token [B, N], from the detached ``x0_hat`` and ``t`` [B]."""
    h = self.tp_in(jax.lax.stop_gradient(x0_hat))
    h = h + self.tp_time(time_features(t, self.dim))[:, None]
    x = jnp.concatenate([self._context(cond), h], axis=1) + self.pos
    return nn.sigmoid(self.tp_out(self.tp_body(x)[:, self.cond_len:])[..., 0])

  def __call__(self, cond, z, tau_frac, t):
    x0_hat, logits = self.denoise(cond, z, tau_frac)
    return x0_hat, logits, self.predict_tau(cond, x0_hat, t)


def masked_logits_fn(model: NeoDiff, params, cond: jnp.ndarray):
  """``fn(noisy int [B, N]) -> logits [B, N, V]``: the denoiser on a masked state (mask id V)."""

  def fn(noisy):
    masked = noisy == model.vocab_size
    x0 = model.apply({"params": params}, jnp.minimum(noisy, model.vocab_size - 1),
                     method=NeoDiff.embed)
    z = jnp.where(masked[..., None], 0.0, x0)
    return model.apply({"params": params}, cond, z, masked.astype(jnp.float32),
                       method=NeoDiff.denoise)[1]
  return fn


def loss_terms(model: NeoDiff, params, rng: jax.Array, cond: jnp.ndarray, target: jnp.ndarray, *,
               num_levels: int, process: str, noise_scale: float):
  """(loss, aux): MSE(x0_hat, x0) + CE(logits, target), plus for ``poisson`` the time
  predictor's ``mean((tau_hat - tau*)^2) / M^2`` on loss-ranked labels; for ``mdlm`` the MDLM
  NELBO (linear schedule, 1 / t weight) with ``ce`` the unweighted CE of the masked bytes."""
  if process == "mdlm":
    loss, aux = masked_diffusion_loss(rng, masked_logits_fn(model, params, cond), target,
                                      mask_id=model.vocab_size)
    return loss, {"ce": aux["nll"], "mask_rate": aux["mask_rate"]}
  k_t, k_tau, k_eps = jax.random.split(rng, 3)
  b, n = target.shape
  t = jax.random.uniform(k_t, (b,))
  tau = forward_tau(k_tau, t, n, num_levels, process)
  x0 = model.apply({"params": params}, target, method=NeoDiff.embed)
  z = noise(k_eps, x0, tau, num_levels, noise_scale)
  x0_hat, logits, tau_hat = model.apply({"params": params}, cond, z, tau / num_levels, t)
  mse = jnp.mean((x0_hat - x0) ** 2, axis=-1)
  logp = jax.nn.log_softmax(logits, axis=-1)
  ce = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
  loss = jnp.mean(mse + ce)
  aux = {"mse": mse.mean(), "ce": ce.mean(),
         "accuracy": jnp.mean(jnp.argmax(logits, -1) == target)}
  if process == "poisson":
    labels = tau_labels(jax.lax.stop_gradient(mse + ce), t, num_levels) / num_levels
    tp = jnp.mean((tau_hat - labels) ** 2)
    loss = loss + tp
    aux["tau_loss"] = tp
  return loss, aux


def sample(model: NeoDiff, params, rng: jax.Array, cond: jnp.ndarray, *, num_steps: int,
           num_levels: int, process: str, noise_scale: float,
           temperature: float = 1.0) -> jnp.ndarray:
  """int32 [B, N]: start at pure noise (tau = M, t = 1); each step predict x0_hat, move to the
  next t, set every token's level (the time predictor's for ``poisson``, t M for ``uniform``)
  and re-noise x0_hat to it; output the argmax of the last x0_hat's logits. ``mdlm``: MDLM's
  ancestral sampler from all-[MASK] with ``num_steps`` denoiser calls, drawing each byte at
  ``temperature`` (the continuous arms have none: they output an argmax)."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if process not in ARMS:
    raise ValueError(f"process must be one of {ARMS}, got {process!r}")
  b, n = cond.shape[0], model.target_len
  if process == "mdlm":
    init = jnp.full((b, n), model.vocab_size, jnp.int32)
    return ddpm_sample(rng, masked_logits_fn(model, params, cond), init,
                       mask_id=model.vocab_size, num_steps=num_steps,
                       temperature=temperature)[0]
  k0, rng = jax.random.split(rng)
  z = noise_scale * jax.random.normal(k0, (b, n, model.embed_dim))
  tau_frac = jnp.ones((b, n))
  apply = lambda method, *a: model.apply({"params": params}, *a, method=method)

  def step(carry, k):
    z, tau_frac, _ = carry
    x0_hat, logits = apply(NeoDiff.denoise, cond, z, tau_frac)
    t_next = jnp.full((b,), 1.0 - (k + 1.0) / num_steps)
    if process == "poisson":
      tau_next = apply(NeoDiff.predict_tau, cond, x0_hat, t_next)
    else:
      tau_next = jnp.broadcast_to(t_next[:, None], (b, n))
    z = noise(jax.random.fold_in(rng, k), x0_hat, tau_next * num_levels, num_levels, noise_scale)
    return (z, tau_next, logits), None

  init = (z, tau_frac, jnp.zeros((b, n, model.vocab_size)))
  (_, _, logits), _ = jax.lax.scan(step, init, jnp.arange(num_steps))
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)
