"""Per-method objectives: finite, weighted as documented."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr import objectives
from jointcxr.models import two_towers


def _lovt_outputs(b=4, n=4, s=3, d=8):
  k = jax.random.split(jax.random.PRNGKey(0), 8)
  return {"img_global": jax.random.normal(k[0], (b, d)),
          "txt_global": jax.random.normal(k[1], (b, d)),
          "img_local": jax.random.normal(k[2], (b, n, d)),
          "img_attended": jax.random.normal(k[3], (b, n, d)),
          "img_weights": jax.nn.softmax(jax.random.normal(k[4], (b, n))),
          "img_positions": two_towers.grid_positions(2, 2),
          "txt_local": jax.random.normal(k[5], (b, s, d)),
          "txt_attended": jax.random.normal(k[6], (b, s, d)),
          "txt_weights": jax.nn.softmax(jax.random.normal(k[7], (b, s))),
          "txt_local_mask": jnp.ones((b, s), bool).at[0, 2].set(False)}


def test_lovt_weights_and_components():
  out = _lovt_outputs()
  loss, aux = objectives.compute("lovt", {}, out, {})
  assert bool(jnp.isfinite(loss))
  parts = (0.75 * aux["global/loss_i2t"] + 0.25 * aux["global/loss_t2i"] +
           0.375 * (aux["loss/local_image_l2att"] +
                    aux["loss/local_image_att2l"] +
                    aux["loss/local_report_l2att"] +
                    aux["loss/local_report_att2l"]))
  np.testing.assert_allclose(loss, parts, rtol=1e-6)
  zero = {k: 0.0 for k in ("local_a_l2att", "local_a_att2l",
                           "local_b_l2att", "local_b_att2l")}
  g_only, _ = objectives.compute("lovt", zero, out, {})
  np.testing.assert_allclose(g_only, aux["loss/global"], rtol=1e-6)


@pytest.mark.parametrize("method", ["convirt", "clip", "siglip"])
def test_global_methods(method):
  out = _lovt_outputs()
  out["logit_scale"], out["logit_bias"] = jnp.log(10.0), -10.0
  loss, aux = objectives.compute(method, {}, out, {})
  assert bool(jnp.isfinite(loss)) and "loss/global" in aux


def test_joimternet_weights():
  k = jax.random.split(jax.random.PRNGKey(1), 4)
  out = {"img_global": jax.random.normal(k[0], (6, 8)),
         "txt_global": jax.random.normal(k[1], (6, 8)),
         "img_regions": jax.random.normal(k[2], (6, 4, 8)),
         "txt_words": jax.random.normal(k[3], (6, 5, 8)),
         "txt_word_mask": jnp.ones((6, 5), bool)}
  loss, aux = objectives.compute("joimternet", {}, out, {},
                                 rng=jax.random.PRNGKey(0))
  ref = (aux["loss/damsm_sentence"] + aux["loss/damsm_word"] + 2 * (
      aux["loss/triplet_sentence"] + aux["loss/triplet_word"]))
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  neg = objectives.random_negatives(jax.random.PRNGKey(5), 6)
  assert not bool(jnp.any(neg == jnp.arange(6)))


def test_unknown_method():
  with pytest.raises(ValueError, match="unknown method 'x'"):
    objectives.compute("x", {}, {}, {})
