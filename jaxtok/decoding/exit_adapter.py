"""Exit adapters for early-exit self-speculation: one trained block between exit L and the head.

``early_exit.py``'s exits train only a norm (576 numbers) on the target's hidden state after L
blocks, and SmolLM2-135M's intermediate states are no next-token predictions a norm can fix
(3-5% top-1 agreement with the last layer, docs/decoding_del.md). DEL and LayerSkip start from
checkpoints trained with an early-exit loss; with the target frozen, the cheap fix is Kangaroo's
("Kangaroo: Lossless Self-Speculative Decoding via Double Early Exiting"): a light adapter on the
exit. Here the adapter is one Llama block of the target's own shape and a final norm, trained by
KL to the target's last-layer distribution on cached states, the target untouched.

Exit L with an adapter is, as a model, the target's first L blocks followed by the adapter block
and norm and the tied head: ``adapter_model`` is the target with ``num_layers = L + 1`` and
``adapter_params`` puts the adapter at ``layer_L``, so it drafts through the unchanged engine
(``early_exit.ConfidentDraft``) with its own KV cache. A draft step costs L + 1 blocks plus the
head. The adapter starts as a copy of one of the target's blocks (``init_from``: ``'last'``, the
block before the target's head, or ``'next'``, block L, which already reads exit L's states;
on SmolLM2's exit 8 ``'last'`` ends with the lower held-out KL, docs/decoding_del.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxtok.decoding.early_exit import hidden_states
from jaxtok.generators.causal_lm import CausalLM
from jaxtok.nn import Transformer

INIT_FROM = ("next", "last")


def adapter_stack(model: CausalLM) -> Transformer:
  """A one-block ``Transformer`` with the target's block settings: the adapter and its norm."""
  return Transformer(
      num_layers=1, num_heads=model.num_heads, mlp_dim=model.mlp_dim,
      num_kv_heads=model.num_kv_heads, head_dim=model.head_dim, causal=True,
      rope_base=model.rope_base, norm="rmsnorm", norm_eps=model.norm_eps, mlp="swiglu",
      use_bias=False, dtype=model.dtype, fused_projections=model.fused_projections)


def adapter_model(target: CausalLM, layer: int) -> CausalLM:
  """Exit ``layer`` with an adapter, as a model: the target's first ``layer`` blocks + 1."""
  if not 1 <= layer < target.num_layers:
    raise ValueError(f"an adapted exit must be in 1..{target.num_layers - 1}, got {layer}")
  return target.clone(num_layers=layer + 1, parent=None)


def init_adapter(target_params: dict, layer: int, init_from: str = "last") -> dict:
  """``{'layer_0': block, 'final_norm': norm}``: a copy of the target's block ``layer``
  (``'next'``) or its last block (``'last'``), and the target's final norm."""
  if init_from not in INIT_FROM:
    raise ValueError(f"init_from must be one of {INIT_FROM}, got {init_from!r}")
  t = target_params["transformer"]
  num_layers = sum(k.startswith("layer_") for k in t)
  if not 1 <= layer < num_layers:
    raise ValueError(f"an adapted exit must be in 1..{num_layers - 1}, got {layer}")
  src = layer if init_from == "next" else num_layers - 1
  return jax.tree.map(jnp.array, {"layer_0": t[f"layer_{src}"], "final_norm": t["final_norm"]})


def adapter_params(target_params: dict, layer: int, adapter: dict) -> dict:
  """Params of ``adapter_model(target, layer)``: the target's embedding, first ``layer`` blocks,
  the adapter block as block ``layer`` and the adapter's norm (the head stays tied)."""
  t = target_params["transformer"]
  blocks = {f"layer_{i}": t[f"layer_{i}"] for i in range(layer)}
  out = {"embed": target_params["embed"], "transformer": blocks | {
      f"layer_{layer}": adapter["layer_0"], "final_norm": adapter["final_norm"]}}
  if "lm_head" in target_params:
    out["lm_head"] = target_params["lm_head"]
  return out


