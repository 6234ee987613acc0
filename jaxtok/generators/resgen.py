"""ResGen: masked generation of residual-VQ tokens through their cumulative embeddings.

"Efficient Generative Modeling with Residual Vector Quantization-Based Tokens" (Kim et al., ICML
2025, arXiv 2412.10208). An image is an ``N x D`` grid of RVQ codes (positions x depth, depth 0
coarsest). Masking goes from the finest depth towards the coarsest, so at position ``i`` the
masked set is a suffix ``{d_i, ..., D-1}`` of its depths (``d_i`` = revealed depth):

* training (:func:`depth_suffix_mask`): ``n = ceil(gamma(r) N D)`` masked tokens in all, spread
  over positions uniformly at random (the ``n`` lowest of ``N D`` uniform slot scores, counted
  per position: a multivariate hypergeometric draw, which the paper calls multinomial), each
  position masking the suffix of its count;
* the input at ``i`` is the sum of its revealed depths' code embeddings ``sum_{d<d_i} C_d[x_id]``
  (plus an embedding of ``d_i``, the position and the class prefix); the target is the sum of the
  masked ones ``e_i = sum_{d>=d_i} C_d[x_id]``, scored by a mixture of ``K`` diagonal Gaussians
  (:func:`mog_log_prob`, logsumexp in float32) on positions with ``d_i < D``;
* sampling (:func:`resgen_sample`): ``T`` model calls whatever ``D`` is. Each step samples ``e_i``
  from the mixture, re-quantises it with the RVQ codebooks from depth ``d_i`` on
  (:func:`requantize`, greedy like the RVQ encoder), scores each position by the mixture's
  log-density of the quantised sum (+ annealed Gumbel noise, as MaskGIT), and commits as many
  tokens as MaskGIT's schedule over ``N D`` tokens asks, coarse depths first
  (``commit='depth'``: every position's depth d before any position's depth d + 1, the most
  confident positions first within a depth) or, as an ablation, ``commit='position'``: one more
  depth at the most confident positions, a second only where every position still masked got one
  in this step. Either way each position commits a prefix of its masked depths, so the masked
  set stays a suffix. Uncommitted deeper codes are dropped and predicted again next step.

Not in the notes we could read (abstract-level only, no official code): the number of mixture
components, the covariance, extra loss terms, the paper's exact confidence rule and CFG form.
Those here are the notes' proposal: ``K`` diagonal components, log sigma clamped to [-7, 2],
pure NLL, the log-density confidence, and CFG on the mixture's logits and means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.generators.samplers.categorical import gumbel
from jaxtok.generators.samplers.contract import lowest_k, new_stats, record
from jaxtok.generators.samplers.maskgit import scheduled_mask_len
from jaxtok.generators.samplers.schedules import mask_ratio
from jaxtok.nn import Transformer, logical_init

LOG_SIGMA = (-7.0, 2.0)
COMMITS = ("depth", "position")
MoG = dict[str, jnp.ndarray]  # logits [B, N, K], mean and log_sigma [B, N, K, C]
MoGFn = Callable[[jnp.ndarray, jnp.ndarray], MoG]  # (visible [B, N, C], revealed [B, N]) -> MoG


def depth_suffix_mask(rng: jax.Array, batch: int, positions: int, depth: int,
                      ratio: jnp.ndarray) -> jnp.ndarray:
  """Revealed depth ``d_i`` int32 [B, N] with ``sum_i (D - d_i) = clip(ceil(ratio N D), 1, N D)``
  (``ratio`` [B]); the masked tokens fall on uniformly random (position, slot) pairs."""
  total = positions * depth
  n = jnp.clip(jnp.ceil(ratio * total), 1, total).astype(jnp.int32)
  slots = lowest_k(jax.random.uniform(rng, (batch, total)), n)  # exactly n per row
  return depth - jnp.sum(slots.reshape(batch, positions, depth), -1).astype(jnp.int32)


def masked_depths(revealed: jnp.ndarray, depth: int) -> jnp.ndarray:  # bool [B, N, D]
  return jnp.arange(depth) >= revealed[..., None]


def code_embeddings(codebooks: jnp.ndarray, codes: jnp.ndarray) -> jnp.ndarray:
  """``C_d[x_id]`` float32 [B, N, D, C] of codes [B, N, D] (codebooks [D, K, C]); code -1 -> 0."""
  depth = codebooks.shape[0]
  e = codebooks[jnp.arange(depth), jnp.maximum(codes, 0)]
  return jnp.where((codes >= 0)[..., None], e, 0.0)


def split_sums(codebooks: jnp.ndarray, codes: jnp.ndarray,
               revealed: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(sum of the revealed depths' embeddings, sum of the masked ones), each [B, N, C]."""
  e = code_embeddings(codebooks, codes)
  hidden = masked_depths(revealed, codebooks.shape[0])[..., None]
  return jnp.sum(jnp.where(hidden, 0.0, e), 2), jnp.sum(jnp.where(hidden, e, 0.0), 2)


