"""Sudoku solved by a masked diffusion model (MDLM loss, givens never masked).

  python -m jaxtok.main --config=configs/generators/sudoku_mdm.py --workdir=/tmp/jaxtok/sudoku_mdm
  python -m jaxtok.main --config=configs/generators/sudoku_mdm.py:smoke --workdir=/tmp/sd_smoke

The report solves held-out puzzles with MaskGIT, ddpm, first-hitting, threshold (one block and
9-cell blocks), DCD and ReCAP, writing the solve rate, NFE and wall time per puzzle to
<workdir>/report/sudoku_solvers.md and metrics.jsonl. Compare with configs/generators/sudoku_ar.py
(same data, steps x batch and backbone). Arguments: ``smoke``, ``steps=N``, ``dim=D``,
``layers=L``, ``batch=B``.
About 10-15 minutes on 2 shared CPU cores; measured: 38% of held-out puzzles solved with
threshold decoding (docs/generators.md).
"""

import ml_collections

from configs.common import sudoku_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=2000, dim=96, layers=3, batch=32)
  return sudoku_config("mdm", smoke=a.smoke, steps=a.steps, dim=a.dim, layers=a.layers,
                       batch=a.batch)
