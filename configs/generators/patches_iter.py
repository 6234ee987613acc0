"""ITER super-resolution (arXiv 2312.05616) on `natural_patches` over the quickstart FSQ tokenizer.

First train the quickstart tokenizer (32 px crops, FSQ 1000 codes on an 8x8 grid), then the LQ
encoder, evaluator and refiner on its codes, once per degradation severity:

  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/jaxtok/quickstart
  python -m jaxtok.main --config=configs/generators/patches_iter.py:severity=mild \
      --config.tokenizer.init_from=/tmp/jaxtok/quickstart --workdir=/tmp/jaxtok/iter_mild

The report (jaxtok/tasks/iter_sr.py) compares bicubic, LQ-token argmax, ITER with the evaluator's
adaptive skip, ITER with all T steps and the freeze-kept ablation on PSNR / SSIM, with mean steps
and the evaluator's precision / recall; re-score a run with other sampling settings by
``--mode=eval --config.sample.alpha=0.5``. Arguments: ``smoke`` (seconds; tests train a tiny
tokenizer first), ``steps=N``, ``severity=mild|strong``, ``tokenizer=PATH`` (default
configs/quickstart.py), ``full`` (for real hardware, not run here).

``full``: ImageNet-256 crops over the conv2d_vq ``imagenet`` tokenizer (16x16 codes, 1024 per
code; the paper's Swin-VQGAN is f = 8, 512 codes, which jaxtok has no config for), nets at the
paper's width 256 with 24 residual conv blocks standing in for its 4 x 6 Swin layers, Adam 1e-4,
effective batch 16, 400k steps, eval on ``validation``.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, full=False, steps=600, severity="mild",
                tokenizer="configs/quickstart.py")
  if a.smoke and a.full:
    raise ValueError("choose one of smoke and full")
  if a.severity not in ("mild", "strong"):
    raise ValueError(f"severity must be mild or strong; got {a.severity!r}")
  c = ml_collections.ConfigDict()
  c.task = "iter_sr"
  c.seed = 0
  c.num_steps = 4 if a.smoke else 400_000 if a.full else a.steps
  c.batch_size = 8 if a.smoke else 16 if a.full else 32
  c.eval_batch_size = 8 if a.smoke else 64
  c.log_every = 1 if a.smoke else 100
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps if a.smoke else 5000 if a.full else 500
  c.keep_checkpoints = 2
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.ynnpack_dots_only = True  # XLA:CPU's own convolutions, as the quickstart tokenizer

  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012" if a.full else "natural_patches"
  c.data.image_size = 256 if a.full else 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:  # the small build of tests/conftest.py's shared data dir
    c.data.num_train, c.data.num_test = 2048, 256
  if a.full:
    c.eval_split = "validation"

  tok = "configs/tokenizers/conv2d_vq.py:imagenet" if a.full else a.tokenizer
  c.tokenizer = ml_collections.ConfigDict({
      "config": tok + (":smoke" if a.smoke else ""), "init_from": ""})
  c.model = ml_collections.ConfigDict(
      {"width": 16, "lq_blocks": 1, "net_blocks": 1} if a.smoke else
      {"width": 256, "lq_blocks": 4, "net_blocks": 24} if a.full else
      {"width": 32, "lq_blocks": 2, "net_blocks": 4})
  c.loss = ml_collections.ConfigDict({"lq": 1.0, "evaluator": 1.0, "refiner": 1.0,
                                      "beta": 0.9999})
  c.degrade = ml_collections.ConfigDict({"severity": a.severity})
  c.sample = ml_collections.ConfigDict({"steps": 4 if a.smoke else 8, "alpha": 0.7,
                                        "temperature": 1.0, "seed": 0})
  c.report = ml_collections.ConfigDict({"images": 16 if a.smoke else 256,
                                        "grid_rows": 4 if a.smoke else 8})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-4 if a.full else 2e-3, "warmup_steps": 2 if a.smoke else 1000 if a.full else 100,
      "b1": 0.9, "b2": 0.99, "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  return c
