"""Vector quantization (VQ-VAE) with the training tricks that keep codebooks alive.

"Neural Discrete Representation Learning", van den Oord, Vinyals, Kavukcuoglu (2017):

    k_i = argmin_k ||z_i - e_k||^2,    z_q = e_{k_i}
    L = ||sg(z) - z_q||^2 (codebook, eq. 3 term 2) + beta ||z - sg(z_q)||^2 (commitment, term 3)

with a straight-through gradient ``z + sg(z_q - z)``. Options:

* ``ema=True``: the codebook is an exponential moving average of assigned encoder outputs (App.
  A.1) with Laplace smoothing; it lives in ``'quantizer_stats'`` and has no codebook loss.
* ``gradient='rotation'``: "Restructuring Vector Quantization with the Rotation Trick", Fifty et al.
  (2024), eq. 4: ``z_q = sg(||q|| / ||z|| R) z`` with the Householder rotation
  ``R = I - 2 r r^T + 2 q^ e^T``, ``e = z / ||z||``, ``q^ = q / ||q||``,
  ``r = (e + q^) / ||e + q^||``.
* ``kmeans_init``: Lloyd's k-means on the first training batch ("Jukebox", Dhariwal et al.
  2020); run once, under ``lax.cond`` on an ``initialized`` flag.
* ``dead_code_threshold > 0``: codes whose usage EMA (assignments per batch) falls below the
  threshold are replaced by encoder outputs from the current batch (Jukebox / SoundStream).
* ``distance='cosine'``: l2-normalised inputs and codebook ("Vector-quantized Image Modeling with
  Improved VQGAN", Yu et al. 2022); ``code_dim``: low-dimensional codebook with in/out projections
  (same paper, "factorized codes").
* ``stochastic=True``: during training sample ``k ~ softmax(-d / temperature)`` instead of argmin.
* ``entropy_weight > 0``: the diversity regulariser ``mean_i H(p_i) - H(mean_i p_i)`` with
  ``p_i = softmax(-d_i / entropy_temperature)`` (as in MAGVIT-v2's LFQ entropy loss).

The stochastic and entropy options materialise the ``[M, K]`` distances; everything else streams
the codebook through :func:`jaxtok.kernels.nearest_codeword.nearest_codeword`. For non-EMA
codebooks, k-means and dead-code replacement write a ``codebook_offset`` in the stats collection
(effective codebook = param + offset), so the parameter stays the optimiser's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.kernels.nearest_codeword import nearest_codeword
from jaxtok.nn.partitioning import logical_init
from jaxtok.quantizers import codebook_stats as cs
from jaxtok.quantizers.base import (
  STATS,
  IndexCodes,
  QuantizerOutput,
  check_codes,
  check_input,
  code_metrics,
  flat_weights,
)


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
  """Forward ``q``, gradient identity to ``z`` (both [M, D])."""
  return z + jax.lax.stop_gradient(q - z)


def rotation_trick(z: jax.Array, q: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Forward ``q``, gradient ``dz_q/dz = ||q||/||z|| R`` (Fifty et al. 2024, eq. 4); [M, D]."""
  sg = jax.lax.stop_gradient
  z_norm = jnp.sqrt(jnp.maximum(jnp.sum(z * z, -1, keepdims=True), eps))
  q_norm = jnp.sqrt(jnp.maximum(jnp.sum(q * q, -1, keepdims=True), eps))
  e, q_hat = sg(z / z_norm), sg(q / q_norm)
  r = e + q_hat
  r = sg(r / jnp.sqrt(jnp.maximum(jnp.sum(r * r, -1, keepdims=True), eps)))
  rz = z - 2 * r * jnp.sum(r * z, -1, keepdims=True) + 2 * q_hat * jnp.sum(e * z, -1, keepdims=True)
  return sg(q_norm / z_norm) * rz


def entropy_terms(logits: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean per-sample entropy, entropy of the mean distribution), weighted; logits [M, K]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(logp)
  wsum = jnp.maximum(jnp.sum(w), 1e-9)
  per_sample = jnp.sum(-jnp.sum(p * logp, -1) * w) / wsum
  avg = jnp.sum(p * w[:, None], 0) / wsum  # [K]
  batch = -jnp.sum(avg * jnp.log(jnp.maximum(avg, 1e-30)))
  return per_sample, batch


