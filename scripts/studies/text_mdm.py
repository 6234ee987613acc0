"""Trains the text MDLM once and prints the decoding-arm table of docs/generators_text_mdm.md.

  python scripts/studies/text_mdm.py --config_arg=steps=400 --num_windows=128 \
      --workdir=/tmp/textdiff_run

(``jaxtok.tasks.text_mdm`` is imported here so the study runs before the task is listed in
``jaxtok/tasks/__init__.py``.) Speed-up is tokens/s over ``threshold_nocache``'s.
"""

import argparse
import json
import os

import jaxtok.tasks.text_mdm  # noqa: F401  registers TASKS['text_mdm']
from jaxtok import main
from jaxtok.config_args import load_config


def table(row: dict) -> str:
  names = sorted({k.split("/")[1] for k in row if k.startswith("text_mdm/")})
  base = row["text_mdm/threshold_nocache/tokens_per_s"]
  lines = ["| arm | token acc | exact | BLEU-4 | NFE | full passes | tokens/s | speed-up |",
           "|---|---|---|---|---|---|---|---|"]
  for n in names:
    g = lambda m, n=n: row.get(f"text_mdm/{n}/{m}", float("nan"))  # noqa: E731
    lines.append(f"| {n} | {g('token_accuracy'):.3f} | {g('exact_match'):.3f} | "
                 f"{g('bleu4_bytes'):.1f} | {g('nfe'):.0f} | {g('full_nfe'):.0f} | "
                 f"{g('tokens_per_s'):.0f} | {g('tokens_per_s') / base:.2f}x |")
  return "\n".join(lines)


def run(config_arg: str, num_windows: int, workdir: str) -> str:
  cfg = load_config(f"configs/generators/python_mdm.py:{config_arg}" if config_arg
                    else "configs/generators/python_mdm.py")
  cfg.eval.num_windows = num_windows
  main.run(cfg, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f]
  return table([r for r in rows if "text_mdm/threshold_nocache/tokens_per_s" in r][-1])


if __name__ == "__main__":
  p = argparse.ArgumentParser()
  p.add_argument("--config_arg", default="")
  p.add_argument("--num_windows", type=int, default=128)
  p.add_argument("--workdir", required=True)
  a = p.parse_args()
  print(run(a.config_arg, a.num_windows, a.workdir))
