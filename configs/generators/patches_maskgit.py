"""Class-conditional MaskGIT on `natural_patches` tokens (class = source photo), FSQ 8x8 tokens.

First train the quickstart tokenizer (natural_patches, 32 px, FSQ 1000 codes), then the
generator on its tokens:

  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/jaxtok/quickstart
  python -m jaxtok.main --config=configs/generators/patches_maskgit.py \
      --config.tokenizer.init_from=/tmp/jaxtok/quickstart --workdir=/tmp/jaxtok/patches_maskgit

Add ``--config.critic.enabled=True`` to train a Token-Critic jointly (Lezama et al., 2022).

Labels are the source photo: 0..7 for the 8 training photos, 8 and 9 for the two test photos, so
``num_classes = 10`` (the embedding covers every label in the token cache) while the report
samples only the training classes ``report.classes = 0..7``. The report compares MaskGIT,
Token-Critic (with the critic) and ReCAP on the same generator at the same steps (keys
``gen/<sampler>/...``): class accuracy under a colour conv classifier trained on the training
crops except every 8th by ``index`` (its accuracy on those held-out crops:
``gen/classifier_heldout_accuracy``), FD-ENL0 (Frechet distance on EfficientNet-Lite0 pooled
features at 224 px, not comparable to Inception FID) against the first 512 real training crops
of those classes (like ImageNet FID's train statistics), NFE and ms per sample; pictures in
<workdir>/report/. Arguments: ``smoke`` (a tiny generator on a small build of the data set;
tests train a tiny tokenizer first), ``steps=N``, ``tokenizer=PATH`` (default
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
  # eval/ runs on the test photos, classes 8 and 9, whose class embeddings training never updates:
  # a held-out loss of unseen photos, not of the conditional model on its training classes.
  c.eval_every = 0 if a.smoke else 500
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.num_classes = 10  # labels 0..9 (8 and 9 are the test photos); see the docstring
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})

  c.data = ml_collections.ConfigDict()
  c.data.name = "natural_patches"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:  # the small build the quickstart smoke config uses
    c.data.num_train = 2048
    c.data.num_test = 256

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
  c.sample = ml_collections.ConfigDict({
      "num_steps": 4 if a.smoke else 8, "choice_temperature": 4.5, "temperature": 1.0,
      "guidance_scale": 1.0, "seed": 0, "samplers": ("maskgit", "token_critic", "recap"),
      "recap_pre_full_iters": 1 if a.smoke else 3, "recap_num_cache_iters": 1})
  c.critic = ml_collections.ConfigDict({
      "enabled": False, "dim": 32 if a.smoke else 128, "num_layers": 1 if a.smoke else 2,
      "num_heads": 2 if a.smoke else 4, "mlp_dim": 64 if a.smoke else 512, "weight": 1.0,
      "choice_temperature": 1.0})
  c.report = ml_collections.ConfigDict({
      "per_class": 2 if a.smoke else 8, "order_samples": 2, "classes": tuple(range(8)),
      "fd": "enl0", "fd_reference": "train", "fd_reference_count": 32 if a.smoke else 512,
      "fd_image_size": 64 if a.smoke else 224})
  c.classifier = ml_collections.ConfigDict({
      "steps": 20 if a.smoke else 600, "batch_size": 64, "lr": 2e-3, "grey": False,
      "channels": (32, 64), "features": 64, "holdout_every": 8})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 1 if a.smoke else 200, "b1": 0.9, "b2": 0.99,
      "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  return c
