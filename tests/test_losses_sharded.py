"""shard_map losses on 8 fake CPU devices == single-device losses.

Values and gradients w.r.t. the embeddings, several mesh shapes (data x
model, and a data x fsdp x model mesh split over two batch axes), with
padded examples, chunked DAMSM, and the GSPMD reference path.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jointcxr import losses
from jointcxr.losses import sharded

MESHES = [((8, 1), ("data", "model"), "data"),
          ((4, 2), ("data", "model"), "data"),
          ((2, 4), ("data", "model"), "data"),
          ((2, 2, 2), ("data", "fsdp", "model"), ("data", "fsdp"))]
B, D, R, T = 16, 8, 4, 5
KW = dict(gamma1=4.0, gamma2=5.0)


def _mesh(shape, names):
  devices = np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape)
  return Mesh(devices, names)


@functools.lru_cache(maxsize=None)
def _inputs():
  # Cached NumPy constants: the loss closures are traced inside jit.
  g = np.random.default_rng(0)
  zi = g.normal(size=(B, D)).astype(np.float32)
  zt = (zi + g.normal(size=(B, D))).astype(np.float32)
  reg = g.normal(size=(B, R, D)).astype(np.float32)
  words = g.normal(size=(B, T, D)).astype(np.float32)
  wmask = np.arange(T)[None] < g.integers(1, T + 1, size=B)[:, None]
  wmask[5] = False  # a text without words: dropped like padding
  mask = np.arange(B) < 13  # three padded examples
  neg = np.asarray(losses.random_negatives(jax.random.key(1), B))
  return zi, zt, reg, words, wmask, mask, neg


def _loss_fns(mod, extra):
  """name -> f(a, b) for the plain (`losses`) or sharded module."""
  zi, zt, reg, words, wmask, mask, neg = _inputs()
  del zi, zt, reg, words
  return {
      "infonce": lambda a, b: mod.infonce(a, b, temperature=0.1,
                                          i2t_weight=0.75, mask=mask,
                                          **extra),
      "damsm_sentence": lambda a, b: mod.damsm_sentence(
          a, b, gamma3=10.0, mask=mask, **extra),
      "siglip": lambda a, b: mod.siglip(a, b, logit_scale=2.3,
                                        logit_bias=-10.0, mask=mask, **extra),
      "triplet_hard": lambda a, b: mod.triplet(a, b, margin=0.5, mask=mask,
                                               **extra),
      "triplet_sum": lambda a, b: mod.triplet(a, b, margin=0.5, hardest=False,
                                              mask=mask, **extra),
      "triplet_neg": lambda a, b: mod.triplet(a, b, margin=0.5, negatives=neg,
                                              mask=mask, **extra),
      "damsm_word": lambda r, w: mod.damsm_word(r, w, wmask, gamma3=10.0,
                                                mask=mask, **KW, **extra),
      "damsm_word_chunked": lambda r, w: mod.damsm_word(
          r, w, wmask, gamma3=10.0, chunk_size=3, mask=mask, **KW, **extra),
  }


def _all(fns, zi, zt, reg, words):
  out = {}
  for name, fn in fns.items():
    args = (reg, words) if name.startswith("damsm_word") else (zi, zt)
    (value, aux), grads = jax.value_and_grad(fn, argnums=(0, 1),
                                             has_aux=True)(*args)
    out[name] = (value, aux, grads)
  return out


@pytest.fixture(scope="module")
def reference():
  zi, zt, reg, words, *_ = _inputs()
  return jax.jit(lambda *a: _all(_loss_fns(losses, {}), *a))(zi, zt, reg,
                                                             words)


# Every loss on the 4x2 mesh; the other meshes skip the variants that share
# all of their collectives with a tested one (keeps compile time down).
REDUCED = ("infonce", "siglip", "triplet_neg", "damsm_word_chunked")


@pytest.mark.parametrize("shape,names,axis", MESHES)
def test_sharded_equals_single_device(reference, shape, names, axis):
  mesh = _mesh(shape, names)
  zi, zt, reg, words, *_ = _inputs()
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P(axis)))  # noqa
  fns = _loss_fns(sharded, dict(mesh=mesh, data_axis=axis))
  if shape != (4, 2):
    fns = {k: fns[k] for k in REDUCED}
  got = jax.jit(lambda *a: _all(fns, *a))(put(zi), put(zt), put(reg),
                                          put(words))
  for name, (value, aux, grads) in got.items():
    ref_value, ref_aux, ref_grads = reference[name]
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5,
                               err_msg=name)
    for key in ref_aux:
      np.testing.assert_allclose(aux[key], ref_aux[key], rtol=1e-5,
                                 atol=1e-5, err_msg=f"{name} {key}")
    for g, ref_g in zip(grads, ref_grads):
      assert np.any(np.asarray(ref_g) != 0), name
      np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-5,
                                 err_msg=name)


def test_sharded_damsm_scores_row_sharded_and_equal():
  mesh = _mesh((4, 2), ("data", "model"))
  _, _, reg, words, wmask, *_ = _inputs()
  got = jax.jit(lambda r, w: sharded.damsm_word_scores(
      r, w, wmask, mesh=mesh, chunk_size=2, **KW))(reg, words)
  assert got.sharding.spec == P("data")
  np.testing.assert_allclose(
      got, losses.damsm_word_scores(reg, words, wmask, **KW), rtol=1e-5,
      atol=1e-5)


def test_gspmd_reference_path_equals_single_device(reference):
  # The plain losses over globally sharded arrays (XLA inserts the
  # collectives) are the reference the shard_map versions replace.
  mesh = _mesh((4, 2), ("data", "model"))
  zi, zt, reg, words, *_ = _inputs()
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))  # noqa
  fns = _loss_fns(losses, {})
  got = jax.jit(lambda *a: _all({k: fns[k] for k in ("infonce",
                                                     "damsm_word")}, *a))(
                                                         put(zi), put(zt),
                                                         put(reg), put(words))
  for name, (value, _, grads) in got.items():
    np.testing.assert_allclose(value, reference[name][0], rtol=1e-5)
    for g, ref_g in zip(grads, reference[name][2]):
      np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-6)


def test_indivisible_batch_and_unknown_axis_raise():
  mesh = _mesh((8, 1), ("data", "model"))
  z = jnp.ones((12, 4))
  with pytest.raises(ValueError, match="global batch 12 is not divisible by "
                     "the 8 devices of mesh axis 'data'"):
    sharded.infonce(z, z, mesh=mesh, temperature=0.1)
  with pytest.raises(ValueError, match="mesh has no axis 'batch'"):
    sharded.infonce(z, z, mesh=mesh, data_axis="batch", temperature=0.1)
