"""Procedurally generated 9x9 sudoku with unique solutions, and a verifiable reward.

Generation: a random complete grid (randomised backtracking), then cells are blanked in random
order, keeping a blank only if the puzzle still has exactly one solution (a bitmask backtracking
solver with the fewest-candidates heuristic that stops counting at 2). Difficulty is the number
of givens: ``easy`` 40, ``medium`` 32, ``hard`` 26 (fewer givens = more to infer; removal stops
early if no further cell can be blanked uniquely, so a puzzle may keep a few more givens).

Token layout: 81 cells in row-major order, values ``1..9`` are digits and ``0`` is a blank in a
puzzle (so a vocabulary of 10). A masked generator over digits uses its own ``[MASK]`` id for the
blanks: ``init = where(puzzle == 0, mask_id, puzzle)`` with ``vocab_size = 10`` and ``mask_id = 10``
(token 0 then never appears in a solution, and ``is_valid_solution`` rejects it).

Two ways in, both deterministic per example (example ``i`` is a function of a seed, the split
and ``i``): ``DATASETS['sudoku']`` is a local tfds builder (array_record -> grain, like every
jaxtok data set; ``make_iterator('sudoku', ...)``), whose examples hold ``puzzle``, ``solution``,
``num_givens`` (difficulty drawn uniformly from ``DIFFICULTY``) and, because the pipeline serves
images, ``image``: the puzzle as a 9x9 grid of grey cells (level 28 d for digit d, 0 for a
blank), S = 9 k.
:class:`SudokuSource` generates on the fly (any size, fixed difficulty), for RL with fresh puzzles.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from jaxtok.data.local_builder import LocalBuilder, example_rng
from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

DIFFICULTY = {"easy": 40, "medium": 32, "hard": 26}
_ALL = 0x3FE  # bits 1..9
_UNITS = [[r * 9 + c for c in range(9)] for r in range(9)] + \
         [[r * 9 + c for r in range(9)] for c in range(9)] + \
         [[(br + r) * 9 + bc + c for r in range(3) for c in range(3)]
          for br in (0, 3, 6) for bc in (0, 3, 6)]
_PEERS = [sorted({p for u in _UNITS if i in u for p in u} - {i}) for i in range(81)]


def _check_grid(grid) -> np.ndarray:
  grid = np.asarray(grid)
  if grid.shape != (81,) and grid.shape != (9, 9):
    raise ValueError(f"a sudoku grid is 81 cells ([81] or [9, 9]) with 0 = blank, got {grid.shape}")
  grid = grid.reshape(81).astype(np.int64)
  if grid.min() < 0 or grid.max() > 9:
    raise ValueError(f"sudoku cells must be in 0..9 (0 = blank), got range "
                     f"[{grid.min()}, {grid.max()}]")
  return grid


def _candidates(grid: list[int], i: int) -> int:
  used = 0
  for p in _PEERS[i]:
    used |= 1 << grid[p]
  return _ALL & ~used


def _search(grid: list[int], limit: int, rng: np.random.Generator | None, out: list) -> int:
  """Counts solutions up to ``limit``; fills ``out`` with the first one found."""
  best, best_mask, best_n = -1, 0, 10
  for i in range(81):
    if grid[i] == 0:
      m = _candidates(grid, i)
      n = bin(m).count("1")
      if n < best_n:
        best, best_mask, best_n = i, m, n
        if n <= 1:
          break
  if best < 0:
    if not out:
      out.append(list(grid))
    return 1
  digits = [d for d in range(1, 10) if best_mask >> d & 1]
  if rng is not None:
    rng.shuffle(digits)
  found = 0
  for d in digits:
    grid[best] = d
    found += _search(grid, limit - found, rng, out)
    grid[best] = 0
    if found >= limit:
      break
  return found


def count_solutions(puzzle, limit: int = 2) -> int:
  """Number of solutions of ``puzzle`` (0 = blank), counted up to ``limit``."""
  grid = _check_grid(puzzle)
  if not _consistent(grid):
    return 0
  return _search([int(v) for v in grid], limit, None, [])


def solve(puzzle) -> np.ndarray | None:
  """One solution [81] of ``puzzle``, or None if it has none."""
  grid = _check_grid(puzzle)
  out: list = []
  if not _consistent(grid) or not _search([int(v) for v in grid], 1, None, out):
    return None
  return np.asarray(out[0], np.int32)


def _consistent(grid: np.ndarray) -> bool:
  for u in _UNITS:
    vals = grid[u]
    vals = vals[vals > 0]
    if len(set(vals.tolist())) != len(vals):
      return False
  return True


def random_solution(rng: np.random.Generator) -> np.ndarray:  # int32 [81]
  out: list = []
  _search([0] * 81, 1, rng, out)
  return np.asarray(out[0], np.int32)


def make_puzzle(
    rng: np.random.Generator,
    num_givens: int = 32,
) -> tuple[np.ndarray, np.ndarray]:  # (puzzle int32 [81] with 0 = blank, solution int32 [81])
  """A puzzle with a unique solution and about ``num_givens`` givens (never fewer)."""
  if not 17 <= num_givens <= 81:
    raise ValueError(f"num_givens must be in [17, 81] (17 is the minimum for a unique sudoku), "
                     f"got {num_givens}")
  solution = random_solution(rng)
  puzzle = [int(v) for v in solution]
  givens = 81
  for i in rng.permutation(81):
    if givens <= num_givens:
      break
    keep, puzzle[i] = puzzle[i], 0
    if _search(list(puzzle), 2, None, []) == 1:
      givens -= 1
    else:
      puzzle[i] = keep
  return np.asarray(puzzle, np.int32), solution


def is_valid_solution(
    grid: jnp.ndarray,  # int [..., 81]
    puzzle: jnp.ndarray | None = None,  # int [..., 81], 0 = blank
) -> jnp.ndarray:  # bool [...]
  """The verifiable reward: every row, column and box holds 1..9 once, and the givens are kept.

  Pure ``jnp``: works on numpy or jax arrays and inside ``jit`` (e.g. as an RL reward).
  """
  grid = jnp.asarray(grid)
  if grid.shape[-1] != 81:
    raise ValueError(f"is_valid_solution wants grids [..., 81], got {grid.shape}")
  units = jnp.asarray(_UNITS, jnp.int32)  # [27, 9]
  cells = grid[..., units]  # [..., 27, 9]
  onehot = cells[..., None] == jnp.arange(1, 10)  # [..., 27, 9, 9]
  ok = jnp.all(jnp.sum(onehot, axis=-2) == 1, axis=(-2, -1))
  if puzzle is not None:
    puzzle = jnp.asarray(puzzle)
    if puzzle.shape != grid.shape:
      raise ValueError(f"puzzle {puzzle.shape} and grid {grid.shape} must have the same shape")
    ok = ok & jnp.all((puzzle == 0) | (puzzle == grid), axis=-1)
  return ok


@dataclasses.dataclass(frozen=True)
class SudokuSource:
  """A random-access source of ``{'puzzle': int32 [81], 'solution': int32 [81]}``.

  ``difficulty`` names a row of ``DIFFICULTY``; ``num_givens`` overrides it. Example ``i`` is a
  pure function of ``(seed, i)``: ``split`` picks disjoint seeds for train / validation / test.
  """

  size: int = 10_000
  seed: int = 0
  difficulty: str = "medium"
  num_givens: int | None = None
  split: str = "train"

  def __post_init__(self):
    if self.difficulty not in DIFFICULTY:
      raise ValueError(f"unknown sudoku difficulty {self.difficulty!r}; valid: {list(DIFFICULTY)}")
    if self.split not in ("train", "validation", "test"):
      raise ValueError(f"split must be train, validation or test, got {self.split!r}")

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.size:
      raise IndexError(f"index {index} out of range for a sudoku source of size {self.size}")
    split_id = ("train", "validation", "test").index(self.split)
    rng = np.random.default_rng([self.seed, split_id, int(index)])
    givens = self.num_givens or DIFFICULTY[self.difficulty]
    puzzle, solution = make_puzzle(rng, givens)
    return {"puzzle": puzzle, "solution": solution}


def render_puzzle(puzzle: np.ndarray, size: int) -> np.ndarray:  # uint8 [size, size, 3]
  """The grid as an image: each cell a (size / 9)-pixel square of grey level 28 * digit."""
  if size % 9:
    raise ValueError(f"a sudoku image side must be a multiple of 9, got {size}")
  cells = (np.asarray(puzzle, np.int32).reshape(9, 9) * 28).astype(np.uint8)
  image = np.kron(cells, np.ones((size // 9, size // 9), np.uint8))
  return np.repeat(image[:, :, None], 3, axis=2)


class Sudoku(LocalBuilder):
  """Procedural 9x9 sudoku with unique solutions (puzzle, solution, num_givens, image)."""

  SIZES = (36,)
  MIN_SIZE = 9
  MAX_SIZE = 252
  _SEED = 9181

  @classmethod
  def default_counts(cls, size: int) -> tuple[int, int]:
    return 4096, 512

  @classmethod
  def config_for(cls, size, num_train=None, num_test=None):
    if isinstance(size, (int, np.integer)) and size % 9:
      raise ValueError(f"sudoku: image size must be a multiple of 9 (one square per cell); "
                       f"got {size}")
    return super().config_for(size, num_train, num_test)

  def features(self, size: int):
    return {
        "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
        "puzzle": tfds.features.Tensor(shape=(81,), dtype=np.int32, doc="0 = blank"),
        "solution": tfds.features.Tensor(shape=(81,), dtype=np.int32),
        "num_givens": tfds.features.Scalar(dtype=np.int32),
    }

  def make_examples(self, split: str, num: int):
    levels = list(DIFFICULTY.values())
    for index in range(num):
      rng = example_rng(self._SEED, split, index)
      puzzle, solution = make_puzzle(rng, levels[int(rng.integers(len(levels)))])
      yield index, {"image": render_puzzle(puzzle, self.builder_config.size), "puzzle": puzzle,
                    "solution": solution, "num_givens": np.int32(np.sum(puzzle > 0))}


Sudoku.BUILDER_CONFIGS = Sudoku.predefined_configs()

DATASETS.register("sudoku", DatasetSpec(
    name="sudoku", tfds_name="sudoku", builder=Sudoku, splits=("train", "test"),
    image_size=36, num_classes=None, preprocessing="none",
    description="procedural 9x9 sudoku with unique solutions, 26-40 givens"))
