"""The task registry: name -> builder ``(config) -> Task`` (contract: jaxtok.train.task)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxtok.registry import Registry
from jaxtok.train.task import Batch, HostBatch, Metrics, Task

__all__ = ["TASKS", "Batch", "HostBatch", "Metrics", "Task"]

# Task modules register themselves; jaxtok.tasks imports them.
TASKS: Registry[Callable[[Any], Task]] = Registry("task")
