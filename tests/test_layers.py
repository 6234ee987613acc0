"""The house's layering, read from the source with ``ast`` (nothing is imported).

Layers, low to high: registry, paths, nn, kernels, quantizers, tokenizers, generators (with
decoding and rl), pretrained, eval, data, train, config_args, tasks, main. A module may import
its own layer and the layers below it; an import of a higher layer, a cycle between modules, or a
function-local import of a jaxtok module (a hidden cycle) fails here, naming the file and line.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxtok"
ORDER = ("registry", "paths", "nn", "kernels", "quantizers", "tokenizers", "generators",
         "pretrained", "eval", "data", "train", "config_args", "tasks", "main")
RANK = {name: i for i, name in enumerate(ORDER)} | {"decoding": ORDER.index("generators"),
                                                      "rl": ORDER.index("generators")}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if parts[0] == "jaxtok" and len(parts) > 1 else None


def imports(path: pathlib.Path):
  """(line, imported jaxtok module, at module level?) for every import in ``path``."""
  tree = ast.parse(path.read_text())
  top = {id(node) for node in tree.body}
  top |= {id(n) for node in tree.body if isinstance(node, (ast.If, ast.Try))
          for n in ast.walk(node)}  # `if TYPE_CHECKING:` / try-import blocks count as top level
  me = module_name(path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative import: resolve against this package
        base = me.split(".")[: len(me.split(".")) - node.level + (path.name == "__init__.py")]
        names = [".".join(base + ([node.module] if node.module else []))]
      else:
        names = [node.module or ""]
      # `from jaxtok.pkg import module` imports the submodule when there is one
      names = [f"{names[0]}.{a.name}" if (ROOT.parent / f"{names[0]}.{a.name}".replace(".", "/")
               ).with_suffix(".py").exists() or (ROOT.parent / f"{names[0]}.{a.name}".replace(
                   ".", "/")).is_dir() else names[0] for a in node.names]
    else:
      continue
    for name in names:
      if name.split(".")[0] == "jaxtok":
        yield node.lineno, name, id(node) in top


FILES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer():
  unknown = {layer_of(module_name(p)) for p in FILES} - set(RANK) - {None}
  assert not unknown, f"jaxtok packages outside the layer order {ORDER}: {sorted(unknown)}"


def test_no_upward_or_function_local_import():
  problems = []
  for path in FILES:
    me = layer_of(module_name(path))
    for line, name, at_top in imports(path):
      there = layer_of(name)
      where = f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
      if me is not None and there is not None and RANK[there] > RANK[me]:
        problems.append(f"{where} ({there} is above {me})")
      if not at_top:
        problems.append(f"{where} inside a function (a hidden cycle?)")
  assert not problems, "\n".join(problems)


def test_no_import_cycle():
  graph = {module_name(p): {n for _, n, _ in imports(p)} for p in FILES}
  known = set(graph)
  graph = {m: {n if n in known else n.rsplit(".", 1)[0] for n in deps} & known - {m}
           for m, deps in graph.items()}
  # A package's __init__ re-exporting its submodules is not a cycle with them.
  graph = {m: {n for n in deps if not (m.startswith(n + ".") and n in known)}
           for m, deps in graph.items()}
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == 1:
        pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
      if n not in state:
        visit(n)
    stack.pop()
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m)
