"""The `r2r` task on its smoke config (a random 4-block byte-level LLM, SLM = its first 3 blocks):
threshold 0 reproduces the large model's greedy decode and threshold 1 the small model's, exactly,
through the task's evaluation and sample; a trained router routes more divergent tokens than
random routing at the same budget; the checkpoint carries the router into --mode=eval."""

import os

import jax
import pytest

import jaxtok.tasks.r2r  # noqa: F401  registers TASKS['r2r']
from jaxtok import main
from jaxtok.config_args import load_config
from jaxtok.tasks import TASKS
from jaxtok.tasks.r2r import build

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "decoding", "r2r.py")


def smoke_config(tmp_path, **changes):
  config = load_config(f"{CONFIG}:smoke")
  config.data.data_dir = str(tmp_path / "data")
  config.update(changes)
  return config


@pytest.mark.slow  # about 40 s of CPU: two builds (exit-norm fit), held-out pass, 9 decodes
def test_thresholds_0_and_1_are_the_two_models_greedy_decodes(tmp_path):
  task = build(smoke_config(tmp_path))
  state = task.init(jax.random.key(0))  # an untrained router: the extremes do not depend on it
  arms = {r["arm"]: r for r in task.evaluate(state, str(tmp_path))["arms"]}
  large, small = arms["large alone (plain greedy)"], arms["small alone (plain greedy)"]
  every, none = arms["route all (router, threshold 0)"], arms["route none (router, threshold 1)"]
  # Agreement is position-wise equality with plain greedy decoding of each model: 1.0 = identical.
  assert every["routed"] == 1.0 and every["agreement"] == 1.0
  assert every["ppl_large"] == pytest.approx(large["ppl_large"], rel=1e-6)
  assert none["routed"] == 0.0 and none["llm_calls"] == 0 and none["small_agreement"] == 1.0
  assert none["ppl_large"] == pytest.approx(small["ppl_large"], rel=1e-6)
  assert small["agreement"] < 0.5  # the two models do differ, so the extremes are distinct
  router = arms["R2R router p>0.5"]
  assert 0.0 < router["routed"] < 1.0 and router["agreement"] < 1.0  # not lossless
  assert os.path.exists(tmp_path / "r2r_table.md")
  # --mode=sample's decoder at threshold 0 is the large model's greedy decode too.
  out = build(smoke_config(tmp_path, threshold=0.0)).sample(state)
  assert out["routed"] == 1.0 and out["agreement"] == 1.0


@pytest.mark.slow  # about 40 s of CPU: 200 router steps, eval restores the checkpoint
def test_trained_router_beats_random_routing_and_resumes_from_its_checkpoint(tmp_path):
  assert "r2r" in TASKS
  config = smoke_config(tmp_path, thresholds=(0.5,))
  workdir = str(tmp_path / "run")
  untrained = build(config).report(build(config).init(jax.random.key(0)), workdir, 0)
  final = main.run(config, workdir)
  rate = final["heldout/divergent"]
  assert 0.2 < rate < 0.9, rate  # a toy with both classes, divergence partly predictable
  # Routing the divergent rate's share of held-out tokens: random routing catches that share of
  # the divergent tokens in expectation; the trained router catches more (measured 0.71 vs 0.61
  # after 200 steps, AUC 0.67; untrained AUC near 0.5).
  assert final["heldout/recall_router"] > final["heldout/recall_random"] + 0.05, final
  assert final["heldout/auc_router"] > max(0.6, untrained["heldout/auc_router"] + 0.05), (
      final, untrained)
  again = main.run(config, workdir, "eval")  # restores the router from the run's checkpoint
  assert again["heldout/auc_router"] == pytest.approx(final["heldout/auc_router"], abs=1e-6)
  assert again["heldout/recall_router"] == pytest.approx(final["heldout/recall_router"],
                                                         abs=1e-6)


@pytest.mark.parametrize("changes,match", [
    ({"small": {"exit_layer": 4}}, "small.exit_layer must be in 1..3"),
    ({"thresholds": (1.0,)}, "thresholds must lie in"),
    ({"eval_prompts": "poems"}, "eval_prompts must be one of"),
    ({"router": {"depth": 3}}, r"unknown config keys router\.\['depth'\]"),
])
def test_bad_options_are_refused(tmp_path, changes, match):
  config = smoke_config(tmp_path)
  for key, value in changes.items():
    if isinstance(value, dict):
      config[key].update(value)
    else:
      config[key] = value
  with pytest.raises(ValueError, match=match):
    build(config)
