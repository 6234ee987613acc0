r"""The ``word_lm`` task: Learn Your Tokens' word-pooled LM against a BPE LM and a byte LM.

"Learn Your Tokens: Word-Pooled Tokenization for Language Modeling" (Thawani et al., 2023) at CPU
scale. One run trains one of three models from scratch on the same text and scores held-out
bits per byte, on clean text and on text with spelling noise:

* ``word_pooled``: ``jaxtok.generators.word_pooled.WordPooledLM`` over words of bytes;
* ``bpe``: a ``CausalLM`` over a byte-level BPE trained on the training split (HF tokenizers);
* ``byte``: a ``CausalLM`` over UTF-8 bytes.

Every model sees the same pieces of text (``max_words`` words each, ``words.chunk_words``) in the
same order, one step = one batch of pieces; every piece is scored on its own from a start state.
Bits per byte = (nats summed over all targets of all pieces) / ln 2 / (UTF-8 bytes of the
pieces): for the byte and BPE LMs the targets are the pieces' bytes / tokens (the start token is
an input only, so a uniform byte LM costs exactly 8 bits a byte); for the word model they are each
word's bytes and its end-of-word. Corpus (``corpus``): ``docstrings`` (English prose: the
docstrings of the Python standard library), ``python`` (the library's source), both split by
file as ``jaxtok.data.python_source`` does, or ``files`` (``train_files`` / ``eval_files``
globs, strict UTF-8).

    python -m jaxtok.main --config=configs/text/learn_your_tokens.py:smoke,model=bpe \
        --workdir=/tmp/lyt --mode=eval

Results go to ``word_lm_<model>.json`` in the workdir (``--mode=eval`` does everything).
"""

from __future__ import annotations

import ast
import glob
import json
import math
import sysconfig
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.data import python_source as ps
from jaxtok.generators.causal_lm import CausalLM, LMConfig, count_params
from jaxtok.generators.word_pooled import WordPooledLM, word_loss
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, study_task
from jaxtok.tasks.lm import next_token_loss
from jaxtok.tokenizers.text import words as wd
from jaxtok.tokenizers.text.trainers import train_bpe
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

MODELS = ("word_pooled", "bpe", "byte")
CORPORA = ("docstrings", "python", "files")
DEFAULTS = dict(
    model="word_pooled", corpus="docstrings", train_files="", eval_files="",
    train_bytes=800_000, eval_bytes=20_000, max_words=32, max_bytes=16, bpe_vocab=2048,
    noise_rates="0.05,0.1", noise_kinds="swap,delete,insert,substitute",
    steps=1000, batch_size=16, eval_batch=32, width_multiple=64,
    dim=128, local_dim=96, num_heads=4, layers=4, encoder_layers=1, decoder_layers=1,
    byte_layers=5, bpe_layers=4, mlp_ratio=4,
    lr=1e-3, warmup_steps=100, grad_clip=1.0, b1=0.9, b2=0.95, weight_decay=0.1,
    final_lr_fraction=0.1, log_every=100)

Batch = dict[str, np.ndarray]


def check_options(o) -> None:
  if o.model not in MODELS:
    raise ValueError(f"word_lm.model={o.model!r}; valid: {', '.join(MODELS)}")
  if o.corpus not in CORPORA:
    raise ValueError(f"word_lm.corpus={o.corpus!r}; valid: {', '.join(CORPORA)}")
  if o.corpus == "files" and not (o.train_files and o.eval_files):
    raise ValueError("word_lm.corpus='files' needs train_files and eval_files (globs)")
  for key in ("max_words", "max_bytes", "steps", "batch_size", "dim", "local_dim", "layers"):
    if int(o[key]) < 1:
      raise ValueError(f"word_lm.{key}={o[key]} must be >= 1")
  if int(o.bpe_vocab) <= 256:
    raise ValueError(f"word_lm.bpe_vocab={o.bpe_vocab} must exceed the 256 byte tokens")
  for r in noise_rates(o):
    if not 0.0 < r <= 1.0:
      raise ValueError(f"word_lm.noise_rates: {r} is not in (0, 1]")


def noise_rates(o) -> list[float]:
  return [float(x) for x in str(o.noise_rates).split(",") if x.strip()]


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

def docstrings(source: str, path: str) -> list[str]:
  """The module, class and function docstrings of one Python file (none if it does not parse)."""
  try:
    tree = ast.parse(source, filename=path)
  except SyntaxError:
    return []
  kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
  return [d + "\n\n" for n in ast.walk(tree) if isinstance(n, kinds)
          if (d := ast.get_docstring(n))]


def _take(texts: Sequence[str], budget: int) -> list[str]:
  out, n = [], 0
  for t in texts:
    if n >= budget:
      break
    out.append(t[:budget - n])
    n += len(out[-1])
  return out


