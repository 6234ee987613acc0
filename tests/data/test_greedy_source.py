"""python_source_greedy: stdlib prefixes continued by the target's greedy decoding."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.data import greedy_source as gs
from jaxtok.data import python_source as ps
from jaxtok.data.pipeline import make_iterator

SIZE, TRAIN, TEST = 40, 70, 6  # 70 > one chunk of 64 rows: the padded last chunk is exercised


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("greedy"))
  out = {}
  for split in ("train", "test"):
    it = make_iterator("python_source_greedy", split, global_batch_size=8, seed=0, shuffle=False,
                       num_epochs=1, data_dir=d, seq_len=SIZE, num_train=TRAIN, num_test=TEST)
    rows = [{k: b[k][b["mask"]] for k in ("tokens", "prompt_len", "file_index")} for b in it]
    out[split] = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
  return out


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_continuation_is_the_targets_greedy_choice_at_every_generated_position(built):
  tokens = built["train"]["tokens"]
  p = gs.prompt_len(SIZE)
  assert tokens.shape == (TRAIN, SIZE) and (built["train"]["prompt_len"] == p).all()
  model, params = gs.load_target("bytes")  # the smoke teacher: 'tiny', seed 1234
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(tokens[:, :-1])))
  # A teacher-forced pass picks, at every generated slot, the token the decode loop wrote. Ties
  # within float rounding could differ: allow a top-2 gap below 1e-4 only.
  pred = logits.argmax(-1)[:, p - 1:]
  diff = pred != tokens[:, p:]
  top2 = np.sort(logits[:, p - 1:], -1)[..., -2:]
  assert (top2[..., 1] - top2[..., 0])[diff].max(initial=0.0) < 1e-4, diff.sum()
  # ... and the prompts are human text the model would not have written itself.
  assert (logits.argmax(-1)[:, :p - 1] != tokens[:, 1:p]).mean() > 0.5


def test_prompts_are_windows_spread_over_the_split(built):
  for split, n in (("train", TRAIN), ("test", TEST)):
    stream, owners = ps.token_stream("bytes", split)
    starts = gs.window_rows(len(stream) // SIZE, n) * SIZE
    p = gs.prompt_len(SIZE)
    expected = np.stack([stream[s:s + p] for s in starts])
    order = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(order(built[split]["tokens"][:, :p]), order(expected))
    assert set(built[split]["file_index"]) == set(owners[starts])
  # Evenly spread: the last example's window is near the end of the split, not the start.
  rows = gs.window_rows(1000, 10)
  assert rows.tolist() == list(range(0, 1000, 100))
  with pytest.raises(ValueError, match="need 1 <= num <= 5"):
    gs.window_rows(5, 6)
