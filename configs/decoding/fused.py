r"""Speculative decoding of SmolLM2-135M-Instruct with a feature-fused drafter (lossless).

  python -m jaxtok.main --config=configs/decoding/fused_distill.py --workdir=/tmp/jaxtok_fused
  python -m jaxtok.main --config=configs/decoding/fused.py --workdir=/tmp/spec_fused --mode=eval
  python -m jaxtok.main --config=configs/decoding/fused.py:bf16 --workdir=/tmp/spec_fused \
      --mode=sample --config.prompt="def fibonacci(n):"
  python -m jaxtok.main --config=configs/decoding/fused.py:smoke --workdir=/tmp/fs --mode=sample

The drafter (``jaxtok/decoding/fused_draft.py``) reads SmolLM2's own last hidden state: Dovetail's
gated fusion of that feature with the next token's embedding, ``depth`` blocks of SmolLM2's width,
SmolLM2's tied head. The first command trains it (``feature_distill``); this config reads its
latest checkpoint (``draft.workdir``). Each round drafts ``length`` tokens and the target verifies
them in one pass, handing its hidden states back for the next round. Arguments: ``smoke``
(random 'tiny' target and drafter; seconds), ``bf16`` (bf16 weights for target and drafter),
``length``, ``sample`` (temperature-1 sampling: drafts sampled from the drafter's softmax,
verified by rejection sampling, so the output follows the target's distribution). Keys:
``configs/common.py:speculative_base_config`` plus ``proposer.depth`` and ``proposer.fusion``
(random drafters only; a trained one brings its own).
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, bf16=False, length=2, sample=False)
  c = speculative_base_config(a.smoke, "fused", "rejection" if a.sample else "greedy")
  c.proposer.draft_temperature = 1.0 if a.sample else 0.0  # q: the drafter's own softmax
  c.weights = "bfloat16" if a.bf16 else "float32"
  c.draft.workdir = ml_collections.FieldReference("" if a.smoke else "/tmp/jaxtok_fused",
                                                  field_type=str)
  c.proposer.length = a.length
  c.proposer.depth = 2
  c.proposer.fusion = "gated"
  return c