def requantize(codebooks: jnp.ndarray, target: jnp.ndarray,
               start: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Greedy residual quantisation of ``target`` [B, N, C] from depth ``start`` [B, N] on:
  (codes int32 [B, N, D], -1 below ``start``; their embedding sum [B, N, C])."""
  residual, total, codes = target.astype(jnp.float32), jnp.zeros_like(target, jnp.float32), []
  for d in range(codebooks.shape[0]):
    book = codebooks[d]  # [K, C]
    dist = (jnp.sum(residual ** 2, -1, keepdims=True) - 2 * residual @ book.T
            + jnp.sum(book ** 2, -1))
    code = jnp.argmin(dist, -1).astype(jnp.int32)
    on = (d >= start)[..., None]
    q = jnp.where(on, book[code], 0.0)
    residual, total = residual - q, total + q
    codes.append(jnp.where(d >= start, code, -1))
  return jnp.stack(codes, -1), total


def mog_log_prob(mog: MoG, x: jnp.ndarray) -> jnp.ndarray:
  """``log sum_k pi_k N(x; mu_k, diag sigma_k^2)`` float32 [B, N] of x [B, N, C]."""
  mean, log_sigma = mog["mean"].astype(jnp.float32), mog["log_sigma"].astype(jnp.float32)
  z = (x.astype(jnp.float32)[..., None, :] - mean) * jnp.exp(-log_sigma)
  comp = jnp.sum(-0.5 * z ** 2 - log_sigma - 0.5 * jnp.log(2 * jnp.pi), -1)  # [B, N, K]
  log_pi = jax.nn.log_softmax(mog["logits"].astype(jnp.float32), -1)
  return jax.nn.logsumexp(log_pi + comp, -1)


def mog_sample(rng: jax.Array, mog: MoG, temperature: float = 1.0) -> jnp.ndarray:
  """One draw [B, N, C]: a component ``k ~ pi``, then ``mu_k + temperature sigma_k eps``."""
  k_pick, k_eps = jax.random.split(rng)
  k = jax.random.categorical(k_pick, mog["logits"].astype(jnp.float32), -1)  # [B, N]
  pick = lambda a: jnp.take_along_axis(a, k[..., None, None], -2)[..., 0, :]  # noqa: E731
  mean, sigma = pick(mog["mean"]), jnp.exp(pick(mog["log_sigma"]))
  return mean + temperature * sigma * jax.random.normal(k_eps, mean.shape)


def mog_guidance(cond: MoG, uncond: MoG, scale: float) -> MoG:
  """CFG on the mixture: logits and means ``u + (1 + s)(c - u)``; the conditional sigmas."""
  mix = lambda c, u: u + (1.0 + scale) * (c - u)  # noqa: E731
  return {"logits": mix(cond["logits"], uncond["logits"]),
          "mean": mix(cond["mean"], uncond["mean"]), "log_sigma": cond["log_sigma"]}


class ResGenTransformer(nn.Module):
  """``mog = model(visible [B, N, C], revealed [B, N], cond [B], train)``: a bidirectional
  transformer over the ``N`` positions with a class prefix (id ``num_classes`` = null class,
  dropped to it with probability ``cond_dropout`` in training) and a mixture head."""

  seq_len: int
  latent_dim: int
  depth: int
  num_mixtures: int = 8
  dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  num_classes: int = 0
  cond_dropout: float = 0.1
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def null_cond(self, batch: int) -> jnp.ndarray:
    return jnp.full((batch,), self.num_classes, jnp.int32)

  @nn.compact
  def __call__(self, visible, revealed, cond=None, train: bool = False) -> MoG:
    b, n, c = visible.shape
    if (n, c) != (self.seq_len, self.latent_dim) or revealed.shape != (b, n):
      raise ValueError(f"ResGenTransformer wants visible [B, {self.seq_len}, {self.latent_dim}] "
                       f"and revealed [B, {self.seq_len}]; got {visible.shape}, {revealed.shape}")
    init = logical_init(nn.initializers.normal(0.02), (None, "embed"))
    x = nn.Dense(self.dim, dtype=self.dtype, name="in_proj")(visible.astype(jnp.float32))
    x = x + nn.Embed(self.depth + 1, self.dim, embedding_init=init, name="depth_embed")(revealed)
    prefix = 0
    if self.num_classes:
      cond = self.null_cond(b) if cond is None else cond.astype(jnp.int32)
      if train and self.cond_dropout > 0:
        drop = jax.random.bernoulli(self.make_rng("dropout"), self.cond_dropout, (b,))
        cond = jnp.where(drop, self.num_classes, cond)
      cls = nn.Embed(self.num_classes + 1, self.dim, embedding_init=init, name="class_embed")
      x = jnp.concatenate([cls(cond)[:, None], x], 1)
      prefix = 1
    x = x + self.param("pos_embed", init, (prefix + n, self.dim))[None]
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="embed_norm")(x)
    x = Transformer(num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                    causal=False, dropout=self.dropout, dtype=self.dtype, name="transformer")(
        x, deterministic=not train)[:, prefix:]
    k = self.num_mixtures
    out = nn.Dense(k * (1 + 2 * c), dtype=self.dtype, name="mog_head")(x).astype(jnp.float32)
    logits, mean, log_sigma = jnp.split(out, [k, k + k * c], -1)
    return {"logits": logits, "mean": mean.reshape(b, n, k, c),
            "log_sigma": jnp.clip(log_sigma.reshape(b, n, k, c), *LOG_SIGMA)}


def make_mog_fn(model: ResGenTransformer, variables, cond=None,
                guidance_scale: float = 0.0) -> MoGFn:
  """The sampler's model call; with CFG the conditional and null rows run as one batch of 2B."""

  def mog_fn(visible, revealed):
    if guidance_scale == 0 or cond is None:
      return model.apply(variables, visible, revealed, cond)
    both = model.apply(variables, jnp.concatenate([visible, visible]),
                       jnp.concatenate([revealed, revealed]),
                       jnp.concatenate([cond.astype(jnp.int32), model.null_cond(len(cond))]))
    halves = {k: jnp.split(v, 2) for k, v in both.items()}
    return mog_guidance({k: v[0] for k, v in halves.items()},
                        {k: v[1] for k, v in halves.items()}, guidance_scale)

  return mog_fn


def resgen_loss(rng: jax.Array, mog_fn: MoGFn, codebooks: jnp.ndarray, codes: jnp.ndarray, *,
                schedule: str = "cosine", row_mask: jnp.ndarray | None = None,
                ) -> tuple[jnp.ndarray, dict]:
  """Mixture NLL of the masked depths' embedding sum, per masked position (codes [B, N, D]);
  aux: ``mask_rate`` and ``nll_per_dim`` (the loss over the latent width C)."""
  b, n, depth = codes.shape
  k_rate, k_mask = jax.random.split(rng)
  ratio = mask_ratio(schedule, jax.random.uniform(k_rate, (b,)))
  revealed = depth_suffix_mask(k_mask, b, n, depth, ratio)
  visible, target = split_sums(codebooks, codes, revealed)
  nll = -mog_log_prob(mog_fn(visible, revealed), target)  # [B, N]
  rows = jnp.ones((b, 1)) if row_mask is None else row_mask.astype(jnp.float32).reshape(b, 1)
  w = (revealed < depth) * rows
  loss = jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1e-9)
  rate = jnp.sum((depth - revealed) * rows) / jnp.maximum(n * depth * jnp.sum(rows), 1.0)
  return loss, {"mask_rate": rate, "nll_per_dim": loss / codebooks.shape[-1]}


