"""The ``sorted`` proposer of the ``speculative`` task: S2D's nested drafter.

The draft is ``config.draft`` (a distill workdir, best one trained with
``student.sorted_depths``; a pretrained name or a variant also works). ``proposer.depth`` 0
drafts with :class:`~jaxtok.decoding.sorted_draft.SortedDraft`: each token from the shallowest
of ``proposer.depths`` (the student's first d blocks, its final norm and head), escalating while
the top-1 probability is below ``proposer.threshold``; after every batch the cumulative count of
draft steps each depth ran is printed (``S2D depth runs``). ``depth`` d > 0 drafts with
sub-model d alone (a plain ``DraftModel``), the fixed-depth arm.
"""

from __future__ import annotations

from jaxtok.decoding.early_exit import exit_model
from jaxtok.decoding.proposers import DraftModel, LMStep
from jaxtok.decoding.sorted_draft import SortedDraft, check_depths, sub_params
from jaxtok.generators.causal_lm import CausalLM
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Plan, Target, load_draft


@PROPOSER_BUILDERS.register("sorted")
def build_sorted(config, target: Target) -> Plan:
  p = config.proposer
  d_arch, d_host, d_name = load_draft(config, target)
  student = CausalLM.from_config(d_arch, dtype=target.dtype)
  depths = tuple(int(d) for d in p.depths)
  if check_depths(depths, d_arch.num_layers)[-1] != d_arch.num_layers:
    raise ValueError(f"proposer.depths {depths} must end at the draft's {d_arch.num_layers} "
                     "blocks")
  depth, threshold, length = int(p.depth), float(p.threshold), int(p.length)
  if depth:
    if depth not in depths:
      raise ValueError(f"proposer.depth {depth} is not one of depths {depths}; 0 escalates")
    proposer = DraftModel(LMStep(exit_model(student, depth)), length=length)
    return Plan(proposer, draft=student, draft_host=d_host, draft_name=d_name,
                prepare=lambda params: sub_params(params["draft"], depth),
                shape=f"sub-model of {depth} of {d_arch.num_layers} blocks, {length} tokens")
  proposer = SortedDraft(student, depths=depths, length=length, threshold=threshold)
  total = [0] * len(depths)

  def carry(prop_params, stats):  # nothing carries over; the hook reports the depth counts
    runs = [int(x) for x in stats["proposer_state"]["runs"]]
    total[:] = [a + b for a, b in zip(total, runs)]
    print("S2D depth runs " + ", ".join(f"d={d}: {n}" for d, n in zip(depths, total)))
    return prop_params

  return Plan(proposer, draft=student, draft_host=d_host, draft_name=d_name,
              prepare=lambda params: params["draft"], carry=carry,
              shape=f"sorted sub-models {depths} of {d_arch.num_layers} blocks, {length} tokens, "
                    f"escalate below {threshold}")
