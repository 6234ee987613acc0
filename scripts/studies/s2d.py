r"""S2D on SmolLM2-135M-Instruct (float32, greedy, batch 1, CPU): fixed depths vs escalation.

  nice -n 19 python scripts/studies/s2d.py --out=/tmp/s2d/results.json

For each draft (``--drafts``: distill workdirs, e.g. a sorted run of
configs/decoding/s2d_distill.py and its ``plain`` baseline) and each arm (``--arms``: ``1``,
``2``, ``4`` = that sub-model alone, ``esc`` = SortedDraft escalating below ``--threshold``), the
``speculative`` task's ``--mode=eval`` (configs/decoding/s2d.py) decodes the offline prompt set
(``--num_prompts`` prompts, ``--max_new_tokens`` each) speculatively and plainly, in the same
process; compilation is excluded. Prints one markdown table: tokens/s of both, the speed-up, the
mean acceptance length, identical-to-greedy, and for ``esc`` how many draft steps ran each depth.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os

import jaxtok.tasks.speculative_sorted  # noqa: F401  registers the 'sorted' proposer
from jaxtok import main as jaxtok_main
from jaxtok.config_args import load_config

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "decoding", "s2d.py")


def run_arm(draft: str, arm: str, a) -> dict:
  depth = 0 if arm == "esc" else int(arm)
  config = load_config(f"{CONFIG}:depth={depth},threshold={a.threshold},draft={draft}")
  config.eval_num_prompts, config.max_new_tokens = a.num_prompts, a.max_new_tokens
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    totals = jaxtok_main.run(config, os.path.join(a.workdir, f"{os.path.basename(draft)}_{arm}"),
                             "eval")
  out = buf.getvalue()
  print(out, flush=True)
  runs = [line.split("S2D depth runs ")[1] for line in out.splitlines()
          if line.startswith("S2D depth runs ")]
  return {"draft": draft, "arm": arm, "depth_runs": runs[-1] if runs else "",
          "tokens_per_second_spec": totals["tokens"] / totals["seconds_spec"],
          "tokens_per_second_plain": totals["tokens"] / totals["seconds_plain"],
          **{k: v for k, v in totals.items() if k != "per_position"}}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--drafts", default="/tmp/s2d/sorted,/tmp/s2d/plain")
  ap.add_argument("--arms", default="1,2,4,esc")
  ap.add_argument("--threshold", type=float, default=0.5)
  ap.add_argument("--num_prompts", type=int, default=4)
  ap.add_argument("--max_new_tokens", type=int, default=48)
  ap.add_argument("--workdir", default="/tmp/s2d/eval")
  ap.add_argument("--out", default="/tmp/s2d/results.json")
  a = ap.parse_args()
  rows = [run_arm(d, arm, a) for d in a.drafts.split(",") for arm in a.arms.split(",")]
  lines = ["| draft | arm | tokens/s spec | tokens/s plain | speed-up | mean acc. length | "
           "identical | depth runs |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    arm = f"escalate < {a.threshold}" if r["arm"] == "esc" else f"depth {r['arm']}"
    lines.append(f"| {os.path.basename(r['draft'])} | {arm} | {r['tokens_per_second_spec']:.2f} "
                 f"| {r['tokens_per_second_plain']:.2f} | {r['speedup']:.2f} | "
                 f"{r['mean_acceptance_length']:.3f} | {r['identical']}/{r['prompts']} | "
                 f"{r['depth_runs']} |")
  print("\n".join(lines))
  with open(a.out, "w") as f:
    json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
