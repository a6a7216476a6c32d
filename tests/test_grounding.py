"""Phrase grounding on planted models whose attention is known by hand.

Each model is a real two-tower model (a one-block ViT image tower, a
one-layer BERT, the method's real heads) with variables set by hand so
that the phrase is known to match one image patch: a bright patch on a
dark image. The map must peak at that patch, in row-major [N, h, w]
layout, stay there after upsampling, and score the pointing game 1 on a
box around the patch and 0 on the opposite corner.

How the variables plant it: the ViT's patch embedding reads the patch
mean m into channels (m, -m), its block is an identity (zero output
projections) and its final LayerNorm turns that into (2, -2) on a bright
patch and (-2, 2) on a dark one. Projections are identities, so the text
side decides which direction the phrase likes:
- lovt: the local text head gives every sentence e_0, so the sentence ->
  region attention (shared key projection) favours bright regions;
- clip: the image attention pool's value projection swaps channels 0 and
  1 and the report embeds to e_1, so a bright image's global embedding
  matches the report; the map must apply the pool's projections to every
  region to agree with it (the map without them peaks on dark regions);
- convirt: average pooling, the report embeds to e_0;
- joimternet: the word "effusion" embeds to 2 g e_0 and every other word
  to 0, so the region-word attention of the phrase favours bright regions.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from jointcxr import loading
from jointcxr.data import localized as loc_data
from jointcxr.data import tokenizer as tok_lib
from jointcxr.evaluators import grounding
from jointcxr.models import testing
from jointcxr.models import two_towers

D = 8          # width of every tower and head
PATCH = 8      # ViT patch: a 32 x 48 image is a 4 x 6 region grid
MAX_TOKENS = 16
VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "left", "apical",
         "effusion", "heart", "normal", ".")
PHRASE = "left apical effusion"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("\n".join(VOCAB) + "\n")
  return tok_lib.WordPieceTokenizer(str(path))


def _set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree[p]
  assert leaf in tree, path
  tree[leaf] = np.broadcast_to(np.asarray(value, np.float32),
                               tree[leaf].shape)


def _identity_mlp(params: dict, stats: dict | None, name: str,
                  fc1_bias=None, zero_fc1=False) -> None:
  """ProjectionMLP `name` -> relu(x @ I + b1) with BN (if any) the identity."""
  p = params[name]
  _set(params, f"{name}/fc1/kernel", np.zeros((D, D)) if zero_fc1 else
       np.eye(D))
  _set(params, f"{name}/fc1/bias", np.zeros(D) if fc1_bias is None else
       fc1_bias)
  _set(params, f"{name}/fc2/kernel", np.eye(D))
  _set(params, f"{name}/fc2/bias", np.zeros(D))
  if "bn" in p:
    _set(params, f"{name}/bn/scale", np.ones(D))
    _set(params, f"{name}/bn/bias", np.zeros(D))
    _set(stats, f"{name}/bn/mean", np.zeros(D))
    _set(stats, f"{name}/bn/var", np.ones(D))


def _identity_blocks(params: dict, prefix: str) -> None:
  """Zero every block's output projections; LayerNorms to the identity."""
  enc = params
  for p in prefix.split("/"):
    enc = enc[p]
  for name in enc:
    if not name.startswith("layer_"):
      continue
    for sub in ("attn/out", "mlp_out"):
      _set(params, f"{prefix}/{name}/{sub}/kernel", 0.0)
      _set(params, f"{prefix}/{name}/{sub}/bias", 0.0)
    for ln in ("ln_attn", "ln_mlp"):
      _set(params, f"{prefix}/{name}/{ln}/scale", np.ones(D))
      _set(params, f"{prefix}/{name}/{ln}/bias", np.zeros(D))


def _e(i: int, scale: float = 1.0) -> np.ndarray:
  v = np.zeros(D)
  v[i] = scale
  return v


