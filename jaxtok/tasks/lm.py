"""The ``lm`` task: a Llama-family causal LM -- pretrained (SmolLM2) or random -- to sample, score
and fine-tune.

Training is next-token cross-entropy, -1/N sum_t log p(x_{t+1} | x_{<=t}), on ``batch['tokens']``
[B, T] (optional ``'token_mask'`` [B, T] marks real tokens, the pipeline's ``'mask'`` [B] real
rows). ``sample`` completes ``config.prompt`` (ChatML for instruct models); ``evaluate`` reports
the perplexity exp(mean NLL) of ``config.eval_text_file``, by default
``jaxtok/pretrained/data/passage.txt`` (public domain: Lincoln's Gettysburg Address, Bliss copy,
1863, and the opening of Jane Austen's "Pride and Prejudice", 1813).

Config fields (see ``configs/lm/smollm2.py``): ``model.variant`` (a ``LM_VARIANTS`` name),
``model.pretrained`` (None, a ``PRETRAINED_LMS`` name or a path), ``dtype`` (float32, bfloat16,
or int8 for eval/sample: W8A8, jaxtok/nn/int8.py), ``weights`` (float32, or bfloat16 for
eval/sample: weight matrices stored in bf16, float32 accumulation, jaxtok/nn/bf16.py), ``prompt``,
``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``eval_text_file``,
``eval_seq_len``, ``seed``, ``watermark`` (None, or ``key``/``gamma``/``delta`` of a KGW green-list
watermark applied while sampling, whose z-test on the completion is reported: docs/rl_watermark.md),
and for fine-tuning ``data.name`` (a token data set), ``lr``, ``weight_decay``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok import paths
from jaxtok.generators.causal_lm import DTYPES, CausalLM, decode_layout, init_cache, lm_config
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import bf16, int8
from jaxtok.pretrained.chat import chatml
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.rl.watermark import KGWWatermark, detect
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import boxed_init
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step
from jaxtok.train.validate import UserError, check_choice, check_context, check_exists, check_int

DEFAULT_EVAL_TEXT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pretrained", "data",
                                 "passage.txt")


def next_token_loss(
    logits: jnp.ndarray,  # float [B, T, V] for inputs tokens[:, :-1]
    tokens: jnp.ndarray,  # int [B, T + 1]
    mask: jnp.ndarray | None = None,  # bool [B, T + 1]; True on real tokens
    row_mask: jnp.ndarray | None = None,  # bool [B]; False on padding rows of an eval batch
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Mean next-token cross-entropy over real targets, and (nll_sum, count, accuracy) metrics."""
  targets = tokens[:, 1:]
  weights = jnp.ones(targets.shape, jnp.float32) if mask is None else (
      jnp.logical_and(mask[:, 1:], mask[:, :-1]).astype(jnp.float32))
  if row_mask is not None:
    weights = weights * row_mask[:, None].astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  count = jnp.maximum(weights.sum(), 1.0)
  loss = (nll * weights).sum() / count
  accuracy = ((jnp.argmax(logits, -1) == targets) * weights).sum() / count
  return loss, {"nll_sum": (nll * weights).sum(), "count": weights.sum(), "accuracy": accuracy}


def check_options(config, *, needs_data: bool) -> None:
  """What the lm task reads, checked before any weights are loaded."""
  check_choice("dtype", config.get("dtype", "float32"), sorted(DTYPES) + ["int8"])
  if config.get("dtype") == "int8" and needs_data:
    raise UserError("config.dtype='int8' (W8A8, jaxtok/nn/int8.py) is for --mode=eval and "
                    "--mode=sample; fine-tune in float32 or bfloat16")
  if config.get("weights", "float32") == "bfloat16" and (needs_data or
                                                          config.get("dtype") == "int8"):
    raise UserError("config.weights='bfloat16' (jaxtok/nn/bf16.py) stores the weights in bf16 for "
                    "--mode=eval and --mode=sample of a float32 or bfloat16 model; it does not "
                    "train and does not combine with dtype='int8'")
  check_choice("weights", config.get("weights", "float32"), ["bfloat16", "float32"])
  check_int("max_new_tokens", config.get("max_new_tokens", 64), 1)
  check_int("eval_seq_len", config.get("eval_seq_len", 1024), 1)
  temperature, top_k, top_p = (config.get("temperature", 0.0), config.get("top_k", 0),
                               config.get("top_p", 1.0))
  if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
    raise UserError(f"config.temperature={temperature}, top_k={top_k}, top_p={top_p}: need "
                    "temperature >= 0 (0 = greedy), top_k >= 0 (0 = off), 0 < top_p <= 1")
  if config.get("eval_text_file"):
    check_exists("eval_text_file", config.eval_text_file)
  if needs_data and "seq_len" in config.data:
    check_int("data.seq_len", config.data.seq_len, 2, " (inputs and targets: T + 1 tokens)")