def resgen_sample(rng: jax.Array, mog_fn: MoGFn, codebooks: jnp.ndarray, batch: int,
                  positions: int, *, num_steps: int = 8, temperature: float = 1.0,
                  choice_temperature: float = 4.5, schedule: str = "cosine",
                  commit: str = "depth") -> tuple[jnp.ndarray, dict]:
  """codes int32 [B, N, D] in exactly ``num_steps`` calls of ``mog_fn``; ``stats`` as the sampler
  contract (``nfe``, ``steps``, ``committed`` [B, T] tokens per step) plus ``revealed`` [T, B, N]
  (revealed depth after each step, for the unmasking picture)."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if commit not in COMMITS:
    raise ValueError(f"commit must be one of {COMMITS}; got {commit!r}")
  depth = codebooks.shape[0]
  total = jnp.full((batch,), positions * depth, jnp.int32)

  def step(carry, t):
    codes, revealed, rng, stats = carry
    rng, k_sample, k_choice = jax.random.split(rng, 3)
    visible, _ = split_sums(codebooks, codes, revealed)
    mog = mog_fn(visible, revealed)
    cand, qsum = requantize(codebooks, mog_sample(k_sample, mog, temperature), revealed)
    r = (t + 1).astype(jnp.float32) / num_steps
    conf = mog_log_prob(mog, qsum) + choice_temperature * (1 - r) * gumbel(k_choice, (batch,
                                                                                      positions))
    unknown = jnp.sum(depth - revealed, -1)
    count = unknown - scheduled_mask_len(t, num_steps, total, unknown, schedule)
    # Key of masked token (i, d): (d or d - d_i, confidence rank of i), increasing in d at each
    # position, so the k lowest keys are a prefix of every position's masked suffix.
    rank = jnp.argsort(jnp.argsort(-conf, -1, stable=True), -1, stable=True)  # 0 = most sure
    layer = jnp.arange(depth) - (revealed[..., None] if commit == "position" else 0)
    key = layer * positions + rank[..., None]
    key = jnp.where(masked_depths(revealed, depth), key, positions * depth * 2)
    take = lowest_k(key.reshape(batch, -1).astype(jnp.float32), count).reshape(codes.shape)
    codes = jnp.where(take, cand, codes)
    revealed = revealed + jnp.sum(take, -1).astype(jnp.int32)
    return (codes, revealed, rng, record(stats, t, count, 1)), revealed

  init = (jnp.full((batch, positions, depth), -1, jnp.int32),
          jnp.zeros((batch, positions), jnp.int32), rng, new_stats(batch, num_steps))
  (codes, _, _, stats), history = jax.lax.scan(step, init, jnp.arange(num_steps, dtype=jnp.int32))
  return codes, {**stats, "revealed": history}
