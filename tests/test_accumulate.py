"""Contrastive-aware accumulation == the full-batch gradient.

A tiny two-tower stand-in (Dense image tower with optional BatchNorm,
bag-of-embeddings text tower, learned temperature) trained with the real
CLIP objective. Also shows what LoVT's plain accumulation loses: its
gradient is that of a different loss (negatives only within micro-batches).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jointcxr import accumulate
from jointcxr import objectives


class TinyTwoTower(nn.Module):
  """Stand-in two-tower model with the trainer's call signature."""
  norm: str = "none"
  vocab: int = 32
  dim: int = 8

  @nn.compact
  def __call__(self, batch: dict, *, train: bool) -> dict:
    x = batch["image"].reshape(batch["image"].shape[0], -1)
    h = nn.Dense(16, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", "mlp")), name="img_in")(x)
    if self.norm == "batch":
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       name="img_bn")(h)
    zi = nn.Dense(self.dim, name="img_out")(nn.relu(h))
    emb = nn.Embed(self.vocab, self.dim, name="txt_embed")(batch["tokens"])
    m = batch["text_mask"][..., None].astype(jnp.float32)
    zt = nn.Dense(self.dim, name="txt_out")(
        (emb * m).sum(1) / jnp.maximum(m.sum(1), 1.0))
    scale = self.param("logit_scale", nn.initializers.constant(
        np.log(1 / 0.1)), ())
    return {"img_global": zi, "txt_global": zt, "logit_scale": scale,
            "img_tower": {"pooled": h}}


def make_batch(n: int, seed: int = 0, size: int = 8, t: int = 6) -> dict:
  rng = np.random.default_rng(seed)
  mask = np.ones((n, t), bool)
  mask[:, 4:] = rng.random((n, 2)) < 0.5
  return {"image": rng.normal(size=(n, size, size, 1)).astype(np.float32),
          "tokens": rng.integers(0, 32, (n, t)).astype(np.int32),
          "text_mask": mask}


def loss_fn(out, batch):
  return objectives.compute("clip", {}, out, batch)


def _setup(norm: str, n: int = 16):
  model = TinyTwoTower(norm=norm)
  batch = make_batch(n)
  variables = nn.meta.unbox(model.init(jax.random.PRNGKey(0), batch,
                                       train=False))
  bs = variables.get("batch_stats", {})
  if bs:  # non-trivial running statistics, so eval mode is not identity
    bs = jax.tree.map(lambda x: x + 0.3, bs)
  return model, variables["params"], bs, batch


def _apply(model, train: bool):
  def apply_fn(params, bs, b, rng):
    del rng
    variables = {"params": params, **({"batch_stats": bs} if bs else {})}
    if not train:
      return model.apply(variables, b, train=False), bs
    out, mut = model.apply(variables, b, train=True, mutable=["batch_stats"])
    return out, mut.get("batch_stats", bs)
  return apply_fn


