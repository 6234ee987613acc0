"""Procedurally generated function-writing tasks, checked by running their tests in the sandbox.

Each family turns a few random constants into a natural-language prompt, a reference solution
(Python source) and test cases; the expected outputs come from running the reference solution
here (it is our code), so the prompt, solution and tests cannot disagree. A task's identity is
its family and constants (``key``); the split (train or heldout) is a hash of the key, so the
splits are disjoint by construction and the same for every seed, and a seed only chooses which
tasks of a split are drawn. The function name and test inputs are drawn from the key's hash too,
so one key is always the same task.

The tests compare with exact types (``type(got) is type(want)``, recursively for lists and
tuples), so a program cannot pass by returning an object whose ``__eq__`` always answers True.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import string
from collections.abc import Callable, Sequence

import numpy as np

from jaxtok.rl.sandbox import run_batch, run_tests

SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 20
NUM_TESTS = 8
_NAMES = ("solve", "f", "compute", "transform", "answer", "process", "calc", "g")


@dataclasses.dataclass(frozen=True)
class CodeTask:
  """One task: write ``name`` so that ``tests`` (assertions) pass."""

  family: str
  params: tuple
  name: str
  prompt: str
  solution: str
  tests: str

  @property
  def key(self) -> str:
    return task_key(self.family, self.params)


def task_key(family: str, params: tuple) -> str:
  return f"{family}{params!r}"


def _hash(text: str) -> int:
  return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)


def split_of(key: str) -> str:
  """'heldout' for about HELDOUT_PERCENT% of keys (by hash), else 'train'."""
  return "heldout" if _hash("split:" + key) % 100 < HELDOUT_PERCENT else "train"


@dataclasses.dataclass(frozen=True)
class Family:
  """params(rng) -> constants; text/solution(name, *constants); inputs(rng, *constants) -> args."""

  params: Callable[[random.Random], tuple]
  text: Callable[..., str]
  solution: Callable[..., str]
  inputs: Callable[..., tuple]


def _ints(rng, n, lo, hi):
  return [rng.randint(lo, hi) for _ in range(n)]


def _word(rng, alphabet=string.ascii_lowercase, lo=1, hi=6):
  return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


FAMILIES: dict[str, Family] = {
    "digit_sum": Family(
        params=lambda r: (r.randint(2, 10), r.randint(1, 9)),
        text=lambda n, b, k: (f"`{n}(n)` returns the sum of the digits of the non-negative "
                              f"integer n written in base {b}, multiplied by {k}."),
        solution=lambda n, b, k: (f"def {n}(n):\n  total = 0\n  while n > 0:\n"
                                  f"    total += n % {b}\n    n //= {b}\n  return total * {k}\n"),
        inputs=lambda r, b, k: (r.choice([0, 1, r.randint(2, 99), r.randint(100, 10**6)]),)),
    "reverse_words": Family(
        params=lambda r: tuple(r.sample([" ", ",", ";", "-", "|", "/", ":"], 2)),
        text=lambda n, sep, join: (f"`{n}(s)` splits the string s on {sep!r}, reverses the order "
                                   f"of the pieces and joins them with {join!r}."),
        solution=lambda n, sep, join: (f"def {n}(s):\n"
                                       f"  return {join!r}.join(s.split({sep!r})[::-1])\n"),
        inputs=lambda r, sep, join: (sep.join(_word(r) for _ in range(r.randint(1, 5))),)),
    "count_chars": Family(
        params=lambda r: ("".join(sorted(r.sample(string.ascii_lowercase, r.randint(2, 6)))),),
        text=lambda n, chars: (f"`{n}(s)` returns how many characters of the string s are one of "
                               f"the letters {chars!r}."),
        solution=lambda n, chars: f"def {n}(s):\n  return sum(1 for c in s if c in {chars!r})\n",
        inputs=lambda r, chars: (_word(r, lo=0, hi=12),)),
    "fizzbuzz": Family(
        params=lambda r: (*r.sample(range(2, 10), 2), *r.sample(["Fizz", "Buzz", "Bang", "Pop",
                                                                 "Zap", "Moo", "Ding"], 2)),
        text=lambda n, a, b, wa, wb: (
            f"`{n}(n)` returns a list of strings for i = 1, ..., n: {wa + wb!r} if i is divisible "
            f"by both {a} and {b}, {wa!r} if only by {a}, {wb!r} if only by {b}, else str(i)."),
        solution=lambda n, a, b, wa, wb: (
            f"def {n}(n):\n  out = []\n  for i in range(1, n + 1):\n"
            f"    s = ({wa!r} if i % {a} == 0 else '') + ({wb!r} if i % {b} == 0 else '')\n"
            f"    out.append(s or str(i))\n  return out\n"),
        inputs=lambda r, *p: (r.randint(0, 40),)),
    "running": Family(
        params=lambda r: (r.choice(["max", "min", "sum"]), r.randint(1, 9)),
        text=lambda n, op, k: (f"`{n}(xs)` returns a list whose i-th element is {k} times the "
                               f"{op} of xs[0], ..., xs[i] (the running {op} of the list of "
                               f"integers xs, scaled by {k})."),
        solution=lambda n, op, k: (
            f"def {n}(xs):\n  out = []\n  for i, x in enumerate(xs):\n"
            f"    acc = x if i == 0 else {'acc + x' if op == 'sum' else f'{op}(acc, x)'}\n"
            f"    out.append(acc * {k})\n  return out\n"),
        inputs=lambda r, op, k: (_ints(r, r.randint(0, 8), -20, 20),)),
    "count_residue": Family(
        params=lambda r: (lambda k: (k, r.randrange(k)))(r.randint(2, 12)),
        text=lambda n, k, res: (f"`{n}(lo, hi)` returns how many integers x with lo <= x <= hi "
                                f"satisfy x % {k} == {res}."),
        solution=lambda n, k, res: (
            f"def {n}(lo, hi):\n  return sum(1 for x in range(lo, hi + 1) if x % {k} == {res})\n"),
        inputs=lambda r, k, res: (lambda lo: (lo, lo + r.randint(-2, 60)))(r.randint(-50, 50))),
    "caesar": Family(
        params=lambda r: (r.randint(1, 25), r.choice(["forward", "backward"])),
        text=lambda n, k, d: (f"`{n}(s)` shifts every lowercase ASCII letter of s {d} by {k} "
                              f"positions in the alphabet, wrapping around; other characters "
                              f"stay as they are."),
        solution=lambda n, k, d: (
            f"def {n}(s):\n  out = ''\n  for c in s:\n    if 'a' <= c <= 'z':\n"
            f"      c = chr((ord(c) - 97 {'+' if d == 'forward' else '-'} {k}) % 26 + 97)\n"
            f"    out += c\n  return out\n"),
        inputs=lambda r, k, d: (_word(r, string.ascii_lowercase + " .AZ", 0, 14),)),
    "polynomial": Family(
        params=lambda r: tuple(r.randint(-9, 9) for _ in range(3)),
        text=lambda n, a, b, c: f"`{n}(x)` returns {a}*x**2 + {b}*x + {c} for an integer x.",
        solution=lambda n, a, b, c: f"def {n}(x):\n  return {a} * x * x + {b} * x + {c}\n",
        inputs=lambda r, *p: (r.randint(-30, 30),)),
    "filter_sum": Family(
        params=lambda r: (r.randint(-5, 5), r.choice(["even", "odd"])),
        text=lambda n, t, par: (f"`{n}(xs)` returns the sum of the {par} elements of the list of "
                                f"integers xs that are greater than {t}."),
        solution=lambda n, t, par: (f"def {n}(xs):\n  return sum(x for x in xs if x > {t} and "
                                    f"x % 2 == {int(par == 'odd')})\n"),
        inputs=lambda r, t, par: (_ints(r, r.randint(0, 9), -15, 15),)),
    "keep_k": Family(
        params=lambda r: (r.randint(1, 4), r.choice([False, True])),
        text=lambda n, k, rev: (f"`{n}(xs)` returns the elements of the list xs in "
                                f"{'reverse ' if rev else ''}order, keeping only the first {k} "
                                f"occurrence(s) of each value (counted in that order)."),
        solution=lambda n, k, rev: (
            f"def {n}(xs):\n  seen = {{}}\n  out = []\n  for x in {'xs[::-1]' if rev else 'xs'}:\n"
            f"    seen[x] = seen.get(x, 0) + 1\n    if seen[x] <= {k}:\n      out.append(x)\n"
            f"  return out\n"),
        inputs=lambda r, k, rev: (_ints(r, r.randint(0, 10), 0, 4),)),
    "interleave": Family(
        params=lambda r: (r.randint(1, 4), r.randint(1, 4)),
        text=lambda n, p, q: (f"`{n}(a, b)` interleaves the strings a and b: {p} character(s) of "
                              f"a, then {q} of b, repeating; when one runs out, the rest of the "
                              f"other is appended."),
        solution=lambda n, p, q: (
            f"def {n}(a, b):\n  out, i, j = '', 0, 0\n  while i < len(a) or j < len(b):\n"
            f"    out += a[i:i + {p}] + b[j:j + {q}]\n    i, j = i + {p}, j + {q}\n  return out\n"),
        inputs=lambda r, p, q: (_word(r, lo=0, hi=9), _word(r, string.digits, 0, 9))),
}

_SAME = """def _same(a, b):
  if type(a) is not type(b):
    return False
  if type(a) in (list, tuple):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  return a == b
