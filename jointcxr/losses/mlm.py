"""Masked language modelling (JoImTeRNet's multitask steps)."""

import jax
import jax.numpy as jnp


def mlm_mask(rng: jax.Array, tokens: jax.Array, *, vocab_size: int,
             mask_id: int, special_max_id: int = 4, mask_prob: float = 0.15
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BERT/JoImTeRNet masking: 15% of non-special tokens; 80/10/10 split.

  Tokens with id <= special_max_id (padding, [CLS], [SEP], [MASK], <unk>)
  are never chosen. Of the chosen, 80% become [MASK], 10% a random
  non-special token, 10% stay.

  Returns:
    (masked tokens, targets (the original ids), weights (1.0 where chosen)).
  """
  k1, k2, k3 = jax.random.split(rng, 3)
  cand = tokens > special_max_id
  chosen = cand & (jax.random.uniform(k1, tokens.shape) < mask_prob)
  u = jax.random.uniform(k2, tokens.shape)
  rand_tok = jax.random.randint(k3, tokens.shape, special_max_id + 1,
                                vocab_size)
  masked = jnp.where(chosen & (u < 0.8), mask_id, tokens)
  masked = jnp.where(chosen & (u >= 0.8) & (u < 0.9), rand_tok, masked)
  return masked, tokens, chosen.astype(jnp.float32)


def mlm(logits: jax.Array, targets: jax.Array, weights: jax.Array
        ) -> tuple[jax.Array, dict]:
  """Mean cross-entropy over the chosen positions."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  n = jnp.maximum(weights.sum(), 1.0)
  acc = jnp.sum((jnp.argmax(logits, -1) == targets) * weights) / n
  return jnp.sum(nll * weights) / n, {"mlm_acc": acc,
                                      "mlm_tokens": weights.sum()}
