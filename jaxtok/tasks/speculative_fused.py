"""The ``fused`` proposer of the ``speculative`` task: a feature-fused drafter (Dovetail / EAGLE).

``draft.workdir`` is a ``feature_distill`` run (``configs/decoding/fused_distill.py``); empty, a
random drafter (``draft.seed``, ``proposer.depth``, ``proposer.fusion``) for smoke runs. The
drafter reads the target's hidden states and embedding table, so its params are made per run
from the target's (``prepare``); with ``weights='bfloat16'`` its matrices are bf16 too. Drafts are
greedy (``proposer.draft_temperature`` 0) or sampled, for the rejection verifier.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtok import paths
from jaxtok.decoding.fused_draft import FusedDraft
from jaxtok.nn import bf16
from jaxtok.tasks.distill_features import drafter_net, restore_fused_draft
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Plan, Target


def fused_drafter(config, target: Target):
  """(FusedDraft, ``params -> its params``, name): the drafter of ``draft.workdir`` (or a random
  one), its params made once from the target's embedding table (also for ``dovetail``)."""
  p, d = config.proposer, config.draft
  if int(p.num_drafts) != 1:
    raise ValueError(f"the fused drafter proposes one chain: set proposer.num_drafts=1, got "
                     f"{int(p.num_drafts)}")
  if d.get("workdir"):
    if not paths.exists(d.workdir):
      raise FileNotFoundError(f"draft.workdir {d.workdir!r} does not exist: train a drafter "
                              "there first (configs/decoding/fused_distill.py)")
    net, host = restore_fused_draft(d.workdir, target.arch)
    name = f"drafter {d.workdir!r}"
  else:
    net = drafter_net(target.arch, int(p.get("depth", 2)), str(p.get("fusion", "gated")),
                      target.dtype)
    x = jnp.zeros((1, 4, net.dim), jnp.float32)
    host = nn.unbox(net.init(jax.random.key(int(d.get("seed", 1))), x, x)["params"])
    name = "random drafter"
  cast = bf16.cast if config.get("weights", "float32") == "bfloat16" else (
      lambda t: jax.tree.map(jnp.asarray, t))
  made = {}

  def make_params(params):
    if not made:
      made["net"] = cast(host)
    return {"net": made["net"], "embed": params["target"]["embed"]["embedding"]}

  return FusedDraft(net, length=int(p.length), temperature=float(p.draft_temperature)), \
      make_params, name


@PROPOSER_BUILDERS.register("fused")
def build_fused(config, target: Target) -> Plan:
  proposer, make_params, name = fused_drafter(config, target)
  net = proposer.net
  how = f", drafts sampled at {proposer.temperature}" if proposer.temperature > 0 else ""
  return Plan(proposer, draft_name=name, prepare=make_params,
              shape=f"{proposer.length} tokens, {net.fusion} fusion, depth {net.depth}{how}")
