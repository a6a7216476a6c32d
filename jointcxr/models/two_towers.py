"""The two-tower model, assembled from config strings (big_vision style).

`image_model` / `text_model` name modules under `jointcxr.models` (each
exports a `Model(**kwargs)` factory); `method` selects the head layout:

- `lovt`: attention pooling (global) + per-region / per-sentence projection
  MLPs (local) + symmetric cross-attention -> `img_global`, `txt_global`,
  `img_local`, `txt_local`, `txt_local_mask`, `img_weights`, `txt_weights`,
  `img_attended` (z^{R->I}), `txt_attended` (z^{I->R}), `img_positions`.
- `clip` (LoVT's CLIP*): the same encoders and pools, global heads only,
  optional learnable temperature (`logit_scale`, stored as a log).
- `siglip`: global heads + learnable `logit_scale` and `logit_bias`.
- `convirt`: average-pooled image, token-max-pooled report, projection
  without BatchNorm.
- `joimternet`: `img_regions` (the CNN's 512-d regions), `img_global`,
  `txt_words` (a shared Linear on every token but [CLS]), `txt_word_mask`,
  `txt_global` ([CLS] -> Linear), and `mlm_logits` via `mlm_logits(...)`.

Embeddings are raw (losses L2-normalise). Tower outputs are returned under
`img_tower` / `txt_tower` for probes. Top-level parameter names: `img`,
`txt`, `img_proj_global`, `img_proj_local`, `img_pool`, `txt_proj_global`,
`txt_proj_local`, `txt_pool`, `cross_attn`, `txt_words_proj`, `mlm_head`.
"""

import importlib
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import bert as bert_lib
from jointcxr.models import heads

METHODS = ("lovt", "clip", "siglip", "convirt", "joimternet")


def grid_positions(h: int, w: int) -> jax.Array:
  """[h*w, 2] grid indices divided by the grid diagonal (LoVT's relative)."""
  ii, jj = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
  pos = jnp.stack([ii.reshape(-1), jj.reshape(-1)], -1).astype(jnp.float32)
  return pos / math.sqrt(h * h + w * w)


def tower(name: str, kwargs: Mapping[str, Any], **extra) -> nn.Module:
  module = importlib.import_module(f"jointcxr.models.{name}")
  return module.Model(**dict(kwargs), **extra)


