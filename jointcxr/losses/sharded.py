"""`jax.shard_map` versions of the cross-batch losses: B^2/D memory per device.

Written over global arrays, the plain losses let GSPMD insert collectives,
but XLA may then materialise the whole `B x B` score matrix (or DAMSM's
`B x B x T x R` attention) on every device. Here each device instead scores
only *its own* anchor rows against all-gathered candidates
(`all_gather(tiled=True)` over the data axis), so per-device memory grows as
`B^2 / D`. Negatives still come from the whole global batch, and results
equal the plain losses (same arithmetic: the `*_block` helpers); partial sums
are `psum`-reduced over the data axis only (reducing over a replicated model
axis too would double-count, ENVIRONMENT.md G11).

Usage (inside or outside `jax.jit`; inputs sharded or not):

  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2),
                           ("data", "model"))
  loss, aux = sharded.infonce(zimg, ztxt, mesh=mesh, temperature=0.1)

The mesh must use Auto axes (`jax.sharding.Mesh(devices, names)`; G3). The
batch dimension is split over `data_axis` (one name or a tuple of names, e.g.
`("data", "fsdp")`) and must divide by its size. Gradients flow through the
gathers (the transpose of `all_gather` is a reduce-scatter) and match the
plain losses. Every function returns replicated `(loss, aux)` like its plain
counterpart, except `damsm_word_scores` (a row-sharded `[B, B]` array).
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jointcxr.losses import contrastive
from jointcxr.losses import core
from jointcxr.losses import damsm
from jointcxr.losses import ranking

Array = jax.Array
Aux = dict[str, Array]
AxisName = str | tuple[str, ...]


def axis_size(mesh: Mesh, data_axis: AxisName) -> int:
  """Number of devices along `data_axis` (a name or tuple of names)."""
  names = (data_axis,) if isinstance(data_axis, str) else tuple(data_axis)
  size = 1
  for name in names:
    if name not in mesh.shape:
      raise ValueError(f"mesh has no axis {name!r}; axes: "
                       f"{tuple(mesh.shape)}")
    size *= mesh.shape[name]
  return size


def _shard_call(fn: Callable[..., Any], mesh: Mesh, data_axis: AxisName,
                batched: Sequence[Array], scalars: Sequence[Any],
                out_specs: Any = P()) -> Any:
  """Runs `fn(*local_batched, *scalars)` per device under `jax.shard_map`.

  Batched arguments are split over `data_axis` on their first dimension;
  scalars are replicated. `fn` must reduce its outputs itself (psum) unless
  `out_specs` says they are sharded.
  """
  if isinstance(data_axis, list):
    data_axis = tuple(data_axis)
  b = batched[0].shape[0]
  size = axis_size(mesh, data_axis)
  if b % size:
    raise ValueError(f"global batch {b} is not divisible by the {size} "
                     f"devices of mesh axis {data_axis!r}")
  specs = (P(data_axis),) * len(batched) + (P(),) * len(scalars)
  scalars = [jnp.asarray(s, jnp.float32) for s in scalars]
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=out_specs,
                       check_vma=True)(*batched, *scalars)


def _gather(x: Array, data_axis: AxisName) -> Array:
  return jax.lax.all_gather(x, data_axis, tiled=True)


def _own_rows(b: int, data_axis: AxisName) -> Array:
  """Global indices of this device's `b` rows (same order as `_gather`)."""
  return jax.lax.axis_index(data_axis) * b + jnp.arange(b)


def _psum(tree: Any, data_axis: AxisName) -> Any:
  return jax.tree.map(lambda v: jax.lax.psum(v, data_axis), tree)


def _bidirectional_ce(zimg: Array, ztxt: Array, mask: Array | None, *,
                      mesh: Mesh, data_axis: AxisName, scale: Any,
                      row_weight: Any, col_weight: Any) -> tuple[Array, Aux]:
  """Sharded `contrastive.block_stats` + `finish_bidirectional`."""
  def body(zi, zt, valid, scale):
    zi, zt = core.l2_normalize(zi), core.l2_normalize(zt)
    stats = contrastive.block_stats(
        zi, zt, _gather(zi, data_axis), _gather(zt, data_axis),
        _own_rows(zi.shape[0], data_axis), valid, _gather(valid, data_axis),
        scale)
    return _psum(stats, data_axis)

  contrastive.check_pair(zimg, ztxt)
  stats = _shard_call(body, mesh, data_axis,
                      [zimg, ztxt, core.valid_or_ones(mask, zimg.shape[0])],
                      [scale])
  return contrastive.finish_bidirectional(stats, row_weight, col_weight)


def infonce(zimg: Array, ztxt: Array, *, mesh: Mesh,
            data_axis: AxisName = "data", temperature: Any,
            i2t_weight: Any = 0.5,
            mask: Array | None = None) -> tuple[Array, Aux]:
  """Sharded `jointcxr.losses.infonce` (same arguments plus mesh/axis)."""
  return _bidirectional_ce(
      zimg, ztxt, mask, mesh=mesh, data_axis=data_axis,
      scale=1.0 / core.as_float(temperature), row_weight=i2t_weight,
      col_weight=1.0 - i2t_weight)