def planted_model(method: str, tokenizer, height: int = 32,
                  width: int = 48) -> loading.Loaded:
  """A `Loaded` model whose phrase grounding favours bright patches."""
  model = two_towers.Model(
      image_model="vit",
      image=dict(variant=f"Ti/{PATCH}", width=D, depth=1, num_heads=2),
      text_model="bert",
      text=dict(vocab_size=len(VOCAB), hidden=D, layers=1, heads=2,
                mlp_dim=2 * D, max_len=MAX_TOKENS, max_sentences=2,
                dropout=0.0),
      method=method,
      heads=(dict(dim=D) if method == "joimternet" else
             dict(dim=D, hidden=D, pool_heads=2)))
  batch = dict(image=jnp.zeros((1, height, width, 1)),
               tokens=jnp.zeros((1, MAX_TOKENS), jnp.int32),
               text_mask=jnp.ones((1, MAX_TOKENS), bool),
               sentence_ids=jnp.zeros((1, MAX_TOKENS), jnp.int32))
  abstract = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0)}, batch))
  v = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(
      testing.fill_variables(abstract)))
  params, stats = v["params"], v.get("batch_stats", {})
  # Image tower: region = LayerNorm((m, -m, 0, ...)) for patch mean m.
  kernel = np.zeros((PATCH, PATCH, 1, D))
  kernel[..., 0, 0] = 1.0 / PATCH**2
  kernel[..., 0, 1] = -1.0 / PATCH**2
  _set(params, "img/embedding/kernel", kernel)
  _set(params, "img/embedding/bias", np.zeros(D))
  _set(params, "img/pos_embedding", 0.0)
  _identity_blocks(params, "img/encoder")
  _set(params, "img/encoder/ln_final/scale", np.ones(D))
  _set(params, "img/encoder/ln_final/bias", np.zeros(D))
  if method == "lovt":
    _identity_mlp(params, stats, "img_proj_local")
    _identity_mlp(params, stats, "txt_proj_local", fc1_bias=_e(0),
                  zero_fc1=True)
    _set(params, "cross_attn/key/kernel", 3.0 * np.eye(D))
    _set(params, "cross_attn/key/bias", np.zeros(D))
  elif method in ("clip", "convirt"):
    _identity_mlp(params, stats, "img_proj_global")
    likes = 0
    if method == "clip":
      swap = np.eye(D)[[1, 0] + list(range(2, D))]
      _set(params, "img_pool/value/kernel", swap)
      _set(params, "img_pool/value/bias", np.zeros(D))
      _set(params, "img_pool/out/kernel", np.eye(D))
      _set(params, "img_pool/out/bias", np.zeros(D))
      likes = 1
    _identity_mlp(params, stats, "txt_proj_global", fc1_bias=_e(likes),
                  zero_fc1=True)
  elif method == "joimternet":
    # Words = LayerNorm(word embedding): no positions, identity blocks.
    emb = np.zeros((len(VOCAB), D))
    emb[:, 2], emb[:, 3] = 1.0, -1.0             # neutral: channel 0 is 0
    eff = VOCAB.index("effusion")
    emb[eff] = 0.0
    emb[eff, 0], emb[eff, 1] = 1.0, -1.0         # -> (2, -2, 0, ...)
    _set(params, "txt/embed_word/embedding", emb)
    _set(params, "txt/embed_position/embedding",
         np.zeros((MAX_TOKENS, D)))
    _set(params, "txt/embed_type/embedding", np.zeros((2, D)))
    _set(params, "txt/embed_ln/scale", np.ones(D))
    _set(params, "txt/embed_ln/bias", np.zeros(D))
    _identity_blocks(params, "txt/encoder")
    proj = np.zeros((D, D))
    proj[0, 0] = 2.0                             # g = 2
    _set(params, "txt_words_proj/fc/kernel", proj)
    _set(params, "txt_words_proj/fc/bias", np.zeros(D))
  else:
    raise ValueError(method)
  variables = {"params": params}
  if stats:
    variables["batch_stats"] = stats
  config = mlc.ConfigDict(dict(input=dict(
      max_tokens=MAX_TOKENS, max_sentences=2, image_size=height, mean=0.5,
      std=0.5)))
  return loading.Loaded(config, model, variables, tokenizer, None, "planted")


def planted_images(patches, height: int = 32, width: int = 48) -> np.ndarray:
  """uint8 [N, H, W, 1]: dark, with one bright PATCH x PATCH patch each."""
  out = np.zeros((len(patches), height, width, 1), np.uint8)
  for k, (i, j) in enumerate(patches):
    out[k, i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH] = 255
  return out


