r"""Speculative decoding of SmolLM2-135M-Instruct with VocabTrim: the distilled draft model with
its output head cut to the ``trim_size`` tokens the target generates most often (greedy).

  python -m jaxtok.main --config=configs/decoding/draft_distill.py --workdir=/tmp/jaxtok_draft
  python -m jaxtok.main --config=configs/decoding/vocabtrim.py --workdir=/tmp/spec_vt --mode=sample
  python -m jaxtok.main --config=configs/decoding/vocabtrim.py:smoke --workdir=/tmp/vt_smoke \
      --mode=sample

Before the first run the target greedily continues ``count_prompts`` prefixes of train-split
standard-library files (``jaxtok/tasks/vocab_trim_counts.py``; the eval prompts are test-split
files and chat questions) for ``count_new_tokens`` tokens each; the token counts pick the kept
ids (``jaxtok/decoding/vocab_trim.py:kept_ids``, stop tokens always kept) and are cached under
``$JAXTOK_CACHE_DIR/vocab_trim`` for a pretrained target. Arguments: ``smoke`` (random 'tiny'
target and draft, byte tokenizer, a 128-row head; seconds), ``bf16`` (bf16 weights), ``trim``
(rows kept).
Other keys: ``configs/common.py:speculative_base_config`` and ``configs/decoding/draft.py``.
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, bf16=False, trim=0)
  c = speculative_base_config(a.smoke, "vocabtrim")
  # bf16: bf16 weights, float32 activations (jaxtok/nn/bf16.py; a bf16 model: --config.dtype).
  c.weights = "bfloat16" if a.bf16 else "float32"
  c.draft.workdir = ml_collections.FieldReference("" if a.smoke else "/tmp/jaxtok_draft",
                                                  field_type=str)
  c.proposer.length = 2  # the best draft length of docs/decoding.md's CPU sweep
  c.proposer.draft_temperature = 0.0  # greedy drafts
  # The paper's sizes are a few thousand of 128k; SmolLM2 has 49,152 ids.
  c.proposer.trim_size = a.trim or (128 if a.smoke else 4096)
  # A few thousand target tokens at most: a minute or two of CPU, once (cached).
  c.proposer.count_prompts = 4 if a.smoke else 32
  c.proposer.count_new_tokens = 16 if a.smoke else 64
  c.proposer.count_prompt_tokens = 64 if a.smoke else 256
  return c
