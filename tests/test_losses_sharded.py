"""Sharded (shard_map) losses == single-device losses on 8 fake devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jointcxr import losses
from jointcxr import objectives
from jointcxr.losses import sharded

MESHES = [((8, 1), ("data", "model")), ((4, 2), ("data", "model")),
          ((2, 4), ("data", "model")), ((2, 2, 2), ("data", "fsdp", "model"))]


def _mesh(shape, names):
  return Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape),
              names)


def _axes(names):
  return ("data", "fsdp") if "fsdp" in names else "data"


def _check(plain, shard, args):
  a = jax.value_and_grad(plain, tuple(range(len(args))))(*args)
  b = jax.jit(jax.value_and_grad(shard, tuple(range(len(args)))))(*args)
  np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
  for x, y in zip(a[1], b[1]):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,names", MESHES)
def test_global_losses_sharded_equal(shape, names):
  mesh, axes = _mesh(shape, names), _axes(names)
  k = jax.random.split(jax.random.PRNGKey(0), 2)
  zi, zt = jax.random.normal(k[0], (16, 8)), jax.random.normal(k[1], (16, 8))
  mask = jnp.arange(16) < 13
  _check(lambda a, b: losses.infonce(a, b, temperature=0.1, i2t_weight=0.75,
                                     mask=mask)[0],
         lambda a, b: sharded.infonce(a, b, mesh=mesh, data_axis=axes,
                                      temperature=0.1, i2t_weight=0.75,
                                      mask=mask)[0], (zi, zt))
  _check(lambda a, b: losses.siglip(a, b, logit_scale=2.0,
                                    logit_bias=-5.0)[0],
         lambda a, b: sharded.siglip(a, b, mesh=mesh, data_axis=axes,
                                     logit_scale=2.0, logit_bias=-5.0)[0],
         (zi, zt))
  neg = objectives.random_negatives(jax.random.PRNGKey(3), 16)
  for kw in (dict(hardest=True), dict(hardest=False), dict(negatives=neg)):
    _check(lambda a, b: losses.triplet(a, b, margin=0.5, **kw)[0],
           lambda a, b: sharded.triplet(a, b, mesh=mesh, data_axis=axes,
                                        margin=0.5, **kw)[0], (zi, zt))


@pytest.mark.parametrize("shape,names", MESHES[:2])
def test_damsm_word_sharded_equal(shape, names):
  mesh, axes = _mesh(shape, names), _axes(names)
  k = jax.random.split(jax.random.PRNGKey(1), 2)
  reg, words = jax.random.normal(k[0], (8, 4, 6)), jax.random.normal(
      k[1], (8, 5, 6))
  mask = jnp.ones((8, 5), bool).at[2, 3:].set(False)
  kw = dict(gamma1=4.0, gamma2=5.0, gamma3=10.0)
  _check(lambda r, w: losses.damsm_word(r, w, mask, **kw)[0],
         lambda r, w: sharded.damsm_word(r, w, mask, mesh=mesh,
                                         data_axis=axes, chunk_size=3,
                                         **kw)[0], (reg, words))


def test_objectives_joimternet_sharded_equals_plain():
  mesh = _mesh((4, 2), ("data", "model"))
  k = jax.random.split(jax.random.PRNGKey(2), 4)
  out = {"img_global": jax.random.normal(k[0], (8, 6)),
         "txt_global": jax.random.normal(k[1], (8, 6)),
         "img_regions": jax.random.normal(k[2], (8, 4, 6)),
         "txt_words": jax.random.normal(k[3], (8, 5, 6)),
         "txt_word_mask": jnp.ones((8, 5), bool)}
  rng = jax.random.PRNGKey(9)
  a, aux_a = objectives.compute("joimternet", {}, out, {}, rng=rng)
  b, aux_b = jax.jit(lambda o: objectives.compute("joimternet", {}, o, {},
                                                  rng=rng, mesh=mesh))(out)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  for key in aux_a:
    np.testing.assert_allclose(aux_a[key], aux_b[key], rtol=1e-5)
