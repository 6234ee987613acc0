"""One-D-Piece: TiTok with tail-token drop, quality set by truncating the 1D token sequence.

  python -m jaxtok.main --config=configs/tokenizers/one_d_piece.py --workdir=/tmp/jaxtok/odp
  python -m jaxtok.main --config=configs/tokenizers/one_d_piece.py:smoke --workdir=/tmp/jaxtok/odps
  python -m jaxtok.main --config=configs/tokenizers/one_d_piece.py:imagenet,variant=S \\
      --workdir=gs://.../one_d_piece_s256

"One-D-Piece: Image Tokenizer Meets Quality-Controllable Compression" (Miwa et al., 2025): one
length k ~ U{1..N} per batch, the tail after k is replaced by the mask token, so the tokens are
ordered coarse to fine; VQ with 4096 codes (ImageNet, N = 256). The report compares every prefix
with JPEG and WebP at the same byte budgets (report/rate_distortion.png), as the paper does.
Arguments: ``smoke``, ``imagenet``, ``variant``, ``tokens``, ``ordering=tail_drop|none``,
``steps=N``, ``seed=S``.
"""

import ml_collections

from configs.common import titok_model_config, tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, variant="cpu", tokens=16,
                ordering="tail_drop")
  if a.imagenet and a.tokens == 16:
    a.tokens = 256
  c = tokenizer_base_config(a)
  c.model = titok_model_config(a, {"name": "vq", "num_codes": 4096 if a.imagenet else 256,
                                   "dim": 12, "commitment_weight": 0.25, "kmeans_init": True,
                                   "dead_code_threshold": 0.1}, ordering=a.ordering)
  c.report.rate_distortion = True
  return c
