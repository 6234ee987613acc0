"""The Task contract: what a family of experiments gives the loop.

A task is built from the config (``jaxtok.tasks`` builds it; only tasks and ``main`` read
configs) and hands the loop pure functions. The loop owns jit, shardings, checkpoints, logging and
signals. The contract lives here, in ``train``, so the loop never imports a task.

    task = jaxtok.tasks.build(config)
    rows = task.prepare_batch(rows)    # optional: every host batch, before it goes to devices
    state = task.init(rng, example_batch)               # TrainState (params may be boxed)
    batch = task.experience(state, batch)  # optional: rollouts + rewards from the current policy
    state, metrics = task.train_step(state, batch)      # jitted by the loop
    metrics = task.eval_step(state, batch)              # jitted by the loop, averaged over batches
    task.report(state, workdir, step)                   # host-side: pictures, evaluations
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxtok.train.state import TrainState

Batch = dict[str, jax.Array]
HostBatch = dict[str, np.ndarray]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """Pure functions for one experiment family.

  Attributes:
    init: ``(rng, example_batch) -> TrainState``. Called under ``jax.eval_shape`` first to get
      shapes and logical axes, then jitted with output shardings; never materialises unsharded.
    train_step: ``(state, batch) -> (state, metrics)``; metrics are scalars.
    eval_step: ``(state, batch) -> metrics`` of scalars, averaged over the eval set by the loop;
      None when the task has no per-batch evaluation.
    report: ``(state, workdir, step) -> dict of scalars`` run on the host every
      ``config.report_every`` steps and at the end (pictures, held-out metrics). May be None.
    sample: ``(state, workdir) -> dict`` for ``--mode=sample``; None if the task cannot sample.
    evaluate: ``(state, workdir) -> dict`` for ``--mode=eval`` when the task evaluates itself
      (e.g. perplexity of a text file); None means the loop averages ``eval_step`` over the
      test split and then calls ``report``.
    needs_data: False for tasks that neither train nor evaluate on a data set (e.g. sampling
      from a pretrained LM).
    prepare_batch: ``(host batch) -> host batch``, dicts of numpy arrays of this process's rows,
      applied by the loop to every batch (train, eval and ``init``'s example) *before* it becomes
      a global device array: e.g. gather pre-computed tokens by ``index`` from a memory-mapped
      table and drop the images the step does not need. Row-wise (it must keep the batch size
      and ``mask``) and deterministic, so resumption stays exact. None: batches pass unchanged.
    experience: ``(state, global batch) -> global batch`` for on-policy tasks (RL): called by the
      loop before every ``train_step`` with the current state, it samples rollouts with jitted
      samplers, scores them (rewards may be computed on the host) and returns the batch the
      update consumes. Must be a pure function of (state, batch) -- keys from
      ``state.step_rng()`` -- so resumption stays exact. The loop compiles ``train_step`` for
      the batch it returns on the example batch. None: the data batch is the update's batch.
  """

  init: Callable[[jax.Array, Batch], TrainState]
  train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
  eval_step: Callable[[TrainState, Batch], Metrics] | None = None
  report: Callable[[TrainState, str, int], dict[str, Any]] | None = None
  sample: Callable[[TrainState, str], dict[str, Any]] | None = None
  evaluate: Callable[[TrainState, str], dict[str, Any]] | None = None
  needs_data: bool = True
  prepare_batch: Callable[[HostBatch], HostBatch] | None = None
  experience: Callable[[TrainState, Batch], Batch] | None = None
