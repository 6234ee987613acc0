"""The ChatML chat format of SmolLM2-Instruct (and Qwen, Hermes, ...).

Each message becomes ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; a generation prompt appends
``<|im_start|>assistant\\n``. SmolLM2's template (``tokenizer.chat_template`` in its GGUF) prepends
a default system message when the conversation does not start with one; this is that template,
written out in Python rather than run through Jinja.
"""

from __future__ import annotations

from collections.abc import Sequence

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ROLES = ("system", "user", "assistant")


def chatml(messages: str | Sequence[dict[str, str]], *, add_generation_prompt: bool = True,
           default_system: str | None = SMOLLM2_SYSTEM) -> str:
  """Formats ``messages`` (a user string, or ``[{'role', 'content'}, ...]``) as ChatML text."""
  if isinstance(messages, str):
    messages = [{"role": "user", "content": messages}]
  if not messages:
    raise ValueError("chatml needs at least one message")
  parts = []
  for i, message in enumerate(messages):
    if set(message) != {"role", "content"}:
      raise ValueError(f"message {i} must have exactly the keys 'role' and 'content', got "
                       f"{sorted(message)}")
    if message["role"] not in ROLES:
      raise ValueError(f"message {i} has role {message['role']!r}; valid: {ROLES}")
    if i == 0 and message["role"] != "system" and default_system is not None:
      parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    parts.append(f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n")
  if add_generation_prompt:
    parts.append("<|im_start|>assistant\n")
  return "".join(parts)
