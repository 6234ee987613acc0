"""The one training loop for every task.

Sections: setup (mesh, task, data) -> state (sharded init or resume) -> compile (AOT, memory
analysis) -> loop (step, NaN guard, logging, eval, report, checkpoints, SIGTERM) -> finish.

Determinism: the step key is ``fold_in(rng, step)`` inside the task, the data iterator state is
saved with every checkpoint, and metrics.jsonl is cut back to the restored step, so a run killed at
any moment and restarted ends with the same parameters and the same metric lines as one that was
never interrupted (on CPU, where XLA is deterministic).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from jaxtok import paths
from jaxtok.data.batches import eval_batches, split_iterator, to_global, to_host
from jaxtok.train import sharding as shd
from jaxtok.train import validate
from jaxtok.train.checkpoint import Checkpointer, CheckpointError, find_checkpoint_dir
from jaxtok.train.compiler_options import step_options
from jaxtok.train.metrics import MetricWriter, Progress
from jaxtok.train.state import TrainState
from jaxtok.train.task import Task


class NonFiniteError(FloatingPointError):
  """Training produced NaN or inf; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class Setup:
  """What every mode needs: the mesh, the task, the data, and the sharded state layout."""

  config: Any
  workdir: str
  mesh: jax.sharding.Mesh
  task: Task
  example: dict[str, jax.Array] | None
  state_shapes: TrainState
  state_shardings: TrainState
  init_fn: Any
  checkpointer: Checkpointer


def data_iterator(config, split: str, *, train: bool):
  """The process-local iterator for ``split`` of ``config.data`` (train: shuffled, endless)."""
  batch = config.batch_size if train else config.get("eval_batch_size", config.batch_size)
  return split_iterator(config.data, split, batch_size=batch, seed=config.seed, train=train)


# ----------------------------------------------------------------------------------------------
# Setup and state
# ----------------------------------------------------------------------------------------------


def setup(config, workdir: str, task: Task, *, example_split: str = "train") -> Setup:
  """Builds the mesh and the sharded-init function of ``task``; nothing is materialised yet."""
  mesh = shd.make_mesh(dict(config.get("mesh", {"data": -1})))
  example = None
  if task.needs_data:
    validate.check_batch_sizes(config, mesh.shape, jax.process_count())
    it = data_iterator(config, example_split, train=example_split == "train")
    example = to_global(next(iter(it)), mesh, task.prepare_batch)
  rng = jax.random.PRNGKey(config.seed)
  with jax.set_mesh(mesh):
    abstract = jax.eval_shape(task.init, rng, example)
    state_shardings = shd.logical_shardings(abstract, mesh)
    state_shapes = nn.meta.unbox(abstract)
    init_fn = compiled_once(
        jax.jit(lambda r, b: nn.meta.unbox(task.init(r, b)), out_shardings=state_shardings))
  ckpt = Checkpointer(paths.join(workdir, "checkpoints"),
                      max_to_keep=config.get("keep_checkpoints", 3),
                      async_save=config.get("async_checkpoint", True))
  return Setup(config, workdir, mesh, task, example, state_shapes, state_shardings, init_fn, ckpt)


# Init runs once per run, so its compile time is pure overhead. On CPU, XLA's backend optimisation
# level 1 compiles it 2-3x faster than the default (slot_mllm's smoke init: 5.5 s -> 3.0 s) and
# gives bit-identical parameters (tests/train/test_init_compile.py). Level 0 does not: it changes
# the last bits of some normal draws.
INIT_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 1}}


def compiled_once(jitted):
  """``jitted``, lowered and compiled with INIT_COMPILER_OPTIONS for the backend at each call
  (init is called once per run)."""
  def call(*args):
    options = INIT_COMPILER_OPTIONS.get(jax.default_backend(), {})
    return jitted.lower(*args).compile(compiler_options=options)(*args)
  return call


def restore_or_init(s: Setup, *, allow_init: bool):
  """Resume order: latest checkpoint in the workdir -> ``config.init_from`` -> fresh init.

  Returns (state, data_state or None, restored step or None).
  """
  restored = s.checkpointer.restore(s.state_shapes, s.state_shardings)
  if restored is not None:
    state, data_state, step = restored
    logging.info("resumed from %s/%d", s.checkpointer.directory, step)
    return state, data_state, step
  init_from = s.config.get("init_from", "")
  if init_from:
    directory, step = find_checkpoint_dir(init_from)
    other = Checkpointer(directory, async_save=False)
    got = other.restore(s.state_shapes, s.state_shardings, step=step)
    other.close()
    if got is None:
      raise CheckpointError(f"init_from={init_from!r} holds no loadable checkpoint")
    logging.info("initialised from %s (step %d)", directory, got[2])
    # A fresh run from init_from keeps the weights but restarts step, optimiser and data.
    state = got[0]
    if allow_init:
      fresh = s.init_fn(jax.random.PRNGKey(s.config.seed), s.example)
      state = fresh.replace(params=state.params, extra=state.extra)
    return state, None, None
  if not allow_init:
    raise CheckpointError(
        f"no checkpoint in {s.checkpointer.directory} and no --config.init_from: train first "
        f"(--mode=train) or point --config.init_from at a run directory")
  with jax.set_mesh(s.mesh):
    return s.init_fn(jax.random.PRNGKey(s.config.seed), s.example), None, None


