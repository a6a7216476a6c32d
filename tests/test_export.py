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

from jointcxr import export
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
  params = {"img": v["params"], "txt": {}}
  with pytest.raises(export.ImportError_, match="pickled PyTorch files"):
    export.load_pretrained(_config("image=/x/resnet50.pth"), params)
  with pytest.raises(export.ImportError_, match="does not exist"):
    export.load_pretrained(_config(f"image={tmp_path}/none.safetensors"),
                           params)
  m50 = resnet.ResNet(depth=50)
  v50 = _zeros(nn.meta.unbox(jax.eval_shape(
      lambda: m50.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1))))))
  f = tmp_path / "r50.safetensors"
  save_file(torch_layout.resnet_to_torchvision(v50["params"],
                                               v50["batch_stats"]), str(f))
  with pytest.raises(export.ImportError_, match="does not fit the model"):
    export.load_pretrained(_config(f"image={f}"), params)
  # The right architecture imports (fc ignored, stem folded to 1 channel).
  f18 = tmp_path / "r18.safetensors"
  sd = torch_layout.resnet_to_torchvision(jax.device_get(v["params"]),
                                          jax.device_get(v["batch_stats"]))
  sd["fc.weight"] = np.zeros((10, 64), np.float32)
  save_file(sd, str(f18))
  out = export.load_pretrained(_config(f"image={f18}"), params)
  np.testing.assert_allclose(out["img"]["conv1"]["kernel"],
                             v["params"]["conv1"]["kernel"], rtol=1e-6)
