"""The ``token_adapt`` task: transplant a new tokenizer into a pretrained LM (TokenAdapt).

"Achieving Tokenizer Flexibility in Language Models through Heuristic Adaptation and Supertoken
Learning" (Sharthak et al., 2025) at CPU scale: SmolLM2-135M (stand-in for Llama-3.2-3B) gets a
new byte-level BPE (or supertoken) vocabulary trained on the Python standard library's source;
the new embedding rows are initialised by each arm of ``jaxtok.tokenizers.text.transplant``
(shared tokens copied, the rest random / mean / ReTok / local / hybrid / hybrid with theta, phi =
MiniLM-L6, stand-in for nomic-embed) and scored as held-out bits per byte against the untouched
model, zero-shot and after embedding-only tuning. Separately, supertokens are compared with
whitespace-pre-tokenized BPE of the same size: bytes per token and exact round trips.

Nothing here runs the training loop: ``--mode=eval``'s ``evaluate`` does everything and writes
``token_adapt.json`` and ``token_adapt.md`` to the workdir.

    python -m jaxtok.main --config=configs/text/token_adapt.py:smoke --workdir=/tmp/ta --mode=eval

Config (``config.adapt``, see ``configs/text/token_adapt.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sysconfig
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.data import python_source as ps
from jaxtok.generators.causal_lm import CausalLM, lm_config
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.pretrained.minilm import load_minilm
from jaxtok.tasks import token_adapt_lm as tl
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import study_task
from jaxtok.tasks.token_adapt_report import report_markdown
from jaxtok.tokenizers.text import supertokens as st
from jaxtok.tokenizers.text import transplant as tp
from jaxtok.tokenizers.text.trainers import train_bpe

DEFAULTS = dict(base="smollm2-135m", old_vocab_size=383, tokenizer="bpe", vocab_size=16384,
                train_bytes=4_000_000, eval_bytes=49_152, segment_bytes=1024,
                arms="random,mean,retok,local,hybrid,hybrid_theta", tau=0.6, k=3, w_g=0.3,
                theta=0.45, embedder="minilm", tune_steps=0, tune_batch=4, tune_seq_len=128,
                tune_lr=3e-4, tune_base=True, eval_batch=8, compare_supertokens=True)
ARMS = {"random": ("random", None), "mean": ("mean", None), "retok": ("retok", None),
        "local": ("local", None), "global": ("global", None), "hybrid": ("hybrid", None),
        "hybrid_theta": ("hybrid", "theta"), "local_theta": ("local", "theta")}
TOKENIZERS = ("bpe", "supertokens")
EMBEDDERS = ("minilm", "char_ngrams")
EOT = "<|endoftext|>"
RESULTS, TABLES = "token_adapt.json", "token_adapt.md"


def _names(text: str) -> list[str]:
  return [x.strip() for x in str(text).split(",") if x.strip()]


def check_options(o) -> None:
  bad = [a for a in _names(o.arms) if a not in ARMS]
  if bad or not _names(o.arms):
    raise ValueError(f"adapt.arms: unknown {bad or 'empty'}; valid: {', '.join(ARMS)}")
  if o.tokenizer not in TOKENIZERS:
    raise ValueError(f"adapt.tokenizer={o.tokenizer!r}; valid: {', '.join(TOKENIZERS)}")
  if o.embedder not in EMBEDDERS:
    raise ValueError(f"adapt.embedder={o.embedder!r}; valid: {', '.join(EMBEDDERS)}")
  if int(o.vocab_size) <= 256 or int(o.old_vocab_size) <= 256:
    raise ValueError(f"adapt.vocab_size={o.vocab_size} / old_vocab_size={o.old_vocab_size} must "
                     "exceed the 256 byte tokens")
  if not 0.0 <= float(o.w_g) <= 1.0 or float(o.tau) <= 0 or int(o.k) < 1:
    raise ValueError(f"adapt: need 0 <= w_g <= 1 (got {o.w_g}), tau > 0 ({o.tau}), k >= 1 ({o.k})")
  if int(o.tune_steps) < 0 or int(o.segment_bytes) < 16 or int(o.eval_bytes) < o.segment_bytes:
    raise ValueError(f"adapt: need tune_steps >= 0, segment_bytes >= 16, eval_bytes >= "
                     f"segment_bytes (got {o.tune_steps}, {o.segment_bytes}, {o.eval_bytes})")


def segments(text: str, size: int) -> list[str]:
  """``text`` cut after the line ending nearest past every ``size`` characters (never empty)."""
  out, start = [], 0
  while start < len(text):
    cut = text.find("\n", start + size)
    end = len(text) if cut < 0 else cut + 1
    out.append(text[start:end])
    start = end
  return out


def load_corpus(o) -> tuple[list[str], list[str]]:
  """(train texts up to ``train_bytes``, held-out segments totalling about ``eval_bytes``).
  Held-out segments are every j-th segment of the test files (split by file path hash)."""
  root = sysconfig.get_paths()["stdlib"]
  train, test, n = [], [], 0
  for path in ps.corpus_files(root):
    with open(path, encoding="utf-8", errors="replace") as f:
      text = f.read()
    if ps.split_of(path, root) == "test":
      test.extend(segments(text, int(o.segment_bytes)))
    elif n < int(o.train_bytes):
      train.append(text[:int(o.train_bytes) - n])
      n += len(train[-1])
  need = max(1, int(o.eval_bytes) // int(o.segment_bytes))
  step = max(1, len(test) // need)
  return train, test[::step][:need]


@dataclasses.dataclass
class Base:
  """The old model: architecture, plain params, token bytes, encode and its end-of-text id."""

  model: CausalLM
  params: dict
  tokens: list[bytes]
  encode: Any
  split: Any
  eot: int
  candidates: np.ndarray
  name: str


def load_base(o, train: list[str], seed: int) -> Base:
  """SmolLM2 from its GGUF, or (``base='tiny'``) a random tiny LM whose old tokenizer is a BPE of
  ``old_vocab_size`` trained on the same text, for smoke runs."""
  if o.base == "tiny":
    old = train_bpe(train, int(o.old_vocab_size))
    tokens = [old.token_bytes(i) for i in range(old.vocab_size)] + [EOT.encode()]
    cfg = dataclasses.replace(lm_config("tiny"), vocab_size=len(tokens))
    model = CausalLM.from_config(cfg)
    params = tl.plain_params(jax.jit(model.init)(jax.random.key(seed),
                                                 jnp.zeros((1, 8), jnp.int32))["params"])
    cand = np.ones(len(tokens), bool)
    cand[-1] = False  # the end-of-text token is no neighbour of a text token
    return Base(model, params, tokens, old.encode, lambda b: _split(old.tokenizer, b),
                len(tokens) - 1, cand, "tiny (random)")
  lm = load_pretrained_lm(o.base)
  hf = lm.tokenizer.tokenizer
  added = set(hf.get_added_tokens_decoder())
  tokens = [tp.token_bytes(hf.id_to_token(i), "text" if i in added else "byte_level")
            for i in range(lm.config.vocab_size)]
  cand = np.asarray([i not in added for i in range(len(tokens))])
  return Base(CausalLM.from_config(lm.config), lm.params, tokens, lm.tokenizer.encode,
              lambda b: _split(hf, b), lm.tokenizer.token_to_id(EOT), cand, o.base)


def _split(hf, b: bytes) -> list[int]:
  """Old-tokenizer ids spelling ``b``: the tokenizer on the text when ``b`` is UTF-8 (as the
  paper does), else its BPE model alone on the byte-level string (a piece of a character)."""
  try:
    return hf.encode(b.decode("utf-8"), add_special_tokens=False).ids
  except UnicodeDecodeError:
    return [t.id for t in hf.model.tokenize(tp.byte_level_string(b))]


def new_tokenizer(o, train: list[str], seed: int):
  if o.tokenizer == "supertokens":
    return st.train_supertokens(train, int(o.vocab_size), seed=seed)
  return train_bpe(train, int(o.vocab_size))


def embedder(o, workdir: str | None, log):
  """phi with a disk cache in the workdir (MiniLM over 49k old tokens takes about a minute)."""
  embed = load_minilm() if o.embedder == "minilm" else tp.char_ngram_embedder()

  def cached(texts):
    key = hashlib.sha256(("\0".join(texts) + o.embedder).encode("utf-8", "surrogatepass"))
    path = workdir and os.path.join(workdir, f"phi_{key.hexdigest()[:16]}.npy")
    if path and os.path.isfile(path):
      return np.load(path)
    start = time.perf_counter()
    out = np.asarray(embed(texts), np.float32)
    log(f"embedded {len(texts)} strings with {o.embedder} in {time.perf_counter() - start:.1f} s")
    if path and os.path.isdir(workdir):
      np.save(path, out)
    return out

  return cached


def compare_supertokens(o, train: list[str], held_out: list[str], seed: int) -> dict[str, Any]:
  """Supertokens vs whitespace-pre-tokenized BPE of the same size on the same text."""
  out = {}
  runs = sum(1 for t in held_out if re.search(r"(.)\1{6}", t))
  for name, make in (("bpe", lambda: train_bpe(train, int(o.vocab_size))),
                     ("supertokens", lambda: st.train_supertokens(train, int(o.vocab_size),
                                                                  seed=seed))):
    start = time.perf_counter()
    tok = make()
    trained = time.perf_counter() - start
    start = time.perf_counter()
    bpt = st.bytes_per_token(tok, held_out)
    encoded = time.perf_counter() - start
    out[name] = {"vocab_size": tok.vocab_size, "bytes_per_token": bpt,
                 "round_trips": st.check_round_trip(tok, held_out), "train_s": trained,
                 "encode_s": encoded}
  out["segments_with_7_runs"] = runs
  out["segments"] = len(held_out)
  return out


def run(o, workdir: str | None, seed: int = 0, log=print) -> dict[str, Any]:
  """The whole study; returns (and writes to ``workdir``) the results."""
  check_options(o)
  train, held_out = load_corpus(o)
  log(f"corpus: {len(train)} train files ({sum(map(len, train))} chars), {len(held_out)} held-out "
      f"segments ({sum(len(t.encode()) for t in held_out)} bytes)")
  base = load_base(o, train, seed)
  new = new_tokenizer(o, train, seed)
  new_tokens = [new.token_bytes(i) for i in range(new.vocab_size)] + [EOT.encode()]
  new_eot = len(new_tokens) - 1
  phi = embedder(o, workdir, log)
  old_vec = phi([tp.as_text(t) for t in base.tokens])
  start = time.perf_counter()
  inputs = tp.prepare(new_tokens, base.tokens, base.split, phi, k=int(o.k), old_vectors=old_vec,
                      candidates=base.candidates)
  log(f"{len(new_tokens)} new tokens, {inputs.num_shared} shared with {base.name}; "
      f"prepared in {time.perf_counter() - start:.1f} s")
  results: dict[str, Any] = {
      "base": base.name, "tokenizer": o.tokenizer, "new_vocab": len(new_tokens),
      "shared": inputs.num_shared, "options": dict(o), "arms": {},
      "held_out": {"segments": len(held_out), "bytes": sum(len(t.encode()) for t in held_out)}}
  new_model = CausalLM.from_config(dataclasses.replace(base.model.config,
                                                       vocab_size=len(new_tokens)))
  score_old, score_new = tl.make_scorer(base.model), tl.make_scorer(new_model)
  old_ids = [base.encode(t) for t in held_out]
  new_ids = [new.encode(t) for t in held_out]
  batch = int(o.eval_batch)
  steps = int(o.tune_steps)
  tuners = {id(m): tl.make_embedding_tuner(m, float(o.tune_lr)) for m in (base.model, new_model)}
  tune = lambda model, stream, params, name: tl.tune_embedding(
      tuners[id(model)], params, tl.window_batches(
          stream, steps=steps, batch_size=int(o.tune_batch), seq_len=int(o.tune_seq_len),
          seed=seed), log=log, name=name)
  base_row = {"zero_shot": tl.bits_per_byte(score_old, base.params, old_ids, held_out, base.eot,
                                            batch_size=batch)}
  log(f"untouched {base.name}: {base_row['zero_shot']['bits_per_byte']:.4f} bits/byte")
  if steps and o.tune_base:
    stream = _stream([base.encode(t) for t in train], base.eot)
    tuned, losses = tune(base.model, stream, base.params, "untouched")
    base_row["tuned"] = tl.bits_per_byte(score_old, tuned, old_ids, held_out, base.eot,
                                         batch_size=batch)
    base_row["tune_loss"] = [losses[0], losses[-1]]
  results["untouched"] = base_row
  stream = _stream([new.encode(t) for t in train], new_eot) if steps else None
  table = base.params["embed"]["embedding"]
  for name in _names(o.arms):
    arm, theta = ARMS[name]
    start = time.perf_counter()
    rows, counts = tp.init_embeddings(
        table, inputs, arm, tau=float(o.tau), k=int(o.k), w_g=float(o.w_g),
        theta=float(o.theta) if theta else None, seed=seed)
    params = tl.with_embedding(base.params, rows)
    row = {"counts": counts, "init_s": time.perf_counter() - start,
           "zero_shot": tl.bits_per_byte(score_new, params, new_ids, held_out, new_eot,
                                         batch_size=batch)}
    if steps:
      tuned, losses = tune(new_model, stream, params, name)
      row["tuned"] = tl.bits_per_byte(score_new, tuned, new_ids, held_out, new_eot,
                                      batch_size=batch)
      row["tune_loss"] = [losses[0], losses[-1]]
    results["arms"][name] = row
    log(f"{name}: {row['zero_shot']['bits_per_byte']:.4f} bits/byte zero-shot"
        + (f", {row['tuned']['bits_per_byte']:.4f} tuned" if steps else ""))
  if o.compare_supertokens:
    results["supertokens"] = compare_supertokens(o, train, held_out, seed)
  if workdir:
    paths.makedirs(workdir)
    paths.write_text(paths.join(workdir, RESULTS), json.dumps(results, indent=1, sort_keys=True))
    paths.write_text(paths.join(workdir, TABLES), report_markdown(results))
  return results


def _stream(ids: list[list[int]], eot: int) -> np.ndarray:
  return np.concatenate([np.asarray(x + [eot], np.int32) for x in ids])


def build(config) -> Task:
  """The ``token_adapt`` Task (``--mode=eval``); bad options fail here."""
  o = with_defaults(config, "adapt", DEFAULTS)
  check_options(o)

  def summarise(workdir: str | None) -> dict[str, Any]:
    results = run(o, workdir, seed=int(config.get("seed", 0)))
    summary = {"untouched/bits_per_byte": results["untouched"]["zero_shot"]["bits_per_byte"],
               "shared": results["shared"]}
    for name, row in results["arms"].items():
      summary[f"{name}/bits_per_byte"] = row["zero_shot"]["bits_per_byte"]
      if "tuned" in row:
        summary[f"{name}/tuned_bits_per_byte"] = row["tuned"]["bits_per_byte"]
    return summary

  return study_task("token_adapt transplants and tunes inside evaluate", summarise)


TASKS.register("token_adapt", build)
