"""Dovetail-style placement: the draft model runs on one device, the target on another.

Dovetail (heterogeneous speculative decoding) drafts on the accelerator and verifies on the host
CPU, where a large target's weights fit in memory. :class:`DovetailDraft` keeps the engine's
single jitted propose -> verify -> accept loop on the target's device and reaches the draft
through ordered ``io_callback``\\ s: each round the callback hands the context (a few ints per
row) to a host-side :class:`DeviceDraft`, which runs an ordinary :class:`DraftModel`'s jitted
``propose`` / ``update`` on ``device`` with its params and KV cache resident there, and returns
the drafted tokens. Only token ids cross devices; the draft's state never enters the target's
program. Verification is the engine's, so greedy output stays plain greedy decoding's.

Dovetail's drafter itself, dynamic gating fusion of the target's features with token embeddings
in a deeper drafter, is :class:`~jaxtok.decoding.fused_draft.FusedDraft`; the holder places it the
same way. It reads the target's hidden states, so then the callbacks also carry the prompt's
features once ([B, P, M] floats) and the verified chain's every round ([B, G + 1, M]: 576 floats
a token for SmolLM2, against one int for a draft model); the drafter's copy of the target's
embedding table (its input and its head) lives on its device.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from jaxtok.decoding.proposers import Accepted, Context
from jaxtok.decoding.trees import TreeTemplate


def parse_device(spec: str) -> jax.Device:
  """'' = the default device; 'cpu:1', 'cuda:0', 'tpu:0' = that platform's device index."""
  if not spec:
    return jax.devices()[0]
  platform, _, index = spec.partition(":")
  try:
    devices = jax.devices(platform)
  except RuntimeError as e:
    raise ValueError(f"draft device {spec!r}: no {platform!r} backend here ({e})") from None
  i = int(index or 0)
  if not 0 <= i < len(devices):
    raise ValueError(f"draft device {spec!r}: {platform} has {len(devices)} device(s)")
  return devices[i]


class DeviceDraft:
  """Host side of the placement: a greedy drafter (a ``DraftModel``, or a ``FusedDraft`` that
  reads the target's features), its params and state on ``device``."""

  def __init__(self, draft: Any, device: jax.Device):
    if getattr(draft, "num_drafts", 1) != 1 or getattr(draft, "temperature", 0.0) > 0:
      raise ValueError("Dovetail placement drafts one greedy chain (num_drafts=1, temperature 0)")
    self.draft, self.device = draft, device
    self.reads_features = bool(getattr(draft, "reads_target_features", False))
    self.params = self.state = None
    self.seconds, self.calls = 0.0, 0  # wall time inside the draft's calls (transfers included)
    self._init, self._propose = jax.jit(draft.init), jax.jit(draft.propose)
    self._update = jax.jit(draft.update)

  def load(self, params: Any) -> None:
    self.params = jax.device_put(params, self.device)

  def _put(self, tree):
    return jax.device_put(tree, self.device)

  def _timed(self, fn, *args):
    begin = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    self.seconds, self.calls = self.seconds + time.perf_counter() - begin, self.calls + 1
    return out

  def _features(self, features: tuple) -> dict:  # () or (array,) -> the drafter's keyword
    return {"features": self._put(features[0])} if self.reads_features else {}

  def host_init(self, prompt, prompt_mask, positions, kv_mask, *features):
    if self.params is None:
      raise ValueError("DeviceDraft.load(params) must run before decoding")
    feats = self._features(features)
    self.state = self._timed(lambda *a: self._init(*a, **feats), self.params, *self._put(
        (prompt, prompt_mask, positions, kv_mask)))
    return np.int32(0)

  def host_propose(self, ctx, tick):
    tree, _, self.state = self._timed(self._propose, self.params, self.state,
                                      Context(*self._put(tuple(ctx))), jax.random.key(0))
    return np.asarray(tree, np.int32)

  def host_update(self, ctx, tree, accept, tick, *features):
    feats = self._features(features)
    self.state = self._timed(
        lambda *a: self._update(self.params, self.state, *a, **feats),
        Context(*self._put(tuple(ctx))), self._put(tree), None,
        Accepted(*self._put(tuple(accept))))
    return np.int32(tick + 1)

  def state_devices(self) -> set:
    """Devices holding the draft's state (its KV cache): the placement tests read this."""
    return {d for x in jax.tree.leaves(self.state) for d in x.devices()}


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: one program per holder
class DovetailDraft:
  """The engine-facing proposer; its params are None (the draft's live in the holder)."""

  holder: DeviceDraft

  @property
  def template(self) -> TreeTemplate:
    return self.holder.draft.template

  @property
  def length(self) -> int:
    return self.holder.draft.length

  @property
  def reads_target_features(self) -> bool:  # the engine then passes features= below
    return self.holder.reads_features

  def init(self, params, prompt, prompt_mask, positions, kv_mask, features=None):
    del params
    tick = io_callback(self.holder.host_init, jax.ShapeDtypeStruct((), jnp.int32), prompt,
                       prompt_mask, positions, kv_mask, *_given(features), ordered=True)
    return {"tick": tick}

  def propose(self, params, state, ctx: Context, rng):
    del params, rng
    shape = jax.ShapeDtypeStruct((ctx.root.shape[0], self.template.size), jnp.int32)
    tree = io_callback(self.holder.host_propose, shape, tuple(ctx), state["tick"], ordered=True)
    return tree, None, state

  def update(self, params, state, ctx: Context, tree_tokens, target_logits, accept: Accepted,
             features=None):
    del params, target_logits  # neither drafter's update reads the target's logits
    tick = io_callback(self.holder.host_update, jax.ShapeDtypeStruct((), jnp.int32),
                       tuple(ctx), tree_tokens, tuple(accept), state["tick"], *_given(features),
                       ordered=True)
    return {"tick": tick}


def _given(features) -> tuple:
  return () if features is None else (features,)
