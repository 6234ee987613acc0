"""The ``unmasking`` task: a learned unmasking policy for the frozen sudoku MDM, trained by GRPO.

The environment is a finished ``sudoku`` run (``unmask.mdm_config`` + ``unmask.mdm_workdir``,
restored by the loop's own restore; without a workdir a seed-initialised MDM stands in, for smoke
runs only). Every step: a batch of training puzzles, ``group_size`` policy-driven decodes of each
(:func:`jaxtok.rl.unmasking.rollout`, jitted, keys from ``state.step_rng()``), the reward
``solved * (1 - step_weight * NFE / blanks)`` checked on device, group-relative advantages, then
``epochs`` updates of the clipped surrogate with one step's Bernoulli decisions as one action.

``report`` decodes held-out puzzles with the policy at several logit biases (the accuracy/NFE
knob), and with the confidence samplers already in jaxtok at several budgets (MaskGIT with
``num_steps`` K, Fast-dLLM threshold decoding), all with greedy tokens and per-row NFE; it writes
``report/unmasking.md`` and ``report/unmasking.png`` (solve rate against mean NFE) and returns the
policy's solve rate beside threshold decoding's at the same NFE (linear between its two nearest
thresholds) and the best baselines' (their upper concave hull: what a random per-puzzle mix of two
baseline settings reaches).
"""

from __future__ import annotations

import io
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.config_args import load_config, with_defaults
from jaxtok.data.batches import batch_sharding, to_host
from jaxtok.data.sudoku import is_valid_solution
from jaxtok.rl import unmasking as um
from jaxtok.rl.grpo import LOSS_NORMS, group_advantages, policy_loss
from jaxtok.tasks import sudoku
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.train import loop
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

UNMASK_DEFAULTS = {
    "mdm_config": "generators/sudoku_mdm.py", "mdm_workdir": "", "group_size": 8,
    "max_steps": 64, "step_weight": 0.5, "clip_eps": 0.2, "epochs": 1, "loss_norm": "token",
    "dim": 32, "num_heads": 2, "init_threshold": 0.9, "init_slope": 4.0, "init_bias": -2.0,
}
EVAL_DEFAULTS = {"num_puzzles": 128, "biases": "-2,-1,0,1,2", "maskgit_steps": "4,8,12,16,24,32",
                 "thresholds": "0.5,0.7,0.8,0.9,0.95,0.99", "seed": 0}
OPT_DEFAULTS = {"lr": 1e-3, "warmup_steps": 10, "grad_clip": 1.0, "b1": 0.9, "b2": 0.99,
                "weight_decay": 0.0, "final_lr_fraction": 1.0}


def _floats(text: str, what: str) -> list[float]:
  try:
    return [float(x) for x in str(text).split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"unmask_eval.{what}={text!r}: expected comma-separated numbers") from None


def _check(u, ev) -> None:
  if int(u.group_size) < 2:
    raise ValueError(f"unmask.group_size must be >= 2 (GRPO's group baseline), got "
                     f"{u.group_size}")
  if u.loss_norm not in LOSS_NORMS:
    raise ValueError(f"unmask.loss_norm={u.loss_norm!r}; valid: {LOSS_NORMS}")
  if not 0.0 <= float(u.step_weight) < 1.0:
    raise ValueError(f"unmask.step_weight must be in [0, 1), got {u.step_weight}")
  if int(u.max_steps) < 1 or int(u.epochs) < 1:
    raise ValueError(f"unmask.max_steps and unmask.epochs must be >= 1, got {u.max_steps}, "
                     f"{u.epochs}")
  if not 0.0 <= float(u.init_threshold) < 1.0:
    raise ValueError(f"unmask.init_threshold must be in [0, 1) (0: start from init_bias "
                     f"instead), got {u.init_threshold}")
  for what in ("biases", "maskgit_steps", "thresholds"):
    _floats(ev[what], what)


def load_mdm(config_path: str, workdir: str, seed: int):
  """(MaskedTransformer, params as numpy, step or None) of the sudoku MDM run in ``workdir``;
  ``workdir=''`` gives a seed-initialised MDM (smoke runs)."""
  mcfg = load_config(config_path)
  if mcfg.get("task") != "sudoku" or mcfg.model.kind != "mdm":
    raise ValueError(f"unmask.mdm_config {config_path!r} is not a sudoku MDM config (task "
                     f"{mcfg.get('task')!r}, model.kind {mcfg.get('model', {}).get('kind')!r})")
  model = sudoku.build_model(mcfg.model)
  if not workdir:
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, sudoku.CELLS), jnp.int32))
    return model, jax.device_get(nn.unbox(params["params"])), None
  if not paths.exists(workdir):
    raise FileNotFoundError(f"unmask.mdm_workdir {workdir!r} does not exist: train the MDM there "
                            f"first (python -m jaxtok.main --config=configs/{config_path} "
                            f"--workdir={workdir})")
  mcfg.async_checkpoint = False
  state, step = loop.restore_state(mcfg, os.fspath(workdir), sudoku.make_task(mcfg))
  return model, jax.device_get(nn.unbox(state.params)), step


