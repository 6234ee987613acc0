"""Generators over high-dimensional scalar-quantised tokens: CubiD and TokenBridge's heads.

A latent grid of ``N`` positions x ``C`` channels, each channel quantised on its own to ``L``
levels (Gaussian-quantile bins, :mod:`jaxtok.quantizers.gaussian_quantile`), is ``N * C``
discrete entries. One bidirectional backbone (:class:`DimwiseModel`) reads every position's ``C``
dequantised values, masked entries replaced by **one learned scalar** (CubiD: no mask-indicator
channel), and a class token. Three ways to predict the codes:

* ``factorised``: ``C`` independent softmaxes per position, positions masked as a whole
  (MaskGIT-style baseline); the head cannot model dependence between a position's channels.
* ``channel_ar`` (TokenBridge, "Bridging Continuous and Discrete Tokens for Autoregressive Visual
  Generation", Wang et al., 2025): positions masked as a whole; per position a small causal
  transformer over the channels, ``[c, E_0(x_0), ..., E_{C-2}(x_{C-2})]`` with ``c`` a projection
  of the backbone feature (added to every token too), separate embedding tables and heads per
  channel, so channel ``j`` is predicted from channels ``< j``. Sampling runs ``C`` sequential head
  passes per step, recomputing the prefix (the paper's code path). CFG, if any, is on the feature.
* ``cubid`` (CubiD, "Cubic Discrete Diffusion", CVPR 2026): the same per-entry head as
  ``factorised`` but every (position, channel) entry is masked independently (Bernoulli with a
  per-image rate ``r``); sampling reveals entries in one random order (not by confidence) with a
  cosine count over ``T`` steps, ``T << N * C``.

Mask rates ``r`` are truncated normals on ``[r_min, 1]`` with mode 1 (:func:`mask_ratio`): CubiD's
README uses ``r_min`` 0.5, std 0.1; TokenBridge uses 0.7, 0.25 (with an exact count of positions).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.nn.transformer import Transformer

HEADS = ("factorised", "channel_ar", "cubid")


def check_head(head: str) -> str:
  if head not in HEADS:
    raise ValueError(f"head must be one of {HEADS}; got {head!r}")
  return head


class ChannelARHead(nn.Module):
  """Backbone features [..., M] and codes [..., C] -> logits [..., C, L], causal over channels."""

  channels: int
  levels: int
  dim: int = 64
  num_layers: int = 2
  num_heads: int = 4

  @nn.compact
  def __call__(self, z, codes):
    lead = z.shape[:-1]
    c = nn.Dense(self.dim, name="cond")(z.reshape(-1, z.shape[-1]))  # [R, dim]
    tables = self.param("embed", nn.initializers.normal(0.02),
                        (self.channels - 1, self.levels, self.dim))
    prev = codes.reshape(-1, self.channels)[:, :-1]  # channel j's input is code j - 1
    emb = tables[jnp.arange(self.channels - 1)[None], prev]  # [R, C - 1, dim]
    pos = self.param("channel_pos", nn.initializers.normal(0.02), (self.channels, self.dim))
    x = jnp.concatenate([c[:, None], emb], 1) + pos + c[:, None]
    x = Transformer(self.num_layers, self.num_heads, 4 * self.dim, causal=True, name="blocks")(x)
    heads = self.param("heads", nn.initializers.normal(0.02),
                       (self.channels, self.dim, self.levels))
    logits = jnp.einsum("rcd,cdl->rcl", x, heads)
    return logits.reshape(lead + (self.channels, self.levels))


class DimwiseModel(nn.Module):
  """Class-conditional bidirectional backbone over ``num_positions`` positions of ``channels``
  dequantised values, with the per-entry head and (``head='channel_ar'``) the channel-AR head.

  ``features(values, masked, labels)`` -> z [B, N, dim]; ``entry_logits(z)`` and
  ``ar_logits(z, codes)`` -> [B, N, C, L]. Label ``num_classes`` is the null class (CFG).
  """

  num_positions: int
  channels: int
  levels: int
  num_classes: int
  head: str = "cubid"
  dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  ar_dim: int = 64
  ar_layers: int = 2
  cond_dropout: float = 0.1

  def setup(self):
    check_head(self.head)
    self.in_proj = nn.Dense(self.dim)
    self.mask_value = self.param("mask_value", nn.initializers.zeros, ())
    self.pos = self.param("pos", nn.initializers.normal(0.02), (self.num_positions + 1, self.dim))
    self.label_emb = nn.Embed(self.num_classes + 1, self.dim)
    self.backbone = Transformer(self.num_layers, self.num_heads, self.mlp_dim)
    self.entry_mlp = nn.Sequential([nn.Dense(2 * self.dim), nn.gelu, nn.Dense(2 * self.dim),
                                    nn.gelu, nn.Dense(self.channels * self.levels)])
    if self.head == "channel_ar":
      self.ar_head = ChannelARHead(self.channels, self.levels, self.ar_dim, self.ar_layers)

  def features(self, values, masked, labels, train: bool = False):
    if train and self.cond_dropout > 0:
      drop = jax.random.bernoulli(self.make_rng("dropout"), self.cond_dropout, labels.shape)
      labels = jnp.where(drop, self.num_classes, labels)
    x = jnp.where(masked, self.mask_value, values)
    h = jnp.concatenate([self.label_emb(labels)[:, None], self.in_proj(x)], 1) + self.pos
    return self.backbone(h)[:, 1:]

  def entry_logits(self, z):
    return self.entry_mlp(z).reshape(z.shape[:-1] + (self.channels, self.levels))

  def ar_logits(self, z, codes):
    return self.ar_head(z, codes)

  def __call__(self, values, masked, labels, codes, train: bool = False):
    z = self.features(values, masked, labels, train)
    return self.ar_logits(z, codes) if self.head == "channel_ar" else self.entry_logits(z)


def mask_ratio(rng, batch: int, r_min: float, std: float) -> jax.Array:
  """[B] rates from N(1, std^2) truncated to [r_min, 1] (mode 1)."""
  if not 0.0 <= r_min < 1.0 or std <= 0:
    raise ValueError(f"need 0 <= r_min < 1 and std > 0; got r_min={r_min}, std={std}")
  return 1.0 + std * jax.random.truncated_normal(rng, (r_min - 1.0) / std, 0.0, (batch,))


def entry_mask(rng, shape: tuple[int, int, int], ratio: jax.Array) -> jax.Array:
  """CubiD: every entry of [B, N, C] masked independently with its image's rate (bool)."""
  return jax.random.uniform(rng, shape) < ratio[:, None, None]


