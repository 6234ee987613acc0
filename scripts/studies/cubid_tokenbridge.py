"""CubiD and TokenBridge at CPU scale: digits 32 px -> 8x8x16 continuous latents -> 4-bit codes.

  python scripts/studies/cubid_tokenbridge.py --workdir=/tmp/jaxtok/cubid
  python scripts/studies/cubid_tokenbridge.py --smoke --workdir=/tmp/jaxtok/cubid_smoke

One run, in order (every number of docs/generators_cubid_tokenbridge.md comes from its printout
and <workdir>/results.json):

1. a tiny conv autoencoder (jaxtok.nn.conv, no quantiser) on the 1500 training digits, latents
   8x8x16; post-training Gaussian-quantile quantisation (jaxtok.quantizers.GaussianQuantizer) at
   3, 4 and 6 bits per dimension, fitted on the training latents; test PSNR continuous vs each
   (TokenBridge's claim: post-training quantisation stays close to the continuous AE);
2. a linear probe (digit class, logistic regression on the flattened latents, test accuracy):
   continuous vs 4-bit dequantised latents (CubiD's "tokens keep the features' meaning");
3. the three heads of jaxtok.generators.dimwise on the 4-bit codes, the same backbone and
   training budget: ``factorised`` (16 independent softmaxes, whole positions masked),
   ``channel_ar`` (TokenBridge) and ``cubid`` (per-entry masking); class-conditional samples
   (``--per_class`` per digit) decoded by the AE, scored by the digits classifier of
   jaxtok.tasks.generator_report (class accuracy, and FD on its features: ``fd_classifier``, a
   stand-in for FID, against the test digits) and wall-clock per sample after compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxtok.data.digits import split_indices, upsample_digit  # noqa: E402
from jaxtok.eval.frechet import frechet_distance_features  # noqa: E402
from jaxtok.eval.image_metrics import psnr  # noqa: E402
from jaxtok.eval.pictures import save_png, tile  # noqa: E402
from jaxtok.generators.dimwise import DimwiseModel, dimwise_loss, sample  # noqa: E402
from jaxtok.nn.conv import ConvDecoder, ConvEncoder  # noqa: E402
from jaxtok.quantizers import GaussianQuantizer  # noqa: E402
from jaxtok.tasks.generator_report import train_classifier  # noqa: E402

MASKING = {"factorised": (0.7, 0.25), "channel_ar": (0.7, 0.25), "cubid": (0.5, 0.1)}


def digits(split: str, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits
  data = load_digits()
  idx = split_indices(split)
  imgs = np.stack([upsample_digit(data.images[i], size) for i in idx])
  return imgs, data.target[idx].astype(np.int32)


def to_float(imgs):
  return jnp.asarray(imgs, jnp.float32) / 127.5 - 1.0


def train_loop(loss_fn, params, steps: int, lr: float, data, batch: int, seed: int):
  """AdamW with warmup + cosine; ``data``: arrays indexed on their first axis."""
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, min(100, steps // 10), steps),
                   weight_decay=0.02)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, key, *arrays):
    k_idx, k_loss = jax.random.split(key)
    idx = jax.random.randint(k_idx, (batch,), 0, arrays[0].shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, k_loss, *(a[idx] for a in arrays))
    grads, _ = optax.clip_by_global_norm(3.0).update(grads, None)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  key = jax.random.PRNGKey(seed)
  for _ in range(steps):
    key, k = jax.random.split(key)
    params, opt, loss = step(params, opt, k, *data)
  return params, float(loss)


def autoencoder(train_x, steps: int, seed: int):
  enc = ConvEncoder(16, (1, 2, 2), 1, latent_dim=16)
  dec = ConvDecoder(16, (1, 2, 2), 1, out_channels=3)
  x0 = to_float(train_x[:2])
  params = {"enc": enc.init(jax.random.PRNGKey(seed), x0)["params"]}
  params["dec"] = dec.init(jax.random.PRNGKey(seed + 1),
                           enc.apply({"params": params["enc"]}, x0))["params"]

  def loss_fn(p, key, x):
    z = enc.apply({"params": p["enc"]}, to_float(x))
    # a little noise on the latents keeps the decoder tolerant of the quantiser's error
    z = z + 0.05 * jax.random.normal(key, z.shape)
    return jnp.mean(jnp.square(dec.apply({"params": p["dec"]}, z) - to_float(x))) + (
        1e-4 * jnp.mean(jnp.square(z)))

  params, loss = train_loop(loss_fn, params, steps, 2e-3, (jnp.asarray(train_x),), 32, seed)
  encode = jax.jit(lambda x: enc.apply({"params": params["enc"]}, to_float(x)))
  decode = jax.jit(lambda z: dec.apply({"params": params["dec"]}, z))
  return encode, decode, loss


def linear_probe(train_f, train_y, test_f, test_y) -> float:
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  scaler = StandardScaler().fit(train_f)
  clf = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(train_f), train_y)
  return float(clf.score(scaler.transform(test_f), test_y))


def generator(head, codes, labels, centers, steps: int, args):
  b, n, c = codes.shape
  model = DimwiseModel(num_positions=n, channels=c, levels=len(centers), num_classes=10,
                       head=head, num_layers=4, dim=128, num_heads=4, mlp_dim=512)
  zeros = jnp.zeros((2, n, c))
  params = model.init({"params": jax.random.PRNGKey(args.seed), "dropout":
                       jax.random.PRNGKey(0)}, zeros, zeros > 0, jnp.zeros((2,), jnp.int32),
                      jnp.zeros((2, n, c), jnp.int32))["params"]
  r_min, std = MASKING[head]

  def loss_fn(p, key, codes, labels):
    k_loss, k_drop = jax.random.split(key)

    v = {"params": p}

    def features_fn(values, masked):
      return model.apply(v, values, masked, labels, True, rngs={"dropout": k_drop},
                         method="features")

    head_fn = ((lambda z, c: model.apply(v, z, c, method="ar_logits")) if head == "channel_ar"
               else (lambda z, c: model.apply(v, z, method="entry_logits")))
    return dimwise_loss(k_loss, features_fn, head_fn, centers, codes, head, r_min=r_min,
                        std=std, head_positions=args.head_positions if head == "channel_ar"
                        else None)[0]

  t0 = time.perf_counter()
  params, loss = train_loop(loss_fn, params, steps, 1e-3, (codes, labels), args.batch,
                            args.seed)
  return model, params, loss, time.perf_counter() - t0


def sampler(model, params, head, centers, labels, n, c, num_steps, temperature):
  v = {"params": params}

  def features_fn(values, masked):
    return model.apply(v, values, masked, labels, method="features")

  entry_fn = lambda z: model.apply(v, z, method="entry_logits")
  ar_fn = lambda z, codes: model.apply(v, z, codes, method="ar_logits")
  return jax.jit(lambda key: sample(key, head, features_fn, entry_fn, ar_fn, centers,
                                    labels.shape[0], n, c, num_steps=num_steps,
                                    temperature=temperature)[0])


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--ae_steps", type=int, default=1000)
  p.add_argument("--gen_steps", type=int, default=1000)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--head_positions", type=int, default=16)
  p.add_argument("--per_class", type=int, default=20)
  p.add_argument("--heads", default="factorised,channel_ar,cubid")
  p.add_argument("--steps_list", default="16,64")
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  if args.smoke:
    args.ae_steps, args.gen_steps, args.per_class, args.steps_list = 20, 5, 2, "4"
  os.makedirs(args.workdir, exist_ok=True)
  res = {"args": vars(args)}
  train_x, train_y = digits("train")
  test_x, test_y = digits("test")

  encode, decode, ae_loss = autoencoder(train_x, args.ae_steps, args.seed)
  z_train, z_test = np.asarray(encode(train_x)), np.asarray(encode(test_x))
  n, c = z_train.shape[1] * z_train.shape[2], z_train.shape[3]
  rec = lambda z: decode(jnp.asarray(z, jnp.float32))
  res["psnr"] = {"continuous": float(jnp.mean(psnr(rec(z_test), to_float(test_x))))}
  quant = {}
  for bits in (3, 4, 6):
    q = GaussianQuantizer.fit(jnp.asarray(z_train), levels=2 ** bits)
    quant[bits] = q
    res["psnr"][f"{bits}bit"] = float(jnp.mean(psnr(rec(q.decode(q.encode(z_test))),
                                                    to_float(test_x))))
  q4 = quant[4]
  deq = lambda z: np.asarray(q4.decode(q4.encode(jnp.asarray(z))))
  flat = lambda z: np.asarray(z).reshape(len(z), -1)
  res["probe"] = {
      "continuous": linear_probe(flat(z_train), train_y, flat(z_test), test_y),
      "4bit": linear_probe(flat(deq(z_train)), train_y, flat(deq(z_test)), test_y),
      "pixels": linear_probe(flat(train_x[..., 0]), train_y, flat(test_x[..., 0]), test_y)}
  print(json.dumps({"ae_loss": ae_loss, **res}), flush=True)

  clf = train_classifier(train_x, train_y, num_classes=10, steps=40 if args.smoke else 400,
                         batch_size=64, lr=2e-3, grey=True)
  test_feats = clf(to_float(test_x))[1]
  train_feats = clf(to_float(train_x[:len(test_x)]))[1]
  res["fd_train_vs_test"] = frechet_distance_features(train_feats, test_feats)
  rec4 = rec(q4.decode(q4.encode(jnp.asarray(z_test))))
  logits, feats = clf(rec4)
  res["recon_4bit"] = {"fd_classifier": frechet_distance_features(feats, test_feats),
                       "class_accuracy": float(np.mean(np.argmax(logits, -1) == test_y))}

  codes = q4.encode(jnp.asarray(z_train)).reshape(-1, n, c)
  centers = q4.centers
  labels = jnp.asarray(np.repeat(np.arange(10), args.per_class), jnp.int32)
  res["gen"] = {}
  for head in args.heads.split(","):
    model, params, loss, secs = generator(head, codes, jnp.asarray(train_y), centers,
                                          args.gen_steps, args)
    print(f"{head}: loss {loss:.3f}, train {secs:.0f}s", flush=True)
    for t in (int(s) for s in args.steps_list.split(",")):
      if head != "cubid" and t > n:
        continue
      fn = sampler(model, params, head, centers, labels, n, c, t, args.temperature)
      key = jax.random.PRNGKey(args.seed + 7)
      jax.block_until_ready(fn(key))
      t0 = time.perf_counter()
      out = jax.block_until_ready(fn(key))
      ms = 1e3 * (time.perf_counter() - t0) / len(labels)
      imgs = np.asarray(rec(q4.decode(out).reshape(-1, 8, 8, c)))
      logits, feats = clf(jnp.asarray(imgs))
      name = f"{head}_T{t}"
      res["gen"][name] = {
          "fd_classifier": frechet_distance_features(feats, test_feats),
          "class_accuracy": float(np.mean(np.argmax(logits, -1) == np.asarray(labels))),
          "ms_per_sample": ms, "nfe": t, "train_loss": loss, "train_seconds": secs}
      print(name, json.dumps(res["gen"][name]), flush=True)
      rows = imgs.reshape(10, args.per_class, *imgs.shape[1:])[:, :8]
      save_png(tile(list(rows)), os.path.join(args.workdir, f"samples_{name}.png"))
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(res, f, indent=1)
  print(json.dumps(res, indent=1))


if __name__ == "__main__":
  main()
