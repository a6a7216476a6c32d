"""Embedding-health statistics vs float64 NumPy references written from the
definitions (explicit pair loops), on planted cases: collapsed, isotropic,
low-rank, masked, and inside jit over a sharded batch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jointcxr import sharding
from jointcxr.evaluators import embedding_stats as es


def _unit(z):
  z = np.asarray(z, np.float64)
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def ref_std(z):
  return np.mean(np.std(_unit(z), axis=0))  # population std (ddof 0)


def ref_uniformity(z, t=2.0):
  u = _unit(z)
  n = len(u)
  vals = [math.exp(-t * np.sum((u[i] - u[j]) ** 2))
          for i in range(n) for j in range(n) if i != j]
  return math.log(np.mean(vals))


def ref_eff_rank(z):
  s = np.linalg.svd(_unit(z), compute_uv=False)
  p = s / s.sum()
  p = p[p > 0]
  return math.exp(-np.sum(p * np.log(p)))


def ref_pairs(zi, zt):
  a, b = _unit(zi), _unit(zt)
  n = len(a)
  pos = np.mean([a[i] @ b[i] for i in range(n)])
  neg = np.mean([a[i] @ b[j] for i in range(n) for j in range(n) if i != j])
  return pos, neg


def _normal(seed, n=24, d=16):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_random_embeddings_match_the_float64_references():
  zi, zt = _normal(0), _normal(1)
  zt = zt + 2 * zi  # correlated pairs: positives above negatives
  s = es.stats(zi)
  np.testing.assert_allclose(s["std"], ref_std(zi), rtol=1e-5)
  np.testing.assert_allclose(s["uniformity"], ref_uniformity(zi), rtol=1e-5)
  np.testing.assert_allclose(s["eff_rank"], ref_eff_rank(zi), rtol=1e-5)
  sim = es.pair_similarity(zi, zt)
  pos, neg = ref_pairs(zi, zt)
  np.testing.assert_allclose(sim["pos"], pos, rtol=1e-5)
  np.testing.assert_allclose(sim["neg"], neg, rtol=1e-4, atol=1e-6)
  assert float(sim["pos"]) > 0.7 and abs(float(sim["neg"])) < 0.2


def test_collapsed_embeddings_read_as_collapsed():
  # The make-demo failure: every example maps to (nearly) the same vector.
  g = np.random.default_rng(0)
  base = g.normal(size=(1, 32))
  z = (np.tile(base, (64, 1)) + 1e-4 * g.normal(size=(64, 32))).astype(
      np.float32)
  s = es.stats(z)
  assert float(s["std"]) < 1e-3
  assert float(s["eff_rank"]) == pytest.approx(1.0, abs=0.02)
  assert float(s["uniformity"]) == pytest.approx(0.0, abs=1e-3)
  # An exactly constant batch: std 0, rank 1, uniformity 0 (its maximum).
  c = np.tile(base, (8, 1)).astype(np.float32)
  s = es.stats(c)
  assert float(s["std"]) == pytest.approx(0.0, abs=1e-6)
  assert float(s["eff_rank"]) == pytest.approx(1.0, abs=1e-3)
  assert float(s["uniformity"]) == pytest.approx(0.0, abs=1e-5)
  # Pairing is invisible: positives are as similar as negatives.
  sim = es.pair_similarity(z, z[::-1])
  assert float(sim["pos"]) == pytest.approx(float(sim["neg"]), abs=1e-4)


def test_isotropic_embeddings_are_spread_and_high_rank():
  n, d = 512, 32
  z = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
  s = es.stats(z)
  # Per-dimension std of unit vectors on S^(d-1): 1/sqrt(d).
  assert float(s["std"]) == pytest.approx(1 / math.sqrt(d), rel=0.05)
  assert float(s["eff_rank"]) > 0.9 * d
  # E exp(-2 |u - v|^2) = exp(-4) E exp(4 u.v) ~ exp(-4 + 8 / d) for large d.
  assert float(s["uniformity"]) == pytest.approx(-4 + 8 / d, abs=0.1)


def test_effective_rank_counts_the_spanned_dimensions():
  g = np.random.default_rng(0)
  # Three equally weighted orthogonal directions: effective rank 3.
  basis = np.linalg.qr(g.normal(size=(16, 3)))[0].T  # [3, 16]
  z = np.repeat(basis, 20, axis=0).astype(np.float32)
  assert float(es.effective_rank(z)) == pytest.approx(3.0, rel=1e-4)
  np.testing.assert_allclose(es.effective_rank(z), ref_eff_rank(z),
                             rtol=1e-5)


def test_mask_leaves_padded_rows_out():
  zi, zt = _normal(0), _normal(1)
  mask = np.arange(len(zi)) < 17
  # Padding rows set to one shared vector (what zero images give).
  pad_i = zi.copy()
  pad_i[~mask] = 5.0
  pad_t = zt.copy()
  pad_t[~mask] = -3.0
  got = es.tower_stats(pad_i, pad_t, jnp.asarray(mask))
  want = es.tower_stats(zi[mask], zt[mask])
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
  a = es.pair_similarity(pad_i, pad_t, jnp.asarray(mask))
  b = es.pair_similarity(zi[mask], zt[mask])
  for k in ("pos", "neg"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6)
  # Undefined statistics are NaN, not a plausible number.
  one = np.arange(len(zi)) < 1
  assert np.isnan(float(es.uniformity(zi, jnp.asarray(one))))
  assert np.isnan(float(es.pair_similarity(zi, zt, jnp.asarray(one))["neg"]))
  none = np.zeros(len(zi), bool)
  assert np.isnan(float(es.effective_rank(zi, jnp.asarray(none))))


def test_jitted_over_a_sharded_batch_equals_plain():
  mesh = sharding.make_mesh([("data", -1)])
  zi, zt = _normal(0, n=32), _normal(1, n=32)
  shard = NamedSharding(mesh, P("data"))
  f = jax.jit(es.tower_stats)
  got = f(jax.device_put(zi, shard), jax.device_put(zt, shard))
  want = es.tower_stats(zi, zt)
  assert sorted(got) == sorted(
      f"health/{t}_{n}" for t in ("img", "txt") for n in es.STAT_NAMES)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)


def test_host_stats_subsamples_only_the_pairwise_statistics():
  zi, zt = _normal(0, n=200), _normal(1, n=200)
  full = es.host_stats(zi, zt, max_rows=1000)
  assert full["health/rows"] == 200.0
  np.testing.assert_allclose(full["health/img_uniformity"],
                             ref_uniformity(zi), rtol=1e-4)
  np.testing.assert_allclose(full["health/txt_eff_rank"], ref_eff_rank(zt),
                             rtol=1e-4)
  sub = es.host_stats(zi, zt, max_rows=50)
  assert sub["health/rows"] == 50.0
  idx = np.unique(np.linspace(0, 199, 50).round().astype(int))
  np.testing.assert_allclose(sub["health/img_uniformity"],
                             ref_uniformity(zi[idx]), rtol=1e-4)
  # std and the similarities always use every row.
  np.testing.assert_allclose(sub["health/img_std"], ref_std(zi), rtol=1e-5)
  pos, neg = ref_pairs(zi, zt)
  np.testing.assert_allclose(sub["sim/pos"], pos, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(sub["sim/neg"], neg, rtol=1e-3, atol=1e-6)
  assert all(isinstance(v, float) for v in sub.values())
