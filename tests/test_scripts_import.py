"""Benchmarks and studies still load against today's jaxtok.

They are run by hand, not by the tests, so a renamed function breaks them silently. This loads
each one as ``python <file>`` would (its folder and the repository on the path, ``__name__`` not
``'__main__'``, so nothing runs), and resolves every ``from X import name`` in it, also the ones
inside functions, against the modules of this checkout. One subprocess: some files set
environment variables (``XLA_FLAGS``) when loaded.
"""

from __future__ import annotations

import json
import pathlib

from tests.subproc import run_python

REPO = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("benchmarks", "scripts/studies")

CHECK = r"""
import ast, importlib, json, pathlib, runpy, sys
repo = pathlib.Path({repo!r})
problems = {{}}
for folder in {folders!r}:
  sys.path[:0] = [str(repo / folder), str(repo)]
  for path in sorted((repo / folder).glob("*.py")):
    if path.name == "__init__.py":
      continue
    try:
      runpy.run_path(str(path), run_name="loaded_by_test")
    except Exception as e:  # noqa: BLE001 -- reported below, by file
      problems[str(path.relative_to(repo))] = f"load: {{e!r}}"
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
        continue
      top = node.module.split(".")[0]
      local = (repo / folder / f"{{top}}.py").exists()
      if top not in ("jaxtok", "benchmarks", "scripts", "configs") and not local:
        continue  # third-party: optional extras (torch, transformers) are not checked here
      try:
        module = importlib.import_module(node.module)
      except Exception as e:  # noqa: BLE001
        problems[f"{{path.relative_to(repo)}}:{{node.lineno}}"] = f"import {{node.module}}: {{e!r}}"
        continue
      for alias in node.names:
        if alias.name != "*" and not hasattr(module, alias.name):
          try:
            importlib.import_module(f"{{node.module}}.{{alias.name}}")
          except ImportError:
            problems[f"{{path.relative_to(repo)}}:{{node.lineno}}"] = (
                f"{{node.module}} has no {{alias.name}}")
print(json.dumps(problems))
"""


def test_every_benchmark_and_study_loads_and_its_imports_resolve():
  files = [p for f in FOLDERS for p in (REPO / f).glob("*.py") if p.name != "__init__.py"]
  assert len(files) > 40  # the folders were found
  out = run_python(CHECK.format(repo=str(REPO), folders=FOLDERS), timeout=300)
  problems = json.loads(out.stdout.strip().splitlines()[-1])
  assert problems == {}, problems
