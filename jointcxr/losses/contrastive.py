"""Cross-batch contrastive losses: InfoNCE, DAMSM sentence loss, SigLIP.

Conventions shared by every loss in `jointcxr.losses`:

* Embeddings are raw; cosine-similarity losses L2-normalise internally.
* Every loss returns `(loss, aux)`: a float32 scalar and a dict of scalar
  diagnostics. Loss components in `aux` (e.g. `i2t_loss`) are differentiable,
  so objectives may re-weight them; accuracies and similarity statistics are
  computed under `stop_gradient`.
* "i2t" / rows = image anchors scored against all texts; "t2i" / columns =
  text anchors scored against all images. Positives are on the diagonal.
* `mask` (`[B]` bool, optional) marks real examples; padded ones are neither
  anchors nor negatives, so padding the batch changes nothing.

The arithmetic lives in per-row-block helpers (`block_stats`,
`finish_bidirectional`, `siglip_block`) so that `jointcxr.losses.sharded`
runs the very same code on each device's rows against all-gathered columns.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jointcxr.losses import core
from jointcxr.losses.core import l2_normalize  # noqa: F401  (re-export)

Array = jax.Array
Aux = dict[str, Array]


def block_stats(zimg_rows: Array, ztxt_rows: Array, zimg_all: Array,
                ztxt_all: Array, pos_idx: Array, valid_rows: Array,
                valid_all: Array, scale: Any) -> dict[str, core.Stats]:
  """Bidirectional softmax-CE sums of one block of anchors.

  Args:
    zimg_rows: `[b, D]` L2-normalised image anchors of this block.
    ztxt_rows: `[b, D]` L2-normalised text anchors of this block.
    zimg_all: `[B, D]` all normalised images (the t2i candidates).
    ztxt_all: `[B, D]` all normalised texts (the i2t candidates).
    pos_idx: `[b]` global index of each anchor (its positive's column).
    valid_rows: `[b]` bool mask of the block.
    valid_all: `[B]` bool mask of the whole batch.
    scale: logit scale applied to cosines (1/temperature, or gamma3).

  Returns:
    dict with `rows`, `cols` (`core.ce_rows` sums of each direction) and
    `sim` (`core.pair_stats` of the image-anchored cosines).
  """
  sim_i2t = zimg_rows @ ztxt_all.T
  sim_t2i = ztxt_rows @ zimg_all.T
  return {
      "rows": core.ce_rows(sim_i2t * scale, pos_idx, valid_rows, valid_all),
      "cols": core.ce_rows(sim_t2i * scale, pos_idx, valid_rows, valid_all),
      "sim": core.pair_stats(sim_i2t, pos_idx, valid_rows, valid_all),
  }


def finish_bidirectional(stats: dict[str, core.Stats], row_weight: Any,
                         col_weight: Any) -> tuple[Array, Aux]:
  """Turns (possibly psum-reduced) block sums into `(loss, aux)`.

  Args:
    stats: `block_stats` output (or `ce_rows` sums under `rows`/`cols`,
      optionally with `sim`), summed over all blocks.
    row_weight: weight of the image-anchored (row) mean CE.
    col_weight: weight of the text-anchored (column) mean CE.

  Returns:
    `(row_weight * i2t + col_weight * t2i, aux)` with `i2t_loss`,
    `t2i_loss`, `i2t_acc`, `t2i_acc` and, when available, `pos_sim`,
    `neg_sim`.
  """
  rows, cols = stats["rows"], stats["cols"]
  i2t = core.safe_mean(rows["loss_sum"], rows["count"])
  t2i = core.safe_mean(cols["loss_sum"], cols["count"])
  aux = {
      "i2t_loss": i2t,
      "t2i_loss": t2i,
      "i2t_acc": core.safe_mean(rows["correct_sum"], rows["count"]),
      "t2i_acc": core.safe_mean(cols["correct_sum"], cols["count"]),
  }
  if "sim" in stats:
    s = stats["sim"]
    aux["pos_sim"] = core.safe_mean(s["pos_sum"], s["pos_count"])
    aux["neg_sim"] = core.safe_mean(s["neg_sum"], s["neg_count"])
  return row_weight * i2t + col_weight * t2i, aux


def logits_ce(logits: Array, *, row_weight: Any = 1.0, col_weight: Any = 1.0,
              mask: Array | None = None) -> tuple[Array, Aux]:
  """Bidirectional cross-entropy on a square score matrix.

  Args:
    logits: `[B, B]`; rows are image anchors, columns text anchors,
      positives on the diagonal.
    row_weight: weight of the mean row CE (image -> text).
    col_weight: weight of the mean column CE (text -> image).
    mask: optional `[B]` bool of real examples.

  Returns:
    `(row_weight * CE(rows) + col_weight * CE(columns), aux)`.
  """
  b = logits.shape[0]
  if logits.ndim != 2 or logits.shape[1] != b:
    raise ValueError(f"logits must be square [B, B], got {logits.shape}")
  valid = core.valid_or_ones(mask, b)
  pos = jnp.arange(b)
  stats = {
      "rows": core.ce_rows(logits, pos, valid, valid),
      "cols": core.ce_rows(logits.T, pos, valid, valid),
  }
  return finish_bidirectional(stats, row_weight, col_weight)


def check_pair(zimg: Array, ztxt: Array) -> None:
  """Raises ValueError unless both are `[B, D]` with equal shapes."""
  if zimg.ndim != 2 or zimg.shape != ztxt.shape:
    raise ValueError("zimg and ztxt must both be [B, D] with equal shapes, "
                     f"got {zimg.shape} and {ztxt.shape}")


def infonce(zimg: Array, ztxt: Array, *, temperature: Any,
            i2t_weight: Any = 0.5,
            mask: Array | None = None) -> tuple[Array, Aux]:
  """Bidirectional InfoNCE (CLIP / ConVIRT / LoVT global loss).

  logits = cos(zimg_i, ztxt_j) / temperature; loss =
  `i2t_weight * CE(rows) + (1 - i2t_weight) * CE(columns)`. ConVIRT and LoVT
  use temperature 0.1 and `i2t_weight` 0.75 (METHODS.md §3.2).

  Args:
    zimg: `[B, D]` raw image embeddings.
    ztxt: `[B, D]` raw text embeddings (pair i is the positive of row i).
    temperature: softmax temperature (scalar; may be a traced, learned
      value).
    i2t_weight: weight of the image-anchored direction.
    mask: optional `[B]` bool of real examples.

  Returns:
    `(loss, aux)`; aux has `i2t_loss`, `t2i_loss`, `i2t_acc`, `t2i_acc`,
    `pos_sim`, `neg_sim` (mean cosine of positive / negative pairs).
  """
  check_pair(zimg, ztxt)
  zi, zt = core.l2_normalize(zimg), core.l2_normalize(ztxt)
  b = zi.shape[0]
  valid = core.valid_or_ones(mask, b)
  stats = block_stats(zi, zt, zi, zt, jnp.arange(b), valid, valid,
                      1.0 / core.as_float(temperature))
  return finish_bidirectional(stats, i2t_weight, 1.0 - i2t_weight)


def damsm_sentence(zimg: Array, ztxt: Array, *, gamma3: Any,
                   mask: Array | None = None) -> tuple[Array, Aux]:
  """JoImTeRNet / AttnGAN DAMSM sentence loss (METHODS.md §2.2a).

  S_ij = gamma3 * cos(v_i, t_j); loss = CE(rows of S) + CE(columns of S),
  i.e. the *sum* of both directions (twice a symmetric InfoNCE with
  temperature 1/gamma3).

  Args:
    zimg: `[B, D]` raw global image features v.
    ztxt: `[B, D]` raw sentence (report) features t.
    gamma3: cosine scale (10 in JoImTeRNet).
    mask: optional `[B]` bool of real examples.

  Returns:
    `(loss, aux)` with the keys of `infonce`.
  """
  check_pair(zimg, ztxt)
  zi, zt = core.l2_normalize(zimg), core.l2_normalize(ztxt)
  b = zi.shape[0]
  valid = core.valid_or_ones(mask, b)
  stats = block_stats(zi, zt, zi, zt, jnp.arange(b), valid, valid, gamma3)
  return finish_bidirectional(stats, 1.0, 1.0)


def siglip_block(zimg_rows: Array, ztxt_all: Array, pos_idx: Array,
                 valid_rows: Array, valid_all: Array, logit_scale: Any,
                 logit_bias: Any) -> dict[str, core.Stats]:
  """SigLIP sums of one block of normalised image rows vs all texts.

  Args:
    zimg_rows: `[b, D]` normalised images of the block.
    ztxt_all: `[B, D]` all normalised texts.
    pos_idx: `[b]` global index of each row.
    valid_rows: `[b]` bool.
    valid_all: `[B]` bool.
    logit_scale: log of the multiplicative scale t.
    logit_bias: additive bias b.

  Returns:
    dict with `pairs` (`core.sigmoid_rows` sums) and `sim`
    (`core.pair_stats`).
  """
  sim = zimg_rows @ ztxt_all.T
  logits = (sim * jnp.exp(core.as_float(logit_scale))
            + core.as_float(logit_bias))
  return {
      "pairs": core.sigmoid_rows(logits, pos_idx, valid_rows, valid_all),
      "sim": core.pair_stats(sim, pos_idx, valid_rows, valid_all),
  }


def finish_siglip(stats: dict[str, core.Stats]) -> tuple[Array, Aux]:
  """Turns (possibly psum-reduced) `siglip_block` sums into `(loss, aux)`."""
  p, s = stats["pairs"], stats["sim"]
  loss = core.safe_mean(p["loss_sum"], p["count"])
  return loss, {
      "pos_sim": core.safe_mean(s["pos_sum"], s["pos_count"]),
      "neg_sim": core.safe_mean(s["neg_sum"], s["neg_count"]),
  }


def siglip(zimg: Array, ztxt: Array, *, logit_scale: Any, logit_bias: Any,
           mask: Array | None = None) -> tuple[Array, Aux]:
  """SigLIP pairwise sigmoid loss (Zhai et al. 2023).

  logit_ij = exp(logit_scale) * cos(zimg_i, ztxt_j) + logit_bias, label
  z_ij = +1 on the diagonal and -1 elsewhere; loss =
  -(1/B) sum_ij log sigmoid(z_ij * logit_ij) (sum over all valid pairs,
  divided by the number of valid images, as in the paper).

  Args:
    zimg: `[B, D]` raw image embeddings.
    ztxt: `[B, D]` raw text embeddings.
    logit_scale: log t (the paper's learnable t'; what
      `jointcxr.models.two_towers` outputs as `logit_scale`), e.g.
      log(10) at init.
    logit_bias: the bias b (-10 at init).
    mask: optional `[B]` bool of real examples.

  Returns:
    `(loss, aux)` with `pos_sim`, `neg_sim`.
  """
  check_pair(zimg, ztxt)
  zi, zt = core.l2_normalize(zimg), core.l2_normalize(ztxt)
  b = zi.shape[0]
  valid = core.valid_or_ones(mask, b)
  return finish_siglip(siglip_block(zi, zt, jnp.arange(b), valid, valid,
                                    logit_scale, logit_bias))
