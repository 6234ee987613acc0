"""Crosslingual token premiums (Arnett et al., 2025) on Django's catalogs: runs the
``token_premiums`` task and prints its tables (the ones in docs/tokenizers_text.md).

  python scripts/studies/token_premiums.py --workdir=/tmp/jaxtok/premiums
  python scripts/studies/token_premiums.py --config_arg=smoke --workdir=/tmp/jaxtok/premiums_smoke
  python scripts/studies/token_premiums.py --config_arg=raw,languages=es+ja+be+ckb \
      --workdir=/tmp/jaxtok/premiums_raw
  python scripts/studies/token_premiums.py --set=premiums.transition=0.5 \
      --set=premiums.shared_kinds=bpe,superbpe --workdir=/tmp/jaxtok/premiums_t05

Runs ``jaxtok.main.run(config, workdir, mode='eval')`` with configs/text/token_premiums.py[:arg]
(the task trains tokenizers; it has no gradient steps), so the numbers are those of
``python -m jaxtok.main --config=configs/text/token_premiums.py --mode=eval``. The workdir gets
token_premiums.json / .md and premium_bars.png / premium_vs_vocab.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok import main as jaxtok_main  # noqa: E402
from jaxtok.config_args import load_config  # noqa: E402
from jaxtok.tasks import token_premiums  # noqa: E402  (registers the task)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/jaxtok/premiums")
  parser.add_argument("--config_arg", default="", help="argument of get_config, e.g. smoke")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="override a config field (like --config.FIELD=VALUE of jaxtok.main)")
  args = parser.parse_args(argv)
  config = load_config(os.path.join(REPO, "configs", "text", "token_premiums.py") +
                       (f":{args.config_arg}" if args.config_arg else ""))
  for item in args.set:
    field, _, value = item.partition("=")
    *parents, leaf = field.split(".")
    node = config
    for name in parents:
      node = node[name]
    if leaf not in node:
      raise KeyError(f"--set {item!r}: no config field {field!r}")
    node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else (
        value.lower() in ("1", "true", "yes"))
  start = time.perf_counter()
  summary = jaxtok_main.run(config, args.workdir, mode="eval")
  with open(os.path.join(args.workdir, token_premiums.TABLES)) as f:
    print(f.read())
  print(f"summary: {summary}")
  print(f"took {time.perf_counter() - start:.0f} s; results in {args.workdir}")


if __name__ == "__main__":
  main()
