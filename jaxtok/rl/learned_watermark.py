"""An RL-learned green-list watermark: a per-context policy over (seeding, gamma, delta) choices.

"A Reinforcement Learning Framework for Robust and Secure LLM Watermarking" (2025). Its abstract
(the only part available here) says the green/red list design is learned by RL with anchored
reward terms for detectability, text quality, removal robustness and spoofing security, plus
anti-hacking regularisers. The small reading built here:

* The list generator is a policy pi(a | prev) over a menu of list designs ``a = (width, gamma,
  delta)``: ``width`` 1 seeds the green list from the previous token (KGW's LeftHash), width 0
  from a fixed sentinel (one global list, the Unigram watermark: a substitution flips one colour
  instead of two, but the list is easier to learn from text); ``gamma`` is the green fraction and
  ``delta`` the logit bias (0: this context is not watermarked and not scored). Membership keeps
  KGW's keyed hash, ``fmix32(g(tok) XOR f(seed)) < gamma 2^32``, so the key stays the secret and
  the always-(1, 0.25, 2) policy reproduces KGW's mask bit for bit.
* The detector knows the key and the policy; it reads the policy's choice in each context from the
  text itself (the argmax action of ``prev``), so text written without the key is still at its
  null: each distinct (seed, tok) pair is green with probability gamma_s independently, and
  z = sum_s (g_s - gamma_s) / sqrt(gamma_s (1 - gamma_s)) / sqrt(n) is ~N(0, 1) (for a constant
  gamma this is KGW's z exactly).
* Rewards are per generated token (a contextual bandit over the context ``prev``; the baseline is
  the batch mean reward of the same context, hence "anchored"): detectability (the token's term
  of z), robustness (the same term after ``substitute_tokens``), quality (minus the token's NLL
  under the unwatermarked LM) and spoofing security (minus the term a spoofer's text would score
  in this context, the spoofer being a smoothed estimate of the watermarked bigram distribution
  from the batch's texts). The anti-hacking regulariser is an entropy bonus on pi, which keeps the
  policy from collapsing onto one design before the rewards have been compared.

The language model is a bigram table ``log_q [V, V]`` (log q(tok | prev)): the list design sees
one token of context, so a bigram LM is the whole environment it can react to.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxtok.rl.watermark import _fmix32, first_occurrences, prev_seed, substitute_tokens, token_code

KGW_ACTION = (1, 0.25, 2.0)
DEFAULT_MENU = ((0, 0.25, 0.0), KGW_ACTION, (1, 0.25, 4.0), (1, 0.5, 2.0), (1, 0.5, 4.0),
                (0, 0.25, 2.0), (0, 0.25, 4.0))


@dataclasses.dataclass(frozen=True)
class Menu:
  """The list designs a policy chooses from: tuples (width in {0, 1}, gamma, delta >= 0)."""

  actions: tuple[tuple[int, float, float], ...] = DEFAULT_MENU

  def __post_init__(self):
    if not self.actions:
      raise ValueError("actions must name at least one (width, gamma, delta) design")
    for width, gamma, delta in self.actions:
      if width not in (0, 1) or not 0.0 < gamma < 1.0 or delta < 0:
        raise ValueError(f"each action must be (width in {{0, 1}}, gamma in (0, 1), delta >= 0),"
                         f" got {(width, gamma, delta)}")

  def arrays(self):  # (width int32 [K], threshold uint32 [K], gamma f32 [K], delta f32 [K])
    width = jnp.asarray([a[0] for a in self.actions], jnp.int32)
    thr = jnp.asarray([min(int(round(a[1] * 2.0**32)), 2**32 - 1) for a in self.actions],
                      jnp.uint32)
    gamma = jnp.asarray([a[1] for a in self.actions], jnp.float32)
    delta = jnp.asarray([a[2] for a in self.actions], jnp.float32)
    return width, thr, gamma, delta

  def index(self, action) -> int:
    if action not in self.actions:
      raise ValueError(f"action {action} is not on the menu {self.actions}")
    return self.actions.index(action)


def init_policy(vocab_size: int, menu: Menu, *, start=KGW_ACTION, margin: float = 3.0):
  """Logits [V, K]: every context starts at ``start`` (by ``margin`` nats), i.e. at KGW."""
  logits = jnp.zeros((vocab_size, len(menu.actions)), jnp.float32)
  return logits.at[:, menu.index(start)].set(margin)


def seeds(prev: jnp.ndarray, width: jnp.ndarray, vocab_size: int) -> jnp.ndarray:
  """The id that seeds the list: ``prev`` for width 1, the sentinel ``vocab_size`` for width 0."""
  return jnp.where(width == 1, prev, vocab_size)


def green_of(seed, tok, threshold, key) -> jnp.ndarray:  # bool, broadcast
  """KGW's keyed hash of (seed, tok) against a per-entry threshold (gamma 2^32)."""
  return _fmix32(token_code(tok, key) ^ prev_seed(seed, key)) < threshold


