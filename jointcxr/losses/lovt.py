"""LoVT local intra-sample contrastive loss (METHODS.md §3.2).

Each local unit k of a sample (an image region or a report sentence) is
paired with its cross-modal reconstruction z_att_k; the other units *of the
same sample* are the negatives (no cross-sample negatives). Targets are soft:
units within a relative distance `threshold` of k are positives weighted by
exp(-lambda d_kj), renormalised per row; with no positions (report side) the
only positive is k itself. Per-unit losses are weighted by the attention-pool
weights (stop-gradient, renormalised over valid units) and summed per sample;
the loss is the mean over samples, for each direction:

* l2att: anchor z_local_k against candidates {z_attended_j};
* att2l: anchor z_attended_k against candidates {z_local_j}.

This mirrors the official `LocalIntraSampleContrastiveLoss` with
`normalize_by_num_negatives: false`. Being per-sample, it needs no
cross-device collectives: under `jax.jit` with a batch-sharded input it runs
locally on every device.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jointcxr.losses import core

Array = jax.Array
Aux = dict[str, Array]


def grid_positions(height: int, width: int) -> np.ndarray:
  """Row-major `[H*W, 2]` grid coordinates divided by the grid diagonal.

  LoVT's "relative" distance threshold measures distances in units of the
  diagonal sqrt(H^2 + W^2) (e.g. 7x7 conv5 regions), which is what
  `lovt_local(positions=...)` expects; the two-tower model outputs these as
  `img_positions`.
  """
  ii, jj = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  coords = np.stack([ii.ravel(), jj.ravel()], axis=-1).astype(np.float32)
  return coords / np.float32(math.sqrt(height ** 2 + width ** 2))


def soft_targets(positions: Array | None, n: int, *, threshold: Any,
                 smooth_lambda: Any) -> Array:
  """Unnormalised target weights pi_kj, `[N, N]`.

  Args:
    positions: `[N, 2]` relative coordinates, or None for identity targets.
    n: number of units N.
    threshold: distance radius of the positives.
    smooth_lambda: decay of exp(-lambda d) inside the radius.

  Returns:
    `1[d_kj <= threshold] * exp(-lambda d_kj)` (identity if no positions).
  """
  if positions is None:
    return jnp.eye(n, dtype=jnp.float32)
  pos = core.as_float(positions)
  if pos.shape[0] != n:
    raise ValueError(f"positions has {pos.shape[0]} rows, expected N={n}")
  diff = pos[:, None, :] - pos[None, :, :]
  # sqrt of a clamped square keeps the (unused) gradient finite at d = 0.
  dist = jnp.sqrt(jnp.maximum(jnp.sum(diff * diff, axis=-1), 0.0))
  return jnp.where(dist <= threshold, jnp.exp(-smooth_lambda * dist), 0.0)


def _direction(scores: Array, targets: Array, unit_w: Array,
               valid: Array) -> tuple[Array, Array]:
  """Per-sample weighted soft-target CE of one direction.

  Args:
    scores: `[B, N, N]` anchor k (axis 1) vs candidate j (axis 2) logits.
    targets: `[B, N, N]` row-normalised targets over valid candidates.
    unit_w: `[B, N]` anchor weights, zero on invalid units, rows sum to 1.
    valid: `[B, N]` bool.

  Returns:
    (`[B]` per-sample loss, `[B]` per-sample weighted top-1 accuracy).
  """
  masked = jnp.where(valid[:, None, :], scores, core.NEG_INF)
  per_unit = (jax.nn.logsumexp(masked, axis=-1)
              - jnp.sum(targets * scores, axis=-1))  # [B, N]
  hit = jnp.argmax(masked, axis=-1) == jnp.arange(scores.shape[1])[None]
  return (jnp.sum(unit_w * per_unit, axis=-1),
          jax.lax.stop_gradient(jnp.sum(unit_w * hit, axis=-1)))


def lovt_local(z_local: Array, z_attended: Array, weights: Array | None,
               mask: Array | None = None, *, temperature: Any,
               positions: Array | None = None, threshold: Any = 0.5,
               smooth_lambda: Any = 1.0) -> tuple[Array, Aux]:
  """LoVT local intra-sample contrastive loss, both directions summed.

  Args:
    z_local: `[B, N, D]` raw local projections z_k (regions or sentences).
    z_attended: `[B, N, D]` raw cross-modal attended z_att_k.
    weights: `[B, N]` attention-pool weights w_k (stop-gradient is applied
      here and they are renormalised over valid units); None = uniform.
    mask: `[B, N]` bool of valid units (padded sentences False); None = all.
      Invalid units are neither anchors nor candidates (numerator and
      denominator). Samples without any valid unit are left out of the mean.
    temperature: tau_l (0.3 in LoVT).
    positions: `[N, 2]` relative coordinates (e.g. `grid_positions`) for
      spatial soft positives; None = identity targets (report side).
    threshold: radius of the soft positives (0.5 of the diagonal in LoVT).
    smooth_lambda: lambda of exp(-lambda d) (1.0 in LoVT).

  Returns:
    `(l2att + att2l, aux)`; aux has differentiable `l2att` and `att2l` (each a
    mean over samples, so objectives can weight them separately) and
    `l2att_acc`, `att2l_acc` (weighted top-1 of the own unit).
  """
  if z_local.ndim != 3 or z_local.shape != z_attended.shape:
    raise ValueError("z_local and z_attended must both be [B, N, D], got "
                     f"{z_local.shape} and {z_attended.shape}")
  b, n, _ = z_local.shape
  valid = (jnp.ones((b, n), bool) if mask is None
           else jnp.asarray(mask).astype(bool))
  if valid.shape != (b, n):
    raise ValueError(f"mask must be [B, N] = {(b, n)}, got {valid.shape}")
  w = (jnp.ones((b, n), jnp.float32) if weights is None
       else jax.lax.stop_gradient(core.as_float(weights)))
  if w.shape != (b, n):
    raise ValueError(f"weights must be [B, N] = {(b, n)}, got {w.shape}")
  w = jnp.where(valid, w, 0.0)
  w = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-12)

  pi = soft_targets(positions, n, threshold=threshold,
                    smooth_lambda=smooth_lambda)
  pi = jnp.where(valid[:, None, :], pi[None], 0.0)  # drop padded candidates
  pi = pi / jnp.maximum(jnp.sum(pi, axis=-1, keepdims=True), 1e-12)

  zl, za = core.l2_normalize(z_local), core.l2_normalize(z_attended)
  s = jnp.einsum("bkd,bjd->bkj", zl, za) / core.as_float(temperature)
  # att2l: anchor z_att_k vs candidates z_local_j, i.e. s transposed; the
  # targets are the same matrix (symmetric for distance-based targets).
  l2att, acc_l = _direction(s, pi, w, valid)
  att2l, acc_a = _direction(jnp.swapaxes(s, 1, 2), pi, w, valid)

  sample_ok = jnp.any(valid, axis=-1).astype(jnp.float32)
  n_ok = jnp.sum(sample_ok)
  l2att = core.safe_mean(jnp.sum(l2att * sample_ok), n_ok)
  att2l = core.safe_mean(jnp.sum(att2l * sample_ok), n_ok)
  return l2att + att2l, {
      "l2att": l2att,
      "att2l": att2l,
      "l2att_acc": core.safe_mean(jnp.sum(acc_l * sample_ok), n_ok),
      "att2l_acc": core.safe_mean(jnp.sum(acc_a * sample_ok), n_ok),
  }