def position_mask(rng, shape: tuple[int, int, int], ratio: jax.Array) -> jax.Array:
  """MaskGIT/TokenBridge: ``ceil(N r)`` whole positions (at least one) masked, [B, N, C] bool."""
  b, n, c = shape
  count = jnp.clip(jnp.ceil(ratio * n), 1, n)
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (b, n)), -1), -1)
  return jnp.broadcast_to((rank < count[:, None])[..., None], shape)


def dimwise_loss(rng, features_fn: Callable, head_fn: Callable, centers: jax.Array,
                 codes: jax.Array, head: str, *, r_min: float, std: float,
                 head_positions: int | None = None):
  """Mean CE over masked entries.

  ``features_fn(values, masked) -> z [B, N, M]``; ``head_fn(z, codes) -> logits [..., C, L]``
  (z and codes may be a gathered subset of positions); ``centers`` [L]: the standardised value
  of each level; ``codes`` int [B, N, C]. ``head_positions`` (position masking only): score the
  head on that many masked positions per image, drawn at random (the channel-AR head costs ``C``
  tokens per position; the paper's MAR code replicates rather than subsamples).
  """
  check_head(head)
  k_ratio, k_mask, k_pick = jax.random.split(rng, 3)
  b, n, _ = codes.shape
  ratio = mask_ratio(k_ratio, b, r_min, std)
  masked = (entry_mask if head == "cubid" else position_mask)(k_mask, codes.shape, ratio)
  z = features_fn(centers[codes], masked)
  if head_positions is not None:
    if head == "cubid" or not 1 <= head_positions <= n:
      raise ValueError(f"head_positions must be in [1, {n}] and the head a position-masking one; "
                       f"got {head_positions} with head {head!r}")
    score = jax.random.uniform(k_pick, (b, n)) + masked[..., 0]  # masked positions first
    pick = jax.lax.top_k(score, head_positions)[1]
    rows = jnp.arange(b)[:, None]
    z, codes, masked = z[rows, pick], codes[rows, pick], masked[rows, pick]
  logits = head_fn(z, codes)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, codes[..., None], -1)[..., 0]
  m = masked.astype(jnp.float32)
  loss = jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)
  return loss, {"masked_fraction": jnp.mean(m), "nll_all": jnp.mean(nll)}


