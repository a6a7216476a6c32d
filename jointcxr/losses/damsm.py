"""JoImTeRNet / AttnGAN DAMSM word-level (region-word) matching loss.

For image i (regions r_1..R) and text j (valid words e_1..T_j), following
METHODS.md §2.2b and the official `func_attention` / `words_loss`:

1. raw affinities a_tr = e_t . r_r (plain dot product, no normalisation);
2. softmax over the text's *valid words* for each region;
3. softmax over *regions* of gamma1 times that, for each word (alpha_tr);
4. context per word c_t = sum_r alpha_tr r_r;
5. R(i, j) = log sum_{valid t} exp(gamma2 * cos(c_t, e_t));
6. loss = CE(rows of gamma3 R) + CE(columns of gamma3 R), rows = images i
   scored against all texts j, columns = texts against all images.

Scoring all pairs materialises `[B_img, B_txt, T, R]`, so `damsm_word_scores`
can be chunked over blocks of texts with `lax.map` and a rematerialised body:
forward *and* backward memory is then `O(chunk * B * T * R)` instead of
`O(B^2 * T * R)`, with identical results.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jointcxr.losses import contrastive
from jointcxr.losses import core

Array = jax.Array
Aux = dict[str, Array]


def _scores_dense(regions: Array, words: Array, word_mask: Array,
                  gamma1: Any, gamma2: Any) -> Array:
  """R for every (image, text) pair, no chunking: `[B_img, B_txt]`."""
  regions, words = core.as_float(regions), core.as_float(words)
  wmask = word_mask.astype(bool)[None, :, :, None]  # [1, Bt, T, 1]
  aff = jnp.einsum("jtd,ird->ijtr", words, regions)  # [Bi, Bt, T, R]
  # Softmax over words (axis t) first, then over regions: swapping the two
  # gives a different method (METHODS.md §5).
  over_words = jax.nn.softmax(jnp.where(wmask, aff, core.NEG_INF), axis=2)
  alpha = jax.nn.softmax(gamma1 * over_words, axis=3)
  context = jnp.einsum("ijtr,ird->ijtd", alpha, regions)
  cos = jnp.sum(core.l2_normalize(context) * core.l2_normalize(words)[None],
                axis=-1)  # [Bi, Bt, T]
  valid = word_mask.astype(bool)[None]
  return jax.nn.logsumexp(jnp.where(valid, gamma2 * cos, core.NEG_INF),
                          axis=2)


def damsm_word_scores(regions: Array, words: Array, word_mask: Array, *,
                      gamma1: Any, gamma2: Any,
                      chunk_size: int | None = None) -> Array:
  """DAMSM region-word matching scores R(i, j).

  Args:
    regions: `[B_img, R, D]` raw region features.
    words: `[B_txt, T, D]` raw word features.
    word_mask: `[B_txt, T]` bool; valid words (exclude [CLS] and padding as
      the method requires). A text without valid words scores ~-1e9.
    gamma1: region-softmax sharpness (4 in JoImTeRNet).
    gamma2: word-score sharpness (5).
    chunk_size: score blocks of this many texts at a time (memory
      `O(chunk * B_img * T * R)`, forward and backward); None = all at once.

  Returns:
    `[B_img, B_txt]` float32 scores, rows = images, columns = texts.
  """
  if (regions.ndim != 3 or words.ndim != 3
      or word_mask.shape != words.shape[:2]):
    raise ValueError("expected regions [B, R, D], words [B, T, D] and "
                     f"word_mask [B, T]; got {regions.shape}, {words.shape}, "
                     f"{word_mask.shape}")
  if regions.shape[-1] != words.shape[-1]:
    raise ValueError(f"region dim {regions.shape[-1]} != word dim "
                     f"{words.shape[-1]}")
  n_txt = words.shape[0]
  if chunk_size is None or chunk_size >= n_txt:
    return _scores_dense(regions, words, word_mask, gamma1, gamma2)
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  n_chunks = -(-n_txt // chunk_size)
  pad = n_chunks * chunk_size - n_txt
  # Padded texts are all-"valid" zero words so they stay finite; their
  # columns are sliced off below.
  words_p = jnp.pad(words, ((0, pad), (0, 0), (0, 0)))
  mask_p = jnp.pad(word_mask.astype(bool), ((0, pad), (0, 0)),
                   constant_values=True)
  words_c = words_p.reshape(n_chunks, chunk_size, *words.shape[1:])
  mask_c = mask_p.reshape(n_chunks, chunk_size, words.shape[1])

  # Remat the body: otherwise the backward pass keeps every chunk's
  # [B, chunk, T, R] residuals alive and chunking saves nothing.
  @jax.checkpoint
  def one_chunk(xs: tuple[Array, Array]) -> Array:
    w, m = xs
    return _scores_dense(regions, w, m, gamma1, gamma2)

  out = jax.lax.map(one_chunk, (words_c, mask_c))  # [n, B_img, chunk]
  out = jnp.moveaxis(out, 0, 1).reshape(regions.shape[0], -1)
  return out[:, :n_txt]


def damsm_word_pair_scores(regions: Array, words: Array, word_mask: Array, *,
                           gamma1: Any, gamma2: Any) -> Array:
  """R(i, i) for aligned pairs only (image i with text i): `[B]`.

  Cheap (`O(B * T * R)`); used for JoImTeRNet's word-triplet code quirk,
  e.g. `damsm_word_pair_scores(regions, words[n], word_mask)` scores the
  negative text n(i) with the anchor's word mask.
  """
  one = jax.vmap(lambda r, w, m: _scores_dense(r[None], w[None], m[None],
                                               gamma1, gamma2)[0, 0])
  return one(regions, words, word_mask)


def finish_damsm(stats: dict[str, core.Stats]) -> tuple[Array, Aux]:
  """Turns (possibly psum-reduced) DAMSM block sums into `(loss, aux)`."""
  loss, aux = contrastive.finish_bidirectional(
      {"rows": stats["rows"], "cols": stats["cols"]}, 1.0, 1.0)
  s = stats["score"]
  aux["pos_score"] = core.safe_mean(s["pos_sum"], s["pos_count"])
  aux["neg_score"] = core.safe_mean(s["neg_sum"], s["neg_count"])
  return loss, aux


def pair_valid(word_mask: Array, mask: Array | None) -> Array:
  """Valid pairs: in `mask` (if given) and with at least one valid word."""
  has_words = jnp.any(word_mask.astype(bool), axis=-1)
  return has_words & core.valid_or_ones(mask, word_mask.shape[0])


def damsm_word(regions: Array, words: Array, word_mask: Array, *,
               gamma1: Any, gamma2: Any, gamma3: Any,
               chunk_size: int | None = None,
               mask: Array | None = None) -> tuple[Array, Aux]:
  """DAMSM word loss: CE(rows of gamma3 R) + CE(columns of gamma3 R).

  Rows are images i scored against all texts j; columns are texts scored
  against all images (METHODS.md §2.2b).

  Args:
    regions: `[B, R, D]` raw region features (image i).
    words: `[B, T, D]` raw word features (text i, the pair of image i).
    word_mask: `[B, T]` bool of valid words.
    gamma1: region-softmax sharpness (4).
    gamma2: word-score sharpness (5).
    gamma3: CE logit scale (10).
    chunk_size: see `damsm_word_scores`; results do not depend on it.
    mask: optional `[B]` bool of real pairs. Pairs whose text has no valid
      word are also excluded (as anchors and as negatives).

  Returns:
    `(loss, aux)` with `i2t_loss`, `t2i_loss`, `i2t_acc`, `t2i_acc`,
    `pos_score` and `neg_score` (mean R of matched / unmatched pairs).
  """
  if regions.shape[0] != words.shape[0]:
    raise ValueError(f"batch mismatch: {regions.shape[0]} images vs "
                     f"{words.shape[0]} texts")
  scores = damsm_word_scores(regions, words, word_mask, gamma1=gamma1,
                             gamma2=gamma2, chunk_size=chunk_size)
  b = scores.shape[0]
  valid = pair_valid(word_mask, mask)
  pos = jnp.arange(b)
  logits = gamma3 * scores
  return finish_damsm({
      "rows": core.ce_rows(logits, pos, valid, valid),
      "cols": core.ce_rows(logits.T, pos, valid, valid),
      "score": core.pair_stats(scores, pos, valid, valid),
  })
