"""The ``feature_distill`` task: trains the feature-fused drafter (Dovetail / EAGLE) of a frozen LM.

Every batch runs the frozen target once over the tokens for its final-normed hidden states; the
drafter (``jaxtok/decoding/fused_draft.py``) learns, teacher-forced, to predict each slot's
feature from the feature before it and the slot's token, by KL of the target's tied head over the
predicted and the true feature plus ``feature_weight`` x smooth-L1 on the features. The target's
embedding table is the drafter's input embedding and output head, frozen and never stored with it.
``unroll`` > 1 also trains on the drafter's own predicted features, as later draft tokens see
them. Metrics: ``kl``, ``feature_l1``, ``agreement`` (argmax match: the greedy acceptance rate of
one draft token given the true feature), ``agreement_<k>`` (given k - 1 predicted features).

Config (``configs/decoding/fused_distill.py``): ``teacher`` (as the ``distill`` task's),
``drafter.{depth, fusion, init_from_teacher_layers}`` (``(29,)``: block j starts as the teacher's
block layers[j], the final norm as the teacher's), ``feature_weight``, ``unroll``, ``optimizer``,
``data``
(a token set of the teacher's tokenizer), ``eval_max_batches``. ``report`` writes
``<workdir>/fused_draft.json``; :func:`restore_fused_draft` reads the drafter back.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.data.batches import split_iterator
from jaxtok.decoding.fused_draft import FUSIONS, FusedDraftNet, feature_distill_loss
from jaxtok.generators.causal_lm import CausalLM, LMConfig
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.distill import DEFAULTS as DISTILL_DEFAULTS
from jaxtok.tasks.distill import _boxed_like, _load_teacher, options, recorded_heldout
from jaxtok.train import loop
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

RECORD_FILE = "fused_draft.json"
DRAFTER_DEFAULTS = {"depth": 2, "fusion": "gated", "init_from_teacher_layers": ()}


def drafter_net(arch: LMConfig, depth: int, fusion: str, dtype: str = "float32") -> FusedDraftNet:
  """The drafter for a target of architecture ``arch``: its width, heads and MLP."""
  if depth < 1:
    raise ValueError(f"drafter.depth must be >= 1, got {depth}")
  if fusion not in FUSIONS:
    raise ValueError(f"drafter.fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
  return FusedDraftNet(dim=arch.dim, depth=depth, num_heads=arch.num_heads,
                       num_kv_heads=arch.num_kv_heads, mlp_dim=arch.mlp_dim,
                       head_dim=arch.head_dim, rope_base=arch.rope_base, norm_eps=arch.norm_eps,
                       fusion=fusion, dtype=jnp.dtype(dtype))


def target_features(model: CausalLM, params, tokens, kv_mask=None) -> jnp.ndarray:
  """The target's final-normed hidden states [B, T, M] over ``tokens`` (no cache)."""
  return model.apply({"params": params}, tokens, None, kv_mask, method=_features)


def _features(module: CausalLM, tokens, positions, kv_mask):
  return module.transformer(module.embed(tokens), positions=positions, kv_mask=kv_mask).astype(
      jnp.float32)


def copy_teacher_blocks(teacher_params: dict, layers: tuple[int, ...], like: dict) -> dict:
  """Drafter params ``like`` with block j = the teacher's block layers[j] and its final norm."""
  blocks = {f"layer_{j}": teacher_params["transformer"][f"layer_{i}"]
            for j, i in enumerate(layers)}
  blocks["final_norm"] = teacher_params["transformer"]["final_norm"]
  out = {**like, "blocks": {**like["blocks"], **blocks}}
  if jax.tree.structure(out) != jax.tree.structure(like):
    raise ValueError("the drafter's blocks do not match the teacher's")
  return out


def _make_init(net: FusedDraftNet, tx, teacher_params=None, layers: tuple[int, ...] = ()):
  def init(rng: jax.Array, example_batch: Any = None) -> TrainState:
    del example_batch
    x = jnp.zeros((1, 4, net.dim), jnp.float32)
    boxed = net.init(rng, x, x)["params"]
    if layers and teacher_params is not None:
      boxed = _boxed_like(boxed, copy_teacher_blocks(teacher_params, layers, nn.unbox(boxed)))
    return TrainState.create(params=boxed, tx=tx, rng=rng)
  return init


