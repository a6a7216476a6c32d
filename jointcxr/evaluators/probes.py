"""Shared machinery of the localized probes (LoVT's evaluation framework).

A probe = the pretrained image tower (frozen or fine-tuned) + a task head,
trained with Adam on a label fraction of a localized set. The learning
rate is chosen on the validation split from a small grid (one run per
candidate), then `seeds` runs with the best rate give mean, population std
(as the LoVT tables) and a 95% t-interval of the test metric. Model
selection inside a run is by the validation metric (early stopping with
patience). Fine-tuning keeps the encoder frozen for the first
`warmup_frozen_steps` steps, as LoVT does.
"""

import dataclasses
import importlib
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jointcxr.evaluators import localized_metrics


def image_tower(model_config, variables: dict | None, seed: int = 0,
                image_size: int = 224) -> tuple[nn.Module, dict]:
  """The image tower module and its variables (random init if None)."""
  m = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(
      model_config)
  module = importlib.import_module(f"jointcxr.models.{m['image_model']}")
  tower = module.Model(**dict(m["image"]))
  if variables is None:
    v = tower.init(jax.random.PRNGKey(seed), jnp.zeros((1, image_size,
                                                        image_size, 1)))
    return tower, nn.meta.unbox(v)
  out = {"params": variables["params"]["img"]}
  if "batch_stats" in variables and "img" in variables["batch_stats"]:
    out["batch_stats"] = variables["batch_stats"]["img"]
  return tower, out


class Probe(nn.Module):
  """Tower + head; `frozen` stops gradients and keeps BN in eval mode."""
  tower: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, x, *, train: bool, tune_encoder: bool):
    feats = self.tower(x, train=train and tune_encoder)
    if not tune_encoder:
      feats = jax.lax.stop_gradient(feats)
    return self.head(feats, x.shape[1:3], train=train)


@dataclasses.dataclass
class Task:
  """One probe training problem (arrays already at the probe resolution)."""
  train_x: np.ndarray
  train_y: Any
  val_x: np.ndarray
  val_y: Any
  test_x: np.ndarray
  test_y: Any
  loss_fn: Callable          # (outputs, batch_targets) -> scalar
  targets_fn: Callable       # (y, indices, flip) -> batch targets (numpy)
  evaluate_fn: Callable      # (predict_fn, x, y) -> metric (higher better)
  head: nn.Module


def _batches(n, bs, rng):
  idx = rng.permutation(n)
  for s in range(0, n - bs + 1 if n >= bs else 1, bs):
    yield idx[s:s + bs]


def _compiled(task: Task, tower: nn.Module, mode: str, mean: float,
              std: float) -> dict:
  """Jitted step/predict per (task, tower, mode): reused across lr and seeds."""
  key = (id(tower), mode)
  cache = task.__dict__.setdefault("_cache", {})
  if key in cache:
    return cache[key]
  probe = Probe(tower, task.head)
  norm = lambda x: (jnp.asarray(x, jnp.float32) / 255.0 - mean) / std

  def make_tx(lr):
    head = optax.adam(lr)
    enc = optax.adam(lr) if mode == "finetune" else optax.set_to_zero()
    return head, enc

  def loss(p, bs, x, t, tune):
    out, mut = probe.apply({"params": p, "batch_stats": bs}, x, train=True,
                           tune_encoder=tune, mutable=["batch_stats"])
    return task.loss_fn(out, t), mut["batch_stats"]

  def step_fn(p, bs, o, lr, x, t, tune):
    # Before the encoder is tuned its gradient is zero (stop_gradient), so
    # Adam's moments stay zero and the tower does not move; `train_probe`
    # resets its state when tuning starts.
    (l, new_bs), g = jax.value_and_grad(loss, has_aux=True)(p, bs, x, t,
                                                           tune)
    head_tx, enc_tx = make_tx(lr)
    uh, oh = head_tx.update(g["head"], o["head"], p["head"])
    ue, oe = enc_tx.update(g["tower"], o["tower"], p["tower"])
    p = {"head": optax.apply_updates(p["head"], uh),
         "tower": optax.apply_updates(p["tower"], ue)}
    return p, new_bs, {"head": oh, "tower": oe}, l

  cache[key] = {
      "probe": probe, "norm": norm, "make_tx": make_tx,
      "step": jax.jit(step_fn, static_argnums=(6,)),
      "predict": jax.jit(lambda p, bs, x: probe.apply(
          {"params": p, "batch_stats": bs}, norm(x), train=False,
          tune_encoder=False))}
  return cache[key]


def _init_head(head: nn.Module, tower: nn.Module, tower_vars: dict,
               x: jax.Array, seed: int) -> dict:
  """A new head's variables for the tower's feature shapes.

  Only the head is initialised: initialising the whole probe sampled a
  random tower just to throw it away (on CPU its samplers' compilation
  cost more than a tiny probe's training).
  """
  shapes = jax.eval_shape(lambda v, x: tower.apply(v, x, train=False),
                          tower_vars, x)
  feats = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 shapes)
  return nn.meta.unbox(head.init(jax.random.PRNGKey(seed), feats,
                                 x.shape[1:3], train=False))


