"""The DATES comparison table from an audio_tokens run, with a content-free reference row.

  python -m jaxtok.main --config=configs/audio/codec.py --workdir=/tmp/audio_full \
      --config.data.data_dir=/tmp/audio_data
  python scripts/studies/audio_tokens.py --workdir=/tmp/audio_full --data_dir=/tmp/audio_data

Reads ``<workdir>/report/audio_tokens.json`` (written by the task's report) and prints one
markdown row per tokenizer: kbps, held-out mel distance and SI-SNR (codec only: the semantic
tokens have no decoder), speaker and language probe accuracy on held-out clips. The reference row
scores every held-out clip against another held-out clip (the next one), i.e. what a decoder that
ignored its input entirely would get, so the codec's numbers have a floor to be read against.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from configs.audio import codec as codec_config  # noqa: E402
from jaxtok.data import speech  # noqa: E402, F401  (registers espeak_speech)
from jaxtok.data.pipeline import make_iterator  # noqa: E402
from jaxtok.tokenizers.audio import mel_distance, si_snr  # noqa: E402


def reference_row(data_dir: str, config_arg: str) -> str:
  d = codec_config.get_config(config_arg).data
  it = make_iterator(d.name, "test", global_batch_size=48, seed=0, shuffle=False, num_epochs=1,
                     data_dir=data_dir, image_size=d.image_size, num_train=d.num_train,
                     num_test=d.num_test)
  x = np.concatenate([b["audio"][b["mask"]] for b in it]).astype(np.float32) / 32768.0
  other = jnp.asarray(np.roll(x, 1, axis=0))
  md = float(np.mean(mel_distance(other, jnp.asarray(x))))
  snr = float(np.mean(si_snr(other, jnp.asarray(x))))
  return f"| another held-out clip (reference) | – | {md:.3f} | {snr:.1f} | – | – |"


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--data_dir", default=None, help="the run's data dir (for the reference row)")
  ap.add_argument("--config_arg", default="", help="the codec config's argument used in the run")
  args = ap.parse_args()
  with open(os.path.join(args.workdir, "report", "audio_tokens.json")) as f:
    rep = json.load(f)
  names = sorted({k.split("/")[0] for k in rep if "/" in k},
                 key=lambda n: (n == "semantic", int(n[7:]) if n.startswith("codec_q") else 0))
  print(f"step {rep['step']}, {rep['num_train_clips']} train / {rep['num_test_clips']} "
        "held-out clips\n")
  print("| tokens | kbps | mel distance ↓ | SI-SNR dB ↑ | speaker acc ↑ | language acc ↑ |")
  print("|---|---|---|---|---|---|")
  for n in names:
    label = (f"RVQ codec, {n[7:]} quantiser(s)" if n.startswith("codec_q")
             else "semantic (k-means, 256)")
    md = f"{rep[f'{n}/mel_distance']:.3f}" if f"{n}/mel_distance" in rep else "n/a"
    snr = f"{rep[f'{n}/si_snr']:.1f}" if f"{n}/si_snr" in rep else "n/a"
    print(f"| {label} | {rep[f'{n}/kbps']:g} | {md} | {snr} | "
          f"{rep[f'{n}/speaker_accuracy']:.3f} | {rep[f'{n}/language_accuracy']:.3f} |")
  if args.data_dir:
    print(reference_row(args.data_dir, args.config_arg))


if __name__ == "__main__":
  main()
