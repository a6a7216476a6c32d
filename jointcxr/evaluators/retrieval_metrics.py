"""Cross-modal retrieval metrics that scale to 100k x 100k pools.

The similarity matrix is never materialised: queries are processed in chunks
of `chunk_size` rows, each chunk scored against the whole gallery on device,
and only per-query statistics (the rank of the true match, the top-k indices)
come back to the host. Memory is O(chunk_size * N) instead of O(N^2).

Conventions: row i of `queries` is paired with row i of `gallery` (the true
match); similarities are cosine (both sides are L2-normalised here). Ranks are
1-based; ties are broken pessimistically (a tie with the positive counts
against it), so constant embeddings give the worst rank, not the best.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def l2_normalize(x: np.ndarray | jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@functools.partial(jax.jit, static_argnames=("k",))
def _chunk_stats(q: jax.Array, gallery: jax.Array, pos_idx: jax.Array,
                 valid: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Rank of each query's positive and its top-k gallery indices."""
  sim = q @ gallery.T  # [c, N]
  sim = jnp.where(valid[None, :], sim, -jnp.inf)
  pos = jnp.take_along_axis(sim, pos_idx[:, None], axis=1)  # [c, 1]
  # Pessimistic ties: every other item scoring >= the positive ranks above it.
  not_self = jnp.arange(gallery.shape[0])[None, :] != pos_idx[:, None]
  rank = 1 + jnp.sum((sim >= pos) & not_self & valid[None, :], axis=1)
  _, topk = jax.lax.top_k(sim, k)
  return rank, topk


