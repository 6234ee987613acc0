r"""S2D: speculative decoding of SmolLM2-135M-Instruct with a sorted (nested) draft (greedy).

  python -m jaxtok.main --config=configs/decoding/s2d_distill.py --workdir=/tmp/s2d/sorted
  python -m jaxtok.main --config=configs/decoding/s2d.py --workdir=/tmp/s2d/esc --mode=eval
  python -m jaxtok.main --config=configs/decoding/s2d.py:depth=1 --workdir=/tmp/s2d/d1 --mode=eval
  python -m jaxtok.main --config=configs/decoding/s2d.py:smoke --workdir=/tmp/s2d_smoke --mode=eval

The first command trains the draft sorted (every prefix of its 4 blocks, with the shared final
norm and head, distilled by KL to SmolLM2); ``draft.workdir`` reads its checkpoint. ``depth`` 0
drafts each token with the shallowest of ``proposer.depths`` and escalates to the next deeper
sub-model while the top-1 probability is below ``threshold`` (``jaxtok/decoding/sorted_draft.py``;
the counts of draft steps each depth ran are printed per batch); ``depth=d`` drafts with sub-model
d alone. Greedy verification: the output is plain greedy decoding's. Measured in
docs/decoding_s2d.md. Arguments: ``smoke`` (a random 'tiny' target, a random 4-block 'small'
draft, depths 1, 2, 4; seconds), ``depth``, ``threshold``, ``draft`` (a distill workdir).
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, depth=0, threshold=0.5, draft="/tmp/s2d/sorted")
  c = speculative_base_config(a.smoke, "sorted")
  if a.smoke:
    c.draft.variant = "small"  # 4 blocks: three depths to nest
  else:
    c.draft.workdir = a.draft
  p = c.proposer
  p.depths = (1, 2, 4)
  p.depth = a.depth  # 0: escalate by confidence (S2D); d: sub-model d alone
  p.threshold = a.threshold
  p.length = 4
  c.eval_num_prompts = 2 if a.smoke else 4
  c.max_new_tokens = 24 if a.smoke else 48
  return c
