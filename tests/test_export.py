"""Export/import: torchvision / HF BERT layouts against real key fixtures,
Flax round trips, and clear errors on mismatched weights."""

import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from safetensors.numpy import save_file

from jointcxr import loading
from jointcxr import torch_layout
from jointcxr.models import bert
from jointcxr.models import resnet

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _fixture(name):
  out = {}
  for line in (FIXTURES / name).read_text().splitlines():
    if line.startswith("#") or not line.strip():
      continue
    key, shape = line.split()
    out[key] = () if shape == "scalar" else tuple(int(s) for s in
                                                  shape.split("x"))
  return out


def _zeros(tree):
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)


def test_resnet50_matches_torchvision_layout():
  m = resnet.ResNet(depth=50)
  v = _zeros(nn.meta.unbox(jax.eval_shape(
      lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1))))))
  sd = torch_layout.resnet_to_torchvision(v["params"], v["batch_stats"])
  real = _fixture("torchvision_resnet50_state_dict.txt")
  expected = {k: s for k, s in real.items() if not k.startswith("fc.")}
  assert {k: tuple(a.shape) for k, a in sd.items()} == expected
  back = torch_layout.torchvision_to_resnet(sd)
  assert jax.tree.map(np.shape, back) == jax.tree.map(
      np.shape, {"params": v["params"], "batch_stats": v["batch_stats"]})


def test_bert_matches_hf_layout_and_round_trips():
  b = bert.Bert(vocab_size=100, hidden=32, layers=2, heads=2, mlp_dim=64,
                max_len=16)
  t = jnp.ones((1, 8), jnp.int32)
  v = nn.meta.unbox(b.init(jax.random.PRNGKey(0), t, t > 0))
  hf = torch_layout.bert_to_hf(jax.device_get(v["params"]))
  real = _fixture("hf_bert_tiny_state_dict.txt")
  expected = {k: s for k, s in real.items() if not k.startswith("pooler")}
  assert {k: tuple(a.shape) for k, a in hf.items()} == expected
  back = torch_layout.hf_to_bert({"bert." + k: a for k, a in hf.items()})
  for a, c in zip(jax.tree.leaves(back), jax.tree.leaves(v["params"])):
    np.testing.assert_array_equal(a, c)


def test_rgb_stem_fold_is_exact():
  k = np.random.default_rng(0).normal(size=(7, 7, 1, 4)).astype(np.float32)
  sd = torch_layout.resnet_to_torchvision(
      {"conv1": {"kernel": k}, "bn1": {"scale": np.ones(4), "bias":
                                       np.zeros(4)}},
      {"bn1": {"mean": np.zeros(4), "var": np.ones(4)}})
  assert sd["conv1.weight"].shape == (4, 3, 7, 7)
  back = torch_layout.torchvision_to_resnet(sd)["params"]["conv1"]["kernel"]
  np.testing.assert_allclose(back, k, rtol=1e-6)


def _config(model_init):
  return mlc.ConfigDict({"model_init": model_init,
                         "model": {"image": {"in_channels": 1}}})


def test_import_errors_are_clear(tmp_path):
  m = resnet.ResNet(depth=18, width=8)
  v = nn.meta.unbox(m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1))))
  params = {"params": {"img": v["params"], "txt": {}},
            "batch_stats": {"img": v["batch_stats"]}}
  with pytest.raises(loading.ImportError_, match="pickled PyTorch files"):
    loading.load_pretrained(_config("image=/x/resnet50.pth"), params)
  with pytest.raises(loading.ImportError_, match="does not exist"):
    loading.load_pretrained(_config(f"image={tmp_path}/none.safetensors"),
                           params)
  m50 = resnet.ResNet(depth=50)
  v50 = _zeros(nn.meta.unbox(jax.eval_shape(
      lambda: m50.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1))))))
  f = tmp_path / "r50.safetensors"
  save_file(torch_layout.resnet_to_torchvision(v50["params"],
                                               v50["batch_stats"]), str(f))
  with pytest.raises(loading.ImportError_, match="does not fit the model"):
    loading.load_pretrained(_config(f"image={f}"), params)
  # The right architecture imports (fc ignored, stem folded to 1 channel).
  f18 = tmp_path / "r18.safetensors"
  sd = torch_layout.resnet_to_torchvision(jax.device_get(v["params"]),
                                          jax.device_get(v["batch_stats"]))
  sd["fc.weight"] = np.zeros((10, 64), np.float32)
  save_file(sd, str(f18))
  out = loading.load_pretrained(_config(f"image={f18}"), params)
  np.testing.assert_allclose(out["params"]["img"]["conv1"]["kernel"],
                             v["params"]["conv1"]["kernel"], rtol=1e-6)
  assert jax.tree.structure(out["batch_stats"]) == jax.tree.structure(
      {"img": v["batch_stats"]})