def build(config) -> Task:
  teacher_cfg = options(config, "teacher")
  d = with_defaults(config, "drafter", DRAFTER_DEFAULTS)
  dtype = config.get("dtype", "float32")
  t_arch, t_params, *_ = _load_teacher(teacher_cfg, dtype)
  layers = tuple(int(i) for i in d.init_from_teacher_layers or ())
  if layers and (len(layers) != int(d.depth) or not all(0 <= i < t_arch.num_layers
                                                        for i in layers)):
    raise ValueError(f"drafter.init_from_teacher_layers {layers} must name {d.depth} blocks of "
                     f"the {t_arch.num_layers}-layer teacher")
  net = drafter_net(t_arch, int(d.depth), str(d.fusion), dtype)
  teacher = CausalLM.from_config(t_arch, dtype=dtype)
  embed = t_params["embed"]["embedding"]
  tx = build_optimizer(with_defaults(config, "optimizer", DISTILL_DEFAULTS["optimizer"]),
                       int(config.num_steps))
  weight = float(config.get("feature_weight", 1.0))
  unroll = int(config.get("unroll", 1))
  data = config.get("data")
  if not (data and data.get("name")):
    raise ValueError("the feature_distill task needs config.data.name (a token data set)")

  def losses(params, batch):
    tokens = batch["tokens"]
    if tokens.ndim != 2:
      raise ValueError(f"feature_distill wants batch['tokens'] [B, T], got {tokens.shape}")
    feats = jax.lax.stop_gradient(target_features(teacher, t_params, tokens))
    weights = jnp.ones(tokens.shape, jnp.float32)
    if "mask" in batch:
      weights = weights * batch["mask"][:, None].astype(jnp.float32)
    return feature_distill_loss(net, params, embed, tokens, feats, weights,
                                feature_weight=weight, unroll=unroll)

  def train_step(state: TrainState, batch):
    return supervised_step(state, losses, batch)

  def eval_step(state: TrainState, batch):
    loss, aux = losses(state.params, batch)
    return {"loss": loss, **aux}

  pooled = jax.jit(lambda params, tokens, mask: losses(params, {"tokens": tokens, "mask": mask}))

  def heldout(state: TrainState) -> dict[str, float]:
    params, total, count = nn.unbox(state.params), {}, 0.0
    it = split_iterator(config.data, "test", train=False, batch_size=config.batch_size,
                        seed=config.seed)
    for i, b in enumerate(it):
      if i >= int(config.get("eval_max_batches", 8)):
        break
      mask = np.asarray(b["mask"])
      _, aux = jax.device_get(pooled(params, np.asarray(b["tokens"]), mask))
      n = float(mask.sum()) * b["tokens"].shape[1]
      total = {k: total.get(k, 0.0) + float(v) * n for k, v in aux.items()}
      count += n
    return {f"heldout/{k}": v / max(count, 1.0) for k, v in total.items()} | {
        "heldout/tokens": count}

  report, evaluate = recorded_heldout(heldout, RECORD_FILE, config,
                                      {"drafter": {"depth": net.depth, "fusion": net.fusion}})

  return Task(init=_make_init(net, tx, t_params, layers), train_step=train_step,
              eval_step=eval_step, report=report, evaluate=evaluate)


def _no_train_step(state, batch):
  raise RuntimeError("this task only restores a drafter; build feature_distill to train")


def restore_fused_draft(workdir: str, arch: LMConfig) -> tuple[FusedDraftNet, Any]:
  """(drafter, params as numpy) of the latest checkpoint of a ``feature_distill`` run, for a
  target of architecture ``arch`` (its width and heads size the drafter)."""
  path = paths.join(workdir, RECORD_FILE)
  if not paths.exists(path):
    raise FileNotFoundError(f"{path} does not exist: train a drafter there first "
                            "(configs/decoding/fused_distill.py)")
  record = json.loads(paths.read_text(path))
  config = ml_collections.ConfigDict(record["config"])
  if config.get("task") != "feature_distill":
    raise ValueError(f"{workdir!r} is a {config.get('task')!r} run, not feature_distill")
  config.async_checkpoint, config.init_from = False, ""
  net = drafter_net(arch, int(record["drafter"]["depth"]), record["drafter"]["fusion"],
                    config.get("dtype", "float32"))
  tx = build_optimizer(with_defaults(config, "optimizer", DISTILL_DEFAULTS["optimizer"]),
                       int(config.num_steps))
  task = Task(init=_make_init(net, tx), train_step=_no_train_step, needs_data=False)
  state, _ = loop.restore_state(config, os.fspath(workdir), task)
  return net, jax.device_get(nn.unbox(state.params))


TASKS.register("feature_distill", build)
