"""Two-tower model: output keys per method, encoders, MLM, dtypes, sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jointcxr.models import bert
from jointcxr.models import testing
from jointcxr.models import two_towers

TXT = dict(vocab_size=48, hidden=16, layers=1, heads=2, mlp_dim=32,
           max_len=16, max_sentences=4, dropout=0.0)
IMG = dict(depth=18, width=4, stage_sizes=(1, 1, 1, 1))
CNN = dict(channels=(4, 4, 8, 8, 16, 16), stem_channels=4, region_dim=8,
           global_dim=8)
HEADS = dict(dim=8, hidden=16, pool_heads=2)
RNGS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def _batch(b: int = 4, size: int = 64) -> dict:
  sids = jnp.tile(jnp.array([-1] + [0] * 5 + [1] * 5 + [2] * 4 + [-1]),
                  (b, 1))
  mask = jnp.ones((b, 16), bool).at[1, 11:].set(False)
  sids = sids.at[1, 11:].set(-1)  # row 1: two sentences, then padding
  # NumPy, not jax.random: each new shape would compile a sampler.
  rng = np.random.default_rng(6)
  return dict(image=jnp.asarray(rng.normal(size=(b, size, size, 1)),
                                jnp.float32),
              tokens=jnp.asarray(rng.integers(5, 48, (b, 16)), jnp.int32),
              text_mask=mask, sentence_ids=sids)


def _model(method: str, **kw) -> two_towers.Model:
  img = ("joimter_cnn", CNN) if method == "joimternet" else ("resnet", IMG)
  heads = dict(HEADS) if method != "joimternet" else dict(dim=8)
  heads.update(kw.pop("heads", {}))
  return two_towers.Model(image_model=img[0], image=img[1], text=TXT,
                          method=method, heads=heads, **kw)


EXPECTED = {  # method -> {key: shape} for B=4, 2x2 regions, 16 tokens
    "lovt": {"img_global": (4, 8), "txt_global": (4, 8),
             "img_local": (4, 4, 8), "img_weights": (4, 4),
             "img_positions": (4, 2), "txt_local": (4, 4, 8),
             "txt_local_mask": (4, 4), "txt_weights": (4, 4),
             "img_attended": (4, 4, 8), "txt_attended": (4, 4, 8)},
    "clip": {"img_global": (4, 8), "txt_global": (4, 8),
             "img_weights": (4, 4), "txt_weights": (4, 4),
             "txt_local_mask": (4, 4), "logit_scale": ()},
    "siglip": {"img_global": (4, 8), "txt_global": (4, 8),
               "img_weights": (4, 4), "txt_weights": (4, 4),
               "txt_local_mask": (4, 4), "logit_scale": (),
               "logit_bias": ()},
    "convirt": {"img_global": (4, 8), "txt_global": (4, 8)},
    "joimternet": {"img_global": (4, 8), "img_regions": (4, 4, 8),
                   "txt_global": (4, 8), "txt_words": (4, 16, 8),
                   "txt_word_mask": (4, 16), "mlm_logits": (4, 16, 48)},
}


@pytest.mark.parametrize("method", two_towers.METHODS)
def test_output_keys_and_shapes(method):
  m = _model(method, heads=dict(learn_temperature=True, mlm=True)
             if method in ("clip", "joimternet") else {})
  batch = _batch(4, 256 if method == "joimternet" else 64)
  kw = dict(mlm_tokens=batch["tokens"]) if method == "joimternet" else {}
  out, v = jax.eval_shape(lambda: m.init_with_output(RNGS, batch, **kw))
  got = {k: x.shape for k, x in out.items()
         if k not in ("img_tower", "txt_tower", "attention")}
  assert got == EXPECTED[method]
  assert "regions" in out["img_tower"] and "words" in out["txt_tower"]
  names = set(v["params"])
  assert {"img", "txt"} <= names
  if method == "lovt":
    assert names == {"img", "txt", "img_proj_global", "img_proj_local",
                     "img_pool", "txt_proj_global", "txt_proj_local",
                     "txt_pool", "cross_attn"}
  if method == "joimternet":
    assert names == {"img", "txt", "txt_words_proj", "txt_proj_global",
                     "mlm_head"}
  # The image-only encoder gives the image keys but the cross-attention's.
  img = jax.eval_shape(lambda v: m.apply(
      v, batch["image"], method=two_towers.Model.encode_image), v)
  assert {k for k in img if k != "img_tower"} == {
      k for k in got if k.startswith("img_") and k != "img_attended"}


@pytest.fixture(scope="module")
def lovt():
  """A tiny lovt model, a batch of 8, host-filled variables, the output."""
  m, batch = _model("lovt"), _batch(8)
  v = testing.fill_variables(jax.eval_shape(lambda: m.init(RNGS, batch)))
  return m, batch, v, jax.jit(m.apply)(v, batch)


def test_lovt_values_masks_and_encoders(lovt):
  m, batch, v, out = lovt
  np.testing.assert_allclose(out["txt_weights"].sum(-1), 1, rtol=1e-5)
  np.testing.assert_allclose(out["img_weights"].sum(-1), 1, rtol=1e-5)
  np.testing.assert_array_equal(out["txt_local_mask"][:, 3], False)
  np.testing.assert_array_equal(out["txt_local_mask"][1], [1, 1, 0, 0])
  assert np.all(np.asarray(out["txt_weights"])[1, 2:] == 0)
  # Positions: row-major grid indices over the diagonal sqrt(2^2 + 2^2).
  np.testing.assert_allclose(out["img_positions"] * np.sqrt(8),
                             [[0, 0], [0, 1], [1, 0], [1, 1]], rtol=1e-6)

  @jax.jit
  def encoders_and_train_step(v):
    img = m.apply(v, batch["image"], method=two_towers.Model.encode_image)
    txt = m.apply(v, batch["tokens"], batch["text_mask"],
                  batch["sentence_ids"], method=two_towers.Model.encode_text)
    _, upd = m.apply(v, batch, train=True, mutable=["batch_stats"])
    return img, txt, upd

  img, txt, upd = encoders_and_train_step(v)
  for k in ("img_global", "img_local"):
    np.testing.assert_allclose(img[k], out[k], rtol=1e-5, atol=1e-6)
  for k in ("txt_global", "txt_local"):
    np.testing.assert_allclose(txt[k], out[k], rtol=1e-5, atol=1e-6)
  # Train mode updates BatchNorm statistics (heads and tower).
  assert {"img", "img_proj_local", "txt_proj_local", "cross_attn"} <= set(
      upd["batch_stats"])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         nn.meta.unbox(v["batch_stats"]),
                         upd["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_joimternet_mlm_and_words():
  m = _model("joimternet", heads=dict(mlm=True, mlm_tied=True))
  batch = _batch(2, 256)
  v = testing.fill_variables(jax.eval_shape(lambda: m.init(RNGS, batch)))
  assert set(v["params"]["mlm_head"]) == {"transform", "ln", "bias"}

  p = nn.meta.unbox(v["params"])

  @jax.jit
  def run(v):
    out = m.apply(v, batch, mlm_tokens=batch["tokens"])
    logits = m.apply(v, batch["tokens"], batch["text_mask"],
                     method=two_towers.Model.mlm_logits)
    # Tied: the head alone, given the tower's words and embedding matrix.
    words = m.apply(v, batch["tokens"], batch["text_mask"],
                    method=lambda mod, t, k: mod.txt(t, k)["words"])
    head = bert.MlmHead(48, tied=True).apply(
        {"params": p["mlm_head"]}, words, p["txt"]["embed_word"]["embedding"])
    return out, logits, head

  out, logits, head = run(v)
  np.testing.assert_array_equal(out["txt_word_mask"][:, 0], False)
  np.testing.assert_array_equal(out["txt_word_mask"][:, 1:],
                                batch["text_mask"][:, 1:])
  np.testing.assert_allclose(logits, out["mlm_logits"], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(head, logits, rtol=1e-5, atol=1e-5)
  assert logits.shape == (2, 16, 48)


def test_configuration_errors():
  batch = _batch(2)
  init = lambda m, b, **kw: jax.eval_shape(lambda: m.init(RNGS, b, **kw))
  with pytest.raises(ValueError, match=r"unknown heads keys \['hiden'\]"):
    init(_model("lovt", heads=dict(hiden=3)), batch)
  with pytest.raises(ValueError, match="unknown method 'simclr'"):
    init(_model("simclr"), batch)
  with pytest.raises(ValueError, match="unknown tower 'resnet51'"):
    init(two_towers.Model(image_model="resnet51", text=TXT), batch)
  with pytest.raises(ValueError, match="needs `sentence_ids`"):
    init(_model("lovt"), {k: x for k, x in batch.items()
                          if k != "sentence_ids"})
  with pytest.raises(ValueError, match="model has no MLM head"):
    init(_model("convirt"), batch, mlm_tokens=batch["tokens"])
  with pytest.raises(ValueError, match="needs sentence features"):
    init(two_towers.Model(image=IMG, text_model="dan",
                          text=dict(vocab_size=48), method="lovt",
                          heads=HEADS), batch)


def test_bf16_finite_and_remat_identical(lovt):
  m, batch, v, ref = lovt
  mr = two_towers.Model(image=dict(IMG, remat=True),
                        text=dict(TXT, remat=True), method="lovt",
                        heads=HEADS)
  out, got = jax.jit(lambda v: [_model("lovt", dtype=jnp.bfloat16).apply(
      v, batch), mr.apply(v, batch)])(v)
  for k in ("img_global", "txt_global", "img_attended", "txt_attended"):
    assert out[k].dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(out[k].astype(jnp.float32))))
    np.testing.assert_allclose(out[k].astype(jnp.float32), ref[k],
                               rtol=0.1, atol=0.1)
  for k in ("img_global", "txt_global", "img_attended", "txt_attended"):
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)


def test_sharded_init_and_forward_equal_unsharded(lovt):
  """jit under a 2x4 mesh with logical rules == plain apply (1e-5)."""
  m, batch, v, ref = lovt
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  rules = [("act_batch", "data"), ("mlp", "model"), ("heads", "model"),
           ("kv", "model"), ("vocab", "model")]
  specs = nn.get_partition_spec(v)
  assert specs["params"]["txt"]["embed_word"]["embedding"] == P("vocab",
                                                                "embed")
  assert specs["params"]["img_proj_global"]["fc1"]["kernel"] == P("embed",
                                                                  "mlp")
  with mesh, nn.logical_axis_rules(rules):
    # Init traces under the rules (the constraints resolve to mesh axes).
    abstract = jax.eval_shape(lambda: m.init(RNGS, batch))
    assert jax.tree.structure(abstract) == jax.tree.structure(v)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    sv = jax.device_put(v, shardings)
    sbatch = jax.device_put(batch, NamedSharding(mesh, P("data")))
    out = jax.jit(m.apply)(sv, sbatch)
  kernel = nn.meta.unbox(sv)["params"]["img_proj_global"]["fc1"]["kernel"]
  assert kernel.sharding.spec == P(None, "model")
  assert out["img_global"].sharding.spec[0] == "data"
  for k in ("img_global", "txt_global", "img_local", "txt_local",
            "img_attended", "txt_attended", "img_weights", "txt_weights"):
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-5)
