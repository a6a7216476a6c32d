"""LoVT / JoImTeRNet heads against float64 NumPy references of the formulas."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr.models import heads

RNGS = {"params": jax.random.key(0, impl="rbg")}  # cheap to compile


def _p(variables) -> dict:
  """Plain float64 parameters of an initialised module."""
  return jax.tree.map(np.float64, nn.meta.unbox(variables["params"]))


def _lin(p, x):
  return x @ p["kernel"] + p["bias"]


def _softmax(z, axis):
  z = z - z.max(axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis, keepdims=True)


def _bias_everything(v):
  # Non-zero biases so the reference checks where they enter.
  return jax.tree.map(lambda a: a + 0.05, v)


def test_attention_pool_matches_reference_and_ignores_masked_units():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 8))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  pool = heads.AttentionPool(num_heads=2)
  v = _bias_everything(pool.init(RNGS, jnp.asarray(x, jnp.float32),
                                 jnp.asarray(mask)))
  pooled, w = pool.apply(v, jnp.asarray(x, jnp.float32), jnp.asarray(mask))
  p = _p(v)
  for b in range(2):  # rows with real units
    m = mask[b]
    q = _lin(p["query"], x[b][m].mean(0)).reshape(2, 4)
    k = _lin(p["key"], x[b][m]).reshape(-1, 2, 4)
    val = _lin(p["value"], x[b][m]).reshape(-1, 2, 4)
    att = _softmax(np.einsum("hd,nhd->hn", q, k) / 2.0, axis=1)  # sqrt(4)
    ref = _lin(p["out"], np.einsum("hn,nhd->hd", att, val).reshape(8))
    np.testing.assert_allclose(pooled[b], ref, rtol=1e-4, atol=1e-5)
    ref_w = np.zeros(5)
    ref_w[m] = att.mean(0)  # head-averaged, like PyTorch's MHA
    np.testing.assert_allclose(w[b], ref_w, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(w[2], 0)  # no real unit: no weight at all
  # Masked units' values change nothing.
  x2 = jnp.asarray(x, jnp.float32).at[0, 3:].set(100.0)
  np.testing.assert_allclose(pool.apply(v, x2, jnp.asarray(mask))[0][0],
                             pooled[0], rtol=1e-6)


def test_cross_attention_matches_reference_and_respects_sentence_mask():
  rng = np.random.default_rng(1)
  r = rng.normal(size=(2, 4, 6))
  s = rng.normal(size=(2, 3, 6))
  mask = np.array([[True, True, False], [True, True, True]])
  ca = heads.CrossAttention(dim=6, norm="none")
  v = _bias_everything(ca.init(RNGS, jnp.asarray(r, jnp.float32),
                               jnp.asarray(s, jnp.float32),
                               jnp.asarray(mask)))
  r2i, i2r, maps = ca.apply(v, jnp.asarray(r, jnp.float32),
                            jnp.asarray(s, jnp.float32), jnp.asarray(mask))
  p = _p(v)
  for b in range(2):
    m = mask[b]
    kr, ks = _lin(p["key"], r[b]), _lin(p["key"], s[b][m])
    scores = kr @ ks.T / np.sqrt(6)  # [N, S_real], one shared K
    alpha = _softmax(scores, axis=1)
    beta = _softmax(scores, axis=0)
    ref_r2i = _lin(p["out"], alpha @ _lin(p["value"], s[b][m]))
    ref_i2r = _lin(p["out"], beta.T @ _lin(p["value"], r[b]))
    np.testing.assert_allclose(r2i[b], ref_r2i, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(i2r[b][m], ref_i2r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps["region_to_sentence"][b][:, m], alpha,
                               rtol=1e-5)
  assert np.all(np.asarray(maps["region_to_sentence"])[0, :, 2] == 0)
  # A padded sentence's content does not reach any region.
  s2 = jnp.asarray(s, jnp.float32).at[0, 2].set(50.0)
  np.testing.assert_allclose(ca.apply(v, jnp.asarray(r, jnp.float32), s2,
                                      jnp.asarray(mask))[0], r2i, rtol=1e-6)


def test_cross_attention_batchnorm_skips_padded_sentences():
  rng = np.random.default_rng(2)
  r = jnp.asarray(rng.normal(size=(2, 4, 6)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(2, 3, 6)), jnp.float32)
  mask = jnp.array([[True, True, False], [True, False, False]])
  ca = heads.CrossAttention(dim=6, norm="batch")
  v = ca.init(RNGS, r, s, mask)
  run = lambda s: ca.apply(v, r, s, mask, train=True,
                           mutable=["batch_stats"])
  (_, i2r, _), stats = run(s)
  (_, i2r_b, _), stats_b = run(s.at[0, 2].set(9.0).at[1, 1:].set(-7.0))
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(i2r)[valid], np.asarray(i2r_b)[valid],
                             rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_b)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_projection_mlp_matches_reference(norm):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 3, 5))
  mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
  mlp = heads.ProjectionMLP(hidden=7, out=4, norm=norm)
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(mask)
  v = _bias_everything(mlp.init(RNGS, xj, mj))
  got, _ = mlp.apply(v, xj, mj, train=True, mutable=["batch_stats"])
  p = _p(v)
  h = _lin(p["fc1"], x)
  if norm == "batch":  # training-mode BN over the valid units only
    mean, var = h[mask].mean(0), h[mask].var(0)
    h = (h - mean) / np.sqrt(var + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
  ref = _lin(p["fc2"], np.maximum(h, 0))
  np.testing.assert_allclose(np.asarray(got)[mask], ref[mask], rtol=1e-4,
                             atol=1e-5)
  with pytest.raises(ValueError, match="unknown projection norm 'layer'"):
    heads.ProjectionMLP(4, 4, "layer").init(RNGS, xj)


def test_region_word_attention_matches_damsm_formula():
  rng = np.random.default_rng(4)
  regions, words = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 4, 3))
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  attn, ctx = heads.region_word_attention(
      jnp.asarray(regions, jnp.float32), jnp.asarray(words, jnp.float32),
      jnp.asarray(mask), gamma1=4.0)
  for b in range(2):
    e = words[b][mask[b]]
    a = e @ regions[b].T  # [T, R] raw dot products
    a = _softmax(a, axis=0)  # over words, for each region
    alpha = _softmax(4.0 * a, axis=1)  # over regions, sharpened
    np.testing.assert_allclose(attn[b][mask[b]], alpha, rtol=1e-5)
    np.testing.assert_allclose(ctx[b][mask[b]], alpha @ regions[b],
                               rtol=1e-5, atol=1e-6)
