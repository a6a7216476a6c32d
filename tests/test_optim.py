"""Schedules, parameter groups, freezing and clipping vs float64 references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr import optim


def torch_cosine_annealing(base: float, t_max: int, steps: int,
                           eta_min: float = 0.0) -> np.ndarray:
  """PyTorch CosineAnnealingLR's *recursive* rule, stepped every step and
  never reset (LoVT's `cosine_annealing_per_epoch`), in float64."""
  lrs, lr = [], base
  for t in range(steps):
    if t == 0:
      lr = base
    elif (t - 1 - t_max) % (2 * t_max) == 0:
      lr = lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
    else:
      lr = ((1 + math.cos(math.pi * t / t_max)) /
            (1 + math.cos(math.pi * (t - 1) / t_max)) * (lr - eta_min)
            + eta_min)
    lrs.append(lr)
  return np.array(lrs)


def _lrs(sched, n):
  return np.array([float(sched(jnp.asarray(t))) for t in range(n)])


def test_cosine_per_epoch_replicates_lovt_including_the_two_epoch_wave():
  spe = 5
  sched = optim.schedule({"schedule": "cosine_per_epoch"}, 1e-4,
                         total_steps=100, steps_per_epoch=spe)
  got = _lrs(sched, 4 * spe + 3)
  ref = torch_cosine_annealing(1e-4, spe, 4 * spe + 3)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-12)
  # Not a single decay: back at the base rate after two epochs.
  assert got[spe] < 1e-9 and got[2 * spe] == pytest.approx(1e-4)


def test_step_schedule_is_steplr_by_epoch():
  sched = optim.schedule({"schedule": "step", "step_epochs": (2, 4),
                          "step_factor": 0.1}, 1.0, total_steps=100,
                         steps_per_epoch=3)
  got = _lrs(sched, 15)
  ref = np.array([1.0] * 6 + [0.1] * 6 + [0.01] * 3)
  np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_warmup_cosine_and_constant():
  sched = optim.schedule({"schedule": "warmup_cosine", "warmup_steps": 4},
                         2.0, total_steps=20, steps_per_epoch=1)
  t = np.arange(25)
  ref = np.where(t < 4, 2.0 * t / 4, 2.0 * 0.5 * (1 + np.cos(
      np.pi * np.clip(t - 4, 0, 16) / 16)))
  np.testing.assert_allclose(_lrs(sched, 25), ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_lrs(optim.schedule({}, 0.3, 10, 1), 3), 0.3)
  with pytest.raises(ValueError, match="unknown schedule 'exp'"):
    optim.schedule({"schedule": "exp"}, 1.0, 10, 1)


def _params():
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {"img": {"w": f(3, 2)},
          "txt": {"embed_word": f(5, 2),
                  "encoder": {"layer_0": {"w": f(2, 2)},
                              "layer_7": {"w": f(2, 2)}}},
          "txt_proj": {"w": f(2, 2)}}


def _grads(seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(
      rng.normal(size=p.shape), jnp.float32), _params())


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def test_adamw_groups_and_lovt_freezing_against_float64_reference():
  cfg = {"optimizer": "adamw", "lr": 1e-2, "wd": 0.1,
         "groups": ({"name": "image", "regex": "^img", "lr": 3e-2},),
         "frozen": (r"^txt/embed_", r"^txt/encoder/layer_[0-5]/")}
  params = _params()
  opt = optim.Optimizer(cfg, params, total_steps=10, steps_per_epoch=5)
  labels = opt.labels
  assert labels["txt"]["embed_word"] == optim.FROZEN
  assert labels["txt"]["encoder"]["layer_0"]["w"] == optim.FROZEN
  assert labels["txt"]["encoder"]["layer_7"]["w"] == "default"
  assert labels["img"]["w"] == "image"
  state = opt.init(params)
  p = params
  ref = _np(params)
  m = jax.tree.map(np.zeros_like, ref)
  v = jax.tree.map(np.zeros_like, ref)
  for t in range(1, 3):
    g = _grads(t)
    updates, state = opt.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)
    gn = _np(g)

    def step(path, r, gg, mm, vv):
      lab = labels
      for k in path:
        lab = lab[k.key]
      if lab == optim.FROZEN:  # no update, no weight decay
        return r, mm, vv
      lr = 3e-2 if lab == "image" else 1e-2
      mm = 0.9 * mm + 0.1 * gg
      vv = 0.999 * vv + 0.001 * gg ** 2
      upd = (mm / (1 - 0.9 ** t)) / (np.sqrt(vv / (1 - 0.999 ** t)) + 1e-8)
      return r - lr * (upd + 0.1 * r), mm, vv

    out = jax.tree_util.tree_map_with_path(step, ref, gn, m, v)
    ref = jax.tree.map(lambda o: o[0], out, is_leaf=lambda x: isinstance(
        x, tuple))
    m = jax.tree.map(lambda o: o[1], out, is_leaf=lambda x: isinstance(
        x, tuple))
    v = jax.tree.map(lambda o: o[2], out, is_leaf=lambda x: isinstance(
        x, tuple))
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(p["txt"]["embed_word"],
                                params["txt"]["embed_word"])
  lrs = opt.learning_rates(jnp.asarray(0))
  assert set(lrs) == {"lr/default", "lr/image"}


