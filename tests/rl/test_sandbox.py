"""The sandbox (jaxtok/rl/sandbox.py) and the code tasks scored by it (jaxtok/rl/code_tasks.py).

Each test runs real subprocesses (~30 ms each); the slowest are the timeouts (about 1 s each).
"""

import os
import secrets
import time

import pytest

from jaxtok.rl import code_tasks
from jaxtok.rl.sandbox import Limits, run_batch, run_tests

SQUARE_TESTS = "assert f(2) == 4\nassert f(3) == 9\n"
SQUARE = "def f(x):\n  return x * x\n"


def processes_with(text: str) -> list[int]:
  """Live processes whose command line contains ``text`` (read from /proc)."""
  found = []
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        cmdline = f.read()
    except OSError:  # the process exited between listdir and open: it is not alive
      continue
    if text.encode() in cmdline:
      found.append(int(entry))
  return found


def test_reference_solutions_pass_and_wrong_ones_fail():
  tasks = [code_tasks.make_tasks("train", 1, seed=3, families=[f])[0]
           for f in sorted(code_tasks.FAMILIES)]
  # a wrong program: the same family's solution with other constants, under the right name
  others = [code_tasks.make_tasks("heldout", 1, seed=3, families=[t.family])[0] for t in tasks]
  wrong = [o.solution.replace(f"def {o.name}(", f"def {t.name}(") for t, o in zip(tasks, others)]
  rewards = code_tasks.rewards([t.solution for t in tasks] + wrong, tasks + tasks)
  assert rewards[:len(tasks)].tolist() == [1.0] * len(tasks)
  assert rewards[len(tasks):].tolist() == [0.0] * len(tasks)
  result = run_tests(wrong[0], tasks[0].tests, 2.0)
  assert result.status == "fail" and "AssertionError" in result.detail and "should be" in (
      result.detail)


def test_statuses_of_simple_programs():
  ok = run_tests(SQUARE, SQUARE_TESTS, 2.0)
  assert (ok.passed, ok.status) == (True, "ok")
  fail = run_tests("def f(x):\n  return x + x\n", SQUARE_TESTS, 2.0)
  assert (fail.passed, fail.status) == (False, "fail")
  assert "<tests> line 2" in fail.detail  # f(2) == 4 holds for x + x; f(3) does not
  raised = run_tests("def f(x):\n  raise KeyError('nope')\n", SQUARE_TESTS, 2.0)
  assert (raised.passed, raised.status) == (False, "error")
  assert raised.detail.startswith("KeyError: 'nope'")
  syntax = run_tests("def f(x) return x\n", SQUARE_TESTS, 2.0)
  assert syntax.status == "error" and syntax.detail.startswith("SyntaxError")
  aborted = run_tests("import os\nos.abort()\n", SQUARE_TESTS, 2.0)
  assert aborted.status == "killed" and "SIGABRT" in aborted.detail


def test_infinite_loop_is_killed_within_the_timeout():
  start = time.monotonic()
  result = run_tests("def f(x):\n  while True:\n    x += 1\n", SQUARE_TESTS, 1.0)
  elapsed = time.monotonic() - start
  assert (result.passed, result.status) == (False, "timeout")
  assert 1.0 <= elapsed < 1.0 + 1.5, elapsed


def test_children_and_escaped_daemons_are_killed():
  """With process creation allowed, children (one in its own session) die with the sandbox."""
  tag = f"{1000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"  # unique sleep argument
  program = f"""import os, subprocess
subprocess.Popen(["sleep", "{tag}"])
if os.fork() == 0:
  os.setsid()  # leaves the process group: only the /proc sweep can find it
  os.execvp("sleep", ["sleep", "{tag}"])
print("spawned", flush=True)
def f(x):
  while True:  # busy until the time limit
    x += 1
"""
  result = run_tests(program, SQUARE_TESTS, 1.0, allow_processes=True)
  assert result.status == "timeout" and "spawned" in result.output
  assert processes_with(tag) == []


def test_fork_bomb_and_subprocesses_are_refused():
  bomb = run_tests("import os\nwhile True:\n  os.fork()\n", SQUARE_TESTS, 1.0)
  assert bomb.status == "error" and bomb.detail.startswith("PermissionError: sandbox: os.fork")
  tag = f"{2000 + secrets.randbelow(10**6)}"
  sub = run_tests(f"import subprocess\nsubprocess.Popen(['sleep', '{tag}'])\n", SQUARE_TESTS, 1.0)
  assert sub.status == "error" and "subprocess.Popen" in sub.detail
  assert processes_with(tag) == []


@pytest.mark.parametrize("how", [
    "open({path!r}, 'w').write('x')",
    "import os\nos.close(os.open({path!r}, os.O_WRONLY | os.O_CREAT))",
    "open('ok', 'w').close()\nimport os\nos.rename('ok', {path!r})",
    "import os\nos.symlink({path!r}, 'link')\nopen('link', 'w').write('x')",
    "import pathlib\npathlib.Path({path!r}).write_text('x')",
    "import os\nos.mkdir({path!r})",
    "import os\nd = os.open({dir!r}, os.O_RDONLY)\n"
    "os.open('escaped', os.O_CREAT | os.O_WRONLY, dir_fd=d)",
    "import os\nopen(os.path.relpath({path!r}), 'w').write('x')",
])
def test_writes_outside_the_sandbox_are_refused(tmp_path, how):
  target = tmp_path / "escaped"
  program = how.format(path=str(target), dir=str(tmp_path)) + "\ndef f(x):\n  return x * x\n"
  result = run_tests(program, SQUARE_TESTS, 2.0)
  assert result.status == "error" and "PermissionError: sandbox" in result.detail, result
  assert not target.exists() and not list(tmp_path.iterdir())


