"""FSDP trained, not only planned, on 8 fake devices: steps with sharded
parameters equal replicated steps, the trainer evaluates under an fsdp mesh,
a checkpoint saved under FSDP restores onto other meshes, and the clu event
files of that run read back (scalars, hparams, images)."""

import glob
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow as tf

from configs import convirt
from jointcxr import checkpointing
from jointcxr import loading
from jointcxr import optim
from jointcxr import sharding
from jointcxr import train
from jointcxr.data import pipeline
from jointcxr.data import tokenizer as tok_lib
from jointcxr.evaluators import common
from jointcxr.models import factory

FSDP_MESH = "data:2,fsdp:4"
FSDP_RULES = ".*=fsdp(axis=fsdp)"


def _config(data_dir, tok_path, **overrides):
  c = convirt.get_config("tiny")
  c.input.data_dir = str(data_dir)
  c.input.tokenizer = str(tok_path)
  c.update_from_flattened_dict(overrides)
  return c


def _batch(step: int, c, vocab: int) -> dict:
  """A fixed global batch (the same on every mesh)."""
  r = np.random.default_rng(step)
  b, s, t, n = (c.batch_size, c.input.image_size, c.input.max_tokens,
                c.input.max_sentences)
  lengths = r.integers(8, t, b)
  text_mask = np.arange(t)[None] < lengths[:, None]
  sids = np.where(text_mask, np.minimum(np.arange(t)[None] // 6, n - 1), -1)
  sids[:, 0] = -1
  return {"image": r.normal(size=(b, s, s, 1)).astype(np.float32),
          "tokens": np.where(text_mask, r.integers(5, vocab, (b, t)),
                             0).astype(np.int32),
          "text_mask": text_mask, "sentence_ids": sids.astype(np.int32),
          "sentence_mask": np.arange(n)[None] <= (lengths[:, None] - 1) // 6,
          "labels": r.integers(-1, 2, (b, 14)).astype(np.float32),
          "labels_present": r.random((b, 14)) < 0.5,
          "study_id": np.arange(b, dtype=np.int32), "mask": np.ones(b, bool)}


def _init(c, tok):
  mesh = sharding.make_mesh(c.mesh)
  model = factory.from_config(c, tok.vocab_size)
  rng = jax.random.PRNGKey(c.seed)
  shapes = nn.meta.unbox(jax.eval_shape(
      lambda: model.init({"params": rng, "dropout": rng},
                         train.dummy_batch(c))))["params"]
  opt = optim.Optimizer(c.optim.to_dict(), shapes, c.total_steps, 100)
  state, shardings = train.init_state(c, model, opt, mesh, rng)
  return mesh, model, opt, state, shardings


def _train_steps(c, tok, steps: int = 3):
  mesh, model, opt, state, shardings = _init(c, tok)
  step_fn, _ = train.make_steps(c, model, opt, mesh, shardings, tok)
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(train.mesh_rules(c, mesh)):
    for s in range(steps):
      batch = pipeline.to_global(_batch(s, c, tok.vocab_size), mesh,
                                 sharding.batch_axes(mesh))
      state, metrics = step_fn(state, batch)
      losses.append(float(jax.device_get(metrics["loss"])))
  return jax.device_get(state), shardings, losses


def _fsdp_leaves(shardings) -> list[str]:
  return [jax.tree_util.keystr(kp) for kp, s in
          jax.tree_util.tree_leaves_with_path(shardings)
          if "fsdp" in jax.tree.leaves(tuple(s.spec))]


def test_fsdp_steps_equal_replicated_steps(converted_mimic, tokenizer_path):
  tok = tok_lib.load_tokenizer(str(tokenizer_path))
  rep, _, rep_losses = _train_steps(_config(
      converted_mimic, tokenizer_path, mesh="data:-1",
      sharding_rules=".*=replicate"), tok)
  fsdp, shardings, fsdp_losses = _train_steps(_config(
      converted_mimic, tokenizer_path, mesh=FSDP_MESH,
      sharding_rules=FSDP_RULES), tok)
  # Really sharded: most of the parameters (and their Adam moments) are
  # split 4 ways; the rest are under 4096 elements.
  sharded = _fsdp_leaves(shardings["params"])
  assert len(sharded) >= 10, sharded
  assert len(_fsdp_leaves(shardings["opt_state"])) >= 2 * len(sharded)
  size = lambda t: sum(np.prod(x.shape) for x in jax.tree.leaves(t))
  big = sum(np.prod(x.shape) for kp, x in
            jax.tree_util.tree_leaves_with_path(fsdp["params"])
            if jax.tree_util.keystr(kp) in sharded)
  assert big > 0.8 * size(fsdp["params"])
  np.testing.assert_allclose(fsdp_losses, rep_losses, rtol=1e-5)
  assert rep_losses[0] != rep_losses[-1]
  # Float reduction order differs between the layouts; Adam turns the noise
  # of a zero true gradient (a bias before a BatchNorm) into lr-sized steps
  # of either sign, so such leaves may differ by up to 2 x 3 steps x lr.
  lr = float(_config("", "").optim.lr)
  flat_r = dict(jax.tree_util.tree_leaves_with_path(rep["params"]))
  tight = 0
  for kp, x in jax.tree_util.tree_leaves_with_path(fsdp["params"]):
    np.testing.assert_allclose(x, flat_r[kp], rtol=0, atol=6.01 * lr,
                               err_msg=jax.tree_util.keystr(kp))
    tight += np.allclose(x, flat_r[kp], rtol=1e-4, atol=1e-6)
  assert tight >= 0.8 * len(flat_r), (tight, len(flat_r))


@pytest.fixture(scope="module")
def fsdp_run(converted_mimic, tokenizer_path, tmp_path_factory):
  """The trainer under an fsdp mesh: 2 steps, a checkpoint, an evaluation."""
  w = tmp_path_factory.mktemp("fsdp_run")
  c = _config(converted_mimic, tokenizer_path, mesh=FSDP_MESH,
              sharding_rules=FSDP_RULES, total_steps=2, log_every_steps=1,
              ckpt_every_steps=2, **{"evals.retrieval.limit": 8,
                                     "evals.retrieval.batch_size": 8})
  result = train.train_and_evaluate(c, str(w))
  return w, c, result


def test_trainer_evaluates_under_an_fsdp_mesh(fsdp_run):
  _, _, result = fsdp_run
  assert result["step"] == 2
  # The in-training evaluation ran (it used to be skipped with "Resource
  # axis: fsdp ... is not found in mesh").
  assert result["val/retrieval/pool_size"] == 4  # the validate split
  assert 0.0 <= result["val/retrieval/i2t/R@1"] <= 1.0


@pytest.mark.parametrize("mesh", ["data:2,fsdp:4", "data:2,model:4",
                                  "data:-1"])
def test_embed_split_under_every_training_mesh(fsdp_run, converted_mimic,
                                               mesh):
  w, c, _ = fsdp_run
  loaded = loading.load_workdir(str(w))
  kw = dict(batch_size=8, limit=8)
  ref = common.embed_split(loaded, str(converted_mimic), "validate", **kw)
  m = sharding.make_mesh(mesh)
  with jax.set_mesh(m), nn.logical_axis_rules(train.mesh_rules(c, m)):
    emb = common.embed_split(loaded, str(converted_mimic), "validate", **kw)
  np.testing.assert_allclose(emb.img, ref.img, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(emb.txt, ref.txt, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mesh,rules", [
    ("data:4,fsdp:2", FSDP_RULES),      # another FSDP width: resharded
    ("data:-1", ".*=replicate"),        # no FSDP at all
])
def test_fsdp_checkpoint_restores_onto_another_mesh(fsdp_run, tokenizer_path,
                                                    mesh, rules):
  w, c, _ = fsdp_run
  saved = loading.load_workdir(str(w)).variables
  other = c.copy_and_resolve_references()
  other.mesh, other.sharding_rules = mesh, rules
  _, _, _, state, shardings = _init(other, tok_lib.load_tokenizer(
      str(tokenizer_path)))
  ckpt = checkpointing.Checkpointer(os.path.join(str(w), "checkpoints"),
                                    async_save=False)
  step, restored, data = ckpt.restore(checkpointing.abstract_like(state))
  ckpt.close()
  assert step == 2 and data["input"]["position"] == 2 * c.batch_size
  want = dict(jax.tree_util.tree_leaves_with_path(shardings["params"]))
  for kp, x in jax.tree_util.tree_leaves_with_path(restored["params"]):
    assert x.sharding == want[kp], jax.tree_util.keystr(kp)
  assert (len(_fsdp_leaves(shardings["params"])) > 0) == ("fsdp" in mesh)
  for a, b in zip(jax.tree.leaves(jax.device_get(restored["params"])),
                  jax.tree.leaves(saved["params"])):
    np.testing.assert_array_equal(a, np.asarray(b))
  assert int(restored["step"]) == 2


# ------------------------------------------------------- clu event files ---
def _events(directory: str) -> list:
  out = []
  for f in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    for e in tf.compat.v1.train.summary_iterator(f):
      for v in e.summary.value:
        out.append((e.step, v))
  return out


def test_event_files_hold_the_scalars_and_hparams(fsdp_run):
  w, _, result = fsdp_run
  events = _events(str(w))
  scalars = {(step, v.tag): float(tf.make_ndarray(v.tensor))
             for step, v in events
             if v.metadata.plugin_data.plugin_name == "scalars"}
  with open(os.path.join(str(w), "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    for key in ("loss", "grad_norm", "examples_per_sec", "skipped_steps"):
      assert scalars[(r["step"], key)] == pytest.approx(r[key], rel=1e-6)
  assert scalars[(2, "val/retrieval/i2t/R@1")] == pytest.approx(
      result["val/retrieval/i2t/R@1"], rel=1e-6)
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  hp = [plugin_data_pb2.HParamsPluginData.FromString(
      v.metadata.plugin_data.content) for _, v in events
        if v.metadata.plugin_data.plugin_name == "hparams"]
  start = [h.session_start_info for h in hp if h.HasField(
      "session_start_info")]
  assert len(start) == 1
  got = start[0].hparams
  assert got["method"].string_value == "convirt"
  assert got["total_steps"].number_value == 2
  assert got["mesh"].string_value == FSDP_MESH
  assert got["sharding_rules"].string_value == FSDP_RULES


def test_event_files_hold_images(tmp_path):
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jointcxr import plots  # pylint: disable=g-import-not-at-top
  img = np.random.default_rng(0).integers(0, 256, (12, 20, 3), np.uint8)
  png = tmp_path / "x.png"
  Image.fromarray(img).save(png)
  writer = metric_writers.create_default_writer(str(tmp_path / "tb"),
                                                asynchronous=True)
  plots.to_tensorboard(writer, 7, "pictures/x", str(png))
  writer.close()
  [(step, v)] = [(s, v) for s, v in _events(str(tmp_path / "tb"))
                 if v.metadata.plugin_data.plugin_name == "images"]
  assert step == 7 and v.tag == "pictures/x"
  width, height, encoded = tf.make_ndarray(v.tensor)
  assert (int(width), int(height)) == (20, 12)
  np.testing.assert_array_equal(tf.io.decode_png(encoded).numpy(), img)
