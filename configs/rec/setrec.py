r"""SETRec (order-agnostic set identifiers) vs ordered RQ semantic IDs on synthetic interactions.

  python -m jaxtok.main --config=configs/rec/setrec.py --workdir=/tmp/setrec
  python -m jaxtok.main --config=configs/rec/setrec.py:ids=rq --workdir=/tmp/setrec_rq
  python -m jaxtok.main --config=configs/rec/setrec.py:smoke --workdir=/tmp/setrec_smoke

Arguments (comma-separated): ``ids=set|rq`` (the identifier; both get the same backbone, steps
and batch), ``smoke`` (a 100-item world, a few steps, bag-of-words text: seconds),
``text=minilm|bow`` (item text features), ``steps=N``, ``catalog=N`` (catalog size of the
synthetic world), ``seed``.
The data are synthetic (jaxtok.data.interactions); the report is <workdir>/report/setrec.md.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, ids="set", text="", steps=0, catalog=0, seed=0)
  c = ml_collections.ConfigDict()
  c.task = "setrec"
  c.ids = a.ids
  c.seed = a.seed
  c.num_steps = a.steps or (4 if a.smoke else 600)
  c.batch_size = 16 if a.smoke else 32
  c.eval_batch_size = 32 if a.smoke else 128
  c.log_every = 2 if a.smoke else 100
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.keep_checkpoints = 1
  c.async_checkpoint = False
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.data = ml_collections.ConfigDict()
  c.data.name = "interactions"
  c.data.image_size = a.catalog or (100 if a.smoke else 400)  # the catalog size
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.num_train = 200 if a.smoke else 8000
  c.data.num_test = 40 if a.smoke else 800
  c.features = ml_collections.ConfigDict({
      "text": a.text or ("bow" if a.smoke else "minilm"), "cf_dim": 16 if a.smoke else 32})
  c.model = ml_collections.ConfigDict({
      "dim": 32 if a.smoke else 64, "num_layers": 1 if a.smoke else 2,
      "num_heads": 2 if a.smoke else 4, "mlp_dim": 64 if a.smoke else 256, "dropout": 0.0,
      "n_sem": 2 if a.smoke else 4, "hidden": (64,) if a.smoke else (256, 128)})
  c.rq = ml_collections.ConfigDict({
      "num_levels": 2 if a.smoke else 3, "num_codes": 8 if a.smoke else 16, "steps": 10})
  c.loss = ml_collections.ConfigDict({"alpha": 0.7})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 2 if a.smoke else 100, "b1": 0.9, "b2": 0.99,
      "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.1})
  c.eval = ml_collections.ConfigDict({
      "ks": (5, 10), "beam": 10 if a.smoke else 20, "num_users": 40 if a.smoke else 800,
      "beta": 0.5, "betas": (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)})
  return c
