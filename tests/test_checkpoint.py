"""Orbax checkpoints: round trip onto another mesh, keep N, fall back."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jointcxr import checkpointing
from jointcxr import sharding


def _state(mesh, scale: float = 1.0, rows: int = 16):
  specs = {"params": {"w": P("fsdp", None), "b": P()},
           "step": P(), "rng": P()}
  shard = sharding.to_shardings(specs, mesh)
  values = {"params": {"w": scale * np.arange(rows * 4, dtype=np.float32)
                       .reshape(rows, 4),
                       "b": np.full((4,), scale, np.float32)},
            "step": np.int32(3), "rng": np.asarray(jax.random.key_data(
                jax.random.PRNGKey(7)))}
  return jax.tree.map(jax.device_put, values, shard)


def test_round_trip_onto_a_different_mesh(tmp_path):
  mesh = sharding.make_mesh([("data", 4), ("fsdp", 2)])
  state = _state(mesh)
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3, every=1)
  data = {"input": {"position": 24, "seed": 0}, "step": 3}
  assert ck.save(3, state, data)
  ck.close()
  # Restore replicated on a 1-D mesh: same values, the requested layout.
  other = sharding.make_mesh([("data", -1)])
  rep = NamedSharding(other, P())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=rep), state)
  ck = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  step, restored, rdata = ck.restore(abstract)
  assert step == 3 and rdata == data
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding == rep
  # And back onto the sharded layout.
  step, again, _ = ck.restore(checkpointing.abstract_like(state))
  assert again["params"]["w"].sharding.spec == P("fsdp", None)


def test_interval_force_and_keep(tmp_path):
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  ck = checkpointing.Checkpointer(str(tmp_path), keep=2, every=2,
                                  async_save=False)
  saved = [ck.save(s, _state(mesh, s), {"step": s}) for s in range(1, 6)]
  assert saved == [False, True, False, True, False]  # only due steps
  assert ck.save(5, _state(mesh, 5), {"step": 5}, force=True)
  assert ck.all_steps() == [4, 5]
  assert ck.restore(checkpointing.abstract_like(_state(mesh)))[0] == 5
  ck.close()


def test_unreadable_latest_falls_back_and_is_set_aside(tmp_path, caplog):
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3, every=1,
                                  async_save=False)
  for s in (1, 2):
    ck.save(s, _state(mesh, s), {"step": s})
  ck.close()
  for f in glob.glob(str(tmp_path / "2" / "state" / "**" / "*"),
                     recursive=True):
    if os.path.isfile(f):
      with open(f, "wb") as fh:
        fh.write(b"garbage")
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3, every=1,
                                  async_save=False)
  with caplog.at_level("WARNING"):
    step, state, data = ck.restore(checkpointing.abstract_like(
        _state(mesh)))
  assert step == 1 and data == {"step": 1}
  np.testing.assert_array_equal(state["params"]["b"], 1.0)
  assert any("checkpoint step 2 unreadable" in r.getMessage()
             for r in caplog.records)
  # The damaged step is kept for inspection but no longer in the way: the
  # resumed run can save step 2 again.
  assert ck.all_steps() == [1]
  assert glob.glob(str(tmp_path / "2.unreadable*"))
  assert ck.save(2, _state(mesh, 2), {"step": 2})
  assert ck.all_steps() == [1, 2]
  ck.close()


def test_checkpoint_of_another_model_is_a_one_line_error(tmp_path):
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  ck = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  ck.save(1, _state(mesh), {"step": 1}, force=True)
  ck.close()
  ck = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  with pytest.raises(checkpointing.CheckpointError) as e:
    ck.restore(checkpointing.abstract_like(_state(mesh, rows=8)))
  msg = str(e.value)
  assert msg.startswith(f"checkpoint {tmp_path}/1 does not match this "
                        "model: ")
  assert "\n" not in msg
  # Nothing was set aside: the checkpoint is fine, the model is not.
  assert ck.all_steps() == [1]
  wrong_tree = {"params": {"w": jnp.zeros((16, 4))}}
  with pytest.raises(checkpointing.CheckpointError, match="does not match"):
    ck.restore(wrong_tree)


def test_empty_directory_restores_nothing(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path / "none"), async_save=False)
  assert ck.restore({"x": jax.ShapeDtypeStruct((2,), np.float32)}) is None


def test_delete_after_drops_an_abandoned_future(tmp_path):
  # The best-by-validation directory after a crash: a run resumed at step 4
  # must not keep the best state of step 6 it is about to recompute.
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3, every=1,
                                  async_save=False)
  for s in (2, 4, 6):
    ck.save(s, _state(mesh, s), {"step": s})
  assert ck.delete_after(4) == [6]
  assert ck.all_steps() == [2, 4]
  assert ck.delete_after(4) == []
  assert ck.save(6, _state(mesh, 7), {"step": 6})
  _, state, _ = ck.restore(checkpointing.abstract_like(_state(mesh)))
  np.testing.assert_array_equal(state["params"]["b"], 7.0)
  ck.close()


def test_read_variables_skips_optimizer_state_and_damage(tmp_path):
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3, every=1,
                                  async_save=False)
  for s in (1, 2):
    state = dict(_state(mesh, s))
    state["opt_state"] = {"mu": jnp.ones((64,))}
    ck.save(s, state, {"step": s})
  ck.close()
  step, v = checkpointing.read_variables(str(tmp_path))
  assert step == 2 and set(v) == {"params"}  # no opt_state, no empty stats
  np.testing.assert_array_equal(v["params"]["w"], 2 * np.arange(
      64, dtype=np.float32).reshape(16, 4))
  assert checkpointing.read_variables(str(tmp_path), 1)[0] == 1
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"has no step 7 \(saved: \[1, 2\]\)"):
    checkpointing.read_variables(str(tmp_path), 7)
  for f in glob.glob(str(tmp_path / "2" / "state" / "**" / "*"),
                     recursive=True):
    if os.path.isfile(f):
      with open(f, "wb") as fh:
        fh.write(b"garbage")
  # Read-only: the damaged newest step is skipped, not moved aside.
  assert checkpointing.read_variables(str(tmp_path))[0] == 1
  assert os.path.isdir(tmp_path / "2")
  with pytest.raises(checkpointing.CheckpointError, match="holds no "
                     "checkpoint"):
    checkpointing.read_variables(str(tmp_path / "empty"))