class VectorQuantizer(IndexCodes, nn.Module):
  """VQ with a K x code_dim codebook. z [..., dim] -> (z_q [..., dim], out with codes [...]).

  Attributes:
    num_codes: codebook size K.
    dim: input width D (last dim of z).
    code_dim: codebook width; None means ``dim`` (no projections).
    distance: 'l2' or 'cosine'.
    commitment_weight: beta.
    codebook_weight: weight of the codebook loss (ignored with ``ema``).
    ema, decay, ema_eps: EMA codebook updates and Laplace smoothing.
    kmeans_init, kmeans_iters: initialise from the first training batch.
    dead_code_threshold: replace codes whose usage EMA is below this (0 disables).
    usage_decay: decay of the per-code usage EMA (assignments per batch).
    gradient: 'ste' (straight-through) or 'rotation'.
    stochastic, temperature: sample codes from softmax(-d / temperature) in training.
    entropy_weight, entropy_temperature: diversity regulariser.
    init_scale: std of the normal codebook initialisation.
    seed: fallback seed when no 'quantizer' rng is passed (then the key is folded with the step).
    backend: nearest-codeword backend (None = automatic).
  """

  num_codes: int
  dim: int
  code_dim: int | None = None
  distance: str = "l2"
  commitment_weight: float = 0.25
  codebook_weight: float = 1.0
  ema: bool = False
  decay: float = 0.99
  ema_eps: float = 1e-5
  kmeans_init: bool = False
  kmeans_iters: int = 10
  dead_code_threshold: float = 0.0
  usage_decay: float = 0.99
  gradient: str = "ste"
  stochastic: bool = False
  temperature: float = 1.0
  entropy_weight: float = 0.0
  entropy_temperature: float = 0.01
  init_scale: float = 1.0
  seed: int = 0
  backend: str | None = None

  def __post_init__(self):
    if self.distance not in ("l2", "cosine"):
      raise ValueError(f"distance must be 'l2' or 'cosine'; got {self.distance!r}")
    if self.gradient not in ("ste", "rotation"):
      raise ValueError(f"gradient must be 'ste' or 'rotation'; got {self.gradient!r}")
    if self.num_codes < 1 or self.dim < 1:
      raise ValueError(f"num_codes and dim must be >= 1; got {self.num_codes}, {self.dim}")
    super().__post_init__()

  @property
  def _cdim(self) -> int:
    return self.code_dim or self.dim

  @property
  def _project(self) -> bool:
    return self.code_dim is not None and self.code_dim != self.dim

  def setup(self):
    k, dc = self.num_codes, self._cdim
    init = nn.initializers.normal(self.init_scale)
    if self._project:
      self.proj_in = nn.Dense(dc, kernel_init=logical_init(
          nn.initializers.lecun_normal(), ("embed", "code_dim")), name="proj_in")
      self.proj_out = nn.Dense(self.dim, kernel_init=logical_init(
          nn.initializers.lecun_normal(), ("code_dim", "embed")), name="proj_out")
    if self.ema:
      self.ema_count = self.variable(STATS, "ema_count", jnp.ones, (k,), jnp.float32)
      self.ema_sum = self.variable(
          STATS, "ema_sum", lambda: init(self.make_rng("params"), (k, dc), jnp.float32))
    else:
      self.codebook_param = self.param(
          "codebook", logical_init(init, ("codebook", "code_dim")), (k, dc), jnp.float32)
      if self.kmeans_init or self.dead_code_threshold > 0:
        self.offset = self.variable(STATS, "codebook_offset", jnp.zeros, (k, dc), jnp.float32)
    self.step = self.variable(STATS, "step", lambda: jnp.zeros((), jnp.int32))
    self.usage = self.variable(STATS, "usage", lambda: jnp.full(
        (k,), self.dead_code_threshold + 1.0, jnp.float32))
    if self.kmeans_init:
      self.initialized = self.variable(STATS, "initialized", lambda: jnp.zeros((), jnp.bool_))

  # -- pieces -------------------------------------------------------------------------------

  def codebook(self) -> jax.Array:
    """The effective codebook [K, code_dim] (normalised for cosine)."""
    if self.ema:
      cb = cs.ema_codebook(self.ema_count.value, self.ema_sum.value, self.ema_eps)
    else:
      cb = self.codebook_param
      if self.kmeans_init or self.dead_code_threshold > 0:
        cb = cb + self.offset.value
    return cs.l2_normalize(cb) if self.distance == "cosine" else cb

  def _to_code_space(self, z: jax.Array) -> jax.Array:  # [M, D] -> [M, Dc]
    ze = self.proj_in(z) if self._project else z
    return cs.l2_normalize(ze) if self.distance == "cosine" else ze

  def _from_code_space(self, q: jax.Array) -> jax.Array:  # [M, Dc] -> [M, D]
    return self.proj_out(q) if self._project else q

  def _rng(self) -> jax.Array:
    # ``step`` is advanced at the end of every statistics update, so it doubles as the counter.
    if self.has_rng("quantizer"):
      return self.make_rng("quantizer")
    return jax.random.fold_in(jax.random.key(self.seed), self.step.value)

  def _set_codebook(self, new: jax.Array, replace: jax.Array, count: jax.Array) -> None:
    """Overwrites rows ``replace`` [K] bool of the codebook with ``new`` [K, Dc]."""
    if self.ema:
      self.ema_sum.value = jnp.where(replace[:, None], new * count[:, None], self.ema_sum.value)
      self.ema_count.value = jnp.where(replace, count, self.ema_count.value)
    else:
      off = jax.lax.stop_gradient(new - self.codebook_param)
      self.offset.value = jnp.where(replace[:, None], off, self.offset.value)

  def _distances(self, ze: jax.Array, cb: jax.Array) -> jax.Array:  # [M, K]
    if self.distance == "cosine":
      return 1.0 - ze @ cb.T
    return (jnp.sum(ze * ze, -1, keepdims=True) - 2 * ze @ cb.T + jnp.sum(cb * cb, -1)[None])

  # -- the quantizer --------------------------------------------------------------------------

  def __call__(self, z: jax.Array, *, train: bool = False,
               mask: jax.Array | None = None) -> tuple[jax.Array, QuantizerOutput]:
    """z [..., dim] -> (z_q [..., dim] in z's dtype, QuantizerOutput(codes [...]))."""
    check_input(z, self.dim, type(self).__name__)
    lead = z.shape[:-1]
    w = flat_weights(mask, lead)  # [M]
    zf = z.astype(jnp.float32).reshape(-1, self.dim)  # [M, D]
    ze = self._to_code_space(zf)  # [M, Dc]
    update = train and self.is_mutable_collection(STATS) and not self.is_initializing()
    k = self.num_codes
    rng = self._rng() if update or (train and self.stochastic) else None

    if update and self.kmeans_init:
      key = jax.random.fold_in(rng, 1)
      zs = jax.lax.stop_gradient(ze)

      def do_init(_):
        centers, n = cs.kmeans(key, zs, w, k, self.kmeans_iters, self.distance)
        return centers, jnp.maximum(n, 1.0)

      def keep(_):
        return jnp.zeros((k, self._cdim), jnp.float32), jnp.ones((k,), jnp.float32)

      init_now = jnp.logical_not(self.initialized.value)
      centers, n0 = jax.lax.cond(init_now, do_init, keep, None)
      self._set_codebook(centers, jnp.broadcast_to(init_now, (k,)), n0)
      self.initialized.value = jnp.ones((), jnp.bool_)

    cb = self.codebook()  # [K, Dc]
    dist = None
    if (train and self.stochastic) or self.entropy_weight > 0:
      dist = self._distances(jax.lax.stop_gradient(ze), jax.lax.stop_gradient(cb))  # [M, K]
    if train and self.stochastic:
      codes = jax.random.categorical(jax.random.fold_in(rng, 2), -dist / self.temperature)
      codes = codes.astype(jnp.int32)
    else:
      codes, _ = nearest_codeword(ze, cb, distance=self.distance, backend=self.backend)
    q = cb[codes]  # [M, Dc]

    wsum = jnp.maximum(jnp.sum(w), 1e-9)
    sq = lambda a: jnp.sum(jnp.sum(jnp.square(a), -1) * w) / (wsum * ze.shape[-1])
    losses = {"commitment": self.commitment_weight * sq(ze - jax.lax.stop_gradient(q))}
    if not self.ema:
      losses["codebook"] = self.codebook_weight * sq(jax.lax.stop_gradient(ze) - q)
    metrics = code_metrics(codes, k, w)
    if self.entropy_weight > 0:
      logits = -self._distances(ze, cb) / self.entropy_temperature
      per_sample, batch = entropy_terms(logits, w)
      losses["entropy"] = self.entropy_weight * (per_sample - batch)
      metrics["per_sample_entropy"], metrics["batch_entropy"] = per_sample, batch

    zq = straight_through(ze, q) if self.gradient == "ste" else rotation_trick(ze, q)

    if update:
      zs = jax.lax.stop_gradient(ze)
      n, s = cs.assignment_sums(zs, codes, w, k)
      if self.ema:
        self.ema_count.value, self.ema_sum.value = cs.ema_update(
            self.ema_count.value, self.ema_sum.value, n, s, self.decay)
      usage = self.usage_decay * self.usage.value + (1 - self.usage_decay) * n
      if self.dead_code_threshold > 0:
        fresh, dead = cs.replace_dead_codes(jax.random.fold_in(rng, 3), self.codebook(), usage,
                                            zs, w, self.dead_code_threshold)
        self._set_codebook(fresh, dead, jnp.ones((k,), jnp.float32))
        metrics["dead_codes"] = jnp.sum(dead.astype(jnp.float32))
        usage = jnp.where(dead, self.dead_code_threshold + 1.0, usage)
      self.usage.value = usage
      self.step.value = self.step.value + 1
    elif self.dead_code_threshold > 0:
      metrics["dead_codes"] = jnp.sum((self.usage.value < self.dead_code_threshold).astype(
          jnp.float32))

    z_q = self._from_code_space(zq).reshape(lead + (self.dim,)).astype(z.dtype)
    return z_q, QuantizerOutput(codes=codes.reshape(lead), losses=losses, metrics=metrics)

  def encode(self, z: jax.Array) -> jax.Array:
    """z [..., dim] -> int32 codes [...] (nearest codeword, no statistics)."""
    check_input(z, self.dim, type(self).__name__)
    ze = self._to_code_space(z.astype(jnp.float32).reshape(-1, self.dim))
    codes, _ = nearest_codeword(ze, self.codebook(), distance=self.distance, backend=self.backend)
    return codes.reshape(z.shape[:-1])

  def decode(self, codes: jax.Array) -> jax.Array:
    """int codes [...] -> z_q [..., dim] float32."""
    check_codes(codes, type(self).__name__)
    return self._from_code_space(self.codebook()[codes.reshape(-1)]).reshape(
        codes.shape + (self.dim,))
