"""Global retrieval: recall both ways, 1k pools, label-relevance nDCG.

JoImTeRNet protocol (METHODS.md §2.5): cosine similarity of global
embeddings, R@1/5/10 image->text and text->image on the full pool and as
the mean over disjoint 1,000-study pools; plus median rank and MRR. Hsu et
al.'s "global" retrieval: nDCG@1/@100 text->image with graded relevance =
number of shared positive CheXpert labels, label precision@K, and the mean
cosine of true pairs. All scores are computed in chunks (see
`retrieval_metrics`), so 100k x 100k pools fit in memory.
"""

from typing import Sequence

import numpy as np

from jointcxr.evaluators import retrieval_metrics as rm


def metrics(emb, *, ks: Sequence[int] = (1, 5, 10),
            pool_size: int | None = 1000, ndcg_ks: Sequence[int] = (1, 100),
            precision_k: int = 10, chunk_size: int = 1024) -> dict:
  """Flat metric dict (keys like `retrieval/i2t/R@1`)."""
  out = {}
  kmax = max(max(ks), max(ndcg_ks), precision_k)
  r_i2t, _ = rm.ranks_and_topk(emb.img, emb.txt, k=0,  # ranks only
                               chunk_size=chunk_size)
  r_t2i, top_t2i = rm.ranks_and_topk(emb.txt, emb.img, k=kmax,
                                     chunk_size=chunk_size)
  for name, ranks in (("i2t", r_i2t), ("t2i", r_t2i)):
    for key, val in rm.recall_metrics(ranks, ks).items():
      out[f"retrieval/{name}/{key}"] = val
  if pool_size and len(emb.img) >= pool_size:
    for name, (q, g) in (("i2t", (emb.img, emb.txt)),
                         ("t2i", (emb.txt, emb.img))):
      for key, val in rm.chunked_pool_metrics(q, g, pool_size=pool_size,
                                              ks=ks).items():
        out[f"retrieval_{pool_size}/{name}/{key}"] = val
  labels = np.where(emb.labels_present, emb.labels, 0.0)
  for k in ndcg_ks:
    out[f"retrieval/t2i/nDCG@{k}"] = rm.ndcg_at_k(top_t2i, labels, labels, k)
  out[f"retrieval/t2i/label_P@{precision_k}"] = rm.label_precision_at_k(
      top_t2i, labels, labels, precision_k)
  out["retrieval/pair_cosine"] = rm.mean_pair_cosine(emb.img, emb.txt)
  out["retrieval/pool_size"] = float(len(emb.img))
  return out
