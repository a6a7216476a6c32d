"""Embedding-health statistics: is a joint embedding space learning at all?

A contrastive run whose towers collapse (every image, or every report, maps
to nearly the same vector) keeps its InfoNCE loss at ln(B), its positive
pairs as similar as its negatives, and nothing in the loss curve looks
broken. These statistics make that visible, for the image and the text
tower separately, on an `[N, D]` batch of global embeddings:

* `dim_std`: mean over the D dimensions of the (population) std of the
  L2-normalised embeddings across examples; 0 when collapsed, about
  1/sqrt(D) for embeddings spread evenly over the sphere (LoVT's `ch_std`).
* `uniformity` (Wang & Isola 2020): log of the mean over pairs i != j of
  exp(-2 ||z_i - z_j||^2); 0 when collapsed (the maximum), near -4 for
  points spread over a high-dimensional sphere (lower = more uniform).
* `effective_rank` (Roy & Vetterli 2007): exp of the entropy of the
  normalised singular values of the (uncentred) normalised embedding
  matrix; 1 when collapsed, up to min(N, D).
* `pair_similarity`: mean cosine of positive pairs (image i, report i) and
  of negative pairs (i != j); equal when the embeddings carry no pairing.

Everything is jnp and shape-static, so the trainer computes it inside its
jitted step from the step's own embeddings (B x D, no extra forward pass).
`mask` (`[N]` bool) leaves padded rows out, as the eval pipeline pads its
last batch. Statistics that are undefined for the rows given (fewer than
two valid rows for the pairwise ones) are NaN.

`host_stats` is the entry point for the eval binaries: it takes host arrays
of a whole split and computes the pairwise statistic and the rank on an
evenly spaced subset of at most `max_rows` rows (N^2 pairs of a 100k-study
split would not fit), the rest on every row.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jointcxr.losses import core

Array = jax.Array

# The keys `tower_stats` / `host_stats` return (besides `sim/pos`,
# `sim/neg`), in logging order.
STAT_NAMES = ("std", "uniformity", "eff_rank")


def _valid(z: Array, mask: Array | None) -> Array:
  return core.valid_or_ones(mask, z.shape[0])


def normalized_rows(z: Array, mask: Array | None = None) -> Array:
  """L2-normalised rows (>= float32) with invalid rows set to zero.

  Args:
    z: `[N, D]` raw embeddings.
    mask: optional `[N]` bool of real rows.

  Returns:
    `[N, D]` unit rows, zero where `mask` is False.
  """
  zn = core.l2_normalize(jax.lax.stop_gradient(z))
  return jnp.where(_valid(z, mask)[:, None], zn, 0.0)


def dim_std(z: Array, mask: Array | None = None) -> Array:
  """Mean per-dimension std of the normalised valid rows (population std).

  Args:
    z: `[N, D]` raw embeddings.
    mask: optional `[N]` bool of real rows.

  Returns:
    Scalar: 0 for identical rows, ~1/sqrt(D) for isotropic ones; NaN when
    no row is valid.
  """
  zn = normalized_rows(z, mask)
  w = _valid(z, mask).astype(zn.dtype)[:, None]
  n = jnp.sum(w)
  mean = jnp.sum(zn, axis=0) / n
  var = jnp.sum(w * (zn - mean) ** 2, axis=0) / n
  return jnp.mean(jnp.sqrt(jnp.maximum(var, 0.0)))


def uniformity(z: Array, mask: Array | None = None, t: float = 2.0) -> Array:
  """Wang & Isola's uniformity: log mean_{i != j} exp(-t ||z_i - z_j||^2).

  Args:
    z: `[N, D]` raw embeddings (normalised here).
    mask: optional `[N]` bool of real rows.
    t: the kernel's scale (2, as in the paper and LoVT).

  Returns:
    Scalar <= 0 (0 = collapsed); NaN with fewer than two valid rows.
  """
  zn = normalized_rows(z, mask)
  valid = _valid(z, mask)
  # ||a - b||^2 = 2 - 2 a.b for unit rows; clipped against rounding.
  sq = jnp.maximum(2.0 - 2.0 * (zn @ zn.T), 0.0)
  n = zn.shape[0]
  pair = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
  count = jnp.sum(pair.astype(zn.dtype))
  lse = jax.nn.logsumexp(jnp.where(pair, -t * sq, -jnp.inf))
  return jnp.where(count > 0, lse - jnp.log(jnp.maximum(count, 1.0)),
                   jnp.nan)


def effective_rank(z: Array, mask: Array | None = None) -> Array:
  """Roy & Vetterli's effective rank of the normalised embedding matrix.

  exp(H(p)) with p_k = s_k / sum(s) over the singular values s of the
  uncentred matrix of unit rows. Computed from the SVD of the rows, not
  from the eigenvalues of a Gram matrix: in float32 the Gram's rounding
  noise (~1e-7 of its top eigenvalue) becomes singular values of ~3e-4 of
  the top one, and hundreds of them add up to a visible rank for a
  collapsed batch.

  Args:
    z: `[N, D]` raw embeddings.
    mask: optional `[N]` bool of real rows (invalid rows add only zero
      singular values).

  Returns:
    Scalar in [1, min(N, D)]: 1 for identical rows; NaN when no row is
    valid.
  """
  zn = normalized_rows(z, mask)
  s = jnp.linalg.svd(zn, compute_uv=False)
  total = jnp.sum(s)
  p = s / jnp.where(total > 0, total, 1.0)
  ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)),
                           0.0))
  return jnp.where(total > 0, jnp.exp(ent), jnp.nan)


def pair_similarity(zimg: Array, ztxt: Array,
                    mask: Array | None = None) -> dict[str, Array]:
  """Mean cosine of positive (i, i) and negative (i, j != i) pairs.

  The negative mean over all N(N-1) pairs is taken from column sums
  (sum_i z_i . sum_j t_j minus the diagonal), so it costs O(N D) and works
  on whole eval splits.

  Args:
    zimg: `[N, D]` raw image embeddings.
    ztxt: `[N, D]` raw text embeddings (row i pairs with image i).
    mask: optional `[N]` bool of real rows.

  Returns:
    dict with `pos` and `neg` (NaN when undefined: no valid row / fewer
    than two).
  """
  zi, zt = normalized_rows(zimg, mask), normalized_rows(ztxt, mask)
  n = jnp.sum(_valid(zimg, mask).astype(zi.dtype))
  diag = jnp.sum(zi * zt)
  off = jnp.dot(jnp.sum(zi, axis=0), jnp.sum(zt, axis=0)) - diag
  pos = jnp.where(n > 0, diag / jnp.maximum(n, 1.0), jnp.nan)
  neg = jnp.where(n > 1, off / jnp.maximum(n * (n - 1), 1.0), jnp.nan)
  return {"pos": pos, "neg": neg}


def stats(z: Array, mask: Array | None = None) -> dict[str, Array]:
  """`std`, `uniformity` and `eff_rank` of one tower's embeddings."""
  return {"std": dim_std(z, mask), "uniformity": uniformity(z, mask),
          "eff_rank": effective_rank(z, mask)}


