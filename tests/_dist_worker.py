"""One process of the multi-process trainer test (tests/test_train.py).

    python tests/_dist_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR \
        DATA_DIR TOKENIZER [MESH SHARDING_RULES]

Runs 3 training steps of LoVT's tiny config on fixed global batches over 4
devices in total (4 / NUM_PROCESSES per process) on MESH (default
`data:-1`) with SHARDING_RULES (default `.*=replicate`; `data:1,fsdp:4`
with `.*=fsdp(axis=fsdp)` shards parameters across the processes), then
process 0 writes the
parameters to OUT_DIR/params.npz. With more than one process it then also
runs `train.train_and_evaluate` for 2 steps on DATA_DIR (the real input
pipeline, checkpointing and evaluation across processes) and writes the
result to OUT_DIR/result.json.
"""

import json
import os
import sys

pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out_dir, data_dir, tokenizer = sys.argv[4], sys.argv[5], sys.argv[6]
mesh_spec, rules = (sys.argv[7:9] if len(sys.argv) > 8 else
                    ("data:-1", ".*=replicate"))
# The scheduler flag: see conftest.py (collectives starving the CPU pool).
os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count="
                           f"{4 // nproc} "
                           "--xla_cpu_enable_concurrency_optimized_scheduler="
                           "false")
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # pylint: disable=g-import-not-at-top

if nproc > 1:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=nproc, process_id=pid,
                             initialization_timeout=120)

import flax.linen as nn  # pylint: disable=g-import-not-at-top
from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from configs import lovt  # pylint: disable=g-import-not-at-top
from jointcxr import optim  # pylint: disable=g-import-not-at-top
from jointcxr import sharding  # pylint: disable=g-import-not-at-top
from jointcxr import train  # pylint: disable=g-import-not-at-top
from jointcxr.data import pipeline  # pylint: disable=g-import-not-at-top
from jointcxr.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
from jointcxr.models import factory  # pylint: disable=g-import-not-at-top

BATCH = 8


def global_batch(step: int, config, vocab: int) -> dict:
  """The same [BATCH, ...] numpy batch in every process."""
  r = np.random.default_rng(step)
  s, t, n = (config.input.image_size, config.input.max_tokens,
             config.input.max_sentences)
  lengths = r.integers(8, t, BATCH)
  text_mask = np.arange(t)[None] < lengths[:, None]
  tokens = np.where(text_mask, r.integers(5, vocab, (BATCH, t)), 0)
  sids = np.where(text_mask, np.minimum(np.arange(t)[None] // 6, n - 1), -1)
  sids[:, 0] = -1
  return {"image": r.normal(size=(BATCH, s, s, 1)).astype(np.float32),
          "tokens": tokens.astype(np.int32), "text_mask": text_mask,
          "sentence_ids": sids.astype(np.int32),
          "sentence_mask": np.arange(n)[None] <= (lengths[:, None] - 1) // 6,
          "labels": r.integers(-1, 2, (BATCH, 14)).astype(np.float32),
          "labels_present": r.random((BATCH, 14)) < 0.5,
          "study_id": np.arange(BATCH, dtype=np.int32) + 100 * step,
          "mask": np.ones(BATCH, bool)}


def main() -> None:
  config = lovt.get_config("tiny")
  config.batch_size = BATCH
  config.input.data_dir = data_dir
  config.input.tokenizer = tokenizer
  config.mesh, config.sharding_rules = mesh_spec, rules
  tok = tok_lib.load_tokenizer(tokenizer)
  mesh = sharding.make_mesh(config.mesh)
  assert mesh.devices.size == 4, mesh
  model = factory.from_config(config, tok.vocab_size)
  rng = jax.random.PRNGKey(config.seed)
  shapes = nn.meta.unbox(jax.eval_shape(
      lambda: model.init({"params": rng, "dropout": rng},
                         train.dummy_batch(config))))["params"]
  opt = optim.Optimizer(config.optim.to_dict(), shapes, config.total_steps,
                        100)
  state, shardings = train.init_state(config, model, opt, mesh, rng)
  if "fsdp" in rules:  # the parameters really are split across processes
    specs = [s.spec for s in jax.tree.leaves(shardings["params"])]
    assert sum("fsdp" in jax.tree.leaves(tuple(p)) for p in specs) >= 10
  step_fn, _ = train.make_steps(config, model, opt, mesh, shardings, tok)
  per = BATCH // nproc
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(train.mesh_rules(config,
                                                                   mesh)):
    for step in range(3):
      g = global_batch(step, config, tok.vocab_size)
      local = {k: v[pid * per:(pid + 1) * per] for k, v in g.items()}
      batch = pipeline.to_global(local, mesh, sharding.batch_axes(mesh))
      if step == 0:
        step_fn = step_fn.lower(state, batch).compile()
        train.compiled_barrier("test_compiled")
      state, metrics = step_fn(state, batch)
      losses.append(float(jax.device_get(metrics["loss"])))
  params = multihost_utils.process_allgather(state["params"], tiled=True)
  if pid == 0:
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(params)}
    np.savez(os.path.join(out_dir, "params.npz"), **flat)
    with open(os.path.join(out_dir, "losses.json"), "w") as f:
      json.dump(losses, f)
  if nproc > 1:
    config.total_steps = 2
    config.ckpt_every_steps = 1
    config.log_every_steps = 1
    config.evals.retrieval.limit = 16
    result = train.train_and_evaluate(config, os.path.join(out_dir, "run"))
    if pid == 0:
      with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump({k: v for k, v in result.items()
                   if isinstance(v, (int, float, str))}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
