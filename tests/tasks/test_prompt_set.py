"""The offline decoding prompt set: kinds, counts, and code prompts held out from training."""

import os
import sysconfig

import pytest

from jaxtok.data.python_source import split_of
from jaxtok.tasks.prompt_set import CHAT_PROMPTS, code_prompts, code_windows, prompt_set


def test_kinds_and_mixing():
  assert prompt_set("chat", 3) == [("chat", p) for p in CHAT_PROMPTS[:3]]
  mixed = prompt_set("mixed", 4)
  assert [k for k, _ in mixed] == ["chat", "code", "chat", "code"]
  assert prompt_set("mixed", 4) == mixed  # deterministic


def test_code_prompts_come_from_held_out_files_and_end_at_a_def():
  root = sysconfig.get_paths()["stdlib"]
  prompts = code_prompts(3)
  assert len(set(prompts)) == 3 and all(len(p) <= 1600 for p in prompts)
  assert all(p.rstrip("\n").splitlines()[-1].lstrip().startswith("def ") for p in prompts)
  test_files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".py")]
  heads = {}
  for path in test_files:
    try:
      with open(path, encoding="utf-8", errors="replace") as f:
        heads[f.read(200)] = path
    except OSError:
      continue
  for p in prompts:  # each prompt's file is in the test split (not what a draft trains on)
    path = heads.get(p[:200])
    assert path is not None and split_of(path, root) == "test", path


def test_code_windows_end_at_a_def_in_held_out_files_without_repeats():
  root = sysconfig.get_paths()["stdlib"]
  windows = code_windows(24, code_lines=16, max_chars=1000, per_file=3)
  assert len(set(windows)) == 24 and all(len(w) <= 1000 for w in windows)
  for w in windows:
    lines = w.rstrip("\n").split("\n")
    assert len(lines) == 17 and lines[-1].lstrip().startswith("def ")
  sources = {}
  for d, _, fs in os.walk(root):
    for f in fs:
      if f.endswith(".py"):
        path = os.path.join(d, f)
        try:
          with open(path, encoding="utf-8", errors="replace") as fh:
            sources[path] = "\n".join(fh.read().splitlines()) + "\n"
        except OSError:
          continue
  per_file = {}
  for w in windows:  # every window is a piece of a test-split file, at most 3 from one file
    path = next(p for p, text in sources.items() if w in text and split_of(p, root) == "test")
    per_file[path] = per_file.get(path, 0) + 1
  assert max(per_file.values()) <= 3
  with pytest.raises(ValueError, match="windows of held-out code fit 1000 characters"):
    code_windows(10_000)


def test_bad_requests_are_refused():
  with pytest.raises(ValueError, match="valid: chat, code, mixed"):
    prompt_set("prose", 2)
  with pytest.raises(ValueError, match="num must be >= 1"):
    prompt_set("chat", 0)
  with pytest.raises(ValueError, match="the chat set has"):
    prompt_set("chat", len(CHAT_PROMPTS) + 1)
