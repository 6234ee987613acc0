"""``jaxtok.config_args.parse_arg`` on random ``key=value`` strings (hypothesis): it returns every
default key with a value of the default's type, or raises ValueError naming the argument -- never
another exception -- and well-formed values round-trip."""

from __future__ import annotations

import ml_collections
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtok.config_args import parse_arg

DEFAULTS = {"steps": 100, "lr": 0.001, "smoke": False, "name": "base", "tag": None}
RUNS = settings(max_examples=100, deadline=None, database=None)

keys = st.sampled_from([*DEFAULTS, "step", "Steps", ""])
fragments = st.one_of(st.text(max_size=12), st.sampled_from(
    ["1", "-3", "1e400", "0x10", "True", "false", "yes", "(", "[[", "'", "2.5", "1_000", "None",
     "=", " ", "()", "{}", "nan"]))
items = st.tuples(keys, st.sampled_from(["=", ""]), fragments).map(lambda t: "".join(t))
args = st.lists(items, max_size=4).map(",".join)


@RUNS
@given(arg=st.one_of(args, st.text(max_size=40)))
def test_random_arguments_parse_or_fail_with_value_error(arg):
  try:
    out = parse_arg(arg, **DEFAULTS)
  except ValueError as e:
    assert "config argument" in str(e), str(e)
    return
  assert isinstance(out, ml_collections.ConfigDict) and set(out) == set(DEFAULTS)
  for key, default in DEFAULTS.items():
    if default is not None:
      assert isinstance(out[key], type(default)), (arg, key, out[key])


safe_text = st.text(alphabet=st.characters(blacklist_characters=",=", blacklist_categories=(
    "Cs", "Zs", "Cc", "Zl", "Zp")), min_size=1, max_size=10)


@RUNS
@given(steps=st.integers(-10**6, 10**6), lr=st.floats(-1e6, 1e6, allow_nan=False),
       smoke=st.booleans(), name=safe_text, chosen=st.sets(st.sampled_from(
           ["steps", "lr", "smoke", "name"])))
def test_well_formed_values_round_trip(steps, lr, smoke, name, chosen):
  given_values = {"steps": steps, "lr": lr, "smoke": smoke, "name": name}
  text = ",".join(f"{k}={given_values[k]!r}" if k != "name" else f"name={name}"
                  for k in sorted(chosen))
  out = parse_arg(text, **DEFAULTS)
  for key in DEFAULTS:
    want = given_values[key] if key in chosen else DEFAULTS[key]
    assert out[key] == want and type(out[key]) is type(want), (text, key, out[key])


def test_a_bool_is_not_an_int():
  with pytest.raises(ValueError, match="expected int"):
    parse_arg("steps=True", **DEFAULTS)
