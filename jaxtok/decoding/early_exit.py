"""DEL-style self-speculation: early-exit heads of the target draft for it (LayerSkip family).

An exit at layer L is the target's own first L blocks, an exit RMSNorm (trained, target frozen)
and the target's tied output head: ``logits_L = RMSNorm_L(h_L) E^T``. As a ``CausalLM`` it is the
target truncated to L blocks with ``final_norm`` replaced by the exit norm (``exit_params``), so
:class:`ConfidentDraft` (a ``DraftModel``) drafts with it through the usual engine; its KV cache
is its own (the engine's step interface hides the target's cache from the proposer), so the
first L layers' keys/values are recomputed rather than shared as in LayerSkip.

DEL ("Context-Aware Dynamic Exit Layer", Zarch et al., 2025) picks the exit layer and draft
length per context from *shadow tokens*: wherever the target's hidden states at every exit layer
are available, each exit's argmax is compared with the target's token (``shadow_matches``),
giving per-layer acceptance rates ``alpha_L``; with i.i.d. acceptance a chain of ``gamma`` drafts
yields ``1 + sum_{i<=gamma} alpha_L^i`` tokens per round at a cost of ``gamma * L + N`` layer
passes (``tokens_per_cost``), and ``select_exit`` takes the argmax. Drafting stops early when the
draft's top-1 probability falls below ``threshold`` (``ConfidentDraft``).

Layer passes are the paper's cost unit. They leave out the tied output head (a 49k-row head is
worth about 8 of SmolLM2-135M's blocks, paid by every draft step) and price a verify pass over
gamma + 1 tokens like a one-token step, which holds on an accelerator but not on a CPU; so
``select_exit`` also takes measured costs (``StepCosts`` from ``step_seconds``) and can choose
``gamma = 0``: no drafting, when no exit is predicted to beat plain decoding.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.decoding.budget import expected_tokens
from jaxtok.decoding.proposers import Context, DraftModel
from jaxtok.generators.causal_lm import CausalLM, init_cache, set_cache_index


def exit_model(target: CausalLM, layer: int) -> CausalLM:
  """The target truncated to its first ``layer`` blocks (same width, vocabulary, dtype)."""
  if not 1 <= layer <= target.num_layers:
    raise ValueError(f"layer must be in 1..{target.num_layers}, got {layer}")
  return target.clone(num_layers=layer, parent=None)


def exit_params(target_params: dict, layer: int, scale: jnp.ndarray) -> dict:
  """Params of ``exit_model(target, layer)``: the target's embedding and first ``layer`` blocks,
  and the exit norm's ``scale`` [M] as the final norm (the output head stays tied)."""
  t = target_params["transformer"]
  blocks = {f"layer_{i}": t[f"layer_{i}"] for i in range(layer)}
  out = {"embed": target_params["embed"],
         "transformer": blocks | {"final_norm": {"scale": jnp.asarray(scale)}}}
  if "lm_head" in target_params:
    out["lm_head"] = target_params["lm_head"]
  return out


def hidden_states(model: CausalLM, params: dict, tokens: jnp.ndarray, layers: tuple[int, ...]
                  ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """One pass of the target: (residual stream after each of ``layers`` [K, B, T, M], logits)."""
  names = {f"layer_{i - 1}" for i in layers}
  logits, state = model.apply({"params": params}, tokens, capture_intermediates=lambda m, _: (
      m.name in names), mutable=["intermediates"])
  inter = state["intermediates"]["transformer"]
  return jnp.stack([inter[f"layer_{i - 1}"]["__call__"][0] for i in layers]), logits


def exit_logits(scale: jnp.ndarray, hidden: jnp.ndarray, embed: jnp.ndarray, eps: float
                ) -> jnp.ndarray:
  """RMSNorm(hidden) * scale @ embed^T, float32 [..., V] (the tied head of the target)."""
  h = hidden.astype(jnp.float32)
  h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + eps) * scale
  return h @ embed.astype(jnp.float32).T


