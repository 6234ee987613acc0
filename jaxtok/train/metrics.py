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
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np
from absl import logging

from jaxtok import paths


def _py(v: Any) -> Any:
  if isinstance(v, (np.ndarray, np.generic)) or hasattr(v, "dtype"):
    v = np.asarray(v)
    return v.item() if v.size == 1 else v.tolist()
  return v


class MetricWriter:
  """Writes metric dicts to metrics.jsonl and TensorBoard (process 0 only), local or remote.

  On a local workdir lines are appended. An object store (gs://...) has no append: the file is
  kept whole and rewritten at each write (a run logs every ``log_every`` steps, so it stays
  small), and TensorBoard writes to a local directory whose event files are copied to
  ``<workdir>/tensorboard`` after each flush. After a resume (:meth:`truncate_after`) the
  TensorBoard writer purges the steps after the checkpoint, as metrics.jsonl does.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = paths.join(workdir, "metrics.jsonl")
    self._remote = paths.is_remote(workdir)
    self._tb_dir = paths.join(workdir, "tensorboard")
    self._tb_local = None if self._remote else self._tb_dir  # remote: a temp dir, made lazily
    self._tensorboard = enabled and tensorboard
    self._tb = None
    self._purge_step = None
    self._lines = None  # remote: the whole file, rewritten at each write

  def _read_lines(self) -> list[str]:
    if not paths.exists(self.path):
      return []
    return [ln + "\n" for ln in paths.read_text(self.path).splitlines() if ln.strip()]

  def truncate_after(self, step: int) -> None:
    """Drops lines with ``step`` > the given step (after resuming from a checkpoint at it)."""
    if not self.enabled:
      return
    self._purge_step = step + 1  # TensorBoard drops its events from here on
    kept = []
    for ln in self._read_lines():
      try:
        if json.loads(ln).get("step", 0) <= step:
          kept.append(ln)
      except json.JSONDecodeError:  # a line cut by a kill mid-write
        continue
    paths.write_text(self.path, "".join(kept))
    self._lines = kept if self._remote else None

  def _board(self):
    if self._tb is None and self._tensorboard:
      try:
        from tensorboardX import SummaryWriter  # optional at import time of this module
        if self._tb_local is None:
          self._tb_local = tempfile.mkdtemp(prefix="jaxtok_tb_")
        self._tb = SummaryWriter(self._tb_local, purge_step=self._purge_step)
      except ImportError:  # pragma: no cover -- tensorboardX is a dependency; be lenient anyway.
        logging.warning("tensorboardX not installed; TensorBoard logging disabled")
        self._tensorboard = False
    return self._tb

  def _sync_board(self) -> None:  # remote workdir: copy the local event files up
    if self._remote:
      for name in os.listdir(self._tb_local):
        with open(os.path.join(self._tb_local, name), "rb") as f:
          paths.write_bytes(paths.join(self._tb_dir, name), f.read())

  def write(self, step: int, metrics: dict[str, Any], *, jsonl: bool = True) -> None:
    if not self.enabled or not metrics:
      return
    row = {"step": int(step), **{k: _py(v) for k, v in sorted(metrics.items())}}
    if jsonl:
      line = json.dumps(row) + "\n"
      if self._remote:
        if self._lines is None:
          self._lines = self._read_lines()
        self._lines.append(line)
        paths.write_text(self.path, "".join(self._lines))
      else:
        paths.path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
          f.write(line)
    board = self._board()
    if board is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          board.add_scalar(k, v, step)
      board.flush()
      self._sync_board()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._sync_board()
      self._tb = None
    if self._remote and self._tb_local is not None:  # copied up: the local files are spent
      shutil.rmtree(self._tb_local, ignore_errors=True)
      self._tb_local = None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All rows of ``<workdir>/metrics.jsonl`` (local or remote)."""
  text = paths.read_text(paths.join(workdir, "metrics.jsonl"))
  return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


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
