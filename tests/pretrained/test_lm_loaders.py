"""GGUF and safetensors loaders: round trips of a tiny random Llama written inside the test."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.causal_lm import CausalLM, LMConfig
from jaxtok.pretrained import chatml, load_gguf_lm
from jaxtok.pretrained.gguf_lm import permute_qk, unpermute_qk
from jaxtok.pretrained.hf_checkpoint import load_hf_lm, read_safetensors
from jaxtok.pretrained.llama_weights import hf_tensors_from_params
from jaxtok.pretrained.lms import load_pretrained_lm

gguf = pytest.importorskip("gguf", reason="the GGUF tests need the `gguf` package (extra [lm])")

CONFIG = LMConfig(vocab_size=300, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                  rope_base=5000.0, norm_eps=1e-5, tie_embeddings=True, max_len=128)


def random_params(config, seed=0):
  model = CausalLM.from_config(config)
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  # Norm scales are all ones at init; randomise them so a swapped norm cannot go unnoticed.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.1 * jax.random.normal(jax.random.key(len(jax.tree_util.keystr(p))),
                                               x.shape) if "scale" in jax.tree_util.keystr(p)
      else x, params)
  return jax.tree.map(np.asarray, params)


_HF_TO_GGUF = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def llama_cpp_permute(weights, n_head, n_head_kv=None):
  """``LlamaModel.permute`` of llama.cpp's convert_hf_to_gguf.py (torch -> numpy), written here
  rather than imported, so the writer below does not share jaxtok's :func:`permute_qk`."""
  if n_head_kv is not None and n_head != n_head_kv:
    n_head = n_head_kv
  return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
          .swapaxes(1, 2).reshape(weights.shape))


def write_llama_gguf(path, config, params, *, quantize_embedding=False, tokenizer=None):
  """Writes a GGUF the way llama.cpp's convert_hf_to_gguf.py does for LlamaForCausalLM."""
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(config.num_layers)
  w.add_context_length(config.max_len)
  w.add_embedding_length(config.dim)
  w.add_feed_forward_length(config.mlp_dim)
  w.add_head_count(config.num_heads)
  w.add_head_count_kv(config.num_kv_heads)
  w.add_rope_freq_base(config.rope_base)
  w.add_layer_norm_rms_eps(config.norm_eps)
  if tokenizer:
    tokenizer(w)
  for name, t in hf_tensors_from_params(params, config).items():
    if name.startswith("model.layers."):
      _, _, i, rest = name.split(".", 3)
      kind = rest[:-len(".weight")]
      if kind == "self_attn.q_proj":
        t = llama_cpp_permute(t, config.num_heads, config.num_heads)
      elif kind == "self_attn.k_proj":
        t = llama_cpp_permute(t, config.num_heads, config.num_kv_heads)
      w.add_tensor(f"blk.{i}.{_HF_TO_GGUF[kind]}.weight", t)
    elif name == "model.embed_tokens.weight" and quantize_embedding:
      q8 = gguf.GGMLQuantizationType.Q8_0
      w.add_tensor("token_embd.weight", gguf.quants.quantize(t, q8), raw_dtype=q8)
    else:
      gname = {"model.embed_tokens.weight": "token_embd.weight",
               "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}[name]
      w.add_tensor(gname, t)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def llama_cpp_logits(t, config, tokens):
  """Logits [T, V] of a llama GGUF's tensors (as GGUFReader returns them) computed the way
  llama.cpp runs LLM_ARCH_LLAMA, in float64: RMSNorm x / sqrt(mean x^2 + eps) * w; its "normal"
  RoPE, which rotates adjacent channels (2i, 2i + 1) of a head by p * base^(-2i / D); query head j
  reads kv head j // (H / KV); SwiGLU; the output matrix is token_embd when output is absent."""
  n, h, kv, d = len(tokens), config.num_heads, config.num_kv_heads, config.dim // config.num_heads
  rms = lambda x, w: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + config.norm_eps) * w

  def rope(x):  # [T, heads, D]
    angle = np.arange(n)[:, None, None] * config.rope_base ** (-np.arange(0, d, 2) / d)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * angle)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out

  x = t["token_embd.weight"][tokens].astype(np.float64)
  group = np.arange(h) // (h // kv)
  for i in range(config.num_layers):
    w = lambda name, i=i: t[f"blk.{i}.{name}.weight"].astype(np.float64)
    a = rms(x, w("attn_norm"))
    q = rope((a @ w("attn_q").T).reshape(n, h, d))
    k = rope((a @ w("attn_k").T).reshape(n, kv, d))[:, group]
    v = (a @ w("attn_v").T).reshape(n, kv, d)[:, group]
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(d)
    s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    x = x + np.einsum("hts,shd->thd", p, v).reshape(n, h * d) @ w("attn_output").T
    m = rms(x, w("ffn_norm"))
    gate = m @ w("ffn_gate").T
    x = x + (gate / (1 + np.exp(-gate)) * (m @ w("ffn_up").T)) @ w("ffn_down").T
  return rms(x, t["output_norm.weight"]) @ t.get("output.weight", t["token_embd.weight"]).T


