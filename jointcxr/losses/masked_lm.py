"""Masked language modelling: JoImTeRNet's BERT masking and its loss.

Masking follows the official `MimicDatasetMLM.mask_input` (METHODS.md §2.2):
each non-special token is selected with probability `mask_prob` (15%); of the
selected tokens 90% become [MASK] and 1/9 of those are then overwritten by a
random non-special token, i.e. 80% [MASK] / 10% random / 10% unchanged. The
loss is the cross-entropy over the vocabulary at the selected positions only.
"""

import jax
import jax.numpy as jnp

from jointcxr.losses import core

Array = jax.Array
Aux = dict[str, Array]


def mlm_mask(rng: Array, tokens: Array, *, vocab_size: int, mask_id: int,
             special_max_id: int = 4,
             mask_prob: float = 0.15) -> tuple[Array, Array, Array]:
  """Selects and corrupts tokens for MLM (80/10/10 split).

  Args:
    rng: a `jax.random` key.
    tokens: int `[B, T]` token ids (padding included).
    vocab_size: V; random replacements are drawn from
      `[special_max_id, V)` minus `mask_id`.
    mask_id: id of [MASK]; never selected as a target.
    special_max_id: ids `< special_max_id` (padding, [CLS], [SEP], [UNK], ...)
      are never selected; JoImTeRNet excludes ids <= 3, hence 4.
    mask_prob: selection probability of each eligible token.

  Returns:
    `(masked_tokens, targets, weights)`: the corrupted input `[B, T]`, the
    original ids `[B, T]` (the labels), and float32 `[B, T]` weights, 1 at
    selected positions and 0 elsewhere.
  """
  if not 0 <= mask_id < vocab_size:
    raise ValueError(f"mask_id {mask_id} outside vocabulary of {vocab_size}")
  if vocab_size - special_max_id - (mask_id >= special_max_id) < 1:
    raise ValueError("no non-special token left to draw random replacements "
                     f"from (vocab_size={vocab_size}, special_max_id="
                     f"{special_max_id})")
  tokens = jnp.asarray(tokens)
  k_sel, k_mask, k_rand, k_tok = jax.random.split(rng, 4)
  eligible = (tokens >= special_max_id) & (tokens != mask_id)
  selected = eligible & jax.random.bernoulli(k_sel, mask_prob, tokens.shape)
  to_mask = selected & jax.random.bernoulli(k_mask, 0.9, tokens.shape)
  to_random = to_mask & jax.random.bernoulli(k_rand, 1.0 / 9.0, tokens.shape)
  # Draw from the non-special ids with [MASK] removed: sample in a range one
  # shorter and shift ids at or above mask_id up by one.
  n_regular = vocab_size - special_max_id - int(mask_id >= special_max_id)
  rand = jax.random.randint(k_tok, tokens.shape, 0, n_regular) + special_max_id
  if mask_id >= special_max_id:
    rand = jnp.where(rand >= mask_id, rand + 1, rand)
  masked = jnp.where(to_mask, mask_id, tokens)
  masked = jnp.where(to_random, rand, masked).astype(tokens.dtype)
  return masked, tokens, selected.astype(jnp.float32)


def mlm(logits: Array, targets: Array,
        weights: Array) -> tuple[Array, Aux]:
  """Weighted mean cross-entropy of the MLM predictions.

  Args:
    logits: `[B, T, V]` MLM head outputs.
    targets: int `[B, T]` original token ids.
    weights: `[B, T]` (1 at selected positions; 0 elsewhere).

  Returns:
    `(loss, aux)`: loss = sum(w * CE) / max(sum(w), 1); aux has `accuracy`
    (weighted top-1) and `num_masked`.
  """
  logits = core.as_float(logits)
  if logits.shape[:-1] != targets.shape or targets.shape != weights.shape:
    raise ValueError(f"logits {logits.shape}, targets {targets.shape} and "
                     f"weights {weights.shape} do not agree")
  w = core.as_float(weights)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32),
                             axis=-1)[..., 0]
  total = jnp.sum(w)
  correct = (jnp.argmax(logits, axis=-1) == targets) * w
  return core.safe_mean(jnp.sum(nll * w), total), {
      "accuracy": jax.lax.stop_gradient(
          core.safe_mean(jnp.sum(correct), total)),
      "num_masked": total,
  }
