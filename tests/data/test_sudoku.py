"""Procedural sudoku: unique solutions, the verifiable reward, the data-set entry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.data.sudoku import (
  DIFFICULTY,
  SudokuSource,
  count_solutions,
  is_valid_solution,
  make_puzzle,
  render_puzzle,
  solve,
)


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_puzzles_are_uniquely_solvable(difficulty):
  rng = np.random.default_rng(7)
  for _ in range(3):
    puzzle, solution = make_puzzle(rng, DIFFICULTY[difficulty])
    givens = puzzle > 0
    assert givens.sum() >= DIFFICULTY[difficulty]
    assert givens.sum() <= DIFFICULTY[difficulty] + 4  # removal rarely gets stuck early
    assert np.all(puzzle[givens] == solution[givens])
    assert bool(is_valid_solution(solution, puzzle))
    assert count_solutions(puzzle) == 1
    np.testing.assert_array_equal(solve(puzzle), solution)


def test_solver_counts_and_rejects():
  rng = np.random.default_rng(0)
  puzzle, solution = make_puzzle(rng, 40)
  loose = solution.copy()
  loose[:40] = 0  # four empty rows and more: many completions
  assert count_solutions(loose) == 2 and count_solutions(loose, limit=5) == 5
  bad = puzzle.copy()
  bad[0], bad[1] = 5, 5  # two equal digits in a row
  assert count_solutions(bad) == 0 and solve(bad) is None
  with pytest.raises(ValueError, match="81 cells"):
    count_solutions(np.zeros(80))
  with pytest.raises(ValueError, match="num_givens"):
    make_puzzle(rng, 16)


def test_is_valid_solution_reward():
  rng = np.random.default_rng(1)
  puzzle, solution = make_puzzle(rng, 32)
  swapped = solution.copy()
  swapped[[0, 1]] = swapped[[1, 0]]  # same row, so the columns break
  blank = solution.copy()
  blank[10] = 0
  # A valid grid that contradicts the givens: relabel digits 1 <-> 2 everywhere.
  other = np.where(solution == 1, 2, np.where(solution == 2, 1, solution))
  assert np.any(np.isin(puzzle, (1, 2)))  # the puzzle gives some 1 or 2
  grids = jnp.asarray(np.stack([solution, swapped, blank, other]))
  puzzles = jnp.asarray(np.stack([puzzle] * 4))
  reward = jax.jit(is_valid_solution)(grids, puzzles)
  assert reward.tolist() == [True, False, False, False]
  assert bool(is_valid_solution(other))  # without the puzzle only the rules are checked


def test_source_deterministic_and_dataset_entry(tmp_path):
  src = SudokuSource(size=3, seed=5, difficulty="easy")
  a, b = src[1], SudokuSource(size=3, seed=5, difficulty="easy")[1]
  np.testing.assert_array_equal(a["puzzle"], b["puzzle"])
  assert not np.array_equal(src[0]["solution"], a["solution"])
  assert (a["puzzle"] > 0).sum() == 40
  with pytest.raises(ValueError, match="difficulty"):
    SudokuSource(difficulty="evil")
  image = render_puzzle(a["puzzle"], 18)
  assert image.shape == (18, 18, 3) and image[0, 0, 0] == 28 * a["puzzle"][0]

  from jaxtok.data import DATASETS, make_iterator
  assert DATASETS.get("sudoku").is_local
  it = make_iterator("sudoku", "train", global_batch_size=4, seed=0, shuffle=False, num_epochs=1,
                     data_dir=str(tmp_path), num_train=4, num_test=2, process_index=0,
                     process_count=1)
  batch = next(it)
  assert batch["puzzle"].shape == (4, 81) and batch["image"].shape == (4, 36, 36, 3)
  assert np.all(np.asarray(is_valid_solution(batch["solution"], batch["puzzle"])))
  assert set(batch["num_givens"].tolist()) <= set(DIFFICULTY.values())
  with pytest.raises(ValueError, match="multiple of 9"):
    make_iterator("sudoku", "train", global_batch_size=2, seed=0, shuffle=False, num_epochs=1,
                  data_dir=str(tmp_path), image_size=32, num_train=2, num_test=2,
                  process_index=0, process_count=1)
