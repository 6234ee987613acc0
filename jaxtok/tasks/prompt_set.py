"""A fixed, offline prompt set for decoding benchmarks: chat questions and held-out code prefixes.

``chat``: questions an instruct model answers in prose (formatted as ChatML by the caller).
``code``: the first lines of standard-library files from the *test* split of ``python_source``
(held out from anything trained on that corpus, e.g. a distilled draft model), cut after
``code_lines`` lines at a function or class boundary where one exists. Deterministic for one
Python version.
"""

from __future__ import annotations

import sysconfig

from jaxtok.data.python_source import corpus_files, split_of

CHAT_PROMPTS = (
    "What is the capital of France?",
    "Explain what a hash table is in two sentences.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Give three tips for writing clear documentation.",
    "What is the difference between a list and a tuple in Python?",
    "Summarise the plot of Pride and Prejudice in one paragraph.",
    "How does photosynthesis work?",
    "Write a haiku about the sea.",
)
KINDS = ("chat", "code", "mixed")


def file_prefixes(split: str, code_lines: int):
  """Yields (lines, cut) for each standard-library file of ``python_source``'s ``split``: its
  lines and the index of the first ``def`` line at or after ``code_lines`` (None if there is
  none), where a prompt that leaves the model a function to write can end."""
  root = sysconfig.get_paths()["stdlib"]
  for path in corpus_files(root):
    if split_of(path, root) != split:
      continue
    with open(path, encoding="utf-8", errors="replace") as f:
      lines = f.read().splitlines()
    yield lines, next((i for i in range(code_lines, len(lines))
                       if lines[i].lstrip().startswith("def ")), None)


def code_prompts(num: int, code_lines: int = 24, max_chars: int = 1600) -> list[str]:
  """Prefixes of ``num`` held-out standard-library files (test split), ending before a ``def``."""
  out = []
  for lines, cut in file_prefixes("test", code_lines):
    if len(lines) < code_lines * 2:
      continue
    text = "\n".join(lines[:(code_lines if cut is None else cut) + 1]) + "\n"
    if len(text) <= max_chars:  # a few hundred tokens: long prompts would dominate the timing
      out.append(text)
    if len(out) == num:
      break
  if len(out) < num:
    raise ValueError(f"only {len(out)} held-out files are long enough for {num} code prompts")
  return out


def code_windows(num: int, code_lines: int = 16, max_chars: int = 1000,
                 per_file: int = 8) -> list[str]:
  """``num`` windows of held-out (test-split) standard-library code, for workloads of many
  prompts (the test split has only a dozen files long enough for :func:`code_prompts`).

  A window is the ``code_lines`` lines before a ``def`` line and that line, so the model writes
  a function body; windows of one file do not overlap, and each file gives at most
  ``per_file``. Windows longer than ``max_chars``, and repeats, are skipped. Deterministic for
  one Python.
  """
  out = []
  for lines, _ in file_prefixes("test", code_lines):
    taken, last = 0, -1
    for i in range(code_lines, len(lines)):
      if taken == per_file or len(out) == num:
        break
      if not lines[i].lstrip().startswith("def ") or i - code_lines <= last:
        continue
      text = "\n".join(lines[i - code_lines:i + 1]) + "\n"
      if len(text) <= max_chars and text not in out:  # some files repeat others' code
        out.append(text)
        taken, last = taken + 1, i
    if len(out) == num:
      return out
  raise ValueError(f"only {len(out)} windows of held-out code fit {max_chars} characters; "
                   f"asked for {num}")


def prompt_set(kind: str = "mixed", num: int = 8) -> list[tuple[str, str]]:
  """``num`` (kind, text) prompts: 'chat' (raw questions), 'code', or 'mixed' (half of each)."""
  if kind not in KINDS:
    raise ValueError(f"unknown prompt set {kind!r}; valid: {', '.join(KINDS)}")
  if num < 1:
    raise ValueError(f"num must be >= 1, got {num}")
  if kind == "chat":
    if num > len(CHAT_PROMPTS):
      raise ValueError(f"the chat set has {len(CHAT_PROMPTS)} prompts, asked for {num}")
    return [("chat", p) for p in CHAT_PROMPTS[:num]]
  if kind == "code":
    return [("code", p) for p in code_prompts(num)]
  chat = prompt_set("chat", (num + 1) // 2)
  code = prompt_set("code", num // 2) if num > 1 else []
  return [x for pair in zip(chat, code + [None] * len(chat)) for x in pair if x][:num]

