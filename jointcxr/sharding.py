"""Meshes and parameter shardings declared in the config (big_vision style).

`config.mesh` names the mesh axes and their sizes, -1 for "the rest", as
a string that `--config.mesh=...` can override:

    "data:-1"              every device on the data axis (the default)
    "data:-1,fsdp:4"       parameters sharded over groups of 4 devices
    "data:2,model:4"       model (tensor) parallelism over 4 devices

Meshes use Auto axes (`jax.sharding.Mesh`), which the GSPMD-style code here
expects (ENVIRONMENT.md G3). `config.sharding_rules` is an ordered list of
`REGEX=TACTIC` pairs separated by ";" (REGEX is searched in the parameter
path, "img/layer1_0/conv1/kernel"; the first match decides):

    ".*=replicate"                       the default
    ".*=fsdp(axis=fsdp)"                 FSDP over the fsdp axis
    "^txt/=fsdp(axis=fsdp);.*=replicate" FSDP for the text tower only

- "replicate": every device holds the whole array;
- "fsdp(axis=fsdp)" (or `fsdp`, `fsdp(axis=data)`): shard the largest
  dimension divisible by the axis size (arrays under 4096 elements are
  replicated: not worth the communication; so is everything when the mesh
  has no such axis);
- "logical": the model's logical axis annotations mapped through
  `config.logical_axis_rules` (e.g. [("mlp", "model"), ("heads", "model")]).

Both fields also accept a Python literal of pairs (`"[('data', -1),
('fsdp', 4)]"`, `"[('.*', 'fsdp(axis=fsdp)')]"`, e.g. for a regex that
contains ";") and, from Python, a list of pairs; `parse_mesh` and
`parse_rules` turn any of these into pairs or raise a one-line ValueError.

Optimizer-state leaves follow the parameter they mirror (their path ends
with the parameter's path). The batch is split over the `data` and `fsdp`
axes together (`batch_axes`); `model` axes see the whole micro-batch.
"""

import ast
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
TACTICS = ("replicate", "fsdp", "logical")
# REGEX=TACTIC: the tactic is the longest tail that is a whole tactic, so
# "=" may appear in the regex and in the tactic's arguments.
_RULE_RE = re.compile(r"(?s)(.*?)=\s*((?:replicate|logical|fsdp)\s*"
                      r"(?:\([^()]*\))?)\s*")


def _literal_pairs(text: str, what: str) -> list:
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"{what} {text!r}: not a Python literal of pairs"
                     ) from None
  if not isinstance(value, (list, tuple)):
    raise ValueError(f"{what} {text!r}: not a list of pairs")
  return list(value)


def parse_mesh(spec: Any) -> list[tuple[str, int]]:
  """`config.mesh` -> [(axis name, size), ...] (see the module docstring).

  Args:
    spec: "name:size,name:size", a Python literal of (name, size) pairs, or
      a sequence of such pairs.

  Returns:
    The (name, size) pairs; sizes are >= 1 or -1 ("the rest").

  Raises:
    ValueError: one line naming what is wrong.
  """
  shown = spec if isinstance(spec, str) else list(spec)
  if isinstance(spec, str):
    text = spec.strip()
    if text.startswith(("[", "(")):
      pairs = _literal_pairs(text, "mesh")
    else:
      pairs = []
      for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, size = part.partition(":")
        if not sep:
          raise ValueError(f"mesh {spec!r}: {part!r} is not name:size "
                           "(e.g. data:-1,fsdp:4)")
        pairs.append((name.strip(), size.strip()))
  else:
    pairs = list(spec)
  out = []
  for entry in pairs:
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
      raise ValueError(f"mesh {shown!r}: {entry!r} is not (name, size)")
    name, size = entry
    if not isinstance(name, str) or not name.isidentifier():
      raise ValueError(f"mesh {shown!r}: axis name {name!r} is not an "
                       "identifier")
    try:
      size = int(size)
      if isinstance(entry[1], float) or size == 0 or size < -1:
        raise ValueError
    except (TypeError, ValueError):
      raise ValueError(f"mesh {shown!r}: size {entry[1]!r} of axis "
                       f"{name!r} is not a positive integer or -1") from None
    out.append((name, size))
  if not out:
    raise ValueError(f"mesh {shown!r} has no axes")
  names = [n for n, _ in out]
  if len(set(names)) != len(names):
    raise ValueError(f"mesh {shown!r} names an axis twice")
  return out


def format_mesh(pairs: Sequence[tuple[str, int]]) -> str:
  """[("data", -1), ("fsdp", 4)] -> "data:-1,fsdp:4"."""
  return ",".join(f"{n}:{int(s)}" for n, s in parse_mesh(pairs))