def damsm_sentence(zimg: Array, ztxt: Array, *, mesh: Mesh,
                   data_axis: AxisName = "data", gamma3: Any,
                   mask: Array | None = None) -> tuple[Array, Aux]:
  """Sharded `jointcxr.losses.damsm_sentence`."""
  return _bidirectional_ce(zimg, ztxt, mask, mesh=mesh, data_axis=data_axis,
                           scale=gamma3, row_weight=1.0, col_weight=1.0)


def siglip(zimg: Array, ztxt: Array, *, mesh: Mesh,
           data_axis: AxisName = "data", logit_scale: Any, logit_bias: Any,
           mask: Array | None = None) -> tuple[Array, Aux]:
  """Sharded `jointcxr.losses.siglip`: local images vs all-gathered texts."""
  def body(zi, zt, valid, scale, bias):
    zi, zt = core.l2_normalize(zi), core.l2_normalize(zt)
    stats = contrastive.siglip_block(
        zi, _gather(zt, data_axis), _own_rows(zi.shape[0], data_axis), valid,
        _gather(valid, data_axis), scale, bias)
    return _psum(stats, data_axis)

  contrastive.check_pair(zimg, ztxt)
  stats = _shard_call(body, mesh, data_axis,
                      [zimg, ztxt, core.valid_or_ones(mask, zimg.shape[0])],
                      [logit_scale, logit_bias])
  return contrastive.finish_siglip(stats)


def triplet(zimg: Array, ztxt: Array, *, mesh: Mesh,
            data_axis: AxisName = "data", margin: Any, hardest: bool = True,
            negatives: Array | None = None,
            mask: Array | None = None) -> tuple[Array, Aux]:
  """Sharded `jointcxr.losses.triplet` (hardest, sum or given negatives).

  `negatives` holds *global* batch indices and is split with the batch.
  """
  contrastive.check_pair(zimg, ztxt)
  batched = [zimg, ztxt, core.valid_or_ones(mask, zimg.shape[0])]
  if negatives is not None:
    batched.append(jnp.asarray(negatives, jnp.int32))

  def body(zi, zt, valid, *rest):
    *neg, margin_ = rest
    zi, zt = core.l2_normalize(zi), core.l2_normalize(zt)
    stats = ranking.triplet_block(
        zi, zt, _gather(zi, data_axis), _gather(zt, data_axis),
        _own_rows(zi.shape[0], data_axis), valid, _gather(valid, data_axis),
        margin=margin_, hardest=hardest,
        negatives_rows=neg[0] if neg else None)
    return _psum(stats, data_axis)

  stats = _shard_call(body, mesh, data_axis, batched, [margin])
  return ranking.finish_triplet(stats)


def damsm_word_scores(regions: Array, words: Array, word_mask: Array, *,
                      mesh: Mesh, data_axis: AxisName = "data", gamma1: Any,
                      gamma2: Any, chunk_size: int | None = None) -> Array:
  """Sharded `jointcxr.losses.damsm_word_scores`: `[B, B]`, rows sharded.

  Each device scores its local images against all-gathered texts (chunked
  over texts when `chunk_size` is set), so it holds `[B/D, chunk, T, R]`
  (or `[B/D, B, T, R]`) attention at a time. The result is row-sharded over
  `data_axis`; cheap B x B follow-ups (`logits_ce`, `word_triplet`) can run
  on it as plain global code.
  """
  def body(reg, w, m, g1, g2):
    return damsm.damsm_word_scores(reg, _gather(w, data_axis),
                                   _gather(m, data_axis), gamma1=g1,
                                   gamma2=g2, chunk_size=chunk_size)

  return _shard_call(body, mesh, data_axis,
                     [regions, words, word_mask.astype(bool)],
                     [gamma1, gamma2], out_specs=P(data_axis))


def damsm_word(regions: Array, words: Array, word_mask: Array, *,
               mesh: Mesh, data_axis: AxisName = "data", gamma1: Any,
               gamma2: Any, gamma3: Any, chunk_size: int | None = None,
               mask: Array | None = None) -> tuple[Array, Aux]:
  """Sharded `jointcxr.losses.damsm_word`.

  Rows: each device computes R for its local images vs all texts,
  `[B/D, B]`. Columns: an `all_to_all` over the data axis turns those row
  blocks into `R[all images, local texts]` (`[B, B/D]`) without ever
  assembling the full matrix, so the text-anchored CE needs no recompute.
  """
  if regions.shape[0] != words.shape[0]:
    raise ValueError(f"batch mismatch: {regions.shape[0]} images vs "
                     f"{words.shape[0]} texts")

  def body(reg, w, m, valid, g1, g2, g3):
    rows = _own_rows(reg.shape[0], data_axis)
    valid_all = _gather(valid, data_axis)
    r_rows = damsm.damsm_word_scores(reg, _gather(w, data_axis),
                                     _gather(m, data_axis), gamma1=g1,
                                     gamma2=g2, chunk_size=chunk_size)
    r_cols = jax.lax.all_to_all(r_rows, data_axis, 1, 0, tiled=True)
    stats = {
        "rows": core.ce_rows(g3 * r_rows, rows, valid, valid_all),
        "cols": core.ce_rows(g3 * r_cols.T, rows, valid, valid_all),
        "score": core.pair_stats(r_rows, rows, valid, valid_all),
    }
    return _psum(stats, data_axis)

  stats = _shard_call(
      body, mesh, data_axis,
      [regions, words, word_mask.astype(bool),
       damsm.pair_valid(word_mask, mask)], [gamma1, gamma2, gamma3])
  return damsm.finish_damsm(stats)