def _envelope_at(curve: list[tuple[float, float]], nfe: float) -> float:
  """The best baseline solve rate reachable at mean NFE <= ``nfe``: the upper concave hull of the
  (nfe, solve rate) points (a mixture of two decoders, chosen per puzzle at random, reaches any
  point on the segment between them), made non-decreasing (a larger budget can always run a
  cheaper decoder). nan below the cheapest point."""
  hull: list[tuple[float, float]] = []
  for p in sorted(curve):
    while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                              >= (p[0] - hull[-2][0]) * (hull[-1][1] - hull[-2][1])):
      hull.pop()  # hull[-1] lies on or under the segment hull[-2] -> p
    hull.append(p)
  if not hull or nfe < hull[0][0]:
    return float("nan")
  best = hull[0][1]
  for (x0, y0), (x1, y1) in zip(hull, hull[1:]):
    if nfe <= x1:
      return max(best, y0 + (y1 - y0) * (nfe - x0) / max(x1 - x0, 1e-9))
    best = max(best, y1)
  return max(best, hull[-1][1])


def _curve_at(curve: list[tuple[float, float]], nfe: float) -> float:
  """One decoder family's solve rate at ``nfe``, linear between its two nearest settings; nan
  outside the family's range."""
  pts = sorted(curve)
  for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
    if x0 <= nfe <= x1:
      return y0 + (y1 - y0) * (nfe - x0) / max(x1 - x0, 1e-9)
  return float("nan")


