"""FlexTok-style generation: class-conditional AR over ordered 1D tokens of `digits`, any length.

"FlexTok: Resampling Images into 1D Token Sequences of Flexible Length" (Bachmann et al., 2025)
generates its ordered tokens with a GPT-style AR model and decodes any prefix. First train the
ordered tokenizer (TiTok + FSQ + nested dropout, 16 tokens) on digits, and the same tokenizer
without nested dropout as the baseline, then the AR model on each:

  python -m jaxtok.main --config=configs/tokenizers/flextok.py --config.data.name=digits \
      --workdir=/tmp/jaxtok/digits_flextok
  python -m jaxtok.main --config=configs/tokenizers/flextok.py:ordering=none \
      --config.data.name=digits --workdir=/tmp/jaxtok/digits_titok16
  python -m jaxtok.main --config=configs/generators/digits_flextok_ar.py \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_flextok --workdir=/tmp/jaxtok/flextok_ar
  python -m jaxtok.main --config=configs/generators/digits_flextok_ar.py:ordering=none \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_titok16 --workdir=/tmp/jaxtok/titok16_ar

Steps: 400 (batch 64). The 1500 training digits are memorised fast: at 2000 steps the held-out
next-token loss climbs from its minimum 2.44 (step 300 of a 700-step run) to 4.12 while the
training loss falls to 0.34.

Each reports, for k = 1, 2, 4, 8, 16 generated tokens, class accuracy under the digits classifier
and ``fd_classifier`` (a stand-in for FID) of the decoded k-token prefixes of the same samples.
Arguments: ``smoke`` (a tiny model; the test trains a tiny tokenizer first), ``steps=N``,
``ordering=nested_dropout|none`` (the tokenizer config's, which must match the run),
``cfg=S`` (classifier-free guidance scale; 1 = none), ``prefixes=1+2+4+8+16``, ``imagenet`` (for
real hardware: ImageNet-256 through ``flextok.py:imagenet`` (256 tokens, FSQ 64k codes), a
24-layer width-1024 AR model (~300M; the paper's AR models are 49M-1.3B), batch 256, AdamW 1e-4,
300 epochs, CFG 2.5, FD-ENL0 on ``validation`` at k = 1 ... 256).
"""

import ml_collections

from configs.common import generator_base_config
from jaxtok.config_args import parse_arg

TOKENIZER = "configs/tokenizers/flextok.py"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=400, ordering="nested_dropout",
                cfg=1.0, prefixes="1+2+4+8+16")
  if a.ordering not in ("nested_dropout", "none"):
    raise ValueError(f"ordering must be nested_dropout or none; got {a.ordering!r}")
  c = generator_base_config(ml_collections.ConfigDict({**a.to_dict(), "tokenizer": TOKENIZER}),
                            "imagenet2012" if a.imagenet else "digits",
                            num_classes=1000 if a.imagenet else 10)
  c.task = "ordered_ar"
  c.tokenizer.config += "" if a.ordering == "nested_dropout" else (
      "," if a.smoke or a.imagenet else ":") + "ordering=none"
  c.tokenizer.vocab_size = 8 ** 3 * 5 ** 3 if a.imagenet else 8 * 5 * 5 * 5  # the FSQ levels
  prefixes = tuple(int(k) for k in a.prefixes.split("+"))
  if a.imagenet:
    c.report = ml_collections.ConfigDict({"per_class": 10, "fd": "enl0", "fd_reference": "test",
                                          "fd_reference_count": 50_000})
    c.classifier = ml_collections.ConfigDict({"steps": 0})
    c.num_steps = 300 * 1_281_167 // 256
    model = {"dim": 1024, "num_layers": 24, "num_heads": 16, "mlp_dim": 4096}
    prefixes = (1, 2, 4, 8, 16, 32, 64, 128, 256)
  else:
    c.report = ml_collections.ConfigDict({"per_class": 2 if a.smoke else 20,
                                          "fd": "classifier", "fd_reference": "test"})
    c.classifier = ml_collections.ConfigDict({"steps": 20 if a.smoke else 400, "batch_size": 64,
                                              "lr": 2e-3, "grey": True})
    model = ({"dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64} if a.smoke else
             {"dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 384})
    if a.smoke:
      prefixes = (1, 4)
  c.model = ml_collections.ConfigDict({**model, "label_dropout": 0.1})
  del c.critic, c.loss
  c.sample = ml_collections.ConfigDict({"prefixes": prefixes, "temperature": 1.0, "top_k": 0,
                                        "guidance_scale": 2.5 if a.imagenet else a.cfg,
                                        "seed": 0})
  return c
