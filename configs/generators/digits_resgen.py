"""Class-conditional ResGen on `digits` RVQ tokens (8x8 positions x depth D), and its baseline.

"Efficient Generative Modeling with Residual Vector Quantization-Based Tokens" (Kim et al., ICML
2025). First train a residual-VQ tokenizer (conv2d_vq with ``depth=D``), then ResGen on its codes,
then MaskGIT over the same codes flattened to h * w * D tokens (``maskgit``, the existing
generator task) for the equal-steps comparison:

  python -m jaxtok.main --config=configs/tokenizers/conv2d_vq.py:depth=4 \
      --config.data.name=digits --workdir=/tmp/jaxtok/digits_rvq4
  python -m jaxtok.main --config=configs/generators/digits_resgen.py \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_rvq4 --workdir=/tmp/jaxtok/digits_resgen
  python -m jaxtok.main --config=configs/generators/digits_resgen.py:maskgit \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_rvq4 --workdir=/tmp/jaxtok/digits_rvq_mg

Both report, per step count T in ``steps_list`` (default 8 and 16: ``gen/resgen_T<T>/...`` and
``gen/maskgit:num_steps=<T>/...``), class accuracy under the digits classifier, ``fd_classifier``,
NFE and ms per sample, with the same classifier, report and training budget. Arguments:
``smoke`` (a tiny model; tests train a tiny depth-2 tokenizer first), ``steps=N``, ``depth=D``
(the tokenizer's levels; it must match the tokenizer run), ``maskgit`` (the baseline),
``imagenet`` (the full-scale recipe below, for real hardware).

``imagenet``: ImageNet-256 through the conv2d_vq ``imagenet`` tokenizer with ``depth=D`` (16x16
positions, 1024 codes per level; the paper's own RVQ tokenizer is 8x8 x 16 deep at 256 px, which
jaxtok has no config for), a 24-layer width-1024 transformer (16 heads, MLP 4096, ~300M, the
size class of the paper's ResGen-L), batch 256, AdamW 1e-4, 1.5M steps, 16 mixture components,
eval on ``validation`` with FD-ENL0 (not Inception FID; see docs/generators_resgen.md).
"""

import ml_collections

from configs.common import generator_base_config
from jaxtok.config_args import parse_arg

TOKENIZER = "configs/tokenizers/conv2d_vq.py"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=2000, depth=4, maskgit=False,
                steps_list="8+16")
  if a.depth < 1:
    raise ValueError(f"depth must be >= 1 (the residual VQ's levels); got {a.depth}")
  steps_list = tuple(int(t) for t in a.steps_list.split("+"))
  c = generator_base_config(ml_collections.ConfigDict({**a.to_dict(), "tokenizer": TOKENIZER}),
                            "imagenet2012" if a.imagenet else "digits",
                            num_classes=1000 if a.imagenet else 10)
  depth = 2 if a.smoke else a.depth
  c.tokenizer.config = f"{TOKENIZER}:depth={depth}" + (",smoke" if a.smoke else
                                                          ",imagenet" if a.imagenet else "")
  c.tokenizer.vocab_size = 1024 if a.imagenet else 256  # codes per level
  if a.smoke:
    steps_list = (2, 3)
  if a.imagenet:
    c.report = ml_collections.ConfigDict({"per_class": 10, "fd": "enl0", "fd_reference": "test",
                                          "fd_reference_count": 50_000})
    c.classifier = ml_collections.ConfigDict({"steps": 0})
  else:
    c.report = ml_collections.ConfigDict({"per_class": 2 if a.smoke else 8, "order_samples": 2,
                                          "fd": "classifier", "fd_reference": "test"})
    c.classifier = ml_collections.ConfigDict({"steps": 20 if a.smoke else 400, "batch_size": 64,
                                              "lr": 2e-3, "grey": True})
  if a.maskgit:  # the generator task over the flattened [h, w, D] codes, same budget and sizes
    c.sample.samplers = tuple(f"maskgit:num_steps={t}" for t in steps_list)
    return c
  c.task = "resgen"
  if a.imagenet:
    c.model = ml_collections.ConfigDict({"dim": 1024, "num_layers": 24, "num_heads": 16,
                                         "mlp_dim": 4096, "dropout": 0.1})
  c.model.num_mixtures = 16 if a.imagenet else 2 if a.smoke else 8
  c.model.cond_dropout = 0.1
  del c.loss.label_smoothing, c.critic
  c.sample = ml_collections.ConfigDict({
      "steps": steps_list, "temperature": 1.0, "choice_temperature": 4.5,
      "guidance_scale": c.sample.guidance_scale, "schedule": "cosine", "commit": "depth",
      "seed": 0})
  return c
