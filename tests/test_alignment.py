"""Tests of jointcxr.hsu.alignment and the adversarial game (hsu.adversary).

References are float64 NumPy code written from the formulas (polar
decomposition for Procrustes, sorted neighbour lists for CSLS), not from the
JAX code.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr.hsu import alignment
from jointcxr.hsu import adversary
from jointcxr.hsu import pipeline


def _rotation(d: int, seed: int) -> np.ndarray:
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] *= -1
  return q


def _polar_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """argmin_{W^T W = I} ||xW - y||: the orthogonal polar factor of x^T y."""
  m = x.T @ y
  vals, vecs = np.linalg.eigh(m.T @ m)
  return m @ vecs @ np.diag(vals ** -0.5) @ vecs.T


def _clouds(n: int = 600, d: int = 4, k: int = 10, seed: int = 0,
            noise: float = 0.01):
  """Anisotropic Gaussian clusters on the sphere and a rotated copy."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, d))
  lab = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 2.0)))
  x = centres[lab] + rng.normal(size=(n, d)) * rng.uniform(
      0.1, 0.4, size=(k, d))[lab]
  q = _rotation(d, seed + 1)
  y = x @ q + noise * rng.normal(size=(n, d))
  x, y = x - x.mean(0), y - y.mean(0)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  y /= np.linalg.norm(y, axis=1, keepdims=True)
  return x.astype(np.float32), y.astype(np.float32), q


def _nn_accuracy(x, y, w):
  return float(np.mean(np.argmax((x @ w) @ y.T, axis=1) == np.arange(len(x))))


def test_procrustes_recovers_rotation_and_matches_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 6))
  q = _rotation(6, 1)
  w = np.asarray(alignment.procrustes(jnp.asarray(x, jnp.float32),
                                      jnp.asarray(x @ q, jnp.float32)))
  np.testing.assert_allclose(w, q, atol=2e-5)
  # With noise the answer is no longer q, but still the exact minimiser.
  y = x @ q + 0.3 * rng.normal(size=x.shape)
  w = np.asarray(alignment.procrustes(jnp.asarray(x, jnp.float32),
                                      jnp.asarray(y, jnp.float32)))
  ref = _polar_reference(x, y)
  np.testing.assert_allclose(w, ref, atol=2e-5)
  np.testing.assert_allclose(w.T @ w, np.eye(6), atol=2e-5)
  assert np.linalg.norm(w - q) < 0.2


def test_procrustes_weights_select_rows():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
  wts = (np.arange(30) % 3 == 0).astype(np.float32)
  w = alignment.procrustes(jnp.asarray(x), jnp.asarray(y), jnp.asarray(wts))
  np.testing.assert_allclose(np.asarray(w), _polar_reference(
      x[wts > 0], y[wts > 0]), atol=2e-5)
  with pytest.raises(ValueError, match="equal shape"):
    alignment.procrustes(jnp.zeros((3, 2)), jnp.zeros((4, 2)))


def test_orthogonalize_drives_to_orthogonal_and_keeps_orthogonal():
  q = _rotation(5, 2)
  np.testing.assert_allclose(np.asarray(alignment.orthogonalize(
      jnp.asarray(q, jnp.float32))), q, atol=1e-6)
  w = jnp.asarray(q + 0.1 * np.random.default_rng(3).normal(size=(5, 5)),
                  jnp.float32)
  err = lambda w: float(jnp.linalg.norm(w.T @ w - jnp.eye(5)))
  start = err(w)
  w1 = alignment.orthogonalize(w)  # default beta 0.001: a small step
  assert err(w1) < start
  for _ in range(300):
    w = alignment.orthogonalize(w, 0.05)
  assert err(w) < 1e-4 < start


