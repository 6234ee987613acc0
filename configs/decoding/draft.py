r"""Speculative decoding of SmolLM2-135M-Instruct with a distilled draft model (greedy).

  python -m jaxtok.main --config=configs/decoding/draft_distill.py --workdir=/tmp/jaxtok_draft
  python -m jaxtok.main --config=configs/decoding/draft.py --workdir=/tmp/spec_draft --mode=sample
  python -m jaxtok.main --config=configs/decoding/draft.py --workdir=/tmp/spec_draft --mode=eval \
      --config.draft.workdir=/tmp/jaxtok_draft --config.proposer.length=3
  python -m jaxtok.main --config=configs/decoding/draft.py:smoke --workdir=/tmp/spec_smoke \
      --mode=sample

The first command trains the draft (SmolLM2 blocks and embedding, distilled by KL); this config
reads its latest checkpoint with ``jaxtok.tasks.distill.restore_student(draft.workdir)``. Each
round the draft proposes ``proposer.length`` tokens greedily and the target verifies them in one
pass. ``draft.pretrained`` (a PRETRAINED_LMS name) or ``draft.variant`` (random; smoke) are used
when ``draft.workdir`` is empty. Arguments: ``smoke`` (random 'tiny' target and draft, byte
tokenizer; seconds), ``bf16`` (bf16 weights), ``rows`` (the target's float32 weights stored
features-first, jaxtok/nn/rows.py), ``branches=k`` (k greedy chains per round, started from the
draft's top-k first tokens: ``proposer.num_drafts``). Keys:
``configs/common.py:speculative_base_config``.
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, bf16=False, rows=False, branches=1)
  c = speculative_base_config(a.smoke, "draft")
  # bf16: bf16 weights, float32 activations (jaxtok/nn/bf16.py; a bf16 model: --config.dtype).
  c.weights = "bfloat16" if a.bf16 else "rows" if a.rows else "float32"
  # The output of configs/decoding/draft_distill.py (its --workdir); smoke: a random draft.
  c.draft.workdir = ml_collections.FieldReference("" if a.smoke else "/tmp/jaxtok_draft",
                                                  field_type=str)
  c.proposer.length = 4
  c.proposer.draft_temperature = 0.0  # greedy drafts
  c.proposer.num_drafts = int(a.branches)  # greedy k > 1: chains from the top-k first tokens
  return c