def prompt_ids(config, tokenizer, chat: bool, max_len: int, model: str) -> list[int]:
  """``config.prompt`` as token ids (ChatML for chat models), checked against the context: the KV
  cache holds the prompt and ``max_new_tokens``."""
  text = config.get("prompt", "The capital of France is")
  ids = tokenizer.encode(chatml(text) if chat else text)
  if not ids:
    raise UserError("config.prompt is empty: generation needs at least one prompt token")
  check_context("config.prompt", len(ids), int(config.get("max_new_tokens", 64)), max_len, model)
  return ids


def build(config) -> Task:
  """Builds the ``lm`` Task; pretrained weights are read on the host (numpy) once, here."""
  model_cfg = config.model
  pretrained = model_cfg.get("pretrained")
  dtype = config.get("dtype", "float32")
  data = config.get("data")
  needs_data = bool(data and data.get("name"))
  check_options(config, needs_data=needs_data)
  if pretrained:
    lm = load_pretrained_lm(pretrained)
    arch, tokenizer, chat, stops = lm.config, lm.tokenizer, lm.chat, lm.stop_tokens
  else:
    lm = None
    arch, tokenizer = lm_config(model_cfg.get("variant", "tiny")), ByteTokenizer()
    chat, stops = bool(model_cfg.get("chat", False)), (tokenizer.eos_id,)
    if tokenizer.vocab_size > arch.vocab_size:
      raise ValueError(f"the byte tokenizer needs vocab_size >= {tokenizer.vocab_size}, "
                       f"variant {model_cfg.get('variant')!r} has {arch.vocab_size}")
  model_name = repr(pretrained) if pretrained else f"variant {model_cfg.get('variant', 'tiny')!r}"
  sample_ids = prompt_ids(config, tokenizer, chat, arch.max_len, model_name)
  if needs_data and "seq_len" in data and data.seq_len - 1 > arch.max_len:
    raise UserError(f"config.data.seq_len={data.seq_len}: T + 1 tokens with T = {data.seq_len - 1} "
                    f"> {arch.max_len}, the context (max_len) of {model_name}")
  wm_cfg = config.get("watermark")
  watermark = KGWWatermark(**{k: wm_cfg[k] for k in ("key", "gamma", "delta") if k in wm_cfg}) if (
      wm_cfg) else None  # built here: a bad gamma / delta / key fails before anything compiles
  # int8: the float32 model, its dense layers run W8A8 on weights quantised when evaluated.
  int8_mode = dtype == "int8"
  bf16_weights = config.get("weights", "float32") == "bfloat16"
  model = CausalLM.from_config(arch, dtype="float32" if int8_mode else dtype)
  tx = optax.adamw(config.get("lr", 1e-4), weight_decay=config.get("weight_decay", 0.0)) if (
      needs_data) else optax.identity()

  def variables_of(params):
    """What ``model.apply`` takes: {'params'} or the int8 variables."""
    params = nn.unbox(params)
    if int8_mode:
      return int8.quantize(model, params, jnp.zeros((1, 8), jnp.int32))
    return {"params": bf16.cast(params) if bf16_weights else params}

  def forward(variables, tokens, **kwargs):
    # bf16 weights multiply with float32 accumulation; float32 ones are left to Flax.
    with int8.apply_int8() if int8_mode else bf16.apply_bf16():
      return model.apply(variables, tokens, **kwargs)

  def init(rng: jax.Array, example_batch: Any = None) -> TrainState:
    del example_batch
    params = boxed_init(model, rng, jnp.zeros((1, 8), jnp.int32),
                        None if lm is None else lm.params)
    return TrainState.create(params=params, tx=tx, rng=rng)

  def loss_fn(params, batch):
    # batch: 'tokens' int [B, T + 1]; optional 'token_mask' bool [B, T + 1] (real tokens) and
    # the data pipeline's 'mask' bool [B] (real rows).
    tokens = batch["tokens"]
    if tokens.ndim != 2:
      raise ValueError(f"the lm task wants batch['tokens'] [B, T + 1], got {tokens.shape}")
    mask = batch.get("token_mask")
    variables = params if int8_mode else {"params": params}  # int8: already the variables
    logits = forward(variables, tokens[:, :-1], kv_mask=None if mask is None else mask[:, :-1])
    return next_token_loss(logits, tokens, mask, batch.get("mask"))

  def train_step(state: TrainState, batch):
    return supervised_step(state, loss_fn, batch)

  def eval_step(state: TrainState, batch):
    loss, aux = loss_fn(state.params, batch)
    return {"loss": loss, "perplexity": jnp.exp(loss), "accuracy": aux["accuracy"]}

  def sample(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    # Generation reads every weight once per token: the fused layout reads fewer, larger ones.
    d_model, params = decode_layout(model, state.params)
    if int8_mode:
      params = int8.quantize(d_model, params, jnp.zeros((1, 8), jnp.int32))
    elif bf16_weights:
      params = bf16.cast(params)
    prompt = config.get("prompt", "The capital of France is")
    text = chatml(prompt) if chat else prompt
    n = int(config.get("max_new_tokens", 64))
    temperature = float(config.get("temperature", 0.0))
    tokens = jnp.asarray([sample_ids], jnp.int32)
    cache = init_cache(d_model, 1, len(sample_ids) + n)  # its one-time trace is not generation
    start = time.perf_counter()  # `seconds` includes compiling `generate` (one call)
    out, stats = generate(
        jax.random.key(int(config.get("seed", 0))), ModelStep(d_model, int8=int8_mode), params,
        cache, tokens, jnp.ones_like(tokens, bool),
        max_new_tokens=n, temperature=temperature if temperature > 0 else 1.0,
        top_k=int(config.get("top_k", 0)), top_p=float(config.get("top_p", 1.0)),
        stop_tokens=stops, greedy=temperature <= 0, logits_processor=watermark)
    out = np.asarray(out)
    seconds = time.perf_counter() - start
    count = int(stats["num_generated"][0])
    p = len(sample_ids)
    completion = tokenizer.decode(out[0, p:p + count], skip_special_tokens=True)
    print(f"{text}{completion}" if not chat else f"[user] {prompt}\n[assistant] {completion}")
    if workdir:
      paths.write_text(paths.join(workdir, "sample.txt"), completion)
    result = {"prompt": prompt, "completion": completion, "tokens_generated": count,
              "forward_passes": int(stats["forward_passes"]), "seconds": seconds}
    if watermark is not None:  # the detector's view of the completion (each token after the 1st
      # prompt token scored against its predecessor, as generation saw it)
      scored = np.zeros(out[:, :p + count].shape, bool)
      scored[0, p:p + count] = True
      d = detect(out[:, :p + count], scored, key=watermark.key, gamma=watermark.gamma)
      z = float(d["z"][0])  # p in float64 here: float32 underflows to 0 beyond z ~ 13
      result.update({"watermark_z": z, "watermark_p_value": 0.5 * math.erfc(z / math.sqrt(2)),
                     "green_fraction": int(d["num_green"][0]) / max(count, 1)})
      print(f"watermark: z = {result['watermark_z']:.2f}, p = {result['watermark_p_value']:.2e}, "
            f"green {result['green_fraction']:.2f} of {count} tokens (gamma {watermark.gamma})")
    return result

  @jax.jit
  def _window_nll(params, tokens, mask):  # [1, L + 1] -> (nll sum, count)
    _, aux = loss_fn(params, {"tokens": tokens, "token_mask": mask})
    return aux["nll_sum"], aux["count"]

  def evaluate(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    del workdir
    path = config.get("eval_text_file") or DEFAULT_EVAL_TEXT
    if not paths.exists(path):  # local, shared or gs://
      raise FileNotFoundError(f"eval_text_file {path!r} does not exist")
    ids = tokenizer.encode(paths.read_text(path))
    if len(ids) < 2:
      raise UserError(f"config.eval_text_file={path!r} has {len(ids)} tokens; perplexity needs "
                      "at least 2")
    # Non-overlapping windows of eval_seq_len targets; the last one is right-padded and masked.
    window = min(int(config.get("eval_seq_len", 1024)), arch.max_len - 1)
    variables = variables_of(state.params)
    params = variables if int8_mode else variables["params"]
    total, count = 0.0, 0.0
    for start in range(0, len(ids) - 1, window):
      chunk = ids[start:start + window + 1]
      tokens = np.zeros((1, window + 1), np.int32)
      mask = np.zeros((1, window + 1), bool)
      tokens[0, :len(chunk)], mask[0, :len(chunk)] = chunk, True
      nll, n = _window_nll(params, jnp.asarray(tokens), jnp.asarray(mask))
      total, count = total + float(nll), count + float(n)
    result = {"perplexity": float(np.exp(total / count)), "nll_per_token": total / count,
              "tokens": int(count), "eval_text_file": path}
    print(f"perplexity {result['perplexity']:.3f} over {result['tokens']} tokens of {path}")
    return result

  return Task(init=init, train_step=train_step, eval_step=eval_step, sample=sample,
              evaluate=evaluate, needs_data=needs_data)


TASKS.register("lm", build)
