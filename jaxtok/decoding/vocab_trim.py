"""VocabTrim: a draft model whose output head keeps only the target's most frequent tokens.

"VocabTrim: Vocabulary Pruning for Efficient Speculative Decoding in LLMs" (Goel et al., 2025):
at batch 1 a draft step is memory-bound, and a small draft that shares a large vocabulary spends
much of its step reading the output head (SmolLM2's tied 49,152 x 576 head is 113 MB of float32,
about as much as the 4-block draft's blocks together). Keeping the ``k`` rows of the tokens the
*target* generates most often makes the head a [k, d] matmul; drafts never propose a token
outside the kept set, which costs some acceptance where the target wants a rare token.

Verification is unchanged: the target scores the full vocabulary and draft ids are mapped back
to full-vocabulary ids, so greedy verification stays token-identical to plain greedy decoding.
For sampled verification the draft distribution ``q`` is the softmax over the kept logits,
scattered into the full vocabulary (exactly zero outside the kept set); drafts are sampled from
that same ``q``, so rejection sampling stays exact.

    kept = kept_ids(counts, 4096, always_keep=stop_tokens)    # counts: count_generated_tokens
    proposer = VocabTrimDraft(TrimmedLMStep(draft_model), length=2)
    proposer_params = trim_params(draft_params, kept)         # gathers the k head rows once
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.decoding.proposers import DraftModel
from jaxtok.generators.causal_lm import init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import bf16


def kept_ids(counts: np.ndarray, k: int, always_keep: Sequence[int] = ()) -> np.ndarray:
  """The ``k`` ids to keep, ascending (int32 [min(k, V)]): ``always_keep`` plus the most counted.

  Ties in count go to the lower id: deterministic, and for a byte-level BPE a lower id is an
  earlier merge, i.e. a token that was more frequent in the tokenizer's own training text (which
  is what decides among the many ids never seen in a few thousand generated tokens).
  ``always_keep`` (the stop tokens: a draft that cannot propose the end of a sequence loses a
  round at every end) is kept whatever its count.
  """
  counts = np.asarray(counts)
  if counts.ndim != 1:
    raise ValueError(f"counts must be one count per vocabulary id [V], got shape {counts.shape}")
  vocab = counts.shape[0]
  must = sorted({int(t) for t in always_keep})
  if must and not 0 <= must[0] <= must[-1] < vocab:
    raise ValueError(f"always_keep ids {must} are outside the vocabulary of {vocab}")
  k = min(int(k), vocab)
  if k < max(len(must), 1):
    raise ValueError(f"k={k} must be >= 1 and hold the {len(must)} always-kept ids {must}")
  order = np.lexsort((np.arange(vocab), -counts.astype(np.int64)))  # count desc, then id asc
  taken = np.zeros(vocab, bool)
  taken[must] = True
  rest = order[~taken[order]][:k - len(must)]
  return np.sort(np.concatenate([np.asarray(must, np.int64), rest])).astype(np.int32)


def head_rows(params: Any) -> jnp.ndarray:
  """The output head of a :class:`~jaxtok.generators.causal_lm.CausalLM` as rows [V, d]."""
  params = nn.unbox(params)
  if "lm_head" in params:
    return jnp.asarray(params["lm_head"]["kernel"]).T
  return jnp.asarray(params["embed"]["embedding"])  # tied: logits = h E^T


def trim_params(draft_params: Any, kept: np.ndarray) -> dict[str, Any]:
  """Proposer params of a :class:`VocabTrimDraft`: the draft's own, its kept head rows [k, d]
  (gathered here, once, outside any jitted loop) and ``slot`` int32 [V]: each id's row in the
  trimmed head, or ``k`` for a dropped id (it then reads a -inf logit)."""
  kept = np.asarray(kept, np.int32)
  vocab = head_rows(draft_params).shape[0]
  if kept.ndim != 1 or not kept.size or np.any(np.diff(kept) <= 0) or kept[-1] >= vocab \
      or kept[0] < 0:
    raise ValueError(f"kept must be distinct ascending ids in [0, {vocab}) (see kept_ids)")
  slot = np.full((vocab,), kept.size, np.int32)
  slot[kept] = np.arange(kept.size, dtype=np.int32)
  return {"model": draft_params, "head": head_rows(draft_params)[jnp.asarray(kept)],
          "slot": jnp.asarray(slot)}


def _hidden(module, tokens, positions, kv_mask, decode, mask):
  """``CausalLM.__call__`` without its output head: the final (normed) hidden states [B, T, d]."""
  return module.transformer(module.embed(tokens), positions=positions, mask=mask,
                            kv_mask=kv_mask, decode=decode)


@dataclasses.dataclass(frozen=True)
class TrimmedLMStep:
  """An :class:`~jaxtok.decoding.proposers.LMStep` whose logits come from a trimmed head.

  Params are :func:`trim_params`'s. The hidden states meet only the ``k`` kept rows (an [k, d]
  matmul, where the full head reads all ``V`` rows); the ``k`` logits are then spread over the
  full vocabulary with -inf at dropped ids (a gather of ``V`` floats, about 1/d of the head's
  reads), so argmax, softmax and the drafted ids are all full-vocabulary ones.
  """

  model: nn.Module

  def __call__(self, params, cache, tokens, positions, kv_mask, mask=None):
    with bf16.apply_bf16():
      hidden, mutated = self.model.apply(
          {"params": params["model"], "cache": cache}, tokens, positions, kv_mask, True, mask,
          method=_hidden, mutable=["cache"])
    head = params["head"]
    if head.dtype == jnp.bfloat16:  # bf16 weights (jaxtok.nn.bf16): f32 accumulation
      flat = bf16.bf16_matmul(hidden.reshape(-1, hidden.shape[-1]), head, transposed=True)
      kept = flat.reshape(*hidden.shape[:-1], head.shape[0])
    else:
      dtype = self.model.dtype
      kept = jnp.dot(hidden.astype(dtype), head.astype(dtype).T).astype(jnp.float32)
    dropped = jnp.full(kept.shape[:-1] + (1,), -jnp.inf, jnp.float32)
    return jnp.take(jnp.concatenate([kept, dropped], axis=-1), params["slot"], axis=-1), \
        mutated["cache"]


@dataclasses.dataclass(frozen=True)
class VocabTrimDraft(DraftModel):
  """A :class:`~jaxtok.decoding.proposers.DraftModel` over a :class:`TrimmedLMStep`.

  Everything else is the draft model's: greedy drafts are the argmax over the kept ids (dropped
  ids are -inf), sampled drafts come from ``softmax(kept logits / temperature)`` placed in the
  full vocabulary, and that same ``q`` (zero outside the kept set, summing to 1) goes to the
  verifier. Proposer params: :func:`trim_params`.
  """

  def __post_init__(self):
    if not isinstance(self.step, TrimmedLMStep):
      raise TypeError(f"VocabTrimDraft drafts through a TrimmedLMStep, got {type(self.step)}")



def count_generated_tokens(
    model: nn.Module,  # the target CausalLM
    params: Any,
    prompts: Sequence[Sequence[int]],  # token ids, one list per prompt
    *,
    vocab_size: int,
    max_new_tokens: int,
    stop_tokens: Sequence[int] = (),
    batch_size: int = 8,
) -> np.ndarray:  # int64 [vocab_size]
  """How often greedy decoding of the target emits each id after ``prompts`` (new tokens only).

  Prompts are left-padded to the longest one (one program for every batch but a short last
  one); a row's count stops at its stop token (counted: the draft needs to propose it).
  """
  if not prompts or min(map(len, prompts)) < 1:
    raise ValueError("count_generated_tokens needs at least one non-empty prompt")
  width = max(map(len, prompts))
  counts = np.zeros((vocab_size,), np.int64)
  params = nn.unbox(params)
  for start in range(0, len(prompts), batch_size):
    group = prompts[start:start + batch_size]
    tokens, mask = np.zeros((len(group), width), np.int32), np.zeros((len(group), width), bool)
    for r, row in enumerate(group):
      tokens[r, width - len(row):], mask[r, width - len(row):] = row, True
    cache = init_cache(model, len(group), width + max_new_tokens)
    out, stats = generate(jax.random.key(0), ModelStep(model), params, cache,
                          jnp.asarray(tokens), jnp.asarray(mask), max_new_tokens=max_new_tokens,
                          stop_tokens=tuple(stop_tokens), greedy=True)
    out, made = np.asarray(out), np.asarray(stats["num_generated"])
    for r in range(len(group)):
      np.add.at(counts, out[r, width:width + int(made[r])], 1)
  return counts


def cached_counts(path: str | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
  """``compute()``, saved to the ``.npy`` at ``path`` (or read from it when it exists)."""
  if path and paths.exists(path):
    return np.load(paths.path(path).open("rb"))
  counts = np.asarray(compute())
  if path:
    buf = paths.path(path)
    paths.makedirs(buf.parent)
    with buf.open("wb") as f:
      np.save(f, counts)
  return counts
