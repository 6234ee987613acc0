"""get_config argument parsing and its errors."""

import pytest

from jaxtok.config_args import parse_arg


def test_defaults_and_overrides():
  c = parse_arg("size=64,smoke,lr=0.5,name=abc", size=32, smoke=False, lr=1e-3, name="x")
  assert c.size == 64 and c.smoke is True and c.lr == 0.5 and c.name == "abc"
  assert parse_arg(None, size=32).size == 32
  assert parse_arg("", flag=False).flag is False


def test_int_accepted_for_float_and_bool_words():
  c = parse_arg("lr=1,flag=false", lr=0.1, flag=True)
  assert c.lr == 1.0 and isinstance(c.lr, float) and c.flag is False


@pytest.mark.parametrize("arg,match", [
    ("sizes=3", "unknown config argument 'sizes'; valid arguments: size, smoke"),
    ("size=abc", "expected int"),
    ("size=1.5", "expected int, got float"),
    ("size", "needs a value"),
    ("smoke=maybe", "expected a boolean"),
])
def test_errors(arg, match):
  with pytest.raises(ValueError, match=match):
    parse_arg(arg, size=32, smoke=False)


def test_with_defaults_fills_and_rejects_unknown_keys():
  import ml_collections

  from jaxtok.config_args import with_defaults

  cfg = ml_collections.ConfigDict({"gan": {"weight": 0.5}})
  out = with_defaults(cfg, "gan", {"weight": 0.1, "start": 100})
  assert out.weight == 0.5 and out.start == 100
  assert with_defaults(cfg, "ema", {"decay": 0.0}).decay == 0.0  # an absent block: defaults
  with pytest.raises(ValueError, match=r"unknown config keys gan.\['wieght'\]; valid:"):
    with_defaults(ml_collections.ConfigDict({"gan": {"wieght": 1.0}}), "gan", {"weight": 0.1})
