"""Sudoku with a verifiable reward: a masked-diffusion solver and an autoregressive baseline.

Two model kinds on the same data, budget (steps x batch) and backbone size (``config.model.kind``):

* ``mdm``: a bidirectional :class:`~jaxtok.generators.masked.MaskedTransformer` over the 81
  cells trained with the continuous-time masked-diffusion loss ("Simple and Effective Masked
  Diffusion Language Models", MDLM, Sahoo et al., 2024, Eq. 10-11; linear schedule weight
  ``1 / t``), conditioned on the givens: the givens are never masked (the model always sees them)
  and only blanks carry loss. Sampling starts from ``init = where(puzzle == 0, [MASK], puzzle)``,
  so every sampler of :mod:`jaxtok.generators.samplers` keeps the givens by contract.
* ``ar``: :class:`PrefixCausalTransformer`, a causal transformer with the same blocks and learned
  absolute positions over ``[puzzle (81, 0 = blank); solution (81)]``: next-token cross-entropy
  on the blank cells of the solution; decoding is greedy left to right with the givens forced,
  one model call (full recomputation, no KV cache) per cell.

Training augments every batch with sudoku symmetries that keep validity and uniqueness (digit
relabelling, row permutations within bands, band permutations, the same for columns, transpose),
so 4096 stored puzzles behave like a much larger set.

``report`` solves held-out puzzles with each sampler spec of ``config.eval.samplers``
(``'name'`` or ``'name:key=value,...'``, names and options from
``jaxtok.generators.samplers.registry``, checked when the task is built) and returns the solve
rate (``is_valid_solution`` with the givens kept), NFE and wall time per puzzle; it also writes
``report/sudoku_solvers.md``.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok import paths
from jaxtok.data.batches import to_host
from jaxtok.data.sudoku import is_valid_solution
from jaxtok.generators import samplers as smp
from jaxtok.generators.losses import masked_diffusion_loss, next_token_loss
from jaxtok.generators.masked import MaskedTransformer, RecapFns
from jaxtok.generators.prefix_causal import PrefixCausalTransformer
from jaxtok.generators.samplers import registry
from jaxtok.generators.samplers.autoregressive import filter_logits
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

VOCAB = 10  # 0 = blank (puzzles only), 1..9 digits
MASK_ID = VOCAB  # the MaskedTransformer's [MASK]
CELLS = 81
KINDS = ("mdm", "ar")
MODEL_KEYS = ("kind", "dim", "num_layers", "num_heads", "mlp_dim", "dropout")


def build_model(model_cfg) -> nn.Module:
  """The ``mdm`` or ``ar`` model of ``config.model``; unknown keys or kinds raise."""
  unknown = sorted(set(model_cfg) - set(MODEL_KEYS))
  if unknown:
    raise ValueError(f"unknown config keys model.{unknown}; valid: {list(MODEL_KEYS)}")
  if model_cfg.kind not in KINDS:
    raise ValueError(f"sudoku model.kind must be one of {KINDS}, got {model_cfg.kind!r}")
  size = dict(dim=model_cfg.dim, num_layers=model_cfg.num_layers,
              num_heads=model_cfg.num_heads, mlp_dim=model_cfg.mlp_dim,
              dropout=model_cfg.get("dropout", 0.0))
  if model_cfg.kind == "mdm":
    return MaskedTransformer(vocab_size=VOCAB, seq_len=CELLS, cond_dropout=0.0, **size)
  return PrefixCausalTransformer(vocab_size=VOCAB, seq_len=2 * CELLS - 1, **size)


# ----------------------------------------------------------------------------------------------
# Symmetry augmentation
# ----------------------------------------------------------------------------------------------


def _line_order(rng: jax.Array) -> jnp.ndarray:  # int [9]: bands permuted, lines within bands
  k_band, k_line = jax.random.split(rng)
  bands = jax.random.permutation(k_band, 3)
  within = jax.vmap(lambda k: jax.random.permutation(k, 3))(jax.random.split(k_line, 3))
  return (bands[:, None] * 3 + within).reshape(9)


def augment(
    rng: jax.Array,
    puzzle: jnp.ndarray,  # int [B, 81], 0 = blank
    solution: jnp.ndarray,  # int [B, 81]
) -> tuple[jnp.ndarray, jnp.ndarray]:  # the same puzzles under one random symmetry per row
  """Applies a random validity- and uniqueness-preserving sudoku symmetry to each row."""

  def one(key, p, s):
    k_digit, k_row, k_col, k_t = jax.random.split(key, 4)
    relabel = jnp.concatenate([jnp.zeros(1, jnp.int32),
                               1 + jax.random.permutation(k_digit, 9).astype(jnp.int32)])
    index = _line_order(k_row)[:, None] * 9 + _line_order(k_col)[None, :]  # [9, 9]
    index = jnp.where(jax.random.bernoulli(k_t), index.T, index).reshape(CELLS)
    return relabel[p[index]], relabel[s[index]]

  keys = jax.random.split(rng, puzzle.shape[0])
  return jax.vmap(one)(keys, puzzle.astype(jnp.int32), solution.astype(jnp.int32))


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def mdm_logits_fn(model: MaskedTransformer, variables, puzzle: jnp.ndarray, train=False,
                  rngs=None):
  """``logits_fn(tokens [B, 81]) -> [B, 81, 10]`` with the givens always visible."""
  given = puzzle > 0

  def logits_fn(tokens):
    tokens = jnp.where(given, puzzle, tokens)
    return model.apply(variables, tokens, None, train, rngs=rngs)

  return logits_fn


def loss_terms(model, kind: str, params, rng, puzzle, solution, row_mask, *, alpha: str,
               train: bool):
  """(loss, aux) for one batch; loss counts the blank cells of real rows only."""
  blanks = (puzzle == 0) & row_mask[:, None]  # [B, 81]
  k_loss, k_drop = jax.random.split(rng)
  rngs = {"dropout": k_drop} if train else None
  if kind == "mdm":
    logits_fn = mdm_logits_fn(model, {"params": params}, puzzle, train, rngs)
    return masked_diffusion_loss(k_loss, logits_fn, solution, mask_id=MASK_ID, alpha=alpha,
                                 weights=blanks)
  seq = jnp.concatenate([puzzle, solution], axis=1)  # [B, 162]
  logits = model.apply({"params": params}, seq[:, :-1], train, rngs=rngs)  # [B, 161, V]
  logits = jnp.concatenate([logits, jnp.zeros_like(logits[:, :1])], axis=1)  # align to seq
  weights = jnp.concatenate([jnp.zeros_like(blanks), blanks], axis=1)
  return next_token_loss(logits, seq, weights=weights)


# ----------------------------------------------------------------------------------------------
# Solving held-out puzzles
# ----------------------------------------------------------------------------------------------

_NOT_A_DIGIT = -1e9  # logit of token 0 (a blank) when solving: never proposed


def solver_inputs(kind: str) -> tuple[str, ...]:
  """The sampler kinds (``registry.INPUTS``) a model of ``kind`` can drive."""
  return ("logits", "recap") if kind == "mdm" else ("lm",)


def check_solvers(specs, kind: str, precision: str = ""
                  ) -> list[tuple[str, registry.Sampler, object]]:
  """(spec, sampler, options) of every spec; raises naming the valid samplers or options.
  ``precision`` (when set) is every sampler's Gumbel precision unless the spec names one."""
  base = {"precision": precision} if precision else None
  out = [(spec, *registry.parse(spec, inputs=solver_inputs(kind), base=base)) for spec in specs]
  for spec, sampler, options in out:
    if sampler.inputs == "lm" and (options.stop_tokens or not (
        options.greedy or options.temperature > 0)):
      raise ValueError(f"{spec!r}: a sudoku solution has 81 cells (no stop_tokens), and "
                       "decoding needs temperature > 0 or greedy=True")
  return out


