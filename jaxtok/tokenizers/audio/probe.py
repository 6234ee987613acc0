"""A downstream probe on frozen discrete tokens: utterance classification (speaker, language).

DASB's discrete probe (the DATES paper's downstream protocol): the ids of codebook m are offset by
``m * K`` into one embedding table ``Embedding(M * K, d)`` trained from scratch, then a head. DASB
adds the offsets in place (``in_tokens += offsets``), so cached tokens reused a second time are
offset twice; here the offsets are added to a new array. The head is deliberately small (codebook
embeddings summed, a GELU layer per frame, mean over frames, a linear classifier) so that the probe
measures what the tokens carry, not what a big head can infer.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class TokenProbe(nn.Module):
  """Codes [B, F, M] (ids in [0, K)) -> class logits [B, num_classes]."""

  num_codebooks: int
  num_codes: int
  num_classes: int
  dim: int = 64

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    if codes.shape[-1] != self.num_codebooks:
      raise ValueError(f"TokenProbe expects codes [B, F, {self.num_codebooks}]; got "
                       f"{codes.shape}")
    offsets = jnp.arange(self.num_codebooks, dtype=jnp.int32) * self.num_codes
    e = nn.Embed(self.num_codebooks * self.num_codes, self.dim)(codes.astype(jnp.int32) + offsets)
    h = nn.gelu(nn.Dense(self.dim)(jnp.sum(e, axis=-2)))  # [B, F, dim]
    return nn.Dense(self.num_classes)(jnp.mean(h, axis=1))


def fit_probe(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
              test_labels: np.ndarray, *, num_codes: int, num_classes: int, steps: int = 300,
              batch_size: int = 64, lr: float = 3e-3, dim: int = 64, seed: int = 0
              ) -> dict[str, float]:
  """Trains a :class:`TokenProbe` on (codes [N, F, M], labels [N]); returns train/test accuracy."""
  train_codes, test_codes = np.asarray(train_codes), np.asarray(test_codes)
  for name, c in (("train", train_codes), ("test", test_codes)):
    if c.ndim != 3 or c.min() < 0 or c.max() >= num_codes:
      raise ValueError(f"{name} codes must be [N, F, M] ids in [0, {num_codes}); got shape "
                       f"{c.shape}, range [{c.min()}, {c.max()}]")
  model = TokenProbe(train_codes.shape[-1], num_codes, num_classes, dim)
  rng = jax.random.key(seed)
  params = model.init(rng, jnp.asarray(train_codes[:1]))["params"]
  tx = optax.adamw(lr, weight_decay=1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, codes, labels):
    def loss_fn(p):
      logits = model.apply({"params": p}, codes)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  @jax.jit
  def predict(params, codes):
    return jnp.argmax(model.apply({"params": params}, codes), -1)

  draws = np.random.default_rng(seed)
  n = len(train_codes)
  for _ in range(steps):
    idx = draws.choice(n, size=min(batch_size, n), replace=False)
    params, opt, _ = step(params, opt, jnp.asarray(train_codes[idx]),
                          jnp.asarray(train_labels[idx]))

  def accuracy(codes, labels):
    return float(np.mean(np.asarray(predict(params, jnp.asarray(codes))) == np.asarray(labels)))

  return {"train_accuracy": accuracy(train_codes, train_labels),
          "test_accuracy": accuracy(test_codes, test_labels)}
