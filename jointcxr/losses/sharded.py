"""`jax.shard_map` versions of the cross-batch losses.

Each device holds its rows of the global batch, all-gathers the other
modality's embeddings over the data axis (or axes), and scores *its own*
anchors against every candidate in the global batch: negatives come from
all devices while per-device memory is O(B^2 / D) (O(B^2 T R / D) for
DAMSM) instead of the O(B^2) that GSPMD materialises. Every device computes
the loss terms of its own anchors (rows for its images, columns for its
texts); a `psum` over the data axis adds them up, so gradients flow back
through the gathers to the owning devices exactly. Results equal the plain
functions in `jointcxr.losses` (tests: 8 fake devices, several meshes).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from jointcxr.losses import damsm as damsm_lib
from jointcxr.losses.contrastive import l2_normalize

AxisNames = str | Sequence[str]


def _axes(data_axis: AxisNames) -> tuple[str, ...]:
  return (data_axis,) if isinstance(data_axis, str) else tuple(data_axis)


def _mask(mask, b):
  return jnp.ones((b,), bool) if mask is None else mask.astype(bool)


def _smap(fn, mesh, axes, n_batched, n_scalar):
  spec = P(axes)
  return jax.shard_map(fn, mesh=mesh,
                       in_specs=(spec,) * n_batched + (P(),) * n_scalar,
                       out_specs=(P(), P()), check_vma=True)


def _ce_local(logits, pos_idx, valid):
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, pos_idx[:, None], axis=1)[:, 0]
  hit = jnp.argmax(logits, axis=-1) == pos_idx
  return jnp.where(valid, nll, 0.0), jnp.where(valid, hit, False)


def infonce(zimg, ztxt, *, mesh: Mesh, data_axis: AxisNames = "data",
            temperature, i2t_weight: float = 0.5, mask=None):
  """Sharded `jointcxr.losses.infonce` (same value and gradients)."""
  axes = _axes(data_axis)

  def body(zi, zt, m, temp):
    zi, zt = l2_normalize(zi), l2_normalize(zt)
    zi_all = jax.lax.all_gather(zi, axes, tiled=True)
    zt_all = jax.lax.all_gather(zt, axes, tiled=True)
    m_all = jax.lax.all_gather(m, axes, tiled=True)
    b = zi.shape[0]
    pos = jax.lax.axis_index(axes) * b + jnp.arange(b)
    lr = jnp.where(m_all[None, :], zi @ zt_all.T / temp, -1e30)
    lc = jnp.where(m_all[None, :], zt @ zi_all.T / temp, -1e30)
    nll_r, hit_r = _ce_local(lr, pos, m)
    nll_c, hit_c = _ce_local(lc, pos, m)
    n = jnp.maximum(jax.lax.psum(m.sum(), axes), 1)
    s = lambda x: jax.lax.psum(x.sum(), axes) / n
    l_i2t, l_t2i = s(nll_r), s(nll_c)
    loss = i2t_weight * l_i2t + (1.0 - i2t_weight) * l_t2i
    pos_sim = s(jnp.where(m, jnp.sum(zi * zt, -1), 0.0))
    return loss, {"loss_i2t": l_i2t, "loss_t2i": l_t2i,
                  "acc_i2t": s(hit_r), "acc_t2i": s(hit_c),
                  "pos_sim": pos_sim}

  return _smap(body, mesh, axes, 3, 1)(zimg, ztxt, _mask(mask, zimg.shape[0]),
                                       jnp.asarray(temperature, jnp.float32))


def damsm_sentence(zimg, ztxt, *, mesh: Mesh, data_axis: AxisNames = "data",
                   gamma3: float, mask=None):
  """Sharded `jointcxr.losses.damsm_sentence`."""
  _, aux = infonce(zimg, ztxt, mesh=mesh, data_axis=data_axis,
                   temperature=1.0 / gamma3, mask=mask)
  return aux["loss_i2t"] + aux["loss_t2i"], aux


def siglip(zimg, ztxt, *, mesh: Mesh, data_axis: AxisNames = "data",
           logit_scale, logit_bias, mask=None):
  """Sharded `jointcxr.losses.siglip`: local image rows x all texts."""
  axes = _axes(data_axis)

  def body(zi, zt, m, t, bias):
    zi, zt = l2_normalize(zi), l2_normalize(zt)
    zt_all = jax.lax.all_gather(zt, axes, tiled=True)
    m_all = jax.lax.all_gather(m, axes, tiled=True)
    b = zi.shape[0]
    pos = jax.lax.axis_index(axes) * b + jnp.arange(b)
    logits = jnp.exp(t) * (zi @ zt_all.T) + bias
    labels = jnp.where(pos[:, None] == jnp.arange(zt_all.shape[0])[None],
                       1.0, -1.0)
    ll = jnp.where(m[:, None] & m_all[None, :],
                   jax.nn.log_sigmoid(labels * logits), 0.0)
    n = jnp.maximum(jax.lax.psum(m.sum(), axes), 1)
    return -jax.lax.psum(ll.sum(), axes) / n, {}

  return _smap(body, mesh, axes, 3, 2)(
      zimg, ztxt, _mask(mask, zimg.shape[0]),
      jnp.asarray(logit_scale, jnp.float32), jnp.asarray(logit_bias,
                                                         jnp.float32))


def triplet(zimg, ztxt, *, mesh: Mesh, data_axis: AxisNames = "data",
            margin: float, hardest: bool = True, negatives=None):
  """Sharded `jointcxr.losses.triplet` (hardest / sum / given negatives)."""
  axes = _axes(data_axis)
  b_total = zimg.shape[0]
  negs = jnp.zeros((b_total,), jnp.int32) if negatives is None else negatives

  def body(zi, zt, neg):
    zi, zt = l2_normalize(zi), l2_normalize(zt)
    zi_all = jax.lax.all_gather(zi, axes, tiled=True)
    zt_all = jax.lax.all_gather(zt, axes, tiled=True)
    b = zi.shape[0]
    pos_idx = jax.lax.axis_index(axes) * b + jnp.arange(b)
    pos = jnp.sum(zi * zt, -1)
    if negatives is not None:
      c_img = jax.nn.relu(margin - pos + jnp.sum(zi * zt_all[neg], -1))
      c_txt = jax.nn.relu(margin - pos + jnp.sum(zi_all[neg] * zt, -1))
    else:
      off = pos_idx[:, None] != jnp.arange(b_total)[None, :]
      red = jnp.max if hardest else jnp.sum
      c_img = red(jnp.where(off, jax.nn.relu(
          margin - pos[:, None] + zi @ zt_all.T), 0.0), axis=1)
      c_txt = red(jnp.where(off, jax.nn.relu(
          margin - pos[:, None] + zt @ zi_all.T), 0.0), axis=1)
    l_i2t = jax.lax.psum(c_img.sum(), axes) / b_total
    l_t2i = jax.lax.psum(c_txt.sum(), axes) / b_total
    return l_i2t + l_t2i, {"loss_i2t": l_i2t, "loss_t2i": l_t2i}

  return _smap(body, mesh, axes, 3, 0)(zimg, ztxt, negs)


def damsm_word(regions, words, word_mask, *, mesh: Mesh,
               data_axis: AxisNames = "data", gamma1: float, gamma2: float,
               gamma3: float, chunk_size: int | None = None):
  """Sharded `jointcxr.losses.damsm_word`.

  Each device scores its images against all texts ([b, B], chunked over
  texts), the score rows are all-gathered into the small [B, B] matrix,
  and each device adds the CE terms of its own rows and columns.
  """
  axes = _axes(data_axis)

  def body(r, w, m):
    w_all = jax.lax.all_gather(w, axes, tiled=True)
    m_all = jax.lax.all_gather(m, axes, tiled=True)
    scores = damsm_lib.damsm_word_scores(r, w_all, m_all, gamma1=gamma1,
                                         gamma2=gamma2, chunk_size=chunk_size)
    full = jax.lax.all_gather(scores, axes, tiled=True)  # [B, B]
    b = r.shape[0]
    own = jax.lax.axis_index(axes) * b + jnp.arange(b)
    logits = gamma3 * full
    rows = -jax.nn.log_softmax(logits[own], axis=1)[jnp.arange(b), own]
    cols = -jax.nn.log_softmax(logits[:, own], axis=0)[own, jnp.arange(b)]
    n = full.shape[0]
    l_rows = jax.lax.psum(rows.sum(), axes) / n
    l_cols = jax.lax.psum(cols.sum(), axes) / n
    return l_rows + l_cols, {"loss_i2t": l_rows, "loss_t2i": l_cols}

  return _smap(body, mesh, axes, 3, 0)(regions, words, word_mask.astype(bool))