METHODS = ("lovt", "clip", "convirt", "joimternet")


@pytest.mark.parametrize("method", METHODS)
def test_region_maps_peak_at_the_planted_region(method, tokenizer):
  loaded = planted_model(method, tokenizer)
  patches = [(1, 4), (3, 0), (0, 2)]
  x = loc_data.normalize(planted_images(patches))
  maps = grounding.region_maps(loaded, x, [PHRASE] * len(patches))
  assert maps.shape == (3, 4, 6)  # [N, h, w]: rows of the 32 x 48 image
  for k, (i, j) in enumerate(patches):
    assert np.unravel_index(np.argmax(maps[k]), (4, 6)) == (i, j), (
        method, k, maps[k])
    others = np.delete(maps[k].reshape(-1), i * 6 + j)
    assert maps[k, i, j] > others.max() + 1e-3, (method, maps[k])


def test_clip_map_agrees_with_the_global_embedding(tokenizer):
  """The planted clip model's own global head prefers bright images."""
  loaded = planted_model("clip", tokenizer)
  model, v = loaded.model, loaded.variables
  imgs = np.full((2, 32, 48, 1), -1.0, np.float32)
  imgs[0] = 1.0  # all bright
  zi = jax.jit(lambda v, x: model.apply(
      v, x, method=type(model).encode_image)["img_global"])(v, imgs)
  encode = grounding._encode_phrases  # pylint: disable=protected-access
  ids, mask, sids = encode(loaded, [PHRASE])
  zt = jax.jit(lambda v, *t: model.apply(
      v, *t, method=type(model).encode_text)["txt_global"])(v, ids, mask,
                                                           sids)
  cos = np.asarray(zi @ zt[0] / jnp.linalg.norm(zi, axis=1) /
                   jnp.linalg.norm(zt[0]))
  assert cos[0] > 0.9 and cos[1] < 0.1, cos


def test_upsample_keeps_the_peak_in_its_image_area():
  maps = np.zeros((2, 4, 4), np.float32)
  maps[0, 0, 2] = 1.0
  maps[1, 3, 1] = 1.0
  up = grounding.upsample(maps, 32)
  assert up.shape == (2, 32, 32)
  for k, (i, j) in enumerate([(0, 2), (3, 1)]):
    r, c = np.unravel_index(np.argmax(up[k]), (32, 32))
    assert i * 8 <= r < (i + 1) * 8 and j * 8 <= c < (j + 1) * 8, (r, c)
    inside = up[k, i * 8:(i + 1) * 8, j * 8:(j + 1) * 8].mean()
    assert inside > 3 * up[k].mean()


def _split(images, boxes) -> loc_data.LocalizedSplit:
  n = len(images)
  return loc_data.LocalizedSplit(
      images, np.zeros((*images.shape[:3], 1), np.uint8),
      [np.asarray([b], np.float32) for b in boxes],
      [np.zeros(1, np.int32)] * n, [PHRASE] * n,
      [str(i) for i in range(n)], ["finding"])


@pytest.mark.parametrize("method", ("lovt", "clip"))
def test_grounding_evaluate_scores_planted_boxes(method, tokenizer):
  loaded = planted_model(method, tokenizer, 32, 32)
  imgs = planted_images([(0, 2), (0, 2)], 32, 32)   # rows 0-7, cols 16-23
  # (y0, x0, y1, x1): the patch itself; the opposite (bottom-left) corner.
  hit = (0.0, 0.5, 0.25, 0.75)
  miss = (0.75, 0.0, 1.0, 0.25)
  good = grounding.evaluate(loaded, _split(imgs, [hit, hit]))
  bad = grounding.evaluate(loaded, _split(imgs, [miss, miss]))
  assert good["num_phrases"] == bad["num_phrases"] == 2.0
  assert good["pointing_game"] == 1.0 and bad["pointing_game"] == 0.0
  assert good["cnr"] > 1.0 and good["iou"] > 0.3, good
  assert bad["iou"] == 0.0 and bad["cnr"] < good["cnr"], bad
  # Every batch and split reuses one compiled map function.
  maps_fn = grounding._maps_fn(loaded.model)  # pylint: disable=protected-access
  assert maps_fn._cache_size() == 1  # pylint: disable=protected-access
