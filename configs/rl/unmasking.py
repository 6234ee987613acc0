r"""A learned unmasking policy for the sudoku MDM, trained with GRPO (jaxtok/rl/unmasking.py).

  # the environment: a trained sudoku MDM (configs/generators/sudoku_mdm.py, 10-15 minutes)
  python -m jaxtok.main --config=configs/generators/sudoku_mdm.py --workdir=/tmp/um/sudoku_mdm2k
  # the policy (its report: held-out solve rate vs NFE against MaskGIT and threshold decoding)
  python -m jaxtok.main --config=configs/rl/unmasking.py \
      --config.unmask.mdm_workdir=/tmp/um/sudoku_mdm2k --workdir=/tmp/um/policy
  python -m jaxtok.main --config=configs/rl/unmasking.py:smoke --workdir=/tmp/um_smoke

Arguments: ``smoke`` (a seed-initialised tiny MDM, a few steps: seconds; the numbers mean
nothing), ``steps``, ``step_weight`` (the reward's price of a model call: reward =
solved * (1 - step_weight * NFE / blanks)), ``seed``. Any ``unmask.*`` / ``unmask_eval.*`` field
can be set with ``--config.<block>.<field>=...``.
"""

import ml_collections

from configs.common import sudoku_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=80, step_weight=0.5, seed=0)
  c = sudoku_config("mdm", smoke=a.smoke, steps=a.steps)  # the MDM's data: the same puzzles
  del c.model, c.loss, c.eval, c.augment
  c.task = "unmasking"
  c.seed = a.seed
  c.num_steps = 3 if a.smoke else a.steps
  c.batch_size = 4 if a.smoke else 8  # puzzles per step; each decoded group_size times
  c.log_every = 1 if a.smoke else 10
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.unmask = ml_collections.ConfigDict({
      "mdm_config": "generators/sudoku_mdm.py" + (":smoke" if a.smoke else ""),
      "mdm_workdir": "", "group_size": 4 if a.smoke else 8, "max_steps": 64,
      "step_weight": a.step_weight, "clip_eps": 0.2, "epochs": 1,
      "loss_norm": "token", "dim": 16 if a.smoke else 32, "num_heads": 2,
      # the untrained policy is a soft threshold rule at 0.9 (0: a constant init_bias instead)
      "init_threshold": 0.9, "init_slope": 4.0, "init_bias": -2.0})
  c.unmask_eval = ml_collections.ConfigDict({
      "num_puzzles": 8 if a.smoke else 128,
      "biases": "0" if a.smoke else "-2,-1,0,1,2",
      "maskgit_steps": "4" if a.smoke else "4,8,12,16,24,32",
      "thresholds": "0.9" if a.smoke else "0.5,0.7,0.8,0.9,0.95,0.99", "seed": 0})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 1 if a.smoke else 10, "grad_clip": 1.0, "b1": 0.9, "b2": 0.99,
      "weight_decay": 0.0, "final_lr_fraction": 1.0})
  return c
