"""Sudoku autoregressive baseline: a causal transformer over [puzzle; solution], givens forced.

  python -m jaxtok.main --config=configs/generators/sudoku_ar.py --workdir=/tmp/jaxtok/sudoku_ar
  python -m jaxtok.main --config=configs/generators/sudoku_ar.py:smoke --workdir=/tmp/sd_ar_smoke

Same data, steps x batch and backbone size as configs/generators/sudoku_mdm.py; the report
decodes the 81 cells left to right (greedy, and at temperature 1) and writes the solve rate, NFE
and wall time per puzzle to <workdir>/report/sudoku_solvers.md. Arguments: ``smoke``,
``steps=N``, ``dim=D``, ``layers=L``, ``batch=B``.
About 10-15 minutes on 2 shared CPU cores; measured: 0% solved greedy, blank-cell accuracy
0.45 (docs/generators.md).
"""

import ml_collections

from configs.common import sudoku_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=2000, dim=96, layers=3, batch=32)
  return sudoku_config("ar", smoke=a.smoke, steps=a.steps, dim=a.dim, layers=a.layers,
                       batch=a.batch)
