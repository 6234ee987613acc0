r"""A KGW green-list watermark while SmolLM2-135M-Instruct samples, with the detector's z-test.

  python -m jaxtok.main --config=configs/rl/watermark_kgw.py --workdir=/tmp/wm --mode=sample \
      --config.prompt="Write a short story about a lighthouse keeper."
  python -m jaxtok.main --config=configs/rl/watermark_kgw.py:smoke --workdir=/tmp/wm_s --mode=sample

"A Watermark for Large Language Models" (Kirchenbauer et al., 2023): the ``lm`` task's sampler
adds ``delta`` to the previous token's green list (a fraction ``gamma`` of the vocabulary, keyed
by ``key``) and reports z = (|s|_G - gamma T) / sqrt(T gamma (1 - gamma)) of the completion; the
paper flags z > 4. Multinomial sampling at temperature 1, T = 200 new tokens (the paper's
setting). The study of false positives, detection rates and the substitution attack is
scripts/studies/watermark_kgw.py (docs/rl_watermark.md).
Arguments: ``smoke`` (the random tiny LM with a byte tokenizer), ``gamma``, ``delta``,
``tokens`` (new tokens), ``key``.
"""

import ml_collections

from configs.lm.smollm2 import get_config as lm_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, gamma=0.25, delta=2.0, tokens=200, key=15485863)
  c = lm_config("smoke" if a.smoke else None)
  c.max_new_tokens = 16 if a.smoke else a.tokens
  c.temperature = 1.0
  c.watermark = ml_collections.ConfigDict({"key": a.key, "gamma": a.gamma, "delta": a.delta})
  return c
