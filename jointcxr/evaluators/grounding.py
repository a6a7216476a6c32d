"""Phrase grounding: phrase -> heatmap over the X-ray, scored against boxes.

Heatmaps come from what the model has:
- LoVT: its region <-> sentence cross-attention (the phrase is a one-
  sentence report; the map is the attention over regions for it);
- JoImTeRNet: the DAMSM region <-> word attention averaged over the
  phrase's words;
- global-only models (ConVIRT, CLIP): cosine similarity between the global
  report embedding and every region projected by the global image head (the
  BioViL-style similarity map); with an attention pool (CLIP, SigLIP) each
  region first goes through the pool's value and output projections, as
  it does inside the pooled vector.
Maps are scored against MS-CXR-style boxes with the pointing game at
region resolution (does the maximal region overlap a box,
`localized_metrics.grid_pointing_game`; its chance level, that of a
random region, is reported next to it), and upsampled to the image for
CNR and IoU (`localized_metrics`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jointcxr.evaluators import localized_metrics
from jointcxr.models import heads as heads_lib


def _encode_phrases(loaded, phrases):
  enc = [loaded.tokenizer.encode_report([p], loaded.config.input.max_tokens,
                                        loaded.config.input.max_sentences)
         for p in phrases]
  ids = jnp.asarray(np.stack([e.ids for e in enc]))
  sids = jnp.asarray(np.stack([e.sentence_ids for e in enc]))
  return ids, ids != loaded.tokenizer.pad_id, sids


def _pool_units(pool_params: dict, units: jax.Array) -> jax.Array:
  """Each unit as the attention pool outputs it: out(value(unit)).

  The pooled vector is out(sum_n w_n value(r_n)) with weights summing to 1
  in each head, so out(value(r_n)) is region n's vector in the space the
  global head was trained on (an image of one region pools to it).
  """
  p = nn.meta.unbox(pool_params)
  dense = lambda q, x: x @ q["kernel"].astype(x.dtype) + q["bias"].astype(
      x.dtype)
  return dense(p["out"], dense(p["value"], units))


_MAPS_FNS: dict[int, tuple] = {}  # id(model) -> (model, jitted fn)


def _maps_fn(model):
  """The jitted map function of a model (variables are an argument).

  Cached per model object (kept alive by the cache, so its id stays
  unique), so every batch of an evaluation reuses one compilation instead
  of tracing a new closure, and the weights are not baked into the program
  as constants.
  """
  hit = _MAPS_FNS.get(id(model))
  if hit is not None and hit[0] is model:
    return hit[1]
  method = model.method

  def fn(v, x, ids, mask, sids):
    batch = {"image": x, "tokens": ids, "text_mask": mask,
             "sentence_ids": sids}
    out = model.apply(v, batch, train=False)
    grid = out["img_tower"]["regions"].shape[1:3]
    if method == "lovt":
      att = out["attention"]["sentence_to_region"][:, :, 0]  # [B, N]
    elif method == "joimternet":
      a, _ = heads_lib.region_word_attention(
          out["img_regions"], out["txt_words"], out["txt_word_mask"], 4.0)
      w = out["txt_word_mask"].astype(jnp.float32)
      att = jnp.einsum("btr,bt->br", a, w) / jnp.maximum(w.sum(1), 1)[:, None]
    else:
      regions = out["img_tower"]["regions"]
      b, h, ww, c = regions.shape
      units = regions.reshape(b, h * ww, c)
      if "img_pool" in v["params"]:
        units = _pool_units(v["params"]["img_pool"], units)
      proj = model.apply(v, units, method=lambda m, r: m.img_proj_global(r))
      z = proj / jnp.linalg.norm(proj, axis=-1, keepdims=True)
      t = out["txt_global"] / jnp.linalg.norm(out["txt_global"], axis=-1,
                                              keepdims=True)
      att = jnp.einsum("bnd,bd->bn", z, t)
    return att.reshape(att.shape[0], *grid)  # row-major region order

  if len(_MAPS_FNS) >= 8:
    _MAPS_FNS.clear()
  _MAPS_FNS[id(model)] = (model, jax.jit(fn))
  return _MAPS_FNS[id(model)][1]


def region_maps(loaded, images: np.ndarray, phrases: list[str]
                ) -> np.ndarray:
  """[N, h, w] region-level heatmaps (higher = more relevant)."""
  ids, mask, sids = _encode_phrases(loaded, phrases)
  x = jnp.asarray(images, jnp.float32)
  return np.asarray(_maps_fn(loaded.model)(loaded.variables, x, ids, mask,
                                           sids))


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
  """[N, h, w] -> [N, size, size] (bilinear, half-pixel centres)."""
  return np.asarray(jax.image.resize(jnp.asarray(maps), (maps.shape[0],
                                                         size, size),
                                     "bilinear"))


def evaluate(loaded, split, mean: float = 0.5, std: float = 0.5,
             batch: int = 16) -> dict:
  """Pointing game, CNR and IoU over a `LocalizedSplit` with phrases."""
  pg, chance, cnr, iou = [], [], [], []
  size = split.images.shape[1]
  for s in range(0, len(split), batch):
    imgs = (split.images[s:s + batch].astype(np.float32) / 255.0 - mean) / std
    grid = region_maps(loaded, imgs, split.phrases[s:s + batch])
    maps = upsample(grid, size)
    for k, hm in enumerate(maps):
      target = localized_metrics.boxes_to_mask(split.boxes[s + k], size, size)
      if not target.any():
        continue
      pg.append(localized_metrics.grid_pointing_game(grid[k], target))
      chance.append(localized_metrics.grid_pointing_chance(grid[k].shape,
                                                           target))
      c = localized_metrics.cnr(hm, target)
      if not np.isnan(c):
        cnr.append(c)
      iou.append(localized_metrics.heatmap_iou(hm, target))
  return {"pointing_game": float(np.mean(pg)) if pg else float("nan"),
          "pointing_game_chance": (float(np.mean(chance)) if chance
                                   else float("nan")),
          "cnr": float(np.mean(cnr)) if cnr else float("nan"),
          "iou": float(np.nanmean(iou)) if iou else float("nan"),
          "num_phrases": float(len(pg))}
