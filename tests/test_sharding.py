"""Meshes and rule-based parameter shardings on 8 fake CPU devices."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jointcxr import sharding
from test_accumulate import TinyTwoTower, make_batch


def test_make_mesh_sizes_and_auto_axes():
  m = sharding.make_mesh([("data", -1)])
  assert dict(m.shape) == {"data": 8}
  m = sharding.make_mesh([("data", 4), ("fsdp", -1)])
  assert dict(m.shape) == {"data": 4, "fsdp": 2}
  # GSPMD-style code needs Auto axes (ENVIRONMENT.md G3).
  assert all(t == AxisType.Auto for t in m.axis_types)
  assert list(m.devices.flat) == jax.devices()
  assert sharding.batch_axes(m) == ("data", "fsdp")
  assert sharding.data_parallelism(m) == 8
  m = sharding.make_mesh([("data", 2), ("model", 4)])
  assert sharding.batch_axes(m) == ("data",)
  assert sharding.data_parallelism(m) == 2
  assert sharding.batch_sharding(m).spec == P(("data",))


@pytest.mark.parametrize("spec,message", [
    ([("data", -1), ("model", -1)],
     "mesh [('data', -1), ('model', -1)]: at most one axis may have size -1"),
    ([("data", 3), ("model", -1)],
     "mesh [('data', 3), ('model', -1)] does not fit 8 devices"),
    ([("data", 2), ("model", 2)],
     "mesh [('data', 2), ('model', 2)] has 4 devices, have 8"),
])
def test_make_mesh_errors(spec, message):
  with pytest.raises(ValueError) as e:
    sharding.make_mesh(spec)
  assert str(e.value) == message


def _params():
  return {"img": {"kernel": jax.ShapeDtypeStruct((64, 128), np.float32),
                  "bias": jax.ShapeDtypeStruct((128,), np.float32),
                  "odd": jax.ShapeDtypeStruct((4097, 3), np.float32)},
          "txt": {"embed": jax.ShapeDtypeStruct((1000, 32), np.float32),
                  "tall": jax.ShapeDtypeStruct((2, 8192), np.float32)}}


def test_replicate_and_fsdp_tactics_in_rule_order():
  mesh = sharding.make_mesh([("data", 4), ("fsdp", 2)])
  specs = sharding.param_specs(_params(), [
      (r"^img/kernel$", "replicate"),  # first matching rule wins
      (r".*", "fsdp(axis='fsdp')")], mesh)
  assert specs["img"]["kernel"] == P()
  assert specs["img"]["bias"] == P()  # 128 elements: not worth sharding
  assert specs["img"]["odd"] == P()  # no dimension divisible by 2
  assert specs["txt"]["embed"] == P("fsdp", None)  # largest dim first
  assert specs["txt"]["tall"] == P(None, "fsdp")
  specs = sharding.param_specs(_params(), [(r"^txt/", "fsdp(axis=data)")],
                               mesh)
  assert specs["txt"]["embed"] == P("data", None)  # 1000 % 4 == 0
  assert specs["img"]["kernel"] == P()  # unmatched: replicated
  # An axis the mesh lacks replicates (the same config runs anywhere).
  specs = sharding.param_specs(_params(), [(".*", "fsdp")],
                               sharding.make_mesh([("data", -1)]))
  assert specs["txt"]["embed"] == P()


def test_logical_tactic_uses_model_annotations():
  mesh = sharding.make_mesh([("data", 4), ("model", 2)])
  model = TinyTwoTower()
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                            make_batch(2), train=False))
  params = nn.meta.unbox(boxed)["params"]
  rules = sharding.logical_rules(
      [("mlp", "model"), ("embed", ("fsdp",)), ("heads", ("data", "model"))],
      mesh)
  assert rules == [("mlp", "model"), ("embed", None),
                   ("heads", ("data", "model"))]
  specs = sharding.param_specs(params, [(".*", "logical")], mesh, rules,
                               boxed["params"])
  assert specs["img_in"]["kernel"] == P(None, "model")
  assert specs["img_out"]["kernel"] == P()  # not annotated
  rules = [("mlp", "model"), ("embed", "data")]
  specs = sharding.param_specs(params, [(".*", "logical")], mesh, rules,
                               boxed["params"])
  assert specs["img_in"]["kernel"] == P("data", "model")


def test_optimizer_state_mirrors_parameters():
  mesh = sharding.make_mesh([("data", 4), ("fsdp", 2)])
  params = _params()
  specs = sharding.param_specs(params, [(".*", "fsdp")], mesh)
  opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
  ospecs = sharding.mirror_specs(opt_state, specs, params)
  adam = ospecs[0]
  assert adam.mu["txt"]["embed"] == P("fsdp", None)
  assert adam.nu["txt"]["tall"] == P(None, "fsdp")
  assert adam.count == P()
  # The sharded state can really be placed on the mesh.
  shardings = sharding.to_shardings(ospecs, mesh)
  placed = jax.jit(optax.adamw(1e-3).init, out_shardings=shardings)(
      jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), params))
  assert placed[0].mu["txt"]["embed"].addressable_shards[0].data.shape == (
      500, 32)


@pytest.mark.parametrize("tactic,message", [
    ("shard_all", "sharding rule ('.*', 'shard_all'): unknown sharding "
     "tactic 'shard_all'; expected replicate, fsdp(axis=...) or logical"),
    ("fsdp(fsdp)", "sharding rule ('.*', 'fsdp(fsdp)'): bad sharding tactic "
     "'fsdp(fsdp)': 'fsdp' is not key=value"),
])
def test_bad_tactics(tactic, message):
  mesh = sharding.make_mesh([("data", -1)])
  with pytest.raises(ValueError) as e:
    sharding.param_specs(_params(), [(".*", tactic)], mesh)
  assert str(e.value) == message


# ----------------------------------------- the command-line string forms ---
@pytest.mark.parametrize("spec,pairs", [
    ("data:-1", [("data", -1)]),
    (" data : 2 , fsdp:4 ", [("data", 2), ("fsdp", 4)]),
    ("data:2,model:4", [("data", 2), ("model", 4)]),
    ('[("data", -1), ("fsdp", 4)]', [("data", -1), ("fsdp", 4)]),
    ([("data", 4), ("fsdp", 2)], [("data", 4), ("fsdp", 2)]),
    ([["data", -1]], [("data", -1)]),  # as config.json stores it
])
def test_parse_mesh(spec, pairs):
  assert sharding.parse_mesh(spec) == pairs
  assert sharding.parse_mesh(sharding.format_mesh(pairs)) == pairs


@pytest.mark.parametrize("spec,message", [
    ("data", "mesh 'data': 'data' is not name:size (e.g. data:-1,fsdp:4)"),
    ("data:x", "mesh 'data:x': size 'x' of axis 'data' is not a positive "
     "integer or -1"),
    ("data:0", "mesh 'data:0': size '0' of axis 'data' is not a positive "
     "integer or -1"),
    ("data:1.5", "mesh 'data:1.5': size '1.5' of axis 'data' is not a "
     "positive integer or -1"),
    ("da ta:8", "mesh 'da ta:8': axis name 'da ta' is not an identifier"),
    ("data:2,data:4", "mesh 'data:2,data:4' names an axis twice"),
    ("", "mesh '' has no axes"),
    ("[(", "mesh '[(': not a Python literal of pairs"),
])
def test_parse_mesh_errors(spec, message):
  with pytest.raises(ValueError) as e:
    sharding.parse_mesh(spec)
  assert str(e.value) == message


def test_make_mesh_from_the_string_form():
  m = sharding.make_mesh("data:-1,fsdp:4")
  assert dict(m.shape) == {"data": 2, "fsdp": 4}
  with pytest.raises(ValueError, match=r"^mesh 'data:3,fsdp:-1' does not "
                     "fit 8 devices$"):
    sharding.make_mesh("data:3,fsdp:-1")


@pytest.mark.parametrize("spec,pairs", [
    (".*=replicate", [(".*", "replicate")]),
    (".*=fsdp(axis=fsdp)", [(".*", "fsdp(axis=fsdp)")]),
    ("^txt/=fsdp(axis=fsdp); .*=replicate",
     [("^txt/", "fsdp(axis=fsdp)"), (".*", "replicate")]),
    ("(img|txt)/kernel=logical", [("(img|txt)/kernel", "logical")]),
    ("a=b=fsdp", [("a=b", "fsdp")]),  # "=" may appear in the regex
    ('[(".*", "fsdp(axis=\'fsdp\')")]', [(".*", "fsdp(axis='fsdp')")]),
    ("", []),
])
def test_parse_rules(spec, pairs):
  assert sharding.parse_rules(spec) == pairs


@pytest.mark.parametrize("spec,message", [
    ("replicate", "sharding rule 'replicate' is not REGEX=TACTIC (TACTIC: "
     "replicate, fsdp(axis=NAME) or logical; rules separated by ;)"),
    (".*=shard_all", "sharding rule '.*=shard_all': unknown sharding tactic "
     "'shard_all'; expected replicate, fsdp(axis=...) or logical"),
    ("(=fsdp", "sharding rule '(=fsdp': bad regex (missing ), unterminated "
     "subpattern at position 0)"),
    ("[1]", "sharding rule 1 is not (regex, tactic)"),
])
def test_parse_rules_errors(spec, message):
  with pytest.raises(ValueError) as e:
    sharding.parse_rules(spec)
  assert str(e.value) == message


def test_string_rules_give_the_same_specs_as_pairs():
  mesh = sharding.make_mesh("data:4,fsdp:2")
  assert sharding.param_specs(
      _params(), "^img/kernel$=replicate;.*=fsdp(axis=fsdp)", mesh) == (
          sharding.param_specs(_params(), [(r"^img/kernel$", "replicate"),
                                           (".*", "fsdp(axis='fsdp')")],
                               mesh))
