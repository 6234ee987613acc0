"""Class-conditional E-CAR (our multistage reading of arXiv 2412.14170) on 32 px `digits` pixels.

``stages=K`` (default 3: 8, 16, 32 px; ``stages=1`` is the single-stage rectified-flow baseline
with the same backbone, head and budget). No tokenizer: grey pixels in 4x4 patches.

  python -m jaxtok.main --config=configs/generators/digits_ecar.py:stages=1 --workdir=/tmp/ecar_k1
  python -m jaxtok.main --config=configs/generators/digits_ecar.py:stages=3 --workdir=/tmp/ecar_k3

Each reports, per per-stage Euler step count N in ``steps_list`` (``gen/ecar_K<K>_N<N>/...``),
class accuracy and FD on the digits classifier's features (a stand-in for FID), full-resolution
head calls, token-weighted NFE, ms and GFLOPs per sample. Arguments: ``smoke``, ``steps=N``
(training steps), ``stages=K``, ``steps_list=2+4+8``, ``keep=0.5`` (``model.renoise_keep``: the
share of the previous stage's end state a boundary keeps; 1 is the Pyramidal-Flow rule, which
leaves the next stage a point-mass start, docs/generators_ecar.md), ``ar_steps=S``
(``model.stage_ar_steps``: MAR-style backbone passes inside each stage, 1 = none), ``imagenet``
(the full-scale recipe below, for real hardware; not run here).

``imagenet``: ImageNet-256 pixels would be 4096 8x8 tokens in the final stage; this variant
instead keeps the pixel pipeline at 64 px (patch 4, stages 16/32/64 px, 336 tokens) with a
24-layer width-1024 backbone (~300M) and a 6-block width-1024 head, batch 256, AdamW 1e-4,
400k steps, FD-ENL0 on ``validation`` (not Inception FID).
"""

import ml_collections

from configs.common import generator_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=1500, stages=3, steps_list="2+4+8",
                skip=False, keep=0.5, ar_steps=1)
  if a.stages < 1:
    raise ValueError(f"stages must be >= 1 (1 = the single-stage baseline); got {a.stages}")
  c = generator_base_config(ml_collections.ConfigDict({**a.to_dict(), "tokenizer": ""}),
                            "imagenet2012" if a.imagenet else "digits",
                            num_classes=1000 if a.imagenet else 10)
  c.task = "ecar"
  del c.tokenizer, c.critic, c.loss
  if a.imagenet:
    c.data.image_size = 64
    c.model = ml_collections.ConfigDict({"stages": a.stages, "patch": 4, "dim": 1024,
                                         "num_layers": 24, "num_heads": 16, "mlp_dim": 4096,
                                         "head_width": 1024, "head_depth": 6,
                                         "renoise_keep": a.keep})
    c.num_steps = 400_000
    c.report = ml_collections.ConfigDict({"per_class": 10, "fd": "enl0", "fd_reference": "test",
                                          "fd_reference_count": 50_000})
    c.classifier = ml_collections.ConfigDict({"steps": 0})
  else:
    small = {"dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64, "head_width": 32,
             "head_depth": 1}
    full = {"dim": 96, "num_layers": 3, "num_heads": 4, "mlp_dim": 256, "head_width": 128,
            "head_depth": 2}
    c.model = ml_collections.ConfigDict({"stages": a.stages, "patch": 4, "head_skip": a.skip,
                                         "renoise_keep": a.keep, "stage_ar_steps": a.ar_steps,
                                         **(small if a.smoke else full)})
    c.report = ml_collections.ConfigDict({"per_class": 2 if a.smoke else 16,
                                          "fd": "classifier", "fd_reference": "test"})
    c.classifier = ml_collections.ConfigDict({"steps": 20 if a.smoke else 400, "batch_size": 64,
                                              "lr": 2e-3, "grey": True})
  steps_list = (1, 2) if a.smoke else tuple(int(n) for n in a.steps_list.split("+"))
  c.sample = ml_collections.ConfigDict({"steps": steps_list, "seed": 0})
  return c