def sample_solutions(
    rng: jax.Array,
    logits_fn,  # tokens [B, 81] -> logits [B, 81, 10]
    puzzle: jnp.ndarray,  # int [B, 81], 0 = blank
    spec: str,
    recap: RecapFns | None = None,
    precision: str = "",
) -> tuple[jnp.ndarray, dict]:  # grids int32 [B, 81], stats (nfe, ...)
  """Fills the blanks of ``puzzle`` with the masked-model sampler named by ``spec``."""
  (_, sampler, options), = check_solvers([spec], "mdm", precision)
  puzzle = puzzle.astype(jnp.int32)
  init = jnp.where(puzzle == 0, MASK_ID, puzzle)

  def digits_only(logits):  # [B, K, 10]
    return logits.at[..., 0].set(_NOT_A_DIGIT)

  hooks = None
  if recap is not None:
    def full(tokens):
      logits, cache = recap.full(tokens)
      return digits_only(logits), cache

    hooks = registry.RecapHooks(full, lambda t, p, c: digits_only(recap.partial(t, p, c)))
  return registry.run(sampler, options, rng, init, mask_id=MASK_ID,
                      logits_fn=lambda tokens: digits_only(logits_fn(tokens)), recap=hooks)


def ar_solve(
    rng: jax.Array,
    model: PrefixCausalTransformer,
    variables,
    puzzle: jnp.ndarray,  # int [B, 81], 0 = blank
    options,  # registry.SAMPLERS["ar"].options: temperature, top_k, top_p, greedy
) -> tuple[jnp.ndarray, dict]:  # grids int32 [B, 81], stats (nfe = 81: one call per cell)
  """Left-to-right decoding after the puzzle prefix, givens forced; full recomputation."""
  puzzle = puzzle.astype(jnp.int32)
  b = puzzle.shape[0]
  seq = jnp.concatenate([puzzle, jnp.zeros_like(puzzle)], axis=1)  # [B, 162]

  def step(carry, i):
    seq, rng = carry
    rng, key = jax.random.split(rng)
    logits = model.apply(variables, seq[:, :-1])  # [B, 161, V]
    logits = jax.lax.dynamic_index_in_dim(logits, CELLS - 1 + i, axis=1, keepdims=False)
    logits = logits.at[:, 0].set(_NOT_A_DIGIT)
    if options.greedy:
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      token = smp.sample_categorical(key, filter_logits(
          logits, temperature=options.temperature, top_k=options.top_k, top_p=options.top_p))
    given = jax.lax.dynamic_index_in_dim(puzzle, i, axis=1, keepdims=False)  # [B]
    token = jnp.where(given > 0, given, token)
    seq = jax.lax.dynamic_update_index_in_dim(seq, token[:, None], CELLS + i, axis=1)
    return (seq, rng), None

  (seq, _), _ = jax.lax.scan(step, (seq, rng), jnp.arange(CELLS))
  stats = {"nfe": jnp.int32(CELLS), "steps": jnp.int32(CELLS),
           "committed": jnp.ones((b, CELLS), jnp.int32)}
  return seq[:, CELLS:], stats


