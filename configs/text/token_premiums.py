r"""Crosslingual token premiums (Arnett et al., 2025) on Django's gettext catalogs.

  python -m jaxtok.main --config=configs/text/token_premiums.py --workdir=/tmp/tp --mode=eval
  python -m jaxtok.main --config=configs/text/token_premiums.py:smoke --workdir=/tmp/tp_smoke \
      --mode=eval
  python scripts/studies/token_premiums.py --workdir=/tmp/tp   # the same, and prints the tables

The task trains tokenizers (no gradient steps), so it runs as ``--mode=eval``. Arguments
(comma-separated): ``smoke`` = 5 languages, 3 small monolingual sizes, 2 shared sizes, cl100k only
(seconds); ``raw`` = keep placeholders and HTML in the messages (as the catalogs store them);
``languages=fr+de+ja`` picks languages ('+'-separated; default: every language with at least
``premiums.min_messages`` messages, regional variants left out); ``system`` adds the machine's
Debian catalogs (glib20, gtk20, gtk20-properties, coreutils) to the training text where present.
Any ``premiums.*`` field can also be set with ``--config.premiums.<field>=...``.
"""

import ml_collections

from jaxtok.config_args import parse_arg

SMOKE_LANGUAGES = "fr,de,ru,ja,ar"
SYSTEM_DOMAINS = "glib20,gtk20,gtk20-properties,coreutils"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, smoke=False, raw=False, system=False, languages="")
  config = ml_collections.ConfigDict()
  config.task = "token_premiums"
  config.seed = 0
  config.num_steps = 0  # nothing trains by gradient: --mode=eval trains the tokenizers
  config.batch_size = 1
  config.mesh = ml_collections.ConfigDict({"data": -1})
  config.async_checkpoint = False

  p = ml_collections.ConfigDict()
  p.languages = args.languages.replace("+", ",") or (SMOKE_LANGUAGES if args.smoke else "")
  p.min_messages = 790
  p.eval_fraction = 0.5
  p.clean = not args.raw
  p.system_domains = SYSTEM_DOMAINS if args.system else ""
  p.monolingual_kinds = "bpe,superbpe" if args.smoke else "bpe,superbpe,unigram"
  p.monolingual_sizes = "320,512,768" if args.smoke else "320,384,512,640,768,1024"
  p.shared_kinds = "bpe,superbpe" if args.smoke else "bpe,superbpe,bpe_nows,unigram"
  p.shared_sizes = "512,1024" if args.smoke else "1024,2048,4096,8192,16384"
  p.transition = 0.9  # SuperBPE's phase-1 share of the vocabulary (the paper's t)
  p.per_language_kind = "bpe"
  p.per_language_bounds = "300,2048"
  p.pretrained = "cl100k" if args.smoke else "cl100k,smollm2"
  config.premiums = p
  return config
