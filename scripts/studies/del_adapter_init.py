r"""Which block should an exit adapter start as? Held-out agreement and KL after a short fit.

  python scripts/studies/del_adapter_init.py --layer=8 --init=next
  python scripts/studies/del_adapter_init.py --layer=8 --init=last

Fits one exit adapter (``jaxtok/decoding/exit_adapter.py``) on SmolLM2-135M's exit ``--layer``
with ``--windows`` x 128 train-split standard-library tokens for ``--steps`` Adam steps (batch 8,
cosine decay from ``--lr``), starting as a copy of block L (``next``) or of the last block
(``last``), and prints the top-1 agreement and KL with the target on 8 x 128 test-split tokens
before and after. Results: docs/decoding_del.md ("Exit adapters").
"""

import argparse
import time

import jax
import jax.numpy as jnp

from jaxtok.decoding import exit_adapter as xa
from jaxtok.generators.causal_lm import CausalLM
from jaxtok.pretrained import load_pretrained_lm
from jaxtok.tasks.speculative_del import source_windows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--layer", type=int, default=8)
  ap.add_argument("--steps", type=int, default=150)
  ap.add_argument("--windows", type=int, default=96)
  ap.add_argument("--init", default="next", choices=xa.INIT_FROM)
  ap.add_argument("--lr", type=float, default=1e-3)
  a = ap.parse_args()
  lm = load_pretrained_lm("smollm2-135m")
  model = CausalLM.from_config(lm.config)
  params = jax.tree.map(jnp.asarray, lm.params)
  train = source_windows(lm.tokenizer.encode, "train", a.windows, 128)
  test = source_windows(lm.tokenizer.encode, "test", 8, 128)
  start = time.time()
  res = xa.fit_exit_adapters(model, params, (a.layer,), train, test, steps=a.steps, batch=8,
                             init_from=a.init, learning_rate=a.lr, log_every=25)
  print({k: v for k, v in res.items() if not k.startswith("adapter")},
        f"secs {time.time() - start:.0f}", flush=True)


if __name__ == "__main__":
  main()
