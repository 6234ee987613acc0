"""Every notebook under colabs/ runs top to bottom (code cells in order, smoke settings)."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.subproc import REPO

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))


def notebook_source(path: str) -> str:
  with open(path) as f:
    nb = json.load(f)
  cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
  # Shell escapes ("!pip ...") are Colab set-up; the test environment already has jaxtok.
  cells = ["\n".join(ln for ln in c.splitlines() if not ln.lstrip().startswith("!"))
           for c in cells]
  return "import matplotlib\nmatplotlib.use('Agg')\n" + "\n\n".join(cells)


def test_there_are_notebooks():
  assert NOTEBOOKS, "colabs/ has no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path, shared_data_dir):
  env = dict(os.environ, JAXTOK_SMOKE="1", JAXTOK_NOTEBOOK_WORKDIR=str(tmp_path),
             JAXTOK_NOTEBOOK_DATA_DIR=shared_data_dir, MPLBACKEND="Agg",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  p = subprocess.run([sys.executable, "-c", notebook_source(path)], capture_output=True,
                     text=True, env=env, cwd=str(tmp_path), timeout=900)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
