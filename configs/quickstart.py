"""Quickstart: a 2D convolutional FSQ image tokenizer on `natural_patches` (32 px crops).

  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/jaxtok/quickstart
  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/jaxtok/quickstart --mode=eval
  python -m jaxtok.main --config=configs/quickstart.py:smoke --workdir=/tmp/jaxtok/qs_smoke

About 4 to 6 minutes on 2 CPU cores (4 min 16 s on an idle Intel Xeon; the CPU model decides).
Writes <workdir>/report/reconstructions.png (originals above reconstructions), test PSNR and
codebook usage into <workdir>/metrics.jsonl, and checkpoints.
Arguments: ``smoke`` (seconds, for tests), ``size=32|64``, ``steps=N``.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, size=32, steps=800)
  c = ml_collections.ConfigDict()
  c.task = "tokenizer"
  c.seed = 0
  c.num_steps = 30 if a.smoke else a.steps
  c.batch_size = 16 if a.smoke else 32
  c.eval_batch_size = 64
  c.log_every = 10 if a.smoke else 100
  c.eval_every = 0 if a.smoke else c.num_steps  # the held-out split once, at the end
  c.report_every = c.num_steps  # held-out PSNR, usage and the picture at the end
  c.checkpoint_every = 10 if a.smoke else 500
  c.keep_checkpoints = 2
  c.async_checkpoint = True
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  # XLA:CPU's own convolutions instead of YNNPACK's: about 20% faster steps here (jaxtok.main)
  c.ynnpack_dots_only = True

  c.data = ml_collections.ConfigDict()
  c.data.name = "natural_patches"
  c.data.image_size = a.size
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:  # a small build of the same data set, generated in about 2 s
    c.data.num_train = 2048
    c.data.num_test = 256

  c.model = ml_collections.ConfigDict()
  c.model.kind = "conv2d"
  c.model.base_channels = 16 if a.smoke else 32
  c.model.channel_mults = (1, 2, 2)  # 32 px -> 8x8 tokens
  c.model.num_res_blocks = 1
  c.model.reduce_on_upsample = True  # a narrower full-resolution decoder: 20% fewer step FLOPs
  c.model.latent_dim = 4
  c.model.quantizer = ml_collections.ConfigDict({"name": "fsq", "levels": (8, 5, 5, 5)})

  c.loss = ml_collections.ConfigDict({"l1": 1.0, "l2": 1.0})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 2e-3, "warmup_steps": 100, "b1": 0.9, "b2": 0.99, "weight_decay": 1e-4,
      "grad_clip": 1.0, "final_lr_fraction": 0.05})
  return c
