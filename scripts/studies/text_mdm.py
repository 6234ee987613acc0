"""Trains the text MDLM once and prints the decoding-arm table of docs/generators_text_mdm.md.

  python scripts/studies/text_mdm.py --config_arg=steps=400 --num_windows=128 \
      --workdir=/tmp/textdiff_run
  python scripts/studies/text_mdm.py --sweep_only --num_windows=512 --workdir=/tmp/textmdm_full
  python scripts/studies/text_mdm.py --sweep_only --thresholds=0.3,0.5,0.7,0.8,0.9,0.95 \
      --num_windows=512 --workdir=/tmp/textmdm_full
  python scripts/studies/text_mdm.py --timing_repeats=5 --num_windows=128 \
      --workdir=/tmp/textmdm_full

(``jaxtok.tasks.text_mdm`` is imported here so the study runs before the task is listed in
``jaxtok/tasks/__init__.py``.) Speed-up is tokens/s over ``threshold_nocache``'s.

``--sweep`` (after training) or ``--sweep_only`` (the workdir's checkpoint) decodes the same
held-out windows with the report's block arms plus a threshold sweep and DCD's sliding window
(one block of the whole target, so the window is not cut at block boundaries), and prints per
arm the mean NFE a window needs on its own (steps in which it committed a token; the batched
NFE is the slowest window's) and the paired per-window accuracy difference to
``confidence_nocache`` and to ``threshold_dual`` at the same threshold, with its standard error.
"""

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxtok.tasks.text_mdm as text_mdm  # registers TASKS['text_mdm']
from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.data.batches import to_host
from jaxtok.tasks.common import eval_batches
from jaxtok.tasks.neodiff import bleu4
from jaxtok.train import loop
from jaxtok.train import sharding as shd

CONFIG = "configs/generators/python_mdm.py"
SPACE = ord(" ")  # greedy outputs of the CPU-scale model are mostly runs of it


def table(row: dict) -> str:
  names = sorted({k.split("/")[1] for k in row if k.startswith("text_mdm/")})
  base = row["text_mdm/threshold_nocache/tokens_per_s"]
  lines = ["| arm | token acc | exact | BLEU-4 | NFE | full passes | tokens/s | speed-up |",
           "|---|---|---|---|---|---|---|---|"]
  for n in names:
    g = lambda m, n=n: row.get(f"text_mdm/{n}/{m}", float("nan"))  # noqa: E731
    lines.append(f"| {n} | {g('token_accuracy'):.3f} | {g('exact_match'):.3f} | "
                 f"{g('bleu4_bytes'):.1f} | {g('nfe'):.0f} | {g('full_nfe'):.0f} | "
                 f"{g('tokens_per_s'):.0f} | {g('tokens_per_s') / base:.2f}x |")
  return "\n".join(lines)


def sweep_arms(cfg, thresholds: tuple[float, ...]) -> list[dict]:
  """The report's block arms (same definitions) plus threshold and DCD sweeps; without 0.9 in
  ``thresholds`` (a further sweep) only the reference arm ``confidence_nocache`` of the report's."""
  n = int(cfg.target_len)
  out = [dict(a) for a in cfg.eval.arms if dict(a).get("kind", "block") == "block"]
  if 0.9 not in thresholds:
    out = [a for a in out if a["name"] == "confidence_nocache"]
  else:
    out += [dict(name="confidence_block8", cache="none", threshold=1.0, block_length=8)]
  out += [dict(name=f"threshold_dual_{t}", cache="dual", threshold=t, block_length=8)
          for t in thresholds if t != 0.9]
  # DCD as in the reference: a sliding window over the whole target, refreshed every 16 tokens.
  windows = [(8, t) for t in thresholds] + ([(4, 0.9), (16, 0.9)] if 0.9 in thresholds else [])
  out += [dict(name=f"dcd_slide_w{w}_{t}", cache="dual", rule="dcd", window=w, threshold=t,
               block_length=n, refresh_every=16) for w, t in windows]
  if 0.9 in thresholds:
    out += [dict(name="dcd_slide_w8_0.9_nocache", cache="none", rule="dcd", window=8,
                 threshold=0.9, block_length=n)]
  return out


def held_out(cfg, want: int) -> np.ndarray:  # int32 [W, cond_len + target_len]
  """The report's windows: the first ``want`` real rows of the test split, in order."""
  found = []
  with jax.set_mesh(shd.make_mesh(dict(cfg.get("mesh", {"data": -1})))):
    for batch in eval_batches(cfg):
      found.append(to_host(batch["tokens"])[to_host(batch["mask"])])
      if sum(len(f) for f in found) >= want:
        break
  return np.concatenate(found)[:want].astype(np.int32)


def paired(a: np.ndarray, b: np.ndarray) -> str:
  d = a - b
  return f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f}"