def tower_stats(zimg: Array, ztxt: Array, mask: Array | None = None, *,
                prefix: str = "health/") -> dict[str, Array]:
  """Both towers' statistics as flat keys (`health/img_std`, ...).

  Args:
    zimg: `[N, D]` raw image embeddings.
    ztxt: `[N, D]` raw text embeddings.
    mask: optional `[N]` bool of real rows.
    prefix: key prefix.

  Returns:
    `{prefix}{img,txt}_{std,uniformity,eff_rank}` float scalars.
  """
  out = {}
  for tower, z in (("img", zimg), ("txt", ztxt)):
    for name, value in stats(z, mask).items():
      out[f"{prefix}{tower}_{name}"] = value
  return out


def _even_subset(n: int, max_rows: int) -> np.ndarray:
  """At most `max_rows` evenly spaced row indices of `range(n)`."""
  if n <= max_rows:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, max_rows).round().astype(int))


def host_stats(zimg: Any, ztxt: Any, *, max_rows: int = 4096
               ) -> dict[str, float]:
  """Embedding health of a whole embedded split (eval binaries).

  `std` and the pair similarities use every row; `uniformity` and
  `eff_rank` use at most `max_rows` evenly spaced rows (the same rows for
  both towers): exact up to that many rows, an estimate beyond.

  Args:
    zimg: `[N, D]` image embeddings (host or device array).
    ztxt: `[N, D]` text embeddings.
    max_rows: cap on the rows of the pairwise and the rank statistic.

  Returns:
    Python floats under `health/{img,txt}_{std,uniformity,eff_rank}`,
    `health/rows` (rows of the subset) and `sim/pos`, `sim/neg`.
  """
  zimg, ztxt = np.asarray(zimg), np.asarray(ztxt)
  idx = _even_subset(len(zimg), max_rows)
  out = {}
  for tower, z in (("img", zimg), ("txt", ztxt)):
    sub = jnp.asarray(z[idx])
    out[f"health/{tower}_std"] = dim_std(jnp.asarray(z))
    out[f"health/{tower}_uniformity"] = uniformity(sub)
    out[f"health/{tower}_eff_rank"] = effective_rank(sub)
  sim = pair_similarity(jnp.asarray(zimg), jnp.asarray(ztxt))
  out["sim/pos"], out["sim/neg"] = sim["pos"], sim["neg"]
  out = {k: float(v) for k, v in out.items()}
  out["health/rows"] = float(len(idx))
  return out
