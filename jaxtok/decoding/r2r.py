"""R2R (Roads to Rome, Fu et al., 2025): token-level routing between a small and a large LM.

The small LM (SLM) generates every token; a small router reads the SLM's view of the step (its
top-k log-probabilities and entropy, the embedding of the token it just proposed, its last
hidden state) and flags *divergent* tokens, which are taken from the large LM (LLM) instead.
The paper labels a token divergent when replacing it changes the LLM's continuation
(``jaxtok.decoding.r2r_labels``); the cheaper stand-in here is that, under teacher forcing on local
text, the SLM's greedy token differs from the LLM's (``divergence_labels``). R2R is NOT lossless:
unrouted divergent tokens stay in the output.

``routed_generate`` keeps the LLM's KV cache lazily: a token the SLM produced is written to the
LLM's cache only when the LLM is next called, as one batched prefill of all pending tokens (a
fixed window of ``window`` tokens, repeated while more are pending). The LLM runs only at steps
where some row routes, which is where the saving comes from.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.generators.causal_lm import CausalLM, init_cache, set_cache_index

RULES = ("router", "confidence", "random")


def _hidden_and_logits(module: CausalLM, tokens, positions, kv_mask, decode):
  h = module.transformer(module.embed(tokens), positions=positions, kv_mask=kv_mask,
                         decode=decode)
  logits = module.embed.attend(h) if module.tie_embeddings else module.lm_head(h)
  return h.astype(jnp.float32), logits.astype(jnp.float32)


def hidden_and_logits(model: CausalLM, params, tokens, positions=None, kv_mask=None, cache=None):
  """The last (final-normed) hidden state [B, T, M] and logits [B, T, V]; with ``cache`` a
  decode step returning ``(hidden, logits, cache)``."""
  if cache is None:
    return model.apply({"params": params}, tokens, positions, kv_mask, False,
                       method=_hidden_and_logits)
  (h, logits), mut = model.apply({"params": params, "cache": cache}, tokens, positions, kv_mask,
                                 True, method=_hidden_and_logits, mutable=["cache"])
  return h, logits, mut["cache"]


def router_features(logits, token, embed, hidden, top_k: int = 8):
  """[..., top_k + 1 + 2M]: the SLM's top-k log-probs and entropy, the proposed token's embedding
  (``embed`` [V, M]) and the SLM's last hidden state [..., M]."""
  if logits.shape[:-1] != token.shape or hidden.shape[:-1] != token.shape:
    raise ValueError(f"logits [..., V], token [...], hidden [..., M] must share leading dims, got "
                     f"{logits.shape}, {token.shape}, {hidden.shape}")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  top = jax.lax.top_k(logp, top_k)[0]
  entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1, keepdims=True)
  emb = jnp.take(embed.astype(jnp.float32), token, axis=0)
  return jnp.concatenate([top, entropy, emb, hidden.astype(jnp.float32)], axis=-1)


class Router(nn.Module):
  """An FFN on ``router_features`` -> one logit "divergent" per token (LayerNorm first: the
  embedding and hidden-state scales differ by orders of magnitude from the log-probs)."""

  width: int = 128

  @nn.compact
  def __call__(self, features):
    x = nn.LayerNorm()(features)
    x = nn.gelu(nn.Dense(self.width)(x))
    x = nn.gelu(nn.Dense(self.width)(x))
    return nn.Dense(1)(x)[..., 0]


def divergence_labels(small_logits, large_logits):
  """The stand-in label: the SLM's greedy token differs from the LLM's (teacher forcing)."""
  return jnp.argmax(small_logits, -1) != jnp.argmax(large_logits, -1)


def teacher_forced(small: CausalLM, small_params, large: CausalLM, large_params, tokens,
                   kv_mask=None, top_k: int = 8):
  """Both models over windows ``tokens`` [B, T]: (router features [B, T, F], divergence labels
  [B, T], the SLM's top-1 probability [B, T] -- what the confidence baseline thresholds)."""
  h, small_logits = hidden_and_logits(small, small_params, tokens, kv_mask=kv_mask)
  _, large_logits = hidden_and_logits(large, large_params, tokens, kv_mask=kv_mask)
  proposed = jnp.argmax(small_logits, -1)
  features = router_features(small_logits, proposed, small_params["embed"]["embedding"], h, top_k)
  confidence = jnp.max(jax.nn.softmax(small_logits, -1), -1)
  return features, divergence_labels(small_logits, large_logits), confidence


