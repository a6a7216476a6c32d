"""Per-method training objectives built from `jointcxr.losses`.

`compute(method, cfg, outputs, batch, rng=, mesh=)` turns the two-tower
model's output dict (`jointcxr.models.two_towers`) into the method's total
loss and a flat dict of logged diagnostics. Defaults follow the papers
(METHODS.md); `cfg` is the *loss section* of a config (`config.loss`) and
overrides `defaults(method)` key by key (unknown keys are an error, to catch
typos).

Methods and their total loss:

* `lovt`: w_a2b L_g,I->R + w_b2a L_g,R->I (InfoNCE, tau 0.1)
  + image local (l2att, att2l; tau_l 0.3, spatial soft positives r 0.5,
  lambda 1) + report local (l2att, att2l; identity targets, sentence mask).
  Weights by LoVT's names in `loss_weights`: global_a2b 0.75, global_b2a
  0.25, local_{a,b}_{l2att,att2l} 0.375 (a = image, b = report).
* `convirt`: InfoNCE, tau 0.1, i2t weight 0.75.
* `clip`: InfoNCE, i2t weight 0.5; the temperature is learned when the model
  outputs `logit_scale` (log(1/tau), as `two_towers` stores it), else fixed
  `temperature` (0.07). LoVT's CLIP* run used tau 0.1 and 0.75/0.25: set
  `temperature` / `i2t_weight` for that.
* `siglip`: SigLIP on `outputs['logit_scale']` (log t) and
  `outputs['logit_bias']` when present, else the fixed `logit_scale` /
  `logit_bias` of the config (log 10, -10).
* `joimternet`: lambda_damsm (L_s + w L_w) + lambda_triplet (L_st + w L_wt),
  gamma 4/5/10, margins 0.5, lambda_damsm 1, lambda_triplet 2, local
  weight w 1 (0: the global-only ablation), one random
  in-batch negative per anchor drawn from `rng`. The MLM task is a separate
  step: `mlm_inputs` (masking with the config's settings) and `mlm_step`
  (loss).

Every method logs `sim/pos` / `sim/neg` (mean cosine of positive and
negative pairs). The InfoNCE-based ones (lovt, convirt, clip, and
joimternet's DAMSM sentence term, a sum of two InfoNCE directions) also log
`loss/global` (their global term as a per-direction mean) and
`loss/global_over_lnB`, that divided by ln(B) for the B valid examples:
1.0 is chance, what a collapsed or untrained embedding gives. SigLIP's
pairwise sigmoid loss has no such fixed chance level (it depends on the
learned scale and bias), so it logs no ratio; its collapse shows in the
embedding statistics and in sim/pos - sim/neg.

With `mesh`, the cross-batch terms use `jointcxr.losses.sharded` (negatives
from the whole global batch, per-device memory ~B^2/D); the per-sample LoVT
local losses need no collectives. `batch['mask']` ([B] bool, as the input
pipeline pads eval batches), if present, marks real examples: padded ones
are neither anchors nor negatives.
"""

import copy
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jointcxr import losses
from jointcxr import sharding
from jointcxr.losses import sharded
from jointcxr.losses.ranking import random_negatives  # noqa: F401

Array = jax.Array
METHODS = ("lovt", "convirt", "clip", "siglip", "joimternet")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "lovt": {
        "temperature": 0.1,
        "local_temperature": 0.3,
        "threshold": 0.5,
        "smooth_lambda": 1.0,
        "loss_weights": {
            "global_a2b": 0.75, "global_b2a": 0.25,
            "local_a_l2att": 0.375, "local_a_att2l": 0.375,
            "local_b_l2att": 0.375, "local_b_att2l": 0.375,
        },
    },
    "convirt": {"temperature": 0.1, "i2t_weight": 0.75},
    "clip": {"temperature": 0.07, "i2t_weight": 0.5},
    "siglip": {"logit_scale": math.log(10.0), "logit_bias": -10.0},
    "joimternet": {
        "gamma1": 4.0, "gamma2": 5.0, "gamma3": 10.0,
        "sentence_margin": 0.5, "word_margin": 0.5,
        "lambda_damsm": 1.0, "lambda_triplet": 2.0,
        # Weight of the local (region-word) terms L_w and L_wt; 0 gives the
        # global-only ablation (L_s + L_st) the paper's claim is about.
        "local_weight": 1.0,
        # Score the image-anchored negative text with the anchor's word count
        # as the official code does (METHODS.md §2.2d); off = the formula.
        "word_triplet_code_quirk": False,
        # Texts per block in the DAMSM word scores (None = all at once).
        "chunk_size": None,
        # MLM task (a separate step; the trainer picks it with this prob).
        "mlm_step_prob": 0.7, "mlm_prob": 0.15, "mlm_special_max_id": 4,
        "vocab_size": None, "mask_id": None,
    },
}