def restore_state(config, workdir: str, task: Task, *,
                  example_split: str = "train") -> tuple[TrainState, int]:
  """(state, step) of the latest checkpoint in ``workdir`` (or ``config.init_from``), sharded
  over a fresh mesh; raises CheckpointError when there is none. For reports, studies and the
  generator task's tokenizer."""
  s = setup(config, workdir, task, example_split=example_split)
  try:
    state, _, step = restore_or_init(s, allow_init=False)
  finally:
    s.checkpointer.close()
  return state, int(step if step is not None else jax.device_get(state.step))


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def evaluate(s: Setup, state: TrainState, eval_fn=None) -> dict[str, float]:
  """Averages ``task.eval_step`` over one pass of the test split, weighting by real rows."""
  if s.task.eval_step is None or not s.task.needs_data:
    return {}
  if eval_fn is None:
    eval_fn = jax.jit(s.task.eval_step, compiler_options=step_options(
        bool(s.config.get("ynnpack_dots_only", False))))  # as the training run's eval
  totals: dict[str, float] = {}
  count = 0.0
  batch_size = s.config.get("eval_batch_size", s.config.batch_size)
  for batch in eval_batches(s.config.data, s.config.get("eval_split", "test"),
                            batch_size=batch_size, seed=s.config.seed,
                            prepare=s.task.prepare_batch, mesh=s.mesh):
    n = float(to_host(batch["mask"]).sum())
    metrics = jax.device_get(eval_fn(state, batch))
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + float(v) * n
    count += n
  return {f"eval/{k}": v / max(count, 1.0) for k, v in totals.items()}


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


class _Signals:
  """Turns SIGTERM into a flag the loop checks between steps (save, then exit)."""

  def __init__(self):
    self.stop = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside a notebook worker)
      self._old = None
    return self

  def _handle(self, signum, frame):
    logging.warning("SIGTERM: saving a checkpoint, then exiting")
    self.stop = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


class Preempted(Exception):  # noqa: N818 -- a state the caller acts on, not an error
  """Training stopped by SIGTERM before ``num_steps``, after saving a checkpoint at ``step``.
  ``python -m jaxtok.main`` exits with :data:`EXIT_PREEMPTED` then, so a scheduler can requeue
  the run and a caller can tell it from a finished one."""

  def __init__(self, step: int, num_steps: int):
    super().__init__(f"stopped by SIGTERM at step {step} of {num_steps}; checkpoint saved, rerun "
                     "the same command to resume")
    self.step, self.num_steps = step, num_steps


EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again later


def _finite(metrics: dict[str, Any]) -> bool:
  return all(math.isfinite(float(v)) for v in metrics.values() if np.ndim(v) == 0)


