"""Runs untrusted Python (a program and its tests) in a limited subprocess, for verifiable rewards.

``run_tests(program, tests, timeout_s)`` starts ``python -I -S`` in a fresh temporary directory
(its cwd, HOME and TMPDIR) with a minimal environment, and returns a :class:`Result`. Layers of
containment, from the kernel's to Python's:

* resource limits set by the child before it reads the program (soft = hard, so the program
  cannot raise them): ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (a little above the wall timeout),
  ``RLIMIT_NOFILE``, ``RLIMIT_FSIZE`` (any file, stdout/stderr included), ``RLIMIT_CORE`` = 0;
* its own session and process group, killed whole with SIGKILL when the program ends or the
  wall-clock timeout passes, then a sweep of ``/proc`` for any process still carrying this run's
  marker in its environment (a descendant that left the group with ``setsid``);
* a ``sys.addaudithook`` hook installed before the program runs that refuses sockets, process
  creation (fork, exec, spawn, subprocess, system), signals, threads, ctypes and the other
  C-level escape hatches (``_ctypes``, sub-interpreters, ``_testcapi``, dbm, sqlite), ``chdir``,
  symlinks and hard links, every open for writing and every create, rename, remove or attribute
  change of a path outside the temporary directory (symlinks resolved with ``readlink`` captured
  before the program runs, since the program may monkeypatch ``os``), opening ``/proc`` or an
  outside directory (whose descriptor would let ``dir_fd=`` writes escape), and frame and
  object-graph introspection (``sys._getframe``, ``tb_frame``, ``gc.get_referrers``, tracing).

What this is not: PEP 578 says audit hooks are not a sandbox. Code that reaches C (a compiled
extension, a bug in the interpreter) bypasses the hook; network isolation is only Python-level
(no network namespace); and when the caller is root the child stays root (dropping to an
unprivileged uid needs an interpreter that uid can read), so file permissions add nothing. For
hostile code use a container, seccomp or a VM; this keeps an RL policy's mistakes and cheap
tricks (infinite loops, fork bombs, stray writes, ``sys.exit(0)`` before the tests, patched
builtins) contained.

Scoring: the program and then the tests run in the child; only a result line that carries a
random per-run nonce (read from stdin before the program runs and kept in a local the program
cannot reach without the refused introspection; written on a private pipe after the tests)
counts, so exiting early never passes. The tests run with a copy of ``builtins`` taken before
the program ran, so a program that patches builtins does not change what the tests call.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

STATUSES = ("ok", "fail", "timeout", "error", "killed")
MARKER = "JAXTOK_SANDBOX"


@dataclasses.dataclass(frozen=True)
class Result:
  """The outcome of one run: ``passed`` only when ``status == 'ok'``.

  ``status``: 'ok' (tests passed), 'fail' (an assertion failed), 'timeout' (wall clock ran out;
  the process group was killed), 'error' (the program or tests raised: ``detail`` starts with the
  exception's name; or the child exited without reporting), 'killed' (the child died of a
  signal: a resource limit such as SIGXFSZ or SIGXCPU). ``output``: stdout then stderr,
  truncated to ``max_output`` characters.
  """

  passed: bool
  status: str
  detail: str
  output: str = ""
  seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of the child (bytes, seconds, counts)."""

  memory_bytes: int = 512 * 2**20
  file_bytes: int = 2**20
  open_files: int = 64
  max_output: int = 4096


