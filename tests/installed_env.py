"""A fresh virtual environment with jaxtok installed from a wheel (not editable), shared by the
tests that must see what a user's ``pip install`` gets: configs run by name, notebooks in a kernel.

The venv reuses the test environment's dependencies through a ``.pth`` file naming its
site-packages (plain paths: their ``.pth`` files, the checkout's editable-install hook among them,
are not processed) and installs the project with ``--no-deps --no-build-isolation`` from a copy
of the working tree, so it takes seconds and needs no network. Built once per test run, under a
file lock, in a directory every xdist worker of the run shares.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import site
import subprocess
import sys

import pytest

from tests.subproc import REPO

# Top-level folders of a checkout that are not part of the project (venvs, caches, run outputs).
_NOT_SOURCE = {".git", ".venv", "venv", "build", "dist", "runs", "workdirs", ".jax_cache",
               ".pytest_cache", ".ruff_cache"}


@dataclasses.dataclass(frozen=True)
class InstalledEnv:
  python: str  # the venv's interpreter
  site_packages: str  # where jaxtok and configs were installed

  def environ(self, **extra: str) -> dict[str, str]:
    """The test process's environment without PYTHONPATH, so the checkout cannot leak in."""
    env = _no_pythonpath()
    env.update(extra)
    return env

  def run(self, args: list[str], cwd: str, timeout: float = 600,
          **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([self.python, *args], cwd=cwd, env=self.environ(**extra_env),
                          capture_output=True, text=True, timeout=timeout)


def _ignore(folder: str, names: list[str]) -> list[str]:
  top = os.path.realpath(folder) == os.path.realpath(REPO)
  return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info"))
          or (top and n in _NOT_SOURCE)]


def _no_pythonpath() -> dict[str, str]:
  return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _check(cmd: list[str], **kwargs) -> str:
  p = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
  if p.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                       f"{p.stderr[-6000:]}")
  return p.stdout


def build_installed_env(root: str) -> InstalledEnv:
  """The venv under ``root`` (built on the first call): jaxtok installed from the working tree."""
  os.makedirs(root, exist_ok=True)
  venv = os.path.join(root, "venv")
  python = os.path.join(venv, "bin", "python")
  done = os.path.join(root, "installed")
  with open(os.path.join(root, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not os.path.exists(done):
        shutil.rmtree(venv, ignore_errors=True)
        _check([sys.executable, "-m", "venv", "--without-pip", venv])
        purelib = _check([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         env=_no_pythonpath()).strip()
        parent = list(site.getsitepackages())
        if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
          parent.append(site.getusersitepackages())
        with open(os.path.join(purelib, "_jaxtok_test_dependencies.pth"), "w") as f:
          f.write("\n".join(parent) + "\n")
        src = os.path.join(root, "src")
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(REPO, src, ignore=_ignore)
        _check([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                "--ignore-installed", "--no-cache-dir", src], cwd=root,
               env=_no_pythonpath())
        shutil.rmtree(src)  # the install must not need its source
        with open(done, "w") as f:
          f.write(purelib)
      with open(done) as f:
        return InstalledEnv(python=python, site_packages=f.read())
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def installed_env(tmp_path_factory) -> InstalledEnv:
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # this run's folder, shared by its workers
  return build_installed_env(str(base / "jaxtok_installed"))