def assert_trees_equal(got, want, atol=0.0):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want),
                          strict=True):
    assert g.shape == w.shape, jax.tree_util.keystr(path)
    np.testing.assert_allclose(g, w, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_qk_permutation_inverse_and_rope_layout():
  w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads, D = 8
  np.testing.assert_array_equal(unpermute_qk(permute_qk(w, 2), 2), w)
  # llama.cpp rows per head: (0, 4), (1, 5), ... -> adjacent pairs; rotate-half pairs i, i + D/2.
  np.testing.assert_array_equal(permute_qk(w, 2)[:4, 0], w[[0, 4, 1, 5], 0])


@pytest.mark.parametrize("tied", [True, False])
def test_gguf_round_trip(tmp_path, tied):
  config = CONFIG if tied else LMConfig(**{**CONFIG.__dict__, "tie_embeddings": False})
  params = random_params(config)
  path = tmp_path / "tiny.gguf"
  write_llama_gguf(path, config, params)
  loaded_config, loaded, metadata = load_gguf_lm(str(path))
  assert loaded_config == config
  assert metadata["general.architecture"] == "llama"
  assert_trees_equal(loaded, params)
  # What the file holds, read by gguf's own reader: llama.cpp's q/k row layout, spelled out by
  # index. Head h's rows h D + 2i, h D + 2i + 1 are the Hugging Face rows h D + i, h D + D/2 + i
  # (the pair RoPE rotates); a HF row r of a projection is our kernel[:, head, d], r = head D + d.
  stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}
  d = config.dim // config.num_heads
  for i in range(config.num_layers):
    attn = params["transformer"][f"layer_{i}"]["attn"]
    for name, kernel in (("attn_q", attn["query"]["kernel"]), ("attn_k", attn["key"]["kernel"])):
      rows = stored[f"blk.{i}.{name}.weight"].reshape(kernel.shape[1], d // 2, 2, config.dim)
      np.testing.assert_array_equal(rows[:, :, 0], kernel[:, :, :d // 2].transpose(1, 2, 0))
      np.testing.assert_array_equal(rows[:, :, 1], kernel[:, :, d // 2:].transpose(1, 2, 0))
  # And the model the file describes, run as llama.cpp runs it (adjacent-pair RoPE on the stored
  # q/k), gives the logits of the loaded CausalLM: a loader that unpermuted the wrong way, or
  # mixed up heads, transposes or norms, fails here even if its writer made the same mistake.
  tokens = np.array([5, 17, 250, 3, 99, 42, 7, 128, 64, 1])
  got = jax.jit(CausalLM.from_config(config).apply)({"params": loaded}, tokens[None])[0]
  # Measured max |difference| 1.6e-7 (float32 vs float64) on logits up to 0.44.
  np.testing.assert_allclose(got, llama_cpp_logits(stored, config, tokens), atol=1e-5, rtol=0)


def test_gguf_quantized_tensor_dequantizes(tmp_path):
  params = random_params(CONFIG)
  write_llama_gguf(tmp_path / "q8.gguf", CONFIG, params, quantize_embedding=True)
  _, loaded, _ = load_gguf_lm(str(tmp_path / "q8.gguf"))
  emb, want = loaded["embed"]["embedding"], params["embed"]["embedding"]
  # Q8_0: blocks of 32 values share a float16 scale d = max|x| / 127 and int8 q = round(x / d);
  # error <= d / 2 (rounding) + 127 d 2^-11 (the float16 scale) < 0.57 d.
  bound = np.abs(want.reshape(-1, 32)).max(-1, keepdims=True) / 127 * 0.57
  assert np.all(np.abs(emb - want).reshape(-1, 32) <= bound)
  assert not np.array_equal(emb, want)  # it really was quantized


def test_safetensors_round_trip_and_errors(tmp_path):
  from safetensors.numpy import save_file

  config = LMConfig(**{**CONFIG.__dict__, "tie_embeddings": False})
  params = random_params(config, seed=1)
  tensors = hf_tensors_from_params(params, config)
  hf_config = {"model_type": "llama", "vocab_size": config.vocab_size, "hidden_size": config.dim,
               "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
               "num_key_value_heads": config.num_kv_heads, "intermediate_size": config.mlp_dim,
               "rope_theta": config.rope_base, "rms_norm_eps": config.norm_eps,
               "tie_word_embeddings": False, "max_position_embeddings": config.max_len}
  (tmp_path / "config.json").write_text(json.dumps(hf_config))
  names = sorted(tensors)  # two shards, the second in float16
  save_file({n: tensors[n] for n in names[:10]}, str(tmp_path / "model-00001.safetensors"))
  half = {n: tensors[n].astype(np.float16) for n in names[10:]}
  save_file(half, str(tmp_path / "model-00002.safetensors"))
  loaded_config, loaded = load_hf_lm(str(tmp_path))
  assert loaded_config == config
  # float16 keeps 11 significant bits: |error| <= 2^-11 |x| < 2e-3 for these |x| < 2.
  assert_trees_equal(loaded, params, atol=2e-3)
  float32_leaf = loaded["transformer"]["layer_0"]["attn"]["key"]["kernel"]  # in shard 1
  np.testing.assert_array_equal(float32_leaf, params["transformer"]["layer_0"]["attn"]["key"][
      "kernel"])
  assert read_safetensors(str(tmp_path / "model-00002.safetensors"))[names[10]].dtype == (
      np.float16)

  # Missing, unexpected and mis-shaped tensors are all named in the error.
  bad = dict(tensors)
  del bad["model.norm.weight"]
  bad["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(4, np.float32)
  bad["model.layers.1.mlp.up_proj.weight"] = np.zeros((3, 3), np.float32)
  for f in tmp_path.glob("*.safetensors"):
    f.unlink()
  save_file(bad, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError) as err:
    load_hf_lm(str(tmp_path))
  msg = str(err.value)
  assert "missing 1 tensors: model.norm.weight" in msg
  assert "rotary_emb.inv_freq" in msg
  assert "model.layers.1.mlp.up_proj.weight: expected (48, 32), got (3, 3)" in msg
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_hf_lm(str(tmp_path / "nowhere"))


def _byte_level_vocab():
  """GPT-2's printable-unicode image of the 256 bytes (bytes_to_unicode)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  cs, n = list(bs), 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return [chr(c) for c in cs]


def test_gguf_tokenizer_and_pretrained_path(tmp_path):
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  merges = ["Ġ t", "h e", "Ġt he", "1 2"]
  tokens = specials + _byte_level_vocab() + ["Ġt", "he", "Ġthe", "12"]
  types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
  config = LMConfig(**{**CONFIG.__dict__, "vocab_size": len(tokens)})

  def add_tokenizer(w):
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for message in messages %}<|im_start|>...{% endfor %}")

  path = tmp_path / "tok.gguf"
  write_llama_gguf(path, config, random_params(config), tokenizer=add_tokenizer)
  lm = load_pretrained_lm(str(path))
  tok = lm.tokenizer
  ids = tok.encode("<|im_start|> the 123<|im_end|>")
  # Specials are single ids; " the" merges fully; digits are split one by one (so "12" is not
  # used even though the merge exists), as SmolLM2's pre-tokenizer does.
  assert ids == [1, tokens.index("Ġthe"), tokens.index("Ġ"), tokens.index("1"),
                 tokens.index("2"), tokens.index("3"), 2]
  assert tok.decode(ids) == "<|im_start|> the 123<|im_end|>"
  assert tok.decode(tok.encode("héllo wörld ✓")) == "héllo wörld ✓"
  assert lm.chat and lm.stop_tokens == (0, 2) and lm.config == config
  from jaxtok.pretrained.text_tokenizer import TextTokenizer
  assert isinstance(tok, TextTokenizer) and tok.eos_id == 2


def test_chatml_matches_smollm2_template():
  # What SmolLM2's Jinja chat template (tokenizer.chat_template in its GGUF) renders.
  assert chatml("Hi!") == (
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
      "<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
  msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
          {"role": "assistant", "content": "4"}]
  assert chatml(msgs, add_generation_prompt=False) == (
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
      "<|im_start|>assistant\n4<|im_end|>\n")
  with pytest.raises(ValueError, match="role"):
    chatml([{"role": "robot", "content": "x"}])
