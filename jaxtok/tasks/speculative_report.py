"""The ``speculative`` task's report: acceptance over a run's stats, the printed lines, the
per-prompt table and the per-position plot."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def acceptance(stats_list, row=slice(None)) -> dict[str, Any]:
  """Acceptance over batches' stats (of one row of a batch: ``row``; then no per-position)."""
  drafts, drafted, accepted = (sum(int(np.sum(s[k][row])) for s in stats_list) for k in (
      "num_drafts", "num_draft_tokens", "num_accepted_tokens"))
  # Batches may draft to different depths (DEL picks the length per batch; 0: no drafts).
  depth = max(len(s["accepted_per_position"]) for s in stats_list)
  reached = sum(np.pad(np.asarray(s["accepted_per_position"], np.int64),
                       (0, depth - len(s["accepted_per_position"]))) for s in stats_list)
  # Rounds by verify length, for a proposer that picks it per round (proposer.lengths order).
  sizes = {len(s.get("rounds_per_size", ())) for s in stats_list}
  per_size = ([int(sum(np.asarray(s["rounds_per_size"])[i] for s in stats_list))
               for i in range(sizes.pop())] if len(sizes) == 1 else [])
  return {"rounds": drafts, "drafted": drafted, "accepted": accepted,
          "mean_acceptance_length": 1 + accepted / max(drafts, 1),
          "acceptance_rate": accepted / max(drafted, 1),
          "per_position": [float(r) / max(drafts, 1) for r in reached],
          "rounds_per_size": per_size if len(per_size) > 1 else []}


def acceptance_text(acc) -> str:
  return (f"mean acceptance length {acc['mean_acceptance_length']:.2f} (1 + {acc['accepted']} "
          f"accepted / {acc['rounds']} drafting rounds), acceptance rate "
          f"{acc['acceptance_rate']:.3f} "
          f"({acc['accepted']} / {acc['drafted']} drafted)\nper-position acceptance (rounds whose "
          "accepted path reached depth d): " + " ".join(
              f"d{d}={f:.2f}" for d, f in enumerate(acc["per_position"], 1)) + (
          "\nbatch rounds by verify length (proposer.lengths order): " +
          " ".join(map(str, acc["rounds_per_size"])) if acc.get("rounds_per_size") else ""))


def identity_line(result, tokenizer, new) -> str:
  if result["identical"] is None:
    return "identical: n/a (sampled; the output is distributed as the target's sampler)"
  if result["identical"]:
    return "identical=True (speculative output is token-identical to plain greedy decoding)"
  i, gap = result["first_difference"], result["top2_gap"]
  show = lambda toks: repr(tokenizer.decode(toks[i:i + 1])) if i < len(toks) else "<end>"
  verdict = ("within float rounding (a multi-token verify pass and a 1-token step round "
             "differently): expected" if result["rounding"] else
             "NOT explained by float rounding: a bug in the speculative engine")
  return (f"identical=False: first difference at new token {i} (speculative "
          f"{show(new['spec'])}, plain {show(new['plain'])}); the target's top-2 logit gap there "
          f"is {gap:.3g}, {verdict}")


def table(rows, totals, title, shared) -> str:
  lines = [f"# Speculative decoding: {title}", "", f"Seconds exclude compilation{shared}.", "",
           "| # | kind | tokens | s plain | s spec | speed-up | mean acc. length | acc. rate "
           "| identical |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows + [dict(totals, index="total", kind="")]:
    same = "-" if r["identical"] is None else (
        r["identical"] if isinstance(r["identical"], bool) else f"{r['identical']}/{r['prompts']}")
    if r.get("identical") is False:
      same = f"False (token {r['first_difference']}, gap {r['top2_gap']:.2g})"
    lines.append(f"| {r['index']} | {r['kind']} | {r['tokens']} | {r['seconds_plain']:.3f} | "
                 f"{r['seconds_spec']:.3f} | {r['speedup']:.2f} | "
                 f"{r['mean_acceptance_length']:.2f} | {r['acceptance_rate']:.3f} | {same} |")
  return "\n".join(lines) + "\n"


def plot(per_position, title) -> bytes:
  """PNG bytes: the fraction of rounds whose accepted path reached each depth."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  depths = np.arange(1, len(per_position) + 1)
  ax.bar(depths, per_position, color="tab:blue")
  ax.set(xticks=depths, ylim=(0, 1), xlabel="depth d", ylabel="rounds reaching depth d")
  ax.set_title(title, fontsize=8)
  ax.grid(True, axis="y", alpha=0.3)
  fig.tight_layout()
  buf = io.BytesIO()  # rendered to bytes, then written whole (the workdir may be gs://...)
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  return buf.getvalue()
