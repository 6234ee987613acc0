"""Metric writers: ``<workdir>/metrics.jsonl`` (one JSON object per line, with ``step``) and
TensorBoard event files, plus the console progress line.

metrics.jsonl holds only deterministic values (losses, evaluations): a run resumed from a
checkpoint rewrites the lines after that checkpoint, so the file ends identical to the one an
uninterrupted run writes. Timings go to the console and TensorBoard only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import numpy as np
from absl import logging


def _py(v: Any) -> Any:
  if isinstance(v, (np.ndarray, np.generic)) or hasattr(v, "dtype"):
    v = np.asarray(v)
    return v.item() if v.size == 1 else v.tolist()
  return v


class MetricWriter:
  """Appends metric dicts to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled and tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:  # pragma: no cover -- tensorboardX is a dependency; be lenient anyway.
        logging.warning("tensorboardX not installed; TensorBoard logging disabled")

  def truncate_after(self, step: int) -> None:
    """Drops lines with ``step`` > the given step (after resuming from a checkpoint at it)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [ln for ln in f if ln.strip()]
    kept = []
    for ln in lines:
      try:
        if json.loads(ln).get("step", 0) <= step:
          kept.append(ln)
      except json.JSONDecodeError:  # a line cut by a kill mid-write
        continue
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: dict[str, Any], *, jsonl: bool = True) -> None:
    if not self.enabled or not metrics:
      return
    row = {"step": int(step), **{k: _py(v) for k, v in sorted(metrics.items())}}
    if jsonl:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All rows of ``<workdir>/metrics.jsonl``."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(ln) for ln in f if ln.strip()]


class Progress:
  """A console progress line with steps/s and ETA (a tqdm bar on a terminal)."""

  def __init__(self, total: int, start: int, *, enabled: bool = True):
    self.total, self.start, self.enabled = total, start, enabled
    self.t0 = time.perf_counter()
    self._last_t, self._last_step = self.t0, start
    self._bar = None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="step")

  def rate(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_t, 1e-9)
    self._last_t, self._last_step = now, step
    return rate

  def update(self, step: int, metrics: dict[str, Any], steps_per_sec: float) -> None:
    if not self.enabled:
      return
    shown = {k: v for k, v in metrics.items() if "/" not in k or k.startswith("eval")}
    text = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(shown.items())[:6])
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix_str(text, refresh=True)
      return
    eta = (self.total - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
    print(f"step {step}/{self.total} | {text} | {steps_per_sec:.2f} steps/s | ETA {_hms(eta)}",
          flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _fmt(v: Any) -> str:
  v = _py(v)
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def _hms(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  s = int(seconds)
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