def load_texts(o) -> tuple[list[str], list[str]]:
  """(train texts, held-out texts): whole files (or their docstrings), at most train_bytes /
  eval_bytes characters; an empty side raises."""
  if o.corpus == "files":
    sides = {}
    for side, pattern in (("train", o.train_files), ("test", o.eval_files)):
      found = sorted(p for g in str(pattern).split(",") if g.strip() for p in glob.glob(g.strip()))
      if not found:
        raise FileNotFoundError(f"word_lm: no file matches {pattern!r} ({side} side)")
      sides[side] = [wd.read_utf8(p) for p in found]
  else:
    root = sysconfig.get_paths()["stdlib"]
    sides = {"train": [], "test": []}
    for path in ps.corpus_files(root):
      text = wd.read_utf8(path)
      side = sides[ps.split_of(path, root)]
      side.extend(docstrings(text, path) if o.corpus == "docstrings" else [text])
  train = _take(sides["train"], int(o.train_bytes))
  test = _take(sides["test"], int(o.eval_bytes))
  for side, texts in (("train", train), ("held-out", test)):
    if not any(t.strip() for t in texts):
      raise ValueError(f"word_lm: the {side} corpus ({o.corpus}) is empty")
  return train, test


def pieces(texts: Sequence[str], max_words: int, max_bytes: int) -> list[str]:
  return [p for t in texts for p in wd.chunk_words(t, max_words, max_bytes) if p]


# --------------------------------------------------------------------------------------------
# The three models behind one interface
# --------------------------------------------------------------------------------------------

class Arm:
  """A model, how a list of texts becomes its batch, and its summed-nats loss."""

  def __init__(self, model: nn.Module, batch_fn: Callable[[Sequence[str]], Batch],
               loss_fn: Callable[[Any, dict], tuple[jax.Array, dict]]):
    self.model, self.batch_fn, self.loss_fn = model, batch_fn, loss_fn

  def init(self, rng: jax.Array, texts: Sequence[str]):
    batch = self.batch_fn(texts)
    inputs = {k: v for k, v in batch.items() if k in ("bytes", "lengths", "tokens")}
    if "tokens" in inputs:
      return nn.unbox(self.model.init(rng, jnp.asarray(inputs["tokens"][:, :-1]))["params"])
    return nn.unbox(self.model.init(rng, jnp.asarray(inputs["bytes"]),
                                    jnp.asarray(inputs["lengths"]))["params"])


def token_arm(model: CausalLM, encode: Callable[[str], list[int]], start: int, outputs: int,
              multiple: int) -> Arm:
  """A causal LM over ``[start] + encode(text)``; only the first ``outputs`` ids are targets
  (the start id is an input only), rows right-padded to a multiple of ``multiple``."""

  def batch_fn(texts):
    ids = [encode(t) for t in texts]
    width = -(-(max(len(x) for x in ids) + 1) // multiple) * multiple
    tokens = np.zeros((len(ids), width), np.int32)
    mask = np.zeros((len(ids), width), bool)
    for r, seq in enumerate(ids):
      tokens[r, 0], tokens[r, 1:len(seq) + 1] = start, seq
      mask[r, :len(seq) + 1] = True
    return {"tokens": tokens, "mask": mask}

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["tokens"][:, :-1],
                         kv_mask=batch["mask"][:, :-1])
    return next_token_loss(logits[..., :outputs], batch["tokens"], batch["mask"])

  return Arm(model, batch_fn, loss_fn)


def word_arm(model: WordPooledLM, max_words: int, max_bytes: int) -> Arm:
  def batch_fn(texts):
    packed = wd.pack_words(texts, max_words, max_bytes)
    targets, weights = wd.word_targets(packed["bytes"], packed["lengths"])
    return {**packed, "targets": targets.astype(np.int32), "weights": weights}

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["bytes"], batch["lengths"])
    return word_loss(logits, batch["targets"], batch["weights"])

  return Arm(model, batch_fn, loss_fn)


def make_arm(o, train_texts: Sequence[str]) -> tuple[Arm, dict[str, Any]]:
  """The arm of ``o.model`` (the BPE arm trains its tokenizer on ``train_texts``) and facts."""
  heads, ratio = int(o.num_heads), int(o.mlp_ratio)

  def lm(vocab: int, layers: int) -> CausalLM:
    return CausalLM.from_config(LMConfig(
        vocab_size=vocab, dim=int(o.dim), num_layers=layers, num_heads=heads,
        num_kv_heads=heads, mlp_dim=ratio * int(o.dim), max_len=int(o.max_words * o.max_bytes)))

  if o.model == "word_pooled":
    model = WordPooledLM(dim=int(o.dim), local_dim=int(o.local_dim), num_heads=heads,
                         backbone_layers=int(o.layers), encoder_layers=int(o.encoder_layers),
                         decoder_layers=int(o.decoder_layers), mlp_ratio=ratio)
    return word_arm(model, int(o.max_words), int(o.max_bytes)), {}
  if o.model == "byte":
    return token_arm(lm(257, int(o.byte_layers)), lambda t: list(t.encode("utf-8")), 256, 256,
                     int(o.width_multiple)), {}
  tok = train_bpe(train_texts, int(o.bpe_vocab))
  v = tok.vocab_size
  return token_arm(lm(v + 1, int(o.bpe_layers)), tok.encode, v, v, int(o.width_multiple)), {
      "bpe_vocab": v}