def adapter_logits(model: CausalLM, adapter: dict, hidden: jnp.ndarray, head: jnp.ndarray
                   ) -> jnp.ndarray:
  """float32 logits [B, T, V] of exit states ``hidden`` [B, T, M] (positions 0..T-1) through the
  adapter and the head rows ``head`` [V, M]."""
  x = adapter_stack(model).apply({"params": adapter}, hidden)
  return jnp.dot(x.astype(jnp.float32), head.astype(jnp.float32).T)


def exit_states(model: CausalLM, params: dict, tokens: np.ndarray, layer: int, chunk: int = 4
                ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The target's residual stream after ``layer`` blocks and its final normed states, both
  [N, T, M], for token windows [N, T] (``chunk`` windows a pass)."""
  if not 1 <= layer < model.num_layers:
    raise ValueError(f"exit layer must be in 1..{model.num_layers - 1}, got {layer}")
  names = {f"layer_{layer - 1}", "final_norm"}

  def one(prm, toks):  # one pass, both states captured
    _, state = model.apply({"params": prm}, toks, capture_intermediates=lambda m, _: (
        m.name in names), mutable=["intermediates"])
    inter = state["intermediates"]["transformer"]
    return inter[f"layer_{layer - 1}"]["__call__"][0], inter["final_norm"]["__call__"][0]

  run = jax.jit(one)
  parts = [run(params, jnp.asarray(tokens[i:i + chunk])) for i in range(0, len(tokens), chunk)]
  return (jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts]))


def adapter_kl(model, adapter, hidden, final, head):
  """Mean KL(target || exit) over [B, T] positions: the target's logits are ``final @ head^T``."""
  logp = jax.nn.log_softmax(jnp.dot(final.astype(jnp.float32), head.astype(jnp.float32).T))
  logq = jax.nn.log_softmax(adapter_logits(model, adapter, hidden, head))
  return jnp.mean(jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1))


def agreement(model, adapter, hidden, final, head, chunk: int = 4) -> float:
  """Top-1 agreement of the adapted exit with the target over every position of [N, T]."""
  hits = sum(int(_agreeing(model, adapter, hidden[i:i + chunk], final[i:i + chunk], head))
             for i in range(0, len(hidden), chunk))
  return hits / float(hidden.shape[0] * hidden.shape[1])


@jax.jit(static_argnums=0)
def _agreeing(model, adapter, hidden, final, head):  # how many positions' argmaxes agree
  return jnp.sum(jnp.argmax(adapter_logits(model, adapter, hidden, head), -1)
                 == jnp.argmax(final @ head.T, -1))


def train_adapter(model: CausalLM, adapter: dict, hidden: jnp.ndarray, final: jnp.ndarray,
                  head: jnp.ndarray, *, steps: int, batch: int = 8, learning_rate: float = 1e-3,
                  seed: int = 0, log_every: int = 0) -> tuple[dict, list[float]]:
  """Adam (cosine decay) on the adapter by KL to the frozen target, windows of the cached
  states (``exit_states``) ``batch`` at a time; returns (adapter, per-step KL)."""
  if hidden.shape != final.shape:
    raise ValueError(f"exit and final states disagree: {hidden.shape} vs {final.shape}")
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))
  opt = tx.init(adapter)

  @jax.jit  # the head is an argument, not a 113 MB constant folded into the program
  def step(adapter, opt, h, f, head):
    loss, grad = jax.value_and_grad(lambda a: adapter_kl(model, a, h, f, head))(adapter)
    updates, opt = tx.update(grad, opt)
    return optax.apply_updates(adapter, updates), opt, loss

  rng, losses = np.random.default_rng(seed), []
  for i in range(steps):
    idx = jnp.asarray(rng.integers(0, hidden.shape[0], min(batch, hidden.shape[0])))
    adapter, opt, loss = step(adapter, opt, hidden[idx], final[idx], head)
    losses.append(float(loss))
    if log_every and (i + 1) % log_every == 0:
      print(f"  adapter step {i + 1}/{steps}: KL {np.mean(losses[-log_every:]):.3f}", flush=True)
  return adapter, losses


