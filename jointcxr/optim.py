"""Optimisers: optax AdamW/Adam/SGD in parameter groups, schedules, freezing.

Parameters are assigned to groups by ordered regexes on their path (e.g.
`img.*` vs the rest for JoImTeRNet's two optimisers; LoVT freezes
`txt/embed_.*` and `txt/encoder/layer_[0-5]/.*`). Every group has its own
optax chain (learning rate and schedule, weight decay, global-norm
clipping over the group's leaves), combined with `optax.multi_transform`;
frozen groups get `optax.set_to_zero()`. `update_groups` steps only some
groups (JoImTeRNet's MLM steps update the text optimizer alone).

Schedules: `constant`, `warmup_cosine`, `step` (x factor at given epochs,
StepLR), and `cosine_per_epoch` — LoVT's PyTorch CosineAnnealingLR with
T_max = one epoch and no restart, whose closed form is periodic with period
two epochs (METHODS.md §3.7; replicated as-is for parity).
"""

import math
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

FROZEN = "frozen"


def schedule(cfg: Mapping[str, Any], base_lr: float, total_steps: int,
             steps_per_epoch: int) -> Callable:
  """A learning-rate schedule (optimizer step -> lr) from the optim config.

  Args:
    cfg: `schedule` (constant | warmup_cosine | step | cosine_per_epoch)
      and its keys: warmup_steps, end_factor; step_epochs, step_factor;
      eta_min.
    base_lr: peak learning rate.
    total_steps: optimizer steps of the run (cosine decay length).
    steps_per_epoch: optimizer steps per epoch (StepLR boundaries, LoVT's
      T_max).

  Returns:
    A function of the step count.

  Raises:
    ValueError: an unknown schedule.
  """
  kind = cfg.get("schedule", "constant")
  warm = int(cfg.get("warmup_steps", 0))
  if kind == "constant":
    return optax.constant_schedule(base_lr)
  if kind == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, base_lr, max(warm, 0), max(total_steps, warm + 1),
        end_value=base_lr * float(cfg.get("end_factor", 0.0)))
  if kind == "step":
    bounds = {int(e) * steps_per_epoch: float(cfg.get("step_factor", 0.1))
              for e in cfg.get("step_epochs", ())}
    return optax.piecewise_constant_schedule(base_lr, bounds)
  if kind == "cosine_per_epoch":
    t_max = max(1, steps_per_epoch)
    eta_min = float(cfg.get("eta_min", 0.0))
    return lambda step: eta_min + (base_lr - eta_min) * 0.5 * (
        1.0 + jnp.cos(math.pi * step / t_max))
  raise ValueError(f"unknown schedule {kind!r}")


def _base(name: str, lr: Any, wd: float, cfg: Mapping[str, Any]
          ) -> optax.GradientTransformation:
  # AdamW decays decoupled (PyTorch AdamW); Adam and SGD add wd * p to the
  # gradient first (PyTorch's `weight_decay` of those optimisers).
  if name == "adamw":
    return optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                       eps=cfg.get("eps", 1e-8), weight_decay=wd)
  if name == "adam":
    return optax.chain(optax.add_decayed_weights(wd) if wd else
                       optax.identity(), optax.adam(
                           lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                           eps=cfg.get("eps", 1e-8)))
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(wd) if wd else
                       optax.identity(), optax.sgd(
                           lr, momentum=cfg.get("momentum", 0.9)))
  raise ValueError(f"unknown optimizer {name!r}; expected adamw, adam, sgd")


def _path(kp: Sequence[Any]) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in kp)


def group_labels(params: Any, groups: Sequence[Mapping[str, Any]],
                 frozen: Sequence[str]) -> Any:
  """Tree of group names: frozen patterns first, then groups, else 'default'.

  Args:
    params: the parameter tree (or its shapes).
    groups: ordered {"name", "regex", ...} dicts; the first match wins.
    frozen: regexes of frozen parameter paths ("txt/embed_word/embedding").

  Returns:
    A tree of group names like `params`.
  """
  frozen_rx = [re.compile(f) for f in frozen]
  group_rx = [(g["name"], re.compile(g["regex"])) for g in groups]

  def label(kp, _):
    path = _path(kp)
    if any(r.search(path) for r in frozen_rx):
      return FROZEN
    for name, r in group_rx:
      if r.search(path):
        return name
    return "default"

  return jax.tree_util.tree_map_with_path(label, params)


class Optimizer:
  """Grouped optax optimizer with partial (per-group) updates.

  Every group takes the top-level optim keys (optimizer, lr, wd, schedule,
  clip_norm, ...) overridden by its own dict; `clip_norm` clips the global
  norm of the group's gradients alone (JoImTeRNet clips per encoder).
  """

  def __init__(self, cfg: Mapping[str, Any], params_like: Any,
               total_steps: int, steps_per_epoch: int):
    """Builds the optax transformation.

    Args:
      cfg: the optim config section (as a dict).
      params_like: parameter tree (arrays or shapes) for the group labels.
      total_steps: optimizer steps of the run.
      steps_per_epoch: optimizer steps per epoch.
    """
    cfg = dict(cfg)
    self.labels = group_labels(params_like, cfg.get("groups", ()),
                               cfg.get("frozen", ()))
    names = sorted(set(jax.tree.leaves(self.labels)))
    self.group_cfg = {}
    self.txs = {}
    self.schedules = {}
    for name in names:
      if name == FROZEN:
        self.txs[name] = optax.set_to_zero()
        continue
      g = dict(cfg)
      g.update(next((dict(x) for x in cfg.get("groups", ()) if x["name"] ==
                     name), {}))
      sched = schedule(g, float(g["lr"]), total_steps, steps_per_epoch)
      chain = []
      if g.get("clip_norm"):
        chain.append(optax.clip_by_global_norm(float(g["clip_norm"])))
      chain.append(_base(g.get("optimizer", "adamw"),
                         sched, float(g.get("wd", 0.0)), g))
      self.txs[name] = optax.chain(*chain)
      self.schedules[name] = sched
    self.tx = optax.multi_transform(self.txs, self.labels)

  def init(self, params: Any) -> Any:
    """The optimizer state of `params`."""
    return self.tx.init(params)

  def update(self, grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
    """(updates, new state) of one step of every group."""
    return self.tx.update(grads, state, params)

  def update_groups(self, grads: Any, state: Any, params: Any,
                    groups: Sequence[str]) -> tuple[Any, Any]:
    """Steps only `groups`; other groups keep parameters and state.

    JoImTeRNet's MLM steps use this: they update the text optimizer and
    leave the image optimizer (its moments and step count) untouched.

    Args:
      grads: gradients of every parameter.
      state: the optimizer state.
      params: the parameters.
      groups: names of the groups to step.

    Returns:
      (updates, new state): zero updates and the old state elsewhere.
    """
    updates, new_state = self.tx.update(grads, state, params)
    keep = jax.tree.map(lambda lab: lab in groups, self.labels)
    updates = jax.tree.map(lambda u, k: u if k else jnp.zeros_like(u),
                           updates, keep)
    inner = dict(new_state.inner_states)
    for name in inner:
      if name not in groups:
        inner[name] = state.inner_states[name]
    return updates, new_state._replace(inner_states=inner)

  def learning_rates(self, step: Any) -> dict:
    """{"lr/<group>": learning rate at `step`} for logging."""
    return {f"lr/{n}": s(step) for n, s in self.schedules.items()}
