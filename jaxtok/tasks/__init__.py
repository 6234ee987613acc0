"""Experiment families. Importing this package registers every task in ``TASKS``."""

from jaxtok.tasks import tokenizer  # noqa: F401  (registers 'tokenizer')
from jaxtok.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task"]