def defaults(method: str) -> dict[str, Any]:
  """The paper defaults of `method`'s loss section (a fresh copy)."""
  if method not in _DEFAULTS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  return copy.deepcopy(_DEFAULTS[method])


def _as_dict(cfg: Any) -> dict[str, Any]:
  if cfg is None:
    return {}
  if isinstance(cfg, (ml_collections.ConfigDict,
                      ml_collections.FrozenConfigDict)):
    return cfg.to_dict()
  return dict(cfg)


def resolve(method: str, cfg: Any) -> dict[str, Any]:
  """`defaults(method)` overridden by `cfg` (nested for `loss_weights`).

  Raises:
    ValueError: naming the first key of `cfg` that the method does not have.
  """
  out = defaults(method)
  for key, value in _as_dict(cfg).items():
    if key not in out:
      raise ValueError(f"unknown loss option {key!r} for method {method!r}; "
                       f"known: {sorted(out)}")
    if isinstance(out[key], dict):
      for sub, v in _as_dict(value).items():
        if sub not in out[key]:
          raise ValueError(f"unknown {key} entry {sub!r} for method "
                           f"{method!r}; known: {sorted(out[key])}")
        out[key][sub] = v
    else:
      out[key] = value
  return out


def _get(outputs: Mapping[str, Any], key: str, method: str) -> Array:
  if key not in outputs:
    raise KeyError(f"method {method!r} needs model output {key!r}; got "
                   f"{sorted(outputs)}")
  return outputs[key]


def _flat_units(x: Array) -> Array:
  """[B, H, W, D] region maps -> [B, H*W, D]; [B, N, D] unchanged."""
  return x.reshape(x.shape[0], -1, x.shape[-1]) if x.ndim == 4 else x


def _example_mask(batch: Mapping[str, Any] | None, b: int) -> Array | None:
  """The [B] bool mask of real examples (`mask` or `_mask`), if any."""
  for key in ("mask", "_mask"):
    if batch and key in batch and jnp.ndim(batch[key]) == 1:
      mask = jnp.asarray(batch[key]).astype(bool)
      if mask.shape != (b,):
        raise ValueError(f"batch[{key!r}] must be [{b}], got {mask.shape}")
      return mask
  return None


def default_data_axis(mesh: Mesh) -> str | tuple[str, ...]:
  """Mesh axes the batch is split over: `data` and `fsdp` where present."""
  names = sharding.batch_axes(mesh)
  if not names:
    raise ValueError(f"mesh {tuple(mesh.shape)} has neither a 'data' nor an "
                     "'fsdp' axis; pass data_axis=")
  return names[0] if len(names) == 1 else names


def _infonce(zi, zt, mask, mesh, data_axis, **kw):
  if mesh is None:
    return losses.infonce(zi, zt, mask=mask, **kw)
  return sharded.infonce(zi, zt, mesh=mesh, data_axis=data_axis, mask=mask,
                         **kw)


def _num_valid(mask: Array | None, b: int) -> Array:
  """Real examples in the batch (the InfoNCE candidates), as float32."""
  if mask is None:
    return jnp.asarray(b, jnp.float32)
  return jnp.sum(mask.astype(jnp.float32))


