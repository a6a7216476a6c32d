"""Row-block building blocks shared by the plain and the sharded losses.

Every batch-level loss in this package is a sum over *anchor rows* of a
score matrix whose columns are all candidates of the global batch. The
functions here score one block of anchor rows against all columns and return
*sums* (not means) plus counts, so that:

* the plain losses call them once with the whole batch as the block, and
* the `shard_map` losses (`jointcxr.losses.sharded`) call them on each
  device's local rows against all-gathered columns, `psum` the sums over the
  data axis and only then divide.

Both paths therefore share one implementation of the arithmetic, while the
tests check both against independent float64 NumPy references.

Masking: invalid columns are pushed to a large finite negative (not -inf) so
that a fully masked row still has finite values and gradients; invalid rows
are zeroed out of every sum.
"""

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Stats = dict[str, Array]

# Finite stand-in for -inf in masked softmaxes: exp() of it underflows to 0
# in float32, yet fully masked rows stay finite (no NaN gradients).
NEG_INF = -1e9


def as_float(x: Any) -> Array:
  """Casts to a float dtype of at least float32 (keeps float64 if enabled).

  Losses are computed in float32 even for bf16 activations: bf16 logits over a
  large batch lose the positives' margin in the softmax.
  """
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-8) -> Array:
  """L2-normalises `x` along `axis` (upcast to >= float32).

  Args:
    x: array of raw embeddings.
    axis: feature axis.
    eps: floor on the norm, so an all-zero vector maps to zero, not NaN.

  Returns:
    `x / max(||x||, eps)` in float32 (or float64 when `x` is float64).
  """
  x = as_float(x)
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def valid_or_ones(mask: Array | None, n: int) -> Array:
  """Returns `mask` as bool `[n]`, or all-True when `mask` is None."""
  if mask is None:
    return jnp.ones((n,), bool)
  mask = jnp.asarray(mask)
  if mask.shape != (n,):
    raise ValueError(f"mask must have shape ({n},), got {mask.shape}")
  return mask.astype(bool)


def ce_rows(logits: Array, pos_idx: Array, row_valid: Array,
            col_valid: Array) -> Stats:
  """Softmax cross-entropy sums for a block of anchor rows.

  Args:
    logits: `[b, n]` scores of `b` anchors against `n` candidates.
    pos_idx: `[b]` column of each anchor's positive.
    row_valid: `[b]` bool; invalid anchors contribute nothing.
    col_valid: `[n]` bool; invalid candidates leave the denominator.

  Returns:
    dict with `loss_sum` (sum of -log softmax at the positive over valid
    rows), `correct_sum` (how many valid rows have their positive as argmax)
    and `count` (number of valid rows), all float scalars.
  """
  logits = as_float(logits)
  masked = jnp.where(col_valid[None, :], logits, NEG_INF)
  pos = jnp.take_along_axis(logits, pos_idx[:, None], axis=1)[:, 0]
  per_row = jax.nn.logsumexp(masked, axis=1) - pos
  correct = jnp.argmax(masked, axis=1) == pos_idx
  w = row_valid.astype(logits.dtype)
  return {
      "loss_sum": jnp.sum(jnp.where(row_valid, per_row, 0.0)),
      "correct_sum": jnp.sum(correct * w),
      "count": jnp.sum(w),
  }


def pair_stats(sim: Array, pos_idx: Array, row_valid: Array,
               col_valid: Array) -> Stats:
  """Sums of positive and negative similarities of a block (diagnostics).

  Args:
    sim: `[b, n]` similarities (e.g. cosines).
    pos_idx: `[b]` positive column per row.
    row_valid: `[b]` bool.
    col_valid: `[n]` bool.

  Returns:
    dict with `pos_sum`, `pos_count`, `neg_sum`, `neg_count`.
  """
  sim = jax.lax.stop_gradient(as_float(sim))
  is_pos = pos_idx[:, None] == jnp.arange(sim.shape[1])[None, :]
  pair_valid = row_valid[:, None] & col_valid[None, :]
  pos_w = (is_pos & pair_valid).astype(sim.dtype)
  neg_w = (~is_pos & pair_valid).astype(sim.dtype)
  return {
      "pos_sum": jnp.sum(sim * pos_w), "pos_count": jnp.sum(pos_w),
      "neg_sum": jnp.sum(sim * neg_w), "neg_count": jnp.sum(neg_w),
  }


