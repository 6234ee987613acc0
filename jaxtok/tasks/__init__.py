"""Experiment families. Importing this package registers every task in ``TASKS``."""

from jaxtok.tasks import lm, tokenizer  # noqa: F401  (register 'lm', 'tokenizer')
from jaxtok.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task"]
