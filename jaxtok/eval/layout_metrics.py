"""Layout metrics: alignment and overlap (LayoutGAN++ / LayoutDM definitions) and a Frechet
distance on a small layout encoder's features (a stand-in for the papers' layout-FID network).

Boxes are float ``[B, E, 4]`` as (left, top, width, height) in [0, 1] with ``valid [B, E]``.

* :func:`alignment` -- "Constrained Graphic Layout Generation via Latent Optimization"
  (LayoutGAN++, Kikuchi et al., 2021) ``compute_alignment``, from "Attribute-conditioned Layout
  GAN" Sec. 3.6.3: for each element i the smallest ``|a_i - a_j|`` over the other elements j and
  over the six coordinates (left, x-centre, right, top, y-centre, bottom); a distance of exactly 1
  (no partner) counts 0; the score is ``sum_i -log(1 - d_i) / n``. Unlike the reference, padded
  elements are never partners (there they sit at 0 and count as aligned with a left edge at 0).
* :func:`overlap` -- LayoutGAN++ ``compute_overlap``: ``sum_{i != j} |b_i ∩ b_j| / |b_i|`` over
  the valid elements, divided by their number.
* :class:`LayoutEncoder` / :func:`train_layout_encoder` / :func:`layout_fd` -- the FID network of
  LayoutGAN++ (FIDNetV3) is a transformer encoder trained to tell real layouts from perturbed ones;
  here a small token transformer is trained the same way (real vs a few tokens redrawn) and the
  Frechet distance is taken on its mean-pooled features. Its numbers are not comparable to the
  papers' FID.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.eval.frechet import frechet_distance_features
from jaxtok.nn import Transformer


def _check(boxes, valid):
  boxes, valid = np.asarray(boxes, np.float64), np.asarray(valid, bool)
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or valid.shape != boxes.shape[:2]:
    raise ValueError(f"layout metrics want boxes [B, E, 4] (left, top, width, height) and valid "
                     f"[B, E]; got {boxes.shape} and {valid.shape}")
  return boxes, valid


def alignment(boxes, valid) -> np.ndarray:  # float [B]
  """LayoutGAN++ alignment of each layout (0: every element shares a coordinate with another)."""
  boxes, valid = _check(boxes, valid)
  left, top, w, h = np.moveaxis(boxes, -1, 0)
  coords = np.stack([left, left + w / 2, left + w, top, top + h / 2, top + h], 1)  # [B, 6, E]
  d = np.abs(coords[..., :, None] - coords[..., None, :])  # [B, 6, E, E]
  e = boxes.shape[1]
  partner = valid[:, None, :] & ~np.eye(e, dtype=bool)[None]  # [B, E(i), E(j)]
  d = np.where(partner[:, None], d, 1.0)
  d = d.min(axis=(1, 3))  # [B, E]
  d = np.where(valid & (d != 1.0), d, 0.0)
  return np.sum(-np.log1p(-d), -1) / np.maximum(valid.sum(-1), 1)


def overlap(boxes, valid) -> np.ndarray:  # float [B]
  """LayoutGAN++ overlap: sum over ordered pairs i != j of |b_i ∩ b_j| / |b_i|, over n."""
  boxes, valid = _check(boxes, valid)
  left, top, w, h = np.moveaxis(np.where(valid[..., None], boxes, 0.0), -1, 0)  # [B, E]
  ix = np.minimum((left + w)[:, :, None], (left + w)[:, None]) - np.maximum(
      left[:, :, None], left[:, None])
  iy = np.minimum((top + h)[:, :, None], (top + h)[:, None]) - np.maximum(
      top[:, :, None], top[:, None])
  inter = np.where((ix > 0) & (iy > 0), ix * iy, 0.0)  # [B, E, E]
  inter = inter * ~np.eye(boxes.shape[1], dtype=bool)
  area = (w * h)[:, :, None]
  ratio = np.where(valid[:, :, None] & (area > 0), inter / np.where(area > 0, area, 1.0), 0.0)
  return ratio.sum(axis=(1, 2)) / np.maximum(valid.sum(-1), 1)


class LayoutEncoder(nn.Module):
  """Token transformer -> mean-pooled features [B, dim] (``features``) and a real/fake logit."""

  vocab_size: int
  seq_len: int
  dim: int = 64
  num_layers: int = 2
  num_heads: int = 4

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.dim)
    self.pos = self.param("pos", nn.initializers.normal(0.02), (self.seq_len, self.dim))
    self.body = Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                            mlp_dim=4 * self.dim, causal=False)
    self.head = nn.Dense(1)

  def features(self, tokens):  # int [B, N] -> [B, dim]
    if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
      raise ValueError(f"LayoutEncoder wants tokens [B, {self.seq_len}], got {tokens.shape}")
    x = self.body(self.embed(tokens.astype(jnp.int32)) + self.pos[None])
    return jnp.mean(x, axis=1)

  def __call__(self, tokens):  # [B] logits of "real"
    return self.head(self.features(tokens))[:, 0]


def train_layout_encoder(rng: jax.Array, real: np.ndarray, fake: np.ndarray, *, vocab_size: int,
                         steps: int, batch_size: int = 64, lr: float = 1e-3, dim: int = 64,
                         num_layers: int = 2) -> tuple[LayoutEncoder, dict]:
  """Trains :class:`LayoutEncoder` to tell ``real`` [M, N] from ``fake`` [M', N] token rows
  (binary cross-entropy, AdamW); returns (model, variables)."""
  real, fake = np.asarray(real, np.int32), np.asarray(fake, np.int32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"real and fake layouts must be token rows [M, N] of one N; got "
                     f"{real.shape} and {fake.shape}")
  model = LayoutEncoder(vocab_size=vocab_size, seq_len=real.shape[1], dim=dim,
                        num_layers=num_layers)
  k_init, k_data = jax.random.split(rng)
  variables = model.init(k_init, jnp.asarray(real[:1]))
  tx = optax.adamw(lr, weight_decay=1e-4)
  opt = tx.init(variables)
  half = max(batch_size // 2, 1)

  @jax.jit
  def step(variables, opt, tokens, labels):
    def loss_fn(v):
      s = model.apply(v, tokens)
      return jnp.mean(jnp.where(labels, jax.nn.softplus(-s), jax.nn.softplus(s)))

    loss, grads = jax.value_and_grad(loss_fn)(variables)
    updates, opt = tx.update(grads, opt, variables)
    return optax.apply_updates(variables, updates), opt, loss

  order = np.random.default_rng(int(jax.random.randint(k_data, (), 0, 2**31 - 1)))
  labels = jnp.asarray(np.r_[np.ones(half, bool), np.zeros(half, bool)])
  for _ in range(steps):
    batch = np.concatenate([real[order.integers(0, len(real), half)],
                            fake[order.integers(0, len(fake), half)]])
    variables, opt, _ = step(variables, opt, jnp.asarray(batch), labels)
  return model, variables


def encoder_features(model: LayoutEncoder, variables, tokens, chunk: int = 512) -> np.ndarray:
  fn = jax.jit(lambda t: model.apply(variables, t, method=LayoutEncoder.features))
  tokens = np.asarray(tokens, np.int32)
  return np.concatenate([np.asarray(fn(jnp.asarray(tokens[i:i + chunk])))
                         for i in range(0, len(tokens), chunk)])


def encoder_accuracy(model: LayoutEncoder, variables, real, fake) -> float:
  """Held-out accuracy of the real/fake head (logit 0 threshold), classes weighted equally."""
  s_real = np.asarray(model.apply(variables, jnp.asarray(real, jnp.int32)))
  s_fake = np.asarray(model.apply(variables, jnp.asarray(fake, jnp.int32)))
  return float(0.5 * (np.mean(s_real > 0) + np.mean(s_fake <= 0)))


def layout_fd(model: LayoutEncoder, variables, tokens_a, tokens_b) -> float:
  """Frechet distance between the encoder features of two layout sets."""
  return frechet_distance_features(encoder_features(model, variables, tokens_a),
                                   encoder_features(model, variables, tokens_b))