def train_probe(task: Task, tower: nn.Module, tower_vars: dict, *, lr: float,
                seed: int, mode: str, epochs: int, batch_size: int,
                warmup_frozen_steps: int = 100, patience: int = 10,
                eval_every_epochs: int = 1, mean: float = 0.5,
                std: float = 0.5,
                on_step: Callable[[int, dict, dict], None] | None = None
                ) -> tuple[float, float, Callable]:
  """Trains one probe; returns (best val metric, its test metric, predict).

  `on_step(step, params, batch_stats)`, if given, sees the variables after
  every optimizer step (`params["tower"]` is the encoder), for tests and
  debugging.
  """
  c = _compiled(task, tower, mode, mean, std)
  norm = c["norm"]
  head_vars = _init_head(task.head, tower, tower_vars,
                         norm(task.train_x[:1]), seed)
  # The pretrained (or baseline) tower with a new head.
  params = {"head": head_vars["params"], "tower": tower_vars["params"]}
  stats = {}
  if "batch_stats" in head_vars:
    stats["head"] = head_vars["batch_stats"]
  if "batch_stats" in tower_vars:
    stats["tower"] = tower_vars["batch_stats"]
  head_tx, enc_tx = c["make_tx"](lr)
  opt_state = {"head": head_tx.init(params["head"]),
               "tower": enc_tx.init(params["tower"])}
  lr = jnp.asarray(lr, jnp.float32)

  def predict_with(p, bs):
    return lambda x: jax.device_get(c["predict"](p, bs, x))

  nrng = np.random.default_rng(seed)
  best = (-math.inf, None)
  bad, n_steps = 0, 0
  bs_eff = min(batch_size, len(task.train_x))
  for epoch in range(epochs):
    for idx in _batches(len(task.train_x), bs_eff, nrng):
      flip = nrng.random() < 0.5
      x = task.train_x[idx]
      x = x[:, :, ::-1] if flip else x
      t = task.targets_fn(task.train_y, idx, flip)
      tune = mode == "finetune" and n_steps >= warmup_frozen_steps
      if tune and n_steps == warmup_frozen_steps:
        # The encoder's Adam starts here, as in PyTorch where frozen
        # parameters (no gradient) are skipped by the optimizer: moments
        # and step count kept through the frozen steps would bias-correct
        # the first real gradients by the wrong count (0.64 lr after 2
        # frozen steps, up to ~2x lr after 100).
        opt_state["tower"] = enc_tx.init(params["tower"])
      params, stats, opt_state, _ = c["step"](params, stats, opt_state, lr,
                                              norm(x), t, bool(tune))
      if on_step is not None:
        on_step(n_steps, params, stats)
      n_steps += 1
    if (epoch + 1) % eval_every_epochs and epoch + 1 != epochs:
      continue
    val = task.evaluate_fn(predict_with(params, stats), task.val_x,
                           task.val_y)
    if not math.isnan(val) and val > best[0]:
      best, bad = (val, (params, stats)), 0
    else:
      bad += 1
      if bad >= patience:
        break
  p, s = best[1] if best[1] is not None else (params, stats)
  predict = predict_with(p, s)
  test = task.evaluate_fn(predict, task.test_x, task.test_y)
  return best[0], test, predict


def run_protocol(task: Task, tower: nn.Module, tower_vars: dict, *,
                 lr_grid, seeds: int, mode: str, epochs: int,
                 batch_size: int, warmup_frozen_steps: int = 100,
                 patience: int = 10, mean: float = 0.5, std: float = 0.5
                 ) -> dict:
  """LR on validation (one run each), then `seeds` runs: mean/std/CI.

  The runs use seeds 0 .. seeds-1 at the chosen rate; the grid's seed-0 run
  at that rate counts as the first.
  """
  kw = dict(mode=mode, epochs=epochs, batch_size=batch_size,
            warmup_frozen_steps=warmup_frozen_steps, patience=patience,
            mean=mean, std=std)
  grid = {lr: train_probe(task, tower, tower_vars, lr=lr, seed=0, **kw)
          for lr in lr_grid}
  best_lr = max(grid, key=lambda k: (-1e9 if math.isnan(grid[k][0])
                                     else grid[k][0]))
  # Seed 0 at the best rate is the grid's run itself (same seed, same
  # data order): reused, not trained again.
  first = grid.pop(best_lr)
  del grid
  tests = []
  predict = None
  for s in range(seeds):
    _, t, pr = first if s == 0 else train_probe(
        task, tower, tower_vars, lr=best_lr, seed=s, **kw)
    tests.append(t)
    predict = predict or pr
  stats = localized_metrics.mean_std_ci(tests)
  return {"mean": stats["mean"], "std": stats["std"],
          "ci95_low": stats["ci95"][0], "ci95_high": stats["ci95"][1],
          "best_lr": best_lr, "runs": tests, "predict": predict}
