"""Towers, heads and the two-tower model: shapes, counts, numerics, sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jointcxr.models import bert
from jointcxr.models import common
from jointcxr.models import dan
from jointcxr.models import densenet
from jointcxr.models import heads
from jointcxr.models import joimter_cnn
from jointcxr.models import resnet
from jointcxr.models import two_towers
from jointcxr.models import vit

TINY_TXT = dict(vocab_size=50, hidden=32, layers=1, heads=2, mlp_dim=64,
                max_len=16, max_sentences=4, dropout=0.0)
TINY_IMG = dict(depth=18, width=8)
RNGS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def _count(module, *args, **kw):
  shapes = jax.eval_shape(lambda: module.init(RNGS, *args, **kw))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      nn.meta.unbox(shapes["params"])))


def test_parameter_counts():
  img = jnp.zeros((1, 224, 224, 1))
  assert abs(_count(resnet.ResNet(depth=50), img) / 1e6 - 23.5) < 0.05
  assert abs(_count(densenet.DenseNet(), img) / 1e6 - 6.95) < 0.05
  assert abs(_count(vit.ViT("S/16"), img) / 1e6 - 21.5) < 0.1
  t = jnp.zeros((1, 8), jnp.int32)
  assert abs(_count(bert.Bert(max_sentences=2), t, t > -1, t) / 1e6
             - 108.9) < 0.1


def test_tower_outputs():
  x = jnp.ones((2, 64, 64, 1))
  o = resnet.ResNet(**TINY_IMG).init_with_output(RNGS, x)[0]
  assert o["conv3"].shape == (2, 8, 8, 16) and o["regions"].shape == (2, 2, 2,
                                                                       64)
  o = vit.ViT("Ti/16", depth=1).init_with_output(RNGS, x)[0]
  assert o["regions"].shape == (2, 4, 4, 192) and o["global"].shape == (2,
                                                                         192)
  o = densenet.DenseNet(blocks=(1, 1), growth=4, init_features=8
                        ).init_with_output(RNGS, x)[0]
  assert o["global"].shape == (2, 10)
  o = joimter_cnn.JoImTerCNN(channels=(4, 4, 8, 8, 16, 16), stem_channels=4,
                             region_dim=8, global_dim=8).init_with_output(
                                 RNGS, jnp.ones((2, 256, 256, 1)))[0]
  assert o["regions"].shape == (2, 2, 2, 8) and o["global"].shape == (2, 8)


@pytest.mark.parametrize("depth", [18, 50])
def test_im2col_equals_xla_conv_forward_and_grad(depth):
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 1))
  m1 = resnet.ResNet(depth=depth, width=4, stage_sizes=(1, 1, 1, 1))
  m2 = resnet.ResNet(depth=depth, width=4, stage_sizes=(1, 1, 1, 1),
                     conv_impl="im2col")
  v = m1.init(RNGS, x)

  def loss(params, m):
    out = m.apply({"params": params, **{k: w for k, w in v.items() if k !=
                                        "params"}}, x)
    return jnp.sum(out["global"] ** 2) + jnp.sum(out["conv3"])

  l1, g1 = jax.value_and_grad(loss)(v["params"], m1)
  l2, g2 = jax.value_and_grad(loss)(v["params"], m2)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_segment_pool_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 3)).astype(np.float32)
  ids = np.array([[-1, 0, 0, 1, 1, 1, -1], [-1, 0, 2, 2, -1, -1, -1]])
  for kind in ("max", "mean"):
    got, present = common.segment_pool(jnp.asarray(x), jnp.asarray(ids), 4,
                                       kind)
    for b in range(2):
      for s in range(4):
        sel = x[b][ids[b] == s]
        if len(sel):
          ref = sel.max(0) if kind == "max" else sel.mean(0)
          np.testing.assert_allclose(got[b, s], ref, rtol=1e-6)
          assert present[b, s]
        else:
          assert not present[b, s] and np.all(got[b, s] == 0)


def test_attention_pool_weights_and_mask():
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 16))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  pool = heads.AttentionPool(4)
  v = pool.init(RNGS, x, mask)
  pooled, w = pool.apply(v, x, mask)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.asarray(w[0, 3:]) == 0)
  # Changing masked units changes nothing.
  x2 = x.at[0, 3:].set(100.0)
  np.testing.assert_allclose(pool.apply(v, x2, mask)[0][0], pooled[0],
                             rtol=1e-5)


def test_cross_attention_respects_sentence_mask():
  ca = heads.CrossAttention(8, norm="none")
  r = jax.random.normal(jax.random.PRNGKey(4), (1, 4, 8))
  s = jax.random.normal(jax.random.PRNGKey(5), (1, 3, 8))
  mask = jnp.array([[True, True, False]])
  v = ca.init(RNGS, r, s, mask)
  r2i, _, maps = ca.apply(v, r, s, mask)
  assert np.all(np.asarray(maps["region_to_sentence"][..., 2]) == 0)
  r2i_b, _, _ = ca.apply(v, r, s.at[0, 2].set(50.0), mask)
  np.testing.assert_allclose(r2i, r2i_b, rtol=1e-6)


def test_dan_word_dropout_only_in_training():
  m = dan.DAN(vocab_size=20, embed_dim=8, hidden=(8,), word_dropout=0.5)
  t = jnp.arange(12).reshape(1, 12) % 20
  mask = jnp.ones((1, 12), bool)
  v = m.init(RNGS, t, mask)
  a = m.apply(v, t, mask)["global"]
  np.testing.assert_array_equal(a, m.apply(v, t, mask)["global"])
  b = m.apply(v, t, mask, train=True, rngs={"dropout": jax.random.PRNGKey(7)}
              )["global"]
  assert not np.allclose(a, b)


def _batch(b=8, size=64):
  sids = jnp.tile(jnp.array([-1] + [0] * 5 + [1] * 5 + [2] * 4 + [-1]), (b, 1))
  return dict(image=jax.random.normal(jax.random.PRNGKey(6), (b, size, size,
                                                                1)),
              tokens=jax.random.randint(jax.random.PRNGKey(7), (b, 16), 5, 50),
              text_mask=jnp.ones((b, 16), bool), sentence_ids=sids)


@pytest.mark.parametrize("method", two_towers.METHODS)
def test_two_tower_keys(method):
  img = ("joimter_cnn", dict(channels=(4, 4, 8, 8, 16, 16), stem_channels=4,
                             region_dim=16, global_dim=16)) \
      if method == "joimternet" else ("resnet", TINY_IMG)
  m = two_towers.Model(image_model=img[0], image=img[1], text=TINY_TXT,
                       method=method, heads=dict(dim=16, hidden=32, mlm=True))
  batch = _batch(4, 256 if method == "joimternet" else 64)
  v = m.init(RNGS, batch, train=True)
  out, _ = m.apply(v, batch, train=True, rngs={"dropout": RNGS["dropout"]},
                   mutable=["batch_stats"])
  assert out["img_global"].shape == (4, 16)
  assert out["txt_global"].shape == (4, 16)
  if method == "lovt":
    assert out["img_attended"].shape == out["img_local"].shape == (4, 4, 16)
    assert out["txt_attended"].shape == (4, 4, 16)
    assert out["img_positions"].shape == (4, 2)
    np.testing.assert_allclose(out["txt_weights"].sum(-1), 1, rtol=1e-5)
    assert np.all(np.asarray(out["txt_local_mask"][:, 3]) == 0)
  if method == "joimternet":
    assert out["img_regions"].shape == (4, 4, 16)
    assert out["txt_words"].shape == (4, 16, 16)
    assert not bool(out["txt_word_mask"][:, 0].any())
    logits = m.apply(v, batch["tokens"], batch["text_mask"],
                     method=two_towers.Model.mlm_logits)
    assert logits.shape == (4, 16, 50)


def test_bf16_and_remat_paths():
  batch = _batch(2)
  m = two_towers.Model(image=TINY_IMG, text=TINY_TXT, method="lovt",
                       heads=dict(dim=16, hidden=32))
  v = m.init(RNGS, batch)
  mb = two_towers.Model(image=TINY_IMG, text=TINY_TXT, method="lovt",
                        heads=dict(dim=16, hidden=32), dtype=jnp.bfloat16)
  out = mb.apply(v, batch)
  assert all(bool(jnp.all(jnp.isfinite(out[k].astype(jnp.float32))))
             for k in ("img_global", "txt_global", "img_attended"))
  mr = two_towers.Model(image=dict(TINY_IMG, remat=True),
                        text=dict(TINY_TXT, remat=True), method="lovt",
                        heads=dict(dim=16, hidden=32))
  np.testing.assert_allclose(mr.apply(v, batch)["img_global"],
                             m.apply(v, batch)["img_global"], rtol=1e-6)


def test_sharded_forward_equals_unsharded():
  batch = _batch(8)
  m = two_towers.Model(image=TINY_IMG, text=TINY_TXT, method="lovt",
                       heads=dict(dim=16, hidden=32))
  v = nn.meta.unbox(m.init(RNGS, batch))
  ref = m.apply(v, batch)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  with mesh, nn.logical_axis_rules([("act_batch", "data")]):
    out = jax.jit(lambda v, b: m.apply(v, b))(v, sharded)
  for k in ("img_global", "txt_global", "img_attended", "txt_attended"):
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-5)