"""


def _run_reference(solution: str, name: str, args: tuple):
  namespace: dict = {}
  exec(solution, namespace)  # our own reference source, not model output
  return namespace[name](*args)


def build_task(family: str, params: tuple, num_tests: int = NUM_TESTS) -> CodeTask:
  """The task of ``family`` with constants ``params``; name and tests fixed by the key's hash."""
  if family not in FAMILIES:
    raise KeyError(f"unknown code-task family {family!r}; valid: {sorted(FAMILIES)}")
  fam, key = FAMILIES[family], task_key(family, params)
  rng = random.Random(_hash("tests:" + key))
  name = _NAMES[_hash("name:" + key) % len(_NAMES)]
  solution = fam.solution(name, *params)
  inputs = []
  for _ in range(20 * num_tests):
    args = fam.inputs(rng, *params)
    if args not in inputs:
      inputs.append(args)
    if len(inputs) == num_tests:
      break
  lines = [_SAME]
  for args in inputs:
    call = f"{name}({', '.join(map(repr, args))})"
    want = _run_reference(solution, name, args)
    lines.append(f"assert _same({call}, {want!r}), {f'{call} should be {want!r}'!r}\n")
  prompt = (f"Write a Python function such that {fam.text(name, *params)} Reply with the code "
            f"of the function only.")
  return CodeTask(family, params, name, prompt, solution, "".join(lines))