def fit_exit_adapters(model: CausalLM, params: dict, layers: tuple[int, ...], train: np.ndarray,
                      held_out: np.ndarray, *, steps: int, batch: int = 8,
                      learning_rate: float = 1e-3, init_from: str = "last",
                      log_every: int = 0) -> dict[str, np.ndarray]:
  """An adapter per exit in ``layers`` trained on token windows ``train`` [N, T]; returns the
  adapters flattened (``pack``) with, per exit, held-out top-1 agreement and KL of the
  initial copy (``agree_before``, ``kl_before``) and of the trained adapter (``..._after``)."""
  head = _head(params)
  out: dict[str, np.ndarray] = {}
  stats = {k: [] for k in ("agree_before", "agree_after", "kl_before", "kl_after")}
  kl_fn = jax.jit(lambda a, h, f, e: adapter_kl(model, a, h, f, e))

  def kl(a, h, f, chunk=4):  # chunks of windows bound the [chunk, T, V] logits
    return np.mean([float(kl_fn(a, h[i:i + chunk], f[i:i + chunk], head))
                    for i in range(0, len(h), chunk)])

  for k, layer in enumerate(layers):
    h_te, f_te = exit_states(model, params, held_out, layer)
    adapter = init_adapter(params, layer, init_from)
    stats["agree_before"].append(agreement(model, adapter, h_te, f_te, head))
    stats["kl_before"].append(float(kl(adapter, h_te, f_te)))
    h_tr, f_tr = exit_states(model, params, train, layer)
    adapter, _ = train_adapter(model, adapter, h_tr, f_tr, head, steps=steps, batch=batch,
                               learning_rate=learning_rate, log_every=log_every)
    stats["agree_after"].append(agreement(model, adapter, h_te, f_te, head))
    stats["kl_after"].append(float(kl(adapter, h_te, f_te)))
    out |= pack(adapter, f"adapter{k}")
  return out | {k: np.asarray(v) for k, v in stats.items()}


def adapter_shadow(model: CausalLM, params: dict, adapters: tuple[dict, ...],
                   layers: tuple[int, ...], prompt: jnp.ndarray, mask: jnp.ndarray
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """DEL's shadow tokens for adapted exits: per exit, at how many real positions of the prompts
  [B, P] its argmax equals the target's, from one target pass; (int [K], positions compared)."""
  hiddens, logits = hidden_states(model, params, prompt, layers)
  target = jnp.argmax(logits, axis=-1)
  head = _head(params)
  matches = [jnp.sum((jnp.argmax(adapter_logits(model, a, h, head), -1) == target) & mask)
             for a, h in zip(adapters, hiddens)]
  return jnp.stack(matches).astype(jnp.int32), mask.sum()


def _head(params: dict) -> jnp.ndarray:  # the output head as rows [V, M]
  return params["lm_head"]["kernel"].T if "lm_head" in params else params["embed"]["embedding"]


def pack(adapter: dict, prefix: str) -> dict[str, np.ndarray]:
  """A flat ``{prefix/path: array}`` of an adapter's params (for one ``.npz``)."""
  return {f"{prefix}/{k}": np.asarray(v) for k, v in flatten_dict(adapter, sep="/").items()}


def unpack(arrays, prefix: str) -> dict:
  """The adapter that ``pack(adapter, prefix)`` flattened into ``arrays``."""
  flat = {k[len(prefix) + 1:]: jnp.asarray(arrays[k]) for k in arrays
          if k.startswith(prefix + "/")}
  if not flat:
    raise KeyError(f"no adapter {prefix!r} among {sorted(arrays)[:6]}...")
  return unflatten_dict(flat, sep="/")
