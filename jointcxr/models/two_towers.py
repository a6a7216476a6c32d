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
- `joimternet`: `img_regions` (the CNN's 512-d regions, flattened),
  `img_global`, `txt_words` (a shared Linear on every token's hidden
  state), `txt_word_mask` (the text mask with [CLS] removed), `txt_global`
  ([CLS] -> Linear), and with `heads.mlm` an MLM head: `mlm_logits` in the
  output when `__call__(..., mlm_tokens=...)` is given, or the method
  `Model.mlm_logits` (text tower + head only, what the MLM steps use).

Embeddings are raw (losses L2-normalise). Tower outputs are returned under
`img_tower` / `txt_tower` for probes. Top-level parameter names: `img`,
`txt`, `img_proj_global`, `img_proj_local`, `img_pool`, `txt_proj_global`,
`txt_proj_local`, `txt_pool`, `cross_attn`, `txt_words_proj`, `mlm_head`,
and the scalars `logit_scale` / `logit_bias`. BatchNorm statistics live in
`batch_stats`: `apply(..., train=True, mutable=["batch_stats"])`.

`heads` keys (defaults): dim (512), hidden (2048), norm ("batch"; ConVIRT
always "none"), pool_heads (8), attention_norm ("batch"), learn_temperature
(False, CLIP*), temperature (0.07, initial tau of a learned CLIP scale),
mlm (False), mlm_tied (False). Unknown keys are an error.

Parameters are boxed with logical axis names (`nn.LogicallyPartitioned`);
`nn.get_partition_spec(variables)` gives their logical specs and
`nn.meta.unbox(variables)` plain arrays. `init`/`apply` work with or
without an `nn.logical_axis_rules` context.

Example:

    model = Model(image_model="resnet", image=dict(depth=50),
                  text_model="bert", text=dict(vocab_size=30522),
                  method="lovt", heads=dict(dim=512))
    variables = model.init(rngs, batch, train=False)
    out, updates = model.apply(variables, batch, train=True,
                               rngs={"dropout": key},
                               mutable=["batch_stats"])
"""

import importlib
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.losses import lovt as lovt_losses
from jointcxr.models import bert as bert_lib
from jointcxr.models import heads

METHODS = ("lovt", "clip", "siglip", "convirt", "joimternet")
HEAD_KEYS = ("dim", "hidden", "norm", "pool_heads", "attention_norm",
             "learn_temperature", "temperature", "mlm", "mlm_tied")


def tower(name: str, kwargs: Mapping[str, Any], **extra) -> nn.Module:
  """Builds `jointcxr.models.<name>.Model(**kwargs, **extra)`.

  Args:
    name: module under `jointcxr.models` ("resnet", "vit", "densenet",
      "joimter_cnn", "bert", "dan").
    kwargs: the tower's attributes from the config.
    **extra: attributes set by the two-tower model (dtypes).

  Returns:
    The unbound tower.

  Raises:
    ValueError: when the module does not exist or exports no `Model`.
  """
  try:
    module = importlib.import_module(f"jointcxr.models.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"jointcxr.models.{name}":
      raise  # a missing dependency of an existing tower
    raise ValueError(f"unknown tower {name!r}: no module "
                     f"jointcxr.models.{name}") from e
  if not hasattr(module, "Model"):
    raise ValueError(f"jointcxr.models.{name} exports no Model factory")
  return module.Model(**dict(kwargs), **extra)


class Model(nn.Module):
  """Two towers + the method's heads. See the module docstring.

  Attributes:
    image_model: image tower module name.
    image: image tower attributes.
    text_model: text tower module name.
    text: text tower attributes.
    method: one of METHODS; selects the heads.
    heads: head settings (see the module docstring for the keys).
    dtype: compute dtype of towers and heads.
    param_dtype: parameter dtype (float32).
  """
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
    unknown = sorted(set(dict(self.heads or {})) - set(HEAD_KEYS))
    if unknown:
      raise ValueError(f"unknown heads keys {unknown}; expected some of "
                       f"{HEAD_KEYS}")
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
        if self.text_model != "bert":
          raise ValueError("heads.mlm needs text_model='bert', got "
                           f"{self.text_model!r}")
        self.mlm_head = bert_lib.MlmHead(
            (self.text or {}).get("vocab_size", bert_lib.Bert.vocab_size),
            tied=self._h("mlm_tied", False), **kw)
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
    """Image-side embeddings (no cross-attention).

    Args:
      image: [B, H, W, C] float32.
      train: training mode (BatchNorm statistics, dropout).

    Returns:
      dict with `img_tower` (the tower's outputs) and the method's image
      keys: `img_global` always; `img_weights` (lovt/clip/siglip);
      `img_local`, `img_positions` (lovt); `img_regions` (joimternet).
    """
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
      out["img_positions"] = jnp.asarray(lovt_losses.grid_positions(h, w))
    return out

  # ----------------------------------------------------------------- text --
  def encode_text(self, tokens: jax.Array, text_mask: jax.Array,
                  sentence_ids: jax.Array | None = None, *,
                  train: bool = False) -> dict:
    """Text-side embeddings (no cross-attention).

    Args:
      tokens: [B, T] int32.
      text_mask: [B, T] bool.
      sentence_ids: [B, T] int32 sentence index per token (-1 outside
        sentences); required by lovt/clip/siglip (sentence pooling).
      train: training mode.

    Returns:
      dict with `txt_tower` and the method's text keys: `txt_global`
      always; `txt_weights`, `txt_local_mask` (lovt/clip/siglip);
      `txt_local` (lovt); `txt_words`, `txt_word_mask` (joimternet).
    """
    if sentence_ids is None and self.method in ("lovt", "clip", "siglip"):
      raise ValueError(f"method {self.method!r} pools sentences: the batch "
                       "needs `sentence_ids`")
    t = self.txt(tokens, text_mask, sentence_ids, train=train)
    out = {"txt_tower": t}
    # [CLS] is no word: JoImTeRNet's word losses and ConVIRT's token
    # max-pool skip position 0.
    word_mask = jnp.asarray(text_mask, bool).at[:, 0].set(False)
    if self.method == "joimternet":
      out.update(txt_words=self.txt_words_proj(t["words"]),
                 txt_word_mask=word_mask,
                 txt_global=self.txt_proj_global(t["cls"]))
      return out
    if self.method == "convirt":
      words = jnp.where(word_mask[..., None], t["words"], -1e9)
      out["txt_global"] = self.txt_proj_global(words.max(axis=1),
                                               train=train)
      return out
    if "sentences" not in t:
      raise ValueError(f"method {self.method!r} needs sentence features; "
                       f"text_model {self.text_model!r} gives none")
    sents, smask = t["sentences"], t["sentence_mask"]
    pooled, weights = self.txt_pool(sents, smask)
    out.update(txt_global=self.txt_proj_global(pooled, train=train),
               txt_weights=weights, txt_local_mask=smask)
    if self.method == "lovt":
      out["txt_local"] = self.txt_proj_local(sents, smask, train=train)
    return out

  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False,
               mlm_tokens: jax.Array | None = None) -> dict:
    """Both towers, the heads and (lovt) the cross-attention.

    Args:
      batch: `image` [B, H, W, C] float32, `tokens` [B, T] int32,
        `text_mask` [B, T] bool, `sentence_ids` [B, T] int32.
      train: training mode.
      mlm_tokens: optional masked copy of `tokens` (joimternet with
        heads.mlm): adds `mlm_logits` [B, T, vocab] computed on it.

    Returns:
      The union of `encode_image` and `encode_text`, plus
      `img_attended` (z^{R->I}), `txt_attended` (z^{I->R}) and `attention`
      maps (lovt), `logit_scale` (a log; siglip, clip with
      learn_temperature), `logit_bias` (siglip), `mlm_logits` (see above).
    """
    if mlm_tokens is not None and not (self.method == "joimternet" and
                                       self._h("mlm", False)):
      raise ValueError("mlm_tokens given but the model has no MLM head "
                       "(method 'joimternet' with heads.mlm=True)")
    out = self.encode_image(batch["image"], train=train)
    out.update(self.encode_text(batch["tokens"], batch["text_mask"],
                                batch.get("sentence_ids"), train=train))
    if self.method == "lovt":
      r2i, i2r, maps = self.cross_attn(out["img_local"], out["txt_local"],
                                       out["txt_local_mask"], train=train)
      out.update(img_attended=r2i, txt_attended=i2r, attention=maps)
    if mlm_tokens is not None:
      out["mlm_logits"] = self.mlm_logits(mlm_tokens, batch["text_mask"],
                                          train=train)
    elif self.method == "joimternet" and self._h("mlm", False) and (
        self.is_initializing()):
      # Create the head's parameters with the rest of the model.
      self._mlm_apply(out["txt_tower"]["words"])
    if self.method in ("clip", "siglip") and self.has_variable(
        "params", "logit_scale"):
      out["logit_scale"] = self.logit_scale
      if self.method == "siglip":
        out["logit_bias"] = self.logit_bias
    return out

  def _mlm_apply(self, words: jax.Array) -> jax.Array:
    emb = self.txt.word_embedding() if self._h("mlm_tied", False) else None
    return self.mlm_head(words, emb)

  def mlm_logits(self, tokens: jax.Array, text_mask: jax.Array, *,
                 train: bool = False) -> jax.Array:
    """Masked-language-model logits of the text tower (JoImTeRNet).

    Args:
      tokens: masked tokens [B, T] int32.
      text_mask: [B, T] bool.
      train: training mode (dropout).

    Returns:
      logits [B, T, vocab_size].
    """
    if not (self.method == "joimternet" and self._h("mlm", False)):
      raise ValueError("the model has no MLM head (method 'joimternet' with "
                       "heads.mlm=True)")
    words = self.txt(tokens, text_mask, None, train=train)["words"]
    return self._mlm_apply(words)
