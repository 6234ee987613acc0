"""Sparse VideoGen2 attention in a masked pixel-token generator (task 'svg2', docs in
docs/kernels_sparse_attention.md).

  python -m jaxtok.main --config=configs/generators/shapes_svg2.py --workdir=/tmp/jaxtok/svg2_task
  python -m jaxtok.main --config=configs/generators/shapes_svg2.py:smoke --workdir=/tmp/svg2_smoke

Trains a MaskGIT generator (dense attention) over the 1024 pixel tokens of 32 px ``shapes``
scenes, then the report samples and scores it with SVG2 attention at several block budgets
(report/svg2.md, report/svg2_samples.png): it completes the bottom half of held-out scenes from
their top half, as a video model continues its first frames. Arguments: ``smoke``; ``full``
(for real hardware: 64 px scenes, i.e. 4096 tokens, a 12-layer 512-wide generator, the paper's
300 query / 1000 key clusters, 20% dense steps and the first layer dense; not run here);
``steps=N``; ``size=S`` (image side, tokens = S * S); ``budgets=B1+B2`` (key blocks per query
block, 0: top-p only).
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, full=False, steps=600, size=32, budgets="0+8+4+2")
  if a.smoke and a.full:
    raise ValueError("choose one of 'smoke' and 'full'")
  size = 16 if a.smoke else (64 if a.full else a.size)
  c = ml_collections.ConfigDict()
  c.task = "svg2"
  c.seed = 0
  c.num_steps = 4 if a.smoke else (200_000 if a.full else a.steps)
  c.batch_size = 8 if a.smoke else (256 if a.full else 16)
  c.eval_batch_size = 8 if a.smoke else 64
  c.log_every = 2 if a.smoke else 50
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "shapes"
  c.data.image_size = size
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:
    c.data.num_train, c.data.num_test = 64, 16
  dim = 512 if a.full else (32 if a.smoke else 128)
  c.model = ml_collections.ConfigDict({
      "dim": dim, "num_layers": 12 if a.full else (1 if a.smoke else 4),
      "num_heads": 8 if a.full else (2 if a.smoke else 4), "mlp_dim": 4 * dim, "levels": 4})
  c.loss = ml_collections.ConfigDict({"schedule": "cosine", "label_smoothing": 0.0})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 1 if a.smoke else 50, "b1": 0.9, "b2": 0.99,
      "weight_decay": 0.01, "grad_clip": 1.0, "final_lr_fraction": 0.0})
  budgets = (0, 2) if a.smoke else tuple(int(b) for b in str(a.budgets).split("+"))
  c.sparse = ml_collections.ConfigDict({
      "num_q_clusters": 300 if a.full else (4 if a.smoke else 16),
      "num_k_clusters": 1000 if a.full else (8 if a.smoke else 32),
      "kmeans_iters": 5, "top_p": 0.9, "min_frac": 0.1,
      "block_q": 32 if a.smoke else 64, "block_k": 32 if a.smoke else 64, "budgets": budgets,
      "dense_layers": 1 if a.full else 0, "dense_steps": 0.2, "backend": "xla"})
  c.report = ml_collections.ConfigDict({
      "eval_images": 8 if a.smoke else 64, "probe_images": 2 if a.smoke else 8,
      "mask_fraction": 0.5, "samples": 4 if a.smoke else 16, "given_rows": 0.5,
      "num_steps": 5 if a.smoke else 16,
      "temperature": 1.0, "choice_temperature": 4.5, "seed": 0,
      "timing_repeats": 1 if a.smoke else 2, "pictures": 4 if a.smoke else 8})
  return c
