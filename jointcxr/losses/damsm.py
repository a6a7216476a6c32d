"""DAMSM word-level matching (AttnGAN / JoImTeRNet), chunked over the batch.

For image i and text j: affinities a_tr = e_t . r_r (dot products); a
softmax over words for each region, then a softmax over regions sharpened by
gamma1 for each word; region context c_t; R(i, j) = log sum_t exp(gamma2 *
cos(c_t, e_t)) over the valid words of j. The loss is CE over rows
(images) plus CE over columns (texts) of gamma3 * R. Scoring every pair
needs B*B*T*R attention entries: texts are processed `chunk_size` at a
time with `lax.map`, so memory is O(chunk * B * T * R).
"""

import jax
import jax.numpy as jnp

from jointcxr.losses.contrastive import l2_normalize


def _pair_scores(regions, words, word_mask, gamma1, gamma2):
  """R(i, j) for all images i against a block of texts j -> [Bi, Bj]."""
  a = jnp.einsum("jtd,ird->ijtr", words, regions)
  a = jnp.where(word_mask[None, :, :, None], a, -1e30)
  a = jax.nn.softmax(a, axis=2)  # over words, per region
  attn = jax.nn.softmax(gamma1 * a, axis=3)  # over regions, per word
  ctx = jnp.einsum("ijtr,ird->ijtd", attn, regions)
  cos = jnp.sum(l2_normalize(ctx) * l2_normalize(words)[None], axis=-1)
  logits = jnp.where(word_mask[None], gamma2 * cos, -jnp.inf)
  return jax.nn.logsumexp(logits, axis=-1)


def damsm_word_scores(regions: jax.Array, words: jax.Array,
                      word_mask: jax.Array, *, gamma1: float, gamma2: float,
                      chunk_size: int | None = None) -> jax.Array:
  """R [B_images, B_texts] for regions [Bi,R,D], words [Bj,T,D], mask [Bj,T]."""
  regions = regions.astype(jnp.float32)
  words = words.astype(jnp.float32)
  bj = words.shape[0]
  if chunk_size is None or chunk_size >= bj:
    return _pair_scores(regions, words, word_mask, gamma1, gamma2)
  pad = (-bj) % chunk_size
  w = jnp.pad(words, ((0, pad), (0, 0), (0, 0)))
  m = jnp.pad(word_mask, ((0, pad), (0, 0)), constant_values=True)
  w = w.reshape(-1, chunk_size, *words.shape[1:])
  m = m.reshape(-1, chunk_size, word_mask.shape[1])
  blocks = jax.lax.map(
      lambda wm: _pair_scores(regions, wm[0], wm[1], gamma1, gamma2), (w, m))
  # blocks: [num_chunks, Bi, chunk] -> [Bi, num_chunks * chunk]
  return jnp.moveaxis(blocks, 0, 1).reshape(regions.shape[0], -1)[:, :bj]


def damsm_word(regions: jax.Array, words: jax.Array, word_mask: jax.Array, *,
               gamma1: float, gamma2: float, gamma3: float,
               chunk_size: int | None = None) -> tuple[jax.Array, dict]:
  """CE(rows) + CE(columns) of gamma3 * R; aux carries R as `scores`."""
  r = damsm_word_scores(regions, words, word_mask, gamma1=gamma1,
                        gamma2=gamma2, chunk_size=chunk_size)
  logits = gamma3 * r
  idx = jnp.arange(r.shape[0])
  l_rows = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[idx, idx])
  l_cols = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[idx, idx])
  acc = jnp.mean(jnp.argmax(logits, axis=1) == idx)
  return l_rows + l_cols, {"loss_i2t": l_rows, "loss_t2i": l_cols,
                           "acc_i2t": acc, "scores": r}
