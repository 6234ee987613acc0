r"""R2R token routing (Roads to Rome): a router decides which of a small LM's tokens the large LM
replaces; trained on divergence labels, measured against confidence and random routing.

  python -m jaxtok.main --config=configs/decoding/r2r.py --workdir=/tmp/r2r
  python -m jaxtok.main --config=configs/decoding/r2r.py --workdir=/tmp/r2r --mode=eval
  python -m jaxtok.main --config=configs/decoding/r2r.py --workdir=/tmp/r2r --mode=sample \
      --config.prompt="What is the capital of France?" --config.threshold=0.5
  python -m jaxtok.main --config=configs/decoding/r2r.py:smoke --workdir=/tmp/r2r_smoke

Large LM: SmolLM2-135M-Instruct (30 blocks). Small LM: its first ``layer`` blocks (default 12,
the study's ``scripts/studies/r2r.py``) with an exit norm fitted by KL at build time. Training
updates only the router, on windows of train-split standard-library source in SmolLM2's BPE
(``python_source_smollm2``) labelled under teacher forcing (divergent = the two greedy tokens
differ). ``--mode=eval`` prints held-out AUC / recall and the generation table (agreement with the
large model's greedy continuation, perplexity under it, routed fraction, LLM calls, wall time) for
the router at ``thresholds`` and the confidence and random baselines at the router's routed
fraction; ``--mode=sample`` marks the routed tokens. R2R is not lossless.

Arguments (comma-separated): ``smoke`` (a random 4-block byte-level LLM, SLM = its first 3
blocks; seconds), ``full`` (the recipe for real hardware, see below), ``steps=N``, ``layer=L``,
``batch=B``, ``prompts=N`` (eval prompts).

``full``: the paper pairs DeepSeek-R1-Distill-Qwen-1.5B (SLM) with R1-32B (LLM), routes ~11-15%
of tokens and labels a token divergent when substituting it changes the LLM's continuation. No
such pair loads here (the offline weights are SmolLM2-135M only; a 32B model needs accelerators),
so ``full`` keeps SmolLM2 and scales what the hardware allows: a deeper SLM (16 of 30 blocks),
4000 router steps on batch 32 x 256, 64 held-out windows and the 8-prompt mixed set with 128 new
tokens at batch 1. It is documented, not measured, on these CPUs.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, full=False, steps=0, layer=0, batch=0, prompts=0)
  if a.smoke and a.full:
    raise ValueError("choose one of smoke and full")
  scale = "smoke" if a.smoke else "full" if a.full else "cpu"
  pick = lambda smoke, cpu, full: {"smoke": smoke, "cpu": cpu, "full": full}[scale]
  c = ml_collections.ConfigDict()
  c.task = "r2r"
  c.seed = 0
  c.dtype = "float32"
  c.large = ml_collections.ConfigDict({
      "pretrained": ml_collections.FieldReference(None if a.smoke else "smollm2-135m",
                                                  field_type=str),
      "variant": "small", "seed": 1234})  # variant: the random LLM when pretrained is None
  c.random_scale = 3.0  # random LLMs only: peaked logits, so greedy tokens are not coin flips
  c.small = ml_collections.ConfigDict({
      "exit_layer": a.layer or pick(3, 12, 16), "exit_steps": pick(20, 60, 200),
      "exit_windows": pick(4, 12, 64), "exit_window_len": pick(64, 128, 256)})
  c.router = ml_collections.ConfigDict({"width": pick(32, 128, 256), "top_k": 8, "window": 8})

  c.num_steps = a.steps or pick(200, 150, 4000)
  c.batch_size = a.batch or pick(8, 4, 32)
  c.log_every = pick(10, 10, 100)
  c.eval_every = 0  # report scores held-out windows instead of the loop's test pass
  c.report_every = c.num_steps
  c.checkpoint_every = pick(0, 50, 500)
  c.keep_checkpoints = 2
  c.async_checkpoint = not a.smoke
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "python_source" if a.smoke else "python_source_smollm2"
  c.data.seq_len = pick(64, 128, 256)
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  if a.smoke:
    c.data.num_train, c.data.num_test = 512, 64
  c.optimizer = ml_collections.ConfigDict({
      "lr": pick(3e-3, 1e-3, 5e-4), "warmup_steps": pick(5, 10, 200), "b1": 0.9, "b2": 0.99,
      "weight_decay": 0.0, "grad_clip": 1.0, "final_lr_fraction": 0.1})

  c.heldout_windows = pick(8, 4, 64)  # test-split windows for AUC, recall and the quantiles
  c.thresholds = pick((0.5,), (0.5, 0.7, 0.9), (0.3, 0.5, 0.7, 0.9))
  c.threshold = 0.5  # --mode=sample's
  # chat: short prompts, one padded width, one compiled decoder per rule (mixed adds code prompts
  # of several hundred tokens: more widths, and prefill dominates 32-token timings).
  c.eval_prompts = pick("chat", "chat", "mixed")
  c.eval_num_prompts = a.prompts or pick(2, 4, 8)
  c.eval_batch_size = 1  # per prompt: the LLM runs only at steps where this prompt routes
  c.eval_pad_multiple = 64  # prompts of one padded length share compiled programs
  c.max_new_tokens = pick(16, 32, 128)
  c.prompt = "What is the capital of France?"
  return c
