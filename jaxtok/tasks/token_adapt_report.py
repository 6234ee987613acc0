"""Markdown tables of a ``token_adapt`` run (the results dict that ``token_adapt.run`` returns)."""

from __future__ import annotations

from typing import Any


def _fmt(x: float | None, digits: int = 4) -> str:
  return "—" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def arm_rows(results: dict[str, Any]) -> list[list[str]]:
  """One row per arm: how rows were made, bits per byte zero-shot and tuned, and the byte-level
  perplexity ratio 2^(bpb - bpb_untouched) (1 = as good as the untouched model)."""
  base = results["untouched"]
  b0 = base["zero_shot"]["bits_per_byte"]
  b1 = base.get("tuned", {}).get("bits_per_byte")
  rows = [["untouched", "—", "—", "—", _fmt(b0), "1.000", _fmt(b1),
           _fmt(2 ** (b1 - b0), 3) if b1 is not None else "—",
           _fmt(base["zero_shot"]["bytes_per_token"], 2)]]
  for name, row in results["arms"].items():
    z = row["zero_shot"]["bits_per_byte"]
    t = row.get("tuned", {}).get("bits_per_byte")
    c = row["counts"]
    rows.append([name, str(c["shared"]), str(c["estimated"]), str(c["random"]), _fmt(z),
                 _fmt(2 ** (z - b0), 3), _fmt(t), _fmt(2 ** (t - b0), 3) if t is not None else "—",
                 _fmt(row["zero_shot"]["bytes_per_token"], 2)])
  return rows


def report_markdown(results: dict[str, Any]) -> str:
  o = results["options"]
  parts = [f"# token_adapt: {results['tokenizer']} V={results['new_vocab']} into "
           f"{results['base']}",
           f"{results['shared']} of {results['new_vocab']} new tokens are shared; held out: "
           f"{results['held_out']['segments']} segments, {results['held_out']['bytes']} bytes; "
           f"tau {o['tau']}, k {o['k']}, w_g {o['w_g']}, theta {o['theta']}, phi {o['embedder']}, "
           f"tuning {o['tune_steps']} steps x {o['tune_batch']} x {o['tune_seq_len']} tokens, "
           f"Adam lr {o['tune_lr']} (embedding only).",
           _table(["arm", "shared", "estimated", "random rows", "bits/byte zero-shot",
                   "byte-PPL ratio", "bits/byte tuned", "byte-PPL ratio tuned", "bytes/token"],
                  arm_rows(results))]
  sup = results.get("supertokens")
  if sup:
    rows = [[name, str(r["vocab_size"]), _fmt(r["bytes_per_token"], 3),
             f"{r['round_trips']}/{sup['segments']}", _fmt(r["train_s"], 1),
             _fmt(r["encode_s"], 2)] for name, r in sup.items() if isinstance(r, dict)]
    parts += ["## Supertokens vs BPE (same training text and V)",
              _table(["tokenizer", "V", "bytes/token held out", "exact round trips", "train s",
                      "encode s"], rows),
              f"{sup['segments_with_7_runs']} of {sup['segments']} held-out segments hold a run "
              "of 7 equal characters, which the official pre-tokenizer's (.)\\1{6} rule deletes."]
  return "\n\n".join(parts) + "\n"
