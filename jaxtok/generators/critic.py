"""Token-Critic: a bidirectional transformer that scores each token as real or generated.

"Improved Masked Image Generation with Token-Critic" (Lezama et al., 2022), Sec. 3. Training:
take real tokens ``x_0``, draw ``r ~ U(0, 1)`` and mask ``ceil(gamma(r) N)`` uniformly
chosen positions (``m_i = 1``; ``gamma`` the MaskGIT schedule), let the generator -- frozen for
this loss, a stop-gradient -- sample every masked position at temperature 1,
``x^_0 ~ p_theta(. | x_t)``, and train the critic ``phi`` to recover the mask from ``x^_0``
alone with the binary cross-entropy

    L(phi) = -E [ sum_i (1 - m_i) log sigma(s_i) + m_i log(1 - sigma(s_i)) ],  s = phi(x^_0, c),

so ``s_i`` is the logit of "token i is real (was not generated)". As in the paper the target is
the mask: a generated token that happens to equal the original still counts as generated.
``target='changed'`` instead labels only tokens that differ from ``x_0`` as fake (the
"replaced token" target of Layout-Corrector, Iwai et al., 2024, and ITER).

At sampling time :func:`make_critic_fn` gives the ``critic_fn(tokens [B, N]) -> scores [B, N]``
of :func:`~jaxtok.generators.samplers.token_critic_sample` (Alg. 1 of the paper).

:class:`TokenCritic` *is* a :class:`~jaxtok.generators.masked.MaskedTransformer` (same token,
position and class embeddings, class-conditioning prefix with condition dropout, the same
pre-norm blocks) whose vocabulary head is replaced by a one-logit head per token; its parameter
tree matches the generator's apart from that head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok.generators.losses import random_mask
from jaxtok.generators.masked import MaskedTransformer
from jaxtok.generators.samplers.categorical import sample_categorical
from jaxtok.generators.samplers.schedules import mask_ratio
from jaxtok.nn import logical_init

TARGETS = ("masked", "changed")


class TokenCritic(MaskedTransformer):
  """``scores [B, N] = critic(tokens [B, N], cond, train)``: per-token logit of "real".

  Fields are :class:`MaskedTransformer`'s (``vocab_size`` = the generator's real tokens).
  """

  def setup(self):
    super().setup()  # the vocabulary head it defines is never called, so it has no parameters
    self.score_head = nn.Dense(
        1, dtype=self.dtype,
        kernel_init=logical_init(nn.initializers.xavier_uniform(), ("embed", None)),
        bias_init=logical_init(nn.initializers.zeros, (None,)))

  def __call__(
      self,
      tokens: jnp.ndarray,  # int [B, N] real token ids in [0, vocab_size)
      cond: jnp.ndarray | None = None,  # int [B] class ids
      train: bool = False,
  ) -> jnp.ndarray:  # float32 [B, N]
    x = self._embed(tokens, cond, train)  # [B, P + N, D]
    x = self.transformer(x, deterministic=not train)
    return self.score_head(x[:, self.prefix_len:])[..., 0].astype(jnp.float32)

  def partial_logits(self, tokens, positions, cache):
    # By design (inherited from MaskedTransformer, meaningless here): the critic is called on
    # whole filled sequences, once per Token-Critic step.
    raise TypeError("TokenCritic scores whole sequences; ReCAP's partial pass is for the "
                    "generator (MaskedTransformer.partial_logits), not the critic")


def rank_auc(
    scores: jnp.ndarray,  # float [...]
    positive: jnp.ndarray,  # bool [...]
    valid: jnp.ndarray | None = None,  # bool [...]: entries to count (None: all)
) -> jnp.ndarray:  # float32 []
  """Area under the ROC curve of ``scores`` for ``positive`` (Mann-Whitney U / (n+ n-)).

  Ties count one half (mid-ranks). 0.5 when either class is empty. Entries outside ``valid`` are
  moved above every valid score, which leaves the valid entries' ranks as if they were alone.
  """
  s = scores.reshape(-1).astype(jnp.float32)
  pos = positive.reshape(-1)
  if valid is not None:
    valid = valid.reshape(-1)
    s = jnp.where(valid, s, jnp.inf)
    pos = pos & valid
  ordered = jnp.sort(s)
  lo = jnp.searchsorted(ordered, s, side="left").astype(jnp.float32)
  hi = jnp.searchsorted(ordered, s, side="right").astype(jnp.float32)
  ranks = (lo + hi + 1.0) / 2.0  # 1-based mid-ranks
  n_pos = jnp.sum(pos).astype(jnp.float32)
  n_neg = (s.shape[0] if valid is None else jnp.sum(valid).astype(jnp.float32)) - n_pos
  u = jnp.sum(jnp.where(pos, ranks, 0.0)) - n_pos * (n_pos + 1.0) / 2.0
  return jnp.where(n_pos * n_neg > 0, u / jnp.maximum(n_pos * n_neg, 1.0), 0.5)


def critic_bce(
    scores: jnp.ndarray,  # float [B, N] logits of "real"
    real: jnp.ndarray,  # bool [B, N]
    row_mask: jnp.ndarray | None = None,  # [B]: 1 on real rows, 0 on padding
) -> tuple[jnp.ndarray, dict]:
  """The Token-Critic objective (Sec. 3) as a mean over tokens of the binary cross-entropy;
  aux: ``accuracy`` (thresholded at logit 0), ``auc``, ``real_fraction``. Padded rows count
  nowhere."""
  if scores.shape != real.shape:
    raise ValueError(f"critic scores {scores.shape} and real/fake labels {real.shape} must have "
                     "the same shape [B, N]")
  s = scores.astype(jnp.float32)
  w = jnp.ones_like(s) if row_mask is None else jnp.broadcast_to(
      row_mask.astype(jnp.float32).reshape(-1, 1), s.shape)
  mean = lambda v: jnp.sum(v * w) / jnp.maximum(jnp.sum(w), 1.0)  # noqa: E731
  # -log sigma(s) = softplus(-s); -log(1 - sigma(s)) = softplus(s).
  loss = mean(jnp.where(real, jax.nn.softplus(-s), jax.nn.softplus(s)))
  aux = {"accuracy": mean(((s > 0) == real).astype(jnp.float32)),
         "auc": rank_auc(s, real, None if row_mask is None else w > 0),
         "real_fraction": mean(real.astype(jnp.float32))}
  return loss, aux


def critic_loss(
    rng: jax.Array,
    logits_fn: Callable[[jnp.ndarray], jnp.ndarray],
    critic_fn: Callable[[jnp.ndarray], jnp.ndarray],
    tokens: jnp.ndarray,  # int [B, N] real tokens in [0, V)
    *,
    mask_id: int,
    schedule: str = "cosine",
    temperature: float = 1.0,
    target: str = "masked",
    row_mask: jnp.ndarray | None = None,  # [B]: 1 on real rows, 0 on padding (eval batches)
    precision: str = "float32_log1p",  # of the Gumbel noise that samples the generator's fakes
    rate_input: bool = False,
) -> tuple[jnp.ndarray, dict]:
  """Token-Critic's training loss (see the module docstring); padded rows count nowhere.

  ``rate_input``: the critic is called as ``critic_fn(x^_0, rate [B])`` with each row's fraction
  of masked positions (Layout-Corrector conditions its corrector on the diffusion step).

  ``logits_fn(x_t [B, N]) -> [B, N, V(+1)]`` is the generator (gradients are stopped);
  ``critic_fn(x^_0 [B, N]) -> [B, N]`` the critic. aux: ``accuracy``, ``auc`` (real vs
  generated over all tokens of the batch), ``real_fraction``, ``mask_rate`` and
  ``changed_rate`` (the fraction of generated tokens that differ from ``x_0``).
  """
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"critic_loss wants integer tokens [B, N], got {tokens.dtype} {tokens.shape}")
  if target not in TARGETS:
    raise ValueError(f"critic_loss target must be one of {TARGETS}, got {target!r}")
  b, n = tokens.shape
  k_rate, k_pos, k_sample = jax.random.split(rng, 3)
  rate = mask_ratio(schedule, jax.random.uniform(k_rate, (b,)))
  masked = random_mask(k_pos, (b, n), jnp.clip(jnp.ceil(rate * n), 1, n).astype(jnp.int32))
  logits = jax.lax.stop_gradient(logits_fn(jnp.where(masked, mask_id, tokens)))
  if logits.ndim != 3 or logits.shape[:2] != (b, n) or logits.shape[-1] < mask_id:
    raise ValueError(f"critic_loss: the generator must return logits [B, N, V>={mask_id}] for "
                     f"tokens {tokens.shape}, got {logits.shape}")
  sampled = sample_categorical(k_sample, logits[..., :mask_id], temperature=temperature,
                               precision=precision)
  filled = jnp.where(masked, sampled, tokens.astype(jnp.int32))  # x^_0 [B, N]
  changed = filled != tokens
  real = ~masked if target == "masked" else ~changed
  scores = (critic_fn(filled, jnp.mean(masked, axis=-1)) if rate_input
            else critic_fn(filled))  # [B, N]
  if scores.shape != (b, n):
    raise ValueError(f"critic_fn must return scores [B, N]={(b, n)}, got {scores.shape}")
  loss, aux = critic_bce(scores, real, row_mask)
  rows = jnp.ones((b, 1)) if row_mask is None else row_mask.astype(jnp.float32).reshape(b, 1)
  aux["mask_rate"] = jnp.sum(masked * rows) / jnp.maximum(n * jnp.sum(rows), 1.0)
  aux["changed_rate"] = jnp.sum(changed * rows) / jnp.maximum(jnp.sum(masked * rows), 1)
  return loss, aux


def make_critic_fn(
    model: TokenCritic,
    variables: Any,
    cond: jnp.ndarray | None = None,  # int [B] class ids
) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """The sampler's ``critic_fn(tokens [B, N]) -> scores [B, N]`` (logit of "real")."""

  def critic_fn(tokens):
    return model.apply(variables, tokens, cond)

  return critic_fn
