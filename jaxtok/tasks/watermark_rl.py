"""``watermark_rl``: the RL-learned green-list design against KGW, trained and scored in one call.

  python -m jaxtok.main --config=configs/rl/watermark_rl.py --workdir=/tmp/wm_rl --mode=eval

The environment is a bigram byte LM of the Python standard library (jaxtok.data.python_source,
train split, add-``smoothing`` counts): the list designs of jaxtok.rl.learned_watermark see one
token of context, so a bigram table is the whole LM they can react to, and rollouts are table
lookups (thousands of texts a second on a CPU). ``run`` trains a policy over ``Menu()`` with the
per-token REINFORCE of that module (a fresh random key every step), then scores it (argmax design
per context, one fixed key) and KGW (gamma 0.25) at each of ``kgw_deltas`` on the same first bytes
(from the test split) and seeds. A second baseline is a hand-set entropy rule over the same
menu, "no watermark where the LM's next-byte entropy after ``prev`` is below tau, KGW at delta 4
(gamma 0.25) elsewhere", for each tau of ``entropy_rules``: like the learned policy it is a table
over ``prev``, so its detector needs no LM either; it asks whether RL finds more than that rule.
Scored for each arm:

* TPR at the 1% FPR threshold, the null being the plain texts under the arm's own detector and
  ``null_keys`` keys (the texts do not depend on the key), each distinct (seed, tok) pair once;
* NLL (nats/byte) under the unwatermarked LM, and its increase over the plain texts;
* TPR at that threshold after ``substitute_tokens`` replaced each fraction of ``eps``;
* spoofing: a spoofer sees ``observed`` watermarked texts of the arm, estimates the watermarked
  bigram LM (``spoofer_table``) and samples ``num`` texts from it; their mean z and the fraction
  above the threshold (texts the detector attributes to the watermark).

Results go to ``<workdir>/watermark_rl.json``; scripts/studies/watermark_rl.py prints them as
tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.data import python_source as ps
from jaxtok.rl import learned_watermark as lw
from jaxtok.rl.watermark import DEFAULT_KEY, substitute_tokens
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import study_task

DEFAULTS = dict(steps=1500, batch=64, length=32, lr=0.05, num=512, null_keys=32, observed=32,
                eps="0.1,0.2,0.3", kgw_deltas="1,1.5,2,2.5,3,4", quality=0.2, spoof=0.5,
                robust=1.0, entropy=0.01, smoothing=0.01, train_prompts=200_000, log_rows=6,
                entropy_rules="2,2.25,2.5,2.75,3")
OFF = lw.Menu(((0, 0.25, 0.0),))
_rollout = jax.jit(lw.rollout, static_argnames=("menu", "length", "greedy"))
_detect = jax.jit(lw.detect, static_argnames=("menu",))


def check_options(o) -> None:
  for name in ("steps", "batch", "length", "num", "null_keys", "observed"):
    if int(o[name]) < 1:
      raise ValueError(f"watermark_rl.{name} must be >= 1, got {o[name]}")
  for e in floats(o.eps):
    if not 0.0 <= e <= 1.0:
      raise ValueError(f"watermark_rl.eps must be fractions in [0, 1], got {o.eps!r}")
  if any(d <= 0 for d in floats(o.kgw_deltas)):
    raise ValueError(f"watermark_rl.kgw_deltas must be > 0, got {o.kgw_deltas!r}")


def floats(spec: str) -> list[float]:
  return [float(x) for x in str(spec).split(",") if x.strip()]


def bigram_lm(tokens: np.ndarray, vocab: int, smoothing: float) -> jnp.ndarray:  # [V, V]
  """log q(next | prev) from counts of ``tokens`` [T], each count plus ``smoothing``."""
  counts = np.zeros((vocab, vocab))
  np.add.at(counts, (tokens[:-1], tokens[1:]), 1.0)
  q = (counts + smoothing) / (counts + smoothing).sum(1, keepdims=True)
  return jnp.asarray(np.log(q), jnp.float32)


def mean_nll(log_q, texts) -> float:
  return float(-np.mean(np.asarray(log_q[texts[:, :-1], texts[:, 1:]])))


def train_policy(log_q, menu: lw.Menu, weights: lw.RewardWeights, first_tokens, *, steps: int,
                 batch: int, length: int, lr: float, seed: int, log_rows: int):
  """(policy logits [V, K], rows of the training log) after ``steps`` REINFORCE updates."""
  policy = lw.init_policy(log_q.shape[0], menu)
  optimizer = optax.adam(lr)
  opt_state = optimizer.init(policy)
  step = lw.make_train_step(log_q, menu, weights, optimizer, batch=batch, length=length,
                            first_tokens=first_tokens)
  rng, every, rows = jax.random.key(seed), max(steps // log_rows, 1), []
  for i in range(steps):
    policy, opt_state, m = step(policy, opt_state, jax.random.fold_in(rng, i))
    if i % every == 0 or i == steps - 1:
      rows.append({"step": i, **{k: float(v) for k, v in m.items()}})
  return policy, rows


def evaluate_arm(log_q, menu: lw.Menu, policy, first, plain, o, seed: int) -> dict[str, Any]:
  """One arm under DEFAULT_KEY: detection, NLL, substitution, spoofing (module docstring)."""
  key, vocab = jnp.uint32(DEFAULT_KEY), log_q.shape[0]
  texts, actions = _rollout(jax.random.key(seed + 1), log_q, policy, first, key, menu,
                            int(o.length), greedy=True)
  null = np.concatenate([np.asarray(_detect(plain, policy, jnp.uint32(k), menu))
                         for k in [DEFAULT_KEY] + list(range(1, int(o.null_keys)))])
  thr = float(np.quantile(null, 0.99))
  z = np.asarray(_detect(texts, policy, key, menu))
  mask = np.ones(texts.shape, bool)
  mask[:, 0] = False
  attacked = {}
  for i, eps in enumerate(floats(o.eps)):
    att, _ = substitute_tokens(jax.random.key(seed + 10 + i), texts, jnp.asarray(mask), eps,
                               vocab)
    attacked[f"{eps:g}"] = float(np.mean(np.asarray(_detect(att, policy, key, menu)) > thr))
  observed, _ = _rollout(jax.random.key(seed + 2), log_q, policy,
                         first[jnp.arange(int(o.observed)) % first.shape[0]], key, menu,
                         int(o.length), greedy=True)
  log_w = lw.spoofer_table(observed, log_q)
  spoof, _ = _rollout(jax.random.key(seed + 3), log_w, jnp.zeros((vocab, 1)), first, key, OFF,
                      int(o.length), greedy=True)
  spoof_z = np.asarray(_detect(spoof, policy, key, menu))
  acts = np.asarray(actions).reshape(-1)
  share = np.bincount(acts, minlength=len(menu.actions))
  # Entropy of the LM's next-byte distribution in the contexts where each design was used.
  entropy = np.asarray(-jnp.sum(jnp.exp(log_q) * log_q, -1))[np.asarray(texts)[:, :-1]]
  entropy = np.bincount(acts, entropy.reshape(-1), len(menu.actions)) / np.maximum(share, 1)
  return dict(null_mean=float(null.mean()), null_sd=float(null.std()), threshold=thr,
              mean_z=float(z.mean()), tpr=float(np.mean(z > thr)), nll=mean_nll(log_q, texts),
              nll_increase=mean_nll(log_q, texts) - mean_nll(log_q, plain),
              tpr_attacked=attacked, spoof_mean_z=float(spoof_z.mean()),
              spoof_success=float(np.mean(spoof_z > thr)),
              design_share={str(a): float(s) for a, s in zip(menu.actions, share / share.sum())},
              design_entropy={str(a): float(h) for a, h in zip(menu.actions, entropy)})


def run(o, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Builds the LM, trains the policy, scores every arm; the results as a JSON-able dict."""
  check_options(o)
  start = time.perf_counter()
  vocab = ps.ByteCodec.vocab_size
  train_stream, _ = ps.token_stream("bytes", "train")
  test_stream, _ = ps.token_stream("bytes", "test")
  log_q = bigram_lm(train_stream, vocab, float(o.smoothing))
  menu = lw.Menu()
  weights = lw.RewardWeights(robust=float(o.robust), quality=float(o.quality),
                             spoof=float(o.spoof), entropy=float(o.entropy))
  log(f"bigram byte LM: {len(train_stream)} train bytes, test NLL "
      f"{mean_nll(log_q, test_stream[None]):.3f} nats/byte; menu {menu.actions}; {weights}")
  policy, train_log = train_policy(
      log_q, menu, weights, train_stream[:int(o.train_prompts)], steps=int(o.steps),
      batch=int(o.batch), length=int(o.length), lr=float(o.lr), seed=seed,
      log_rows=int(o.log_rows))
  train_seconds = time.perf_counter() - start
  first = jnp.asarray(test_stream[np.random.default_rng(seed).integers(
      0, len(test_stream), int(o.num))], jnp.int32)
  plain, _ = _rollout(jax.random.key(seed + 1), log_q, jnp.zeros((vocab, 1)), first,
                      jnp.uint32(DEFAULT_KEY), OFF, int(o.length), greedy=True)
  arms = {f"KGW gamma 0.25 delta {d:g}": evaluate_arm(log_q, lw.Menu(((1, 0.25, d),)),
                                                      jnp.zeros((vocab, 1)), first, plain, o,
                                                      seed)
          for d in floats(o.kgw_deltas)}
  entropy = -jnp.sum(jnp.exp(log_q) * log_q, -1)  # [V]
  off, strong = menu.index((0, 0.25, 0.0)), menu.index((1, 0.25, 4.0))
  for tau in floats(o.entropy_rules):
    rule = jax.nn.one_hot(jnp.where(entropy < tau, off, strong), len(menu.actions))
    arms[f"entropy rule tau {tau:g}"] = evaluate_arm(log_q, menu, rule, first, plain, o, seed)
  arms["learned (argmax design)"] = evaluate_arm(log_q, menu, policy, first, plain, o, seed)
  return dict(options=dict(o), plain_nll=mean_nll(log_q, plain), train_log=train_log, arms=arms,
              train_seconds=train_seconds, seconds=time.perf_counter() - start)


def build(config) -> Task:
  """The ``watermark_rl`` Task (``--mode=eval`` trains and scores); bad options fail here."""
  o = with_defaults(config, "watermark_rl", DEFAULTS)
  check_options(o)

  def summarise(workdir: str | None) -> dict[str, Any]:
    results = run(o, seed=int(config.get("seed", 0)))
    if workdir:
      paths.makedirs(workdir)
      paths.write_text(paths.join(workdir, "watermark_rl.json"),
                       json.dumps(results, indent=1, sort_keys=True))
    summary = {}
    for name, row in results["arms"].items():
      last = name.rsplit(" ", 1)[-1]
      tag = ("learned" if name.startswith("learned") else
             f"kgw_delta{last}" if name.startswith("KGW") else f"entropy_tau{last}")
      summary |= {f"{tag}/tpr": row["tpr"], f"{tag}/nll_increase": row["nll_increase"],
                  f"{tag}/spoof_success": row["spoof_success"]}
      summary |= {f"{tag}/tpr_eps{e}": v for e, v in row["tpr_attacked"].items()}
    return summary

  return study_task("watermark_rl trains its policy inside evaluate", summarise)


TASKS.register("watermark_rl", build)