def test_model_init_brings_parameters_and_running_statistics_to_the_trainer(
    converted_mimic, tokenizer_path, tmp_path):
  from configs import convirt  # pylint: disable=g-import-not-at-top
  from jointcxr import train  # pylint: disable=g-import-not-at-top
  from jointcxr.evaluators import common  # pylint: disable=g-import-not-at-top
  from jointcxr.models import factory  # pylint: disable=g-import-not-at-top
  c = convirt.get_config("tiny")
  c.input.data_dir = str(converted_mimic)
  c.input.tokenizer = str(tokenizer_path)
  c.total_steps = 0  # initialise, import, save: the "ImageNet init" baseline
  c.evals.retrieval.limit = 0
  # A "pretrained" ResNet in torchvision's layout: other weights than the
  # trainer's seed gives, and running statistics far from 0 / 1.
  model = factory.from_config(c, 256)
  src = nn.meta.unbox(model.init(
      {"params": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(1)},
      train.dummy_batch(c)))
  r = np.random.default_rng(0)
  src_params = jax.device_get(src["params"]["img"])
  src_stats = jax.tree.map(
      lambda x: (r.uniform(0.5, 2.0, x.shape) if x.ndim else x).astype(
          np.float32), jax.device_get(src["batch_stats"]["img"]))
  src_stats = jax.tree_util.tree_map_with_path(
      lambda kp, x: x - 1.0 if kp[-1].key == "mean" else x, src_stats)
  f = tmp_path / "resnet_tv.safetensors"
  save_file(torch_layout.resnet_to_torchvision(src_params, src_stats), str(f))
  c.model_init = f"image={f}"
  train.train_and_evaluate(c, str(tmp_path / "w"))

  loaded = loading.load_workdir(str(tmp_path / "w"))
  assert loaded.step == 0
  got_params = loaded.variables["params"]["img"]
  got_stats = loaded.variables["batch_stats"]["img"]
  # The stem kernel went through the RGB split and back (k / 3 x 3).
  for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(src_params)):
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(got_stats), jax.tree.leaves(src_stats)):
    np.testing.assert_array_equal(np.asarray(a), b)
  # The tower of the train state computes what the exported tower does.
  image = r.normal(size=(2, 64, 64, 1)).astype(np.float32)
  enc = lambda v: np.asarray(loaded.model.apply(
      v, image, train=False, method=type(loaded.model).encode_image)[
          "img_tower"]["global"])
  exported = {"params": dict(loaded.variables["params"], img=src_params),
              "batch_stats": dict(loaded.variables["batch_stats"],
                                  img=src_stats)}
  fresh = {"params": loaded.variables["params"],
           "batch_stats": dict(loaded.variables["batch_stats"],
                               img=jax.device_get(src["batch_stats"]["img"]))}
  np.testing.assert_allclose(enc(loaded.variables), enc(exported),
                             rtol=1e-5, atol=1e-5)
  # ... and not what it would with the initial 0 / 1 statistics (the bug).
  assert not np.allclose(enc(loaded.variables), enc(fresh), atol=1e-3)
