"""FlexTok-style ordered 1D tokens: TiTok + FSQ + nested dropout over the registers.

  python -m jaxtok.main --config=configs/tokenizers/flextok.py --workdir=/tmp/jaxtok/flextok
  python -m jaxtok.main --config=configs/tokenizers/flextok.py:smoke --workdir=/tmp/jaxtok/fx_smoke
  python -m jaxtok.main --config=configs/tokenizers/flextok.py:imagenet --workdir=gs://.../flextok

"FlexTok: Resampling Images into 1D Token Sequences of Flexible Length" (Bachmann et al., 2025):
per example keep_k ~ U{1..K} (``keep=uniform``) or U over powers of two (``keep=pow2``); registers
at positions >= keep_k become a learned mask token; ``causal`` adds the causal register mask.
FlexTok's decoder is a rectified-flow model; here it is TiTok's ViT decoder with a pixel loss
(the ordering mechanism is the part reproduced). Any prefix ``codes[:, :k]`` decodes; the report
has ``test/psnr@k`` for k = 1, 2, 4, ..., K and report/prefix_decoding.png.
Arguments: ``smoke``, ``imagenet``, ``variant``, ``tokens``, ``keep=uniform|pow2``, ``causal``,
``ordering=nested_dropout|none`` (none: the same model trained without it, for the ablation),
``steps=N``, ``seed=S``.
"""

import ml_collections

from configs.common import titok_model_config, tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, variant="cpu", tokens=16,
                keep="uniform", causal=False, ordering="nested_dropout")
  if a.imagenet and a.tokens == 16:
    a.tokens = 256
  c = tokenizer_base_config(a)
  levels = (8, 8, 8, 5, 5, 5) if a.imagenet else (8, 5, 5, 5)  # 64k codes (FlexTok) / 1k
  c.model = titok_model_config(a, {"name": "fsq", "levels": levels}, ordering=a.ordering,
                               keep_k_distribution=a.keep, causal_registers=a.causal)
  c.report.rate_distortion = True
  return c