def sweep(cfg, workdir: str, num_windows: int, thresholds: tuple[float, ...]) -> str:
  state, step = loop.restore_state(cfg, workdir, text_mdm.make_task(cfg))
  windows = held_out(cfg, num_windows)
  cond_len, target_len = int(cfg.cond_len), int(cfg.target_len)
  cond, ref = jnp.asarray(windows[:, :cond_len]), windows[:, cond_len:]
  m = dict(cfg.model)
  model = text_mdm.MaskedTransformer(seq_len=target_len, cond_vocab_size=m["vocab_size"],
                                     cond_len=cond_len, cond_dropout=0.0, **m)
  rng = jax.random.key(int(cfg.eval.seed))
  res = {}
  arms = sweep_arms(cfg, thresholds)
  for arm in arms:
    hyp, stats = jax.block_until_ready(
        text_mdm.make_arm(arm, model, target_len)(state.params, rng, cond))
    hyp = np.asarray(hyp)
    own_nfe = np.sum(np.asarray(stats["committed"]) > 0, axis=1)
    res[arm["name"]] = dict(acc=np.mean(hyp == ref, axis=1), exact=np.all(hyp == ref, axis=1),
                            spaces=np.mean(hyp == SPACE), rest=np.mean((hyp == ref)[ref != SPACE]),
                            bleu=bleu4(hyp, ref), own_nfe=own_nfe, nfe=int(stats["nfe"]),
                            full=int(stats["full_nfe"]))
    print(arm["name"], f"{res[arm['name']]['acc'].mean():.4f}", flush=True)
  conf = res["confidence_nocache"]["acc"]
  lines = [f"checkpoint step {step}; {len(windows)} held-out windows; paired differences are "
           "mean ± standard error over windows; the references are "
           f"{np.mean(ref == SPACE):.3f} spaces", "",
           "| arm | token acc | exact | BLEU-4 | spaces | acc off spaces | NFE / window | "
           "batch NFE | full passes | "
           "Δacc vs confidence_nocache | Δacc vs threshold_dual (same threshold) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in res.items():
    t = next(float(a.get("threshold", 0.9)) for a in arms if a["name"] == name)
    same = "threshold_dual" if t == 0.9 else f"threshold_dual_{t}"
    vs_thr = paired(r["acc"], res[same]["acc"]) if same in res and t < 1.0 else "-"
    lines.append(f"| {name} | {r['acc'].mean():.4f} | {r['exact'].mean():.3f} | {r['bleu']:.1f} | "
                 f"{r['spaces']:.3f} | {r['rest']:.3f} | "
                 f"{r['own_nfe'].mean():.2f} | {r['nfe']} | {r['full']} | "
                 f"{paired(r['acc'], conf)} | {vs_thr} |")
  return "\n".join(lines)


def timing(cfg, workdir: str, num_windows: int, repeats: int) -> str:
  """The report's arms re-timed: median tokens/s of ``repeats`` interleaved rounds, so that a
  burst of load on the shared machine does not land on one arm only."""
  state, step = loop.restore_state(cfg, workdir, text_mdm.make_task(cfg))
  windows = held_out(cfg, num_windows)
  cond_len, target_len = int(cfg.cond_len), int(cfg.target_len)
  cond = jnp.asarray(windows[:, :cond_len])
  m = dict(cfg.model)
  model = text_mdm.MaskedTransformer(seq_len=target_len, cond_vocab_size=m["vocab_size"],
                                     cond_len=cond_len, cond_dropout=0.0, **m)
  rng = jax.random.key(int(cfg.eval.seed))
  fns = {a["name"]: text_mdm.make_arm(dict(a), model, target_len) for a in cfg.eval.arms}
  for fn in fns.values():
    jax.block_until_ready(fn(state.params, rng, cond))  # compile outside the timing
  seconds = {name: [] for name in fns}
  loads = [os.getloadavg()[0]]
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(state.params, rng, cond))
      seconds[name].append(time.perf_counter() - start)
    loads.append(os.getloadavg()[0])
  tokens = len(windows) * target_len
  base = tokens / statistics.median(seconds["threshold_nocache"])
  lines = [f"checkpoint step {step}; {len(windows)} windows in one batch; median of {repeats} "
           f"interleaved rounds; 1-min load average {min(loads):.2f}-{max(loads):.2f}", "",
           "| arm | tokens/s (median) | min-max | speed-up |", "|---|---|---|---|"]
  for name, times in seconds.items():
    rate = tokens / statistics.median(times)
    lines.append(f"| {name} | {rate:.0f} | {tokens / max(times):.0f}-{tokens / min(times):.0f} "
                 f"| {rate / base:.2f}x |")
  return "\n".join(lines)


def run(config_arg: str, num_windows: int, workdir: str) -> str:
  cfg = config(config_arg, num_windows)
  main.run(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f]
  return table([r for r in rows if "text_mdm/threshold_nocache/tokens_per_s" in r][-1])


def config(config_arg: str, num_windows: int):
  cfg = load_config(f"{CONFIG}:{config_arg}" if config_arg else CONFIG)
  cfg.eval.num_windows = num_windows
  return cfg


if __name__ == "__main__":
  p = argparse.ArgumentParser()
  p.add_argument("--config_arg", default="")
  p.add_argument("--num_windows", type=int, default=128)
  p.add_argument("--workdir", required=True)
  p.add_argument("--sweep", action="store_true", help="train, then the paired sweep")
  p.add_argument("--sweep_only", action="store_true", help="the sweep on the workdir's run")
  p.add_argument("--thresholds", default="0.7,0.8,0.9,0.95", help="the sweep's thresholds")
  p.add_argument("--timing_repeats", type=int, default=0,
                 help="only re-time the report's arms on the workdir's run, median of N rounds")
  a = p.parse_args()
  if a.timing_repeats:
    print(timing(config(a.config_arg, a.num_windows), a.workdir, a.num_windows,
                 a.timing_repeats))
  elif not a.sweep_only:
    print(run(a.config_arg, a.num_windows, a.workdir))
  if (a.sweep or a.sweep_only) and not a.timing_repeats:
    print(os.getloadavg())
    print(sweep(config(a.config_arg, a.num_windows), a.workdir, a.num_windows,
                tuple(float(t) for t in a.thresholds.split(","))))
