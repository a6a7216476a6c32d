"""LoVT's local loss: intra-sample contrast between units and their
cross-modal reconstructions (METHODS.md §3.2)."""

import jax
import jax.numpy as jnp

from jointcxr.losses.contrastive import l2_normalize


def soft_targets(positions: jax.Array | None, n: int, *, threshold: float,
                 smooth_lambda: float) -> jax.Array:
  """Unnormalised targets pi_kj = 1[d_kj <= threshold] exp(-lambda d_kj).

  Identity when `positions` is None (report sentences: only itself).
  """
  if positions is None:
    return jnp.eye(n, dtype=jnp.float32)
  d = jnp.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
  return jnp.where(d <= threshold, jnp.exp(-smooth_lambda * d), 0.0)


def _direction(anchor, cand, targets, mask, weights, temperature):
  logits = jnp.einsum("bkd,bjd->bkj", anchor, cand) / temperature
  logits = jnp.where(mask[:, None, :], logits, -1e30)
  pi = targets[None] * mask[:, None, :]
  pi = pi / jnp.maximum(pi.sum(-1, keepdims=True), 1e-12)
  per_unit = -jnp.sum(pi * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  per_sample = jnp.sum(weights * per_unit, axis=-1)
  has_units = mask.any(-1)
  return jnp.sum(jnp.where(has_units, per_sample, 0.0)) / jnp.maximum(
      has_units.sum(), 1)


def lovt_local(z_local: jax.Array, z_attended: jax.Array, weights: jax.Array,
               mask: jax.Array | None = None, *, temperature: float,
               positions: jax.Array | None = None, threshold: float = 0.5,
               smooth_lambda: float = 1.0) -> tuple[jax.Array, dict]:
  """Sum of the two directions (local->attended, attended->local).

  Args:
    z_local: [B, N, D] projected local units (regions or sentences).
    z_attended: [B, N, D] their cross-modal reconstructions.
    weights: [B, N] attention-pool weights (gradient stopped, renormalised
      over valid units).
    mask: [B, N] valid units (masked units leave numerator and denominator).
    temperature: tau_l (0.3 in LoVT).
    positions: [N, 2] grid positions scaled so distances are relative;
      None -> identity targets.
    threshold, smooth_lambda: the spatial soft-positive neighbourhood.

  Returns:
    (loss, aux) where each direction is a mean over samples with units.
  """
  b, n, _ = z_local.shape
  mask = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  w = jax.lax.stop_gradient(weights.astype(jnp.float32)) * mask
  w = w / jnp.maximum(w.sum(-1, keepdims=True), 1e-12)
  targets = soft_targets(positions, n, threshold=threshold,
                         smooth_lambda=smooth_lambda)
  zl, za = l2_normalize(z_local), l2_normalize(z_attended)
  l2att = _direction(zl, za, targets, mask, w, temperature)
  att2l = _direction(za, zl, targets, mask, w, temperature)
  return l2att + att2l, {"l2att": l2att, "att2l": att2l}
