"""The sudoku task: symmetry augmentation, the solve-rate evaluation against an oracle, the parser,
and both configs' smoke runs end to end through ``python -m jaxtok.main``."""

from __future__ import annotations

import fcntl
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.data.sudoku import SudokuSource, count_solutions, is_valid_solution
from jaxtok.tasks import sudoku as task
from tests.test_main import run_main

SPECS = ("maskgit:num_steps=4,temperature=0.0", "maskgit:num_steps=6", "ddpm:num_steps=5",
         "ddpm_cache:num_steps=5", "fhs", "threshold:threshold=0.9",
         "threshold:threshold=0.9,block_length=9", "dcd:threshold=0.9,window=8",
         "recap:num_steps=6,pre_full_iters=2")


@pytest.fixture(scope="module")
def puzzles():
  rows = [SudokuSource(size=3, seed=5, difficulty="hard", split="test")[i] for i in range(3)]
  return np.stack([r["puzzle"] for r in rows]), np.stack([r["solution"] for r in rows])


def oracle_logits(solution):
  """A perfect model: logit 30 on the true digit of every cell, whatever the input."""
  return lambda tokens: 30.0 * jax.nn.one_hot(solution, task.VOCAB)  # [B, 81, 10]


class OracleRecap:
  """The ReCAP hooks of a perfect model (full pass + partial pass at the queried positions)."""

  def __init__(self, solution):
    self.logits = 30.0 * jax.nn.one_hot(solution, task.VOCAB)

  def full(self, tokens):
    return self.logits, {}

  def partial(self, tokens, positions, cache):
    return jnp.take_along_axis(self.logits, positions[..., None], axis=1)


def test_oracle_solves_every_puzzle_with_every_sampler(puzzles):
  puzzle, solution = map(jnp.asarray, puzzles)
  for spec in SPECS:
    fn = jax.jit(lambda r, p, s, spec=spec: task.sample_solutions(
        r, oracle_logits(s), p, spec, OracleRecap(s)))
    grids, stats = fn(jax.random.PRNGKey(0), puzzle, solution)
    assert task.solve_rate(grids, puzzle) == 1.0, spec
    np.testing.assert_array_equal(np.asarray(grids), np.asarray(solution), err_msg=spec)
    assert int(stats["nfe"]) >= 1, spec


def test_float64_gumbel_solver_runs_under_x64(puzzles):
  """FHS with float64 Gumbel inside ``jax.enable_x64`` (its loop carry once turned float64)."""
  puzzle, solution = map(jnp.asarray, puzzles)
  with jax.enable_x64(True):
    grids, stats = jax.jit(lambda r: task.sample_solutions(
        r, oracle_logits(solution), puzzle, "fhs:precision='float64'"))(jax.random.PRNGKey(2))
  assert task.solve_rate(grids, puzzle) == 1.0
  assert int(stats["nfe"]) == int(np.max(np.sum(np.asarray(puzzle) == 0, -1)))


def test_a_wrong_model_solves_nothing(puzzles):
  """A model sure of the wrong digit (true digit + 1 mod 9) fails every puzzle; blanks (token 0)
  are never proposed even when the model prefers them."""
  puzzle, solution = map(jnp.asarray, puzzles)
  wrong = solution % 9 + 1
  grids, _ = jax.jit(lambda r: task.sample_solutions(
      r, oracle_logits(wrong), puzzle, "maskgit:num_steps=4,temperature=0.0"))(
          jax.random.PRNGKey(0))
  assert task.solve_rate(grids, puzzle) == 0.0
  blank_lover = lambda tokens: 30.0 * jax.nn.one_hot(jnp.zeros_like(solution), task.VOCAB)  # noqa: E731
  grids, _ = jax.jit(lambda r: task.sample_solutions(r, blank_lover, puzzle, "fhs"))(
      jax.random.PRNGKey(1))
  assert int(jnp.min(grids)) >= 1
  np.testing.assert_array_equal(np.asarray(grids)[np.asarray(puzzle) > 0],
                                np.asarray(puzzle)[np.asarray(puzzle) > 0])