def parse_rules(spec: Any) -> list[tuple[str, str]]:
  """`config.sharding_rules` -> [(regex, tactic), ...] (module docstring).

  Args:
    spec: "REGEX=TACTIC;REGEX=TACTIC", a Python literal of (regex, tactic)
      pairs, or a sequence of such pairs.

  Returns:
    The pairs, each regex compiled once to check it and each tactic
    checked by `parse_tactic`.

  Raises:
    ValueError: one line naming the bad rule.
  """
  literal = not isinstance(spec, str)
  if isinstance(spec, str):
    text = spec.strip()
    literal = text.startswith("[")
    if text.startswith("("):  # a tuple literal, or a regex such as "(a|b)/"
      try:
        literal = isinstance(ast.literal_eval(text), tuple)
      except (ValueError, SyntaxError):
        literal = False
    if literal:
      pairs = _literal_pairs(text, "sharding_rules")
    else:
      pairs = []
      for part in filter(None, (p.strip() for p in text.split(";"))):
        m = _RULE_RE.fullmatch(part)
        if m:
          pairs.append((m.group(1).strip(), m.group(2)))
        elif "=" in part:  # an unknown or malformed tactic, named below
          pairs.append(tuple(x.strip() for x in part.split("=", 1)))
        else:
          raise ValueError(
              f"sharding rule {part!r} is not REGEX=TACTIC (TACTIC: "
              "replicate, fsdp(axis=NAME) or logical; rules separated by ;)")
  else:
    pairs = list(spec)
  out = []
  for entry in pairs:
    if (not isinstance(entry, (list, tuple)) or len(entry) != 2
        or not all(isinstance(x, str) for x in entry)):
      raise ValueError(f"sharding rule {entry!r} is not (regex, tactic)")
    regex, tactic = entry
    shown = (f"{regex}={tactic}" if isinstance(spec, str) and not literal
             else tuple(entry))
    try:
      re.compile(regex)
    except re.error as e:
      raise ValueError(f"sharding rule {shown!r}: bad regex ({e})") from None
    try:
      parse_tactic(tactic)
    except ValueError as e:
      raise ValueError(f"sharding rule {shown!r}: {e}") from None
    out.append((regex, tactic.strip()))
  return out


def make_mesh(spec: Any,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a Mesh (Auto axes) from `config.mesh`.

  Args:
    spec: axis names and sizes ("data:-1,fsdp:4" or [(name, size), ...],
      see `parse_mesh`); one size may be -1 ("the rest").
    devices: devices to use (default: all, in `jax.devices()` order, which
      keeps each process's devices together along the first axis).

  Returns:
    The `jax.sharding.Mesh`.

  Raises:
    ValueError: a malformed spec, or sizes that do not fit the devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  pairs = parse_mesh(spec)
  spec = spec if isinstance(spec, str) else list(spec)
  names = [n for n, _ in pairs]
  sizes = [s for _, s in pairs]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {spec!r}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if len(devices) % known:
    raise ValueError(f"mesh {spec!r} does not fit {len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {spec!r} has {int(np.prod(sizes))} devices, "
                     f"have {len(devices)}")
  return Mesh(np.array(devices).reshape(sizes), tuple(names))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes the batch is split over (data, and fsdp when present)."""
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading dimension split over `batch_axes(mesh)`, the rest replicated."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def data_parallelism(mesh: Mesh) -> int:
  """Number of batch shards (product of the batch axes' sizes)."""
  return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def logical_rules(rules: Sequence[tuple[str, Any]], mesh: Mesh
                  ) -> list[tuple[str, Any]]:
  """`config.logical_axis_rules` restricted to the axes `mesh` has.

  Args:
    rules: (logical name, mesh axis | tuple of axes | None) pairs.
    mesh: the mesh.

  Returns:
    Rules for `nn.logical_axis_rules` naming only existing axes (a rule
    whose axes are all missing maps to None: replicated).
  """
  out = []
  for name, axes in rules:
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = tuple(a for a in axes if a in mesh.axis_names)
    out.append((name, kept[0] if len(kept) == 1 else (kept or None)))
  return out


def _path(key_path: Sequence[Any]) -> str:
  """"img/encoder/kernel" from a jax key path."""
  parts = []
  for k in key_path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(
        k, "idx", k)))))
  return "/".join(parts)


def parse_tactic(tactic: str) -> tuple[str, dict]:
  """"fsdp(axis='fsdp')" -> ("fsdp", {"axis": "fsdp"}).

  Raises:
    ValueError: malformed, or not replicate / fsdp / logical.
  """
  m = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", tactic)
  if not m:
    raise ValueError(f"bad sharding tactic {tactic!r}")
  kwargs = {}
  for part in filter(None, (p.strip() for p in (m.group(2) or "").split(
      ","))):
    if "=" not in part:
      raise ValueError(f"bad sharding tactic {tactic!r}: {part!r} is not "
                       "key=value")
    k, v = part.split("=", 1)
    kwargs[k.strip()] = v.strip().strip("'\"")
  name = m.group(1)
  if name not in TACTICS:
    raise ValueError(f"unknown sharding tactic {name!r}; expected "
                     "replicate, fsdp(axis=...) or logical")
  return name, kwargs


