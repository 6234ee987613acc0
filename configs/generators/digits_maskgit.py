"""Class-conditional MaskGIT on `digits` tokens from a trained FSQ tokenizer (CFG, 8x8 tokens).

First train the tokenizer on digits (the quickstart model), then the generator on its tokens:

  python -m jaxtok.main --config=configs/quickstart.py --config.data.name=digits \
      --workdir=/tmp/jaxtok/digits_tok
  python -m jaxtok.main --config=configs/generators/digits_maskgit.py \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_tok --workdir=/tmp/jaxtok/digits_maskgit

Add ``--config.critic.enabled=True`` to train a Token-Critic jointly (Lezama et al., 2022).

The digits are encoded once into <init_from>/token_cache/digits_32/tokens.npz. The report samples
every class with MaskGIT, Token-Critic (with the critic) and ReCAP from the same generator at the
same steps and writes, per sampler under ``gen/<sampler>/``, the class accuracy of the samples
under a small conv classifier trained on real digits (its test accuracy:
``gen/classifier_test_accuracy``), the Frechet distance on its 64-d features against the real
test digits (``fd_classifier``), NFE and ms per sample; pictures: <workdir>/report/samples.png
(MaskGIT, a row per class), samples_<sampler>.png, unmasking_order.png. ``smoke``: a tiny
generator (tests train a tiny tokenizer first, see tests/tasks/test_generator_task.py).
Arguments: ``smoke``, ``steps=N``, ``tokenizer=PATH`` (the tokenizer config, default
configs/quickstart.py).
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=2000, tokenizer="configs/quickstart.py")
  c = ml_collections.ConfigDict()
  c.task = "generator"
  c.seed = 0
  c.num_steps = 4 if a.smoke else a.steps
  c.batch_size = 16 if a.smoke else 64
  c.eval_batch_size = 64
  c.log_every = 2 if a.smoke else 100
  c.eval_every = 0 if a.smoke else 500
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.num_classes = 10
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.config = a.tokenizer + (":smoke" if a.smoke else "")
  c.tokenizer.init_from = ""  # a tokenizer run's workdir (required)
  c.tokenizer.cache_dir = ""  # default <init_from>/token_cache/<data>_<size>
  c.tokenizer.vocab_size = 1000  # the quickstart FSQ levels (8, 5, 5, 5)

  c.model = ml_collections.ConfigDict({
      "dim": 32 if a.smoke else 128, "num_layers": 1 if a.smoke else 4,
      "num_heads": 2 if a.smoke else 4, "mlp_dim": 64 if a.smoke else 512,
      "cond_dropout": 0.1, "dropout": 0.0})
  c.loss = ml_collections.ConfigDict({"schedule": "cosine", "label_smoothing": 0.1})
  c.sample = ml_collections.ConfigDict({"num_steps": 4 if a.smoke else 8,
                                        "choice_temperature": 4.5, "temperature": 1.0,
                                        "guidance_scale": 1.0, "seed": 0})
  c.sample.samplers = ("maskgit", "token_critic", "recap")  # token_critic needs the critic
  c.sample.recap_pre_full_iters = 1 if a.smoke else 3
  c.sample.recap_num_cache_iters = 1
  c.critic = ml_collections.ConfigDict({
      "enabled": False, "dim": 32 if a.smoke else 128, "num_layers": 1 if a.smoke else 2,
      "num_heads": 2 if a.smoke else 4, "mlp_dim": 64 if a.smoke else 512, "weight": 1.0,
      "choice_temperature": 1.0})
  c.report = ml_collections.ConfigDict({"per_class": 2 if a.smoke else 8, "order_samples": 2,
                                        "fd": "classifier", "fd_reference": "test"})
  c.classifier = ml_collections.ConfigDict({"steps": 20 if a.smoke else 400, "batch_size": 64,
                                            "lr": 2e-3, "grey": True})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 1 if a.smoke else 200, "b1": 0.9, "b2": 0.99,
      "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  return c
