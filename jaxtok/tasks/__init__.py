"""Experiment families. Importing this package registers every task in ``TASKS``."""

from jaxtok.tasks import generator, lm, sudoku, tokenizer  # noqa: F401  (register each task)
from jaxtok.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task"]
