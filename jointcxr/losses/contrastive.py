"""Instance-level contrastive losses: InfoNCE (CLIP/ConVIRT/LoVT), SigLIP, DAMSM-s."""

import jax
import jax.numpy as jnp

NEG = -1e30


def l2_normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Unit-norm rows in float32."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True),
                                       eps * eps))


def _ce_diag(logits: jax.Array, valid: jax.Array) -> tuple[jax.Array,
                                                           jax.Array]:
  """Per-row CE with the diagonal as the target, and argmax hits."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.diagonal(logp)
  hit = jnp.argmax(logits, axis=-1) == jnp.arange(logits.shape[0])
  return jnp.where(valid, nll, 0.0), jnp.where(valid, hit, False)


def infonce(zimg: jax.Array, ztxt: jax.Array, *, temperature,
            i2t_weight: float = 0.5, mask: jax.Array | None = None
            ) -> tuple[jax.Array, dict]:
  """Bidirectional InfoNCE on cosine similarity / temperature.

  loss = i2t_weight * CE(rows) + (1 - i2t_weight) * CE(columns), each a
  mean over valid anchors; rows are images (targets: their own report among
  all reports). `mask` [B] drops padded examples as anchors and negatives.
  """
  b = zimg.shape[0]
  valid = jnp.ones((b,), bool) if mask is None else mask.astype(bool)
  zi, zt = l2_normalize(zimg), l2_normalize(ztxt)
  sim = zi @ zt.T
  logits = sim / temperature
  both = valid[:, None] & valid[None, :]
  logits = jnp.where(both, logits, NEG)
  n = jnp.maximum(valid.sum(), 1)
  nll_r, hit_r = _ce_diag(logits, valid)
  nll_c, hit_c = _ce_diag(logits.T, valid)
  l_i2t, l_t2i = nll_r.sum() / n, nll_c.sum() / n
  loss = i2t_weight * l_i2t + (1.0 - i2t_weight) * l_t2i
  eye = jnp.eye(b, dtype=bool)
  aux = {"loss_i2t": l_i2t, "loss_t2i": l_t2i,
         "acc_i2t": hit_r.sum() / n, "acc_t2i": hit_c.sum() / n,
         "pos_sim": jnp.sum(jnp.where(eye & both, sim, 0)) / n,
         "neg_sim": jnp.sum(jnp.where(~eye & both, sim, 0)) / jnp.maximum(
             both.sum() - n, 1)}
  return loss, aux


def siglip(zimg: jax.Array, ztxt: jax.Array, *, logit_scale, logit_bias,
           mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Sigmoid loss over all pairs (positives on the diagonal), sum / B.

  logits = exp(logit_scale) * cos + logit_bias (Zhai et al. 2023).
  """
  b = zimg.shape[0]
  valid = jnp.ones((b,), bool) if mask is None else mask.astype(bool)
  sim = l2_normalize(zimg) @ l2_normalize(ztxt).T
  logits = jnp.exp(logit_scale) * sim + logit_bias
  labels = 2.0 * jnp.eye(b) - 1.0
  both = valid[:, None] & valid[None, :]
  ll = jnp.where(both, jax.nn.log_sigmoid(labels * logits), 0.0)
  n = jnp.maximum(valid.sum(), 1)
  loss = -ll.sum() / n
  eye = jnp.eye(b, dtype=bool)
  return loss, {"pos_logit": jnp.sum(jnp.where(eye & both, logits, 0)) / n,
                "neg_logit": jnp.sum(jnp.where(~eye & both, logits, 0)) /
                             jnp.maximum(both.sum() - n, 1)}


def damsm_sentence(zimg: jax.Array, ztxt: jax.Array, *, gamma3: float,
                   mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """JoImTeRNet's global matching: CE(rows) + CE(cols) of gamma3 * cos."""
  _, aux = infonce(zimg, ztxt, temperature=1.0 / gamma3, i2t_weight=0.5,
                   mask=mask)
  return aux["loss_i2t"] + aux["loss_t2i"], aux