def solve_rate(grids, puzzles) -> float:
  """Fraction of grids that are valid sudoku solutions keeping the puzzles' givens."""
  return float(np.mean(np.asarray(is_valid_solution(np.asarray(grids), np.asarray(puzzles)))))


def solver_specs(config, kind: str) -> list[str]:
  return list(config.get("eval", {}).get("samplers", ("fhs",) if kind == "mdm" else ("ar",)))


def solver_precision(config) -> str:
  return str(config.get("eval", {}).get("precision", ""))


def evaluate_solvers(config, model, kind: str, params, workdir: str | None) -> dict[str, float]:
  """Solve rate, NFE and wall time per puzzle for every solver spec on held-out puzzles."""
  ev = config.get("eval", ml_collections.ConfigDict())
  specs = solver_specs(config, kind)
  limit = int(ev.get("num_puzzles", 64))
  batches = []
  for batch in eval_batches(config):
    batches.append(batch)
    if sum(int(to_host(b["mask"]).sum()) for b in batches) >= limit:
      break
  rows, out, seen = [], {}, 0
  solvers = check_solvers(specs, kind, solver_precision(config))
  for index, (spec, sampler, options) in enumerate(solvers):
    if sampler.inputs == "lm":
      fn = jax.jit(lambda params, r, p, o=options: ar_solve(r, model, {"params": params}, p, o))
    else:
      def fn_(params, r, p, spec=spec, recap_solver=sampler.inputs == "recap"):
        variables = {"params": params}
        recap = RecapFns(model, variables) if recap_solver else None
        return sample_solutions(r, mdm_logits_fn(model, variables, p), p, spec, recap,
                                solver_precision(config))
      fn = jax.jit(fn_)
    solved = seen = nfe = cells_ok = cells = 0
    seconds = 0.0
    compiled = None
    for i, batch in enumerate(batches):
      rng = jax.random.fold_in(jax.random.PRNGKey(int(ev.get("seed", 0))), index * 1000 + i)
      if compiled is None:  # eval batches share one shape; timing excludes compilation
        compiled = fn.lower(params, rng, batch["puzzle"]).compile()
      t0 = time.perf_counter()
      grids, stats = compiled(params, rng, batch["puzzle"])
      grids = jax.block_until_ready(grids)
      seconds += time.perf_counter() - t0
      real = to_host(batch["mask"])
      grids, puzzle = to_host(grids), to_host(batch["puzzle"])
      ok = np.asarray(is_valid_solution(grids, puzzle))
      blank = (puzzle == 0) & real[:, None]
      cells_ok += int(np.sum((grids == to_host(batch["solution"])) & blank))
      cells += int(blank.sum())
      solved += int(ok[real].sum())
      seen += int(real.sum())
      nfe += int(jax.device_get(stats["nfe"]))
    n_batches = max(len(batches), 1)
    row = {"solve_rate": solved / max(seen, 1), "cell_accuracy": cells_ok / max(cells, 1),
           "nfe": nfe / n_batches,
           "ms_per_puzzle": 1e3 * seconds / max(seen, 1)}
    rows.append((spec, row))
    out.update({f"sudoku/{k}/{spec}": v for k, v in row.items()})
  if workdir is not None and jax.process_index() == 0:
    paths.write_text(paths.join(workdir, "report", "sudoku_solvers.md"),
                     solver_table(rows, seen))
  return out


