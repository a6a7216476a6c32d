"""Every loss against an independent float64 NumPy reference from the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr import losses

R = np.random.default_rng(0)


def _n(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _lse(x):
  m = np.max(x)
  return m + np.log(np.sum(np.exp(x - m)))


def ref_infonce(zi, zt, tau, w):
  s = _n(zi) @ _n(zt).T / tau
  b = len(zi)
  rows = np.mean([_lse(s[i]) - s[i, i] for i in range(b)])
  cols = np.mean([_lse(s[:, j]) - s[j, j] for j in range(b)])
  return w * rows + (1 - w) * cols


def test_infonce_matches_reference_and_mask():
  zi, zt = R.normal(size=(6, 5)), R.normal(size=(6, 5))
  got, aux = losses.infonce(jnp.asarray(zi), jnp.asarray(zt),
                            temperature=0.1, i2t_weight=0.75)
  assert float(got) == pytest.approx(ref_infonce(zi, zt, 0.1, 0.75),
                                     rel=1e-5)
  assert 0 <= float(aux["acc_i2t"]) <= 1
  mask = np.array([1, 1, 1, 1, 0, 0], bool)
  got_m, _ = losses.infonce(jnp.asarray(zi), jnp.asarray(zt),
                            temperature=0.1, i2t_weight=0.75,
                            mask=jnp.asarray(mask))
  assert float(got_m) == pytest.approx(
      ref_infonce(zi[:4], zt[:4], 0.1, 0.75), rel=1e-5)


def test_siglip_matches_reference():
  zi, zt = R.normal(size=(5, 4)), R.normal(size=(5, 4))
  s = _n(zi) @ _n(zt).T
  t, bias = 1.7, -3.0
  ref = 0.0
  for i in range(5):
    for j in range(5):
      z = (1 if i == j else -1) * (np.exp(t) * s[i, j] + bias)
      ref -= np.log(1 / (1 + np.exp(-z)))
  got, _ = losses.siglip(jnp.asarray(zi), jnp.asarray(zt), logit_scale=t,
                         logit_bias=bias)
  assert float(got) == pytest.approx(ref / 5, rel=1e-5)


@pytest.mark.parametrize("hardest", [True, False])
def test_triplet_matches_reference(hardest):
  zi, zt = R.normal(size=(5, 4)), R.normal(size=(5, 4))
  s = _n(zi) @ _n(zt).T
  m = 0.5
  red = max if hardest else sum
  img = np.mean([red(max(0, m - s[i, i] + s[i, j]) for j in range(5)
                     if j != i) for i in range(5)])
  txt = np.mean([red(max(0, m - s[j, j] + s[i, j]) for i in range(5)
                     if i != j) for j in range(5)])
  got, _ = losses.triplet(jnp.asarray(zi), jnp.asarray(zt), margin=m,
                          hardest=hardest)
  assert float(got) == pytest.approx(img + txt, rel=1e-5)
  neg = np.array([3, 0, 4, 1, 2])
  d = 1 - s  # cosine distance form of METHODS 2.2c
  ref = np.mean([max(0, d[i, i] - d[i, neg[i]] + m) for i in range(5)]) + \
      np.mean([max(0, d[i, i] - d[neg[i], i] + m) for i in range(5)])
  got, _ = losses.triplet(jnp.asarray(zi), jnp.asarray(zt), margin=m,
                          negatives=jnp.asarray(neg))
  assert float(got) == pytest.approx(ref, rel=1e-5)


def ref_damsm_scores(reg, words, mask, g1, g2):
  b = len(reg)
  out = np.zeros((b, len(words)))
  for i in range(b):
    for j in range(len(words)):
      e = words[j][mask[j]]
      a = e @ reg[i].T  # [T, R]
      a = np.exp(a - a.max(0, keepdims=True))
      a = a / a.sum(0, keepdims=True)  # softmax over words
      att = np.exp(g1 * a - (g1 * a).max(1, keepdims=True))
      att = att / att.sum(1, keepdims=True)  # softmax over regions
      ctx = att @ reg[i]
      cos = np.sum(_n(ctx) * _n(e), -1)
      out[i, j] = _lse(g2 * cos)
  return out


def test_damsm_word_matches_reference_and_chunking():
  reg = R.normal(size=(5, 6, 4))
  words = R.normal(size=(5, 7, 4))
  mask = np.ones((5, 7), bool)
  mask[0, 5:] = False
  mask[3, 2:] = False
  g1, g2, g3 = 4.0, 5.0, 10.0
  ref_r = ref_damsm_scores(reg, words, mask, g1, g2)
  for chunk in (None, 2, 5):
    r = losses.damsm_word_scores(jnp.asarray(reg), jnp.asarray(words),
                                 jnp.asarray(mask), gamma1=g1, gamma2=g2,
                                 chunk_size=chunk)
    np.testing.assert_allclose(r, ref_r, rtol=1e-4, atol=1e-5)
  logits = g3 * ref_r
  ref = np.mean([_lse(logits[i]) - logits[i, i] for i in range(5)]) + \
      np.mean([_lse(logits[:, j]) - logits[j, j] for j in range(5)])
  got, aux = losses.damsm_word(jnp.asarray(reg), jnp.asarray(words),
                               jnp.asarray(mask), gamma1=g1, gamma2=g2,
                               gamma3=g3, chunk_size=2)
  assert float(got) == pytest.approx(ref, rel=1e-4)
  neg = np.array([1, 2, 3, 4, 0])
  d = -ref_r
  ref_wt = np.mean([max(0, d[i, i] - d[i, neg[i]] + 0.5) for i in range(5)]) \
      + np.mean([max(0, d[i, i] - d[neg[i], i] + 0.5) for i in range(5)])
  got_wt, _ = losses.word_triplet(aux["scores"], margin=0.5,
                                  negatives=jnp.asarray(neg))
  assert float(got_wt) == pytest.approx(ref_wt, rel=1e-4)


def ref_lovt_local(zl, za, w, mask, tau, pos, thr, lam):
  b, n, _ = zl.shape
  zl, za = _n(zl), _n(za)
  if pos is None:
    raw = np.eye(n)
  else:
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    raw = (d <= thr) * np.exp(-lam * d)
  total = {}
  for name, (a, c) in {"l2att": (zl, za), "att2l": (za, zl)}.items():
    per_sample = []
    for s in range(b):
      valid = np.flatnonzero(mask[s])
      if not len(valid):
        continue
      ws = w[s, valid] / w[s, valid].sum()
      loss = 0.0
      for wk, k in zip(ws, valid):
        logits = np.array([a[s, k] @ c[s, j] / tau for j in valid])
        pi = raw[k, valid] / raw[k, valid].sum()
        logp = logits - _lse(logits)
        loss += wk * -np.sum(pi * logp)
      per_sample.append(loss)
    total[name] = np.mean(per_sample)
  return total


@pytest.mark.parametrize("spatial", [True, False])
def test_lovt_local_matches_reference(spatial):
  b, n, d = 3, 9, 5
  zl, za = R.normal(size=(b, n, d)), R.normal(size=(b, n, d))
  w = R.random((b, n)) + 0.1
  mask = np.ones((b, n), bool)
  if not spatial:
    mask[1, 6:] = False
    mask[2, :] = False  # a sample without units is skipped
  pos = None
  if spatial:
    ii, jj = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    pos = np.stack([ii.ravel(), jj.ravel()], -1) / np.sqrt(18)
  ref = ref_lovt_local(zl, za, w, mask, 0.3, pos, 0.5, 1.0)
  got, aux = losses.lovt_local(jnp.asarray(zl), jnp.asarray(za),
                               jnp.asarray(w), jnp.asarray(mask),
                               temperature=0.3, positions=None if pos is None
                               else jnp.asarray(pos, jnp.float32))
  assert float(aux["l2att"]) == pytest.approx(ref["l2att"], rel=1e-4)
  assert float(aux["att2l"]) == pytest.approx(ref["att2l"], rel=1e-4)
  assert float(got) == pytest.approx(ref["l2att"] + ref["att2l"], rel=1e-4)
  # Weights are stop-gradient: no gradient flows into them.
  g = jax.grad(lambda ww: losses.lovt_local(
      jnp.asarray(zl), jnp.asarray(za), ww, jnp.asarray(mask),
      temperature=0.3)[0])(jnp.asarray(w))
  assert float(jnp.abs(g).max()) == 0.0


def test_mlm_mask_split_and_loss():
  tokens = jax.random.randint(jax.random.PRNGKey(0), (64, 128), 5, 100)
  tokens = tokens.at[:, 0].set(2)
  masked, targets, w = losses.mlm_mask(jax.random.PRNGKey(1), tokens,
                                       vocab_size=100, mask_id=4)
  chosen = np.asarray(w) > 0
  assert abs(chosen.mean() - 0.15) < 0.02 and not chosen[:, 0].any()
  m = np.asarray(masked)[chosen]
  t = np.asarray(tokens)[chosen]
  assert abs((m == 4).mean() - 0.8) < 0.03
  assert abs((m == t).mean() - 0.1) < 0.03
  np.testing.assert_array_equal(np.asarray(masked)[~chosen],
                                np.asarray(tokens)[~chosen])
  logits = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 7))
  tg = jnp.array([[1, 2, 3], [4, 5, 6]])
  wt = jnp.array([[1.0, 0, 1], [0, 0, 1]])
  lp = np.asarray(jax.nn.log_softmax(logits))
  ref = -(lp[0, 0, 1] + lp[0, 2, 3] + lp[1, 2, 6]) / 3
  assert float(losses.mlm(logits, tg, wt)[0]) == pytest.approx(ref, rel=1e-5)


def test_gradients_finite_and_bf16_inputs():
  zi = jax.random.normal(jax.random.PRNGKey(0), (8, 16), jnp.bfloat16)
  zt = jax.random.normal(jax.random.PRNGKey(1), (8, 16), jnp.bfloat16)
  for fn in (lambda a, b: losses.infonce(a, b, temperature=0.1)[0],
             lambda a, b: losses.triplet(a, b, margin=0.5)[0],
             lambda a, b: losses.siglip(a, b, logit_scale=2.3,
                                        logit_bias=-10.)[0]):
    v, (ga, gb) = jax.value_and_grad(fn, (0, 1))(zi, zt)
    assert bool(jnp.isfinite(v)) and bool(jnp.all(jnp.isfinite(ga)))