def chance_aux(global_loss: Array, n: Array) -> dict[str, Array]:
  """`loss/global` and `loss/global_over_lnB` of a per-direction InfoNCE.

  An InfoNCE direction over `n` candidates is ln(n) when the embeddings
  carry no information about the pairing (chance); the ratio is the
  trainer's collapse signal (`jointcxr.health`).

  Args:
    global_loss: the weighted mean over directions of the global InfoNCE
      (weights summing to 1).
    n: the number of valid candidates (examples) of the batch.

  Returns:
    dict with `loss/global` and `loss/global_over_lnB` (NaN below two
    candidates, where ln(n) is 0).
  """
  ln_n = jnp.log(jnp.maximum(n, 1.0))
  return {"loss/global": global_loss,
          "loss/global_over_lnB": jnp.where(
              n > 1, global_loss / jnp.where(n > 1, ln_n, 1.0), jnp.nan)}


def _global_aux(aux: Mapping[str, Array], w_i2t: Any, w_t2i: Any,
                n: Array) -> dict[str, Array]:
  """Logged keys of a global InfoNCE term with direction weights."""
  w_sum = w_i2t + w_t2i
  if isinstance(w_sum, (int, float)) and w_sum <= 0:
    w_i2t = w_t2i = w_sum = 1.0  # a switched-off term: report the mean
  glob = (w_i2t * aux["i2t_loss"] + w_t2i * aux["t2i_loss"]) / w_sum
  return {
      "loss/global_i2t": aux["i2t_loss"], "loss/global_t2i": aux["t2i_loss"],
      "acc/global_i2t": aux["i2t_acc"], "acc/global_t2i": aux["t2i_acc"],
      "sim/pos": aux["pos_sim"], "sim/neg": aux["neg_sim"],
      **chance_aux(glob, n),
  }


def _lovt(p, outputs, mask, mesh, data_axis):
  w, m = p["loss_weights"], "lovt"
  _, g = _infonce(_get(outputs, "img_global", m),
                  _get(outputs, "txt_global", m), mask, mesh, data_axis,
                  temperature=p["temperature"], i2t_weight=0.5)
  img_local = _flat_units(_get(outputs, "img_local", m))
  b, n = img_local.shape[:2]
  img_mask = jnp.ones((b, n), bool) if mask is None else jnp.broadcast_to(
      mask[:, None], (b, n))
  _, li = losses.lovt_local(
      img_local, _flat_units(_get(outputs, "img_attended", m)),
      _get(outputs, "img_weights", m).reshape(b, n), img_mask,
      temperature=p["local_temperature"],
      positions=_get(outputs, "img_positions", m),
      threshold=p["threshold"], smooth_lambda=p["smooth_lambda"])
  txt_mask = _get(outputs, "txt_local_mask", m).astype(bool)
  if mask is not None:
    txt_mask = txt_mask & mask[:, None]
  _, lt = losses.lovt_local(
      _get(outputs, "txt_local", m), _get(outputs, "txt_attended", m),
      _get(outputs, "txt_weights", m), txt_mask,
      temperature=p["local_temperature"], positions=None)
  total = (w["global_a2b"] * g["i2t_loss"] + w["global_b2a"] * g["t2i_loss"]
           + w["local_a_l2att"] * li["l2att"]
           + w["local_a_att2l"] * li["att2l"]
           + w["local_b_l2att"] * lt["l2att"]
           + w["local_b_att2l"] * lt["att2l"])
  aux = _global_aux(g, w["global_a2b"], w["global_b2a"], _num_valid(mask, b))
  aux.update({
      "loss/local_img_l2att": li["l2att"], "loss/local_img_att2l": li["att2l"],
      "loss/local_txt_l2att": lt["l2att"], "loss/local_txt_att2l": lt["att2l"],
      "acc/local_img_l2att": li["l2att_acc"],
      "acc/local_img_att2l": li["att2l_acc"],
      "acc/local_txt_l2att": lt["l2att_acc"],
      "acc/local_txt_att2l": lt["att2l_acc"],
  })
  return total, aux


def _clip_like(method, p, outputs, mask, mesh, data_axis):
  temperature = p["temperature"]
  if method == "clip" and "logit_scale" in outputs:
    # two_towers stores log(1 / tau).
    temperature = jnp.exp(-jnp.asarray(outputs["logit_scale"], jnp.float32))
  loss, g = _infonce(_get(outputs, "img_global", method),
                     _get(outputs, "txt_global", method), mask, mesh,
                     data_axis, temperature=temperature,
                     i2t_weight=p["i2t_weight"])
  n = _num_valid(mask, outputs["img_global"].shape[0])
  aux = _global_aux(g, p["i2t_weight"], 1.0 - p["i2t_weight"], n)
  aux["temperature"] = jnp.asarray(temperature, jnp.float32)
  return loss, aux


