r"""R2R token routing on SmolLM2-135M-Instruct (float32, greedy, CPU, batch of prompts).

  nice -n 19 python scripts/studies/r2r.py --out=/tmp/r2r/results.json

Large = SmolLM2-135M (30 blocks). Small = its first ``--layer`` blocks with an exit RMSNorm
trained by KL to the large model's logits (``jaxtok.decoding.early_exit``; same tokenizer and
tied head, no 27-minute distillation run). Router labels, under teacher forcing on train-split
standard-library source: ``--label=greedy``, every greedy disagreement of small vs large, or
``--label=continuation``, the paper's "changes the continuation" label with exact reconvergence of
the large model's ``--horizon``-token continuations standing in for its judge LLM
(``jaxtok/decoding/r2r_labels.py``). Then on the offline prompt set (chat + held-out code), one
batch of prompts, ``--max_new_tokens`` greedy tokens per arm: pure small, pure large, the router at
several thresholds, and at the router's measured routed fractions the competent baseline (route
when the small model's top-1 probability is below the matching quantile on held-out text) and
random routing. Quality: agreement with the large model's greedy continuation (position-wise, and
the length of the identical prefix) and perplexity of the output under the large model. Time:
wall seconds of a second (compiled) call. R2R is not lossless.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from del_smollm2 import cache_states  # sibling study script

from jaxtok.decoding import early_exit as ee
from jaxtok.decoding import r2r
from jaxtok.decoding.r2r_labels import continuation_labels
from jaxtok.generators.causal_lm import CausalLM
from jaxtok.pretrained.chat import chatml
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.tasks.prompt_set import prompt_set
from jaxtok.tasks.speculative_del import source_windows


def teacher(model, params, tokens, batch=4):
  fn = jax.jit(lambda p, t: r2r.hidden_and_logits(model, p, t))
  hs, lg = zip(*(fn(params, tokens[i:i + batch]) for i in range(0, len(tokens), batch)))
  return jnp.concatenate(hs), jnp.concatenate(lg)


def report(path: str, plot: str):
  """Prints the markdown table of a results file and plots quality against routed fraction."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  with open(path) as fh:
    res = json.load(fh)
  print("| arm | threshold | routed | LLM calls | agreement | identical prefix | PPL (large) "
        "| seconds | tokens/s |\n|---|---|---|---|---|---|---|---|---|")
  for r in res["arms"]:
    print(f"| {r['arm']} | {r['threshold']:.3g} | {r['routed']:.3f} | {r['llm_calls']} | "
          f"{r['agreement']:.3f} | {r['identical_prefix']:.1f} | {r['ppl_large']:.2f} | "
          f"{r['seconds']:.1f} | {r['tokens_per_s']:.1f} |")
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for key, ax in zip(("agreement", "ppl_large"), axes):
    for name, mark in (("R2R", "o-"), ("confidence", "s--"), ("random", "^:")):
      pts = sorted((r["routed"], r[key]) for r in res["arms"] if r["arm"].startswith(name))
      pts = [(0.0, res["arms"][1][key])] + pts + [(1.0, res["arms"][0][key])]
      ax.plot(*zip(*pts), mark, label=name)
    ax.set_xlabel("fraction of tokens routed to the large model")
    ax.set_ylabel(key)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(plot, dpi=100)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--report", default="", help="a results.json: print its table, plot, exit")
  ap.add_argument("--plot", default="docs/images/r2r_routing.png")
  ap.add_argument("--layer", type=int, default=12)
  ap.add_argument("--train_windows", type=int, default=16)
  ap.add_argument("--norm_steps", type=int, default=60)
  ap.add_argument("--router_steps", type=int, default=400)
  ap.add_argument("--thresholds", default="0.3,0.5,0.7")
  ap.add_argument("--num_prompts", type=int, default=8)
  ap.add_argument("--max_new_tokens", type=int, default=32)
  ap.add_argument("--label", default="greedy", choices=("greedy", "continuation"))
  ap.add_argument("--horizon", type=int, default=16, help="continuation label: LLM tokens")
  ap.add_argument("--sync", type=int, default=4, help="continuation label: tail that must match")
  ap.add_argument("--max_shift", type=int, default=2, help="continuation label: allowed lag")
  ap.add_argument("--out", default="/tmp/r2r/results.json")
  a = ap.parse_args()
  if a.report:
    report(a.report, a.plot)
    return
  lm = load_pretrained_lm("smollm2-135m")
  cfg, tok = lm.config, lm.tokenizer
  large = CausalLM.from_config(cfg)
  lp = jax.tree.map(jnp.asarray, lm.params)
  embed, eps = lp["embed"]["embedding"], cfg.norm_eps
  res = {"layer": a.layer, "n_layers": cfg.num_layers, "label": a.label}

  t0 = time.time()
  train = source_windows(tok.encode, "train", a.train_windows, 128)
  test = source_windows(tok.encode, "test", 4, 128)
  h_tr, lg_tr = cache_states(large, lp, train, (a.layer,))
  scale, _ = ee.train_exit_norms(lp["transformer"]["final_norm"]["scale"][None], h_tr, lg_tr,
                                 embed, eps, steps=a.norm_steps, batch=128)
  small, sp = ee.exit_model(large, a.layer), ee.exit_params(lp, a.layer, scale[0])
  del h_tr

  def data(tokens, large_logits=None, split=""):
    hs, ls = teacher(small, sp, tokens)
    ll = teacher(large, lp, tokens)[1] if large_logits is None else large_logits
    if a.label == "continuation":
      start = time.time()
      labels, stats = continuation_labels(
          large, lp, np.asarray(tokens), np.asarray(jnp.argmax(ls, -1)),
          np.asarray(jnp.argmax(ll, -1)), horizon=a.horizon, sync=a.sync, max_shift=a.max_shift)
      res[f"{split}_label_stats"] = {**stats, "seconds": time.time() - start}
      labels = jnp.asarray(labels.reshape(-1))
    ls, ll, hs = ls.reshape(-1, ls.shape[-1]), ll.reshape(-1, ll.shape[-1]), hs.reshape(
        -1, hs.shape[-1])
    if a.label == "greedy":
      labels = r2r.divergence_labels(ls, ll)
    prop = jnp.argmax(ls, -1)
    return (r2r.router_features(ls, prop, embed, hs), labels,
            jnp.max(jax.nn.softmax(ls, -1), -1))

  f_tr, y_tr, _ = data(train, lg_tr.reshape(*train.shape, -1), "train")
  f_te, y_te, conf_te = data(test, split="test")
  router = r2r.Router()
  rp, losses = r2r.train_router(router, f_tr, y_tr, steps=a.router_steps, batch=256)
  s_te = jax.nn.sigmoid(router.apply({"params": rp}, f_te))
  res.update(train_seconds=time.time() - t0, divergent_rate_test=float(y_te.mean()),
             divergent_rate_train=float(y_tr.mean()), router_loss=(losses[0], losses[-1]))
  # Held-out ranking quality: how often a divergent token scores above a non-divergent one.
  def auc(score):
    pos, neg = np.asarray(score)[np.asarray(y_te)], np.asarray(score)[~np.asarray(y_te)]
    return float(np.mean(pos[:, None] > neg[None, :]))
  res.update(auc_router=auc(s_te), auc_confidence=auc(-conf_te))
  print(json.dumps(res), flush=True)

  prompts = prompt_set("mixed", a.num_prompts)
  ids = [tok.encode(chatml(t) if kind == "chat" else t) for kind, t in prompts]
  p_len, n = max(map(len, ids)), a.max_new_tokens
  prompt = jnp.asarray([[0] * (p_len - len(x)) + x for x in ids], jnp.int32)
  mask = jnp.asarray([[False] * (p_len - len(x)) + [True] * len(x) for x in ids])
  kv = jnp.concatenate([mask, jnp.ones((len(ids), n), bool)], axis=1)
  pos = jnp.maximum(jnp.cumsum(kv.astype(jnp.int32), axis=1) - 1, 0)
  score_fn = jax.jit(lambda seq: r2r.hidden_and_logits(large, lp, seq, pos, kv)[1])

  def ppl(out):
    logits = score_fn(jnp.concatenate([prompt, out], axis=1))[:, p_len - 1:-1]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), out[..., None], -1)[..., 0]
    return float(jnp.exp(nll.mean()))

  fns = {}

  def run(rule, thr):
    if rule not in fns:
      dec = r2r.RoutedDecoder(small, large, router, rule=rule)
      fns[rule] = jax.jit(lambda t: dec.generate(sp, lp, rp, prompt, mask, t, n,
                                                 rng=jax.random.key(0)))
      jax.block_until_ready(fns[rule](jnp.float32(thr)))  # compile
    start = time.perf_counter()
    out = jax.block_until_ready(fns[rule](jnp.float32(thr)))
    return out, time.perf_counter() - start

  (ref, _, _), ref_secs = run("router", 0.0)
  arms = []

  def record(name, rule, thr):
    (out, routed, calls), secs = run(rule, thr)
    same = np.asarray(out) == np.asarray(ref)
    prefix = np.where(same.all(1), n, np.argmin(same, 1))
    row = {"arm": name, "threshold": thr, "routed": float(routed.mean()), "llm_calls": int(calls),
           "agreement": float(same.mean()), "identical_prefix": float(prefix.mean()),
           "ppl_large": ppl(out), "seconds": secs, "tokens_per_s": out.size / secs}
    arms.append(row)
    print(json.dumps(row), flush=True)
    return row

  record("pure large (route all)", "router", 0.0)
  record("pure small (route none)", "router", 1.0)
  for thr in (float(x) for x in a.thresholds.split(",")):
    f = record(f"R2R router p>{thr}", "router", thr)["routed"]
    record("confidence baseline", "confidence", float(np.quantile(np.asarray(conf_te), f)))
    record("random", "random", f)
  res["arms"] = arms
  with open(a.out, "w") as fh:
    json.dump(res, fh, indent=1)


if __name__ == "__main__":
  main()
