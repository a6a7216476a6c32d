"""Per-method objectives: finite, weighted as documented, sharded == plain,
config validation, and learning: a few steps beat chance."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from jointcxr import losses
from jointcxr import objectives

B, D = 8, 8


def _normal(key, shape):
  return jax.random.normal(jax.random.key(key), shape)


def _outputs(method):
  out = {"img_global": _normal(0, (B, D)), "txt_global": _normal(1, (B, D))}
  if method == "lovt":
    out.update(
        img_local=_normal(2, (B, 4, D)), img_attended=_normal(3, (B, 4, D)),
        img_weights=jax.nn.softmax(_normal(4, (B, 4))),
        img_positions=losses.grid_positions(2, 2),
        txt_local=_normal(5, (B, 3, D)), txt_attended=_normal(6, (B, 3, D)),
        txt_weights=jax.nn.softmax(_normal(7, (B, 3))),
        txt_local_mask=jnp.ones((B, 3), bool).at[0, 2].set(False))
  if method == "joimternet":
    out.update(img_regions=_normal(2, (B, 4, D)),
               txt_words=_normal(3, (B, 5, D)),
               txt_word_mask=jnp.arange(5)[None] < jnp.array(
                   [5, 4, 3, 5, 2, 5, 4, 1])[:, None])
  if method == "siglip":
    out.update(logit_scale=jnp.log(10.0), logit_bias=jnp.array(-10.0))
  return out


RNG = jax.random.key(3)


def _compute(method, cfg, out, **kw):
  return objectives.compute(method, cfg, out, {}, **kw)


def test_lovt_weighting_and_components():
  out = _outputs("lovt")
  loss, aux = _compute("lovt", {}, out)
  assert np.isfinite(float(loss))
  names = ("img_l2att", "img_att2l", "txt_l2att", "txt_att2l")
  parts = (0.75 * aux["loss/global_i2t"] + 0.25 * aux["loss/global_t2i"]
           + 0.375 * sum(aux[f"loss/local_{n}"] for n in names))
  np.testing.assert_allclose(loss, parts, rtol=1e-6)
  # The components are the plain losses with the paper's settings.
  g, _ = losses.infonce(out["img_global"], out["txt_global"],
                        temperature=0.1, i2t_weight=0.75)
  np.testing.assert_allclose(0.75 * aux["loss/global_i2t"]
                             + 0.25 * aux["loss/global_t2i"], g, rtol=1e-6)
  _, li = losses.lovt_local(out["img_local"], out["img_attended"],
                            out["img_weights"], None, temperature=0.3,
                            positions=out["img_positions"])
  np.testing.assert_allclose(aux["loss/local_img_l2att"], li["l2att"],
                             rtol=1e-6)
  # A zero weight removes exactly its component.
  cfg = ml_collections.ConfigDict({"loss_weights": {"local_b_att2l": 0.0}})
  loss0, _ = _compute("lovt", cfg, out)
  np.testing.assert_allclose(loss - loss0,
                             0.375 * aux["loss/local_txt_att2l"], rtol=1e-5)


def test_joimternet_weighting_and_quirk():
  out = _outputs("joimternet")
  loss, aux = _compute("joimternet", None, out, rng=RNG)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(
      loss, aux["loss/sentence"] + aux["loss/word"]
      + 2 * (aux["loss/sentence_triplet"] + aux["loss/word_triplet"]),
      rtol=1e-6)
  no_trip, a0 = _compute("joimternet", {"lambda_triplet": 0.0}, out,
                              rng=RNG)
  np.testing.assert_allclose(no_trip, a0["loss/sentence"] + a0["loss/word"],
                             rtol=1e-6)
  # local_weight scales the region-word terms only (0: global-only).
  g_only, ag = _compute("joimternet", {"local_weight": 0.0}, out, rng=RNG)
  np.testing.assert_allclose(
      g_only, ag["loss/sentence"] + 2 * ag["loss/sentence_triplet"],
      rtol=1e-6)
  half, _ = _compute("joimternet", {"local_weight": 0.5}, out, rng=RNG)
  np.testing.assert_allclose(
      half, g_only + 0.5 * (aux["loss/word"] + 2 * aux["loss/word_triplet"]),
      rtol=1e-6)
  # The official-code quirk changes only the word triplet.
  _, aq = _compute("joimternet", {"word_triplet_code_quirk": True}, out,
                        rng=RNG)
  assert float(aq["loss/word_triplet"]) != float(aux["loss/word_triplet"])
  assert float(aq["loss/word"]) == float(aux["loss/word"])
  with pytest.raises(ValueError, match="joimternet needs `rng`"):
    objectives.compute("joimternet", {}, out, {})


@pytest.mark.parametrize("method", ["convirt", "clip", "siglip"])
def test_global_methods(method):
  out = _outputs(method)
  loss, aux = objectives.compute(method, {}, out, {})
  assert np.isfinite(float(loss)) and float(aux["loss/total"]) == float(loss)
  if method == "convirt":
    ref, _ = losses.infonce(out["img_global"], out["txt_global"],
                            temperature=0.1, i2t_weight=0.75)
  elif method == "clip":
    ref, _ = losses.infonce(out["img_global"], out["txt_global"],
                            temperature=0.07)
  else:
    ref, _ = losses.siglip(out["img_global"], out["txt_global"],
                           logit_scale=math.log(10.0), logit_bias=-10.0)
  np.testing.assert_allclose(loss, ref, rtol=1e-6)


def test_clip_learned_temperature_from_model_log_scale():
  out = dict(_outputs("clip"), logit_scale=jnp.log(1 / 0.2))
  loss, aux = objectives.compute("clip", {}, out, {})
  ref, _ = losses.infonce(out["img_global"], out["txt_global"],
                          temperature=0.2)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  np.testing.assert_allclose(aux["temperature"], 0.2, rtol=1e-5)
  g = jax.grad(lambda s: objectives.compute(
      "clip", {}, dict(out, logit_scale=s), {})[0])(out["logit_scale"])
  assert float(g) != 0.0


def test_padding_mask_from_batch():
  out = _outputs("convirt")
  mask = jnp.arange(B) < 6
  loss, _ = objectives.compute("convirt", {}, out, {"mask": mask})
  ref, _ = objectives.compute("convirt", {}, {
      k: v[:6] for k, v in out.items()}, {})
  np.testing.assert_allclose(loss, ref, rtol=1e-6)


@pytest.mark.parametrize("method", ["lovt", "joimternet", "siglip"])
def test_sharded_objective_equals_plain(method):
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  out = _outputs(method)
  a, aux_a = _compute(method, {}, out, rng=RNG)
  b, aux_b = jax.jit(lambda o: objectives.compute(method, {}, o, {}, rng=RNG,
                                                  mesh=mesh))(out)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  for key in aux_a:
    np.testing.assert_allclose(aux_a[key], aux_b[key], rtol=1e-5, atol=1e-6,
                               err_msg=key)


def test_bad_config_and_outputs_fail_clearly():
  with pytest.raises(ValueError, match="unknown method 'x'"):
    objectives.defaults("x")
  with pytest.raises(ValueError, match="unknown loss option 'temprature' for "
                     "method 'convirt'"):
    objectives.compute("convirt", {"temprature": 0.2}, _outputs("convirt"))
  with pytest.raises(ValueError, match="unknown loss_weights entry 'foo'"):
    objectives.compute("lovt", {"loss_weights": {"foo": 1.0}},
                       _outputs("lovt"))
  with pytest.raises(KeyError, match="method 'lovt' needs model output "
                     "'img_local'"):
    objectives.compute("lovt", {}, _outputs("convirt"))
  assert objectives.defaults("lovt")["loss_weights"]["global_a2b"] == 0.75


def test_mlm_inputs_and_step():
  tokens = jax.random.randint(jax.random.key(0), (4, 32), 0, 50)
  with pytest.raises(ValueError, match="needs `vocab_size` and `mask_id`"):
    objectives.mlm_inputs({}, RNG, tokens)
  b = objectives.mlm_inputs({"vocab_size": 51, "mask_id": 50}, RNG, tokens)
  assert float(b["mlm_weights"].sum()) > 0
  logits = _normal(9, (4, 32, 51))
  loss, aux = objectives.mlm_step(logits, b["mlm_targets"], b["mlm_weights"])
  ref, _ = losses.mlm(logits, b["mlm_targets"], b["mlm_weights"])
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  assert float(aux["mlm/num_masked"]) == float(b["mlm_weights"].sum())


def test_training_free_embeddings_beats_chance():
  # Learned-better-than-random: a linear map of fixed random "image" features
  # trained with the LoVT objective aligns them with their "reports".
  g = np.random.default_rng(0)
  feats = jnp.asarray(g.normal(size=(B, D)), jnp.float32)
  txt = jnp.asarray(g.normal(size=(B, D)), jnp.float32)
  base = _outputs("lovt")

  def loss_fn(w):
    out = dict(base, img_global=feats @ w, txt_global=txt)
    return objectives.compute("lovt", {}, out, {})

  w = jnp.asarray(g.normal(size=(D, D)) * 0.1, jnp.float32)
  opt = optax.adam(0.05)
  state = opt.init(w)
  step = jax.jit(lambda w, s: _update(opt, loss_fn, w, s))
  _, aux0 = loss_fn(w)
  for _ in range(60):
    w, state = step(w, state)
  _, aux1 = loss_fn(w)
  assert float(aux1["loss/global_i2t"]) < float(aux0["loss/global_i2t"]) - 1.0
  assert float(aux1["acc/global_i2t"]) > 0.9 > 1 / B


def _update(opt, loss_fn, w, state):
  grads = jax.grad(lambda w: loss_fn(w)[0])(w)
  updates, state = opt.update(grads, state)
  return optax.apply_updates(w, updates), state