def rollout(rng, log_q, policy_logits, first, key, menu: Menu, length: int, *, greedy: bool):
  """Watermarked text from the bigram LM: tokens int32 [B, length + 1], actions int32 [B, length].

  Step t draws the design a_t ~ pi(. | x_t) (its argmax when ``greedy``), adds delta(a_t) to the
  green logits of the list seeded by a_t, and samples x_{t+1} at temperature 1.
  """
  width, thr, _, delta = menu.arrays()
  vocab = log_q.shape[0]
  arange = jnp.arange(vocab, dtype=jnp.int32)

  def step(prev, r):
    ra, rt = jax.random.split(r)
    pl = policy_logits[prev]
    a = jnp.argmax(pl, -1) if greedy else jax.random.categorical(ra, pl)
    green = green_of(seeds(prev, width[a], vocab)[:, None], arange[None], thr[a][:, None], key)
    tok = jax.random.categorical(rt, log_q[prev] + delta[a][:, None] * green)
    return tok.astype(jnp.int32), (tok.astype(jnp.int32), a.astype(jnp.int32))

  _, (toks, acts) = jax.lax.scan(step, first.astype(jnp.int32), jax.random.split(rng, length))
  return jnp.concatenate([first[:, None].astype(jnp.int32), toks.T], axis=1), acts.T


def token_terms(tokens, actions, key, menu: Menu, vocab_size: int, *, ignore_repeated=True):
  """Per generated token (positions 1..L of ``tokens`` [B, L + 1], action ``actions`` [B, L]):
  green bool, gamma f32, counted bool (scored: delta > 0; with ``ignore_repeated`` each distinct
  (seed, tok) pair once) and the standardised term d = (g - gamma) / sqrt(gamma (1 - gamma))."""
  width, thr, gamma, delta = menu.arrays()
  prev, tok = tokens[:, :-1], tokens[:, 1:]
  seed = seeds(prev, width[actions], vocab_size)
  green = green_of(seed, tok, thr[actions], key)
  scored = delta[actions] > 0
  counted = first_occurrences(seed, tok, scored) if ignore_repeated else scored
  g = gamma[actions]
  d = jnp.where(counted, (green - g) / jnp.sqrt(g * (1 - g)), 0.0)
  return dict(green=green, gamma=g, counted=counted, d=d)


def weighted_z(d: jnp.ndarray, counted: jnp.ndarray) -> jnp.ndarray:  # [B]
  """sum d / sqrt(n) over the counted tokens of each row; 0 where none is counted."""
  n = jnp.sum(counted, axis=1)
  return jnp.where(n > 0, jnp.sum(d, axis=1) / jnp.sqrt(jnp.maximum(n, 1)), 0.0)


def detect(tokens, policy_logits, key, menu: Menu, *, ignore_repeated=True) -> jnp.ndarray:
  """z of each row of ``tokens`` [B, L + 1] (position 0 is the prompt), the detector reading the
  policy's argmax design of each context from the text."""
  actions = jnp.argmax(policy_logits[tokens[:, :-1]], -1)
  t = token_terms(tokens, actions, key, menu, policy_logits.shape[0],
                  ignore_repeated=ignore_repeated)
  return weighted_z(t["d"], t["counted"])


def spoofer_table(tokens, log_q, *, smoothing: float = 4.0) -> jnp.ndarray:  # log w [V, V]
  """The spoofer's estimate of the watermarked bigram LM from observed texts [B, L + 1]: counts
  smoothed towards the base LM, w(v | p) = (c(p, v) + k q(v | p)) / (c(p) + k)."""
  vocab = log_q.shape[0]
  pair = (tokens[:, :-1] * vocab + tokens[:, 1:]).reshape(-1)
  counts = jnp.zeros(vocab * vocab, jnp.float32).at[pair].add(1.0).reshape(vocab, vocab)
  w = (counts + smoothing * jnp.exp(log_q)) / (counts.sum(1, keepdims=True) + smoothing)
  return jnp.log(w)


