r"""A Lottery Jackpot of SmolLM2-135M-Instruct drafts for it (greedy speculative decoding).

  python scripts/studies/jackpot_smollm2.py --sparsity=0.5 --steps=30 \
      --out_masks=/tmp/jackpot/masks_0.5.npz
  python -m jaxtok.main --config=configs/decoding/jackpot.py:masks=/tmp/jackpot/masks_0.5.npz \
      --workdir=/tmp/spec_jackpot --mode=eval
  python -m jaxtok.main --config=configs/decoding/jackpot.py --workdir=/tmp/spec_mag --mode=eval
  python -m jaxtok.main --config=configs/decoding/jackpot.py:smoke --workdir=/tmp/jp --mode=sample

The draft is the target with a mask over its block kernels: a searched jackpot (``masks``, from
the study) or, without one, per-layer magnitude masks at ``sparsity`` (the search's start). It is
stored dense, so it costs what the target costs per step: the run reports how well a sparse
subnetwork agrees with its parent (acceptance), not a speed-up (a structured or kernel-level
sparse drafter would be needed for that). ``jaxtok/tasks/speculative_jackpot.py``;
docs/decoding_jackpot.md. Arguments: ``smoke`` (random 'tiny' target, seconds), ``sparsity``,
``masks``, ``length`` (draft tokens per round).
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, sparsity=0.5, masks="", length=4)
  c = speculative_base_config(a.smoke, "jackpot")
  c.proposer.sparsity = a.sparsity
  c.proposer.masks = a.masks
  c.proposer.length = a.length
  c.eval_num_prompts = 2 if a.smoke else 4
  c.max_new_tokens = 24 if a.smoke else 64
  return c