def _max_rel(a, b) -> float:
  """Largest leaf error relative to the leaf's scale (floored at 1e-2 of
  the whole tree's, since e.g. a bias before BatchNorm has ~0 gradient)."""
  top = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
  return max(float(jnp.max(jnp.abs(x - y)) / max(float(jnp.max(jnp.abs(y))),
                                                1e-2 * top, 1e-12))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("norm,train", [("none", True), ("batch", False)])
def test_accumulated_equals_full_batch_gradient(norm, train):
  model, params, bs, batch = _setup(norm)
  apply_fn = _apply(model, train)

  def full(p):
    out, _ = apply_fn(p, bs, batch, None)
    return loss_fn(out, batch)

  (loss_ref, _), g_ref = jax.value_and_grad(full, has_aux=True)(params)
  for k in (2, 4):
    loss, aux, grads, _ = jax.jit(
        accumulate.accumulated_grads, static_argnums=(0, 1, 5))(
            apply_fn, loss_fn, params, bs, batch, k, jax.random.PRNGKey(1))
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    assert _max_rel(grads, g_ref) < 1e-5, k
    assert float(aux["acc/global_i2t"]) >= 0.0
    # The learned temperature (a shared, not per-example, output) gets its
    # gradient exactly once, not k times.
    np.testing.assert_allclose(grads["logit_scale"], g_ref["logit_scale"],
                               rtol=1e-5, atol=1e-7)


def test_batchnorm_in_training_mode_uses_micro_batch_statistics():
  """Loss over the whole batch of outputs normalised per micro-batch."""
  model, params, bs, batch = _setup("batch")
  apply_fn = _apply(model, True)
  k = 2
  micro = accumulate.split_micro(batch, k)

  def reference(p):
    outs, stats = [], bs
    for i in range(k):
      out, stats = apply_fn(p, stats, jax.tree.map(lambda x: x[i], micro),
                            None)
      outs.append({kk: out[kk] for kk in ("img_global", "txt_global")})
      shared = out["logit_scale"]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    full = accumulate.merge_micro(stacked)
    loss, _ = loss_fn({**full, "logit_scale": shared}, batch)
    return loss, stats

  (loss_ref, bs_ref), g_ref = jax.value_and_grad(reference, has_aux=True)(
      params)
  loss, _, grads, new_bs = accumulate.accumulated_grads(
      apply_fn, loss_fn, params, bs, batch, k, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
  assert _max_rel(grads, g_ref) < 1e-5
  # Running statistics are updated micro-batch after micro-batch.
  assert _max_rel(new_bs, bs_ref) < 1e-6
  assert _max_rel(new_bs, bs) > 1e-3


def test_plain_accumulation_drops_cross_micro_batch_negatives():
  """LoVT-style accumulation: mean of per-micro-batch gradients."""
  model, params, bs, batch = _setup("none")
  apply_fn = _apply(model, True)
  k = 4
  micro = accumulate.split_micro(batch, k)

  def micro_loss(p, b):
    return loss_fn(apply_fn(p, bs, b, None)[0], b)[0]

  plain = jax.tree.map(lambda *g: sum(g) / k, *[
      jax.grad(micro_loss)(params, jax.tree.map(lambda x: x[i], micro))
      for i in range(k)])
  full = jax.grad(micro_loss)(params, batch)
  ours = accumulate.accumulated_grads(apply_fn, loss_fn, params, bs, batch,
                                      k, jax.random.PRNGKey(0))[2]
  assert _max_rel(ours, full) < 1e-5
  assert _max_rel(plain, full) > 0.05  # a different objective altogether


def test_accumulation_on_a_sharded_batch_matches_single_device():
  model, params, bs, batch = _setup("none", n=32)
  apply_fn = _apply(model, True)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  fn = jax.jit(accumulate.accumulated_grads, static_argnums=(0, 1, 5))
  with jax.set_mesh(mesh):
    _, _, g_sharded, _ = fn(apply_fn, loss_fn, params, bs, sharded, 2,
                            jax.random.PRNGKey(0))
  _, _, g_local, _ = fn(apply_fn, loss_fn, params, bs, batch, 2,
                        jax.random.PRNGKey(0))
  assert _max_rel(g_sharded, g_local) < 1e-5


def test_micro_forward_in_eval_mode_equals_one_forward():
  # The validation loss of an accumulated config (jointcxr.validation): the
  # same outputs, hence the same loss, as one forward of the whole batch.
  model, params, bs, batch = _setup("batch")
  variables = {"params": params, "batch_stats": bs}
  fwd = lambda b: model.apply(variables, b, train=False)
  ref = fwd(batch)
  for k in (1, 4):
    out = jax.jit(lambda b, k=k: accumulate.micro_forward(fwd, b, k))(batch)
    assert "img_tower" not in out  # probe intermediates are dropped
    assert out["logit_scale"].shape == ()
    for key in ("img_global", "txt_global"):
      np.testing.assert_allclose(out[key], ref[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_fn(out, batch)[0],
                               loss_fn(ref, batch)[0], rtol=1e-6)


def test_split_and_merge_round_trip_and_error():
  b = {"x": np.arange(12).reshape(6, 2)}
  m = accumulate.split_micro(b, 3)
  np.testing.assert_array_equal(m["x"][1], b["x"][1::3])
  np.testing.assert_array_equal(accumulate.merge_micro(m)["x"], b["x"])
  with pytest.raises(ValueError, match=r"^batch 6 does not divide into 4 "
                     r"micro-batches$"):
    accumulate.split_micro(b, 4)


def test_step_flops_count_every_scan_iteration():
  # XLA's cost analysis counts a scan body once; the trainer's FLOP/s
  # (train._flops) scales by the accumulation steps. If XLA starts counting
  # trip counts, this fails and the scaling must go.
  from jointcxr import train  # pylint: disable=g-import-not-at-top
  x = jnp.ones((64, 64))

  @jax.jit
  def step(k, x):
    del k
    return jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=8)[0]

  flops = train._flops  # pylint: disable=protected-access
  once = 2 * 64 ** 3
  assert flops(step, 0, x) == pytest.approx(once, rel=0.05)  # one iteration
  assert flops(step, 0, x, 8) == pytest.approx(8 * once, rel=0.05)