def _fsdp_spec(shape: Sequence[int], mesh: Mesh, axis: str,
               min_size: int = 2 ** 12) -> P:
  """Largest dimension divisible by the axis size; small arrays replicated."""
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


def _keep_mesh_axes(spec: P, mesh: Mesh) -> P:
  """Drops axis names the mesh does not have (e.g. "model" on a 1-D mesh)."""
  out = []
  for a in spec:
    if isinstance(a, (tuple, list)):
      kept = tuple(x for x in a if x in mesh.axis_names)
      out.append(kept[0] if len(kept) == 1 else (kept or None))
    else:
      out.append(a if a in mesh.axis_names else None)
  return P(*out)


def param_specs(abstract_params: Any, rules: Sequence[tuple[str, str]],
                mesh: Mesh, logical_rules: Sequence[tuple[str, Any]] = (),
                boxed_params: Any = None) -> Any:
  """PartitionSpecs for a (plain) parameter tree by ordered (regex, tactic).

  The first rule whose regex matches (`re.search`) a parameter's path
  ("img/conv_init/kernel") decides; unmatched parameters are replicated.

  Args:
    abstract_params: parameter tree (arrays or ShapeDtypeStructs, unboxed).
    rules: ordered (regex, tactic) pairs, or their string form (see the
      module docstring and `parse_rules`).
    mesh: the mesh.
    logical_rules: (logical name, mesh axes) pairs for "logical".
    boxed_params: the same tree with `nn.LogicallyPartitioned` boxes (from
      `init` before unboxing); needed by "logical".

  Returns:
    A tree of `PartitionSpec`s like `abstract_params`.

  Raises:
    ValueError: a bad tactic.
  """
  logical = {}
  if boxed_params is not None:
    specs = nn.get_partition_spec(boxed_params)
    mesh_specs = nn.logical_to_mesh(specs, list(logical_rules))
    for kp, s in jax.tree_util.tree_flatten_with_path(
        mesh_specs, is_leaf=lambda x: isinstance(x, P))[0]:
      logical[_path(kp)] = s
  compiled = [(re.compile(r), parse_tactic(t)) for r, t in parse_rules(
      rules)]

  def spec_for(kp, leaf):
    path = _path(kp)
    for rx, (name, kw) in compiled:
      if rx.search(path):
        if name == "replicate":
          return P()
        if name == "fsdp":
          return _fsdp_spec(leaf.shape, mesh, kw.get("axis", "fsdp"))
        return _keep_mesh_axes(logical.get(path, P()), mesh)
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, abstract_params)


def mirror_specs(tree: Any, param_spec_tree: Any,
                 params_like: Any = None) -> Any:
  """Specs for a tree (e.g. optimizer state) whose leaves mirror params.

  A leaf gets the spec of the parameter whose path is the longest suffix
  of its own path (at a "/" boundary: "opt/0/mu/img/kernel" mirrors
  "img/kernel") and, when `params_like` is given, whose shape it has;
  anything else (step counts, scalars) is replicated.

  Args:
    tree: the tree to shard (arrays or ShapeDtypeStructs).
    param_spec_tree: `param_specs` output.
    params_like: the parameter tree, to check shapes.

  Returns:
    A tree of `PartitionSpec`s like `tree`.
  """
  flat = jax.tree_util.tree_flatten_with_path(
      param_spec_tree, is_leaf=lambda x: isinstance(x, P))[0]
  by_path = {_path(kp): s for kp, s in flat}
  shapes = {}
  if params_like is not None:
    shapes = {_path(kp): tuple(x.shape) for kp, x in
              jax.tree_util.tree_flatten_with_path(params_like)[0]}

  def spec_for(kp, leaf):
    parts = _path(kp).split("/")
    shape = tuple(getattr(leaf, "shape", ()))
    for i in range(len(parts)):
      cand = "/".join(parts[i:])
      if cand in by_path and len(by_path[cand]) <= len(shape) and (
          cand not in shapes or shapes[cand] == shape):
        return by_path[cand]
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, tree)


def host_value(tree: Any) -> Any:
  """NumPy copy of a tree of (global) arrays, the whole value on every host.

  `jax.device_get` cannot fetch an array sharded over other processes'
  devices (parameters under FSDP across hosts); such leaves are
  all-gathered, so with several processes every process must call this at
  the same point (it is a collective). Replicated and process-local leaves
  are copied without communication.

  Args:
    tree: pytree of `jax.Array`s (or host arrays).

  Returns:
    The same tree of `np.ndarray`s.
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(one, tree)


def to_shardings(spec_tree: Any, mesh: Mesh) -> Any:
  """PartitionSpec tree -> NamedSharding tree on `mesh`."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), spec_tree,
                      is_leaf=lambda x: isinstance(x, P))
