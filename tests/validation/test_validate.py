"""jaxtok.train.validate: the generic checks and the line between a user error and a bug."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from jaxtok.pretrained.errors import CorruptFileError
from jaxtok.registry import Registry, UnknownNameError
from jaxtok.train import validate
from jaxtok.train.checkpoint import CheckpointError
from jaxtok.train.sharding import make_mesh
from jaxtok.train.validate import UserError


def config(**kw):
  base = {"task": "lm", "seed": 0, "num_steps": 10, "batch_size": 8}
  return ml_collections.ConfigDict({**base, **kw})


@pytest.mark.parametrize("mesh,processes,divisor", [
    ({"data": 8, "fsdp": 1, "tensor": 1}, 1, 8),
    ({"data": 2, "fsdp": 2, "tensor": 2}, 1, 4),  # tensor does not split the batch
    ({"data": 1, "fsdp": 1, "tensor": 8}, 1, 1),
    ({"data": 4, "fsdp": 1, "tensor": 1}, 2, 4),  # each process feeds 2 of the 4 shards
    ({"data": 2, "fsdp": 1, "tensor": 2}, 4, 4),  # lcm(2 shards, 4 processes)
])
def test_batch_divisor_is_the_batch_axes_and_the_processes(mesh, processes, divisor):
  assert validate.batch_divisor(mesh, processes) == divisor


def test_batch_size_that_does_not_split_names_key_value_and_valid_sizes():
  mesh = {"data": 8, "fsdp": 1, "tensor": 1}
  validate.check_batch_sizes(config(batch_size=16, eval_batch_size=64), mesh)
  with pytest.raises(UserError) as err:
    validate.check_batch_sizes(config(batch_size=12), mesh)
  assert str(err.value) == (
      "config.batch_size=12 does not split over the mesh: its rows are divided over the batch "
      "axes data=8 x fsdp=1, so it must be a multiple of 8 (e.g. 8 or 16); or change "
      "--config.mesh")
  with pytest.raises(UserError, match=r"config.eval_batch_size=3 .* multiple of 4 \(e.g. 4\)"):
    validate.check_batch_sizes(config(batch_size=4, eval_batch_size=3), {"data": 2, "fsdp": 2})
  with pytest.raises(UserError, match=r"data=2 x fsdp=1 and 4 processes, so it must be a "
                     r"multiple of 4 \(e.g. 8 or 12\)"):
    validate.check_batch_sizes(config(batch_size=10), {"data": 2}, process_count=4)


@pytest.mark.parametrize("overrides,train,message", [
    ({"num_steps": -5}, True, "config.num_steps=-5: must be >= 1 to train (--mode=train); use "
     "--mode=eval or --mode=sample to only evaluate or sample"),
    ({"num_steps": 0}, True, "config.num_steps=0: must be >= 1 to train"),
    ({"num_steps": -5}, False, "config.num_steps=-5: must be >= 0"),
    ({"num_steps": 2.5}, False, "config.num_steps=2.5: expected an integer >= 0"),
    ({"batch_size": 0}, False, "config.batch_size=0: must be >= 1"),
    ({"eval_batch_size": -8}, False, "config.eval_batch_size=-8: must be >= 1"),
    ({"log_every": 0}, True, "config.log_every=0: must be >= 1"),
    ({"eval_every": -1}, True, "config.eval_every=-1: must be >= 0 (0 turns it off)"),
    ({"checkpoint_every": True}, True, "config.checkpoint_every=True: expected an integer"),
])
def test_steps_and_intervals(overrides, train, message):
  with pytest.raises(UserError) as err:
    validate.check_steps(config(**overrides), train=train)
  assert str(err.value).startswith(message)


def test_valid_steps_pass_and_zero_steps_is_fine_outside_training():
  validate.check_steps(config(num_steps=0, eval_every=0, report_every=0, log_every=1), train=False)
  validate.check_steps(config(num_steps=3, checkpoint_every=0, eval_batch_size=None), train=True)


def test_context_check_counts_prompt_new_tokens_and_extra():
  validate.check_context("config.prompt", 500, 12, 512, "m")  # exactly full: fine
  with pytest.raises(UserError) as err:
    validate.check_context("config.prompt", 60097, 8, 512, "variant 'tiny'")
  assert str(err.value) == (
      "config.prompt is 60097 tokens; with max_new_tokens 8 that is 60105 > 512, the context "
      "(max_len) of variant 'tiny': shorten it to at most 504 tokens or lower max_new_tokens")
  with pytest.raises(UserError, match=r"with max_new_tokens 10 \+ the tree 5 that is 516 > 512.*"
                     r"at most 497 tokens"):
    validate.check_context("p", 501, 10, 512, "m", extra=5, extra_what="the tree")
  with pytest.raises(UserError, match=r"lower max_new_tokens$"):
    validate.check_context("p", 1, 600, 512, "m")


def test_choice_and_exists(tmp_path):
  assert validate.check_choice("dtype", "float32", ("bfloat16", "float32")) == "float32"
  with pytest.raises(UserError, match=r"^config.dtype='float33': valid values: 'bfloat16', "
                     r"'float32'$"):
    validate.check_choice("dtype", "float33", ("bfloat16", "float32"))
  with pytest.raises(UserError, match=r"config.init_from='.*nowhere': no such run directory"):
    validate.check_config(config(init_from=str(tmp_path / "nowhere")), "train", mesh_shape=None)


def _raise_from_numpy():
  np.zeros(3).reshape(2, 2)  # numpy's own ValueError: a bug, not a check


def _raise_a_check():
  validate.check_int("x", -1, 0)


def test_user_errors_are_sorted_from_bugs():
  def caught(fn):
    try:
      fn()
    except Exception as e:  # noqa: BLE001
      return e
    raise AssertionError("did not raise")

  assert not validate.is_user_error(caught(_raise_from_numpy))
  assert validate.is_user_error(caught(_raise_a_check))
  # A ValueError raised by a `raise` statement inside jaxtok (make_mesh's check) is a user error.
  e = caught(lambda: make_mesh({"data": 3}))
  assert type(e) is ValueError and validate.is_user_error(e)
  # A ValueError raised in this test file (outside jaxtok) is not.
  assert not validate.is_user_error(caught(lambda: (_ for _ in ()).throw(ValueError("x"))))
  assert not validate.is_user_error(RuntimeError("no traceback"))
  for e in (CorruptFileError("/f.gguf", "truncated"), CheckpointError("none"),
            FileNotFoundError("x"), caught(lambda: Registry("thing").get("nope"))):
    assert validate.is_user_error(e), e
  assert isinstance(caught(lambda: Registry("thing").get("nope")), UnknownNameError)
  assert validate.is_user_error(KeyError("k"), extra=(KeyError,))


def test_one_line():
  assert validate.one_line(ValueError("a\n  b\tc")) == "a b c"
  assert validate.one_line(KeyError("unknown 'x'")) == "unknown 'x'"  # no repr quotes
  assert validate.one_line(ValueError()) == "ValueError"