# The child's entry point: everything it needs is read from stdin before the program exists.
_RUNNER = r'''
def _main():
  import json, os, posix, resource, sys
  spec = json.loads(sys.stdin.read())
  for name, value in spec["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
  os.close(0)
  sys.stdin = sys.__stdin__ = None
  program, tests, nonce = spec.pop("program"), spec.pop("tests"), spec.pop("nonce")
  result_fd, prefix = spec["fd"], spec["root"] + "/"
  _write, _exit, _stat, _readlink = posix.write, posix._exit, posix.stat, posix.readlink
  _isinstance, _exec, _compile, _type = isinstance, exec, compile, type
  _AssertionError, _BaseException = AssertionError, BaseException
  _out, _err = sys.stdout, sys.stderr
  import pathlib
  path_types = (str, bytes, pathlib.PurePosixPath, pathlib.PosixPath)
  refused = {"os.chdir", "os.symlink", "os.link", "os.kill", "os.killpg", "os.startfile",
             "_thread.start_new_thread", "resource.setrlimit", "resource.prlimit",
             "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo",
             "socket.sendto", "socket.sethostname", "sys._current_frames", "sys.settrace",
             "sys.setprofile", "sys._current_exceptions", "gc.get_objects",
             "gc.get_referrers", "gc.get_referents"}
  if not spec["allow_processes"]:
    refused |= {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                "subprocess.Popen", "pty.spawn"}
  refused_modules = {"_ctypes", "ctypes", "_xxsubinterpreters", "_xxinterpchannels",
                     "_testcapi", "_testinternalcapi", "_dbm", "_gdbm", "_sqlite3", "_socket"}
  frame_attributes = {"tb_frame", "gi_frame", "cr_frame", "ag_frame"}
  # event -> (indices of path arguments, indices of dir_fd arguments)
  path_events = {"os.mkdir": ((0,), (2,)), "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)),
                 "os.rename": ((0, 1), (2, 3)), "os.truncate": ((0,), ()),
                 "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)),
                 "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
                 "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()),
                 "shutil.rmtree": ((0,), ()), "os.mkfifo": ((0,), (2,)), "os.mknod": ((0,), (3,))}
  write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

  def resolve(path):
    # realpath from captured functions: the program may monkeypatch os and posixpath
    if _isinstance(path, int):
      return None
    if not _isinstance(path, path_types):
      return "?"  # a custom PathLike could answer differently to the hook and to open
    path = posix.fspath(path)
    if _isinstance(path, bytes):
      path = path.decode("utf-8", "surrogateescape")
    todo = (path if path.startswith("/") else prefix + path).split("/")[::-1]
    parts, hops = [], 0
    while todo:
      part = todo.pop()
      if part in ("", "."):
        continue
      if part == "..":
        parts = parts[:-1]
        continue
      try:
        target = _readlink("/" + "/".join(parts + [part]))
      except (OSError, ValueError):
        parts.append(part)
        continue
      hops += 1
      if hops > 40:
        return "?"
      if target.startswith("/"):
        parts = []
      todo.extend(target.split("/")[::-1])
    return "/" + "/".join(parts)

  def inside(path):
    real = resolve(path)
    return real is None or (real + "/").startswith(prefix)

  def hook(event, args):
    if event in refused or event.startswith("ctypes."):
      raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "sys._getframe":  # ValueError: what callers such as namedtuple() tolerate
      raise ValueError("sandbox: frame introspection is not allowed")
    if event == "object.__getattr__" and args[1] in frame_attributes:
      raise PermissionError(f"sandbox: .{args[1]} is not allowed")
    if event == "import" and args[0].split(".")[0] in refused_modules:
      raise PermissionError(f"sandbox: import of {args[0]} is not allowed")
    if event == "sys.addaudithook":
      raise RuntimeError("sandbox: no further audit hooks")  # suppressed: hook not added
    if event == "open":
      path, mode, flags = args
      writing = (mode is not None and any(c in mode for c in "wax+")) or (
          mode is None and flags & write_flags)
      real = resolve(path)
      if real is None or (real + "/").startswith(prefix):
        return
      if writing or real == "?" or (real + "/").startswith("/proc/"):
        raise PermissionError(f"sandbox: opening {path!r} is not allowed")
      try:  # a descriptor of an outside directory would let dir_fd= writes escape
        st = _stat(real)
      except (OSError, ValueError):
        return
      if st.st_mode & 0o170000 == 0o040000:
        raise PermissionError(f"sandbox: opening directory {path!r} is not allowed")
    elif event in path_events:
      paths, dir_fds = path_events[event]
      if any(args[i] not in (None, -1, -100) for i in dir_fds if i < len(args)) or not all(
          inside(args[i]) for i in paths):
        raise PermissionError(f"sandbox: {event}{args!r} outside the sandbox is not allowed")

  sys.addaudithook(hook)
  import builtins
  pristine = dict(vars(builtins))

  def report(status, detail):
    for stream in (_out, _err):
      try:
        stream.flush()
      except BaseException:
        pass
    line = nonce + " " + status + " " + ("%s" % (detail,))[:2000].replace("\n", "\\n")
    _write(result_fd, line.encode("utf-8", "backslashreplace") + b"\n")
    _exit(0)

  def describe(e, filename):
    # entry 0 of the traceback is this function's exec(); entry 1 is the exec'd source
    tb, line = e.__traceback__, None
    if tb is not None and tb.tb_next is not None:
      line = tb.tb_next.tb_lineno
    where = "" if line is None else f" ({filename} line {line})"  # SyntaxError has its own
    return "%s: %s%s" % (_type(e).__name__, e, where)

  namespace = {"__name__": "__main__", "__builtins__": builtins}
  try:
    _exec(_compile(program, "<program>", "exec"), namespace)
  except _BaseException as e:
    report("error", describe(e, "<program>"))
  checks = {k: v for k, v in namespace.items() if k not in pristine}
  checks["__builtins__"] = pristine
  checks["__name__"] = "__tests__"
  try:
    _exec(_compile(tests, "<tests>", "exec"), checks)
  except _AssertionError as e:
    report("fail", describe(e, "<tests>"))
  except _BaseException as e:
    report("error", describe(e, "<tests>"))
  report("ok", "")

_main()
'''


def _limits(limits: Limits, timeout_s: float) -> dict[str, int]:
  cpu = int(timeout_s) + 2  # above the wall clock: a busy loop is a timeout, not a SIGXCPU
  return {"RLIMIT_AS": limits.memory_bytes, "RLIMIT_CPU": cpu, "RLIMIT_CORE": 0,
          "RLIMIT_NOFILE": limits.open_files, "RLIMIT_FSIZE": limits.file_bytes}


