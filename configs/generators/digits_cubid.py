"""CubiD and TokenBridge on per-channel quantised `digits` latents (8x8 positions x 16 channels).

"Cubic Discrete Diffusion" (CubiD, per-entry masking) and "Bridging Continuous and Discrete Tokens
for Autoregressive Visual Generation" (TokenBridge, a channel-autoregressive head). First train a
continuous conv autoencoder whose latents are binned per channel after training into L Gaussian
quantiles (``conv2d_vq.py:gq=L``), then a generator head on its codes:

  python -m jaxtok.main --config=configs/tokenizers/conv2d_vq.py:gq=16 \
      --config.data.name=digits --workdir=/tmp/jaxtok/digits_gq16
  python -m jaxtok.main --config=configs/generators/digits_cubid.py \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_gq16 --workdir=/tmp/jaxtok/digits_cubid
  python -m jaxtok.main --config=configs/generators/digits_cubid.py:head=channel_ar \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_gq16 --workdir=/tmp/jaxtok/digits_tb
  python -m jaxtok.main --config=configs/generators/digits_cubid.py:head=factorised \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_gq16 --workdir=/tmp/jaxtok/digits_fact

Each reports, for T in ``steps_list`` (backbone calls; default 16 and 64, T << 64 * 16 entries),
class accuracy under the digits classifier, ``fd_classifier`` (a stand-in for FID), NFE and ms per
sample, with the same classifier, report and training budget for every head. The study
``scripts/studies/cubid_tokenbridge.py`` runs the three heads plus the quantisation PSNR and the
linear probe in one process (docs/generators_cubid_tokenbridge.md).

Arguments: ``smoke`` (a tiny model; the test trains a tiny ``gq`` tokenizer first), ``steps=N``,
``head=cubid|channel_ar|factorised``, ``levels=L`` (the tokenizer's ``gq``), ``steps_list=16+64``,
``cfg=S`` (classifier-free guidance scale; 1 = none), ``imagenet`` (for real hardware: ImageNet-256
through ``conv2d_vq.py:imagenet,gq=64`` (16x16 x 16 channels at 6 bits, TokenBridge's choice of
levels), a 32-layer width-1024 backbone (16 heads, MLP 4096, ~400M, MAR-L's size class, which
TokenBridge-L uses), batch 256, AdamW 1e-4 for 800 epochs, FD-ENL0 on ``validation``; CubiD itself
generates 768-d DINOv2-class features, which jaxtok has no encoder for).
"""

import ml_collections

from configs.common import generator_base_config
from jaxtok.config_args import parse_arg

TOKENIZER = "configs/tokenizers/conv2d_vq.py"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=1000, head="cubid", levels=16,
                steps_list="16+64", cfg=1.0)
  if a.head not in ("cubid", "channel_ar", "factorised"):
    raise ValueError(f"head must be cubid, channel_ar or factorised; got {a.head!r}")
  levels = 64 if a.imagenet else a.levels
  c = generator_base_config(ml_collections.ConfigDict({**a.to_dict(), "tokenizer": TOKENIZER}),
                            "imagenet2012" if a.imagenet else "digits",
                            num_classes=1000 if a.imagenet else 10)
  c.task = "dimwise"
  c.tokenizer.config = f"{TOKENIZER}:gq={levels}" + (",smoke" if a.smoke else
                                                       ",imagenet" if a.imagenet else "")
  c.tokenizer.vocab_size = levels  # values per entry
  steps_list = (2, 3) if a.smoke else tuple(int(t) for t in a.steps_list.split("+"))
  if a.imagenet:
    c.report = ml_collections.ConfigDict({"per_class": 10, "fd": "enl0", "fd_reference": "test",
                                          "fd_reference_count": 50_000})
    c.classifier = ml_collections.ConfigDict({"steps": 0})
    c.num_steps = 800 * 1_281_167 // 256
    model = {"dim": 1024, "num_layers": 32, "num_heads": 16, "mlp_dim": 4096, "ar_dim": 256,
             "ar_layers": 3}
  else:
    c.report = ml_collections.ConfigDict({"per_class": 2 if a.smoke else 20, "order_samples": 2,
                                          "fd": "classifier", "fd_reference": "test"})
    c.classifier = ml_collections.ConfigDict({"steps": 20 if a.smoke else 400, "batch_size": 64,
                                              "lr": 2e-3, "grey": True})
    model = {k: c.model[k] for k in ("dim", "num_layers", "num_heads", "mlp_dim")}
    if a.smoke:
      model.update(ar_dim=16, ar_layers=1)
    else:  # scripts/studies/cubid_tokenbridge.py's budget: batch 32, AdamW 1e-3, wd 0.02, clip 3
      c.batch_size = 32
      c.optimizer.update(warmup_steps=100, weight_decay=0.02, grad_clip=3.0)
  c.model = ml_collections.ConfigDict({**model, "head": a.head, "cond_dropout": 0.1})
  del c.critic
  c.loss = ml_collections.ConfigDict({"head_positions": 4 if a.smoke else 16})
  c.sample = ml_collections.ConfigDict({"steps": steps_list, "temperature": 1.0,
                                        "guidance_scale": a.cfg, "seed": 0})
  return c