def test_adversarial_losses_match_formulas():
  lm = np.array([0.3, -1.2, 2.0])
  lt = np.array([-0.5, 1.5])
  sig = lambda z: 1 / (1 + np.exp(-z))
  s = 0.1
  # D = P(real target): mapped rows labelled s, target rows 1 - s.
  bce = lambda p, t: -(t * np.log(p) + (1 - t) * np.log(1 - p))
  ref_d = np.mean(np.r_[bce(sig(lm), s), bce(sig(lt), 1 - s)])
  ref_m = np.mean(np.r_[bce(sig(lm), 1 - s), bce(sig(lt), s)])
  got_d = alignment.discriminator_loss(jnp.asarray(lm), jnp.asarray(lt), s)
  got_m = alignment.mapping_loss(jnp.asarray(lm), jnp.asarray(lt), s)
  np.testing.assert_allclose(float(got_d), ref_d, rtol=1e-5)
  np.testing.assert_allclose(float(got_m), ref_m, rtol=1e-5)
  # Without smoothing: METHODS.md's L_D and L_W, halved (mean over 2B rows
  # with equal counts).
  lt3 = np.array([-0.5, 1.5, 0.1])
  l_d = -np.mean(np.log(1 - sig(lm))) - np.mean(np.log(sig(lt3)))
  np.testing.assert_allclose(float(alignment.discriminator_loss(
      jnp.asarray(lm), jnp.asarray(lt3), 0.0)), l_d / 2, rtol=1e-5)


def _csls_reference(xw, y, k):
  xn = xw / np.linalg.norm(xw, axis=1, keepdims=True)
  yn = y / np.linalg.norm(y, axis=1, keepdims=True)
  cos = xn @ yn.T
  r_t = np.sort(cos, axis=1)[:, ::-1][:, :k].mean(1)
  r_s = np.sort(cos, axis=0)[::-1][:k].mean(0)
  return 2 * cos - r_t[:, None] - r_s[None, :]


def test_csls_matches_reference_and_chunking():
  rng = np.random.default_rng(4)
  xw, y = rng.normal(size=(37, 6)), rng.normal(size=(29, 6))
  ref = _csls_reference(xw, y, 5)
  xj, yj = jnp.asarray(xw, jnp.float32), jnp.asarray(y, jnp.float32)
  full = np.asarray(alignment.csls(xj, yj, k=5, chunk_size=1000))
  chunked = np.asarray(alignment.csls(xj, yj, k=5, chunk_size=8))
  np.testing.assert_allclose(full, ref, atol=1e-5)
  np.testing.assert_allclose(chunked, full, atol=1e-6)
  scores, idx = alignment.csls_topk(xj, yj, k=5, topk=3, chunk_size=8)
  np.testing.assert_array_equal(np.asarray(idx),
                                np.argsort(-ref, axis=1)[:, :3])
  np.testing.assert_allclose(np.asarray(scores),
                             np.sort(ref, axis=1)[:, ::-1][:, :3], atol=1e-5)


def test_dictionary_modes_match_reference():
  rng = np.random.default_rng(5)
  xw, y = rng.normal(size=(25, 4)), rng.normal(size=(20, 4))
  s = _csls_reference(xw, y, 3)
  s2t, t2s = s.argmax(1), s.argmax(0)
  mutual = {(i, int(s2t[i])) for i in range(25) if t2s[s2t[i]] == i}
  union = {(i, int(s2t[i])) for i in range(25)} | {
      (int(t2s[j]), j) for j in range(20)}
  for mode, want in (("mutual", mutual), ("union", union),
                     ("s2t", {(i, int(s2t[i])) for i in range(25)}),
                     ("t2s", {(int(t2s[j]), j) for j in range(20)})):
    src, tgt, valid = (np.asarray(a) for a in alignment.build_dictionary(
        jnp.asarray(xw, jnp.float32), jnp.asarray(y, jnp.float32), k=3,
        mode=mode, chunk_size=6))
    got = list(zip(src[valid].tolist(), tgt[valid].tolist()))
    assert len(got) == len(set(got)) and set(got) == want, mode
  with pytest.raises(ValueError, match="unknown dictionary mode"):
    alignment.build_dictionary(jnp.zeros((3, 2)), jnp.ones((3, 2)),
                               mode="both")


