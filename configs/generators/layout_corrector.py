"""Layout generation: a MaskGIT layout generator with Layout-Corrector (Iwai et al., ECCV 2024).

  python -m jaxtok.main --config=configs/generators/layout_corrector.py --workdir=/tmp/jaxtok/lc
  python -m jaxtok.main --config=configs/generators/layout_corrector.py:smoke --workdir=/tmp/lc_s

Trains the generator and the corrector together on ``layouts`` (procedural document pages,
jaxtok/data/layouts.py), then the report samples one layout per held-out layout (same element
count) with MaskGIT and with the corrector at T in ``sample.steps`` and writes FD (stand-in layout
encoder), alignment and overlap to <workdir>/report/layout_corrector.md and metrics.jsonl
(docs/generators_layout.md). Arguments: ``smoke``; ``full`` (the paper's sizes: generator 4
layers x 512 wide x 8 heads as LayoutDM's backbone, corrector shrunk by 27/32 as in the reference,
batch 64, lr 5e-4, 100 steps; for real hardware); ``steps=N``, ``dim=D``, ``batch=B``,
``data=NAME`` (a registered records set in the ``layouts`` token format; a name that is not
registered fails listing the ones that are), ``samples=N`` (held-out layouts sampled).
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, full=False, steps=3000, dim=96, batch=64, data="layouts",
                samples=512)
  if a.smoke and a.full:
    raise ValueError("choose one of 'smoke' and 'full'")
  c = ml_collections.ConfigDict()
  c.task = "layout"
  c.seed = 0
  c.num_steps = 6 if a.smoke else (200_000 if a.full else a.steps)
  c.batch_size = 8 if a.smoke else a.batch
  c.eval_batch_size = 8 if a.smoke else 256
  c.log_every = 3 if a.smoke else 250
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = a.data
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.data == "layouts":
    c.data.num_train = 64 if a.smoke else 20_000
    c.data.num_test = 16 if a.smoke else 2_000
  dim = 512 if a.full else (32 if a.smoke else a.dim)
  corr_dim = 432 if a.full else dim  # 512 * 27 / 32, the reference's shrink_ratio
  heads = 8 if a.full else (2 if a.smoke else 4)
  layers = 1 if a.smoke else 4
  c.model = ml_collections.ConfigDict({"dim": dim, "num_layers": layers, "num_heads": heads,
                                       "mlp_dim": 4 * dim, "dropout": 0.1 if a.full else 0.0})
  c.corrector = ml_collections.ConfigDict({
      "dim": corr_dim, "num_layers": layers, "num_heads": heads, "mlp_dim": 4 * corr_dim,
      "dropout": 0.0, "ratio_bins": 16, "weight": 1.0, "temperature": 1.0})
  c.loss = ml_collections.ConfigDict({"schedule": "cosine", "label_smoothing": 0.1})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 5e-4 if a.full else 1e-3, "warmup_steps": 2 if a.smoke else 200, "b1": 0.9,
      "b2": 0.99, "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  c.sample = ml_collections.ConfigDict({
      "steps": (4,) if a.smoke else (4, 8, 16, 32),
      "samplers": (("maskgit", "layout_corrector") if a.smoke else
                   ("maskgit", "layout_corrector", "layout_corrector:mode='topk'")),
      "fractions": (0.7, 0.8, 0.9), "temperature": 1.0, "choice_temperature": 1.0,
      "num_samples": 16 if a.smoke else a.samples, "seed": 0, "precision": "float32_log1p"})
  c.report = ml_collections.ConfigDict({
      "encoder_steps": 20 if a.smoke else 600, "encoder_dim": 32 if a.smoke else 64,
      "encoder_rows": 64 if a.smoke else 4096, "pictures": 4 if a.smoke else 8})
  return c
