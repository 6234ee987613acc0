"""Per-program XLA compiler options a config may ask for (``ynnpack_dots_only``).

XLA:CPU in jaxlib 0.10 hands convolutions to YNNPACK, whose forward convolution is fast and whose
weight gradient is slow (benchmarks/xla_cpu_repro.py: a 3x3 conv on [32, 32, 32, 32] takes about
twice as long forward + backward as on XLA's own path). Keeping YNNPACK for dots only runs the
quickstart's conv tokenizer step 20-37% faster, and TiTok's transformer step slower
(docs/tokenizers.md), so a config asks for it. It is a compiler option of the train and eval
programs rather than an XLA_FLAGS entry, so it also holds when ``jaxtok.main.run`` is called in a
process whose backend has already started (notebooks, studies), where XLA_FLAGS are not read
again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jaxlib

YNN_DOTS_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
# The jaxlib series the option was measured on: XLA rejects a compile with an unknown option.
YNN_JAXLIB = "0.10."


def step_options(wanted: bool, *, environ: Mapping[str, str] | None = None,
                 jaxlib_version: str | None = None, backend: str | None = None) -> dict | None:
  """The compiler options of a config's train / eval programs, or None for XLA's defaults.

  ``wanted`` is the config's ``ynnpack_dots_only``. None also on another backend or jaxlib series,
  when the user's XLA_FLAGS already choose a YNNPACK setting, or with JAXTOK_XLA_DEFAULTS=0.
  """
  environ = os.environ if environ is None else environ
  jaxlib_version = jaxlib.__version__ if jaxlib_version is None else jaxlib_version
  backend = jax.default_backend() if backend is None else backend
  if (not wanted or backend != "cpu" or environ.get("JAXTOK_XLA_DEFAULTS", "1") == "0"
      or "ynn_fusion_type" in environ.get("XLA_FLAGS", "")
      or not jaxlib_version.startswith(YNN_JAXLIB)):
    return None
  return dict(YNN_DOTS_ONLY)