def train(config, workdir: str, task: Task) -> dict[str, float]:
  """Trains ``config.num_steps`` steps (resuming if possible); returns the final metrics."""
  validate.check_steps(config, train=True)
  s = setup(config, workdir, task)
  if not s.task.needs_data:
    raise ValueError(f"task {config.task!r} as configured has no data to train on (set "
                     "config.data.name); use --mode=sample or --mode=eval")
  is_main = jax.process_index() == 0
  writer = MetricWriter(workdir, enabled=is_main)

  # --- state ------------------------------------------------------------------------------------
  state, data_state, restored_step = restore_or_init(s, allow_init=True)
  train_iter = data_iterator(config, "train", train=True)
  if data_state is not None:
    train_iter.set_state(data_state)
  start = int(jax.device_get(state.step))
  if restored_step is not None and start > int(config.num_steps):
    s.checkpointer.close()  # a study would otherwise report a longer run as this one
    raise validate.UserError(
        f"workdir {workdir} holds a checkpoint at step {start}, past num_steps="
        f"{int(config.num_steps)}: its model is not a {int(config.num_steps)}-step run's. Use a "
        f"fresh workdir, or num_steps >= {start} to continue it")
  if restored_step is not None:
    writer.truncate_after(start)
  elif is_main and start == 0 and paths.exists(writer.path):
    writer.truncate_after(0)  # a fresh run in an old workdir without checkpoints

  # --- compile ----------------------------------------------------------------------------------
  experience = s.task.experience or (lambda state, batch: batch)
  with jax.set_mesh(s.mesh):
    example = experience(state, s.example)  # an on-policy task's update batch has its own shape
  batch_shardings = jax.tree.map(lambda _: shd.batch_sharding(s.mesh), example)
  options = step_options(bool(config.get("ynnpack_dots_only", False)))
  if options:
    logging.info("compiler options %s (the config's ynnpack_dots_only)", options)
  with jax.set_mesh(s.mesh):
    step_fn = jax.jit(s.task.train_step, in_shardings=(s.state_shardings, batch_shardings),
                      out_shardings=(s.state_shardings, shd.replicated(s.mesh)),
                      donate_argnums=(0,), compiler_options=options)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, example).compile()
    logging.info("train step compiled in %.1f s", time.perf_counter() - t0)
    _log_memory(compiled)
    eval_fn = (jax.jit(s.task.eval_step, compiler_options=options)
               if s.task.eval_step is not None else None)

  num_steps = int(config.num_steps)
  log_every = int(config.get("log_every", 50))
  eval_every = int(config.get("eval_every", 0))
  report_every = int(config.get("report_every", 0))
  ckpt_every = int(config.get("checkpoint_every", 0))
  progress = Progress(num_steps, start, enabled=is_main)
  last_good = s.checkpointer.latest_step()
  final: dict[str, float] = {}

  def check(step, metrics):
    host = jax.device_get(metrics)
    if not _finite(host):
      s.checkpointer.wait()
      where = (f"{s.checkpointer.directory}/{last_good}" if last_good is not None
               else "none (no checkpoint was saved)")
      raise NonFiniteError(f"non-finite metrics at step {step}: "
                           f"{ {k: float(v) for k, v in host.items() if np.ndim(v) == 0} }; "
                           f"last good checkpoint: {where}")
    return host

  # --- loop -------------------------------------------------------------------------------------
  step = start
  pending = None  # (step, metrics) checked one step late, so dispatch stays asynchronous
  with _Signals() as signals, jax.set_mesh(s.mesh):
    while step < num_steps:
      if signals.stop:
        break
      local = next(train_iter)
      data_state = train_iter.get_state()  # the position *after* this batch
      batch = experience(state, to_global(local, s.mesh, s.task.prepare_batch))
      state, metrics = compiled(state, batch)
      step += 1
      if pending is not None:
        check(*pending)
      pending = (step, metrics)

      row = {}
      at_end = step == num_steps
      if step % log_every == 0 or at_end or (ckpt_every and step % ckpt_every == 0):
        host = check(step, metrics)
        pending = None
        rate = progress.rate(step)
        if step % log_every == 0 or at_end:
          row.update({f"train/{k}": v for k, v in host.items() if np.ndim(v) == 0})
          writer.write(step, {"perf/steps_per_sec": rate}, jsonl=False)
          progress.update(step, host, rate)
      if eval_every and (step % eval_every == 0 or at_end):
        row.update(evaluate(s, state, eval_fn))
      if s.task.report is not None and report_every and (step % report_every == 0 or at_end):
        row.update(s.task.report(state, workdir, step) or {})
      writer.write(step, row)
      final.update(row)
      if (ckpt_every and step % ckpt_every == 0) or at_end:
        s.checkpointer.save(step, state, data_state)
        last_good = step

    if signals.stop and step < num_steps:
      if pending is not None:
        check(*pending)
      s.checkpointer.save(step, state, train_iter.get_state())
      logging.warning("stopped by SIGTERM at step %d; checkpoint saved", step)
  s.checkpointer.close()
  progress.close()
  writer.close()
  if signals.stop and step < num_steps:
    raise Preempted(step, num_steps)
  return final


def _log_memory(compiled) -> None:
  try:
    mem = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 -- not every backend implements it
    mem = None
  if mem is None:
    return
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes")
  parts = [f"{f.replace('_size_in_bytes', '')}={getattr(mem, f, 0) / 2**20:.1f}MiB"
           for f in fields if hasattr(mem, f)]
  logging.info("train step memory: %s", ", ".join(parts))


def run_eval(config, workdir: str, task: Task) -> dict[str, Any]:
  """--mode=eval: the latest checkpoint (or init_from) on the test split, plus the task report."""
  s = setup(config, workdir, task, example_split=config.get("eval_split", "test"))
  state, _, step = restore_or_init(s, allow_init=not s.task.needs_data)
  if s.task.evaluate is not None:
    s.checkpointer.close()
    with jax.set_mesh(s.mesh):
      return s.task.evaluate(state, workdir)
  with jax.set_mesh(s.mesh):
    results = evaluate(s, state)
    if s.task.report is not None:
      results.update(s.task.report(state, workdir, int(jax.device_get(state.step))) or {})
  s.checkpointer.close()
  return results


def run_sample(config, workdir: str, task: Task) -> dict[str, Any]:
  """--mode=sample: the latest checkpoint (or init_from) -> ``task.sample``."""
  s = setup(config, workdir, task)
  if s.task.sample is None:
    raise ValueError(f"task {config.task!r} cannot sample (it defines no sample function)")
  state, _, _ = restore_or_init(s, allow_init=not s.task.needs_data)
  with jax.set_mesh(s.mesh):
    out = s.task.sample(state, workdir)
  s.checkpointer.close()
  return out