def recall_at_fraction(scores, labels, fraction: float) -> float:
  """The share of divergent tokens among the ``fraction`` of tokens scored highest: a rule's
  recall at that routing budget (random routing's is ``fraction`` in expectation)."""
  scores, labels = np.ravel(scores), np.ravel(labels).astype(bool)
  if scores.shape != labels.shape or not 0.0 <= fraction <= 1.0:
    raise ValueError(f"scores and labels must have one size and fraction be in [0, 1], got "
                     f"{scores.shape}, {labels.shape}, {fraction}")
  top = np.argsort(-scores, kind="stable")[:int(round(fraction * scores.size))]
  return float(labels[top].sum() / max(labels.sum(), 1))


def auc(scores, labels) -> float:
  """How often a divergent token scores above an agreeing one (ties count half)."""
  scores, labels = np.ravel(scores), np.ravel(labels).astype(bool)
  pos, neg = scores[labels], scores[~labels]
  if not (pos.size and neg.size):
    raise ValueError("auc needs divergent and agreeing tokens")
  _, inv, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True,
                            return_counts=True)
  ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]  # mid-ranks: tied scores count half
  return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def weighted_bce(scores, labels, pos_weight, mask=None):
  """Class-imbalanced BCE: positives weighted by ``pos_weight`` (usually #neg / #pos)."""
  y = labels.astype(jnp.float32)
  loss = -(pos_weight * y * jax.nn.log_sigmoid(scores) + (1 - y) * jax.nn.log_sigmoid(-scores))
  w = jnp.ones_like(y) if mask is None else mask.astype(jnp.float32)
  return jnp.sum(loss * w) / jnp.maximum(w.sum(), 1.0)


def train_router(router: Router, features, labels, *, steps: int, batch: int = 512,
                 learning_rate: float = 1e-3, seed: int = 0):
  """Adam on the weighted BCE over cached features [N, F] / labels [N]; (params, losses)."""
  if features.shape[0] != labels.shape[0]:
    raise ValueError(f"features [N, F] and labels [N] disagree: {features.shape}, {labels.shape}")
  labels = jnp.asarray(labels, bool)
  pos = float(labels.mean())
  if not 0.0 < pos < 1.0:
    raise ValueError(f"labels need both classes, got positive fraction {pos}")
  pos_weight = (1.0 - pos) / pos
  params = router.init(jax.random.key(seed), features[:1])["params"]
  tx = optax.adam(learning_rate)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, features, labels, idx):
    loss, grad = jax.value_and_grad(lambda p: weighted_bce(
        router.apply({"params": p}, features[idx]), labels[idx], pos_weight))(params)
    updates, opt = tx.update(grad, opt)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(seed)
  losses = []
  for _ in range(steps):
    idx = jnp.asarray(rng.integers(0, features.shape[0], min(batch, features.shape[0])))
    params, opt, loss = step(params, opt, features, labels, idx)
    losses.append(float(loss))
  return params, losses


def _logit(p):
  p = jnp.asarray(p, jnp.float32)
  return jnp.log(p) - jnp.log1p(-p)  # 0 -> -inf (route all), 1 -> +inf (route none)


