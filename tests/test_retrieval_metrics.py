"""Retrieval metrics against brute-force NumPy references."""

import numpy as np
import pytest

from jointcxr.evaluators import retrieval_metrics as rm


def _np_ranks(q, g):
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  g = g / np.linalg.norm(g, axis=1, keepdims=True)
  sim = q @ g.T
  ranks = []
  for i in range(len(q)):
    others = np.delete(sim[i], i)
    ranks.append(1 + np.sum(others >= sim[i, i]))
  return np.array(ranks)


def test_ranks_match_bruteforce_and_chunking_is_invisible():
  rng = np.random.default_rng(0)
  q, g = rng.normal(size=(37, 8)), rng.normal(size=(37, 8))
  ref = _np_ranks(q, g)
  for chunk in (5, 16, 64):
    ranks, topk = rm.ranks_and_topk(q, g, k=4, chunk_size=chunk)
    np.testing.assert_array_equal(ranks, ref)
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        g / np.linalg.norm(g, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(topk, np.argsort(-sim, axis=1)[:, :4])


def _np_topk(q, g, k, mask=None):
  """Top-k by (score desc, index asc), NumPy's stable sort."""
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  g = g / np.linalg.norm(g, axis=1, keepdims=True)
  sim = q @ g.T
  if mask is not None:
    sim = np.where(mask[None, :], sim, -np.inf)
  return np.argsort(-sim, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("chunk,block", [(5, 10), (16, 16), (7, 4096),
                                         (64, 8)])
def test_blocked_pass_matches_bruteforce(chunk, block):
  # Many blocks, a ragged last block and chunk, k spanning blocks.
  rng = np.random.default_rng(4)
  q, g = rng.normal(size=(37, 8)), rng.normal(size=(37, 8))
  for k in (1, 4, 12):
    ranks, topk = rm.ranks_and_topk(q, g, k=k, chunk_size=chunk,
                                    block_size=block)
    np.testing.assert_array_equal(ranks, _np_ranks(q, g))
    np.testing.assert_array_equal(topk, _np_topk(q, g, k))
  ranks0, top0 = rm.ranks_and_topk(q, g, k=0, chunk_size=chunk,
                                   block_size=block)
  np.testing.assert_array_equal(ranks0, _np_ranks(q, g))
  assert top0.shape == (37, 0)


def test_grouped_topk_exact_with_duplicates_and_mask():
  # Embeddings with many duplicate rows: scores tie exactly, and
  # top-k must break ties to the lower index across groups and blocks
  # (n = 3000 with block 1024: groups of 4+ columns are used).
  # Four +-1 entries per row: unit rows are +-0.5, every score a multiple
  # of 0.25, exact in float32 and float64 alike.
  rng = np.random.default_rng(5)
  base = np.zeros((40, 8))
  for row in base:
    row[rng.permutation(8)[:4]] = rng.choice([-1.0, 1.0], 4)
  g = base[rng.integers(0, 40, size=3000)]
  q = g[rng.permutation(3000)] + 0.0
  mask = rng.random(3000) > 0.2
  ranks, topk = rm.ranks_and_topk(q, g, k=10, chunk_size=256,
                                  block_size=1024, gallery_mask=mask)
  np.testing.assert_array_equal(topk, _np_topk(q, g, 10, mask))
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  gn = g / np.linalg.norm(g, axis=1, keepdims=True)
  sim = np.where(mask[None, :], qn @ gn.T, -np.inf)
  # A positive masked out of the gallery scores -inf: every kept item
  # ranks above it.
  ref = [1 + np.sum(np.delete((sim[i] >= sim[i, i]) & mask, i))
         for i in range(3000)]
  np.testing.assert_array_equal(ranks, ref)
  assert rm._group_size(1024, 10) > 1  # pylint: disable=protected-access


def test_perfect_embeddings_give_r1_one_and_random_about_k_over_n():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200, 32))
  ranks, _ = rm.ranks_and_topk(x, x * 3.0, k=1)
  m = rm.recall_metrics(ranks)
  assert m["R@1"] == 1.0 and m["MRR"] == 1.0 and m["median_rank"] == 1.0
  n = 400
  r = [rm.recall_metrics(rm.ranks_and_topk(rng.normal(size=(n, 16)),
                                           rng.normal(size=(n, 16)), k=1)[0])
       for _ in range(3)]
  r10 = np.mean([m["R@10"] for m in r])
  assert abs(r10 - 10 / n) < 0.02
  assert abs(np.mean([m["median_rank"] for m in r]) - n / 2) < n * 0.1


def test_ties_are_pessimistic():
  x = np.ones((5, 3))
  ranks, _ = rm.ranks_and_topk(x, x, k=1)
  np.testing.assert_array_equal(ranks, [5] * 5)
  # Constant embeddings over many blocks: the positive's score comes from
  # the same product as its block's, so every item ties with it.
  x = np.full((300, 16), 0.3)
  ranks, _ = rm.ranks_and_topk(x, x, k=3, chunk_size=32, block_size=64)
  np.testing.assert_array_equal(ranks, [300] * 300)


def test_ndcg_hand_computed():
  # One query with labels {A}; gallery relevance: [0, 1, 0, 1] (A in 1 and 3).
  ql = np.array([[1, 0]])
  gl = np.array([[0, 1], [1, 0], [0, 0], [1, 1]])
  topk = np.array([[0, 1, 2, 3]])
  # gains 2^rel-1 = [0,1,0,1]; DCG@4 = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
  expected = (1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3))
  assert rm.ndcg_at_k(topk, ql, gl, k=4) == pytest.approx(expected)
  assert rm.ndcg_at_k(np.array([[3, 1, 0, 2]]), ql, gl, k=1) == 1.0
  assert rm.ndcg_at_k(topk, ql, gl, k=1) == 0.0
  assert rm.label_precision_at_k(topk, ql, gl, k=2) == 0.5
  # Chunking the queries changes nothing.
  rng = np.random.default_rng(2)
  qls = (rng.random((30, 5)) < 0.3).astype(float)
  gls = (rng.random((40, 5)) < 0.3).astype(float)
  tk = np.stack([rng.permutation(40)[:10] for _ in range(30)])
  assert rm.ndcg_at_k(tk, qls, gls, 10, chunk_size=7) == pytest.approx(
      rm.ndcg_at_k(tk, qls, gls, 10, chunk_size=512))


def test_chunked_pools_and_pair_cosine():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2500, 8))
  m = rm.chunked_pool_metrics(x, x, pool_size=1000)
  assert m["R@1"] == 1.0
  assert rm.mean_pair_cosine(x, 2 * x) == pytest.approx(1.0)
  assert rm.mean_pair_cosine(x, -x) == pytest.approx(-1.0)


def test_mismatched_lengths_error():
  with pytest.raises(ValueError, match="differ in length: 3 vs 4"):
    rm.ranks_and_topk(np.ones((3, 2)), np.ones((4, 2)))


def test_non_finite_embeddings_error():
  x = np.ones((4, 2))
  x[2, 1] = np.nan
  with pytest.raises(ValueError, match=r"^retrieval gallery: 1 of 4 "
                     r"embeddings are not finite \(NaN/inf\)$"):
    rm.ranks_and_topk(np.ones((4, 2)), x)
