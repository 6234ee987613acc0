"""Bad inputs through ``python -m jaxtok.main``'s entry: each gives one ``jaxtok: error:`` line
naming the problem, exit status 2, nothing written to the workdir; a bug keeps its traceback.

All rows run in one child process with 8 fake CPU devices (a driver calls ``main.entry`` per row,
catching SystemExit), so the table costs one JAX start-up, not one per row.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from jaxtok.pretrained.gguf_lm import check_gguf
from tests.subproc import run_python
from tests.validation import files

DRIVER = r"""
import contextlib, io, json, os, sys
import numpy as np
from absl import flags
from jaxtok import main

def bug(config):  # an internal error: numpy's own ValueError, not a check
  return np.zeros(3).reshape(2, 2)

build = main.tasks.build
results = []
for case in json.load(open(os.environ["CASES"])):
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # ml_collections adds one flag per override of the last config
  flags.FLAGS.unparse_flags()
  sys.argv = ["jaxtok", *case["argv"]]  # ml_collections reads the overrides from sys.argv
  os.environ.pop("JAXTOK_TRACEBACK", None)
  os.environ.update(case.get("env", {}))
  main.tasks.build = bug if case.get("bug") else build
  err, code, raised = io.StringIO(), None, None
  with contextlib.redirect_stderr(err):
    try:
      main.entry(sys.argv)
      code = 0
    except SystemExit as e:
      code = e.code
    except Exception as e:
      raised = type(e).__name__
  results.append({"code": code, "raised": raised, "stderr": err.getvalue()})