def test_solve_rate_hand_made(puzzles):
  puzzle, solution = puzzles
  broken = solution.copy()
  broken[0, [0, 1]] = broken[0, [1, 0]]  # swap two cells of the first row: a row stays valid,
  assert task.solve_rate(solution, puzzle) == 1.0  # but the columns do not
  assert task.solve_rate(broken, puzzle) == pytest.approx(2 / 3)


def test_augment_keeps_validity_givens_and_uniqueness(puzzles):
  puzzle, solution = map(jnp.asarray, puzzles)
  p2, s2 = jax.jit(task.augment)(jax.random.PRNGKey(3), puzzle, solution)
  assert bool(jnp.all(is_valid_solution(s2, p2)))
  np.testing.assert_array_equal(np.sum(np.asarray(p2) > 0, -1), np.sum(np.asarray(puzzle) > 0, -1))
  assert not np.array_equal(np.asarray(s2), np.asarray(solution))  # it did move something
  assert count_solutions(np.asarray(p2[0])) == 1
  # Each row got its own symmetry: augmenting two copies of one puzzle gives different grids.
  twin_p = jnp.stack([puzzle[0], puzzle[0]])
  twin_s = jnp.stack([solution[0], solution[0]])
  _, t2 = task.augment(jax.random.PRNGKey(4), twin_p, twin_s)
  assert not np.array_equal(np.asarray(t2[0]), np.asarray(t2[1]))


def test_parse_solver_and_errors():
  assert task.parse_solver("dcd:threshold=0.8,window=4") == ("dcd", {"threshold": 0.8,
                                                                     "window": 4})
  assert task.parse_solver("fhs") == ("fhs", {})
  with pytest.raises(ValueError, match="unknown sudoku solver 'mask'"):
    task.parse_solver("mask:num_steps=3")
  with pytest.raises(ValueError, match="key=value"):
    task.parse_solver("maskgit:8")
  cfg = task.sudoku_config("mdm", smoke=True, steps=1)
  cfg.model.depth = 3
  with pytest.raises(ValueError, match=r"model.\['depth'\]"):
    task.build_model(cfg.model)


@pytest.fixture(scope="module")
def sudoku_data_dir():
  """The smoke configs' sudoku build (64 / 16 puzzles) in the shared test data dir, under a lock."""
  from tests.conftest import SHARED_DATA_DIR

  os.makedirs(SHARED_DATA_DIR, exist_ok=True)
  with open(os.path.join(SHARED_DATA_DIR, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      from jaxtok.data.pipeline import make_iterator

      cfg = task.sudoku_config("mdm", smoke=True, steps=1).data
      for split in ("train", "test"):
        make_iterator("sudoku", split, global_batch_size=8, seed=0, shuffle=False, num_epochs=1,
                      data_dir=SHARED_DATA_DIR, num_train=cfg.num_train, num_test=cfg.num_test)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return SHARED_DATA_DIR


@pytest.mark.parametrize("config", ["sudoku_mdm", "sudoku_ar"])
def test_smoke_run_end_to_end(config, tmp_path, sudoku_data_dir):
  workdir = str(tmp_path / config)
  run_main(workdir, sudoku_data_dir, config=f"configs/generators/{config}.py:smoke")
  with open(os.path.join(workdir, "train_results.json")) as f:
    results = json.load(f)
  specs = task.sudoku_config(config.split("_")[1], smoke=True, steps=1).eval.samplers
  for spec in specs:
    assert 0.0 <= results[f"sudoku/solve_rate/{spec}"] <= 1.0
    assert results[f"sudoku/nfe/{spec}"] >= 1
    assert results[f"sudoku/ms_per_puzzle/{spec}"] > 0
  with open(os.path.join(workdir, "report", "sudoku_solvers.md")) as f:
    assert "| solver |" in f.read()
