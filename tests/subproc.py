"""Run a Python snippet in a fresh process with N fake CPU devices (for sharding tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, *, devices: int = 1, timeout: float = 600,
               env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
  """Runs ``code`` with ``devices`` fake CPU devices; returns the completed process.

  The snippet should print its results (e.g. JSON) to stdout. Raises with the child's stderr
  when it fails and ``check`` is set.
  """
  child_env = dict(os.environ)
  child_env["XLA_FLAGS"] = (child_env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
  child_env["PYTHONPATH"] = REPO + os.pathsep + child_env.get("PYTHONPATH", "")
  child_env.setdefault("JAX_PLATFORMS", "cpu")
  child_env.update(env or {})
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                        text=True, timeout=timeout, env=child_env, cwd=REPO)
  if check and proc.returncode != 0:
    raise AssertionError(f"subprocess failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}"
                         f"\nSTDERR:\n{proc.stderr[-8000:]}")
  return proc