def solver_table(rows, num_puzzles: int) -> str:
  """A markdown table of (spec, {solve_rate, nfe, ms_per_puzzle}) rows."""
  lines = [f"held-out puzzles: {num_puzzles}", "",
           "| solver | solve rate | blank-cell accuracy | NFE | ms / puzzle |",
           "|---|---|---|---|---|"]
  for spec, r in rows:
    lines.append(f"| `{spec}` | {r['solve_rate']:.3f} | {r['cell_accuracy']:.3f} | "
                 f"{r['nfe']:.1f} | {r['ms_per_puzzle']:.2f} |")
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------


def _check_batch(batch):
  for key in ("puzzle", "solution"):
    if key not in batch or batch[key].shape[-1] != CELLS:
      raise ValueError(f"the sudoku task wants batches with '{key}' [B, 81] (DATASETS['sudoku']);"
                       f" got keys {sorted(batch)}")


def make_task(config) -> Task:
  """The sudoku Task of ``config`` (configs/generators/sudoku_mdm.py, sudoku_ar.py)."""
  model = build_model(config.model)
  kind = config.model.kind
  alpha = config.get("loss", ml_collections.ConfigDict({"alpha": "linear"})).get("alpha", "linear")
  use_augment = bool(config.get("augment", True))
  tx = build_optimizer(config.optimizer, int(config.num_steps))
  # A bad spec fails now, not after training.
  check_solvers(solver_specs(config, kind), kind, solver_precision(config))

  def init(rng, batch):
    _check_batch(batch)
    k_init, k_state = jax.random.split(rng)
    if kind == "mdm":
      params = model.init(k_init, batch["solution"].astype(jnp.int32))["params"]
    else:
      params = model.init(k_init, jnp.zeros((1, 2 * CELLS - 1), jnp.int32))["params"]
    return TrainState.create(params=params, tx=tx, rng=k_state)

  def train_step(state, batch):
    rng = state.step_rng()
    k_aug, k_loss = jax.random.split(rng)
    puzzle, solution = batch["puzzle"].astype(jnp.int32), batch["solution"].astype(jnp.int32)
    if use_augment:
      puzzle, solution = augment(k_aug, puzzle, solution)
    mask = batch.get("mask", jnp.ones(puzzle.shape[:1], bool))

    def loss_fn(params):
      return loss_terms(model, kind, params, k_loss, puzzle, solution, mask, alpha=alpha,
                        train=True)

    return supervised_step(state, loss_fn)

  def eval_step(state, batch):
    rng = jax.random.PRNGKey(config.seed + 1)  # a fixed noise draw: comparable across steps
    loss, aux = loss_terms(model, kind, state.params, rng, batch["puzzle"].astype(jnp.int32),
                           batch["solution"].astype(jnp.int32), batch["mask"], alpha=alpha,
                           train=False)
    return {"loss": loss, **{k: v for k, v in aux.items() if jnp.ndim(v) == 0}}

  def report(state, workdir, step):
    return evaluate_solvers(config, model, kind, state.params, workdir)

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("sudoku", make_task)
