r"""Sampled speculative decoding of SmolLM2-135M-Instruct with SpecTr (k drafts, K-SEQ verifier).

  python -m jaxtok.main --config=configs/decoding/draft_distill.py --workdir=/tmp/jaxtok_draft
  python -m jaxtok.main --config=configs/decoding/spectr.py --workdir=/tmp/spec_spectr --mode=sample
  python -m jaxtok.main --config=configs/decoding/spectr.py --workdir=/tmp/spec_spectr --mode=eval \
      --config.proposer.num_drafts=4 --config.temperature=0.7
  python -m jaxtok.main --config=configs/decoding/spectr.py:smoke --workdir=/tmp/spec_smoke \
      --mode=sample

The distilled draft (``draft.workdir``, the output of the first command) samples
``proposer.num_drafts`` i.i.d. chains of ``proposer.length`` tokens at ``draft_temperature``;
SpecTr's K-SEQ (Sun et al., 2023; ``rho`` None = the best feasible rho per step) keeps one of
them, so the output is distributed exactly as the target's sampler at ``temperature`` / top-k /
top-p. Sampled, so there is no token-identity check; acceptance rate = accepted / (k * length)
per round. Arguments: ``smoke`` (random 'tiny' target and draft, byte tokenizer), ``bf16``
(bf16 weights). Keys:
``configs/common.py:speculative_base_config``.
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, bf16=False)
  c = speculative_base_config(a.smoke, "draft", verifier="spectr")
  # bf16: bf16 weights, float32 activations (jaxtok/nn/bf16.py; a bf16 model: --config.dtype).
  c.weights = "bfloat16" if a.bf16 else "float32"
  # The output of configs/decoding/draft_distill.py (its --workdir); smoke: a random draft.
  c.draft.workdir = ml_collections.FieldReference("" if a.smoke else "/tmp/jaxtok_draft",
                                                  field_type=str)
  c.proposer.num_drafts = 3
  c.proposer.length = 3
  c.proposer.draft_temperature = 1.0  # i.i.d. drafts (at 0: the top-k chains, refused here)
  c.temperature = 1.0
  c.top_p = 0.95
  return c
