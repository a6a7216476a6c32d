"""Per-method training objectives over the two-tower model's outputs.

`compute(method, cfg, outputs, batch, rng=, mesh=)` returns `(loss, aux)`
with every component under `loss/<name>`. Defaults reproduce the papers
(`defaults(method)`, METHODS.md):

- lovt: 0.75 L_g(I->R) + 0.25 L_g(R->I) (tau 0.1) + 0.375 (image l2att +
  att2l) + 0.375 (report l2att + att2l) (tau_l 0.3; image soft positives
  within 0.5 of the grid diagonal, lambda 1; report identity targets).
- convirt: InfoNCE tau 0.1, i2t weight 0.75. clip: InfoNCE with a fixed or
  learnable temperature, i2t 0.5. siglip: sigmoid loss.
- joimternet: lambda_DAMSM (L_s + L_w) + lambda_triplet (L_st + L_wt), gamma
  (4, 5, 10), margins 0.5, lambda (1, 2), one random in-batch negative per
  anchor; `mlm_step` for its MLM multitask steps.

With a mesh of more than one device along the data axes, the cross-batch
terms use `jointcxr.losses.sharded` (negatives from the whole global batch,
O(B^2/D) memory).
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jointcxr import losses
from jointcxr.losses import sharded

DEFAULTS = {
    "lovt": dict(temperature=0.1, local_temperature=0.3, threshold=0.5,
                 smooth_lambda=1.0, global_a2b=0.75, global_b2a=0.25,
                 local_a_l2att=0.375, local_a_att2l=0.375,
                 local_b_l2att=0.375, local_b_att2l=0.375),
    "convirt": dict(temperature=0.1, i2t_weight=0.75),
    "clip": dict(temperature=0.1, i2t_weight=0.5),
    "siglip": dict(),
    "joimternet": dict(gamma1=4.0, gamma2=5.0, gamma3=10.0, margin=0.5,
                       word_margin=0.5, lambda_damsm=1.0, lambda_triplet=2.0,
                       chunk_size=None),
}


def defaults(method: str) -> dict:
  """The paper defaults of a method's loss."""
  if method not in DEFAULTS:
    raise ValueError(f"unknown method {method!r}; expected one of "
                     f"{sorted(DEFAULTS)}")
  return dict(DEFAULTS[method])


def _data_axes(cfg, mesh):
  if mesh is None:
    return None
  axes = tuple(cfg.get("data_axes", ("data",)))
  size = 1
  for a in axes:
    size *= mesh.shape.get(a, 1)
  return axes if size > 1 else None


def _infonce(zi, zt, mesh, axes, mask, **kw):
  if axes is None:
    return losses.infonce(zi, zt, mask=mask, **kw)
  return sharded.infonce(zi, zt, mesh=mesh, data_axis=axes, mask=mask, **kw)


def compute(method: str, cfg: Mapping[str, Any] | None, outputs: Mapping,
            batch: Mapping, *, rng: jax.Array | None = None, mesh=None
            ) -> tuple[jax.Array, dict]:
  """Total loss of `method` and its components."""
  c = {**defaults(method), **dict(cfg or {})}
  axes = _data_axes(c, mesh)
  mask = batch.get("mask")
  aux = {}
  if method in ("convirt", "clip", "lovt"):
    temp = c["temperature"]
    if method == "clip" and "logit_scale" in outputs:
      temp = jnp.exp(-outputs["logit_scale"])
    i2t = c.get("i2t_weight", 0.5)
    g, gaux = _infonce(outputs["img_global"], outputs["txt_global"], mesh,
                       axes, mask, temperature=temp, i2t_weight=i2t)
    aux.update({f"global/{k}": v for k, v in gaux.items()})
    if method != "lovt":
      return g, {"loss/global": g, **aux}
    total = c["global_a2b"] * gaux["loss_i2t"] + c["global_b2a"] * gaux[
        "loss_t2i"]
    aux["loss/global"] = total
    _, img = losses.lovt_local(
        outputs["img_local"], outputs["img_attended"], outputs["img_weights"],
        None, temperature=c["local_temperature"],
        positions=outputs["img_positions"], threshold=c["threshold"],
        smooth_lambda=c["smooth_lambda"])
    _, rep = losses.lovt_local(
        outputs["txt_local"], outputs["txt_attended"], outputs["txt_weights"],
        outputs["txt_local_mask"], temperature=c["local_temperature"])
    local = (c["local_a_l2att"] * img["l2att"] + c["local_a_att2l"] *
             img["att2l"] + c["local_b_l2att"] * rep["l2att"] +
             c["local_b_att2l"] * rep["att2l"])
    aux.update({"loss/local_image_l2att": img["l2att"],
                "loss/local_image_att2l": img["att2l"],
                "loss/local_report_l2att": rep["l2att"],
                "loss/local_report_att2l": rep["att2l"],
                "loss/local": local})
    return total + local, aux
  if method == "siglip":
    kw = dict(logit_scale=outputs["logit_scale"],
              logit_bias=outputs["logit_bias"], mask=mask)
    loss, saux = (losses.siglip(outputs["img_global"], outputs["txt_global"],
                                **kw) if axes is None else sharded.siglip(
                                    outputs["img_global"],
                                    outputs["txt_global"], mesh=mesh,
                                    data_axis=axes, **kw))
    return loss, {"loss/global": loss, **{f"global/{k}": v for k, v in
                                          saux.items()}}
  if method == "joimternet":
    return _joimternet(c, outputs, rng, mesh, axes)
  raise ValueError(f"unknown method {method!r}")


