"""Meshes and parameter shardings declared in the config (big_vision style).

`config.mesh` is a list of (axis name, size) with -1 for "the rest" (default
[("data", -1)]); meshes use Auto axes (`jax.sharding.Mesh`), which the
GSPMD-style code here expects (ENVIRONMENT.md G3). `config.sharding_rules`
is an ordered list of (regex on the parameter path, tactic):

- "replicate": every device holds the whole array;
- "fsdp(axis='fsdp')" (or `fsdp`, `fsdp(axis='data')`): shard the largest
  dimension divisible by the axis size (arrays under `min_size` elements are
  replicated: not worth the communication);
- "logical": the model's logical axis annotations mapped through
  `config.logical_axis_rules` (e.g. [("mlp", "model"), ("heads", "model")]).

Optimizer-state leaves follow the parameter they mirror (their path ends
with the parameter's path).
"""

import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(spec: Sequence[tuple[str, int]], devices=None) -> Mesh:
  """Builds a Mesh from [(name, size), ...]; one size may be -1."""
  devices = list(jax.devices() if devices is None else devices)
  names = [n for n, _ in spec]
  sizes = [int(s) for _, s in spec]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {spec}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if len(devices) % known:
    raise ValueError(f"mesh {spec} does not fit {len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {spec} has {int(np.prod(sizes))} devices, "
                     f"have {len(devices)}")
  return Mesh(np.array(devices).reshape(sizes), tuple(names))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes the batch is split over (data, and fsdp when present)."""
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(mesh)))


def _path(key_path) -> str:
  parts = []
  for k in key_path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(
        k, "idx", k)))))
  return "/".join(parts)


def parse_tactic(tactic: str) -> tuple[str, dict]:
  m = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", tactic)
  if not m:
    raise ValueError(f"bad sharding tactic {tactic!r}")
  kwargs = {}
  for part in filter(None, (p.strip() for p in (m.group(2) or "").split(
      ","))):
    k, v = part.split("=")
    kwargs[k.strip()] = v.strip().strip("'\"")
  name = m.group(1)
  if name not in ("replicate", "fsdp", "logical"):
    raise ValueError(f"unknown sharding tactic {name!r}; expected "
                     "replicate, fsdp(axis=...) or logical")
  return name, kwargs


def _fsdp_spec(shape, mesh, axis, min_size=2 ** 12) -> P:
  if axis not in mesh.axis_names or int(np.prod(shape)) < min_size:
    return P()
  n = mesh.shape[axis]
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % n == 0:
      spec = [None] * len(shape)
      spec[d] = axis
      return P(*spec)
  return P()


def param_specs(abstract_params, rules: Sequence[tuple[str, str]],
                mesh: Mesh, logical_rules: Sequence[tuple[str, Any]] = (),
                boxed_params=None) -> Any:
  """PartitionSpecs for a (plain) parameter tree by the ordered rules."""
  logical = {}
  if boxed_params is not None:
    specs = nn.get_partition_spec(boxed_params)
    mesh_specs = nn.logical_to_mesh(specs, list(logical_rules))
    for kp, s in jax.tree_util.tree_flatten_with_path(
        mesh_specs, is_leaf=lambda x: isinstance(x, P))[0]:
      logical[_path(kp)] = s
  compiled = [(re.compile(r), parse_tactic(t)) for r, t in rules]

  def spec_for(kp, leaf):
    path = _path(kp)
    for rx, (name, kw) in compiled:
      if rx.search(path):
        if name == "replicate":
          return P()
        if name == "fsdp":
          return _fsdp_spec(leaf.shape, mesh, kw.get("axis", "fsdp"))
        s = logical.get(path, P())
        return P(*[a if a in mesh.axis_names else None for a in s])
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, abstract_params)


def mirror_specs(tree, param_spec_tree) -> Any:
  """Specs for a tree (e.g. optimizer state) whose leaves mirror params."""
  by_path = {}
  for kp, s in jax.tree_util.tree_flatten_with_path(
      param_spec_tree, is_leaf=lambda x: isinstance(x, P))[0]:
    by_path[_path(kp)] = s

  def spec_for(kp, leaf):
    path = _path(kp)
    for ppath, s in by_path.items():
      if path.endswith(ppath) and len(s) <= len(getattr(leaf, "shape", ())):
        return s
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, tree)


def to_shardings(spec_tree, mesh: Mesh):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), spec_tree,
                      is_leaf=lambda x: isinstance(x, P))
