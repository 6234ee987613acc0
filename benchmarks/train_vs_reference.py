"""TiTok training step: jaxtok against the PyTorch reference (bytedance/1d-tokenizer), same
architecture and batch, timed alternately in one run.

  pip install -e ".[reference]"   # torch and einops, the reference's dependencies
  git clone https://github.com/bytedance/1d-tokenizer /path/to/1d-tokenizer
  python benchmarks/train_vs_reference.py --reference=/path/to/1d-tokenizer [--steps=10]

The model of issue #16: 32 px images, 4x4 patches, ViT width 64, depth 2 + 2, 4 heads, MLP 256,
32 latent tokens, VQ 256 x 12, batch 32, AdamW, L2 + VQ losses (jaxtok: ``configs/tokenizers/
titok.py:variant=cpu,tokens=32`` with the L1 term off). The reference is the repository's own
``TiTokEncoder`` / ``TiTokDecoder`` (``modeling/modules/blocks.py``, non-legacy pixel head) and
``VectorQuantizer`` (``modeling/quantizer/quantizer.py``), loaded from the checkout by file path;
their size tables get one row for this width (``"cpu": 64`` / 2 layers / 4 heads), added to the
source text at load time, and nothing else is changed. ``accelerate`` (used by the quantizer's
``clustering_vq`` option only, which is off) is stubbed when it is not installed. PyTorch runs
eagerly with as many threads as this machine has cores.

Rows: the whole train step (forward, backward, AdamW), the forward with losses alone, and
forward + backward without the optimizer (the gradient of L2 + VQ loss); speed is the
reference's time over jaxtok's. ``--data_parallel=2`` adds jaxtok with the batch split over 2 CPU
devices; ``--jaxtok_only`` times jaxtok alone (no torch needed). ``taskset -c 0`` runs both on
one core (PyTorch then gets one thread). Two jaxtok columns: its defaults, and with the
reference's 3 x 3 pixel conv, exact GELU and ``ln_pre`` switched on (TiTok's options), the
closest jaxtok gets to the reference's architecture. Medians over ``--repeats`` rounds of
``--steps`` steps. Skips, saying why, when torch or the checkout is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import time
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import machine  # noqa: E402

WIDTH, DEPTH, HEADS, TOKENS, CODES, CODE_DIM, BATCH, SIZE, PATCH = 64, 2, 4, 32, 256, 12, 32, 32, 4


class _Cfg(dict):
  """The attribute-and-.get() config object the reference modules read (OmegaConf stand-in)."""

  def __getattr__(self, k):
    return self[k]


def _load(path: str, name: str, patch=None):
  with open(path) as f:
    src = f.read()
  if patch:
    src = patch(src)
  module = types.ModuleType(name)
  module.__file__ = path
  exec(compile(src, path, "exec"), module.__dict__)  # noqa: S102 -- the user's own checkout
  return module


def _add_size_row(src: str) -> str:
  rows = {"512": WIDTH, "8": DEPTH}
  out, n = re.subn(r'"small": (512|8),', lambda m: f'"cpu": {rows[m.group(1)]}, "small": '
                   f'{m.group(1)},', src)
  # num_heads also reads "small": 8 -> the second 8-valued table; fix the heads row explicitly.
  out = re.sub(r'self\.num_heads = \{\s*"cpu": \d+,', f'self.num_heads = {{"cpu": {HEADS},', out)
  if n < 6:
    raise RuntimeError(f"the reference's size tables changed ({n} rows patched, 6 expected)")
  return out


def reference_model(checkout: str):
  """(model, optimizer, train_step, forward, forward_backward) of the PyTorch reference."""
  import torch

  if importlib.util.find_spec("accelerate") is None:
    acc = types.ModuleType("accelerate")
    acc.utils = types.ModuleType("accelerate.utils")
    acc.utils.operations = types.ModuleType("accelerate.utils.operations")
    acc.utils.operations.gather = lambda x: x
    sys.modules.update({"accelerate": acc, "accelerate.utils": acc.utils,
                        "accelerate.utils.operations": acc.utils.operations})
  blocks = _load(os.path.join(checkout, "modeling", "modules", "blocks.py"), "ref_blocks",
                 _add_size_row)
  quant = _load(os.path.join(checkout, "modeling", "quantizer", "quantizer.py"), "ref_quant")
  vq = _Cfg(vit_enc_patch_size=PATCH, vit_dec_patch_size=PATCH, vit_enc_model_size="cpu",
            vit_dec_model_size="cpu", num_latent_tokens=TOKENS, token_size=CODE_DIM,
            is_legacy=False)
  cfg = _Cfg(dataset=_Cfg(preprocessing=_Cfg(crop_size=SIZE)), model=_Cfg(vq_model=vq))

  class TiTok(torch.nn.Module):  # the wiring of modeling/titok.py's TiTok, VQ mode
    def __init__(self):
      super().__init__()
      self.encoder = blocks.TiTokEncoder(cfg)
      self.decoder = blocks.TiTokDecoder(cfg)
      self.latent_tokens = torch.nn.Parameter(WIDTH**-0.5 * torch.randn(TOKENS, WIDTH))
      self.quantize = quant.VectorQuantizer(codebook_size=CODES, token_size=CODE_DIM,
                                            commitment_cost=0.25)

    def forward(self, x):
      z = self.encoder(pixel_values=x, latent_tokens=self.latent_tokens)
      zq, out = self.quantize(z)
      return self.decoder(zq), out["quantizer_loss"]

  torch.manual_seed(0)
  model = TiTok()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
  x = torch.rand(BATCH, 3, SIZE, SIZE)

  def loss():
    recon, q = model(x)
    return torch.mean((recon - x) ** 2) + q

  def train_step():
    opt.zero_grad(set_to_none=True)
    loss().backward()
    opt.step()

  def forward():
    with torch.no_grad():
      loss()

  def forward_backward():
    model.zero_grad(set_to_none=True)
    loss().backward()

  n = sum(p.numel() for p in model.parameters())
  return n, {"train step": train_step, "forward": forward, "forward + backward": forward_backward}


def jaxtok_model(reference_options: bool = False, devices: int = 1):
  """(parameters, {row: fn}) of jaxtok's TiTok; ``reference_options`` switches on the reference's
  3 x 3 pixel conv, exact GELU and ``ln_pre`` (jaxtok.tokenizers.titok's options); ``devices`` > 1
  splits the batch over that many CPU devices (parameters replicated, gradients all-reduced)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from benchmarks.tokenizer_train import load_config
  from jaxtok.eval.image_metrics import to_float
  from jaxtok.tasks import tokenizer as tok

  c = load_config("titok", f"variant=cpu,tokens={TOKENS}")
  c.batch_size = BATCH
  c.loss.l1 = 0.0  # L2 + VQ, as the reference
  if reference_options:
    c.model.pixel_head, c.model.gelu, c.model.ln_pre = "conv", "exact", True
  task = tok.build(c)
  model = tok.build_model(c.model)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.integers(0, 256, (BATCH, SIZE, SIZE, 3), np.uint8))}
  state = jax.jit(lambda r, b: nn.meta.unbox(task.init(r, b)))(jax.random.PRNGKey(0), batch)
  n = sum(x.size for x in jax.tree.leaves(state.params))
  jit = jax.jit
  if devices > 1:
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:devices])
    rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state, batch = jax.device_put(state, rep), jax.device_put(batch, split)
    jit = lambda f, **kw: jax.jit(f, in_shardings=(rep, split), out_shardings=rep, **kw)
  step = jit(task.train_step, donate_argnums=(0,)).lower(state, batch).compile()
  fwd = jit(task.eval_step).lower(state, batch).compile()

  def loss(params, extra, x, key):  # the train step's L2 + VQ loss, without the optimizer
    (x_rec, aux), _ = model.apply({"params": params, **extra}, x, train=True,
                                  rngs={"quantizer": key, "dropout": key}, mutable=list(extra))
    return jnp.mean((x_rec - x) ** 2) + sum(aux["losses"].values())

  x = jax.jit(to_float)(batch["image"])
  grad_fn = jax.grad(loss)
  if devices > 1:
    grad_fn = jax.jit(grad_fn, in_shardings=(rep, rep, split, rep), out_shardings=rep)
  grad = jax.jit(grad_fn).lower(state.params, state.extra, x, jax.random.PRNGKey(1)).compile()
  holder = {"state": state}

  def train_step():
    holder["state"], m = step(holder["state"], batch)
    jax.block_until_ready(m)

  def forward():
    jax.block_until_ready(fwd(holder["state"], batch))

  def forward_backward():
    s = holder["state"]
    jax.block_until_ready(grad(s.params, s.extra, x, jax.random.PRNGKey(1)))

  return n, {"train step": train_step, "forward": forward, "forward + backward": forward_backward}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--reference", default=os.environ.get("TITOK_REFERENCE", ""),
                      help="a checkout of github.com/bytedance/1d-tokenizer")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--data_parallel", type=int, default=1,
                      help="also time jaxtok with the batch split over this many CPU devices")
  parser.add_argument("--jaxtok_only", action="store_true",
                      help="time jaxtok alone (e.g. to compare XLA_FLAGS); no torch needed")
  args = parser.parse_args(argv)
  if args.data_parallel > 1:  # before the CPU backend starts (jax reads it then)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform"
                               f"_device_count={args.data_parallel}").strip()
  sides = {}
  if not args.jaxtok_only:
    if importlib.util.find_spec("torch") is None:
      print("skipped: torch is not installed (pip install torch einops)")
      return
    if not os.path.isfile(os.path.join(args.reference, "modeling", "modules", "blocks.py")):
      print(f"skipped: --reference={args.reference!r} is not a checkout of "
            "bytedance/1d-tokenizer")
      return
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)  # the cores this process may run on
    print(f"machine: {machine.describe()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    sides["reference"] = reference_model(args.reference)
  else:
    print(f"machine: {machine.describe()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  sides["jaxtok"] = jaxtok_model()
  sides["jaxtok, reference options"] = jaxtok_model(True)
  if args.data_parallel > 1:
    sides[f"jaxtok, {args.data_parallel} devices"] = jaxtok_model(devices=args.data_parallel)
  n_ref = sides["reference"][0] if "reference" in sides else None
  for side, (n, _) in sides.items():
    vs = f" ({100 * (n / n_ref - 1):+.1f}% vs the reference)" if n_ref else ""
    print(f"parameters: {side} {n}{vs}")
  times = {(side, row): [] for side, (_, fns) in sides.items() for row in fns}
  for _ in range(args.repeats + 1):  # the first round warms up and is dropped
    for side, (_, fns) in sides.items():
      for row, fn in fns.items():
        t = time.perf_counter()
        for _ in range(args.steps):
          fn()
        times[(side, row)].append((time.perf_counter() - t) / args.steps)
  med = {k: 1e3 * float(np.median(v[1:])) for k, v in times.items()}
  cols = [s for s in sides if s != "reference"] + (["reference"] if n_ref else [])
  speed = [f"speed, {s}" for s in cols if s != "reference"] if n_ref else []
  print("| ms per step | " + " | ".join(cols + speed) + " |")
  print("|---|" + "---|" * (len(cols) + len(speed)))
  for row in sides["jaxtok"][1]:
    ms = [med[(s, row)] for s in cols]
    ratios = [f"{med[('reference', row)] / m:.2f}x" for m in ms[:-1]] if n_ref else []
    print("| " + " | ".join([row] + [f"{m:.1f}" for m in ms] + ratios) + " |")


if __name__ == "__main__":
  main()