class Model(nn.Module):
  """Two towers + the method's heads. See the module docstring."""
  image_model: str = "resnet"
  image: Mapping[str, Any] | None = None
  text_model: str = "bert"
  text: Mapping[str, Any] | None = None
  method: str = "lovt"
  heads: Mapping[str, Any] | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _h(self, key, default):
    return (self.heads or {}).get(key, default)

  def setup(self):
    if self.method not in METHODS:
      raise ValueError(f"unknown method {self.method!r}; expected one of "
                       f"{METHODS}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.img = tower(self.image_model, self.image or {}, **kw)
    self.txt = tower(self.text_model, self.text or {}, **kw)
    dim = self._h("dim", 512)
    hidden = self._h("hidden", 2048)
    m = self.method
    if m == "joimternet":
      self.txt_words_proj = heads.Linear(dim, **kw)
      self.txt_proj_global = heads.Linear(dim, **kw)
      if self._h("mlm", False):
        self.mlm_head = bert_lib.MlmHead(self.text["vocab_size"], **kw)
      return
    norm = "none" if m == "convirt" else self._h("norm", "batch")
    self.img_proj_global = heads.ProjectionMLP(hidden, dim, norm, **kw)
    self.txt_proj_global = heads.ProjectionMLP(hidden, dim, norm, **kw)
    if m != "convirt":
      self.img_pool = heads.AttentionPool(self._h("pool_heads", 8), **kw)
      self.txt_pool = heads.AttentionPool(self._h("pool_heads", 8), **kw)
    if m == "lovt":
      self.img_proj_local = heads.ProjectionMLP(hidden, dim, norm, **kw)
      self.txt_proj_local = heads.ProjectionMLP(hidden, dim, norm, **kw)
      self.cross_attn = heads.CrossAttention(dim, self._h("attention_norm",
                                                          "batch"), **kw)
    if m == "siglip" or (m == "clip" and self._h("learn_temperature",
                                                 False)):
      init_t = math.log(10.0) if m == "siglip" else math.log(
          1.0 / self._h("temperature", 0.07))
      self.logit_scale = self.param("logit_scale", nn.initializers.constant(
          init_t), (), jnp.float32)
      if m == "siglip":
        self.logit_bias = self.param("logit_bias", nn.initializers.constant(
            -10.0), (), jnp.float32)

  # ---------------------------------------------------------------- image --
  def encode_image(self, image: jax.Array, *, train: bool = False) -> dict:
    t = self.img(image, train=train)
    b, h, w, c = t["regions"].shape
    regions = t["regions"].reshape(b, h * w, c)
    out = {"img_tower": t}
    if self.method == "joimternet":
      out.update(img_regions=regions, img_global=t["global"])
      return out
    if self.method == "convirt":
      out["img_global"] = self.img_proj_global(t["global"], train=train)
      return out
    pooled, weights = self.img_pool(regions)
    out.update(img_global=self.img_proj_global(pooled, train=train),
               img_weights=weights)
    if self.method == "lovt":
      out["img_local"] = self.img_proj_local(regions, train=train)
      out["img_positions"] = grid_positions(h, w)
    return out

  # ----------------------------------------------------------------- text --
  def encode_text(self, tokens: jax.Array, text_mask: jax.Array,
                  sentence_ids: jax.Array | None = None, *,
                  train: bool = False) -> dict:
    t = self.txt(tokens, text_mask, sentence_ids, train=train)
    out = {"txt_tower": t}
    if self.method == "joimternet":
      word_mask = jnp.asarray(text_mask).at[:, 0].set(False)  # drop [CLS]
      out.update(txt_words=self.txt_words_proj(t["words"]),
                 txt_word_mask=word_mask,
                 txt_global=self.txt_proj_global(t["cls"]))
      return out
    if self.method == "convirt":
      words = jnp.where(jnp.asarray(text_mask).at[:, 0].set(False)[..., None],
                        t["words"],
                        -1e9)
      out["txt_global"] = self.txt_proj_global(words.max(axis=1),
                                               train=train)
      return out
    sents, smask = t["sentences"], t["sentence_mask"]
    pooled, weights = self.txt_pool(sents, smask)
    out.update(txt_global=self.txt_proj_global(pooled, train=train),
               txt_weights=weights, txt_local_mask=smask)
    if self.method == "lovt":
      out["txt_local"] = self.txt_proj_local(sents, smask, train=train)
    return out

  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False
               ) -> dict:
    out = self.encode_image(batch["image"], train=train)
    out.update(self.encode_text(batch["tokens"], batch["text_mask"],
                                batch.get("sentence_ids"), train=train))
    if self.method == "lovt":
      r2i, i2r, maps = self.cross_attn(out["img_local"], out["txt_local"],
                                       out["txt_local_mask"], train=train)
      out.update(img_attended=r2i, txt_attended=i2r, attention=maps)
    if self.method == "joimternet" and self._h("mlm", False) and (
        self.is_initializing()):
      self.mlm_head(out["txt_tower"]["words"])  # create its parameters
    if self.method in ("clip", "siglip") and self.has_variable(
        "params", "logit_scale"):
      out["logit_scale"] = self.logit_scale
      if self.method == "siglip":
        out["logit_bias"] = self.logit_bias
    return out

  def mlm_logits(self, tokens: jax.Array, text_mask: jax.Array, *,
                 train: bool = False) -> jax.Array:
    """Masked-language-model logits of the text tower (JoImTeRNet)."""
    words = self.txt(tokens, text_mask, None, train=train)["words"]
    return self.mlm_head(words)
