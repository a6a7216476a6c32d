"""Contrastive-aware gradient accumulation (embedding caching, "GradCache").

Plain accumulation (LoVT's `accumulate_grad_batches: 16`) sums gradients of
K independent micro-batch losses, so each image only ever sees the reports
of its own micro-batch as negatives: the effective contrastive batch stays
32. Here the loss is computed once over the whole accumulated batch:

1. forward every micro-batch without gradients, keeping the outputs the
   loss consumes (embeddings, local features, attention weights);
2. evaluate the loss on the concatenated outputs and take its gradient
   with respect to those outputs;
3. re-run each micro-batch forward under `jax.vjp` (same parameters, same
   dropout key, so the same outputs) and pull its slice of the output
   gradient back to the parameters; sum.

The result equals the full-batch gradient (tested) while activation memory
is that of one micro-batch. BatchNorm uses per-micro-batch statistics, as
LoVT does; running statistics are updated micro-batch by micro-batch.
Micro-batch i takes rows i, i+K, i+2K, ... so each stays spread over the
data axis of the mesh (the batch must divide by K x the data devices).

What differs from LoVT's own accumulation: its global InfoNCE term sees 31
negatives per anchor instead of 511 (for 32 x 16); its local losses are
intra-sample (an image's regions against its own report's sentences), so
for them both schemes give the same gradient. The extra cost is one more
forward pass per micro-batch (step 1), as in GradCache.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

# Model outputs that are not per-example (not split / concatenated).
SHARED_OUTPUTS = ("img_positions", "logit_scale", "logit_bias")
DROP_OUTPUTS = ("img_tower", "txt_tower", "attention")


def split_micro(batch: dict, k: int) -> dict:
  """[B, ...] -> [k, B/k, ...] with micro-batch i = rows i::k.

  Args:
    batch: dict of [B, ...] arrays.
    k: number of micro-batches.

  Returns:
    The same dict with [k, B/k, ...] arrays.

  Raises:
    ValueError: B is not divisible by k.
  """
  def f(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f"batch {b} does not divide into {k} micro-batches")
    return jnp.swapaxes(x.reshape(b // k, k, *x.shape[1:]), 0, 1)
  return jax.tree.map(f, batch)


def merge_micro(stacked: dict) -> dict:
  """Inverse of `split_micro`: [k, B/k, ...] -> [B, ...]."""
  def f(x):
    k, m = x.shape[:2]
    return jnp.swapaxes(x, 0, 1).reshape(k * m, *x.shape[2:])
  return jax.tree.map(f, stacked)


def _loss_relevant(out: dict) -> dict:
  # Tower intermediates are for probes, not the loss: caching them would
  # cost memory for nothing.
  return {k: v for k, v in out.items() if k not in DROP_OUTPUTS}


def accumulated_grads(
    apply_fn: Callable[[Any, Any, dict, jax.Array], tuple[dict, Any]],
    loss_fn: Callable[[dict, dict], tuple[jax.Array, dict]],
    params: Any, batch_stats: Any, batch: dict, k: int, rng: jax.Array,
) -> tuple[jax.Array, dict, Any, Any]:
  """Loss, aux, parameter gradients and new batch stats over k micro-batches.

  Args:
    apply_fn: (params, batch_stats, micro_batch, rng) -> (outputs, new
      batch_stats); the model forward in training mode.
    loss_fn: (outputs over the full batch, full batch) -> (loss, aux).
    params: the current parameters.
    batch_stats: the current BatchNorm running statistics (may be empty).
    batch: the accumulated (global) batch.
    k: number of micro-batches.
    rng: dropout key (folded with the micro-batch index).

  Returns:
    (loss, aux, grads, new batch_stats): the loss and diagnostics of the
    whole batch, the gradient of that loss with respect to `params`, and
    the running statistics after the k micro-batches.

  Raises:
    ValueError: the batch does not divide into k micro-batches.
  """
  micro = split_micro(batch, k)
  take = lambda i: jax.tree.map(lambda x: x[i], micro)

  # 1. Forward without gradients; carry BN running statistics through.
  # Shared outputs (temperature, grid positions) do not depend on the data:
  # keep micro-batch 0's.
  def fwd(bs, i):
    out, new_bs = apply_fn(params, bs, take(i), jax.random.fold_in(rng, i))
    out = _loss_relevant(out)
    return new_bs, out

  new_bs, stacked = jax.lax.scan(fwd, batch_stats, jnp.arange(k))
  stacked = jax.lax.stop_gradient(stacked)
  shared = {kk: stacked.pop(kk)[0] for kk in SHARED_OUTPUTS
            if kk in stacked}

  # 2. Loss over the whole batch; gradient w.r.t. the cached (float)
  # outputs. Integer/boolean outputs (masks) are constants.
  full = merge_micro(stacked)
  is_float = lambda v: jnp.issubdtype(v.dtype, jnp.inexact)
  diff = {kk: v for kk, v in full.items() if is_float(v)}
  const = {kk: v for kk, v in full.items() if not is_float(v)}
  (loss, aux), (g_full, g_shared) = jax.value_and_grad(
      lambda o, s: loss_fn({**o, **const, **s}, batch), argnums=(0, 1),
      has_aux=True)(diff, shared)
  g_micro = split_micro(g_full, k)

  # 3. Per micro-batch VJP of the forward with its slice of the gradient.
  # Same parameters, statistics and dropout key as in 1, so the same
  # outputs: BN in training mode normalises with the micro-batch's own
  # statistics, whatever the running ones. The shared outputs' cotangent
  # is pulled back once (through micro-batch 0).
  def bwd(acc, i):
    def f(p):
      out = _loss_relevant(apply_fn(p, batch_stats, take(i),
                                    jax.random.fold_in(rng, i))[0])
      return ({kk: v for kk, v in out.items() if kk in diff},
              {kk: out[kk] for kk in shared})

    _, vjp = jax.vjp(f, params)
    ct_shared = jax.tree.map(lambda g: jnp.where(i == 0, g, 0.0), g_shared)
    (g,) = vjp((jax.tree.map(lambda x: x[i], g_micro), ct_shared))
    return jax.tree.map(jnp.add, acc, g), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, _ = jax.lax.scan(bwd, zeros, jnp.arange(k))
  return loss, aux, grads, new_bs


def micro_forward(forward: Callable[[dict], dict], batch: dict, k: int
                  ) -> dict:
  """Outputs the loss consumes over a batch, computed k micro-batches at a
  time (for evaluation: the validation loss of an accumulated config sees
  the same full batch as training without its activation memory).

  Args:
    forward: micro-batch -> model outputs (no gradient, no state update).
    batch: the global batch.
    k: number of micro-batches (1: one forward of the whole batch).

  Returns:
    The outputs over the whole batch, rows in batch order (shared outputs
    such as grid positions or the learned temperature: micro-batch 0's).
  """
  if k <= 1:
    return _loss_relevant(forward(batch))
  stacked = jax.lax.map(lambda mb: _loss_relevant(forward(mb)),
                        split_micro(batch, k))
  shared = {kk: stacked.pop(kk)[0] for kk in SHARED_OUTPUTS
            if kk in stacked}
  return {**merge_micro(stacked), **shared}
