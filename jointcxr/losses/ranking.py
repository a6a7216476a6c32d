"""Ranking (triplet hinge) losses: global triplet and JoImTeRNet word triplet.

Both are bidirectional: the image-anchored term ranks texts for each image,
the text-anchored term ranks images for each text, and the two means are
added. Conventions (`(loss, aux)`, raw embeddings, optional `[B]` mask) are
those of `jointcxr.losses.contrastive`.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jointcxr.losses import contrastive
from jointcxr.losses import core

Array = jax.Array
Aux = dict[str, Array]


def random_negatives(rng: Array, batch_size: int) -> Array:
  """One uniformly random in-batch negative n(i) != i per anchor.

  JoImTeRNet draws a single random negative per anchor (not the hardest) and
  uses the same index in both directions (METHODS.md §2.2c).

  Args:
    rng: a `jax.random` key.
    batch_size: B >= 2.

  Returns:
    int32 `[B]` with `n[i] != i`, uniform over the other B - 1 indices.
  """
  if batch_size < 2:
    raise ValueError(f"random negatives need a batch of >= 2, got {batch_size}")
  shift = jax.random.randint(rng, (batch_size,), 1, batch_size)
  return ((jnp.arange(batch_size) + shift) % batch_size).astype(jnp.int32)


def triplet_block(zimg_rows: Array, ztxt_rows: Array, zimg_all: Array,
                  ztxt_all: Array, pos_idx: Array, valid_rows: Array,
                  valid_all: Array, *, margin: Any, hardest: bool,
                  negatives_rows: Array | None) -> dict[str, core.Stats]:
  """Triplet hinge sums of one block of anchors (both directions).

  Args:
    zimg_rows: `[b, D]` normalised image anchors of the block.
    ztxt_rows: `[b, D]` normalised text anchors of the block.
    zimg_all: `[B, D]` all normalised images.
    ztxt_all: `[B, D]` all normalised texts.
    pos_idx: `[b]` global index of each anchor.
    valid_rows: `[b]` bool.
    valid_all: `[B]` bool.
    margin: hinge margin m.
    hardest: max (True) or sum (False) over negatives; ignored when
      `negatives_rows` is given.
    negatives_rows: optional `[b]` global index of each anchor's negative.

  Returns:
    dict with `i2t` and `t2i` hinge sums (see `core.hinge_rows`).
  """
  if negatives_rows is None:
    return {
        "i2t": core.hinge_rows(zimg_rows @ ztxt_all.T, pos_idx, valid_rows,
                               valid_all, margin, hardest),
        "t2i": core.hinge_rows(ztxt_rows @ zimg_all.T, pos_idx, valid_rows,
                               valid_all, margin, hardest),
    }
  pos = jnp.sum(zimg_rows * ztxt_rows, axis=-1)
  # s(i, n(i)) ranks a wrong text for image i; s(n(i), i) a wrong image for
  # text i. The same n(i) serves both directions, as in JoImTeRNet.
  neg_i2t = jnp.sum(zimg_rows * ztxt_all[negatives_rows], axis=-1)
  neg_t2i = jnp.sum(zimg_all[negatives_rows] * ztxt_rows, axis=-1)
  valid = valid_rows & valid_all[negatives_rows]
  return {
      "i2t": core.hinge_pairs(pos, neg_i2t, valid, margin),
      "t2i": core.hinge_pairs(pos, neg_t2i, valid, margin),
  }


def finish_triplet(stats: dict[str, core.Stats]) -> tuple[Array, Aux]:
  """Turns (possibly psum-reduced) `triplet_block` sums into `(loss, aux)`."""
  i2t = core.safe_mean(stats["i2t"]["loss_sum"], stats["i2t"]["count"])
  t2i = core.safe_mean(stats["t2i"]["loss_sum"], stats["t2i"]["count"])
  active = stats["i2t"]["active_sum"] + stats["t2i"]["active_sum"]
  anchors = stats["i2t"]["count"] + stats["t2i"]["count"]
  return i2t + t2i, {
      "i2t_loss": i2t,
      "t2i_loss": t2i,
      "active_per_anchor": jax.lax.stop_gradient(
          core.safe_mean(active, anchors)),
  }


def triplet(zimg: Array, ztxt: Array, *, margin: Any, hardest: bool = True,
            negatives: Array | None = None,
            mask: Array | None = None) -> tuple[Array, Aux]:
  """Bidirectional triplet hinge on cosine similarity.

  With s = cos: image-anchored term `[m - s(i,i) + s(i,j)]+` and
  text-anchored term `[m - s(i,i) + s(j,i)]+` over negatives j != i; max
  over j when `hardest` (VSE++), else sum; mean over anchors; both
  directions added.

  With `negatives` (JoImTeRNet, METHODS.md §2.2c): one given negative n(i)
  per anchor, same index both directions:
  `mean_i [m - s(i,i) + s(i,n(i))]+ + mean_i [m - s(i,i) + s(n(i),i)]+`,
  which equals the cosine-distance form `d(i,i) - d(i,n(i)) + m`.

  Args:
    zimg: `[B, D]` raw image embeddings.
    ztxt: `[B, D]` raw text embeddings.
    margin: m (0.5 in JoImTeRNet).
    hardest: hardest negative (True) or sum over negatives (False).
    negatives: optional int `[B]`, e.g. from `random_negatives`.
    mask: optional `[B]` bool; with `negatives`, an anchor counts only when
      both it and its negative are valid.

  Returns:
    `(loss, aux)` with `i2t_loss`, `t2i_loss` and `active_per_anchor`
    (number of non-zero hinge terms per anchor).
  """
  contrastive.check_pair(zimg, ztxt)
  zi, zt = core.l2_normalize(zimg), core.l2_normalize(ztxt)
  b = zi.shape[0]
  valid = core.valid_or_ones(mask, b)
  return finish_triplet(triplet_block(
      zi, zt, zi, zt, jnp.arange(b), valid, valid, margin=margin,
      hardest=hardest, negatives_rows=negatives))


def word_triplet(scores: Array, *, margin: Any, negatives: Array,
                 mask: Array | None = None,
                 image_anchor_negative_scores: Array | None = None,
                 ) -> tuple[Array, Aux]:
  """JoImTeRNet word-level triplet loss on DAMSM scores (METHODS.md §2.2d).

  With D(i, j) = -R(i, j) (R from `damsm_word_scores`, rows = images,
  columns = texts): image-anchored `[D(i,i) - D(i,n(i)) + m]+` and
  text-anchored `[D(i,i) - D(n(i),i) + m]+`, each averaged over the batch,
  then added.

  The official code scores the image-anchored negative text n(i) with the
  *anchor's* word count (its words truncated / padded to the anchor
  caption's length). To reproduce that quirk, pass
  `image_anchor_negative_scores[i]` = R(i, n(i)) computed that way, i.e.
  `damsm_word_pair_scores(regions, words[n], word_mask)`; by default the
  negative's own words are used (R(i, n(i)) from `scores`).

  Args:
    scores: `[B, B]` DAMSM word-level scores R.
    margin: m (0.5 in JoImTeRNet).
    negatives: int `[B]`, n(i) != i.
    mask: optional `[B]` bool of real examples.
    image_anchor_negative_scores: optional `[B]` replacement for R(i, n(i)).

  Returns:
    `(loss, aux)` with `i2t_loss`, `t2i_loss`, `active_per_anchor`.
  """
  b = scores.shape[0]
  if scores.shape != (b, b):
    raise ValueError(f"scores must be square [B, B], got {scores.shape}")
  scores = core.as_float(scores)
  valid = core.valid_or_ones(mask, b)
  idx = jnp.arange(b)
  pos = scores[idx, idx]
  neg_i2t = scores[idx, negatives]
  if image_anchor_negative_scores is not None:
    neg_i2t = core.as_float(image_anchor_negative_scores)
  neg_t2i = scores[negatives, idx]
  valid = valid & valid[negatives]
  # [D(i,i) - D(i,n) + m]+ with D = -R is [m - R(i,i) + R(i,n)]+.
  return finish_triplet({
      "i2t": core.hinge_pairs(pos, neg_i2t, valid, margin),
      "t2i": core.hinge_pairs(pos, neg_t2i, valid, margin),
  })
