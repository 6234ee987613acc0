"""The ``r2r`` task: R2R token routing between a small and a large LM (jaxtok/decoding/r2r.py).

The large LM (LLM) is ``large.pretrained`` (SmolLM2-135M-Instruct) or a random ``variant`` drawn
with ``seed`` and scaled by ``random_scale`` (peaked logits, so greedy choices are not coin flips).
The small LM (SLM) is the LLM's first ``small.exit_layer`` blocks with an exit RMSNorm trained by
KL to the LLM at build time (``early_exit.fit_exit_norms`` on ``exit_windows`` x
``exit_window_len`` tokens of train-split standard-library source; cached under
``$JAXTOK_CACHE_DIR/r2r_exits`` for a pretrained LLM, so every run of one config has one SLM).

Training (``train_step``) updates only the router: on each batch of token windows (``data``) both
models run under teacher forcing, a token is divergent where their greedy tokens differ (the
stand-in for the paper's "changes the continuation" label), and the router minimises BCE with the
batch's divergent tokens weighted #agreeing / #divergent. The loop checkpoints and resumes the
router's TrainState; the frozen models are closed over.

``report`` scores held-out test-split windows: AUC of divergent over agreeing tokens and the
recall of divergent tokens when the divergent rate's share of tokens is routed, for the router,
the SLM's top-1 confidence and random routing. ``evaluate`` adds generation on the offline prompt
set: plain greedy decoding of each model (timed), route-all and route-none, the router at each of
``thresholds``, and at the router's routed fraction the confidence baseline (held-out quantile)
and random routing; quality is agreement with the LLM's greedy continuation, the identical prefix
and perplexity under the LLM. It writes ``r2r_results.json`` and ``r2r_table.md``. ``sample``
decodes ``config.prompt`` at ``threshold`` and marks the routed tokens. R2R is not lossless.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.decoding import early_exit as ee
from jaxtok.decoding import r2r
from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.pretrained.chat import chatml
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer
from jaxtok.tasks.prompt_set import KINDS, prompt_set
from jaxtok.tasks.speculative_del import source_windows
from jaxtok.tasks.speculative_proposers import load_lm
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

DEFAULTS = {
    "large": {"pretrained": None, "variant": "tiny", "seed": 1234},
    "small": {"exit_layer": 1, "exit_steps": 60, "exit_windows": 12, "exit_window_len": 128},
    "router": {"width": 128, "top_k": 8, "window": 8},
    "optimizer": {"lr": 1e-3, "warmup_steps": 10, "b1": 0.9, "b2": 0.99, "weight_decay": 0.0,
                  "grad_clip": 1.0, "final_lr_fraction": 0.1},
}
NOT_LOSSLESS = ("R2R is NOT lossless: a divergent token the router does not route stays in the "
                "output, which then differs from the large model's greedy output")


def _exit_scale(name: str | None, model: CausalLM, params, encode, s) -> np.ndarray:
  """The SLM's exit-norm scale [M] (fitted once; cached per pretrained LLM and setting)."""
  layer, n, length = int(s.exit_layer), int(s.exit_windows), int(s.exit_window_len)
  path = None
  if name:
    root = os.environ.get("JAXTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                              "jaxtok")
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = os.path.join(root, "r2r_exits", f"{tag}_L{layer}_{n}x{length}_s{int(s.exit_steps)}.npz")
    if paths.exists(path):
      with paths.path(path).open("rb") as f:
        return np.load(f)["scale"]
  fit = ee.fit_exit_norms(model, params, (layer,), source_windows(encode, "train", n, length),
                          source_windows(encode, "test", max(n // 4, 1), length),
                          steps=int(s.exit_steps))
  print(f"R2R small model: exit {layer} of {model.num_layers}, top-1 agreement with the large "
        f"model {fit['agree_before'][0]:.3f} -> {fit['agree_after'][0]:.3f} (test-split windows)")
  if path:
    paths.makedirs(paths.path(path).parent)
    with paths.path(path).open("wb") as f:
      np.savez(f, scale=fit["scales"][0])
  return fit["scales"][0]


def _check(config, layer: int, num_layers: int) -> None:
  if not 1 <= layer < num_layers:
    raise ValueError(f"small.exit_layer must be in 1..{num_layers - 1} (the large model's first "
                     f"blocks), got {layer}")
  bad = [t for t in config.thresholds if not 0.0 < float(t) < 1.0]
  if bad or not 0.0 <= float(config.threshold) <= 1.0:
    raise ValueError(f"thresholds must lie in (0, 1) and threshold in [0, 1] (0 routes every "
                     f"token, 1 none), got {tuple(config.thresholds)}, {config.threshold}")
  if config.eval_prompts not in KINDS:
    raise ValueError(f"eval_prompts must be one of {KINDS}, got {config.eval_prompts!r}")
  if min(int(config.max_new_tokens), int(config.eval_batch_size), int(config.heldout_windows),
         int(config.eval_pad_multiple)) < 1:
    raise ValueError("max_new_tokens, eval_batch_size, heldout_windows and eval_pad_multiple "
                     "must be >= 1")


def build(config) -> Task:
  """Builds the ``r2r`` Task: loads the LLM and fits the SLM's exit norm here, once."""
  lcfg = with_defaults(config, "large", DEFAULTS["large"])
  scfg = with_defaults(config, "small", DEFAULTS["small"])
  rcfg = with_defaults(config, "router", DEFAULTS["router"])
  dtype = config.get("dtype", "float32")
  arch, host, tokenizer, chat, _, name = load_lm(lcfg.pretrained, lcfg.variant, "large")
  layer = int(scfg.exit_layer)
  _check(config, layer, arch.num_layers)
  if not (config.get("data") and config.data.get("name")):
    raise ValueError("the r2r task needs config.data.name (token windows to label)")
  large = CausalLM.from_config(arch, dtype=dtype)
  if host is None:
    lp = large.init(jax.random.key(int(lcfg.seed)), jnp.zeros((1, 8), jnp.int32))["params"]
    lp = jax.tree.map(lambda x: x * float(config.get("random_scale", 1.0)), nn.unbox(lp))
  else:
    lp = jax.tree.map(jnp.asarray, host)
  small = ee.exit_model(large, layer)
  sp = ee.exit_params(lp, layer, _exit_scale(lcfg.pretrained, large, lp, tokenizer.encode, scfg))
  top_k, window = int(rcfg.top_k), int(rcfg.window)
  router = r2r.Router(width=int(rcfg.width))
  tx = build_optimizer(with_defaults(config, "optimizer", DEFAULTS["optimizer"]),
                       int(config.num_steps))
  n, seed = int(config.max_new_tokens), int(config.seed)
  # The models' params are arguments of every jitted function, never closed over: a closed-over
  # array is a constant of its program, one copy of the LLM per compiled shape.
  forced = jax.jit(lambda s_p, l_p, tokens: r2r.teacher_forced(small, s_p, large, l_p, tokens,
                                                                 None, top_k))

  def init(rng: jax.Array, example_batch: Any = None) -> TrainState:
    del example_batch
    feats = jnp.zeros((1, top_k + 1 + 2 * arch.dim), jnp.float32)
    return TrainState.create(params=router.init(rng, feats)["params"], tx=tx, rng=rng)

  def losses(params, batch):
    tokens = batch["tokens"]
    feats, labels, _ = r2r.teacher_forced(small, sp, large, lp, tokens, top_k=top_k)
    w = jnp.ones(labels.shape, jnp.float32)
    if "mask" in batch:
      w = w * batch["mask"][:, None].astype(jnp.float32)
    divergent = jnp.sum(labels * w)
    pos_weight = (w.sum() - divergent) / jnp.maximum(divergent, 1.0)
    scores = router.apply({"params": params}, feats)
    loss = r2r.weighted_bce(scores, labels, pos_weight, w)
    hit = ((scores > 0) == labels).astype(jnp.float32) * w
    balanced = 0.5 * (jnp.sum(hit * labels) / jnp.maximum(divergent, 1.0) + jnp.sum(
        hit * ~labels) / jnp.maximum(w.sum() - divergent, 1.0))
    return loss, {"divergent": divergent / jnp.maximum(w.sum(), 1.0),
                  "balanced_accuracy": balanced}

  def train_step(state: TrainState, batch):
    return supervised_step(state, losses, batch)

  def eval_step(state: TrainState, batch):
    loss, aux = losses(state.params, batch)
    return {"loss": loss, **aux}

  held: dict[str, np.ndarray] = {}

  def heldout(state: TrainState) -> dict[str, float]:
    if not held:
      tokens = source_windows(tokenizer.encode, "test", int(config.heldout_windows),
                              int(scfg.exit_window_len))
      feats, labels, conf = forced(sp, lp, jnp.asarray(tokens))
      held.update(feats=feats, labels=np.asarray(labels), conf=np.asarray(conf))
    labels, rate = held["labels"], float(held["labels"].mean())
    score = np.asarray(router.apply({"params": state.params}, held["feats"]))
    out = {"heldout/divergent": rate, "heldout/tokens": float(labels.size)}
    if 0.0 < rate < 1.0:
      for rule, s in (("router", score), ("confidence", -held["conf"])):
        out[f"heldout/auc_{rule}"] = r2r.auc(s, labels)
        out[f"heldout/recall_{rule}"] = r2r.recall_at_fraction(s, labels, rate)
      out["heldout/recall_random"] = rate  # random routing's recall, in expectation
    return out

  def report(state: TrainState, workdir: str, step: int) -> dict[str, float]:
    del workdir, step
    return heldout(state)

  def encode(kind: str, text: str) -> list[int]:
    ids = tokenizer.encode(chatml(text) if chat and kind == "chat" else text)
    if not 2 <= len(ids) <= arch.max_len - n - window:
      raise ValueError(f"a prompt has {len(ids)} tokens; the large model's max_len {arch.max_len}"
                       f" leaves room for 2..{arch.max_len - n - window} beside {n} new tokens")
    return ids

  def pad(rows, multiple: int):
    width = -(-max(map(len, rows)) // multiple) * multiple
    tokens, mask = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), bool)
    for r, ids in enumerate(rows):
      tokens[r, width - len(ids):], mask[r, width - len(ids):] = ids, True
    return jnp.asarray(tokens), jnp.asarray(mask)

  seen: set = set()
  decoders: dict = {}

  def timed(key, fn):
    """(fn(), seconds of a compiled call): each program runs once untimed first."""
    if key not in seen:
      jax.block_until_ready(fn())
      seen.add(key)
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start

  def plain(model, params, tokens, mask, key=None):
    """Plain greedy decoding of one model (``key``: time it), the new tokens [B, N]."""
    cache = init_cache(model, tokens.shape[0], tokens.shape[1] + n)  # traced: outside the timing
    fn = lambda: generate(jax.random.key(seed), ModelStep(model), params, cache, tokens, mask,
                          max_new_tokens=n, greedy=True)[0][:, -n:]
    return timed(key, fn) if key else (fn(), 0.0)

  def routed(rule, router_params, tokens, mask, threshold):
    if rule not in decoders:
      dec = r2r.RoutedDecoder(small, large, router, top_k=top_k, window=window, rule=rule)
      decoders[rule] = jax.jit(lambda s_p, l_p, rp, t, m, thr: dec.generate(
          s_p, l_p, rp, t, m, thr, n, rng=jax.random.key(seed)))
    return timed((rule, tokens.shape), lambda: decoders[rule](sp, lp, router_params, tokens, mask,
                                                              jnp.float32(threshold)))

  @jax.jit
  def nll(lp, tokens, mask, out):
    kv = jnp.concatenate([mask, jnp.ones(out.shape, bool)], axis=1)
    pos = jnp.maximum(jnp.cumsum(kv.astype(jnp.int32), axis=1) - 1, 0)
    _, logits = r2r.hidden_and_logits(large, lp, jnp.concatenate([tokens, out], 1), pos, kv)
    logp = jax.nn.log_softmax(logits[:, tokens.shape[1] - 1:-1], -1)
    return -jnp.take_along_axis(logp, out[..., None], -1)[..., 0]

  def generation(state: TrainState) -> list[dict[str, Any]]:
    ids = [encode(kind, text) for kind, text in prompt_set(config.eval_prompts,
                                                           int(config.eval_num_prompts))]
    b = int(config.eval_batch_size)
    groups = [pad(ids[i:i + b], int(config.eval_pad_multiple)) for i in range(0, len(ids), b)]
    ref, small_ref, rows = [], [], []
    for name_, model, params, keep in (("large alone (plain greedy)", large, lp, ref),
                                       ("small alone (plain greedy)", small, sp, small_ref)):
      secs = 0.0
      for tokens, mask in groups:
        out, s = plain(model, params, tokens, mask, key=(name_, tokens.shape))
        keep.append(np.asarray(out))
        secs += s
      rows.append(row(name_, float("nan"), groups, keep, None, 0, secs, ref, small_ref))

    def arm(label, rule, threshold):
      outs, flags, calls, secs = [], [], 0, 0.0
      for tokens, mask in groups:
        (out, rt, c), s = routed(rule, state.params, tokens, mask, threshold)
        outs.append(np.asarray(out))
        flags.append(np.asarray(rt))
        calls, secs = calls + int(c), secs + s
      rows.append(row(label, threshold, groups, outs, flags, calls, secs, ref, small_ref))
      return rows[-1]

    arm("route all (router, threshold 0)", "router", 0.0)
    arm("route none (router, threshold 1)", "router", 1.0)
    conf = held["conf"].ravel()
    for thr in (float(t) for t in config.thresholds):
      f = arm(f"R2R router p>{thr:g}", "router", thr)["routed"]
      arm("confidence baseline", "confidence", float(np.quantile(conf, f)))
      arm("random", "random", f)
    return rows

  def row(label, threshold, groups, outs, flags, calls, secs, ref, small_ref) -> dict[str, Any]:
    out, big = np.concatenate(outs), np.concatenate(ref)
    same = out == big
    prefix = np.where(same.all(1), n, np.argmin(same, 1))
    nlls = np.concatenate([np.asarray(nll(lp, t, m, jnp.asarray(o))) for (t, m), o in zip(groups,
                                                                                      outs)])
    small_same = out == np.concatenate(small_ref) if small_ref else np.zeros_like(same)
    return {"arm": label, "threshold": threshold,
            "routed": float(np.concatenate(flags).mean()) if flags else float("nan"),
            "llm_calls": calls, "agreement": float(same.mean()),
            "small_agreement": float(small_same.mean()), "identical_prefix": float(prefix.mean()),
            "ppl_large": float(np.exp(nlls.mean())), "seconds": secs,
            "tokens_per_s": out.size / max(secs, 1e-9)}

  def table(rows) -> str:
    lines = ["| arm | threshold | routed | LLM calls | agreement | identical prefix | PPL (large) "
             "| seconds | tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    num = lambda x, f: "-" if np.isnan(x) else format(x, f)
    lines += [f"| {r['arm']} | {num(r['threshold'], '.3g')} | {num(r['routed'], '.3f')} | "
              f"{r['llm_calls']} | "
              f"{r['agreement']:.3f} | {r['identical_prefix']:.1f} | {r['ppl_large']:.2f} | "
              f"{r['seconds']:.2f} | {r['tokens_per_s']:.1f} |" for r in rows]
    return "\n".join(lines)

  def evaluate(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    result = heldout(state)
    print(" ".join(f"{k}={v:.4f}" for k, v in result.items()))
    rows = generation(state)
    text = table(rows)
    print(text)
    lossy = [r for r in rows if r["arm"].startswith("R2R") and r["agreement"] < 1.0]
    print(f"{NOT_LOSSLESS} ({len(lossy)} of {len(config.thresholds)} router arms differ here).")
    if workdir and jax.process_index() == 0:
      paths.write_text(paths.join(workdir, "r2r_results.json"),
                       json.dumps({"heldout": result, "arms": rows}, indent=1))
      paths.write_text(paths.join(workdir, "r2r_table.md"), text + "\n")
    return result | {"arms": rows}

  def sample(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    tokens, mask = pad([encode("chat", config.prompt)], 1)
    thr = float(config.threshold)
    (out, flags, calls), _ = routed("router", state.params, tokens, mask, thr)
    out, flags = np.asarray(out)[0], np.asarray(flags)[0]
    big = np.asarray(plain(large, lp, tokens, mask)[0])[0]
    marked = "".join(f"[{tokenizer.decode([t])}]" if f else tokenizer.decode([t])
                     for t, f in zip(out.tolist(), flags))
    agree = float(np.mean(out == big))
    print(f"{config.prompt}\n[R2R, threshold {thr:g}; [bracketed] tokens came from the large "
          f"model] {marked}\n[large greedy] {tokenizer.decode(big.tolist())}\n"
          f"routed {flags.mean():.3f} of tokens, {int(calls)} large-model calls, agreement with "
          f"the large model's greedy output {agree:.3f}. {NOT_LOSSLESS}.")
    if workdir:
      paths.write_text(paths.join(workdir, "sample.txt"), marked)
    return {"prompt": config.prompt, "completion": marked, "routed": float(flags.mean()),
            "agreement": agree}

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report,
              sample=sample, evaluate=evaluate)


TASKS.register("r2r", build)
