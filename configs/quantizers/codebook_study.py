"""Codebook-usage study: the same 2D conv tokenizer with each quantizer, same data and steps.

  python -m jaxtok.main --config=configs/quantizers/codebook_study.py:quantizer=vq_ema \
      --workdir=/tmp/jaxtok/study/vq_ema
  python scripts/studies/codebook_usage.py   # all five, then the table (docs/quantizers.md)

Quantizers at about 10 bits per token on an 8x8 grid of 32 px `natural_patches` crops:
``vq`` (1024 codes, straight-through, codebook + commitment losses), ``vq_ema`` (1024 codes, EMA
codebook, k-means init, dead-code replacement), ``fsq`` (levels 8,5,5,5 = 1000 codes), ``lfq``
(10 bits, entropy regulariser), ``binary`` (10 Bernoulli bits, Instella-T2I). Arguments:
``quantizer=...``, ``steps=N``, ``smoke``.
"""

import ml_collections

from jaxtok.config_args import parse_arg

QUANTIZER_VARIANTS = {
    "vq": ({"name": "vq", "num_codes": 1024, "dim": 8}, 8),
    "vq_ema": ({"name": "vq", "num_codes": 1024, "dim": 8, "ema": True, "decay": 0.99,
                "kmeans_init": True, "dead_code_threshold": 0.5}, 8),
    "fsq": ({"name": "fsq", "levels": (8, 5, 5, 5)}, 4),
    "lfq": ({"name": "lfq", "num_bits": 10, "entropy_weight": 0.1}, 10),
    "binary": ({"name": "binary", "num_bits": 10}, 10),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, quantizer="fsq", steps=800, smoke=False)
  if a.quantizer not in QUANTIZER_VARIANTS:
    raise ValueError(f"unknown quantizer variant {a.quantizer!r}; valid: "
                     f"{', '.join(QUANTIZER_VARIANTS)}")
  quantizer, latent_dim = QUANTIZER_VARIANTS[a.quantizer]
  c = ml_collections.ConfigDict()
  c.task = "tokenizer"
  c.seed = 0
  c.num_steps = 20 if a.smoke else a.steps
  c.batch_size = 16 if a.smoke else 32
  c.eval_batch_size = 64
  c.log_every = 10 if a.smoke else 100
  c.eval_every = 0
  c.report_every = 0  # scripts/studies/codebook_usage.py evaluates every variant the same way
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = True
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "natural_patches"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:
    c.data.num_train = 2048
    c.data.num_test = 256
  c.model = ml_collections.ConfigDict()
  c.model.kind = "conv2d"
  c.model.base_channels = 16
  c.model.channel_mults = (1, 2, 2)
  c.model.num_res_blocks = 1
  c.model.latent_dim = latent_dim
  c.model.quantizer = ml_collections.ConfigDict(quantizer)
  c.loss = ml_collections.ConfigDict({"l1": 1.0, "l2": 1.0})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 2e-3, "warmup_steps": 50, "b1": 0.9, "b2": 0.99, "weight_decay": 1e-4,
      "grad_clip": 1.0, "final_lr_fraction": 0.05})
  return c