print("RESULTS " + json.dumps(results))
"""

LM, QS = "--config=configs/lm/smollm2.py", "--config=configs/quickstart.py:smoke"


def rows(tmp):
  """(id, argv, expected message: the whole line after 'jaxtok: error: ', or a regex searched in
  it)."""
  gguf_path, st_dir = tmp / "cut.gguf", tmp / "hf"
  files.write_gguf(gguf_path)
  needed = check_gguf(str(gguf_path))["bytes_needed"]
  files.truncate(gguf_path, needed - 100)
  st = files.write_hf_dir(st_dir)
  files.truncate(st, os.path.getsize(st) - 7)
  junk = tmp / "junk.gguf"
  junk.write_bytes(b"hello, not weights")
  return [
      # The four rows of issue #18.
      ("prompt_60k", [f"{LM}:smoke", "--mode=sample", "--config.prompt=" + "x" * 60000],
       "config.prompt is 60097 tokens; with max_new_tokens 8 that is 60105 > 512, the context "
       "(max_len) of variant 'tiny': shorten it to at most 504 tokens or lower max_new_tokens"),
      ("batch_12_on_8_devices", [QS, "--config.batch_size=12"],
       "config.batch_size=12 does not split over the mesh: its rows are divided over the batch "
       "axes data=8 x fsdp=1, so it must be a multiple of 8 (e.g. 8 or 16); or change "
       "--config.mesh"),
      ("truncated_gguf", [LM, "--mode=sample", f"--config.model.pretrained={gguf_path}"],
       f"{gguf_path}: truncated: the data of its 3 tensors needs {needed} bytes but the file has "
       f"{needed - 100} (100 missing); the download or copy was cut short"),
      ("num_steps_negative", [f"{LM}:smoke,finetune", "--config.num_steps=-5"],
       "config.num_steps=-5: must be >= 1 to train (--mode=train); use --mode=eval or "
       "--mode=sample to only evaluate or sample"),
      # More steps, intervals, batch sizes, mesh.
      ("num_steps_negative_sample", [f"{LM}:smoke", "--mode=sample", "--config.num_steps=-5"],
       "config.num_steps=-5: must be >= 0"),
      ("log_every_0", [QS, "--config.log_every=0"], "config.log_every=0: must be >= 1"),
      ("checkpoint_every_negative", [QS, "--config.checkpoint_every=-10"],
       "config.checkpoint_every=-10: must be >= 0 (0 turns it off)"),
      ("eval_batch_size_6", [QS, "--config.eval_batch_size=6"],
       re.compile(re.escape("config.eval_batch_size=6 does not split over the mesh") +
                  ".*multiple of 8")),
      ("mesh_3_of_8", [QS, "--config.mesh.data=3"],
       "mesh {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices, but 8 are available"),
      # Files.
      ("truncated_safetensors", [LM, "--mode=sample", f"--config.model.pretrained={st_dir}"],
       re.compile(re.escape(f"{st}: truncated: tensor '") + r"[\w.]+' needs \d+ bytes but the "
                  r"file has \d+ \(\d+ missing\); the download or copy was cut short$")),
      ("not_gguf", [LM, "--mode=sample", f"--config.model.pretrained={junk}"],
       f"{junk}: not a GGUF file: it starts with b'hell', a GGUF file with b'GGUF'"),
      ("missing_gguf", [LM, "--mode=sample", f"--config.model.pretrained={tmp}/gone.gguf"],
       f"no pretrained LM at '{tmp}/gone.gguf'"),
      ("missing_eval_text", [f"{LM}:smoke", "--mode=eval",
                             f"--config.eval_text_file={tmp}/gone.txt"],
       f"config.eval_text_file='{tmp}/gone.txt': no such file"),
      ("missing_init_from", [QS, f"--config.init_from={tmp}/no_run"],
       f"config.init_from='{tmp}/no_run': no such run directory or checkpoint"),
      # Values the tasks check.
      ("dtype", [f"{LM}:smoke", "--mode=sample", "--config.dtype=float33"],
       "config.dtype='float33': valid values: 'bfloat16', 'float32', 'int8'"),
      ("top_p", [f"{LM}:smoke", "--mode=sample", "--config.top_p=0.0"],
       "config.temperature=0.0, top_k=0, top_p=0.0: need temperature >= 0 (0 = greedy), top_k >= "
       "0 (0 = off), 0 < top_p <= 1"),
      ("speculative_prompt", ["--config=configs/decoding/ngram.py:smoke", "--mode=sample",
                              "--config.prompt=" + "y" * 600],
       "config.prompt: the prompt has 600 tokens, longer than the target's max_len 512 minus "
       "max_new_tokens 24 minus the tree size 5 (= 483)"),
      # Flags and config files.
      ("config_argument", [f"{LM}:smok"],
       "--config=configs/lm/smollm2.py:smok: unknown config arguments ['smok']; valid: smoke, "
       "bf16, finetune"),
      ("config_key", [f"{LM}:smoke", "--config.num_stepz=3"],
       "--config.num_stepz: no such config key 'num_stepz'; did you mean \"num_steps\" instead of "
       "\"num_stepz\"?"),
      ("config_type", [f"{LM}:smoke", "--config.num_steps=abc"],
       "--config.num_steps=abc: invalid literal for int() with base 10: 'abc'"),
      ("mode", [f"{LM}:smoke", "--mode=trian"],
       "--mode=trian: value should be one of <train|eval|sample>"),
      ("config_file", ["--config=configs/nope.py"],
       re.compile(re.escape("config 'configs/nope.py' (from 'configs/nope.py') is neither a "
                            "file nor a config shipped with jaxtok") + ".*quickstart.py")),
  ]


def _line(message: str) -> str:
  return f"jaxtok: error: {message}"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("bad_inputs")
  table = rows(tmp)
  cases = [{"argv": [*argv, f"--workdir={tmp}/work_{name}"]} for name, argv, _ in table]
  # The traceback on request (the env var, --verbosity), and a bug that keeps its traceback.
  cases += [{"argv": [f"{LM}:smoke,finetune", "--config.num_steps=-5", f"--workdir={tmp}/w_tb"],
             "env": {"JAXTOK_TRACEBACK": "1"}},
            {"argv": [f"{LM}:smoke", "--config.num_steps=abc", "--verbosity=1",
                      f"--workdir={tmp}/w_v"]},
            {"argv": [f"{LM}:smoke", "--mode=sample", f"--workdir={tmp}/w_bug"], "bug": True}]
  (tmp / "cases.json").write_text(json.dumps(cases))
  p = run_python(DRIVER, devices=8, env={"CASES": str(tmp / "cases.json")}, timeout=600)
  results = json.loads(p.stdout.split("RESULTS ", 1)[1])
  return tmp, table, results


@pytest.mark.parametrize("index", range(22))
def test_bad_input_gives_one_line_and_status_2(table, index):
  tmp, rows_, results = table
  assert len(rows_) == 22
  name, _, message = rows_[index]
  r = results[index]
  lines = [ln for ln in r["stderr"].splitlines() if ln.startswith("jaxtok: error:")]
  assert r["code"] == 2, (name, r)
  assert len(lines) == 1 and "Traceback" not in r["stderr"], (name, r["stderr"][-3000:])
  if isinstance(message, re.Pattern):
    assert message.search(lines[0]), (name, lines[0])
  else:
    assert lines[0] == _line(message), (name, lines[0])
  assert not os.path.exists(tmp / f"work_{name}"), f"{name} wrote its workdir"


def test_traceback_on_request_and_bugs_keep_theirs(table):
  _, rows_, results = table
  env_tb, verbose, bug = results[len(rows_):]
  assert env_tb["code"] == 2
  assert "Traceback (most recent call last)" in env_tb["stderr"]
  assert "jaxtok.train.validate.UserError: config.num_steps=-5" in env_tb["stderr"]
  assert env_tb["stderr"].rstrip().splitlines()[-1].startswith("jaxtok: error: config.num_steps")
  assert verbose["code"] == 2 and "Traceback (most recent call last)" in verbose["stderr"]
  # A ValueError from inside numpy is a bug: no one-line error, the exception escapes the entry.
  assert bug["raised"] == "ValueError" and bug["code"] is None
  assert "jaxtok: error:" not in bug["stderr"]
