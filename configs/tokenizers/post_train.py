"""Tokenizer post-training (RobusTok): fine-tune the decoder on a trained generator's tokens.

Train a tokenizer, then a generator on its tokens, then post-train the tokenizer's decoder:

  python -m jaxtok.main --config=configs/quickstart.py --config.data.name=digits \\
      --workdir=/tmp/jaxtok/digits_tok
  python -m jaxtok.main --config=configs/generators/digits_maskgit.py \\
      --config.tokenizer.init_from=/tmp/jaxtok/digits_tok --workdir=/tmp/jaxtok/digits_maskgit
  python -m jaxtok.main --config=configs/tokenizers/post_train.py \\
      --config.generator.init_from=/tmp/jaxtok/digits_maskgit --workdir=/tmp/jaxtok/digits_post

"Image Tokenizer Needs Post-Training" (Qiu et al., 2025), the post-training stage
(jaxtok/tasks/post_train.py): the encoder is frozen; the decoder learns to map teacher-forced
generations (each real token kept with probability ``sigma`` = 0.7, the rest filled by the
generator) back to the real image. The report compares the original and the post-trained decoder
on the same tokens: reconstruction PSNR, teacher-forced PSNR, and class accuracy / FD of free
samples under the generator report's digits classifier (<workdir>/report/post_training.png).
The data block is the generator config's (the images its tokens came from).
Arguments: ``smoke`` (the smoke generator config; tests), ``imagenet`` (the paper's settings with
configs/generators/imagenet_maskgit.py, for real hardware), ``steps=N``, ``sigma=X`` (1.0: the
control, the same fine-tune on the encoder's own tokens),
``feed=ids|reencode``, ``generator=CONFIG`` (the generator run's config file). A run trained
with command-line overrides that change its parameters needs them here too: the Token-Critic
(``--config.critic.enabled=True``) is ``--config.generator.critic=True``.
"""

import ml_collections

from jaxtok.config_args import load_config, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, sigma=0.7, feed="ids",
                generator="configs/generators/digits_maskgit.py")
  if a.smoke and a.imagenet:
    raise ValueError("choose one of smoke and imagenet")
  if a.imagenet and a.generator.endswith("digits_maskgit.py"):
    a.generator = "configs/generators/imagenet_maskgit.py"
  gen_arg = ":smoke" if a.smoke else ":imagenet" if a.imagenet else ""
  if a.imagenet and "imagenet_maskgit" in a.generator:
    gen_arg = ""  # that file is the ImageNet recipe already
  scale = "smoke" if a.smoke else "imagenet" if a.imagenet else "cpu"
  c = ml_collections.ConfigDict()
  c.task = "tokenizer_post_train"
  c.seed = 0
  c.num_steps = a.steps or {"smoke": 3, "cpu": 600, "imagenet": 20_000}[scale]
  c.batch_size = {"smoke": 8, "cpu": 64, "imagenet": 1024}[scale]
  c.eval_batch_size = {"smoke": 16, "cpu": 64, "imagenet": 256}[scale]
  c.log_every = {"smoke": 1, "cpu": 50, "imagenet": 500}[scale]
  c.eval_every = 0 if a.smoke else c.num_steps
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps if scale != "imagenet" else 2000
  c.keep_checkpoints = 1 if scale != "imagenet" else 3
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.generator = ml_collections.ConfigDict({
      "config": a.generator + gen_arg,
      "init_from": "",  # the generator run's workdir (required)
      "tokenizer_init_from": "",  # default: the tokenizer run the generator config names
      "critic": False})  # True when the generator trained with critic.enabled (its state has one)
  gen = load_config(c.generator.config)
  c.data = gen.data
  c.eval_split = gen.get("eval_split", "test")
  c.num_classes = gen.get("num_classes", 10)
  c.post = ml_collections.ConfigDict({
      "sigma": a.sigma, "feed": a.feed, "fill_steps": 2, "trainable": ("decoder",),
      "guidance_scale": 1.0, "temperature": 1.0, "choice_temperature": 1.0})
  c.loss = ml_collections.ConfigDict({"l2": 1.0, "l1": 0.0, "perceptual": 1.0,
                                      "perceptual_stages": (1, 2, 3), "perceptual_size": 0})
  # AdamW; the paper: lr 5e-5 cosine, weight decay 0, batch 1024, 100 epochs
  c.optimizer = ml_collections.ConfigDict({
      "lr": 5e-5 if a.imagenet else 2e-4, "warmup_steps": 1 if a.smoke else 50,
      "b1": 0.9, "b2": 0.99, "weight_decay": 0.0, "grad_clip": 1.0, "final_lr_fraction": 0.1})
  c.report = ml_collections.ConfigDict(dict(gen.get("report", {})))
  c.report.per_class = 2 if a.smoke else 16 if not a.imagenet else 50
  c.classifier = ml_collections.ConfigDict(dict(gen.get("classifier", {})))
  return c
