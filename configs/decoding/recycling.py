r"""Speculative decoding of SmolLM2-135M-Instruct with Token Recycling (training-free token trees).

  python -m jaxtok.main --config=configs/decoding/recycling.py --workdir=/tmp/spec_rec --mode=sample
  python -m jaxtok.main --config=configs/decoding/recycling.py --workdir=/tmp/spec_rec --mode=eval \
      --config.proposer.tree_nodes=24
  python -m jaxtok.main --config=configs/decoding/recycling.py:smoke --workdir=/tmp/spec_smoke \
      --mode=sample

Token Recycling (Luo et al., 2024) keeps, per token, the target's top-``proposer.top_k`` next
tokens from the last time it was verified, and fills a static tree with them:
``trees.best_tree(tree_nodes, rank_accept, tree_depth)``, the tree with the most expected accepted
tokens if rank r is right with probability ``rank_accept[r]``. ``proposer.hot_start`` carries the
adjacency matrix from prompt to prompt in ``--mode=eval`` (the paper's hot start). On a CPU a
verify pass over many nodes costs more than a 1-token step, so small trees win there (with
``bf16`` weights 8 nodes measured best, 1.56x on code prompts: docs/decoding.md); on an
accelerator try 24-80 nodes. Arguments: ``smoke``, ``bf16`` (bf16 weights), ``rows`` (the
target's float32 weights stored features-first: cheaper verify passes on a CPU). Keys:
``configs/common.py:speculative_base_config``.
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg
from jaxtok.decoding.trees import DEFAULT_RANK_ACCEPT


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, bf16=False, rows=False)
  c = speculative_base_config(a.smoke, "recycling")
  # bf16: bf16 weights, float32 activations (jaxtok/nn/bf16.py; a bf16 model: --config.dtype).
  # rows: float32 weights stored features-first, so the target's few-row verify passes read each
  # weight once on XLA:CPU (jaxtok/nn/rows.py).
  c.weights = "bfloat16" if a.bf16 else "rows" if a.rows else "float32"
  c.proposer.tree_nodes = 12
  c.proposer.tree_depth = 6
  c.proposer.top_k = 8  # > the largest rank the tree uses
  c.proposer.rank_accept = DEFAULT_RANK_ACCEPT  # P(the rank-r candidate is the target's token)
  return c
