r"""DEL self-speculation of SmolLM2-135M-Instruct: its own early exits draft for it (greedy).

  python -m jaxtok.main --config=configs/decoding/del.py --workdir=/tmp/spec_del --mode=eval
  python -m jaxtok.main --config=configs/decoding/del.py:layer=4 --workdir=/tmp/spec_l4 --mode=eval
  python -m jaxtok.main --config=configs/decoding/del.py:adapter=1 --workdir=/tmp/da --mode=eval
  python -m jaxtok.main --config=configs/decoding/del.py:smoke --workdir=/tmp/dsm --mode=sample

Before the first batch, exit norms at ``proposer.exit_layers`` are trained by KL to the frozen
target on train-split standard-library source (cached under ``$JAXTOK_CACHE_DIR/del_exits``);
their top-1 agreement on test-split windows is printed and is DEL's prior acceptance rate. Per
batch of prompts (``eval_batch_size`` 1: per prompt) shadow tokens on the prompt update those
rates and DEL picks the exit layer and draft length (``gammas``) with the most expected tokens
per layer-pass; drafting stops once the draft's top-1 probability is below ``threshold``. The
shadow pass is timed as speculative time. ``layer=L`` drafts from exit L always (LayerSkip's
static choice, ``proposer.length`` tokens). Greedy verification: the output is plain greedy
decoding's. The proposer: ``jaxtok/tasks/speculative_del.py``; measured in docs/decoding_del.md.
``adapter=1`` trains one block per exit instead of a norm alone (Kangaroo's adapter,
``jaxtok/decoding/exit_adapter.py``; it starts as a copy of the target's last block), on more
windows for more steps; a draft step then costs L + 1 blocks.
``head=K`` drafts with VocabTrim's head of the K ids the target generates most often.
``cost=measured`` prices rounds in seconds timed on this machine before the first batch (a
draft step per exit, a verify pass per draft length, a plain step) instead of layer passes, and
adds draft lengths 0 (no drafting: DEL may decode plainly) and 1. ``shadow=W`` computes the
shadow tokens on the prompt's last W tokens only (a W-token pass instead of a prompt-long one).
``data=greedy`` trains the exits on stdlib prefixes continued by the target's own greedy decoding
(``python_source_smollm2_greedy``, built on first use) instead of human-written source.
``verify=confident`` verifies only the drafts before the first one below ``threshold`` (none: a
plain step) instead of every slot of the round (``all``, the filler included).
``rounds=1`` is DEL as the paper runs it: the exits draft from the target's own KV cache and
(L, gamma) is re-chosen every round from shadow tokens at the verified nodes
(``jaxtok/decoding/self_spec.py``); exit norms and the full head only.
Arguments: ``smoke`` (a random 4-block byte-level target, exits 1 and 2; seconds), ``layer``,
``adapter``, ``head``, ``cost`` (``layers`` | ``measured``), ``shadow``, ``data``
(``source`` | ``greedy``), ``exits`` (``+``-separated exit layers, e.g. ``4+12``), ``verify``
(``all`` | ``confident``), ``rounds``.
"""

import ml_collections

from configs.common import speculative_base_config
from jaxtok.config_args import parse_arg

ADAPTER_STEPS, ADAPTER_WINDOWS = 300, 192  # see docs/decoding_del.md, "Exit adapters"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, layer=0, adapter=False, head=0, cost="layers", shadow=0,
                data="source", exits="", verify="all", rounds=False)
  c = speculative_base_config(a.smoke, "early_exit")
  if a.smoke:
    c.target.variant = "small"  # 4 blocks: two exits to choose from
  p = c.proposer
  p.exit_layers = (1, 2) if a.smoke else (4, 8, 12)  # of 30; the study's grid
  if a.exits:  # e.g. "4" or "4+12": train (and choose among) only these exits
    p.exit_layers = tuple(int(x) for x in a.exits.split("+"))
  p.gammas = (2, 3) if a.smoke else (2, 4)
  p.cost = a.cost  # "layers" (the paper's) or "measured" (seconds on this machine)
  p.cost_context = 64 if a.smoke else 256  # cached tokens when timing (the eval prompts' size)
  if a.cost == "measured":
    p.gammas = (0, 1) + p.gammas
  p.shadow_tokens = a.shadow  # 0: shadow tokens on the whole prompt; W: on its last W tokens
  if a.data not in ("source", "greedy"):
    raise ValueError(f"data must be 'source' or 'greedy', got {a.data!r}")
  if a.data == "greedy":  # stdlib prefixes continued by the target (jaxtok/data/greedy_source.py)
    p.exit_data = "python_source_greedy" if a.smoke else "python_source_smollm2_greedy"
    p.exit_data_sizes = (8, 4) if a.smoke else (3200, 64)  # the build fused_distill uses
  p.exit_layer = a.layer  # 0: DEL's per-context choice
  p.per_round = bool(a.rounds)  # re-choose every round, drafting from the target's cache
  p.length = 2  # the static arm's draft length (the study's best static arm: L=4, gamma=2)
  p.threshold = 0.4
  p.verify = a.verify  # "all": every slot of the round; "confident": the sure drafts only
  p.exit_steps = 10 if a.smoke else 60
  p.exit_windows = 4 if a.smoke else 12
  p.exit_window_len = 64 if a.smoke else 128
  p.adapter = bool(a.adapter)
  p.adapter_init = "last"  # held-out KL 3.16 vs 3.91 for "next" (L=8, 150 steps)
  p.adapter_lr = 1e-3
  if a.adapter and not a.smoke:  # 3.5M trained weights per exit, not 576: more data and steps
    p.exit_steps, p.exit_windows = ADAPTER_STEPS, ADAPTER_WINDOWS
  p.trim_size = a.head  # 0: the full head
  p.count_prompts = 4 if a.smoke else 32  # VocabTrim's counts (configs/decoding/vocabtrim.py)
  p.count_new_tokens = 16 if a.smoke else 64
  p.count_prompt_tokens = 64 if a.smoke else 256
  c.eval_num_prompts = 2 if a.smoke else 4
  c.max_new_tokens = 24 if a.smoke else 48
  return c