def _siglip(p, outputs, mask, mesh, data_axis):
  scale = outputs.get("logit_scale", p["logit_scale"])  # log t
  bias = outputs.get("logit_bias", p["logit_bias"])
  zi = _get(outputs, "img_global", "siglip")
  zt = _get(outputs, "txt_global", "siglip")
  if mesh is None:
    loss, a = losses.siglip(zi, zt, logit_scale=scale, logit_bias=bias,
                            mask=mask)
  else:
    loss, a = sharded.siglip(zi, zt, mesh=mesh, data_axis=data_axis,
                             logit_scale=scale, logit_bias=bias, mask=mask)
  return loss, {"loss/siglip": loss, "sim/pos": a["pos_sim"],
                "sim/neg": a["neg_sim"],
                "logit_scale": jnp.exp(jnp.asarray(scale, jnp.float32)),
                "logit_bias": jnp.asarray(bias, jnp.float32)}


def _joimternet(p, outputs, mask, rng, mesh, data_axis):
  m = "joimternet"
  zi, zt = _get(outputs, "img_global", m), _get(outputs, "txt_global", m)
  regions = _flat_units(_get(outputs, "img_regions", m))
  words = _get(outputs, "txt_words", m)
  word_mask = _get(outputs, "txt_word_mask", m).astype(bool)
  if rng is None:
    raise ValueError("joimternet needs `rng` to draw its random negatives")
  negatives = random_negatives(rng, zi.shape[0])
  g = dict(gamma1=p["gamma1"], gamma2=p["gamma2"])
  if mesh is None:
    l_s, s = losses.damsm_sentence(zi, zt, gamma3=p["gamma3"], mask=mask)
    l_st, st = losses.triplet(zi, zt, margin=p["sentence_margin"],
                              negatives=negatives, mask=mask)
    scores = losses.damsm_word_scores(regions, words, word_mask,
                                      chunk_size=p["chunk_size"], **g)
  else:
    kw = dict(mesh=mesh, data_axis=data_axis, mask=mask)
    l_s, s = sharded.damsm_sentence(zi, zt, gamma3=p["gamma3"], **kw)
    l_st, st = sharded.triplet(zi, zt, margin=p["sentence_margin"],
                               negatives=negatives, **kw)
    # Row-sharded [B, B] scores: the B x B x T x R attention stays per
    # device; the CE and the triplet on the small score matrix are cheap.
    scores = sharded.damsm_word_scores(regions, words, word_mask, mesh=mesh,
                                       data_axis=data_axis,
                                       chunk_size=p["chunk_size"], **g)
  valid = jnp.any(word_mask, axis=-1)
  valid = valid if mask is None else valid & mask
  l_w, w = losses.logits_ce(p["gamma3"] * scores, mask=valid)
  quirk = None
  if p["word_triplet_code_quirk"]:
    quirk = losses.damsm_word_pair_scores(regions, words[negatives],
                                          word_mask, **g)
  l_wt, wt = losses.word_triplet(scores, margin=p["word_margin"],
                                 negatives=negatives, mask=valid,
                                 image_anchor_negative_scores=quirk)
  lw = p["local_weight"]
  total = p["lambda_damsm"] * (l_s + lw * l_w) + p["lambda_triplet"] * (
      l_st + lw * l_wt)
  return total, {
      "loss/sentence": l_s, "loss/word": l_w,
      "loss/sentence_triplet": l_st, "loss/word_triplet": l_wt,
      "acc/sentence_i2t": s["i2t_acc"], "acc/sentence_t2i": s["t2i_acc"],
      "acc/word_i2t": w["i2t_acc"], "acc/word_t2i": w["t2i_acc"],
      "sim/pos": s["pos_sim"], "sim/neg": s["neg_sim"],
      # DAMSM's sentence loss sums the two InfoNCE directions.
      **chance_aux(l_s / 2.0, _num_valid(mask, zi.shape[0])),
      "triplet/active_sentence": st["active_per_anchor"],
      "triplet/active_word": wt["active_per_anchor"],
  }


