"""Every notebook under colabs/ runs top to bottom in a real kernel (smoke settings) whose Python is
a fresh venv with jaxtok installed from a wheel, and is committed with a full run's outputs.

The kernel executes a copy (nbclient, a timeout per cell), so ``!``/``%`` lines, display calls and
cell order count, and a packaging gap (a config or data file missing from the wheel) fails here.
"""

import ast
import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.installed_env import InstalledEnv, installed_env  # noqa: F401  (the session fixture)
from tests.subproc import REPO

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))
CELL_TIMEOUT = 600  # seconds; a smoke cell takes seconds, the first compile of a model longer
KERNEL = "jaxtok-installed"


def _kernel_manager(env: InstalledEnv) -> KernelManager:
  """A kernel running the installed venv's interpreter (a kernelspec in the venv's share/)."""
  kernels = os.path.join(os.path.dirname(os.path.dirname(env.python)), "share", "jupyter",
                         "kernels")
  os.makedirs(os.path.join(kernels, KERNEL), exist_ok=True)
  with open(os.path.join(kernels, KERNEL, "kernel.json"), "w") as f:
    json.dump({"argv": [env.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "jaxtok (installed)", "language": "python"}, f)
  return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(
      kernel_dirs=[kernels]))


def _outputs(nb, output_type: str | None = None):
  for i, cell in enumerate(nb.cells):
    for out in cell.get("outputs", []):
      if output_type is None or out.output_type == output_type:
        yield i, out


def _text(out) -> str:
  if out.output_type == "stream":
    return out.text
  return out.get("data", {}).get("text/plain", "")


def _sha(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def test_there_are_notebooks():
  assert NOTEBOOKS, "colabs/ has no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_opens_with_install_and_smoke_cells(path):
  code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
  install, settings = code[0], code[1]
  assert 'JAXTOK_REPO = "https://github.com/YOUR_ORG/jaxtok"' in install
  assert "import jaxtok\nexcept ImportError:" in install and '"pip", "install"' in install
  assert 'SMOKE = os.environ.get("JAXTOK_SMOKE", "0") == "1"' in settings
  assert not any("JAXTOK_REPO" in c or "pip" in c for c in code[1:])  # one install cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_install_cell_where_jaxtok_is_missing(path, tmp_path):
  """Without jaxtok (python -S: no site-packages) the cell refuses the placeholder URL, and with a
  URL it pip-installs jaxtok with the notebook's extras (pip replaced by a stub that prints)."""
  install = nbformat.read(path, as_version=4).cells[1].source
  run = [sys.executable, "-S", "-c"]
  p = subprocess.run(run + [install], capture_output=True, text=True, cwd=tmp_path, timeout=60)
  assert p.returncode != 0 and "set JAXTOK_REPO at the top of this cell" in p.stderr, p.stderr
  stub = ("import subprocess, sys\n"
          "def check_call(cmd):\n  print(cmd)\n  sys.exit(0)\n"
          "subprocess.check_call = check_call\n")
  url = "https://example.org/lab/jaxtok"
  cell = install.replace("https://github.com/YOUR_ORG/jaxtok", url)
  p = subprocess.run(run + [stub + cell], capture_output=True, text=True, cwd=tmp_path, timeout=60)
  assert p.returncode == 0, p.stderr
  extras = re.search(r'JAXTOK_EXTRAS = "([\w,]*)"', install).group(1)
  cmd = ast.literal_eval(p.stdout.strip())
  assert cmd[1:5] == ["-m", "pip", "install", "-q"]
  assert cmd[5] == f"jaxtok{f'[{extras}]' if extras else ''} @ git+{url}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_notebook_holds_a_full_runs_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  counts = [c.execution_count for c in code]
  assert counts == list(range(1, len(code) + 1)), f"not one top-to-bottom run: {counts}"
  errors = [i for i, out in _outputs(nb, "error")]
  assert not errors, f"error outputs in cells {errors}"
  tracebacks = [i for i, out in _outputs(nb, "stream") if "Traceback" in out.text]
  assert not tracebacks, f"tracebacks printed in cells {tracebacks}"
  assert any("image/png" in out.get("data", {}) for _, out in _outputs(nb, "display_data"))
  settings = "".join(_text(out) for out in code[1].get("outputs", []))
  assert settings.startswith("full run"), settings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.slow  # 172 s on 2 cores (tests/durations.json)
def test_notebook_runs_in_a_kernel_against_the_installed_package(
    path, installed_env, tmp_path, shared_data_dir):  # noqa: F811
  before = _sha(path)
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(nb, km=_kernel_manager(installed_env), timeout=CELL_TIMEOUT,
                          resources={"metadata": {"path": str(tmp_path)}})
  env = installed_env.environ(JAXTOK_SMOKE="1", JAXTOK_NOTEBOOK_WORKDIR=str(tmp_path / "work"),
                              JAXTOK_NOTEBOOK_DATA_DIR=shared_data_dir)
  env.pop("MPLBACKEND", None)  # the kernel's inline backend shows the figures
  try:
    client.execute(env=env)
  except CellExecutionError as e:
    pytest.fail(f"{os.path.basename(path)} failed in the kernel:\n{str(e)[-6000:]}")
  finally:
    nbformat.write(nb, str(tmp_path / os.path.basename(path)))  # the executed copy, to look at
  assert _sha(path) == before  # the committed outputs are left alone
  code = [c for c in nb.cells if c.cell_type == "code"]
  installed = "".join(_text(out) for out in code[0].outputs)
  assert f"from {os.path.join(installed_env.site_packages, 'jaxtok')}" in installed, installed
  assert "".join(_text(out) for out in code[1].outputs).startswith("SMOKE run")
  assert any("image/png" in out.get("data", {}) for _, out in _outputs(nb, "display_data"))