def sigmoid_rows(logits: Array, pos_idx: Array, row_valid: Array,
                 col_valid: Array) -> Stats:
  """SigLIP pairwise log-sigmoid sums for a block of rows.

  Args:
    logits: `[b, n]` pair logits `t * cos + bias`.
    pos_idx: `[b]` positive column per row (label +1; all others -1).
    row_valid: `[b]` bool.
    col_valid: `[n]` bool.

  Returns:
    dict with `loss_sum` (sum over valid pairs of -log sigmoid(z * logit))
    and `count` (number of valid rows, the SigLIP normaliser).
  """
  logits = as_float(logits)
  is_pos = pos_idx[:, None] == jnp.arange(logits.shape[1])[None, :]
  labels = jnp.where(is_pos, 1.0, -1.0).astype(logits.dtype)
  pair_valid = row_valid[:, None] & col_valid[None, :]
  per_pair = -jax.nn.log_sigmoid(labels * logits)
  return {
      "loss_sum": jnp.sum(jnp.where(pair_valid, per_pair, 0.0)),
      "count": jnp.sum(row_valid.astype(logits.dtype)),
  }


def hinge_rows(sim: Array, pos_idx: Array, row_valid: Array,
               col_valid: Array, margin: Any, hardest: bool) -> Stats:
  """Triplet hinge sums `[m - s(i,i) + s(i,j)]+` over negatives j != i.

  Args:
    sim: `[b, n]` similarities of anchors (rows) to candidates.
    pos_idx: `[b]` positive column per row.
    row_valid: `[b]` bool.
    col_valid: `[n]` bool; invalid columns are never negatives.
    margin: hinge margin.
    hardest: max over negatives if True, else sum over them.

  Returns:
    dict with `loss_sum` (sum over valid anchors), `count` (valid anchors)
    and `active_sum` (number of (anchor, negative) terms with positive hinge,
    a diagnostic).
  """
  sim = as_float(sim)
  pos = jnp.take_along_axis(sim, pos_idx[:, None], axis=1)
  hinge = jax.nn.relu(margin - pos + sim)
  is_neg = (pos_idx[:, None] != jnp.arange(sim.shape[1])[None, :])
  is_neg = is_neg & col_valid[None, :]
  hinge = jnp.where(is_neg, hinge, 0.0)
  per_row = jnp.max(hinge, axis=1) if hardest else jnp.sum(hinge, axis=1)
  w = row_valid.astype(sim.dtype)
  return {
      "loss_sum": jnp.sum(per_row * w),
      "count": jnp.sum(w),
      "active_sum": jnp.sum((hinge > 0) * w[:, None]),
  }


def hinge_pairs(pos: Array, neg: Array, valid: Array, margin: Any) -> Stats:
  """Triplet hinge sums `[m - pos_i + neg_i]+` for one given negative each.

  Args:
    pos: `[b]` anchor-positive similarities.
    neg: `[b]` anchor-negative similarities.
    valid: `[b]` bool.
    margin: hinge margin.

  Returns:
    dict with `loss_sum`, `count` and `active_sum` as in `hinge_rows`.
  """
  hinge = jax.nn.relu(margin - as_float(pos) + as_float(neg))
  w = valid.astype(hinge.dtype)
  return {
      "loss_sum": jnp.sum(hinge * w),
      "count": jnp.sum(w),
      "active_sum": jnp.sum((hinge > 0) * w),
  }


def safe_mean(total: Array, count: Array) -> Array:
  """`total / count`, or 0 when `count` is 0 (empty masks)."""
  return total / jnp.maximum(count, 1.0)
