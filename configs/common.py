"""Settings shared by the config files (each config file builds one experiment from these).

Config files import this module as ``configs.common`` (the repository root is on ``sys.path`` when
``python -m jaxtok.main`` runs from it, and ``pip install -e .`` installs ``configs`` too).
"""

import ml_collections

from jaxtok.decoding.trees import DEFAULT_RANK_ACCEPT
from jaxtok.tasks.generator import SAMPLERS as GENERATOR_SAMPLERS
from jaxtok.tasks.sudoku import KINDS as SUDOKU_KINDS
from jaxtok.tasks.tokenizer import DEFAULTS as TOKENIZER_DEFAULTS
from jaxtok.tokenizers.titok import DEFAULT_TOKENS, VARIANTS

# ----------------------------------------------------------------------------------------------
# Image tokenizers (configs/tokenizers/*)
# ----------------------------------------------------------------------------------------------


def tokenizer_base_config(a, data: str = "natural_patches",
                          size: int = 32) -> ml_collections.ConfigDict:
  """Data, schedule, optimiser and report settings shared by configs/tokenizers/*.

  ``a`` is the config's parsed argument with ``smoke`` (a few steps on a small build of the data,
  for tests), ``imagenet`` (ImageNet-256 from tfds 'imagenet2012', prepared by the user),
  ``steps`` (0 = the default for the scale) and ``seed``. The caller sets ``c.model``.
  """
  if a.smoke and a.imagenet:
    raise ValueError("choose one of smoke and imagenet")
  c = ml_collections.ConfigDict()
  c.task = "tokenizer"
  c.seed = a.seed
  c.num_steps = a.steps or (3 if a.smoke else 500_000 if a.imagenet else 1500)
  c.batch_size = 8 if a.smoke else 256 if a.imagenet else 32
  c.eval_batch_size = 64
  c.log_every = 1 if a.smoke else 100
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = 0 if a.smoke else 5000 if a.imagenet else 500
  c.keep_checkpoints = 2
  c.async_checkpoint = True
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012" if a.imagenet else data
  c.data.image_size = 256 if a.imagenet else size
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.imagenet:
    c.eval_split = "validation"
  if a.smoke:  # the small builds of tests/conftest.py's shared data dir
    c.data.num_train, c.data.num_test = (2048, 256) if data == "natural_patches" else (512, 64)
  c.loss = ml_collections.ConfigDict(dict(TOKENIZER_DEFAULTS["loss"]))
  c.gan = ml_collections.ConfigDict(dict(TOKENIZER_DEFAULTS["gan"]))
  c.ema = ml_collections.ConfigDict(dict(TOKENIZER_DEFAULTS["ema"]))
  c.perturb = ml_collections.ConfigDict(dict(TOKENIZER_DEFAULTS["perturb"]))
  c.report = ml_collections.ConfigDict(dict(TOKENIZER_DEFAULTS["report"]))
  if a.imagenet:  # TiTok's single-stage recipe: L2 + perceptual 0.1 + GAN 0.1 from 20k + LeCAM
    c.loss.update(l1=0.0, l2=1.0, perceptual=0.1, perceptual_size=224)
    c.gan.update(weight=0.1, start=20_000, lecam=0.001, base_channels=64, num_layers=3)
    c.ema.decay = 0.999
    c.report.update(fd=True, rate_distortion=True, max_fd_images=50_000)
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-4 if a.imagenet else 1e-3, "warmup_steps": 10_000 if a.imagenet else 100,
      "b1": 0.9, "b2": 0.99, "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  return c


TITOK_CPU = dict(width=64, depth=2, num_heads=4, mlp_dim=256)


def titok_model_config(a, quantizer: dict, **extra) -> ml_collections.ConfigDict:
  """The TiTok model block of the 1D-token configs (titok, flextok, one_d_piece, ...).

  ``a`` has ``smoke``, ``imagenet``, ``variant`` ('cpu': a small ViT for 32 px on this CPU, or a
  name of ``jaxtok.tokenizers.titok.VARIANTS``) and ``tokens`` (0: the variant's default).
  """
  variant = "tiny" if a.smoke else a.variant
  if variant != "cpu" and variant not in VARIANTS:
    raise ValueError(f"variant must be cpu or one of {sorted(VARIANTS)}; got {variant!r}")
  m = ml_collections.ConfigDict()
  m.kind = "titok"
  if variant == "cpu":
    m.update(TITOK_CPU)
  else:
    m.variant = variant
  m.image_size = 256 if a.imagenet else 32
  m.patch_size = 16 if a.imagenet else 4
  m.num_tokens = a.tokens or (8 if a.smoke else DEFAULT_TOKENS.get(variant, 32))
  m.quantizer = ml_collections.ConfigDict(quantizer)
  m.code_dim = quantizer.get("dim") or len(quantizer.get("levels", ())) or quantizer["num_bits"]
  # The reference code's choices, as options (docs/tokenizers.md, "Reference options").
  m.pixel_head, m.gelu, m.ln_pre = "linear", "tanh", False
  m.update(extra)
  return m


