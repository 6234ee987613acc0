"""An any-subset AR model (AS-ARM) on Python standard-library bytes, decoded by ASSD.

  python -m jaxtok.main --config=configs/generators/python_assd.py --workdir=/tmp/jaxtok/assd
  python -m jaxtok.main --config=configs/generators/python_assd.py --workdir=/tmp/jaxtok/assd \
      --mode=eval --config.eval.num_windows=32
  python -m jaxtok.main --config=configs/generators/python_assd.py:smoke --workdir=/tmp/assd_smoke

"Reviving Any-Subset Autoregressive Models" (Guo & Ermon, 2025): XLNet-style two-stream attention
trained with the joint objective and the stratified masking-rate curriculum (rho from 0.15,
widening to [0.5, 0.95] over ``warmup`` steps). The report infills held-out windows at 50%, 75%
and 95% masked with the one-call-per-token sampler and with ASSD at k = 2, 5, 10: tokens per
round, NFE per token, and the model NLL and byte histogram of the samples against sequential
sampling's (<workdir>/report/assd.md; docs/generators_assd.md has the measured numbers).

Scales: the default is the CPU scale of the paper card (4 layers, width 256, 128 bytes per
window; about 10 minutes of training on 2 shared cores); ``smoke`` (seconds, for tests);
``full``: an XLNet-base-sized model (12 layers, width 768) on 512-token windows of SmolLM2's BPE
(``python_source_smollm2``), the paper's training length and warm-up, for an accelerator.
Arguments: ``steps=N``, ``batch=B``, ``lo=X``, ``hi=X`` (the curriculum's final range),
``cache=False`` (the report's samplers without the KV cache).
"""

import ml_collections

from configs.common import text_loop_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, full=False, steps=0, batch=0, lo=0.5, hi=0.95, cache=True)
  if a.smoke and a.full:
    raise ValueError("choose one of smoke and full")
  scale = "smoke" if a.smoke else "full" if a.full else "cpu"
  steps = {"smoke": 6, "cpu": 500, "full": 100_000}[scale]
  c = text_loop_config("any_subset", scale, steps=a.steps or steps,
                       batch=a.batch or {"smoke": 8, "cpu": 16, "full": 32}[scale],
                       log_every={"smoke": 3, "cpu": 50, "full": 500}[scale])

  c.data = ml_collections.ConfigDict()
  c.data.name = "python_source_smollm2" if a.full else "python_source"
  c.data.seq_len = {"smoke": 32, "cpu": 128, "full": 512}[scale]
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:
    c.data.num_train, c.data.num_test = 64, 16
  elif scale == "cpu":
    c.data.num_test = 512  # held-out windows for the loss (the report infills num_windows)

  c.model = ml_collections.ConfigDict({
      "vocab_size": 49152 if a.full else 257,  # bytes + end of text; SmolLM2's BPE
      "dim": {"smoke": 32, "cpu": 256, "full": 768}[scale],
      "num_layers": {"smoke": 1, "cpu": 4, "full": 12}[scale],
      "num_heads": {"smoke": 2, "cpu": 4, "full": 12}[scale],
      "mlp_dim": {"smoke": 64, "cpu": 1024, "full": 3072}[scale],
      "dropout": 0.1 if a.full else 0.0})
  # The paper's curriculum: rho from 0.15, the range widening linearly to [lo, hi]; each row
  # draws rho in its own slice of the current range.
  c.curriculum = ml_collections.ConfigDict({
      "start": 0.15, "lo": a.lo, "hi": a.hi,
      "warmup_steps": {"smoke": 3, "cpu": 150, "full": 5000}[scale]})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-4 if a.full else 1e-3, "warmup_steps": {"smoke": 2, "cpu": 50, "full": 5000}[scale],
      "b1": 0.9, "b2": 0.99, "weight_decay": 0.01, "grad_clip": 1.0, "final_lr_fraction": 0.1})

  c.eval = ml_collections.ConfigDict()
  c.eval.rhos = (0.5, 0.9) if a.smoke else (0.5, 0.75, 0.95)
  c.eval.ks = (2, 5) if a.smoke else (2, 5, 10)
  c.eval.num_windows = 4 if a.smoke else 16
  c.eval.temperature = 1.0
  c.eval.seed = 0
  c.eval.cache = a.cache  # every sampler with the content-stream KV cache
  return c
