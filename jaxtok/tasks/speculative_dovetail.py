"""The ``dovetail`` proposer of the ``speculative`` task: the draft model on another device.

The target runs where the task puts it (the default backend: on a GPU host started with
``JAX_PLATFORMS=cpu,cuda`` that is the CPU, Dovetail's setting); ``proposer.draft_device``
('cuda:0', 'cpu:1', '' = the default device) holds the draft's weights and KV cache, reached
through ordered callbacks (``jaxtok/decoding/dovetail.py``). Dovetail drafts fewer tokens per
round than a same-device draft (``proposer.length``, 2 by default in the config) because each
round pays a device round trip.
"""

from __future__ import annotations

import jax

from jaxtok.decoding.dovetail import DeviceDraft, DovetailDraft, parse_device
from jaxtok.decoding.proposers import DraftModel, LMStep
from jaxtok.generators.causal_lm import CausalLM
from jaxtok.tasks.speculative_fused import fused_drafter
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Plan, Target, load_draft


@PROPOSER_BUILDERS.register("dovetail")
def build_dovetail(config, target: Target) -> Plan:
  p = config.proposer
  if float(p.draft_temperature) > 0 or int(p.num_drafts) != 1:
    raise ValueError("the dovetail proposer drafts one greedy chain: set "
                     "proposer.draft_temperature=0 and num_drafts=1")
  device = parse_device(str(p.get("draft_device", "") or ""))
  if len(jax.devices()) > 1 and device in jax.devices():
    # The task's mesh spans every default-backend device; one that is busy in the target's
    # collectives cannot also run the draft's callbacks (they would wait on each other).
    raise ValueError(f"draft device {device} is one of the {len(jax.devices())} default-backend "
                     "devices the target's mesh spans: put the draft on another backend (e.g. "
                     "JAX_PLATFORMS=cpu,cuda with device=cuda:0, the target on the CPU) or run "
                     "the target on one device")
  drafter = str(p.get("drafter", "draft"))
  if drafter == "fused":  # Dovetail's own drafter: it reads the target's features
    fused, make_params, name = fused_drafter(config, target)
    holder = DeviceDraft(fused, device)

    def prepare_fused(params):
      if holder.params is None:
        holder.load(make_params(params))  # the drafter and a copy of the embedding table, once
      return None

    return Plan(DovetailDraft(holder), draft_name=name, prepare=prepare_fused,
                shape=f"{int(p.length)} tokens drafted on {device} by the fused drafter")
  if drafter != "draft":
    raise ValueError(f"proposer.drafter must be 'draft' or 'fused', got {drafter!r}")
  d_arch, d_host, d_name = load_draft(config, target)
  d_model = CausalLM.from_config(d_arch, dtype=target.dtype)
  holder = DeviceDraft(DraftModel(LMStep(d_model), length=int(p.length)), device)

  def prepare(params):
    holder.load(params["draft"])  # onto the draft's device, once
    return None

  return Plan(DovetailDraft(holder), draft=d_model, draft_host=d_host, draft_name=d_name,
              prepare=prepare, shape=f"{int(p.length)} tokens drafted on {device}")