def test_mean_csls_cosine_matches_reference():
  rng = np.random.default_rng(6)
  xw, y = rng.normal(size=(30, 5)), rng.normal(size=(26, 5))
  s = _csls_reference(xw, y, 4)
  cos = (xw / np.linalg.norm(xw, axis=1, keepdims=True)) @ (
      y / np.linalg.norm(y, axis=1, keepdims=True)).T
  ref = cos[np.arange(12), s[:12].argmax(1)].mean()
  got = alignment.mean_csls_cosine(jnp.asarray(xw, jnp.float32),
                                   jnp.asarray(y, jnp.float32), k=4,
                                   max_items=12, chunk_size=5)
  np.testing.assert_allclose(float(got), ref, atol=1e-5)


def test_refinement_fixes_a_perturbed_map_and_uses_pairs():
  x, y, q = _clouds(n=400, d=4, seed=7)
  w0 = np.asarray(alignment.orthogonalize(jnp.asarray(
      q + 0.15 * np.random.default_rng(8).normal(size=q.shape),
      jnp.float32), 0.5))
  perm = np.random.default_rng(9).permutation(len(y))
  w = np.asarray(alignment.procrustes_refinement(
      jnp.asarray(x), jnp.asarray(y[perm]), jnp.asarray(w0), n_iter=5,
      chunk_size=64))
  assert _nn_accuracy(x, y, w) > 0.95 > _nn_accuracy(x, y, w0)
  # Known pairs alone (weight dominating an empty-ish dictionary) give EA.
  w_p = np.asarray(alignment.procrustes_refinement(
      jnp.asarray(x[:2]), jnp.asarray(y[:2]), jnp.eye(4), n_iter=1,
      pairs_x=jnp.asarray(x[:50]), pairs_y=jnp.asarray(y[:50]),
      pair_weight=1e4))
  np.testing.assert_allclose(w_p, q, atol=0.05)


def test_ea_with_one_percent_of_pairs_recovers_rotation():
  x, y, q = _clouds(n=1000, d=4, seed=10)
  paired, rest = pipeline.sample_pairs(len(x), 1e-2, seed=0)
  assert len(paired) == 10 and len(rest) == 990
  assert not set(paired) & set(rest)
  w = np.asarray(alignment.procrustes(jnp.asarray(x[paired]),
                                      jnp.asarray(y[paired])))
  assert np.linalg.norm(w - q) < 0.05
  assert _nn_accuracy(x, y, w) > 0.95


def test_adversarial_alignment_recovers_hidden_rotation():
  """Unsupervised: MUSE game + CSLS refinement, no pairs at all."""
  x, y, q = _clouds(n=600, d=4, seed=0)
  rng = np.random.default_rng(100)
  xs, ys = x[rng.permutation(len(x))], y[rng.permutation(len(y))]
  cfg = adversary.default_config()
  cfg.update(dict(epochs=3, epoch_steps=200, hidden=64, map_lr=1.0,
                  beta=0.1, restarts=4, criterion_items=600))
  res = adversary.train_adversarial(xs, ys, cfg, jax.random.PRNGKey(0))
  assert len(res.history) == 12
  assert {"dis_loss", "map_loss", "criterion"} <= set(res.history[0])
  w = np.asarray(alignment.procrustes_refinement(
      jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(res.w), n_iter=5))
  chance = 1 / len(x)
  assert _nn_accuracy(x, y, w) > 0.9 > 100 * chance
  assert np.linalg.norm(w - q) < 0.05
  # The criterion prefers the found map to the identity start.
  ident = float(alignment.mean_csls_cosine(jnp.asarray(xs), jnp.asarray(ys)))
  assert res.criterion > ident


def test_random_orthogonal_is_orthogonal_with_both_determinants():
  dets = set()
  for i in range(12):
    m = adversary.random_orthogonal(jax.random.PRNGKey(i), 3)
    np.testing.assert_allclose(m.T @ m, np.eye(3), atol=1e-5)
    dets.add(round(float(np.linalg.det(m))))
  assert dets == {-1, 1}


def test_adversarial_rejects_bad_input():
  cfg = adversary.default_config()
  with pytest.raises(ValueError, match="needs unpaired sources and targets"):
    adversary.train_adversarial(np.zeros((0, 3)), np.ones((4, 3)), cfg,
                                jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="dimensions differ: 3 vs 2"):
    adversary.train_adversarial(np.ones((4, 3)), np.ones((4, 2)), cfg,
                                jax.random.PRNGKey(0))