@dataclasses.dataclass(frozen=True)
class RoutedDecoder:
  """Greedy SLM/LLM routed decoding (hashable: use as a static jit argument).

  ``rule``: 'router' routes when sigmoid(router score) > threshold; 'confidence' when the SLM's
  top-1 probability < threshold; 'random' when a uniform draw < threshold.
  """

  small: CausalLM
  large: CausalLM
  router: Router
  top_k: int = 8
  window: int = 8
  rule: str = "router"

  def __post_init__(self):
    if self.rule not in RULES:
      raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
    if self.window < 1:
      raise ValueError(f"window must be >= 1, got {self.window}")

  def generate(self, small_params, large_params, router_params, prompt, prompt_mask, threshold,
               max_new_tokens: int, rng=None):
    """prompt int [B, P] (left-padded, P >= 2), prompt_mask bool [B, P] -> (tokens [B, N],
    routed bool [B, N], number of LLM calls)."""
    b, p = prompt.shape
    if p < 2:
      raise ValueError(f"prompt must have at least 2 columns, got shape {prompt.shape}")
    n, w = max_new_tokens, self.window
    slots = p + n + w  # the LLM's window may run past the last token: room so writes never clip
    kv_mask = jnp.concatenate([prompt_mask, jnp.ones((b, n + w), bool)], axis=1)
    pos_all = jnp.maximum(jnp.cumsum(kv_mask.astype(jnp.int32), axis=1) - 1, 0)  # [B, S]
    buf = jnp.concatenate([prompt, jnp.zeros((b, n + w), prompt.dtype)], axis=1).astype(jnp.int32)
    rng = jax.random.key(0) if rng is None else rng
    embed = small_params["embed"]["embedding"]

    def prefill(model, params):
      cache = init_cache(model, b, slots, per_row=True)
      _, _, cache = hidden_and_logits(model, params, buf[:, :p - 1], pos_all[:, :p - 1],
                                      kv_mask, cache)
      return cache

    s_cache, l_cache = prefill(self.small, small_params), prefill(self.large, large_params)
    rows = jnp.arange(b)

    def catch_up(l_cache, done, buf, upto):
      """Writes slots done..upto (inclusive) into the LLM cache; logits at slot ``upto``."""
      def cond(c):
        return jnp.any(c[1] <= upto)

      def body(c):
        cache, done, last = c
        idx = jnp.minimum(done, upto)[:, None] + jnp.arange(w)[None]  # rows already done redo
        toks = jnp.take_along_axis(buf, idx, axis=1)
        pos = jnp.take_along_axis(pos_all, idx, axis=1)
        cache = set_cache_index(cache, jnp.minimum(done, upto))
        _, logits, cache = hidden_and_logits(self.large, large_params, toks, pos, kv_mask, cache)
        at = jnp.clip(upto - jnp.minimum(done, upto), 0, w - 1)
        hit = (upto - jnp.minimum(done, upto)) < w
        last = jnp.where(hit[:, None], logits[rows, at], last)
        return cache, jnp.minimum(done, upto) + w, last

      last = jnp.zeros((b, self.large.vocab_size), jnp.float32)
      cache, done, last = jax.lax.while_loop(cond, body, (l_cache, done, last))
      return set_cache_index(cache, upto + 1), upto + 1, last

    def step(carry, t):
      s_cache, l_cache, done, buf, calls = carry
      slot = p - 1 + t
      tok = buf[:, slot]
      h, logits, s_cache = hidden_and_logits(self.small, small_params, tok[:, None],
                                             pos_all[:, slot][:, None], kv_mask, s_cache)
      h, logits = h[:, 0], logits[:, 0]
      prop = jnp.argmax(logits, -1).astype(jnp.int32)
      if self.rule == "router":
        score = self.router.apply({"params": router_params},
                                  router_features(logits, prop, embed, h, self.top_k))
        route = score > _logit(threshold)
      elif self.rule == "confidence":
        route = jnp.max(jax.nn.softmax(logits, -1), -1) < threshold
      else:
        route = jax.random.uniform(jax.random.fold_in(rng, t), (b,)) < threshold
      upto = jnp.full((b,), slot, jnp.int32)

      def call_large(args):
        l_cache, done = args
        l_cache, done, last = catch_up(l_cache, done, buf, upto)
        return l_cache, done, jnp.argmax(last, -1).astype(jnp.int32)

      l_cache, done, big = jax.lax.cond(jnp.any(route), call_large,
                                        lambda a: (a[0], a[1], prop), (l_cache, done))
      nxt = jnp.where(route, big, prop)
      buf = buf.at[:, slot + 1].set(nxt)
      return (s_cache, l_cache, done, buf, calls + jnp.any(route)), (nxt, route)

    done = jnp.full((b,), p - 1, jnp.int32)
    carry = (s_cache, l_cache, done, buf, jnp.array(0, jnp.int32))
    carry, (toks, routed) = jax.lax.scan(step, carry, jnp.arange(n))
    return toks.T, routed.T, carry[4]

