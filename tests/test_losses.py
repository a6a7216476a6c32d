"""Plain losses vs independent float64 NumPy references written from the
formulas (explicit loops, METHODS.md §2.2 / §3.2), masks, chunking, bf16."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr import losses

B, D = 8, 16


def _pair(seed=0, b=B, d=D):
  r = np.random.default_rng(seed)
  zi = r.normal(size=(b, d)).astype(np.float32)
  # Correlated texts so that positives differ from negatives.
  zt = (zi + r.normal(size=(b, d))).astype(np.float32)
  return zi, zt


def _cos(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return np.array([[x @ y / np.linalg.norm(x) / np.linalg.norm(y)
                    for y in b] for x in a])


def _lse(values):
  values = np.asarray(values, np.float64)
  m = values.max()
  return m + math.log(np.exp(values - m).sum())


# ----------------------------------------------------------- references ---


def ref_ce_both(s, valid):
  """Mean -log softmax at the diagonal over rows, and over columns."""
  idx = [i for i in range(len(s)) if valid[i]]
  rows = np.mean([_lse([s[i, j] for j in idx]) - s[i, i] for i in idx])
  cols = np.mean([_lse([s[j, i] for j in idx]) - s[i, i] for i in idx])
  return rows, cols


def ref_infonce(zi, zt, tau, w, valid):
  rows, cols = ref_ce_both(_cos(zi, zt) / tau, valid)
  return w * rows + (1 - w) * cols


def ref_triplet(zi, zt, m, hardest, negatives, valid):
  s = _cos(zi, zt)
  n = len(s)
  i2t, t2i = [], []
  for i in range(n):
    if not valid[i]:
      continue
    if negatives is not None:
      k = negatives[i]
      dist = 1.0 - s  # cosine distance: METHODS.md §2.2c
      i2t.append(max(0.0, dist[i, i] - dist[i, k] + m))
      t2i.append(max(0.0, dist[i, i] - dist[k, i] + m))
      continue
    a = [max(0.0, m - s[i, i] + s[i, j]) for j in range(n)
         if j != i and valid[j]]
    b = [max(0.0, m - s[i, i] + s[j, i]) for j in range(n)
         if j != i and valid[j]]
    i2t.append(max(a) if hardest else sum(a))
    t2i.append(max(b) if hardest else sum(b))
  return np.mean(i2t) + np.mean(t2i)


def ref_siglip(zi, zt, t, bias, valid):
  s = _cos(zi, zt)
  total = 0.0
  for i in range(len(s)):
    for j in range(len(s)):
      if valid[i] and valid[j]:
        z = 1.0 if i == j else -1.0
        total += math.log1p(math.exp(-z * (t * s[i, j] + bias)))
  return total / sum(valid)


def ref_damsm_score(reg, words, wmask, g1, g2):
  """R for one image (R, D) and one text (T, D), literally per the paper."""
  reg = np.asarray(reg, np.float64)
  e = np.asarray(words, np.float64)[np.asarray(wmask, bool)]
  a = e @ reg.T  # [T', R]
  first = np.exp(a - a.max(0, keepdims=True))
  first /= first.sum(0, keepdims=True)  # softmax over words, per region
  second = np.exp(g1 * first - (g1 * first).max(1, keepdims=True))
  second /= second.sum(1, keepdims=True)  # over regions, per word
  total = 0.0
  for t in range(len(e)):
    c = sum(second[t, r] * reg[r] for r in range(len(reg)))
    cos = c @ e[t] / np.linalg.norm(c) / np.linalg.norm(e[t])
    total += math.exp(g2 * cos)
  return math.log(total)


def ref_damsm_scores(reg, words, wmask, g1, g2):
  return np.array([[ref_damsm_score(reg[i], words[j], wmask[j], g1, g2)
                    for j in range(len(words))] for i in range(len(reg))])


def ref_lovt_direction(zl, za, w, mask, tau, pos, thr, lam):
  """l2att mean over samples (call with zl/za swapped for att2l)."""
  per_sample = []
  for b in range(len(zl)):
    units = [k for k in range(zl.shape[1]) if mask[b, k]]
    if not units:
      continue
    s = _cos(zl[b], za[b]) / tau
    wsum = sum(w[b, k] for k in units)
    total = 0.0
    for k in units:
      if pos is None:
        pi = {j: float(j == k) for j in units}
      else:
        pi = {}
        for j in units:
          d = math.dist(pos[k], pos[j])
          pi[j] = math.exp(-lam * d) if d <= thr else 0.0
      z = sum(pi.values())
      ce = _lse([s[k, j] for j in units]) - sum(
          pi[j] / z * s[k, j] for j in units)
      total += w[b, k] / wsum * ce
    per_sample.append(total)
  return np.mean(per_sample)


# ---------------------------------------------------------------- tests ---


@pytest.mark.parametrize("w", [0.5, 0.75])
def test_infonce_matches_reference(w):
  zi, zt = _pair()
  loss, aux = losses.infonce(zi, zt, temperature=0.1, i2t_weight=w)
  np.testing.assert_allclose(loss, ref_infonce(zi, zt, 0.1, w, [1] * B),
                             rtol=1e-5)
  rows, cols = ref_ce_both(_cos(zi, zt) / 0.1, [1] * B)
  np.testing.assert_allclose(aux["i2t_loss"], rows, rtol=1e-5)
  np.testing.assert_allclose(aux["t2i_loss"], cols, rtol=1e-5)
  s = _cos(zi, zt)
  np.testing.assert_allclose(aux["pos_sim"], np.trace(s) / B, rtol=1e-5)
  np.testing.assert_allclose(
      aux["neg_sim"], (s.sum() - np.trace(s)) / (B * B - B), rtol=1e-5)
  np.testing.assert_allclose(aux["i2t_acc"],
                             np.mean(s.argmax(1) == np.arange(B)))


def test_damsm_sentence_is_sum_of_both_directions():
  zi, zt = _pair(1)
  loss, _ = losses.damsm_sentence(zi, zt, gamma3=10.0)
  rows, cols = ref_ce_both(10.0 * _cos(zi, zt), [1] * B)
  np.testing.assert_allclose(loss, rows + cols, rtol=1e-5)


@pytest.mark.parametrize("hardest", [True, False])
def test_triplet_matches_reference(hardest):
  zi, zt = _pair(2)
  loss, _ = losses.triplet(zi, zt, margin=0.5, hardest=hardest)
  np.testing.assert_allclose(
      loss, ref_triplet(zi, zt, 0.5, hardest, None, [1] * B), rtol=1e-5)


def test_triplet_given_negatives_is_cosine_distance_form():
  zi, zt = _pair(3)
  neg = np.asarray(losses.random_negatives(jax.random.key(0), B))
  loss, _ = losses.triplet(zi, zt, margin=0.5, negatives=neg)
  np.testing.assert_allclose(
      loss, ref_triplet(zi, zt, 0.5, True, neg, [1] * B), rtol=1e-5)


def test_random_negatives_uniform_over_others():
  keys = jax.random.split(jax.random.key(1), 2000)
  negs = np.asarray(jax.vmap(lambda k: losses.random_negatives(k, 4))(keys))
  counts = np.stack([np.bincount(negs[:, i], minlength=4) for i in range(4)])
  assert np.all(np.diag(counts) == 0)
  np.testing.assert_allclose(counts[~np.eye(4, dtype=bool)] / 2000, 1 / 3,
                             atol=0.05)
  with pytest.raises(ValueError, match="batch of >= 2"):
    losses.random_negatives(jax.random.key(0), 1)


def test_siglip_matches_reference():
  zi, zt = _pair(4)
  loss, aux = losses.siglip(zi, zt, logit_scale=math.log(10.0),
                            logit_bias=-10.0)
  np.testing.assert_allclose(loss, ref_siglip(zi, zt, 10.0, -10.0, [1] * B),
                             rtol=1e-5)
  assert float(aux["pos_sim"]) > float(aux["neg_sim"])


def _damsm_inputs(seed=5, b=6, r=5, t=7, d=8):
  g = np.random.default_rng(seed)
  reg = g.normal(size=(b, r, d)).astype(np.float32)
  words = g.normal(size=(b, t, d)).astype(np.float32)
  lens = g.integers(2, t + 1, size=b)
  wmask = np.arange(t)[None] < lens[:, None]
  return reg, words, wmask


def test_damsm_word_scores_and_loss_match_reference():
  reg, words, wmask = _damsm_inputs()
  ref = ref_damsm_scores(reg, words, wmask, 4.0, 5.0)
  got = losses.damsm_word_scores(reg, words, wmask, gamma1=4.0, gamma2=5.0)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  loss, aux = losses.damsm_word(reg, words, wmask, gamma1=4.0, gamma2=5.0,
                                gamma3=10.0)
  rows, cols = ref_ce_both(10.0 * ref, [1] * len(ref))
  np.testing.assert_allclose(loss, rows + cols, rtol=1e-5)
  np.testing.assert_allclose(aux["i2t_loss"], rows, rtol=1e-5)
  np.testing.assert_allclose(aux["pos_score"], np.trace(ref) / len(ref),
                             rtol=1e-5)
  pair = losses.damsm_word_pair_scores(reg, words, wmask, gamma1=4.0,
                                       gamma2=5.0)
  np.testing.assert_allclose(pair, np.diag(ref), rtol=1e-5, atol=1e-5)


def test_damsm_chunked_equals_unchunked(chunk=4):
  reg, words, wmask = _damsm_inputs(6)
  kw = dict(gamma1=4.0, gamma2=5.0, gamma3=10.0)

  def run(c):
    return jax.jit(jax.value_and_grad(
        lambda r, w: losses.damsm_word(r, w, wmask, chunk_size=c, **kw)[0],
        argnums=(0, 1)))(reg, words)

  (l0, g0), (l1, g1) = run(None), run(chunk)  # 4 does not divide B=6
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  for a, b in zip(g0, g1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_word_triplet_matches_reference_and_quirk():
  reg, words, wmask = _damsm_inputs(7)
  r = ref_damsm_scores(reg, words, wmask, 4.0, 5.0)
  neg = np.array([3, 0, 5, 1, 2, 4])
  loss, _ = losses.word_triplet(jnp.asarray(r, jnp.float32), margin=0.5,
                                negatives=neg)
  dist = -r  # D = -R
  i2t = np.mean([max(0, dist[i, i] - dist[i, neg[i]] + 0.5) for i in range(6)])
  t2i = np.mean([max(0, dist[i, i] - dist[neg[i], i] + 0.5) for i in range(6)])
  np.testing.assert_allclose(loss, i2t + t2i, rtol=1e-5)
  # Code quirk: the negative text scored with the anchor's word count.
  quirk = np.array([ref_damsm_score(reg[i], words[neg[i]], wmask[i], 4.0, 5.0)
                    for i in range(6)])
  got = losses.damsm_word_pair_scores(reg, words[neg], wmask, gamma1=4.0,
                                      gamma2=5.0)
  np.testing.assert_allclose(got, quirk, rtol=1e-5, atol=1e-5)
  loss_q, _ = losses.word_triplet(jnp.asarray(r, jnp.float32), margin=0.5,
                                  negatives=neg,
                                  image_anchor_negative_scores=got)
  i2t_q = np.mean([max(0, -r[i, i] + quirk[i] + 0.5) for i in range(6)])
  np.testing.assert_allclose(loss_q, i2t_q + t2i, rtol=1e-5)


def _lovt_inputs(seed=8, b=3, n=9, d=6):
  g = np.random.default_rng(seed)
  zl = g.normal(size=(b, n, d)).astype(np.float32)
  za = (zl + g.normal(size=(b, n, d))).astype(np.float32)
  return zl, za, g.random((b, n)).astype(np.float32)


@pytest.mark.parametrize("spatial", [True, False])
def test_lovt_local_matches_reference(spatial):
  zl, za, wts = _lovt_inputs()
  mask = np.ones(wts.shape, bool)
  if not spatial:
    mask[1, 6:] = False  # padded sentences
    mask[2, 2:] = False
  pos = losses.grid_positions(3, 3) if spatial else None
  loss, aux = losses.lovt_local(zl, za, wts, mask, temperature=0.3,
                                positions=pos, threshold=0.5,
                                smooth_lambda=1.0)
  l2att = ref_lovt_direction(zl, za, wts, mask, 0.3, pos, 0.5, 1.0)
  att2l = ref_lovt_direction(za, zl, wts, mask, 0.3, pos, 0.5, 1.0)
  np.testing.assert_allclose(aux["l2att"], l2att, rtol=1e-5)
  np.testing.assert_allclose(aux["att2l"], att2l, rtol=1e-5)
  np.testing.assert_allclose(loss, l2att + att2l, rtol=1e-5)


def test_grid_positions_and_soft_targets():
  pos = losses.grid_positions(7, 7)
  assert pos.shape == (49, 2)
  np.testing.assert_allclose(np.linalg.norm(pos[-1] - pos[0]),
                             6 * math.sqrt(2) / math.sqrt(98), rtol=1e-6)
  pi = np.asarray(losses.soft_targets(pos, 49, threshold=0.5,
                                      smooth_lambda=1.0))
  d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
  np.testing.assert_allclose(pi, np.where(d <= 0.5, np.exp(-d), 0.0),
                             rtol=1e-6)
  np.testing.assert_array_equal(
      losses.soft_targets(None, 4, threshold=0.0, smooth_lambda=1.0),
      np.eye(4))


def test_lovt_weights_are_stop_gradient():
  zl, za, wts = _lovt_inputs(9)
  g = jax.grad(lambda w: losses.lovt_local(zl, za, w, None,
                                           temperature=0.3)[0])(wts)
  assert np.all(np.asarray(g) == 0)


def test_mlm_mask_split_and_loss():
  v, mask_id = 40, 39
  tokens = jax.random.randint(jax.random.key(0), (64, 512), 0, v - 1)
  masked, targets, w = losses.mlm_mask(jax.random.key(1), tokens,
                                       vocab_size=v, mask_id=mask_id)
  tokens, masked, w = map(np.asarray, (tokens, masked, w))
  np.testing.assert_array_equal(targets, tokens)
  eligible = tokens >= 4
  sel = w > 0
  assert not np.any(sel & ~eligible)  # specials (ids < 4) never selected
  np.testing.assert_allclose(sel.sum() / eligible.sum(), 0.15, atol=0.01)
  to_mask = (masked == mask_id) & sel
  changed = (masked != tokens) & (masked != mask_id)
  kept = (masked == tokens) & sel
  np.testing.assert_allclose(to_mask.sum() / sel.sum(), 0.8, atol=0.02)
  # Random replacements that happen to equal the original count as "kept".
  np.testing.assert_allclose(changed.sum() / sel.sum(), 0.1 * 35 / 36,
                             atol=0.02)
  np.testing.assert_allclose(kept.sum() / sel.sum(), 0.1 + 0.1 / 36,
                             atol=0.02)
  assert np.all(masked[~sel] == tokens[~sel])
  rnd = masked[changed]
  assert rnd.min() >= 4 and rnd.max() < v and not np.any(rnd == mask_id)
  # Loss: weighted CE over the selected positions, vs a loop reference.
  g = np.random.default_rng(2)
  logits = g.normal(size=(2, 5, 7)).astype(np.float32)
  tgt = g.integers(0, 7, size=(2, 5))
  wt = (g.random((2, 5)) < 0.5).astype(np.float32)
  wt[0, 0] = 1.0
  ref = [(_lse(logits[b, t]) - logits[b, t, tgt[b, t]])
         for b in range(2) for t in range(5) if wt[b, t]]
  loss, aux = losses.mlm(logits, tgt, wt)
  np.testing.assert_allclose(loss, np.mean(ref), rtol=1e-5)
  assert float(aux["num_masked"]) == len(ref)
  with pytest.raises(ValueError, match="mask_id 50 outside vocabulary of 40"):
    losses.mlm_mask(jax.random.key(0), tokens, vocab_size=40, mask_id=50)


# ----------------------------------------------------- masks and padding ---


def test_padded_examples_change_nothing():
  zi, zt = _pair(10, b=6)
  reg, words, wmask = _damsm_inputs(11, b=6)
  g = np.random.default_rng(12)

  def pad(x):
    return np.concatenate([x, g.normal(size=(2,) + x.shape[1:]).astype(
        x.dtype)])

  mask = np.arange(8) < 6
  cases = [
      lambda m, a, b: losses.infonce(a, b, temperature=0.1, i2t_weight=0.75,
                                     mask=m),
      lambda m, a, b: losses.damsm_sentence(a, b, gamma3=10.0, mask=m),
      lambda m, a, b: losses.siglip(a, b, logit_scale=2.3, logit_bias=-10.0,
                                    mask=m),
      lambda m, a, b: losses.triplet(a, b, margin=0.5, mask=m),
      lambda m, a, b: losses.triplet(a, b, margin=0.5, hardest=False, mask=m),
  ]
  for fn in cases:
    np.testing.assert_allclose(fn(mask, pad(zi), pad(zt))[0],
                               fn(None, zi, zt)[0], rtol=1e-6)
  neg = np.asarray(losses.random_negatives(jax.random.key(3), 6))
  np.testing.assert_allclose(
      losses.triplet(pad(zi), pad(zt), margin=0.5,
                     negatives=np.concatenate([neg, [0, 1]]), mask=mask)[0],
      losses.triplet(zi, zt, margin=0.5, negatives=neg)[0], rtol=1e-6)
  kw = dict(gamma1=4.0, gamma2=5.0, gamma3=10.0)
  damsm_word = losses.damsm_word
  ref = damsm_word(reg, words, wmask, **kw)[0]
  wmask_p = np.concatenate([wmask, np.ones((2, wmask.shape[1]), bool)])
  np.testing.assert_allclose(
      damsm_word(pad(reg), pad(words), wmask_p, mask=mask, **kw)[0],
      ref, rtol=1e-6)
  # A text without any valid word is dropped like a masked example.
  wmask_e = np.concatenate([wmask, np.zeros((2, wmask.shape[1]), bool)])
  np.testing.assert_allclose(
      damsm_word(pad(reg), pad(words), wmask_e, **kw)[0], ref,
      rtol=1e-6)


def test_lovt_padded_sentences_change_nothing():
  zl, za, wts = _lovt_inputs(13)
  g = np.random.default_rng(14)

  def junk(x):
    extra = g.normal(size=(x.shape[0], 2) + x.shape[2:]).astype(x.dtype)
    return np.concatenate([x, extra], 1)

  mask = np.arange(11)[None].repeat(3, 0) < 9
  a = losses.lovt_local(junk(zl), junk(za), junk(wts), mask,
                        temperature=0.3)[0]
  b = losses.lovt_local(zl, za, wts, None, temperature=0.3)[0]
  np.testing.assert_allclose(a, b, rtol=1e-6)


# ------------------------------------------------ gradients, bf16, errors ---


def _all_losses(zi, zt, reg, words, wmask, zl, za, wts):
  neg = jnp.arange(zi.shape[0])[::-1]
  return {
      "infonce": losses.infonce(zi, zt, temperature=0.1)[0],
      "siglip": losses.siglip(zi, zt, logit_scale=2.3, logit_bias=-10.0)[0],
      "triplet": losses.triplet(zi, zt, margin=0.5)[0],
      "triplet_neg": losses.triplet(zi, zt, margin=0.5, negatives=neg)[0],
      "damsm_sentence": losses.damsm_sentence(zi, zt, gamma3=10.0)[0],
      "damsm_word": losses.damsm_word(reg, words, wmask, gamma1=4.0,
                                      gamma2=5.0, gamma3=10.0,
                                      chunk_size=2)[0],
      "lovt_local": losses.lovt_local(
          zl, za, wts, None, temperature=0.3,
          positions=losses.grid_positions(3, 3))[0],
  }


def test_gradients_finite_and_bf16_inputs_stay_finite():
  zi, zt = _pair(15, b=6)
  reg, words, wmask = _damsm_inputs(16, b=6)
  zl, za, wts = _lovt_inputs(17)
  args = (zi, zt, reg, words, wmask, zl, za, wts)

  @jax.jit
  def grads(zi, zt, reg, words, zl, za):
    return {k: jax.grad(lambda *a: _all_losses(*a[:4], wmask, *a[4:], wts)[k],
                        argnums=range(6))(zi, zt, reg, words, zl, za)
            for k in _all_losses(*args)}

  for name, gs in grads(zi, zt, reg, words, zl, za).items():
    assert all(np.all(np.isfinite(g)) for g in gs), name
    assert any(np.any(g != 0) for g in gs), name
  f32 = _all_losses(*args)
  b16 = jax.jit(_all_losses)(*[
      jnp.asarray(x, jnp.bfloat16) if x.dtype == np.float32 else x
      for x in args])
  for name, value in b16.items():
    assert value.dtype == jnp.float32, name
    assert np.isfinite(float(value)), name
    np.testing.assert_allclose(value, f32[name], rtol=0.1, atol=0.1)


def test_bad_shapes_raise_clear_errors():
  zi, zt = _pair()
  with pytest.raises(ValueError, match=r"zimg and ztxt must both be \[B, D\]"):
    losses.infonce(zi, zt[:4], temperature=0.1)
  with pytest.raises(ValueError, match=r"mask must have shape \(8,\)"):
    losses.infonce(zi, zt, temperature=0.1, mask=np.ones(3, bool))
  reg, words, wmask = _damsm_inputs()
  with pytest.raises(ValueError, match="region dim 8 != word dim 4"):
    losses.damsm_word_scores(reg, words[..., :4], wmask, gamma1=4.0,
                             gamma2=5.0)
  with pytest.raises(ValueError, match="chunk_size must be >= 1"):
    losses.damsm_word_scores(reg, words, wmask, gamma1=4.0, gamma2=5.0,
                             chunk_size=0)
  zl, za, wts = _lovt_inputs()
  with pytest.raises(ValueError, match=r"positions has 4 rows, expected N=9"):
    losses.lovt_local(zl, za, wts, None, temperature=0.3,
                      positions=np.zeros((4, 2)))
