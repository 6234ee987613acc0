"""DEL with one KV cache and a choice every round: the target's early exits draft from its cache.

    prop = DynamicExit(target=model, layers=(4, 8, 12), gammas=(0, 1, 2, 4), prior=rates)
    tokens, stats = speculative_generate(rng, LMStep(model), params, prop,
                                         {"target": params, "scales": exit_scales}, ...)

``early_exit.ConfidentDraft`` drafts with exit L as a separate model: its own KV cache,
prefilled over the prompt and fed every accepted token again, with (L, gamma) chosen once per
prompt from the prompt's shadow tokens. This proposer is the two things that left out:

- **One cache (LayerSkip).** Exit L is the target's first L blocks, so the keys and values it
  needs at every verified position are already in the target's cache: the verify passes wrote
  them. The draft reads that cache (the engine hands it over: ``reads_target_cache``), so it
  has no cache of its own, no prefill and no catch-up step; its own draft tokens' keys/values go
  to a scratch copy of those L layers' cache (XLA copies the L layers it updates), and the next
  verify pass writes the target's over the same slots.
- **A choice every round (DEL).** Every target pass also returns the residual stream after each
  exit layer at the tree's nodes (``exit_layers``). At the nodes the round accepted, each exit's
  head predicts the next token and is compared with the target's argmax there (shadow tokens);
  decayed counts, shrunk toward ``prior`` rates, give per-exit acceptance rates, and the next
  round drafts with the (L, gamma) whose expected tokens per unit cost is highest
  (``early_exit.select_exit``'s closed form, evaluated in the jitted loop). ``gamma = 0`` in
  ``gammas`` is a plain step. One choice per batch: shapes are static (``lax.switch`` over one
  draft program per option and one verify program per gamma).

Greedy drafts only (q is one-hot), so every verifier stays lossless. Exits here are the target's
blocks plus a trained norm (``early_exit.fit_exit_norms``); an exit adapter
(``exit_adapter.py``) adds a block the target's cache does not hold, so it keeps its own draft.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.decoding.early_exit import StepCosts, exit_model, exit_params
from jaxtok.decoding.proposers import Context, LMStep
from jaxtok.decoding.trees import TreeTemplate, chains
from jaxtok.generators.causal_lm import CausalLM, set_cache_index
from jaxtok.nn import rows


@dataclasses.dataclass(frozen=True)
class DynamicExit:
  """Self-speculation from the target's exits ``layers`` (1-based), re-chosen every round.

  Params: ``{"target": target params, "scales": exit norms [K, M]}``. Costs are per exit draft
  step (``draft_costs``), per verify pass over 1 + gamma nodes (``verify_costs``, one per entry
  of ``gammas``) and per plain step (``plain_cost``), in any one unit; left empty they are DEL's
  layer passes (a draft step from exit L costs L, any target pass ``num_layers``). Use
  :meth:`with_costs` for measured ones (``early_exit.step_seconds``)."""

  target: CausalLM
  layers: tuple[int, ...]
  gammas: tuple[int, ...] = (0, 1, 2, 4)
  prior: tuple[float, ...] = ()  # per-exit acceptance before any evidence; () means 0.5 each
  prior_weight: float = 8.0  # pseudo-positions of the prior
  decay: float = 0.9  # per round: older shadow tokens count less (the context moves on)
  draft_costs: tuple[float, ...] = ()
  verify_costs: tuple[float, ...] = ()
  plain_cost: float = 0.0

  reads_target_cache = True  # the engine passes its KV cache to propose
  refillable = True  # the state (rates, choice) is shared by every row

  def __post_init__(self):
    n, k = self.target.num_layers, len(self.layers)
    if not self.layers or any(not 1 <= lay <= n for lay in self.layers):
      raise ValueError(f"exit layers must be in 1..{n}, got {self.layers}")
    if list(self.gammas) != sorted(set(self.gammas)) or self.gammas[0] < 0 or max(
        self.gammas) < 1:
      raise ValueError(f"gammas must be increasing draft lengths >= 0 with one >= 1, got "
                       f"{self.gammas}")
    if not self.target.tie_embeddings:
      raise ValueError("exit heads here are the tied embedding; this target has an lm_head")
    for name, vals, want in (("prior", self.prior, k), ("draft_costs", self.draft_costs, k),
                             ("verify_costs", self.verify_costs, len(self.gammas))):
      if vals and len(vals) != want:
        raise ValueError(f"{name} needs {want} values (one per "
                         f"{'exit' if want == k else 'gamma'}), got {len(vals)}")
    if any(c <= 0 for c in self.draft_costs + self.verify_costs) or self.plain_cost < 0:
      raise ValueError(f"costs must be positive, got draft {self.draft_costs}, verify "
                       f"{self.verify_costs}, plain {self.plain_cost}")
    if self.prior and not all(0.0 <= a <= 1.0 for a in self.prior):
      raise ValueError(f"prior rates must be in [0, 1], got {self.prior}")
    if not 0.0 <= self.decay <= 1.0 or self.prior_weight <= 0:
      raise ValueError(f"need 0 <= decay <= 1 and prior_weight > 0, got {self.decay}, "
                       f"{self.prior_weight}")

  @classmethod
  def with_costs(cls, target, layers, gammas, costs: StepCosts, **kw) -> DynamicExit:
    """Measured costs: ``costs.draft[L]``, ``costs.verify[gamma]`` and ``costs.plain`` (also the
    cost of gamma 0, a plain step)."""
    return cls(target, tuple(layers), tuple(gammas),
               draft_costs=tuple(float(costs.draft[lay]) for lay in layers),
               verify_costs=tuple(float(costs.verify[g] if g else costs.plain) for g in gammas),
               plain_cost=float(costs.plain), **kw)

  @property
  def exit_layers(self) -> tuple[int, ...]:
    return tuple(self.layers)

  @property
  def template(self) -> TreeTemplate:
    return chains(1, max(self.gammas))

  @property
  def sizes(self) -> tuple[int, ...] | None:
    return tuple(1 + g for g in self.gammas) if len(self.gammas) > 1 else None

  @property
  def options(self) -> tuple[tuple[int, int], ...]:
    """(exit index, gamma) per option: every exit with every gamma > 0, then (-1, 0) (no draft)
    when 0 is in ``gammas``. ``stats['proposer_state']['rounds']`` counts rounds per option."""
    opts = tuple((k, g) for k in range(len(self.layers)) for g in self.gammas if g > 0)
    return opts + (((-1, 0),) if 0 in self.gammas else ())

  def _costs(self):
    n = float(self.target.num_layers)
    draft = self.draft_costs or tuple(float(lay) for lay in self.layers)
    verify = dict(zip(self.gammas, self.verify_costs or (n,) * len(self.gammas)))
    plain = self.plain_cost or n
    return np.asarray([g * draft[k] + verify[g] if g else plain for k, g in self.options])

  def rates(self, state) -> jnp.ndarray:
    """Per-exit acceptance estimates [K]: decayed shadow matches shrunk toward the prior."""
    prior = jnp.asarray(self.prior or (0.5,) * len(self.layers), jnp.float32)
    w = self.prior_weight
    return (state["hits"] + w * prior) / (state["seen"] + w)

  def choose(self, alphas: jnp.ndarray) -> jnp.ndarray:
    """Index into ``options`` of the most expected tokens per unit cost (DEL's rule)."""
    exits = np.asarray([max(k, 0) for k, _ in self.options])
    gam = np.asarray([g for _, g in self.options])
    powers = jnp.asarray(alphas, jnp.float32)[exits][:, None] ** np.arange(max(self.gammas) + 1)
    expected = jnp.sum(jnp.where(np.arange(max(self.gammas) + 1) <= gam[:, None], powers, 0.0),
                       axis=1)
    return jnp.argmax(expected / self._costs()).astype(jnp.int32)

  def init(self, params, prompt, prompt_mask, positions, kv_mask, exit_states=None):
    del params, prompt_mask, positions, kv_mask, exit_states  # the prior decides round one
    state = {"hits": jnp.zeros((len(self.layers),), jnp.float32),
             "seen": jnp.zeros((), jnp.float32),
             "rounds": jnp.zeros((len(self.options),), jnp.int32)}
    return dict(state, option=self.choose(self.rates(state)))

  def choose_size(self, params, state, ctx, tree_tokens):
    del params, ctx, tree_tokens
    gam = jnp.asarray([g for _, g in self.options])[state["option"]]
    return jnp.argmax(jnp.asarray(self.gammas) == gam).astype(jnp.int32)

  def _draft(self, k, g, params, cache, ctx: Context):
    """The root, ``g`` greedy drafts from exit ``layers[k]`` on the target's cache, filler."""
    width = max(self.gammas)
    if g == 0:
      return jnp.repeat(ctx.root[:, None], 1 + width, axis=1)
    layer = self.layers[k]
    step = LMStep(exit_model(self.target, layer))
    p = exit_params(params["target"], layer, params["scales"][k])
    blocks = cache["transformer"]
    scratch = set_cache_index({"transformer": {f"layer_{i}": blocks[f"layer_{i}"]
                                               for i in range(layer)}}, ctx.slot)

    def body(carry, j):
      scratch, tok = carry
      logits, scratch = step(p, scratch, tok[:, None], (ctx.position + j)[:, None], ctx.kv_mask)
      nxt = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
      return (scratch, nxt), nxt

    _, drafts = jax.lax.scan(body, (scratch, ctx.root), jnp.arange(g))
    filler = jnp.repeat(ctx.root[:, None], width - g, axis=1)
    return jnp.concatenate([ctx.root[:, None], drafts.T, filler], axis=1)

  def propose(self, params, state, ctx: Context, rng, cache):
    del rng
    branches = [lambda p, c, x, k=k, g=g: self._draft(k, g, p, c, x) for k, g in self.options]
    tree = jax.lax.switch(state["option"], branches, params, cache, ctx)
    return tree, None, dict(state, rounds=state["rounds"].at[state["option"]].add(1))

  def exit_tokens(self, params, exit_states) -> jnp.ndarray:
    """Each exit's argmax from the residual stream after its layer: [K, B, T, M] -> [K, B, T]."""
    eps, head = self.target.norm_eps, params["target"]["embed"]

    def one(scale, h):
      h = h.astype(jnp.float32)
      h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + eps) * scale
      with rows.float_weights():  # the target's head, whatever its weights' layout
        logits = self.target.apply({"params": {"embed": head}}, h,
                                   method=lambda m, x: m.embed.attend(x))
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return jax.vmap(one)(params["scales"], exit_states)

  def update(self, params, state, ctx: Context, tree_tokens, target_logits, accept, exit_states):
    """Shadow tokens at the accepted path's nodes (the root and the accepted drafts)."""
    n = tree_tokens.shape[1]
    active = jnp.ones(ctx.root.shape, bool) if ctx.active is None else ctx.active
    valid = (jnp.arange(n)[None] <= accept.num_accepted[:, None]) & active[:, None]  # [B, n]
    target = jnp.argmax(target_logits, axis=-1)  # [B, n]
    matches = jnp.sum((self.exit_tokens(params, exit_states) == target[None]) & valid[None],
                      axis=(1, 2)).astype(jnp.float32)
    hits = self.decay * state["hits"] + matches
    seen = self.decay * state["seen"] + valid.sum().astype(jnp.float32)
    state = dict(state, hits=hits, seen=seen)
    return dict(state, option=self.choose(self.rates(state)))
