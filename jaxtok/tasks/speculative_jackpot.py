"""The ``jackpot`` proposer of the ``speculative`` task: a sparse subnetwork of the target drafts.

Lottery Jackpots (``jaxtok/nn/jackpot.py``) searches a mask over the frozen pretrained weights;
the draft is the target's architecture with those masks applied to its block kernels (the
embedding, the tied head and the norms are shared unpruned). ``proposer.masks`` names an ``.npz``
written by ``scripts/studies/jackpot_smollm2.py --out_masks`` (a searched jackpot); empty, the
draft uses the search's starting point, per-layer magnitude masks at ``proposer.sparsity`` from
one global threshold. The draft is stored dense, so a draft step costs what a target step costs:
this proposer measures how much a jackpot agrees with its parent (acceptance), not a speed-up.
"""

from __future__ import annotations

import io

import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.decoding.proposers import DraftModel, LMStep
from jaxtok.nn import jackpot
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Plan, Target

_SEP = "/"  # mask paths ('transformer', 'layer_0', 'mlp', 'up', 'kernel') as npz keys


def save_masks(path: str, masks: jackpot.Flat) -> None:
  """Bit-packed masks (a 135M-weight model's masks take ~13 MB) in one ``.npz``."""
  arrays = {}
  for p, b in masks.items():
    key = _SEP.join(p)
    arrays[key] = np.packbits(np.asarray(b) > 0)
    arrays[key + ":shape"] = np.asarray(np.shape(b), np.int64)
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  paths.write_bytes(path, buf.getvalue())


def _check_exists(path: str) -> None:
  if not paths.exists(path):
    raise FileNotFoundError(f"proposer.masks {path!r} does not exist: run "
                            "scripts/studies/jackpot_smollm2.py --out_masks=... first, or leave it "
                            "empty for magnitude masks")


def load_masks(path: str) -> jackpot.Flat:
  """The masks :func:`save_masks` wrote, float32 0/1 arrays keyed by path tuples."""
  _check_exists(path)
  with np.load(io.BytesIO(paths.path(path).read_bytes())) as f:
    out = {}
    for key in f.files:
      if not key.endswith(":shape"):
        shape = tuple(f[key + ":shape"])
        bits = np.unpackbits(f[key], count=int(np.prod(shape)))
        out[tuple(key.split(_SEP))] = jnp.asarray(bits.reshape(shape), jnp.float32)
  return out


@PROPOSER_BUILDERS.register("jackpot")
def build_jackpot(config, target: Target) -> Plan:
  p = config.proposer
  sparsity, masks_path = float(p.sparsity), str(p.get("masks", "") or "")
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f"proposer.sparsity must be a fraction in [0, 1), got {sparsity}")
  if masks_path:
    _check_exists(masks_path)
  proposer = DraftModel(LMStep(target.model), length=int(p.length))
  made: dict = {}

  def prepare(params):
    if not made:
      masks = (load_masks(masks_path) if masks_path else jackpot.magnitude_masks(
          params["target"], jackpot.layer_keep_counts(params["target"], sparsity)))
      made["masks"] = masks
      print(f"jackpot draft: {'searched masks ' + masks_path if masks_path else 'magnitude masks'}"
            f", sparsity {jackpot.sparsity_of(masks):.3f} of the block kernels")
    return jackpot.apply_masks(params["target"], made["masks"])

  what = f"searched masks {masks_path}" if masks_path else f"magnitude masks at {sparsity:g}"
  return Plan(proposer, prepare=prepare,
              shape=f"the target with {what}, {int(p.length)} tokens")
