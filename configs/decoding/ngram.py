r"""Speculative decoding of SmolLM2-135M-Instruct with n-gram prompt lookup (no draft model).

  python -m jaxtok.main --config=configs/decoding/ngram.py --workdir=/tmp/spec_ngram --mode=sample \
      --config.prompt="Write a Python function that returns the n-th Fibonacci number."
  python -m jaxtok.main --config=configs/decoding/ngram.py --workdir=/tmp/spec_ngram --mode=eval
  python -m jaxtok.main --config=configs/decoding/ngram.py:smoke --workdir=/tmp/spec_smoke \
      --mode=sample

Each round copies the ``proposer.length`` tokens that followed the latest earlier occurrence of
the last ``max_ngram`` .. ``min_ngram`` tokens (vLLM's prompt lookup) and the target verifies them
in one pass; greedy, so the output is plain greedy decoding's. ``--mode=sample`` times it against
plain decoding on ``config.prompt``; ``--mode=eval`` runs the offline prompt set (``eval_prompts``:
chat / code / mixed) and writes decoding_table.md, decoding_results.json and
acceptance_per_position.png to the workdir. Arguments: ``smoke`` (a random 'tiny' target and the
byte tokenizer; seconds), ``bf16`` (bf16 weights), ``rows`` (the target's float32 weights
stored features-first: cheaper verify passes on a CPU), ``adaptive`` (each round drafts 0, 1, 2
or ``length`` tokens, whichever the expected tokens per cost favour: no match anywhere is a plain
step), ``cost=measured`` (with adaptive: the verify passes timed on this machine per batch size;
default ``equal``, an accelerator's). Keys:
``configs/common.py:speculative_base_config``.
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, bf16=False, rows=False, adaptive=False, cost="equal")
  c = speculative_base_config(a.smoke, "ngram")
  # bf16: bf16 weights, float32 activations (jaxtok/nn/bf16.py; a bf16 model: --config.dtype).
  # rows: float32 weights stored features-first, so the target's few-row verify passes read each
  # weight once on XLA:CPU (jaxtok/nn/rows.py).
  c.weights = "bfloat16" if a.bf16 else "rows" if a.rows else "float32"
  c.proposer.length = 4
  c.proposer.max_ngram = 3
  c.proposer.min_ngram = 1
  c.proposer.lengths = (0, 1, 2, c.proposer.length) if a.adaptive else ()
  c.proposer.cost = a.cost
  c.proposer.cost_context = 64 if a.smoke else 256  # cached tokens when timing (prompt-sized)
  return c