def test_writes_inside_the_sandbox_are_allowed():
  program = ("import os, tempfile\nos.mkdir('d')\nopen('d/x', 'w').write('hi')\n"
             "tempfile.NamedTemporaryFile().close()\nassert open('d/x').read() == 'hi'\n" + SQUARE)
  assert run_tests(program, SQUARE_TESTS, 2.0).passed


def test_huge_allocation_is_stopped():
  start = time.monotonic()
  result = run_tests("x = bytearray(10**11)\n" + SQUARE, SQUARE_TESTS, 2.0,
                     limits=Limits(memory_bytes=256 * 2**20))
  assert time.monotonic() - start < 2.0
  assert result.status == "error" and result.detail.startswith("MemoryError")


@pytest.mark.parametrize("program,needle", [
    ("import socket\nsocket.socket()", "import of _socket"),
    ("import sys\nsys._getframe(1).f_locals", "frame introspection"),
    ("try:\n  1 / 0\nexcept ZeroDivisionError as e:\n  e.__traceback__.tb_frame", ".tb_frame"),
    ("import gc\ngc.get_objects()", "gc.get_objects"),
    ("open('/proc/self/mem', 'rb')", "opening '/proc/self/mem'"),
    ("open('/dev/fd/../mem', 'rb')", "opening '/dev/fd/../mem'"),  # /dev/fd -> /proc/self/fd
    ("import ctypes", "import of ctypes"),
    ("import os\nos.kill(os.getppid(), 9)", "os.kill"),
])
def test_escape_hatches_are_refused(program, needle):
  result = run_tests(program + "\n" + SQUARE, SQUARE_TESTS, 2.0)
  assert result.status == "error" and needle in result.detail, result


def test_cheap_tricks_do_not_pass():
  for program in ("import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n",
                  "import builtins\nbuiltins.exec = lambda *a, **k: None\n"
                  "builtins.AssertionError = ZeroDivisionError\ndef f(x):\n  return 0\n"):
    assert not run_tests(program, SQUARE_TESTS, 2.0).passed, program
  # an always-equal object fools `==` tests, not the code tasks' exact-type comparison
  always_equal = ("class A:\n  def __eq__(self, other):\n    return True\n"
                  "def {}(*a):\n  return A()\n")
  assert run_tests(always_equal.format("f"), SQUARE_TESTS, 2.0).passed
  task = code_tasks.build_task("polynomial", (1, 2, 3))
  assert code_tasks.reward(always_equal.format(task.name), task) == 0.0


def test_output_is_captured_and_truncated():
  result = run_tests("print('a' * 5000)\n" + SQUARE, SQUARE_TESTS, 2.0,
                     limits=Limits(max_output=100))
  assert result.passed and result.output == "a" * 100


def test_batch_is_bounded_and_ordered():
  programs = [("import time\ntime.sleep(0.6)\n" + SQUARE, SQUARE_TESTS),
              ("def f(x):\n  return 0\n", SQUARE_TESTS)] * 2
  start = time.monotonic()
  results = run_batch(programs, 3.0, max_workers=2)
  elapsed = time.monotonic() - start
  assert [r.status for r in results] == ["ok", "fail", "ok", "fail"]
  assert elapsed >= 0.6 and elapsed < 3.0  # two sleepers ran side by side, not one after another
  start = time.monotonic()
  run_batch(programs[:1] * 2, 3.0, max_workers=1)
  assert time.monotonic() - start >= 1.2  # one worker: the sleepers queue


def test_splits_are_disjoint_and_deterministic():
  train = code_tasks.make_tasks("train", 80, seed=0)
  heldout = code_tasks.make_tasks("heldout", 40, seed=0)
  assert not {t.key for t in train} & {t.key for t in heldout}
  assert all(code_tasks.split_of(t.key) == "train" for t in train)
  assert [t.tests for t in code_tasks.make_tasks("train", 80, seed=0)] == [t.tests for t in train]
  other = code_tasks.make_tasks("train", 80, seed=1)
  assert [t.key for t in other] != [t.key for t in train]
  # the same key is the same task whichever seed drew it
  again = {t.key: t for t in other}
  assert all(again[t.key] == t for t in train if t.key in again)
  assert len({t.family for t in train}) == len(code_tasks.FAMILIES)
  keys = {code_tasks.task_key("polynomial", (a, b, c))
          for a in range(-9, 10) for b in range(-9, 10) for c in range(-9, 10)}
  held = sum(code_tasks.split_of(k) == "heldout" for k in keys) / len(keys)
  assert abs(held - code_tasks.HELDOUT_PERCENT / 100) < 0.02
  prompts = {t.prompt for t in train}
  assert len(prompts) == len(train)
  with pytest.raises(ValueError, match="split"):
    code_tasks.make_tasks("test", 1)


def test_extract_program():
  assert code_tasks.extract_program("Sure:\n```python\ndef f():\n  return 1\n```\nDone") == (
      "def f():\n  return 1\n")
  assert code_tasks.extract_program("def f():\n  return 1") == "def f():\n  return 1"