def spoof_terms(tokens, actions, key, menu: Menu, log_w) -> jnp.ndarray:  # float [B, L]
  """The expected d a spoofer sampling from ``log_w`` would score in each context of the rollout,
  under the design the rollout used there (0 where it was not watermarked)."""
  width, thr, gamma, delta = menu.arrays()
  vocab = log_w.shape[0]
  prev = tokens[:, :-1]
  seed = seeds(prev, width[actions], vocab)
  green = green_of(seed[..., None], jnp.arange(vocab, dtype=jnp.int32), thr[actions][..., None],
                   key)  # [B, L, V]
  p_green = jnp.sum(jnp.exp(log_w[prev]) * green, axis=-1)
  g = gamma[actions]
  return jnp.where(delta[actions] > 0, (p_green - g) / jnp.sqrt(g * (1 - g)), 0.0)


@dataclasses.dataclass(frozen=True)
class RewardWeights:
  """Weights of the per-token reward (z terms are divided by sqrt(length), as in z itself)."""

  detect: float = 1.0
  robust: float = 1.0
  quality: float = 0.2  # per nat of the token's NLL under the unwatermarked LM
  spoof: float = 0.5
  entropy: float = 0.01  # the anti-collapse bonus on pi
  attack_fraction: float = 0.2


def token_rewards(rng, tokens, actions, key, menu: Menu, log_q, weights: RewardWeights):
  """Per-token reward [B, L] and the per-row metrics of one batch of watermarked rollouts."""
  vocab = log_q.shape[0]
  length = actions.shape[1]
  clean = token_terms(tokens, actions, key, menu, vocab)
  gen = jnp.ones(tokens.shape, bool).at[:, 0].set(False)
  attacked, _ = substitute_tokens(rng, tokens, gen, weights.attack_fraction, vocab)
  robust = token_terms(attacked, actions, key, menu, vocab)
  nll = -log_q[tokens[:, :-1], tokens[:, 1:]]
  spoof = spoof_terms(tokens, actions, key, menu, spoofer_table(tokens, log_q))
  reward = ((weights.detect * clean["d"] + weights.robust * robust["d"]
             - weights.spoof * spoof) / jnp.sqrt(length) - weights.quality * nll)
  metrics = dict(z=weighted_z(clean["d"], clean["counted"]),
                 z_attacked=weighted_z(robust["d"], robust["counted"]),
                 spoof_z=weighted_z(spoof, clean["counted"]), nll=nll.mean(1))
  return reward, metrics


def context_advantages(reward, prev, vocab_size: int) -> jnp.ndarray:  # [B, L]
  """reward minus the batch mean reward of the same context (a baseline that ignores the action,
  so the policy gradient stays unbiased)."""
  flat, ids = reward.reshape(-1), prev.reshape(-1)
  total = jax.ops.segment_sum(flat, ids, vocab_size)
  count = jax.ops.segment_sum(jnp.ones_like(flat), ids, vocab_size)
  return reward - (total / jnp.maximum(count, 1.0))[prev]


def policy_loss(policy_logits, tokens, actions, advantages, entropy_weight: float):
  """REINFORCE over the designs: -mean A log pi(a | prev) - entropy_weight mean H(pi(. | prev))."""
  logp_all = jax.nn.log_softmax(policy_logits[tokens[:, :-1]], -1)  # [B, L, K]
  logp = jnp.take_along_axis(logp_all, actions[..., None], -1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
  return -jnp.mean(jax.lax.stop_gradient(advantages) * logp) - entropy_weight * entropy.mean()


def make_train_step(log_q, menu: Menu, weights: RewardWeights, optimizer, *, batch: int,
                    length: int, first_tokens):
  """A jitted (policy, opt_state, rng) -> (policy, opt_state, metrics) step: one fresh key, one
  batch of rollouts with sampled designs, per-token rewards, one REINFORCE update."""
  vocab = log_q.shape[0]
  first_tokens = jnp.asarray(first_tokens, jnp.int32)

  @jax.jit
  def train_step(policy, opt_state, rng):
    r_key, r_first, r_roll, r_att = jax.random.split(rng, 4)
    key = jax.random.bits(r_key, (), jnp.uint32)  # a new secret per step: nothing key-specific
    first = jax.random.choice(r_first, first_tokens, (batch,))
    tokens, actions = rollout(r_roll, log_q, policy, first, key, menu, length, greedy=False)
    reward, metrics = token_rewards(r_att, tokens, actions, key, menu, log_q, weights)
    adv = context_advantages(reward, tokens[:, :-1], vocab)
    loss, grads = jax.value_and_grad(policy_loss)(policy, tokens, actions, adv, weights.entropy)
    updates, opt_state = optimizer.update(grads, opt_state, policy)
    policy = policy + updates
    metrics = {k: v.mean() for k, v in metrics.items()}
    metrics |= dict(loss=loss, reward=reward.sum(1).mean())
    return policy, opt_state, metrics

  return train_step
