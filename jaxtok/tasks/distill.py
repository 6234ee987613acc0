"""The ``distill`` task: a draft LM for speculative decoding, trained by KL to a frozen teacher.

The teacher (a pretrained LM such as SmolLM2-135M, or a random ``LM_VARIANTS`` model for smoke
runs) runs on every batch; its logits are never stored. The student, a :class:`CausalLM` with
the same vocabulary, minimises the forward KL per token at temperature tau,

    KL(p || q) = sum_v p_v (log p_v - log q_v),
    p = softmax(teacher logits / tau),  q = softmax(student logits / tau),

averaged over real tokens and scaled by tau^2 (Hinton et al., 2015), plus ``ce_weight`` times the
next-token cross-entropy on the data. Metrics: ``kl``, ``ce``, ``teacher_ce`` and ``agreement``
(argmax student == argmax teacher, the acceptance rate of greedy speculative decoding).

The teacher's parameters are closed over (jit passes them as arguments, not constants): they are
neither trained nor checkpointed. ``student.init_from_teacher_layers = (0, 29)`` copies the
teacher's embedding, final norm (and output head) and the listed blocks into a student of
``len(layers)`` blocks of the teacher's width; ``()`` initialises it at random.
``student.sorted_depths = (1, 2, 4)`` trains sorted (S2D): the loss is the mean KL of the
sub-models made of the student's first d blocks and its head (``jaxtok/decoding/sorted_draft.py``;
the last depth must be the whole student), logged per depth as ``kl_d<d>`` and ``agreement_d<d>``.

Config fields (see ``configs/decoding/draft_distill.py``): ``teacher.{pretrained, variant, seed}``
(``pretrained`` None = a random ``variant`` drawn with ``seed``), ``student.{variant,
init_from_teacher_layers, sorted_depths}``, ``distill_temperature`` (1), ``ce_weight`` (0),
``dtype``, ``optimizer`` (``tasks.common.build_optimizer``), ``data`` (a token set: tokens
[B, T + 1]), ``eval_text_file``, ``eval_seq_len``, ``eval_max_batches``, ``prompt``,
``max_new_tokens``.

``report`` (every ``report_every`` steps) writes ``<workdir>/distill_student.json`` (the student's
architecture and the config) and scores the eval text and the first ``eval_max_batches`` test
batches; :func:`restore_student` reads a run back for other code (the speculative decoder).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok import paths
from jaxtok.config_args import load_config, with_defaults
from jaxtok.data.batches import split_iterator
from jaxtok.decoding.sorted_draft import check_depths, sorted_kl_loss, sorted_logits
from jaxtok.generators.causal_lm import CausalLM, LMConfig, init_cache, lm_config
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.pretrained.chat import chatml
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.lm import DEFAULT_EVAL_TEXT, next_token_loss
from jaxtok.train import loop
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

STUDENT_FILE = "distill_student.json"
SORTED = ("kl_d", "agreement_d")  # per-depth metrics of a sorted student
DEFAULTS = {
    "teacher": {"pretrained": None, "variant": "tiny", "seed": 1234},
    "student": {"variant": None, "init_from_teacher_layers": (), "sorted_depths": ()},
    "optimizer": {"lr": 1e-3, "warmup_steps": 20, "b1": 0.9, "b2": 0.99, "weight_decay": 0.0,
                  "grad_clip": 1.0, "final_lr_fraction": 0.1},
}


def options(config, block: str) -> ml_collections.ConfigDict:
  """``config.<block>`` over ``DEFAULTS[block]``; unknown keys raise, naming the valid ones."""
  return with_defaults(config, block, DEFAULTS[block])


def distill_loss(
    student_logits: jnp.ndarray,  # float [B, T, V] for inputs tokens[:, :-1]
    teacher_logits: jnp.ndarray,  # float [B, T, V]
    tokens: jnp.ndarray,  # int [B, T + 1]
    mask: jnp.ndarray | None = None,  # bool [B, T + 1]; True on real tokens
    row_mask: jnp.ndarray | None = None,  # bool [B]; False on padding rows
    *,
    temperature: float = 1.0,
    ce_weight: float = 0.0,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """tau^2 KL(teacher || student) + ce_weight * CE over the real next-token positions.

  Metrics are means over those positions (``kl``, ``ce``, ``teacher_ce``, ``agreement``,
  ``accuracy``) and the sums behind them (``kl_sum``, ``agree_sum``, ``count``).
  """
  ce, aux = next_token_loss(student_logits, tokens, mask, row_mask)
  teacher_ce, _ = next_token_loss(teacher_logits, tokens, mask, row_mask)
  weights = token_weights(tokens, mask, row_mask)
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, -1)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, -1)
  kl_tok = jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)  # [B, T]
  agree = (jnp.argmax(student_logits, -1) == jnp.argmax(teacher_logits, -1)).astype(jnp.float32)
  count = jnp.maximum(weights.sum(), 1.0)
  kl_sum, agree_sum = (kl_tok * weights).sum(), (agree * weights).sum()
  kl = kl_sum / count
  loss = temperature**2 * kl + ce_weight * ce
  return loss, {"kl": kl, "ce": ce, "teacher_ce": teacher_ce, "agreement": agree_sum / count,
                "accuracy": aux["accuracy"], "kl_sum": kl_sum, "agree_sum": agree_sum,
                "count": weights.sum()}


def token_weights(tokens, mask=None, row_mask=None) -> jnp.ndarray:
  """float [B, T]: 1 on the real next-token positions of ``tokens`` [B, T + 1]."""
  weights = jnp.ones(tokens[:, 1:].shape, jnp.float32) if mask is None else (
      jnp.logical_and(mask[:, 1:], mask[:, :-1]).astype(jnp.float32))
  if row_mask is not None:
    weights = weights * row_mask[:, None].astype(jnp.float32)
  return weights


def student_config(teacher: LMConfig, student_cfg) -> LMConfig:
  """The student's architecture: the variant, or the teacher's with ``len(layers)`` blocks."""
  layers = tuple(student_cfg.init_from_teacher_layers or ())
  bad = [i for i in layers if not 0 <= int(i) < teacher.num_layers]
  if bad:
    raise ValueError(f"student.init_from_teacher_layers {bad} are not layers of a "
                     f"{teacher.num_layers}-layer teacher")
  derived = dataclasses.replace(teacher, num_layers=len(layers)) if layers else None
  if student_cfg.variant:
    arch = lm_config(student_cfg.variant)
    if derived is not None and arch != derived:
      raise ValueError(f"student.variant {student_cfg.variant!r} ({arch}) is not the teacher's "
                       f"architecture with {len(layers)} layers ({derived}); drop the variant or "
                       "change init_from_teacher_layers")
  elif derived is None:
    raise ValueError("set student.variant (random init) or student.init_from_teacher_layers")
  else:
    arch = derived
  if arch.vocab_size != teacher.vocab_size:
    raise ValueError(f"the student's vocab_size {arch.vocab_size} differs from the teacher's "
                     f"{teacher.vocab_size}: distillation by KL needs the same vocabulary")
  return arch


def copy_teacher_layers(teacher_params: dict, layers: tuple[int, ...], like: dict) -> dict:
  """Student params (the tree of ``like``) from the teacher's embedding, final norm, output head
  and blocks ``layers`` (student block j = teacher block layers[j])."""
  t = teacher_params
  out = {"embed": t["embed"], "transformer": {"final_norm": t["transformer"]["final_norm"]}}
  out["transformer"].update({f"layer_{j}": t["transformer"][f"layer_{i}"]
                             for j, i in enumerate(layers)})
  if "lm_head" in like:
    out["lm_head"] = t["lm_head"]
  if jax.tree.structure(out) != jax.tree.structure(like):
    raise ValueError("the student's parameter tree does not match the teacher's blocks")
  return out


def _boxed_like(boxed, values):
  """``values`` inside the logical-axis boxes of ``boxed`` (a fresh init's tree)."""
  return jax.tree.map(lambda box, v: box.replace_boxed(v) if isinstance(
      box, nn.LogicallyPartitioned) else v, boxed, values,
      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _load_teacher(cfg, dtype: str):
  """(architecture, params as device arrays, tokenizer, chat, stop tokens) of the teacher."""
  if cfg.pretrained:
    lm = load_pretrained_lm(cfg.pretrained)
    params = jax.tree.map(jnp.asarray, lm.params)
    return lm.config, params, lm.tokenizer, lm.chat, lm.stop_tokens
  arch = lm_config(cfg.variant)
  tokenizer = ByteTokenizer()
  if tokenizer.vocab_size > arch.vocab_size:
    raise ValueError(f"the byte tokenizer needs vocab_size >= {tokenizer.vocab_size}, "
                     f"teacher variant {cfg.variant!r} has {arch.vocab_size}")
  model = CausalLM.from_config(arch, dtype=dtype)
  params = nn.unbox(model.init(jax.random.key(cfg.seed), jnp.zeros((1, 8), jnp.int32))["params"])
  return arch, params, tokenizer, False, (tokenizer.eos_id,)


def _make_init(model: CausalLM, tx, teacher_params=None, layers: tuple[int, ...] = ()):
  def init(rng: jax.Array, example_batch: Any = None) -> TrainState:
    del example_batch
    boxed = model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]
    if layers and teacher_params is not None:
      boxed = _boxed_like(boxed, copy_teacher_layers(teacher_params, layers, nn.unbox(boxed)))
    return TrainState.create(params=boxed, tx=tx, rng=rng)
  return init


def _no_train_step(state, batch):
  raise RuntimeError("this task only restores a distilled student; build the distill task to train")


def build(config) -> Task:
  """Builds the ``distill`` Task; the teacher is loaded (and kept on device) here, once."""
  teacher_cfg, student_cfg = options(config, "teacher"), options(config, "student")
  dtype = config.get("dtype", "float32")
  t_arch, t_params, tokenizer, chat, stops = _load_teacher(teacher_cfg, dtype)
  arch = student_config(t_arch, student_cfg)
  layers = tuple(int(i) for i in student_cfg.init_from_teacher_layers or ())
  teacher = CausalLM.from_config(t_arch, dtype=dtype)
  student = CausalLM.from_config(arch, dtype=dtype)
  tx = build_optimizer(options(config, "optimizer"), int(config.num_steps))
  temperature = float(config.get("distill_temperature", 1.0))
  ce_weight = float(config.get("ce_weight", 0.0))
  depths = tuple(int(d) for d in student_cfg.sorted_depths or ())
  if depths and check_depths(depths, arch.num_layers)[-1] != arch.num_layers:
    raise ValueError(f"student.sorted_depths {depths} must end at the student's "
                     f"{arch.num_layers} blocks (the whole student is the deepest sub-model)")
  data = config.get("data")
  if not (data and data.get("name")):
    raise ValueError("the distill task needs config.data.name (a token data set)")

  def losses(params, batch):
    tokens = batch["tokens"]  # int [B, T + 1]; optional 'token_mask' [B, T + 1], 'mask' [B]
    if tokens.ndim != 2:
      raise ValueError(f"the distill task wants batch['tokens'] [B, T + 1], got {tokens.shape}")
    mask = batch.get("token_mask")
    kv_mask = None if mask is None else mask[:, :-1]
    t_logits = jax.lax.stop_gradient(
        teacher.apply({"params": t_params}, tokens[:, :-1], kv_mask=kv_mask))
    if not depths:
      s_logits = student.apply({"params": params}, tokens[:, :-1], kv_mask=kv_mask)
      return distill_loss(s_logits, t_logits, tokens, mask, batch.get("mask"),
                          temperature=temperature, ce_weight=ce_weight)
    subs = sorted_logits(student, params, tokens[:, :-1], depths, kv_mask)
    _, aux = distill_loss(subs[-1], t_logits, tokens, mask, batch.get("mask"),
                          temperature=temperature)
    weights = token_weights(tokens, mask, batch.get("mask"))
    loss, kls = sorted_kl_loss(subs, t_logits, weights, temperature)
    count, top = jnp.maximum(weights.sum(), 1.0), jnp.argmax(t_logits, -1)
    for d, kl, sub in zip(depths, kls, subs):
      aux[f"kl_d{d}"] = kl
      aux[f"agreement_d{d}"] = ((jnp.argmax(sub, -1) == top) * weights).sum() / count
    return loss + ce_weight * aux["ce"], aux

  def train_step(state: TrainState, batch):
    state, metrics = supervised_step(state, losses, batch)
    return state, {k: v for k, v in metrics.items() if not k.endswith(("_sum", "count"))}

  def eval_step(state: TrainState, batch):
    loss, aux = losses(state.params, batch)
    keep = ("kl", "ce", "teacher_ce", "agreement", "accuracy")
    return {"loss": loss, **{k: v for k, v in aux.items() if k in keep or k.startswith(SORTED)}}

  @jax.jit
  def _sums(params, tokens, mask):  # one batch -> the sums to pool over batches
    _, aux = losses(params, {"tokens": tokens, "token_mask": mask})
    return {k: aux[k] for k in ("kl_sum", "agree_sum", "count")} | {
        "ce_sum": aux["ce"] * aux["count"], "teacher_ce_sum": aux["teacher_ce"] * aux["count"]
    } | {f"{k}_sum": v * aux["count"] for k, v in aux.items() if k.startswith(SORTED)}

  def _pooled(params, batches, prefix: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for tokens, mask in batches:
      for k, v in jax.device_get(_sums(params, tokens, mask)).items():
        total[k] = total.get(k, 0.0) + float(v)
    n = max(total.get("count", 0.0), 1.0)
    return {f"{prefix}/kl": total["kl_sum"] / n, f"{prefix}/agreement": total["agree_sum"] / n,
            f"{prefix}/ce": total["ce_sum"] / n,
            f"{prefix}/teacher_ce": total["teacher_ce_sum"] / n,
            f"{prefix}/tokens": total["count"]} | {
                f"{prefix}/{k[:-4]}": v / n for k, v in total.items() if k.startswith(SORTED)}

  def _text_windows():
    path = config.get("eval_text_file") or DEFAULT_EVAL_TEXT
    with open(path, encoding="utf-8") as f:
      ids = tokenizer.encode(f.read())
    window = min(int(config.get("eval_seq_len", 128)), t_arch.max_len - 1)
    starts = range(0, max(len(ids) - 1, 1), window)
    tokens = np.zeros((len(starts), window + 1), np.int32)
    mask = np.zeros(tokens.shape, bool)
    for r, s in enumerate(starts):
      chunk = ids[s:s + window + 1]
      tokens[r, :len(chunk)], mask[r, :len(chunk)] = chunk, True
    yield tokens, mask

  def _test_batches():
    it = split_iterator(config.data, config.get("eval_split", "test"), train=False,
                        batch_size=config.get("eval_batch_size", config.batch_size),
                        seed=config.seed)
    for i, b in enumerate(it):
      if i >= int(config.get("eval_max_batches", 8)):
        break
      tokens = np.asarray(b["tokens"])
      yield tokens, np.broadcast_to(np.asarray(b["mask"])[:, None], tokens.shape)

  def heldout(state: TrainState) -> dict[str, float]:
    params = nn.unbox(state.params)
    return _pooled(params, _text_windows(), "text") | _pooled(params, _test_batches(), "heldout")

  report, evaluate = recorded_heldout(heldout, STUDENT_FILE, config,
                                      {"student": dataclasses.asdict(arch)})

  def sample(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    prompt = config.get("prompt", "def fibonacci(n):")
    ids = tokenizer.encode(chatml(prompt) if chat and config.get("chat", False) else prompt)
    n = int(config.get("max_new_tokens", 32))
    tokens = jnp.asarray([ids], jnp.int32)
    out = {}
    for name, model, params in (("student", student, nn.unbox(state.params)),
                                ("teacher", teacher, t_params)):
      gen, stats = generate(jax.random.key(0), ModelStep(model), params,
                            init_cache(model, 1, len(ids) + n), tokens, jnp.ones_like(tokens, bool),
                            max_new_tokens=n, stop_tokens=stops, greedy=True)
      out[name] = np.asarray(gen)[0, len(ids):len(ids) + int(stats["num_generated"][0])]
    same = 0
    while same < min(len(out["student"]), len(out["teacher"])) and (
        out["student"][same] == out["teacher"][same]):
      same += 1
    text = {k: tokenizer.decode(v, skip_special_tokens=True) for k, v in out.items()}
    print(f"{prompt}\n[student] {text['student']}\n[teacher] {text['teacher']}\n"
          f"first {same} greedy tokens agree")
    if workdir:
      paths.write_text(paths.join(workdir, "sample.txt"), text["student"])
    return {"prompt": prompt, "completion": text["student"], "teacher": text["teacher"],
            "agreeing_prefix": same}

  return Task(init=_make_init(student, tx, t_params, layers), train_step=train_step,
              eval_step=eval_step, report=report, sample=sample, evaluate=evaluate)


def recorded_heldout(heldout, record_file: str, config, record: dict):
  """A task's ``report`` (writes ``<workdir>/<record_file>``: ``record``, the step and the
  config, what a restore reads; then scores ``heldout(state)``) and ``evaluate`` (prints it)."""
  def report(state: TrainState, workdir: str, step: int) -> dict[str, float]:
    if jax.process_index() == 0:
      out = {**record, "step": int(step), "config": json.loads(config.to_json())}
      paths.write_text(paths.join(workdir, record_file), json.dumps(out, indent=1))
    return heldout(state)

  def evaluate(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    del workdir
    result = heldout(state)
    print(" ".join(f"{k}={v:.4f}" for k, v in result.items()))
    return result
  return report, evaluate


def student_record(workdir: str, config_path: str | None = None
                   ) -> tuple[LMConfig, ml_collections.ConfigDict]:
  """(architecture, config) of the ``distill`` run in ``workdir``, without reading a checkpoint.

  Both come from ``<workdir>/distill_student.json`` (written by the run's report); a run without
  it needs ``config_path`` (``'configs/x.py[:args]'``), and then a student initialised from
  teacher layers loads the teacher once to learn its architecture. Callers check the architecture
  (a vocabulary that must match, say) here, before :func:`restore_student` compiles anything.
  """
  record_path = paths.join(workdir, STUDENT_FILE)
  if paths.exists(record_path):
    record = json.loads(paths.read_text(record_path))
    config = ml_collections.ConfigDict(record["config"])
    arch = LMConfig(**record["student"])
  elif config_path:
    config = load_config(config_path)
    t = options(config, "teacher")
    t_arch = load_pretrained_lm(t.pretrained).config if t.pretrained else lm_config(t.variant)
    arch = student_config(t_arch, options(config, "student"))
  else:
    raise FileNotFoundError(f"{record_path} does not exist (the run never reached a report); pass "
                            "the run's config_path")
  if config.get("task") != "distill":
    raise ValueError(f"{workdir!r} is a {config.get('task')!r} run, not a distill run")
  return arch, config


def restore_student(workdir: str, config_path: str | None = None) -> tuple[LMConfig, Any]:
  """(architecture, params as numpy) of the latest checkpoint of a ``distill`` run in ``workdir``
  (see :func:`student_record`), read by the loop's own restore: no teacher, no data."""
  arch, config = student_record(workdir, config_path)
  config.async_checkpoint = False
  config.init_from = ""
  model = CausalLM.from_config(arch, dtype=config.get("dtype", "float32"))
  tx = build_optimizer(options(config, "optimizer"), int(config.num_steps))
  task = Task(init=_make_init(model, tx), train_step=_no_train_step, needs_data=False)
  state, _ = loop.restore_state(config, os.fspath(workdir), task)
  return arch, jax.device_get(nn.unbox(state.params))


TASKS.register("distill", build)