# --------------------------------------------------------------------------------------------
# Training and scoring
# --------------------------------------------------------------------------------------------

def _device(batch: Batch) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v) for k, v in batch.items()}


def train(arm: Arm, params, texts: Sequence[str], tx: optax.GradientTransformation, *,
          steps: int, batch_size: int, seed: int, log_every: int = 0, log=print):
  """``steps`` supervised steps on random batches of ``texts`` (the same rows for every arm with
  the same seed). Returns (params, loss per step, seconds per step after the first, FLOPs per
  byte of the compiled steps)."""
  state = TrainState.create(params=params, tx=tx, rng=jax.random.key(seed))
  step = jax.jit(lambda s, b: supervised_step(s, arm.loss_fn, b))
  rng = np.random.default_rng(seed)
  nbytes = np.array([len(t.encode("utf-8")) for t in texts])
  losses, times, flops, seen, costs = [], [], 0.0, 0, {}
  for i in range(steps):
    rows = rng.choice(len(texts), batch_size, replace=len(texts) < batch_size)
    batch = _device(arm.batch_fn([texts[r] for r in rows]))
    shape = tuple(sorted((k, v.shape) for k, v in batch.items()))
    if shape not in costs:  # one compile per padded width; XLA counts its FLOPs
      compiled = step.lower(state, batch).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      costs[shape] = (compiled, float((cost or {}).get("flops", math.nan)))
    compiled, cost = costs[shape]
    flops, seen = flops + cost, seen + int(nbytes[rows].sum())
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    losses.append(float(metrics["loss"]))
    if i:
      times.append(time.perf_counter() - start)
    if log and log_every and (i == 0 or (i + 1) % log_every == 0 or i + 1 == steps):
      log(f"  step {i + 1}/{steps}: loss {losses[-1]:.4f}")
  return state.params, losses, float(np.median(times)) if times else math.nan, flops / seen


def bits_per_byte(arm: Arm, params, texts: Sequence[str], batch_size: int) -> dict[str, float]:
  """Held-out bits per byte of ``texts`` (each scored on its own)."""
  if not texts:
    raise ValueError("no held-out text to score")
  score = jax.jit(lambda p, b: arm.loss_fn(p, b)[1]["nll_sum"])
  nats = 0.0
  for s in range(0, len(texts), batch_size):
    nats += float(score(params, _device(arm.batch_fn(texts[s:s + batch_size]))))
  n = sum(len(t.encode("utf-8")) for t in texts)
  return {"bits_per_byte": nats / math.log(2) / n, "bytes": n, "pieces": len(texts)}


def run(o, workdir: str | None, seed: int = 0, log=print) -> dict[str, Any]:
  train_texts, eval_texts = load_texts(o)
  w, b = int(o.max_words), int(o.max_bytes)
  train_pieces = pieces(train_texts, w, b)
  arm, facts = make_arm(o, train_texts)
  params = arm.init(jax.random.key(seed), train_pieces[:2])
  n_params = count_params(params)
  log(f"word_lm {o.model}: {n_params:,} parameters, {len(train_pieces)} training pieces")
  tx = build_optimizer(o, int(o.steps))
  params, losses, step_s, flops = train(
      arm, params, train_pieces, tx, steps=int(o.steps), batch_size=int(o.batch_size),
      seed=seed, log_every=int(o.log_every), log=log)
  kinds = tuple(k.strip() for k in str(o.noise_kinds).split(",") if k.strip())
  results = {"model": o.model, "params": n_params, "steps": int(o.steps), **facts,
             "seconds_per_step": step_s, "flops_per_train_byte": flops,
             "train_loss_first_last": [losses[0], losses[-1]], "eval": {}}
  for rate in [0.0, *noise_rates(o)]:
    noisy, edits = zip(*(wd.spelling_noise(t, rate, seed + i, kinds)
                         for i, t in enumerate(eval_texts)), strict=True)
    row = bits_per_byte(arm, params, pieces(noisy, w, b), int(o.eval_batch))
    row["edits"] = int(sum(edits))
    results["eval"][f"{rate:g}"] = row
    log(f"  noise {rate:g}: {row['bits_per_byte']:.4f} bits/byte over {row['bytes']} bytes")
  if workdir:
    paths.makedirs(workdir)
    paths.write_text(paths.join(workdir, f"word_lm_{o.model}.json"),
                     json.dumps(results, indent=1, sort_keys=True))
  return results


def build(config) -> Task:
  """The ``word_lm`` Task (``--mode=eval`` trains and scores); bad options fail here."""
  o = with_defaults(config, "word_lm", DEFAULTS)
  check_options(o)

  def summarise(workdir: str | None) -> dict[str, Any]:
    results = run(o, workdir, seed=int(config.get("seed", 0)))
    summary = {"params": results["params"], "seconds_per_step": results["seconds_per_step"],
               "flops_per_train_byte": results["flops_per_train_byte"]}
    for rate, row in results["eval"].items():
      summary[f"noise_{rate}/bits_per_byte"] = row["bits_per_byte"]
    return summary

  return study_task("word_lm trains and scores inside evaluate", summarise)


TASKS.register("word_lm", build)