def _plot(rows: list[dict[str, Any]]) -> bytes:
  """PNG bytes: held-out solve rate against mean NFE, one curve per decoder family."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for family, style in (("policy", "o-"), ("policy_greedy", "*"), ("maskgit", "s--"),
                        ("threshold", "^--")):
    pts = sorted((r["nfe"], r["solve_rate"]) for r in rows if r["family"] == family)
    if pts:
      ax.plot(*zip(*pts), style, label=family, markersize=12 if style == "*" else 6)
  ax.set_xlabel("mean NFE per puzzle (model calls)")
  ax.set_ylabel("held-out solve rate")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  buf = io.BytesIO()  # rendered to bytes, then written whole (the workdir may be gs://...)
  fig.savefig(buf, format="png", dpi=90)
  plt.close(fig)
  return buf.getvalue()


def build(config) -> Task:
  u = with_defaults(config, "unmask", UNMASK_DEFAULTS)
  ev = with_defaults(config, "unmask_eval", EVAL_DEFAULTS)
  _check(u, ev)
  opt = with_defaults(config, "optimizer", OPT_DEFAULTS)
  mdm, mdm_params, mdm_step = load_mdm(u.mdm_config, u.mdm_workdir, int(config.seed))
  policy = um.UnmaskPolicy(length=sudoku.CELLS, dim=int(u.dim), num_heads=int(u.num_heads),
                           init_threshold=float(u.init_threshold) or None,
                           init_slope=float(u.init_slope), init_bias=float(u.init_bias))
  tx = build_optimizer(opt, int(config.num_steps))
  g, max_steps = int(u.group_size), int(u.max_steps)

  def logits_fn(params, puzzle):
    base = sudoku.mdm_logits_fn(mdm, {"params": params}, puzzle)
    return lambda tokens: base(tokens).at[..., 0].set(-1e9)  # a blank is never proposed

  def decode(policy_params, params, rng, puzzle, bias=0.0, greedy=False):
    puzzle = puzzle.astype(jnp.int32)
    init = jnp.where(puzzle == 0, sudoku.MASK_ID, puzzle)
    roll = um.rollout(rng, logits_fn(params, puzzle),
                      lambda f: policy.apply({"params": policy_params}, f), init,
                      mask_id=sudoku.MASK_ID, max_steps=max_steps, bias=bias, greedy=greedy)
    return roll, is_valid_solution(roll.tokens, puzzle)

  decode_jit = jax.jit(decode, static_argnames=("greedy",))

  def init(rng, example_batch=None) -> TrainState:
    del example_batch
    k_init, k_state = jax.random.split(rng)
    params = policy.init(k_init, jnp.zeros((1, sudoku.CELLS, um.NUM_FEATURES)))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def experience(state: TrainState, batch):
    sharding = batch_sharding(batch["puzzle"].sharding.mesh)

    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    puzzle = np.repeat(to_host(batch["puzzle"]).astype(np.int32), g, axis=0)
    real = np.repeat(to_host(batch["mask"]), g, axis=0)
    roll, solved = decode_jit(nn.unbox(state.params), mdm_params,
                              jax.random.fold_in(state.step_rng(), 1), jnp.asarray(puzzle))
    rewards = um.reward(solved, roll.nfe, jnp.sum(puzzle == 0, axis=-1), float(u.step_weight))
    adv = np.asarray(group_advantages(rewards, g)) * real
    out = {"features": roll.features, "masked": roll.masked, "decisions": roll.decisions,
           "active": roll.active, "old_logp": roll.logp, "advantages": adv, "rewards": rewards,
           "solved": solved.astype(jnp.float32), "nfe": roll.nfe.astype(jnp.float32)}
    return {k: put(jax.device_get(v)) for k, v in out.items()}

  def loss_fn(params, batch):
    logp = um.step_logprobs(lambda f: policy.apply({"params": params}, f), batch["features"],
                            batch["decisions"], batch["masked"])
    loss, metrics = policy_loss(logp, batch["old_logp"], batch["advantages"], batch["active"],
                                clip_eps=float(u.clip_eps), loss_norm=u.loss_norm)
    return loss, metrics

  def train_step(state: TrainState, batch):
    for _ in range(int(u.epochs)):
      state, metrics = supervised_step(state, loss_fn, batch)
    metrics.update(reward=batch["rewards"].mean(), solve_rate=batch["solved"].mean(),
                   nfe=batch["nfe"].mean())
    return state, metrics

  def heldout():
    puzzles = []
    for batch in eval_batches(config):
      real = to_host(batch["mask"])
      puzzles.append(to_host(batch["puzzle"])[real])
      if sum(len(p) for p in puzzles) >= int(ev.num_puzzles):
        break
    return np.concatenate(puzzles)[:int(ev.num_puzzles)].astype(np.int32)

  def baseline(spec: str, puzzle, rng):
    grids, stats = sudoku.sample_solutions(rng, logits_fn(mdm_params, puzzle), puzzle, spec)
    return is_valid_solution(grids, puzzle), um.row_nfe(stats["committed"])

  def report(state: TrainState, workdir: str | None = None, step: int = 0) -> dict[str, Any]:
    del step
    puzzle = jnp.asarray(heldout())
    rng = jax.random.PRNGKey(int(ev.seed))
    params = nn.unbox(state.params)
    rows = []
    for bias in _floats(ev.biases, "biases"):
      roll, solved = decode_jit(params, mdm_params, rng, puzzle, bias)
      rows.append({"family": "policy", "spec": f"policy bias={bias:+g}", "bias": bias,
                   "solve_rate": float(solved.mean()), "nfe": float(roll.nfe.mean())})
    roll, solved = decode_jit(params, mdm_params, rng, puzzle, 0.0, greedy=True)
    rows.append({"family": "policy_greedy", "spec": "policy greedy (p > 1/2)", "bias": 0.0,
                 "solve_rate": float(solved.mean()), "nfe": float(roll.nfe.mean())})
    specs = ([("maskgit", f"maskgit:num_steps={int(k)},temperature=0.0")
              for k in _floats(ev.maskgit_steps, "maskgit_steps")]
             + [("threshold", f"threshold:threshold={t}")
                for t in _floats(ev.thresholds, "thresholds")])
    for family, spec in specs:
      solved, nfe = jax.jit(baseline, static_argnums=0)(spec, puzzle, rng)
      rows.append({"family": family, "spec": spec, "solve_rate": float(solved.mean()),
                   "nfe": float(nfe.mean())})
    curve = [(r["nfe"], r["solve_rate"]) for r in rows if r["family"] in ("maskgit", "threshold")]
    thresholds = [(r["nfe"], r["solve_rate"]) for r in rows if r["family"] == "threshold"]
    policy_rows = [r for r in rows if r["family"] == "policy"]
    at0 = min(policy_rows, key=lambda r: abs(r["bias"]))  # the trained policy, no bias
    out = {"heldout/policy_solve_rate": at0["solve_rate"], "heldout/policy_nfe": at0["nfe"],
           "heldout/threshold_at_policy_nfe": _curve_at(thresholds, at0["nfe"]),
           "heldout/baseline_at_policy_nfe": _envelope_at(curve, at0["nfe"]),
           "heldout/puzzles": int(puzzle.shape[0])}
    if workdir is not None and jax.process_index() == 0:
      lines = [f"held-out puzzles: {int(puzzle.shape[0])}; MDM step {mdm_step}", "",
               "| decoder | solve rate | mean NFE | threshold curve at this NFE | "
               "best mix of baselines at this NFE |", "|---|---|---|---|---|"]
      for r in rows:
        lines.append(f"| `{r['spec']}` | {r['solve_rate']:.3f} | {r['nfe']:.2f} | "
                     f"{_curve_at(thresholds, r['nfe']):.3f} | "
                     f"{_envelope_at(curve, r['nfe']):.3f} |")
      paths.write_text(paths.join(workdir, "report", "unmasking.md"), "\n".join(lines) + "\n")
      paths.write_bytes(paths.join(workdir, "report", "unmasking.png"), _plot(rows))
    return out

  def evaluate(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    return report(state, workdir)

  return Task(init=init, train_step=train_step, report=report, evaluate=evaluate,
              experience=experience)


TASKS.register("unmasking", build)
