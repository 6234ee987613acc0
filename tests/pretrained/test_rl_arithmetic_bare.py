"""configs/rl/arithmetic.py:model=smollm2,prompts=bare -- plain "Q: a op b\nA: " prompts for
SmolLM2, without its chat template (model.plain_prompts in the rl task's Policy)."""

import os

import pytest

from jaxtok import tasks
from jaxtok.config_args import load_config
from jaxtok.pretrained.chat import chatml
from jaxtok.rl.arithmetic import Problem
from jaxtok.tasks.rl import Policy

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs", "rl", "arithmetic.py")


def test_bare_prompts_skip_the_chat_template():
  bare = load_config(f"{CONFIG}:model=smollm2,prompts=bare")
  assert bare.model.plain_prompts and bare.data.name == "arithmetic"
  assert bare.rl.max_prompt_len == 16 and bare.batch_size == 8
  problem = Problem(99, 99, "*", -1)
  policy = Policy(bare)
  ids = policy.prompt_ids(problem)
  assert ids == policy.tokenizer.encode("Q: 99*99\nA: ") and len(ids) == 12
  # the default keeps SmolLM2's chat template (system prompt included): ~3.5x longer
  words = Policy(load_config(f"{CONFIG}:model=smollm2"))
  chat_ids = words.prompt_ids(problem)
  assert chat_ids == words.tokenizer.encode(chatml("Q: 99*99\nA: ")) and len(chat_ids) > 40
  # every held-out and train prompt of the bare set fits 16 tokens: the task builds
  assert tasks.build(bare).report is not None


def test_prompts_argument_is_checked_and_byte_level_models_are_unchanged():
  with pytest.raises(ValueError, match="prompts='chat'"):
    load_config(f"{CONFIG}:model=smollm2,prompts=chat")
  small = load_config(f"{CONFIG}:model=small")
  assert "plain_prompts" not in small.model and small.data.name == "arithmetic"
  assert small.batch_size == 16 and small.rl.max_prompt_len == 16
