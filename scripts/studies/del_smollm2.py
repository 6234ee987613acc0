r"""DEL self-speculation on SmolLM2-135M-Instruct (float32, greedy, CPU): exit norms, then timing.

  nice -n 19 python scripts/studies/del_smollm2.py --out=/tmp/del/results.json

1. Exit norms at ``--layers`` (of 30) are trained by KL to the frozen target's final logits on
   cached hidden states of train-split standard-library source (``python_source`` files); per-layer
   KL and top-1 agreement (the greedy acceptance rate of one drafted token) are measured on
   test-split windows before and after training.
2. On the offline prompt set (chat + held-out code prefixes, ``jaxtok.tasks.prompt_set``), one
   prompt at a time: plain greedy decoding, static early exit for every (L, gamma) of the grid
   (threshold 0), and DEL: shadow tokens on the prompt (one extra target pass over it, timed)
   give per-layer rates, ``select_exit`` picks (L, gamma), drafting stops below ``--threshold``.
   Every arm's output is checked token-identical to plain greedy. Compilation is excluded (one
   warm-up call per arm); tokens/s = new tokens / wall time summed over prompts.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.decoding import early_exit as ee
from jaxtok.decoding.engine import speculative_generate
from jaxtok.decoding.proposers import LMStep
from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.pretrained.chat import chatml
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.tasks.prompt_set import prompt_set
from jaxtok.tasks.speculative_del import source_windows


def cache_states(model, params, tokens, layers):
  hs, logits = [], []
  for i in range(0, len(tokens), 4):
    h, lg = jax.jit(ee.hidden_states, static_argnums=(0, 3))(model, params, tokens[i:i + 4],
                                                             layers)
    hs.append(h.reshape(len(layers), -1, h.shape[-1]))
    logits.append(lg.reshape(-1, lg.shape[-1]))
  return jnp.concatenate(hs, 1), jnp.concatenate(logits, 0)


def agreement(scales, hiddens, logits, embed, eps):
  targ = jnp.argmax(logits, -1)
  return [float(np.mean(np.argmax(ee.exit_logits(s, h, embed, eps), -1) == targ))
          for s, h in zip(scales, hiddens)]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--layers", default="4,8,12")
  ap.add_argument("--gammas", default="2,4")
  ap.add_argument("--threshold", type=float, default=0.4)
  ap.add_argument("--train_windows", type=int, default=12)
  ap.add_argument("--steps", type=int, default=60)
  ap.add_argument("--num_prompts", type=int, default=4)
  ap.add_argument("--max_new_tokens", type=int, default=48)
  ap.add_argument("--out", default="/tmp/del/results.json")
  a = ap.parse_args()
  layers = tuple(int(x) for x in a.layers.split(","))
  gammas = tuple(int(x) for x in a.gammas.split(","))
  lm = load_pretrained_lm("smollm2-135m")
  cfg, tok = lm.config, lm.tokenizer
  model = CausalLM.from_config(cfg)
  params = jax.tree.map(jnp.asarray, lm.params)
  embed, eps, n_layers = params["embed"]["embedding"], cfg.norm_eps, cfg.num_layers
  res = {"layers": layers, "gammas": gammas, "threshold": a.threshold}

  t0 = time.time()
  train = source_windows(tok.encode, "train", a.train_windows, 128)
  h_tr, lg_tr = cache_states(model, params, train, layers)
  h_te, lg_te = cache_states(model, params, source_windows(tok.encode, "test", 4, 128), layers)
  scales = jnp.stack([params["transformer"]["final_norm"]["scale"]] * len(layers))
  res["kl_before"] = [float(x) for x in ee.exit_kl(scales, h_te, lg_te, embed, eps)]
  res["agree_before"] = agreement(scales, h_te, lg_te, embed, eps)
  scales, _ = ee.train_exit_norms(scales, h_tr, lg_tr, embed, eps, steps=a.steps, batch=128)
  res["kl_after"] = [float(x) for x in ee.exit_kl(scales, h_te, lg_te, embed, eps)]
  res["agree_after"] = agreement(scales, h_te, lg_te, embed, eps)
  res["train_seconds"] = time.time() - t0
  print(json.dumps(res), flush=True)
  del h_tr, lg_tr

  prompts = prompt_set("mixed", a.num_prompts)
  ids = [tok.encode(chatml(t) if kind == "chat" else t) for kind, t in prompts]
  p_len, n = max(map(len, ids)), a.max_new_tokens
  rows = [(jnp.asarray([[0] * (p_len - len(x)) + x], jnp.int32),
           jnp.asarray([[False] * (p_len - len(x)) + [True] * len(x)])) for x in ids]

  def plain(prompt, mask):
    out, _ = generate(jax.random.key(0), ModelStep(model), params,
                      init_cache(model, 1, p_len + n), prompt, mask, max_new_tokens=n,
                      greedy=True)
    return np.asarray(out), None

  def spec(layer, gamma, threshold):
    prop = ee.ConfidentDraft(LMStep(ee.exit_model(model, layer)), length=gamma,
                             threshold=threshold)
    p = ee.exit_params(params, layer, scales[layers.index(layer)])

    def run(prompt, mask):
      out, st = speculative_generate(jax.random.key(0), LMStep(model), params, prop, p, prompt,
                                     mask, max_new_tokens=n, target_model=model)
      return np.asarray(out), st
    return run

  shadow_fn = jax.jit(lambda prm, sc, pr, m: ee.shadow_matches(
      sc, ee.hidden_states(model, prm, pr, layers)[0], jnp.roll(pr, -1, axis=1),
      prm["embed"]["embedding"], eps, m & jnp.roll(m, -1, axis=1).at[:, -1].set(False)))
  shadow = lambda pr, m: shadow_fn(params, scales, pr, m)
  # Shadow tokens on the prompt compare each exit's prediction with the prompt's next token (the
  # text the target conditions on), the one per-position signal available before decoding.

  def measure(name, run_for):
    outs, secs, drafts, acc, warm = [], 0.0, 0, 0, set()
    for r, (prompt, mask) in enumerate(rows):
      run, extra = run_for(r, prompt, mask)
      if run not in warm:
        run(prompt, mask)
        warm.add(run)
      start = time.perf_counter()
      out, st = run(prompt, mask)
      secs += time.perf_counter() - start + extra
      outs.append(out)
      if st is not None:
        drafts += int(st["num_drafts"].sum())
        acc += int(st["num_accepted_tokens"].sum())
    return outs, {"arm": name, "tokens_per_s": len(rows) * n / secs, "seconds": secs,
                  "mean_acceptance_length": 1 + acc / drafts if drafts else 1.0}

  ref, base = measure("plain greedy", lambda r, p, m: (plain, 0.0))
  arms = [base]
  print(json.dumps(base), flush=True)
  runs = {(lay, g, thr): spec(lay, g, thr) for lay in layers for g in gammas
          for thr in (0.0, a.threshold)}
  for lay in layers:
    for g in gammas:
      outs, row = measure(f"static L={lay} gamma={g}",
                          lambda r, p, m, k=(lay, g, 0.0): (runs[k], 0.0))
      row["identical"] = all(np.array_equal(o, x) for o, x in zip(outs, ref))
      arms.append(row)
      print(json.dumps(row), flush=True)
  prior = res["agree_after"]
  choice = []

  def del_run(r, prompt, mask):
    start = time.perf_counter()
    matches = np.asarray(shadow(prompt, mask))
    total = int(mask.sum()) - 1
    rates = ee.acceptance_rates(matches, total, prior)
    lay, g, _ = ee.select_exit(rates, layers, gammas, n_layers)
    extra = time.perf_counter() - start
    choice.append({"prompt": r, "rates": rates.tolist(), "layer": lay, "gamma": g})
    return runs[lay, g, a.threshold], extra

  for prompt, mask in rows[:1]:
    shadow(prompt, mask)  # compile
  outs, row = measure(f"DEL (shadow-selected L, gamma; stop < {a.threshold})", del_run)
  row["identical"] = all(np.array_equal(o, x) for o, x in zip(outs, ref))
  row["choices"] = choice[-len(rows):]
  arms.append(row)
  print(json.dumps(row), flush=True)
  res["arms"] = arms
  with open(a.out, "w") as f:
    json.dump(res, f, indent=1)


if __name__ == "__main__":
  main()
