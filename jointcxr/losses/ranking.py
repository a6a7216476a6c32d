"""Triplet ranking losses (global and word level), bidirectional."""

import jax
import jax.numpy as jnp

from jointcxr.losses.contrastive import l2_normalize


def triplet(zimg: jax.Array, ztxt: jax.Array, *, margin: float,
            hardest: bool = True, negatives: jax.Array | None = None
            ) -> tuple[jax.Array, dict]:
  """Bidirectional hinge on cosine similarity s.

  Without `negatives`: image anchor i costs [m - s(i,i) + s(i,j)]+ over
  texts j != i, text anchor j costs [m - s(j,j) + s(i,j)]+ over images
  i != j; max over negatives when `hardest`, else sum; mean over anchors;
  the two directions are added. With `negatives` ([B] ints, JoImTeRNet's
  one random in-batch negative per anchor, same index both directions):
  [m - s(i,i) + s(i,n_i)]+ + [m - s(i,i) + s(n_i,i)]+ averaged (this equals
  the cosine-distance form d(i,i) - d(i,n) + m).
  """
  s = l2_normalize(zimg) @ l2_normalize(ztxt).T
  pos = jnp.diagonal(s)
  if negatives is not None:
    idx = jnp.arange(s.shape[0])
    c_img = jax.nn.relu(margin - pos + s[idx, negatives])
    c_txt = jax.nn.relu(margin - pos + s[negatives, idx])
    loss = c_img.mean() + c_txt.mean()
    return loss, {"loss_i2t": c_img.mean(), "loss_t2i": c_txt.mean()}
  off = ~jnp.eye(s.shape[0], dtype=bool)
  c_img = jnp.where(off, jax.nn.relu(margin - pos[:, None] + s), 0.0)
  c_txt = jnp.where(off, jax.nn.relu(margin - pos[None, :] + s), 0.0)
  red = jnp.max if hardest else jnp.sum
  l_i2t = red(c_img, axis=1).mean()
  l_t2i = red(c_txt, axis=0).mean()
  return l_i2t + l_t2i, {"loss_i2t": l_i2t, "loss_t2i": l_t2i,
                         "violations": jnp.mean((c_img > 0).sum(1))}


def word_triplet(scores: jax.Array, *, margin: float, negatives: jax.Array
                 ) -> tuple[jax.Array, dict]:
  """JoImTeRNet's word-level triplet on D = -R (R: DAMSM word scores).

  scores[i, j] = R(image i, text j). Image anchor: [D(i,i) - D(i,n_i) +
  m]+; text anchor: [D(i,i) - D(n_i,i) + m]+; means added. (The official
  code scores the negative text with the anchor caption's word count; we
  use each text's own words.)
  """
  d = -scores
  idx = jnp.arange(scores.shape[0])
  c_img = jax.nn.relu(d[idx, idx] - d[idx, negatives] + margin)
  c_txt = jax.nn.relu(d[idx, idx] - d[negatives, idx] + margin)
  return c_img.mean() + c_txt.mean(), {"loss_i2t": c_img.mean(),
                                       "loss_t2i": c_txt.mean()}