def masked_counts(total: int, steps: int) -> np.ndarray:
  """Entries still masked after each of ``steps`` steps: ``floor(total cos(pi/2 (s+1)/T))``, at
  least one fewer than before, 0 after the last step (CubiD's and MaskGIT's cosine count)."""
  if not 1 <= steps <= total:
    raise ValueError(f"steps must be in [1, {total}] (one entry per step at least); got {steps}")
  out, prev = [], total
  for s in range(steps):
    left = 0 if s == steps - 1 else math.floor(total * math.cos(math.pi / 2 * (s + 1) / steps))
    prev = min(left, prev - 1)
    out.append(max(prev, 0))
  return np.asarray(out, np.int32)


def _draw(rng, logits, temperature: float):
  return jax.random.categorical(rng, logits / max(temperature, 1e-6), -1).astype(jnp.int32)


def sample(rng, head: str, features_fn: Callable, entry_fn: Callable, ar_fn: Callable | None,
           centers: jax.Array, batch: int, positions: int, channels: int, *, num_steps: int,
           temperature: float = 1.0, keep_history: bool = False):
  """Codes [B, N, C] from all-masked in ``num_steps`` backbone calls.

  ``features_fn(values, masked) -> z``, ``entry_fn(z) -> logits``, ``ar_fn(z, codes) -> logits``
  (``channel_ar`` only; classes and any CFG are the callers'). ``cubid`` reveals entries, the
  others whole positions, in one random order per image with the cosine count. Returns (codes,
  stats): ``revealed`` [T, B] entries revealed after each step, ``nfe`` and (``keep_history``) the
  codes after each step [T, B, N, C], masked entries 0.
  """
  check_head(head)
  per_slot = 1 if head == "cubid" else channels
  slots = positions * channels // per_slot
  counts = masked_counts(slots, num_steps)
  left = jnp.asarray(counts)
  # the channel-AR head runs only on the positions revealed in a step, at most k_max of them
  k_max = int(np.max(-np.diff(counts, prepend=slots)))
  k_perm, k_steps = jax.random.split(rng)
  order = jnp.argsort(jax.random.uniform(k_perm, (batch, slots)), -1)  # reveal order
  rank = jnp.argsort(order, -1)  # slot -> its place in the reveal order
  rows = jnp.arange(batch)[:, None]
  shape = (batch, positions, channels)

  def expand(slot_mask):  # [B, slots] -> [B, N, C]
    return slot_mask.reshape(shape) if head == "cubid" else jnp.broadcast_to(
        slot_mask[..., None], shape)

  def body(carry, xs):
    codes, n_done = carry
    k, n_left = xs
    masked = expand(rank >= n_done[:, None])
    z = features_fn(centers[codes], masked)
    if head == "channel_ar":
      start = jnp.clip(n_done[0], 0, slots - k_max)
      sel = jax.lax.dynamic_slice_in_dim(order, start, k_max, axis=1)  # [B, k]
      place = start + jnp.arange(k_max)
      valid = ((place >= n_done[0]) & (place < slots - n_left))[None, :, None]
      z_sel, new = z[rows, sel], codes[rows, sel]
      for j, kj in enumerate(jax.random.split(k, channels)):
        new = new.at[..., j].set(_draw(kj, ar_fn(z_sel, new)[..., j, :], temperature))
      codes = codes.at[rows, sel].set(jnp.where(valid, new, codes[rows, sel]))
    else:
      new = _draw(k, entry_fn(z), temperature)
      codes = jnp.where(expand((rank >= n_done[:, None]) & (rank < slots - n_left)), new, codes)
    n_done = jnp.full((batch,), slots - n_left)
    revealed = ~expand(rank >= n_done[:, None])
    out = {"revealed": jnp.sum(revealed, (1, 2))}
    if keep_history:
      out["codes"] = codes
    return (codes, n_done), out

  init = (jnp.zeros(shape, jnp.int32), jnp.zeros((batch,), jnp.int32))
  (codes, _), stats = jax.lax.scan(body, init, (jax.random.split(k_steps, num_steps), left))
  return codes, {**stats, "nfe": num_steps}
