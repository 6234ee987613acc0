"""Scoring and embedding-only tuning of a causal LM under any tokenizer, for ``token_adapt``.

Bits per byte, not per-token perplexity: two tokenizations of one text have different numbers of
tokens, so per-token losses are not comparable; the sum of -log2 p over all tokens of a text,
divided by its UTF-8 bytes, is. Every text is scored on its own after one start token (the
tokenizer's end-of-text), so every tokenizer sees the same byte contexts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.generators.causal_lm import CausalLM
from jaxtok.tasks.lm import next_token_loss


def pad_segments(ids: Sequence[Sequence[int]], start: int, *, batch_size: int,
                 multiple: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
  """Batches of ``[start] + ids`` right-padded to one length (a multiple of ``multiple``):
  (tokens int32 [B, T + 1], mask bool [B, T + 1]); short last batches are padded with empty rows."""
  longest = max(len(x) for x in ids) + 1
  width = -(-longest // multiple) * multiple
  out = []
  for s in range(0, len(ids), batch_size):
    tokens = np.zeros((batch_size, width), np.int32)
    mask = np.zeros((batch_size, width), bool)
    for r, seq in enumerate(ids[s:s + batch_size]):
      tokens[r, 0], tokens[r, 1:len(seq) + 1] = start, seq
      mask[r, :len(seq) + 1] = True
    out.append((tokens, mask))
  return out


def make_scorer(model: CausalLM):
  """jitted (params, tokens [B, T + 1], mask) -> (sum of next-token NLL in nats, targets)."""

  @jax.jit
  def score(params, tokens, mask):
    logits = model.apply({"params": params}, tokens[:, :-1], kv_mask=mask[:, :-1])
    _, aux = next_token_loss(logits, tokens, mask)
    return aux["nll_sum"], aux["count"]

  return score


def bits_per_byte(score, params, ids: Sequence[Sequence[int]], texts: Sequence[str], start: int,
                  *, batch_size: int = 8) -> dict[str, float]:
  """Held-out bits per byte of ``texts`` (tokenized as ``ids``) under ``params``."""
  if len(ids) != len(texts) or not texts:
    raise ValueError(f"{len(ids)} token lists for {len(texts)} texts")
  nll, count = 0.0, 0.0
  for tokens, mask in pad_segments(ids, start, batch_size=batch_size):
    a, b = score(params, jnp.asarray(tokens), jnp.asarray(mask))
    nll, count = nll + float(a), count + float(b)
  n_bytes = sum(len(t.encode("utf-8")) for t in texts)
  return {"bits_per_byte": nll / math.log(2) / n_bytes, "nats": nll, "tokens": int(count),
          "bytes": n_bytes, "bytes_per_token": n_bytes / max(1.0, count)}


def embedding_path(params) -> tuple[str, str]:
  if "embed" not in params or "embedding" not in params["embed"]:
    raise KeyError(f"no embed/embedding in the parameters (top level: {sorted(params)})")
  return "embed", "embedding"


def with_embedding(params: dict, table) -> dict:
  """``params`` (plain, unboxed) with the token embedding replaced (the head too when tied)."""
  outer, inner = embedding_path(params)
  return {**params, outer: {**params[outer], inner: table}}


def window_batches(stream: np.ndarray, *, steps: int, batch_size: int, seq_len: int,
                   seed: int) -> np.ndarray:
  """int32 [steps, B, seq_len + 1]: random windows of a token stream (the same for every arm
  that tunes on the same stream and seed)."""
  if len(stream) < seq_len + 2:
    raise ValueError(f"the tuning stream has {len(stream)} tokens, fewer than seq_len + 2 = "
                     f"{seq_len + 2}")
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, len(stream) - seq_len - 1, (steps, batch_size))
  return np.stack([np.stack([stream[s:s + seq_len + 1] for s in row]) for row in starts]
                  ).astype(np.int32)


def make_embedding_tuner(model: CausalLM, lr: float):
  """(init, step): Adam on the token embedding alone; every other weight is a constant, so only
  activation gradients flow through the blocks."""
  tx = optax.adam(lr)

  def loss_fn(table, rest, tokens):
    logits = model.apply({"params": with_embedding(rest, table)}, tokens[:, :-1])
    return next_token_loss(logits, tokens)[0]

  @jax.jit
  def step(table, opt_state, rest, tokens):
    loss, grad = jax.value_and_grad(loss_fn)(table, rest, tokens)
    updates, opt_state = tx.update(grad, opt_state, table)
    return optax.apply_updates(table, updates), opt_state, loss

  return tx.init, step


def tune_embedding(tuner, params: dict, batches: np.ndarray, log=print,
                   name: str = "") -> tuple[dict, list[float]]:
  """Runs ``len(batches)`` embedding-only steps of ``tuner`` (from :func:`make_embedding_tuner`,
  made once per model so that every arm reuses one compiled step); (tuned params, loss per step)."""
  init, step = tuner
  outer, inner = embedding_path(params)
  table = jnp.asarray(params[outer][inner])
  rest = jax.tree.map(jnp.asarray, params)
  opt_state, losses = init(table), []
  for i, tokens in enumerate(batches):
    table, opt_state, loss = step(table, opt_state, rest, jnp.asarray(tokens))
    losses.append(float(loss))
    if log and (i == 0 or (i + 1) % 25 == 0 or i + 1 == len(batches)):
      log(f"  tune {name} step {i + 1}/{len(batches)}: loss {losses[-1]:.4f}")
  return with_embedding(params, np.asarray(table)), losses


def plain_params(params: Any) -> dict:
  """Unboxed numpy parameters (from a fresh init or a loader)."""
  return jax.tree.map(np.asarray, nn.unbox(params))
