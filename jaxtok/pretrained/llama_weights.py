"""Hugging Face Llama tensor names <-> :class:`~jaxtok.generators.causal_lm.CausalLM` parameters.

Every loader (GGUF, safetensors) first produces a flat ``{hf_name: np.ndarray}`` dict in the
Hugging Face layout (linear weights ``[out, in]``, RoPE in the "rotate half" layout), then
:func:`params_from_hf_tensors` checks names and shapes and builds the parameter tree. Numpy only.
"""

from __future__ import annotations

import numpy as np

from jaxtok.generators.causal_lm import LMConfig

_LAYER = "model.layers.{i}."


def _expected_shapes(config: LMConfig) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> shape ``[out, in]`` for a Llama model of ``config``."""
  m, f, d = config.dim, config.mlp_dim, config.resolved_head_dim
  h, k = config.num_heads, config.num_kv_heads
  shapes = {"model.embed_tokens.weight": (config.vocab_size, m), "model.norm.weight": (m,)}
  if not config.tie_embeddings:
    shapes["lm_head.weight"] = (config.vocab_size, m)
  for i in range(config.num_layers):
    p = _LAYER.format(i=i)
    shapes.update({
        p + "input_layernorm.weight": (m,),
        p + "post_attention_layernorm.weight": (m,),
        p + "self_attn.q_proj.weight": (h * d, m),
        p + "self_attn.k_proj.weight": (k * d, m),
        p + "self_attn.v_proj.weight": (k * d, m),
        p + "self_attn.o_proj.weight": (m, h * d),
        p + "mlp.gate_proj.weight": (f, m),
        p + "mlp.up_proj.weight": (f, m),
        p + "mlp.down_proj.weight": (m, f),
    })
  return shapes


def check_hf_tensors(tensors: dict[str, np.ndarray], config: LMConfig, source: str = "") -> None:
  """Raises ValueError listing missing, unexpected and mis-shaped tensors."""
  expected = _expected_shapes(config)
  extra = set(tensors) - set(expected)
  if config.tie_embeddings and "lm_head.weight" in extra:
    # Some exports store the tied head; accept it only when it is the embedding.
    if np.array_equal(tensors["lm_head.weight"], tensors.get("model.embed_tokens.weight")):
      extra.discard("lm_head.weight")
  missing = sorted(set(expected) - set(tensors))
  wrong = sorted(f"{n}: expected {expected[n]}, got {tuple(tensors[n].shape)}"
                 for n in expected if n in tensors and tuple(tensors[n].shape) != expected[n])
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} tensors: {', '.join(missing[:8])}"
                    + (" ..." if len(missing) > 8 else ""))
  if extra:
    problems.append(f"unexpected {len(extra)} tensors: {', '.join(sorted(extra)[:8])}"
                    + (" ..." if len(extra) > 8 else ""))
  if wrong:
    problems.append("mis-shaped tensors: " + "; ".join(wrong[:8]))
  if problems:
    where = f" in {source}" if source else ""
    raise ValueError(f"checkpoint{where} does not match {config}: " + " | ".join(problems))


def params_from_hf_tensors(tensors: dict[str, np.ndarray], config: LMConfig,
                           source: str = "") -> dict:
  """Builds the ``CausalLM`` parameter tree (float32 numpy) from HF-layout tensors."""
  check_hf_tensors(tensors, config, source)
  m, d = config.dim, config.resolved_head_dim
  h, k = config.num_heads, config.num_kv_heads
  t = lambda name: np.asarray(tensors[name], np.float32)
  layers = {}
  for i in range(config.num_layers):
    p = _LAYER.format(i=i)
    layers[f"layer_{i}"] = {
        "attn_norm": {"scale": t(p + "input_layernorm.weight")},
        "mlp_norm": {"scale": t(p + "post_attention_layernorm.weight")},
        "attn": {
            "query": {"kernel": t(p + "self_attn.q_proj.weight").T.reshape(m, h, d)},
            "key": {"kernel": t(p + "self_attn.k_proj.weight").T.reshape(m, k, d)},
            "value": {"kernel": t(p + "self_attn.v_proj.weight").T.reshape(m, k, d)},
            "out": {"kernel": t(p + "self_attn.o_proj.weight").T.reshape(h, d, m)},
        },
        "mlp": {
            "gate": {"kernel": t(p + "mlp.gate_proj.weight").T},
            "up": {"kernel": t(p + "mlp.up_proj.weight").T},
            "down": {"kernel": t(p + "mlp.down_proj.weight").T},
        },
    }
  layers["final_norm"] = {"scale": t("model.norm.weight")}
  params = {"embed": {"embedding": t("model.embed_tokens.weight")}, "transformer": layers}
  if not config.tie_embeddings:
    params["lm_head"] = {"kernel": t("lm_head.weight").T}
  return params


def hf_tensors_from_params(params: dict, config: LMConfig) -> dict[str, np.ndarray]:
  """The inverse of :func:`params_from_hf_tensors` (for exporting and for tests)."""
  m = config.dim
  out = {"model.embed_tokens.weight": np.asarray(params["embed"]["embedding"]),
         "model.norm.weight": np.asarray(params["transformer"]["final_norm"]["scale"])}
  if not config.tie_embeddings:
    out["lm_head.weight"] = np.asarray(params["lm_head"]["kernel"]).T
  for i in range(config.num_layers):
    layer, p = params["transformer"][f"layer_{i}"], _LAYER.format(i=i)
    a, f = layer["attn"], layer["mlp"]
    out.update({
        p + "input_layernorm.weight": np.asarray(layer["attn_norm"]["scale"]),
        p + "post_attention_layernorm.weight": np.asarray(layer["mlp_norm"]["scale"]),
        p + "self_attn.q_proj.weight": np.asarray(a["query"]["kernel"]).reshape(m, -1).T,
        p + "self_attn.k_proj.weight": np.asarray(a["key"]["kernel"]).reshape(m, -1).T,
        p + "self_attn.v_proj.weight": np.asarray(a["value"]["kernel"]).reshape(m, -1).T,
        p + "self_attn.o_proj.weight": np.asarray(a["out"]["kernel"]).reshape(-1, m).T,
        p + "mlp.gate_proj.weight": np.asarray(f["gate"]["kernel"]).T,
        p + "mlp.up_proj.weight": np.asarray(f["up"]["kernel"]).T,
        p + "mlp.down_proj.weight": np.asarray(f["down"]["kernel"]).T,
    })
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}
