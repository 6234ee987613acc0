"""HiVG (Xing et al., 2026): an AR model over hierarchical SVG tokens of the Font Awesome icons.

  python -m jaxtok.main --config=configs/svg/hivg.py --workdir=/tmp/jaxtok/hivg
  python -m jaxtok.main --config=configs/svg/hivg.py:smoke --workdir=/tmp/hivg_smoke
  python scripts/studies/svg_hivg.py   # sequence lengths vs flat SVG text, round-trip errors

Data: ``DATASETS['svg_icons']`` (``pip install fontawesomefree``; rendering needs
``resvg-py``): icons on a 128 grid, HiVG tokens with 200 learned segments, only the icons whose
``[BOS, tokens, EOS]`` fits ``seq_len`` = 128 (888 train / 104 test of 2,050 icons). The model is
a 3-layer, 96-wide CausalLM (600 steps of 16 icons: the held-out NLL rises after
about 500 on 888 icons); the report gives the exact held-out NLL and writes a grid of
sampled icons (HiVG's decoding: temperature 0.7, top-k 50, top-p 0.9) to
<workdir>/report/svg_samples.png. Arguments: ``smoke`` (a 1-layer model,
6 steps on 64 icons), ``steps=N``, ``dim=D``, ``layers=L``, ``batch=B``, ``temperature=T``.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=600, dim=96, layers=3, batch=16, temperature=0.7)
  c = ml_collections.ConfigDict()
  c.task = "svg_ar"
  c.seed = 0
  c.num_steps = 6 if a.smoke else a.steps
  c.batch_size = 8 if a.smoke else a.batch
  c.eval_batch_size = 8 if a.smoke else 64
  c.log_every = 3 if a.smoke else 100
  c.eval_every = 0 if a.smoke else 200
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "svg_icons"
  c.data.seq_len = 128
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:
    c.data.num_train, c.data.num_test = 64, 16
  c.model = ml_collections.ConfigDict({
      "dim": 32 if a.smoke else a.dim, "num_layers": 1 if a.smoke else a.layers,
      "num_heads": 2 if a.smoke else 4, "num_kv_heads": 2 if a.smoke else 4,
      "mlp_dim": 64 if a.smoke else 4 * a.dim})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 3e-3 if a.smoke else 1e-3, "warmup_steps": 2 if a.smoke else 100, "b1": 0.9,
      "b2": 0.99, "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.05})
  c.report = ml_collections.ConfigDict({
      "num_samples": 4 if a.smoke else 32, "cols": 4 if a.smoke else 8,
      "temperature": a.temperature, "top_k": 50, "top_p": 0.9, "pixels": 64, "seed": 0})
  return c