# ----------------------------------------------------------------------------------------------
# Class-conditional MaskGIT generators (configs/generators/*_maskgit.py)
# ----------------------------------------------------------------------------------------------


def generator_base_config(a, data: str, num_classes: int) -> ml_collections.ConfigDict:
  """Settings shared by configs/generators/{digits,patches,imagenet}_maskgit.py.

  ``a`` is the config's parsed argument with ``smoke`` (a tiny generator; the tests train a tiny
  tokenizer first), ``steps`` and ``tokenizer`` (the tokenizer config file, whose run
  ``tokenizer.init_from`` must name), and optionally ``imagenet``: the full-scale MaskGIT recipe
  for ImageNet-256 ("MaskGIT: Masked Generative Image Transformer", Chang et al., 2022, Sec. 4.1
  and App. A): tokens of the tokenizer config's ``imagenet`` variant (16x16 grid, 1024 codes), a
  24-layer transformer of width 768 (16 heads, MLP 3072, dropout 0.1), batch 256, AdamW lr 1e-4
  with b2 0.96 and weight decay 0.045, label smoothing 0.1, 5000 warm-up steps, 1.5M steps (300
  epochs of 1.28M images), eval on ``validation``. The caller sets what differs per data set
  (data build, report, classifier).
  """
  imagenet = bool(a.get("imagenet", False))
  if a.smoke and imagenet:
    raise ValueError("choose one of smoke and imagenet (the full-scale config cannot be smoked: "
                     "its tokenizer variant is ImageNet-256)")
  c = ml_collections.ConfigDict()
  c.task = "generator"
  c.seed = 0
  c.num_steps = 4 if a.smoke else a.steps
  c.batch_size = 16 if a.smoke else 256 if imagenet else 64
  c.eval_batch_size = 256 if imagenet else 64
  c.log_every = 2 if a.smoke else 100
  c.eval_every = 0 if a.smoke else 10_000 if imagenet else 500
  c.report_every = 100_000 if imagenet else c.num_steps
  c.checkpoint_every = 5000 if imagenet else c.num_steps
  c.keep_checkpoints = 3 if imagenet else 1
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.num_classes = num_classes
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = data
  c.data.image_size = 256 if imagenet else 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if imagenet:
    c.eval_split = "validation"
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.config = a.tokenizer + (":smoke" if a.smoke else ":imagenet" if imagenet else "")
  c.tokenizer.init_from = ""  # a tokenizer run's workdir (required)
  c.tokenizer.cache_dir = ""  # default <init_from>/token_cache/<data>_<size>
  # The quickstart FSQ levels (8, 5, 5, 5); the ImageNet VQ's 1024 codes.
  c.tokenizer.vocab_size = 1024 if imagenet else 1000
  small = {"dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}
  if a.smoke:
    model = small
  elif imagenet:
    model = {"dim": 768, "num_layers": 24, "num_heads": 16, "mlp_dim": 3072}
  else:
    model = {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512}
  c.model = ml_collections.ConfigDict({**model, "cond_dropout": 0.1,
                                       "dropout": 0.1 if imagenet else 0.0})
  c.loss = ml_collections.ConfigDict({"schedule": "cosine", "label_smoothing": 0.1})
  c.sample = ml_collections.ConfigDict({
      "num_steps": 4 if a.smoke else 8, "choice_temperature": 4.5, "temperature": 1.0,
      # token_critic runs only with the critic enabled
      "guidance_scale": 1.0, "seed": 0, "samplers": GENERATOR_SAMPLERS,
      "precision": "float32_log1p",
      "recap_pre_full_iters": 1 if a.smoke else 3, "recap_num_cache_iters": 1})
  c.critic = ml_collections.ConfigDict({
      **(small if a.smoke else {"dim": 128, "num_layers": 2, "num_heads": 4, "mlp_dim": 512}),
      "enabled": False, "weight": 1.0, "choice_temperature": 1.0})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 1 if a.smoke else 200, "b1": 0.9, "b2": 0.99,
      "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  if imagenet:
    c.optimizer.update(lr=1e-4, warmup_steps=5000, b2=0.96, weight_decay=0.045)
  return c


# ----------------------------------------------------------------------------------------------
# Sudoku (configs/generators/sudoku_mdm.py and sudoku_ar.py)
# ----------------------------------------------------------------------------------------------

# Solve rate vs steps: MaskGIT and ddpm at growing step counts, FHS (one token per step), and the
# confidence-driven samplers at a threshold (their NFE adapts to the puzzle).
FULL_SOLVERS = (
    "maskgit:num_steps=4,temperature=0.0", "maskgit:num_steps=8,temperature=0.0",
    "maskgit:num_steps=16,temperature=0.0", "maskgit:num_steps=32,temperature=0.0",
    "ddpm:num_steps=8", "ddpm:num_steps=32", "ddpm:num_steps=128", "fhs", "fhs:temperature=0.0",
    "threshold:threshold=0.9", "threshold:threshold=0.9,block_length=9",
    "dcd:threshold=0.9,window=16", "recap:num_steps=32,pre_full_iters=12,temperature=0.0",
)
# The smoke run exercises the model-side paths (plain logits and the ReCAP hooks); every sampler
# is checked against an oracle in tests/tasks/test_sudoku_task.py.
SMOKE_SOLVERS = ("maskgit:num_steps=4,temperature=0.0", "fhs", "dcd:threshold=0.9,window=8",
                 "recap:num_steps=6,pre_full_iters=2")


def sudoku_config(kind: str, *, smoke: bool, steps: int, dim: int = 96, layers: int = 3,
                  batch: int = 32) -> ml_collections.ConfigDict:
  """The shared sudoku config; ``kind`` is 'mdm' or 'ar' (same data, budget and size)."""
  if kind not in SUDOKU_KINDS:
    raise ValueError(f"kind must be one of {SUDOKU_KINDS}, got {kind!r}")
  c = ml_collections.ConfigDict()
  c.task = "sudoku"
  c.seed = 0
  c.num_steps = 6 if smoke else steps
  c.batch_size = 8 if smoke else batch
  c.eval_batch_size = 8 if smoke else 64
  c.log_every = 3 if smoke else 100
  c.eval_every = 0 if smoke else 1000
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = not smoke
  c.init_from = ""
  c.augment = True
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "sudoku"
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.num_train = 64 if smoke else 2048
  c.data.num_test = 16 if smoke else 256
  c.model = ml_collections.ConfigDict({
      "kind": kind, "dim": 32 if smoke else dim, "num_layers": 1 if smoke else layers,
      "num_heads": 2 if smoke else 4, "mlp_dim": 64 if smoke else 4 * dim, "dropout": 0.0})
  c.loss = ml_collections.ConfigDict({"alpha": "linear"})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 2 if smoke else 200, "b1": 0.9, "b2": 0.99,
      "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  c.eval = ml_collections.ConfigDict()
  c.eval.num_puzzles = 8 if smoke else 128
  c.eval.seed = 0
  c.eval.precision = ""  # Gumbel precision of every sampler that has one ("": its default)
  if kind == "ar":
    c.eval.samplers = (("ar:greedy=True",) if smoke else
                       ("ar:greedy=True", "ar:temperature=1.0"))
  else:
    c.eval.samplers = SMOKE_SOLVERS if smoke else FULL_SOLVERS
  return c


def teacher_distill_config(task: str, a, *, steps: int, smoke_steps: int, report_every: int,
                           smoke_data: tuple[int, int], smoke_eval_batches: int
                           ) -> ml_collections.ConfigDict:
  """Teacher, loop, data and optimiser of configs/decoding/*_distill.py: SmolLM2-135M (smoke: a
  random 'tiny' teacher on byte-level source) and its BPE of the standard library's source.

  ``a``: the parsed argument with ``smoke``, ``steps``, ``batch``, ``seq`` and ``lr``, and
  optionally ``greedy`` (N > 0: train on N windows regenerated by the teacher's greedy decoding,
  ``python_source_smollm2_greedy``, held out on 64; 0: the human-written source) and ``init`` (a
  workdir whose weights the run starts from: ``init_from``)."""
  smoke, ref = a.smoke, ml_collections.FieldReference
  greedy = int(a.get("greedy", 0))
  c = ml_collections.ConfigDict({"task": task, "seed": 0, "dtype": "float32"})
  c.teacher = ml_collections.ConfigDict({
      "pretrained": ref(None if smoke else "smollm2-135m", field_type=str),
      "variant": "tiny",  # the random teacher when pretrained is None
      "seed": 1234})
  c.num_steps = a.steps or (smoke_steps if smoke else steps)
  c.batch_size = c.eval_batch_size = a.batch
  c.eval_max_batches = smoke_eval_batches if smoke else 8  # test batches scored by report / eval
  c.log_every = 5 if smoke else 10
  c.eval_every = 0  # the loop's full pass over the test split: off (report scores a sample)
  c.checkpoint_every = 0 if smoke else 50
  c.report_every = c.num_steps if smoke else report_every
  c.keep_checkpoints = 2
  c.async_checkpoint = not smoke
  c.init_from = a.get("init", "")
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict({
      "name": ("python_source" if smoke else "python_source_smollm2") + (
          "_greedy" if greedy else ""),
      "seq_len": a.seq + 1,  # T + 1 tokens per example (inputs and targets)
      "data_dir": ref(None, field_type=str)})
  if smoke:
    c.data.num_train, c.data.num_test = smoke_data
  if greedy:  # every regenerated window costs decoding: the counts are always named
    c.data.num_train = greedy
    c.data.num_test = smoke_data[1] if smoke else 64
  c.optimizer = ml_collections.ConfigDict({
      "lr": a.lr or (3e-3 if smoke else 1e-3), "warmup_steps": 5 if smoke else 20,
      "b1": 0.9, "b2": 0.99, "weight_decay": 0.0, "grad_clip": 1.0, "final_lr_fraction": 0.1})
  return c


def speculative_base_config(smoke: bool, proposer: str,
                            verifier: str = "greedy") -> ml_collections.ConfigDict:
  """Every key of the task, for ``configs/decoding/*.py`` (smoke: random 'tiny' models, bytes)."""
  ref = ml_collections.FieldReference
  c = ml_collections.ConfigDict({"task": "speculative", "seed": 0, "dtype": "float32"})
  # weights: 'bfloat16' stores the target's and draft's weight matrices in bf16 for decoding
  # (plain and speculative alike; float32 activations, jaxtok/nn/bf16.py): on XLA:CPU a verify
  # pass over up to ~16 tokens then costs about one 1-token step (docs/decoding.md).
  c.weights = "float32"
  # pretrained: a PRETRAINED_LMS name or a path; None = a random `variant` (smoke runs). chat:
  # format prompts as ChatML for a random target too (pretrained ones say whether they chat).
  c.target = ml_collections.ConfigDict({
      "pretrained": ref(None if smoke else "smollm2-135m", field_type=str),
      "variant": "tiny" if smoke else "smollm2-135m", "chat": False})
  # For proposer 'draft', the first that is set: a distill run directory (restore_student), a
  # PRETRAINED_LMS name, a random variant (init seed `seed`; = config.seed: the target itself).
  c.draft = ml_collections.ConfigDict({
      "workdir": ref("", field_type=str), "pretrained": ref(None, field_type=str),
      "variant": ref("tiny" if smoke else None, field_type=str), "seed": 1})
  # Random models: the init times this, so that their argmax is not a coin flip and they repeat
  # (which gives n-gram lookup and recycling something to find).
  c.random_scale = 3.0 if smoke else 1.0
  c.proposer = ml_collections.ConfigDict({
      "name": proposer, "length": 4, "num_drafts": 1, "draft_temperature": 0.0,
      "max_ngram": 3, "min_ngram": 1, "tree_nodes": 12, "tree_depth": 6, "top_k": 8,
      "rank_accept": DEFAULT_RANK_ACCEPT, "hot_start": True})  # hot_start: recycling's adjacency
  c.update({"verifier": verifier, "temperature": 0.0 if verifier == "greedy" else 1.0, "top_k": 0,
            "top_p": 1.0, "rho": ref(None, field_type=float),  # spectr's; None = best per step
            "prompt": "What is the capital of France?", "max_new_tokens": 24 if smoke else 128,
            "eval_prompts": "chat" if smoke else "mixed",  # bytes: code prompts are too long
            "eval_num_prompts": 2 if smoke else 8, "eval_batch_size": 1, "eval_pad_multiple": 64,
            # eval: decode the prompts as one queue through eval_batch_size slots, a finished
            # row taking the next prompt (continuous batching; ngram and recycling only).
            "eval_serve": False})
  # The loop's keys: nothing to train (--mode=sample or --mode=eval).
  c.update({"num_steps": 0, "batch_size": 1,
            "mesh": ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})})
  return c


def text_loop_config(task: str, scale: str, *, steps: int, batch: int,
                     log_every: int) -> ml_collections.ConfigDict:
  """The loop fields shared by the Python-source text configs (python_assd, python_neodiff,
  python_mdm) at ``scale`` smoke / cpu / full: held-out evaluation and the report once at the
  end on a CPU, every 10k steps at full scale; checkpoints at the end (every 5k at full scale)."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.num_steps = steps
  c.batch_size = batch
  c.eval_batch_size = 8 if scale == "smoke" else 64
  c.log_every = log_every
  c.eval_every = 0 if scale == "smoke" else steps if scale == "cpu" else 10_000
  c.report_every = steps
  c.checkpoint_every = steps if scale != "full" else 5000
  c.keep_checkpoints = 1 if scale != "full" else 3
  c.async_checkpoint = scale != "smoke"
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  return c
