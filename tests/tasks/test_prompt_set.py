"""The offline decoding prompt set: kinds, counts, and code prompts held out from training."""

import os
import sysconfig

import pytest

from jaxtok.data.python_source import split_of
from jaxtok.tasks.prompt_set import CHAT_PROMPTS, code_prompts, prompt_set


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


def test_bad_requests_are_refused():
  with pytest.raises(ValueError, match="valid: chat, code, mixed"):
    prompt_set("prose", 2)
  with pytest.raises(ValueError, match="num must be >= 1"):
    prompt_set("chat", 0)
  with pytest.raises(ValueError, match="the chat set has"):
    prompt_set("chat", len(CHAT_PROMPTS) + 1)