def test_adam_weight_decay_is_coupled_l2_like_pytorch():
  params = _params()
  g = _grads(1)
  opt = optim.Optimizer({"optimizer": "adam", "lr": 1e-2, "wd": 0.5},
                        params, 10, 5)
  upd, _ = opt.update(g, opt.init(params), params)
  # PyTorch Adam adds wd * p to the gradient before the moments; first step
  # is then -lr * sign-like(g + wd p).
  for u, gg, pp in zip(jax.tree.leaves(upd), jax.tree.leaves(g),
                       jax.tree.leaves(params)):
    gg = np.asarray(gg, np.float64) + 0.5 * np.asarray(pp, np.float64)
    ref = -1e-2 * gg / (np.abs(gg) + 1e-8)
    np.testing.assert_allclose(u, ref, rtol=1e-4, atol=1e-7)


def test_per_group_global_norm_clipping():
  params = _params()
  g = jax.tree.map(lambda x: 10.0 * x, _grads(2))
  cfg = {"optimizer": "sgd", "momentum": 0.0, "lr": 1.0, "wd": 0.0,
         "groups": ({"name": "image", "regex": "^img", "clip_norm": 1.5},
                    {"name": "text", "regex": "^txt", "clip_norm": 0.5})}
  opt = optim.Optimizer(cfg, params, 10, 5)
  upd, _ = opt.update(g, opt.init(params), params)
  gn = _np(g)
  img_norm = np.sqrt((gn["img"]["w"] ** 2).sum())
  txt_leaves = [gn["txt"]["embed_word"], gn["txt"]["encoder"]["layer_0"]["w"],
                gn["txt"]["encoder"]["layer_7"]["w"], gn["txt_proj"]["w"]]
  txt_norm = np.sqrt(sum((x ** 2).sum() for x in txt_leaves))
  np.testing.assert_allclose(upd["img"]["w"],
                             -gn["img"]["w"] * 1.5 / img_norm, rtol=1e-5)
  np.testing.assert_allclose(upd["txt_proj"]["w"],
                             -gn["txt_proj"]["w"] * 0.5 / txt_norm, rtol=1e-5)


def test_update_groups_steps_only_the_named_groups():
  params = _params()
  cfg = {"optimizer": "adamw", "lr": 1e-2, "wd": 0.0,
         "groups": ({"name": "image", "regex": "^img"},
                    {"name": "text", "regex": "^txt"})}
  opt = optim.Optimizer(cfg, params, 10, 5)
  state = opt.init(params)
  upd, new_state = opt.update_groups(_grads(3), state, params, ("text",))
  np.testing.assert_array_equal(upd["img"]["w"], 0.0)
  assert np.abs(np.asarray(upd["txt"]["embed_word"])).min() > 0
  inner = new_state.inner_states
  old = state.inner_states
  for a, b in zip(jax.tree.leaves(inner["image"]),
                  jax.tree.leaves(old["image"])):
    np.testing.assert_array_equal(a, b)
  assert int(jax.tree.leaves(inner["text"])[0]) == 1  # Adam count advanced


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="unknown optimizer 'lamb'; expected "
                     "adamw, adam, sgd"):
    optim.Optimizer({"optimizer": "lamb", "lr": 1.0}, _params(), 10, 5)