def make_tasks(split: str, n: int, seed: int = 0,
               families: Sequence[str] | None = None) -> list[CodeTask]:
  """``n`` distinct tasks of ``split`` ('train' or 'heldout'), drawn with ``seed``."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  families = sorted(families or FAMILIES)
  rng = random.Random(_hash(f"draw:{seed}:{split}"))
  tasks, keys = [], set()
  for _ in range(200 * n):
    family = rng.choice(families)
    params = FAMILIES[family].params(rng)
    key = task_key(family, params)
    if key in keys or split_of(key) != split:
      continue
    keys.add(key)
    tasks.append(build_task(family, params))
    if len(tasks) == n:
      return tasks
  raise ValueError(f"only {len(tasks)} distinct {split} tasks found in {families}; asked {n}")


def extract_program(completion: str) -> str:
  """The code of a completion: its first fenced block if it has one, else the whole text."""
  match = re.search(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|\Z)", completion, re.DOTALL)
  return match.group(1) if match else completion


def reward(program: str, task: CodeTask, timeout_s: float = 2.0) -> float:
  """1.0 if ``program`` passes the task's tests in the sandbox, else 0.0."""
  return float(run_tests(program, task.tests, timeout_s).passed)


def rewards(programs: Sequence[str], tasks: Sequence[CodeTask], timeout_s: float = 2.0,
            max_workers: int = 2) -> np.ndarray:
  """Rewards of many programs (float32 [N]), at most ``max_workers`` sandboxes at a time."""
  if len(programs) != len(tasks):
    raise ValueError(f"{len(programs)} programs for {len(tasks)} tasks")
  results = run_batch([(p, t.tests) for p, t in zip(programs, tasks)], timeout_s,
                      max_workers=max_workers)
  return np.asarray([r.passed for r in results], np.float32)
