"""A text masked-diffusion LM (MDLM) on Python bytes with Fast-dLLM caches, threshold and DCD.

  python -m jaxtok.main --config=configs/generators/python_mdm.py --workdir=/tmp/text_mdm
  python -m jaxtok.main --config=configs/generators/python_mdm.py:smoke --workdir=/tmp/tm

NeoDiff's setting (configs/generators/python_neodiff.py): 32 clean condition bytes, 32 target
bytes. The report decodes held-out windows with each arm: confidence decoding one token per step
with no cache (threshold 1.0), threshold 0.9 with no / prefix / dual cache (blocks of 8), DCD
(window 8, threshold 0.9, dual cache refreshed every 8 committed tokens) and MDLM's ancestral
sampler at NeoDiff's 10 and 20 steps.

Scales: CPU default (4 layers, width 128); ``smoke`` (seconds, for tests); ``full``: width 512,
12 layers, 64 + 32 bytes, 300k updates, for an accelerator.
Arguments: ``steps=N``, ``batch=B``, ``block=L`` (block length of the cached arms).
"""

import ml_collections

from configs.common import text_loop_config
from jaxtok.config_args import parse_arg


def arms(target_len: int, block: int, smoke: bool) -> list[dict]:
  refresh = block
  out = [
      dict(name="confidence_nocache", cache="none", threshold=1.0, block_length=target_len),
      dict(name="threshold_nocache", cache="none", threshold=0.9, block_length=block),
      dict(name="threshold_prefix", cache="prefix", threshold=0.9, block_length=block),
      dict(name="threshold_dual", cache="dual", threshold=0.9, block_length=block),
      dict(name="dcd_dual", cache="dual", rule="dcd", window=block, threshold=0.9,
           block_length=block, refresh_every=refresh),
  ]
  steps = (2, 4) if smoke else (10, 20)
  return out + [dict(name=f"mdlm_steps{s}", kind="mdlm", steps=s) for s in steps]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, full=False, steps=0, batch=0, block=0)
  if a.smoke and a.full:
    raise ValueError("choose one of smoke and full")
  scale = "smoke" if a.smoke else "full" if a.full else "cpu"
  c = text_loop_config("text_mdm", scale,
                       steps=a.steps or {"smoke": 6, "cpu": 1500, "full": 300_000}[scale],
                       batch=a.batch or {"smoke": 8, "cpu": 32, "full": 128}[scale],
                       log_every={"smoke": 3, "cpu": 100, "full": 1000}[scale])

  c.cond_len, c.target_len = (64, 32) if a.full else (32, 32) if not a.smoke else (8, 8)
  c.data = ml_collections.ConfigDict()
  c.data.name = "python_source"
  c.data.seq_len = c.cond_len + c.target_len
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:
    c.data.num_train, c.data.num_test = 64, 16
  elif scale == "cpu":
    c.data.num_test = 512

  c.model = ml_collections.ConfigDict({
      "vocab_size": 257,
      "dim": {"smoke": 32, "cpu": 128, "full": 512}[scale],
      "num_layers": {"smoke": 1, "cpu": 4, "full": 12}[scale],
      "num_heads": {"smoke": 2, "cpu": 4, "full": 8}[scale],
      "mlp_dim": {"smoke": 64, "cpu": 512, "full": 2048}[scale]})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 5e-4 if a.full else 1e-3,
      "warmup_steps": {"smoke": 2, "cpu": 100, "full": 10_000}[scale],
      "b1": 0.9, "b2": 0.98, "weight_decay": 0.01, "grad_clip": 1.0, "final_lr_fraction": 0.1})

  block = a.block or (4 if a.smoke else 8)
  c.eval = ml_collections.ConfigDict()
  c.eval.arms = arms(c.target_len, block, a.smoke)
  c.eval.num_windows = 8 if a.smoke else 256
  c.eval.seed = 0
  return c
