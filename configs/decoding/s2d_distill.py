r"""A sorted draft for S2D: configs/decoding/draft_distill.py with ``student.sorted_depths``.

  python -m jaxtok.main --config=configs/decoding/s2d_distill.py --workdir=/tmp/s2d/sorted
  python -m jaxtok.main --config=configs/decoding/s2d_distill.py:plain --workdir=/tmp/s2d/plain
  python -m jaxtok.main --config=configs/decoding/s2d_distill.py:smoke --workdir=/tmp/s2d_dsm

The loss is the mean over depths 1, 2, 4 of the KL to SmolLM2 of the student's first d blocks with
its final norm and head (``jaxtok/decoding/sorted_draft.py``); ``plain`` trains only the whole
student (the same steps: the baseline). Both start from ``init_from`` (default
``/tmp/s2d/base``, a copy of a plain draft_distill run's 100-step checkpoint: a sorted run from
scratch takes too long on 2 shared CPU cores) and run ``steps`` steps of ``batch`` windows of
``seq`` tokens. Arguments: ``smoke`` (draft_distill's smoke run: random 'tiny' teacher and
2-block student, depths 1, 2, from scratch; seconds), ``plain``, ``steps``, ``batch``, ``seq``,
``init_from``.
"""

import ml_collections

from configs.decoding import draft_distill
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, plain=False, steps=0, batch=4, seq=64,
                init_from="/tmp/s2d/base")
  c = draft_distill.get_config(
      f"smoke,steps={a.steps or 20}" if a.smoke
      else f"steps={a.steps or 30},batch={a.batch},seq={a.seq}")
  c.student.sorted_depths = () if a.plain else ((1, 2) if a.smoke else (1, 2, 4))
  c.init_from = "" if a.smoke else a.init_from
  c.checkpoint_every = c.num_steps
  c.report_every = c.num_steps
  c.log_every = 5
  c.eval_max_batches = 2 if a.smoke else 4
  return c
