r"""Dovetail placement: SmolLM2-135M-Instruct verifies on one device, its distilled draft drafts
on another (greedy, so the output is plain greedy decoding's).

  python -m jaxtok.main --config=configs/decoding/draft_distill.py --workdir=/tmp/jaxtok_draft
  JAX_PLATFORMS=cpu,cuda python -m jaxtok.main --config=configs/decoding/dovetail.py:device=cuda:0 \
      --workdir=/tmp/spec_dovetail --mode=eval
  python -m jaxtok.main --config=configs/decoding/dovetail.py:smoke --workdir=/tmp/dts --mode=sample
  python -m jaxtok.main --config=configs/decoding/fused_distill.py --workdir=/tmp/jaxtok_fused
  JAX_PLATFORMS=cpu,cuda python -m jaxtok.main \
      --config=configs/decoding/dovetail.py:device=cuda:0,drafter=fused --workdir=/tmp/spec_dtf \
      --mode=eval

Dovetail's setting is a GPU host whose target lives on the CPU: with ``JAX_PLATFORMS=cpu,cuda``
the default backend (the target's) is the CPU and ``device=cuda:0`` puts the draft's weights and
KV cache on the GPU; only token ids cross between them, once per round
(``jaxtok/decoding/dovetail.py``). The draft's device may not be one of the devices the target's
mesh spans (the build says so); on a CPU-only machine the placement is exercised on two host
devices through the engine directly (tests/tasks/test_speculative_dovetail.py). ``length`` is
small (2) because every round pays a device round trip. Arguments: ``smoke`` (random 'tiny'
target and draft; seconds), ``device``, ``length``, ``drafter=draft|fused`` (``fused``: Dovetail's
gated-fusion drafter from ``configs/decoding/fused_distill.py``'s workdir, /tmp/jaxtok_fused; the
target's features of each verified chain then cross to the drafter's device too).
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, device="", length=2, drafter="draft")
  c = speculative_base_config(a.smoke, "dovetail")
  workdir = {"draft": "/tmp/jaxtok_draft", "fused": "/tmp/jaxtok_fused"}.get(a.drafter, "")
  c.draft.workdir = ml_collections.FieldReference("" if a.smoke else workdir, field_type=str)
  c.proposer.drafter = a.drafter
  c.proposer.length = a.length
  c.proposer.draft_device = a.device
  c.eval_num_prompts = 2 if a.smoke else 4
  return c