def compute(method: str, cfg: Any, outputs: Mapping[str, Any],
            batch: Mapping[str, Any] | None = None, *,
            rng: Array | None = None, mesh: Mesh | None = None,
            data_axis: str | tuple[str, ...] | None = None,
            ) -> tuple[Array, dict[str, Array]]:
  """Total training loss of `method` and its logged components.

  Args:
    method: one of `METHODS`.
    cfg: the loss section (dict or ConfigDict) overriding `defaults(method)`;
      None or empty = paper defaults.
    outputs: the two-tower model's output dict (raw embeddings).
    batch: the input batch; only `mask` / `_mask` ([B] bool of real
      examples) is read.
    rng: PRNG key; required by `joimternet` (random negatives).
    mesh: a `jax.sharding.Mesh` to run the cross-batch terms with
      `jax.shard_map` over `data_axis`; None = plain (GSPMD) losses.
    data_axis: mesh axis name(s) the batch is split over; None = `data` and
      `fsdp` where present (`default_data_axis`).

  Returns:
    `(loss, aux)`: float32 scalar and a dict of stop-gradient scalars with
    every component (`loss/...`, unweighted), accuracies (`acc/...`),
    similarity statistics and `loss/total`.
  """
  p = resolve(method, cfg)
  zi = _get(outputs, "img_global", method)
  mask = _example_mask(batch, zi.shape[0])
  if mesh is not None and data_axis is None:
    data_axis = default_data_axis(mesh)
  if method == "lovt":
    loss, aux = _lovt(p, outputs, mask, mesh, data_axis)
  elif method in ("convirt", "clip"):
    loss, aux = _clip_like(method, p, outputs, mask, mesh, data_axis)
  elif method == "siglip":
    loss, aux = _siglip(p, outputs, mask, mesh, data_axis)
  else:
    loss, aux = _joimternet(p, outputs, mask, rng, mesh, data_axis)
  aux["loss/total"] = loss
  return loss, jax.tree.map(jax.lax.stop_gradient, aux)


def mlm_inputs(cfg: Any, rng: Array, tokens: Array) -> dict[str, Array]:
  """JoImTeRNet MLM masking of a token batch with the joimternet settings.

  Args:
    cfg: joimternet loss section; must set `vocab_size` and `mask_id`.
    rng: PRNG key.
    tokens: int `[B, T]`.

  Returns:
    dict with `mlm_tokens` (model input), `mlm_targets`, `mlm_weights`.
  """
  p = resolve("joimternet", cfg)
  if p["vocab_size"] is None or p["mask_id"] is None:
    raise ValueError("the MLM step needs `vocab_size` and `mask_id` in the "
                     "joimternet loss config")
  masked, targets, weights = losses.mlm_mask(
      rng, tokens, vocab_size=int(p["vocab_size"]), mask_id=int(p["mask_id"]),
      special_max_id=int(p["mlm_special_max_id"]), mask_prob=p["mlm_prob"])
  return {"mlm_tokens": masked, "mlm_targets": targets,
          "mlm_weights": weights}


def mlm_step(logits: Array, targets: Array,
             weights: Array) -> tuple[Array, dict[str, Array]]:
  """Loss of JoImTeRNet's MLM step (text encoder only).

  Args:
    logits: `[B, T, V]` MLM logits of the corrupted tokens (e.g.
      `two_towers.Model.mlm_logits` on `mlm_inputs(...)['mlm_tokens']`).
    targets: int `[B, T]` original ids.
    weights: `[B, T]`, 1 at the selected positions.

  Returns:
    `(loss, aux)` with `loss/mlm`, `acc/mlm`, `mlm/num_masked`,
    `loss/total`.
  """
  loss, a = losses.mlm(logits, targets, weights)
  aux = {"loss/mlm": loss, "acc/mlm": a["accuracy"],
         "mlm/num_masked": a["num_masked"], "loss/total": loss}
  return loss, jax.tree.map(jax.lax.stop_gradient, aux)