def _wait_exit(pid: int, timeout_s: float) -> bool:
  """Waits for ``pid`` to exit without reaping it (its pgid stays reserved); True if it did."""
  try:
    fd = os.pidfd_open(pid)
  except (AttributeError, OSError):
    fd = None
  deadline = time.monotonic() + timeout_s
  try:
    while True:
      try:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
          return True
      except ChildProcessError:
        return True
      left = deadline - time.monotonic()
      if left <= 0:
        return False
      if fd is not None:
        select.select([fd], [], [], left)
      else:
        time.sleep(min(left, 0.005))
  finally:
    if fd is not None:
      os.close(fd)


def marked_processes(token: str) -> list[int]:
  """Live processes whose environment carries ``MARKER=token`` (zombies have no environment)."""
  needle = f"{MARKER}={token}".encode()
  found = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/environ", "rb") as f:
        environ = f.read()
    except OSError:
      continue
    if needle in environ.split(b"\0"):
      found.append(int(entry))
  return found


def _sweep(token: str, rounds: int = 20) -> None:
  for _ in range(rounds):
    pids = marked_processes(token)
    if not pids:
      return
    for pid in pids:
      try:
        os.kill(pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass
    time.sleep(0.005)


def _read_head(path: str, limit: int) -> str:
  try:
    with open(path, "rb") as f:
      data = f.read(limit + 1)
  except OSError:
    return ""
  text = data[:limit].decode("utf-8", "replace")
  return text + ("...[truncated]" if len(data) > limit else "")


def _parse(raw: bytes, nonce: str) -> tuple[str, str] | None:
  for line in raw.decode("utf-8", "replace").splitlines():
    head, _, rest = line.partition(" ")
    status, _, detail = rest.partition(" ")
    if head == nonce and status in ("ok", "fail", "error"):
      return status, detail
  return None


def run_tests(program: str, tests: str, timeout_s: float = 2.0, *, limits: Limits = Limits(),
              allow_processes: bool = False, python: str | None = None) -> Result:
  """Runs ``program`` then ``tests`` (Python source; assertions) in a sandboxed subprocess.

  ``allow_processes`` lifts the audit hook's ban on process creation (for testing the outer
  containment: process-group kill and /proc sweep). ``python`` defaults to ``sys.executable``.
  """
  if timeout_s <= 0:
    raise ValueError(f"timeout_s must be positive, got {timeout_s}")
  start = time.monotonic()
  root = os.path.realpath(tempfile.mkdtemp(prefix="jaxtok_sandbox_"))
  token = secrets.token_hex(16)
  nonce = secrets.token_hex(16)
  read_fd, write_fd = os.pipe()
  out_path, err_path = os.path.join(root, ".stdout"), os.path.join(root, ".stderr")
  env = {"PATH": "/usr/bin:/bin", "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8",
         MARKER: token}
  spec = {"program": program, "tests": tests, "nonce": nonce, "fd": write_fd, "root": root,
          "limits": _limits(limits, timeout_s), "allow_processes": allow_processes}
  proc = None
  try:
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
      proc = subprocess.Popen([python or sys.executable, "-I", "-S", "-c", _RUNNER],
                              stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=root, env=env,
                              pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    write_fd = -1
    try:
      proc.stdin.write(json.dumps(spec).encode())
      proc.stdin.close()
    except BrokenPipeError:
      pass
    exited = _wait_exit(proc.pid, max(0.0, timeout_s - (time.monotonic() - start)))
  finally:
    if proc is not None:
      try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is unreaped: its pgid is still ours
      except (ProcessLookupError, PermissionError):
        pass
      proc.wait()
      _sweep(token)
    if write_fd >= 0:
      os.close(write_fd)
  try:
    os.set_blocking(read_fd, False)
    raw = os.read(read_fd, 65536)
  except BlockingIOError:
    raw = b""
  finally:
    os.close(read_fd)
  output = (_read_head(out_path, limits.max_output) + _read_head(err_path, limits.max_output))
  output = output[:limits.max_output]
  shutil.rmtree(root, ignore_errors=True)
  seconds = time.monotonic() - start
  if not exited:
    return Result(False, "timeout", f"no result within {timeout_s:g} s; process group killed",
                  output, seconds)
  parsed = _parse(raw, nonce)
  if parsed is not None:
    status, detail = parsed
    return Result(status == "ok", status, detail.replace("\\n", "\n"), output, seconds)
  if proc.returncode < 0:
    name = signal.Signals(-proc.returncode).name
    return Result(False, "killed", f"killed by {name} (a resource limit?)", output, seconds)
  return Result(False, "error", f"exited with code {proc.returncode} before reporting a result",
                output, seconds)


def run_batch(jobs: Sequence[tuple[str, str]], timeout_s: float = 2.0, *, max_workers: int = 2,
              **kwargs) -> list[Result]:
  """``run_tests`` over (program, tests) pairs, at most ``max_workers`` children at a time."""
  if max_workers < 1:
    raise ValueError(f"max_workers must be >= 1, got {max_workers}")
  with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
    futures = [pool.submit(run_tests, p, t, timeout_s, **kwargs) for p, t in jobs]
    return [f.result() for f in futures]