def random_negatives(rng: jax.Array, b: int) -> jax.Array:
  """One uniform in-batch negative n(i) != i per anchor."""
  return (jnp.arange(b) + jax.random.randint(rng, (b,), 1, b)) % b


def _joimternet(c, o, rng, mesh, axes):
  zi, zt = o["img_global"], o["txt_global"]
  b = zi.shape[0]
  if rng is None:
    rng = jax.random.PRNGKey(0)
  neg = random_negatives(rng, b)
  wkw = dict(gamma1=c["gamma1"], gamma2=c["gamma2"], gamma3=c["gamma3"],
             chunk_size=c["chunk_size"])
  if axes is None:
    l_s, _ = losses.damsm_sentence(zi, zt, gamma3=c["gamma3"])
    l_w, waux = losses.damsm_word(o["img_regions"], o["txt_words"],
                                  o["txt_word_mask"], **wkw)
    l_st, _ = losses.triplet(zi, zt, margin=c["margin"], negatives=neg)
    scores = waux["scores"]
  else:
    l_s, _ = sharded.damsm_sentence(zi, zt, mesh=mesh, data_axis=axes,
                                    gamma3=c["gamma3"])
    l_w, _ = sharded.damsm_word(o["img_regions"], o["txt_words"],
                                o["txt_word_mask"], mesh=mesh, data_axis=axes,
                                **wkw)
    l_st, _ = sharded.triplet(zi, zt, mesh=mesh, data_axis=axes,
                              margin=c["margin"], negatives=neg)
    # Word triplet needs R(i,i), R(i,n_i), R(n_i,i) only: 3B pair scores.
    scores = None
  if scores is not None:
    l_wt, _ = losses.word_triplet(scores, margin=c["word_margin"],
                                  negatives=neg)
  else:
    l_wt = _word_triplet_pairs(o, neg, c)
  total = c["lambda_damsm"] * (l_s + l_w) + c["lambda_triplet"] * (l_st +
                                                                    l_wt)
  return total, {"loss/damsm_sentence": l_s, "loss/damsm_word": l_w,
                 "loss/triplet_sentence": l_st, "loss/triplet_word": l_wt}


def _word_triplet_pairs(o, neg, c):
  """Word triplet from the three needed pair scores (no B x B matrix)."""
  def r(img_idx, txt_idx):
    return jax.vmap(lambda i, j: losses.damsm_word_scores(
        o["img_regions"][i][None], o["txt_words"][j][None],
        o["txt_word_mask"][j][None], gamma1=c["gamma1"],
        gamma2=c["gamma2"])[0, 0])(img_idx, txt_idx)
  idx = jnp.arange(neg.shape[0])
  d_pos, d_img_neg, d_txt_neg = -r(idx, idx), -r(idx, neg), -r(neg, idx)
  m = c["word_margin"]
  return (jax.nn.relu(d_pos - d_img_neg + m).mean() +
          jax.nn.relu(d_pos - d_txt_neg + m).mean())


def mlm_step(logits: jax.Array, targets: jax.Array, weights: jax.Array
             ) -> tuple[jax.Array, dict]:
  """Loss of a JoImTeRNet MLM-only step."""
  loss, aux = losses.mlm(logits, targets, weights)
  return loss, {"loss/mlm": loss, **aux}