def exit_kl(scales: jnp.ndarray, hiddens: jnp.ndarray, target_logits: jnp.ndarray,
            embed: jnp.ndarray, eps: float, mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean KL(target || exit) per exit, [K]: scales [K, M], hiddens [K, N, M], target [N, V]."""
  logp = jax.nn.log_softmax(target_logits, axis=-1)
  w = jnp.ones(logp.shape[:1]) if mask is None else mask.astype(jnp.float32)

  def one(scale, hidden):
    logq = jax.nn.log_softmax(exit_logits(scale, hidden, embed, eps), axis=-1)
    kl = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)
    return jnp.sum(kl * w) / jnp.maximum(w.sum(), 1.0)

  return jax.vmap(one)(scales, hiddens)


def train_exit_norms(scales: jnp.ndarray, hiddens: jnp.ndarray, target_logits: jnp.ndarray,
                     embed: jnp.ndarray, eps: float, *, steps: int, batch: int = 256,
                     learning_rate: float = 1e-2, seed: int = 0) -> tuple[jnp.ndarray, list]:
  """Adam on the exit norms' scales [K, M] by KL to the frozen target on cached states
  (hiddens [K, N, M], target logits [N, V]); returns (scales, per-step mean KL)."""
  if hiddens.shape[1] != target_logits.shape[0]:
    raise ValueError(f"hiddens [K, N, M] and target_logits [N, V] disagree on N: "
                     f"{hiddens.shape} vs {target_logits.shape}")
  tx = optax.adam(learning_rate)
  opt = tx.init(scales)

  @jax.jit  # the cached states are arguments, not constants folded into the program
  def step(scales, opt, hiddens, target_logits, embed, idx):
    loss, grad = jax.value_and_grad(lambda s: exit_kl(s, hiddens[:, idx], target_logits[idx],
                                                      embed, eps).mean())(scales)
    updates, opt = tx.update(grad, opt)
    return optax.apply_updates(scales, updates), opt, loss

  rng = np.random.default_rng(seed)
  losses = []
  for _ in range(steps):
    idx = jnp.asarray(rng.integers(0, hiddens.shape[1], min(batch, hiddens.shape[1])))
    scales, opt, loss = step(scales, opt, hiddens, target_logits, embed, idx)
    losses.append(float(loss))
  return scales, losses


def shadow_matches(scales: jnp.ndarray, hiddens: jnp.ndarray, target_tokens: jnp.ndarray,
                   embed: jnp.ndarray, eps: float, mask: jnp.ndarray) -> jnp.ndarray:
  """Shadow tokens: per exit, how many masked positions' exit argmax equals the target's token.

  scales [K, M], hiddens [K, B, T, M], target_tokens [B, T] (the target's argmax at the same
  positions), mask bool [B, T] -> int [K]."""
  def one(scale, hidden):
    pred = jnp.argmax(exit_logits(scale, hidden, embed, eps), axis=-1)
    return jnp.sum((pred == target_tokens) & mask)

  return jax.vmap(one)(scales, hiddens).astype(jnp.int32)


def prompt_shadow(model: CausalLM, params: dict, scales: jnp.ndarray, layers: tuple[int, ...],
                  prompt: jnp.ndarray, mask: jnp.ndarray, eps: float
                  ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Shadow tokens on left-padded prompts [B, P]: per exit, at how many real prompt positions its
  argmax equals the target's (what greedy verification of a one-token draft there would accept),
  from one target pass; (int [K], the number of positions compared)."""
  hiddens, logits = hidden_states(model, params, prompt, layers)
  matches = shadow_matches(scales, hiddens, jnp.argmax(logits, axis=-1),
                           params["embed"]["embedding"], eps, mask)
  return matches, mask.sum()


def fit_exit_norms(model: CausalLM, params: dict, layers: tuple[int, ...], train: np.ndarray,
                   held_out: np.ndarray, *, steps: int, batch: int = 128,
                   learning_rate: float = 1e-2) -> dict[str, np.ndarray]:
  """Exit norms at ``layers`` trained by KL to the target on token windows ``train`` [N, T]
  (starting from the target's final norm); returns the scales [K, M] and, on ``held_out``
  windows, the top-1 agreement of each exit with the target before and after (the greedy
  acceptance rate of one drafted token: DEL's prior)."""
  def states(tokens):
    hs, logits = [], []
    for i in range(0, len(tokens), 4):  # 4 windows a pass bounds the [K, 4T, M] states
      h, lg = jax.jit(hidden_states, static_argnums=(0, 3))(model, params, tokens[i:i + 4],
                                                            layers)
      hs.append(h.reshape(len(layers), -1, h.shape[-1]))
      logits.append(lg.reshape(-1, lg.shape[-1]))
    return jnp.concatenate(hs, 1), jnp.concatenate(logits, 0)

  embed, eps = params["embed"]["embedding"], model.norm_eps

  def agreement(scales, hiddens, logits):
    target = jnp.argmax(logits, -1)
    return np.asarray([np.mean(np.argmax(exit_logits(s, h, embed, eps), -1) == target)
                       for s, h in zip(scales, hiddens)])

  scales = jnp.stack([params["transformer"]["final_norm"]["scale"]] * len(layers))
  h_test, lg_test = states(held_out)
  before = agreement(scales, h_test, lg_test)
  h_train, lg_train = states(train)
  scales, _ = train_exit_norms(scales, h_train, lg_train, embed, eps, steps=steps, batch=batch,
                               learning_rate=learning_rate)
  return {"scales": np.asarray(scales), "agree_before": before,
          "agree_after": agreement(scales, h_test, lg_test)}


def acceptance_rates(matches, total, prior_rates, prior_weight: float = 8.0) -> np.ndarray:
  """Running per-layer acceptance estimates: shadow counts shrunk toward prior rates
  (``prior_weight`` pseudo-positions), so a short context does not give rate 0 or 1."""
  matches, prior = np.asarray(matches, np.float64), np.asarray(prior_rates, np.float64)
  return (matches + prior_weight * prior) / (float(total) + prior_weight)


def tokens_per_cost(alpha, layer, gamma, num_layers, extra: int = 0):
  """Expected tokens per layer-pass of one round: (1 + sum_{i=1..gamma} alpha^i) /
  (gamma * (layer + extra) + num_layers) — gamma draft steps through ``layer`` blocks and
  ``extra`` more (an exit adapter's: ``exit_adapter.py``), one full verify."""
  alpha = np.asarray(alpha, np.float64)
  expected = sum(alpha ** i for i in range(1, int(gamma) + 1))
  return (1.0 + expected) / (gamma * (layer + extra) + num_layers)


@dataclasses.dataclass(frozen=True)
class StepCosts:
  """What a round costs, in any one unit: a draft step from each exit layer (``draft``), a
  target verify pass over a root and ``gamma`` drafts (``verify[gamma]``), and a plain one-token
  target step (``plain``, the cost of a token without drafting)."""

  draft: dict
  verify: dict
  plain: float


def layer_costs(layers, gammas, num_layers, extra: int = 0) -> StepCosts:
  """DEL's cost model: layer passes (a draft step from exit L costs L + ``extra`` blocks; a verify
  pass, whatever its length, and a plain step cost all ``num_layers``). It ignores the output
  head and assumes a pass over a few tokens costs what a one-token pass costs."""
  return StepCosts({lay: float(lay + extra) for lay in layers},
                   {g: float(num_layers) for g in gammas}, float(num_layers))


def select_exit(alphas, layers, gammas, num_layers, extra: int = 0,
                costs: StepCosts | None = None) -> tuple[int, int, float]:
  """(layer, gamma, expected tokens per unit cost), the best of layers x gammas.

  A round from exit L drafting gamma tokens yields ``1 + sum_{i<=gamma} alpha_L^i`` tokens and
  costs ``gamma * costs.draft[L] + costs.verify[gamma]``; ``costs`` defaults to
  :func:`layer_costs` (``tokens_per_cost``). ``gamma = 0`` in ``gammas`` is not drafting at all
  (one token per ``costs.plain``); picking it returns layer 0."""
  if len(alphas) != len(layers):
    raise ValueError(f"alphas ({len(alphas)}) must give one rate per layer ({len(layers)})")
  costs = costs or layer_costs(layers, gammas, num_layers, extra)
  options = [(1.0 / costs.plain, 0, 0)] if 0 in gammas else []
  for a, lay in zip(alphas, layers):
    for g in (g for g in gammas if g > 0):
      cost = g * costs.draft[lay] + costs.verify[g]
      options.append((expected_tokens(float(a), g) / cost, lay, g))
  best = max(options)
  return best[1], best[2], float(best[0])


def step_seconds(step, params, model: CausalLM, tokens: int, context: int,
                 repeats: int = 5, batch: int = 1, passes: int = 4) -> float:
  """Seconds of one pass of ``step`` (an ``LMStep``-like function of ``model``) over ``tokens``
  new tokens after ``context`` cached ones, for ``batch`` rows: the best of ``repeats`` jitted
  calls (compilation excluded) of ``passes`` passes each, divided by ``passes``.

  The passes run in one ``fori_loop`` that carries the cache, as a decoding loop does: a call of
  one pass would copy its input cache (an argument it may not overwrite) before writing to it,
  which at batch 8 costs several ms and made every pass look closer in cost to the others. The
  logits' argmax (what greedy decoding does with them) goes into the result, so the head is not
  dropped as dead code, nor fused with a reduction decoding does not make. The cache's
  contents are zeros: the cost of attention does not depend on them."""
  cache = set_cache_index(init_cache(model, batch, context + tokens, per_row=True),
                          jnp.full((batch,), context, jnp.int32))
  toks = jnp.zeros((batch, tokens), jnp.int32)
  pos = jnp.broadcast_to(context + jnp.arange(tokens, dtype=jnp.int32), (batch, tokens))
  kv = jnp.ones((batch, context + tokens), bool)

  def chain(prm, c):
    def body(_, carry):
      # Tokens that depend on the carry, so XLA cannot hoist a loop-invariant part out of it.
      fed = toks + (carry[1] == 1234.5).astype(jnp.int32)
      logits, c = step(prm, carry[0], fed, pos, kv)[:2]
      return c, carry[1] + jnp.argmax(logits, axis=-1).sum().astype(jnp.float32)
    return jax.lax.fori_loop(0, passes, body, (c, jnp.float32(0.0)))[1]

  fn = jax.jit(chain)
  jax.block_until_ready(fn(params, cache))
  best = float("inf")
  for _ in range(repeats):
    begin = time.perf_counter()
    jax.block_until_ready(fn(params, cache))
    best = min(best, time.perf_counter() - begin)
  return best / passes


@dataclasses.dataclass(frozen=True)
class ConfidentDraft(DraftModel):
  """A greedy ``DraftModel`` that stops drafting a round once its top-1 probability falls below
  ``threshold`` in every row: the remaining draft steps are skipped (``lax.cond``) and their
  slots hold the last draft token repeated. ``verify="all"`` verifies every slot (filler
  included); ``verify="confident"`` verifies only the drafts before the first one below the
  threshold (the longest such run over the rows; none: a plain step), which on a CPU, where a
  pass over more tokens costs more, saves the filler's share of the verify pass."""

  threshold: float = 0.0
  verify: str = "all"

  def __post_init__(self):
    if self.num_drafts != 1 or self.temperature > 0:
      raise ValueError("ConfidentDraft drafts one greedy chain (num_drafts=1, temperature=0)")
    if self.verify not in ("all", "confident"):
      raise ValueError(f"verify must be 'all' or 'confident', got {self.verify!r}")

  @property
  def sizes(self) -> tuple[int, ...] | None:  # the root and the first 0..G drafts
    return tuple(range(1, self.length + 2)) if self.verify == "confident" else None

  def init(self, params, prompt, prompt_mask, positions, kv_mask):
    state = super().init(params, prompt, prompt_mask, positions, kv_mask)
    return dict(state, confident=jnp.zeros((prompt.shape[0],), jnp.int32))

  def update(self, params, state, ctx: Context, tree_tokens, target_logits, accept):
    out = super().update(params, state, ctx, tree_tokens, target_logits, accept)
    return dict(out, confident=state["confident"])

  def choose_size(self, params, state, ctx: Context, tree_tokens):
    del params, tree_tokens
    active = jnp.ones_like(state["confident"], bool) if ctx.active is None else ctx.active
    return jnp.max(jnp.where(active, state["confident"], 0)).astype(jnp.int32)

  def propose(self, params, state, ctx: Context, rng):
    del rng
    g, kv_mask = self.length, ctx.kv_mask
    first = jnp.stack([state["prev"], ctx.root], axis=1)
    pos = jnp.stack([ctx.position - 1, ctx.position], axis=1)
    logits, cache = self.step(params, state["cache"], first, pos, kv_mask)

    def pick(logits):
      probs = jax.nn.softmax(logits, axis=-1)
      return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.max(probs, axis=-1)

    tok, conf = pick(logits[:, 1])

    def body(carry, j):
      cache, tok, go = carry

      def run(cache):
        logits, cache = self.step(params, cache, tok[:, None], ctx.position[:, None] + j,
                                  kv_mask)
        nxt, p_top = pick(logits[:, 0])
        return cache, nxt, p_top.astype(jnp.float32)

      skip = lambda c: (c, tok, jnp.zeros(tok.shape, jnp.float32))  # nothing drafted: not sure
      cache, nxt, p_top = jax.lax.cond(go, run, skip, cache)
      return (cache, nxt, jnp.any(p_top >= self.threshold)), (nxt, p_top)

    go = jnp.any(conf >= self.threshold)
    (cache, _, _), (toks, confs) = jax.lax.scan(body, (cache, tok, go), jnp.arange(1, g))
    drafts = jnp.concatenate([tok[None], toks], axis=0).swapaxes(0, 1)  # [B, G]
    p_tops = jnp.concatenate([conf[None].astype(jnp.float32), confs], axis=0).swapaxes(0, 1)
    sure = p_tops >= self.threshold
    confident = jnp.cumprod(sure, axis=1).sum(axis=1).astype(jnp.int32)  # leading sure drafts
    tree = jnp.concatenate([ctx.root[:, None], drafts], axis=1)
    return tree, None, {"cache": cache, "prev": state["prev"], "confident": confident}
