"""The `distill` task on its smoke config: the loss in closed form, the teacher-layer copy (all
layers = the teacher, exactly), a training run whose KL falls, and restore_student round-trips."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.generators.causal_lm import lm_config
from jaxtok.tasks import TASKS
from jaxtok.tasks.distill import STUDENT_FILE, build, distill_loss, restore_student

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "decoding", "draft_distill.py")


def smoke_config(tmp_path, **student):
  config = load_config(f"{CONFIG}:smoke")
  config.data.data_dir = str(tmp_path / "data")
  config.student.update(student)
  return config


def test_distill_loss_closed_form():
  v = 5
  tokens = jnp.array([[1, 2, 3, 4]])
  logits = jax.random.normal(jax.random.key(0), (1, 3, v))
  loss, m = distill_loss(logits, logits, tokens)
  assert abs(float(loss)) < 1e-6 and float(m["agreement"]) == 1.0
  # Uniform student, one-hot-ish teacher: KL = log V - H(p) per token; a masked tail is ignored.
  teacher = jnp.zeros((1, 3, v)).at[..., 0].set(3.0)
  p = np.exp(np.array([3.0] + [0.0] * (v - 1)))
  p /= p.sum()
  want = float(np.log(v) + (p * np.log(p)).sum())
  loss, m = distill_loss(jnp.zeros((1, 3, v)), teacher, tokens,
                         mask=jnp.array([[True, True, True, False]]), ce_weight=0.0)
  assert float(m["kl"]) == pytest.approx(want, rel=1e-5) and float(m["count"]) == 2.0
  # Temperature: tau^2 KL at tau, and CE mixed in with its weight.
  loss2, m2 = distill_loss(jnp.zeros((1, 3, v)), teacher, tokens, temperature=2.0, ce_weight=0.5)
  assert float(loss2) == pytest.approx(4.0 * float(m2["kl"]) + 0.5 * float(m2["ce"]), rel=1e-6)
  assert float(m2["kl"]) < float(m["kl"])


def test_all_teacher_layers_reproduce_the_teacher(tmp_path):
  tokens = jax.random.randint(jax.random.key(1), (2, 33), 0, 257)
  batch = {"tokens": tokens, "mask": jnp.ones((2,), bool)}
  metrics = {}
  for layers in ((0, 1), (1, 0)):
    task = build(smoke_config(tmp_path, variant=None, init_from_teacher_layers=layers))
    state = task.init(jax.random.key(0))
    metrics[layers] = jax.device_get(task.eval_step(state, batch))
  assert metrics[(0, 1)]["kl"] < 1e-6 and metrics[(0, 1)]["agreement"] == 1.0, metrics
  assert metrics[(0, 1)]["ce"] == pytest.approx(metrics[(0, 1)]["teacher_ce"], abs=1e-5)
  assert metrics[(1, 0)]["kl"] > 1e-4, metrics  # the order of the blocks matters
  # One layer: the student's block 0 is the teacher's block 1, and embeddings are shared.
  task = build(smoke_config(tmp_path, variant=None, init_from_teacher_layers=(1,)))
  student = nn.unbox(task.init(jax.random.key(0)).params)
  fresh = build(smoke_config(tmp_path, variant="tiny"))  # a random 'tiny' student, same seed
  random_student = nn.unbox(fresh.init(jax.random.key(0)).params)
  assert set(student["transformer"]) == {"layer_0", "final_norm"}
  assert not np.allclose(student["embed"]["embedding"], random_student["embed"]["embedding"])


def test_bad_students_are_refused(tmp_path):
  with pytest.raises(ValueError, match="vocab_size 49152 differs from the teacher's 384"):
    build(smoke_config(tmp_path, variant="smollm2-draft"))
  with pytest.raises(ValueError, match=r"\[5\] are not layers of a 2-layer teacher"):
    build(smoke_config(tmp_path, variant=None, init_from_teacher_layers=(0, 5)))
  with pytest.raises(ValueError, match="not the teacher's architecture"):
    build(smoke_config(tmp_path, variant="tiny", init_from_teacher_layers=(0,)))
  with pytest.raises(ValueError, match="unknown config keys student"):
    build(smoke_config(tmp_path, layers=(0,)))


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_smoke_run_kl_falls_and_restore_student_round_trips(tmp_path):
  assert "distill" in TASKS
  config = smoke_config(tmp_path)
  config.num_steps, config.log_every = 30, 1
  workdir = str(tmp_path / "run")
  final = main.run(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  kl = [r["train/kl"] for r in rows if "train/kl" in r]
  # Step 1's metrics are those of the initial student. A random 'tiny' student against a random
  # 'tiny' teacher (seed 1234; both near uniform) starts near KL 0.027 and reaches about 0.008
  # in 30 steps (measured); 0.5x is a real margin, far from step-to-step noise.
  assert len(kl) == 30 and kl[-1] < 0.5 * kl[0], kl
  assert final["text/kl"] < 0.5 * kl[0] and 0.0 <= final["text/agreement"] <= 1.0

  arch, params = restore_student(workdir)
  assert arch == lm_config("tiny")
  assert isinstance(jax.tree.leaves(params)[0], np.ndarray)
  # The restored weights score the eval text exactly as the run's final report did.
  task = build(config)
  state = task.init(jax.random.key(0))
  again = task.evaluate(state.replace(params=jax.tree.map(jnp.asarray, params)))
  assert again["text/kl"] == pytest.approx(final["text/kl"], rel=1e-5)
  with open(os.path.join(workdir, STUDENT_FILE)) as f:
    assert json.load(f)["step"] == 30
  # Without the record, the config file is enough.
  os.remove(os.path.join(workdir, STUDENT_FILE))
  with pytest.raises(FileNotFoundError, match="pass the run's config_path"):
    restore_student(workdir)
  arch2, params2 = restore_student(workdir, f"{CONFIG}:smoke")
  assert arch2 == arch
  jax.tree.map(np.testing.assert_array_equal, params2, params)