def ranks_and_topk(
    queries: np.ndarray | jax.Array,
    gallery: np.ndarray | jax.Array,
    *,
    k: int = 10,
    chunk_size: int = 1024,
    gallery_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Rank of the true match and top-k gallery indices, query chunk by chunk.

  Args:
    queries: [N, D] query embeddings (raw; normalised here).
    gallery: [N, D] gallery embeddings, row i paired with query i.
    k: how many top indices to keep per query (clipped to N).
    chunk_size: queries scored per device call; bounds memory.
    gallery_mask: optional [N] bool, False rows are excluded from the gallery.

  Returns:
    (ranks [N] int64, 1-based; topk [N, k] int64).
  """
  q = l2_normalize(queries)
  g = l2_normalize(gallery)
  n = q.shape[0]
  if g.shape[0] != n:
    raise ValueError(f"queries and gallery differ in length: {n} vs "
                     f"{g.shape[0]} (row i must pair with row i)")
  valid = jnp.ones((n,), bool) if gallery_mask is None else jnp.asarray(
      gallery_mask, bool)
  k = int(min(k, n))
  ranks, topks = [], []
  for start in range(0, n, chunk_size):
    stop = min(start + chunk_size, n)
    # Pad the last chunk to a fixed size so it reuses the compiled kernel.
    idx = np.arange(start, start + chunk_size) % n
    r, t = _chunk_stats(q[idx], g, jnp.asarray(idx), valid, k)
    ranks.append(np.asarray(r)[: stop - start])
    topks.append(np.asarray(t)[: stop - start])
  return np.concatenate(ranks).astype(np.int64), np.concatenate(
      topks).astype(np.int64)


def recall_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict:
  """R@K, median rank and MRR from 1-based ranks of the true match."""
  ranks = np.asarray(ranks, np.float64)
  out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
  out["median_rank"] = float(np.median(ranks))
  out["MRR"] = float(np.mean(1.0 / ranks))
  return out


def chunked_pool_metrics(
    queries: np.ndarray, gallery: np.ndarray, *, pool_size: int = 1000,
    ks: Sequence[int] = (1, 5, 10),
) -> dict:
  """JoImTeRNet's "R-1k": mean of the metrics over disjoint pools of 1,000.

  The pools are consecutive, disjoint blocks in the given (fixed) order; a
  trailing block smaller than `pool_size` is dropped, as in the protocol of
  3 chunks over the 3,000-study test set.
  """
  n = len(queries)
  blocks = [(s, s + pool_size) for s in range(0, n - pool_size + 1, pool_size)]
  if not blocks:
    return {}
  per_block = []
  for s, e in blocks:
    ranks, _ = ranks_and_topk(queries[s:e], gallery[s:e], k=1)
    per_block.append(recall_metrics(ranks, ks))
  return {key: float(np.mean([m[key] for m in per_block]))
          for key in per_block[0]}


def relevance(query_labels: np.ndarray, gallery_labels: np.ndarray,
              kind: str = "shared_positives") -> np.ndarray:
  """Graded relevance between label vectors (1 = positive, else not).

  Args:
    query_labels: [Q, L] CheXpert-style labels (1 positive; 0/-1/NaN not).
    gallery_labels: [G, L] same.
    kind: "shared_positives" (count of shared positive labels; a "No
      Finding" pair counts as one shared label) or "jaccard".

  Returns:
    [Q, G] float relevance.
  """
  a = (np.nan_to_num(np.asarray(query_labels, np.float64)) == 1).astype(
      np.float64)
  b = (np.nan_to_num(np.asarray(gallery_labels, np.float64)) == 1).astype(
      np.float64)
  inter = a @ b.T
  if kind == "shared_positives":
    return inter
  if kind == "jaccard":
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
  raise ValueError(f"unknown relevance kind {kind!r}; expected "
                   "'shared_positives' or 'jaccard'")


def ndcg_at_k(topk: np.ndarray, query_labels: np.ndarray,
              gallery_labels: np.ndarray, k: int,
              kind: str = "shared_positives", chunk_size: int = 512) -> float:
  """Mean nDCG@k of retrieved lists with label-based graded relevance.

  DCG uses gains (2^rel - 1) and log2(rank + 1) discounts; the ideal DCG is
  computed over the whole gallery for each query. Queries with no relevant
  item anywhere are skipped (their nDCG is undefined). Relevance is computed
  `chunk_size` queries at a time so large pools fit in memory.
  """
  k = min(k, topk.shape[1], len(gallery_labels))
  disc = 1.0 / np.log2(np.arange(2, k + 2))
  scores = []
  for s in range(0, len(topk), chunk_size):
    gains = 2.0 ** relevance(query_labels[s:s + chunk_size], gallery_labels,
                             kind) - 1.0
    got = np.take_along_axis(gains, topk[s:s + chunk_size, :k], axis=1)
    dcg = (got * disc).sum(1)
    # The k largest gains, in decreasing order, give the ideal ranking.
    ideal = -np.sort(-np.partition(gains, gains.shape[1] - k, axis=1)[:, -k:],
                     axis=1)
    idcg = (ideal * disc).sum(1)
    ok = idcg > 0
    scores.append(dcg[ok] / idcg[ok])
  scores = np.concatenate(scores)
  return float(scores.mean()) if scores.size else float("nan")


def label_precision_at_k(topk: np.ndarray, query_labels: np.ndarray,
                         gallery_labels: np.ndarray, k: int,
                         chunk_size: int = 512) -> float:
  """Share of the top-k retrieved items sharing >= 1 positive label."""
  k = min(k, topk.shape[1])
  hits = []
  for s in range(0, len(topk), chunk_size):
    rel = relevance(query_labels[s:s + chunk_size], gallery_labels) > 0
    hits.append(np.take_along_axis(rel, topk[s:s + chunk_size, :k], axis=1))
  return float(np.concatenate(hits).mean())


def mean_pair_cosine(a: np.ndarray, b: np.ndarray) -> float:
  """Mean cosine similarity of true pairs (row i with row i)."""
  a = np.asarray(l2_normalize(a))
  b = np.asarray(l2_normalize(b))
  return float(np.mean(np.sum(a * b, axis=1)))
