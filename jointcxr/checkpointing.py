"""Orbax checkpoints: async saves, keep N, restore onto any mesh, fall back.

A checkpoint holds the train state (params, batch_stats, optimizer state,
step, rng: `StandardSave`, restored against the abstract *sharded* state so
a run can resume on a different topology) and a JSON item with the input
pipeline position and host-side RNG state (`JsonSave`), which is what makes
resumption exact. If the latest checkpoint is unreadable (a crash during a
write, a truncated file), the previous ones are tried in turn with a clear
log line; a checkpoint of another model fails with a one-line error naming
the mismatch.
"""

import os
import time
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No usable checkpoint, or one that does not fit the model."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for (state, data) pairs."""

  def __init__(self, directory: str, *, keep: int = 3, every: int = 1000,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every = every
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=max(1, every), create=True,
            enable_async_checkpointing=async_save),
        item_names=("state", "data"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, data: dict, *, force: bool = False
           ) -> bool:
    """Saves if `step` is due (or forced); returns whether it saved."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
                             force=force)

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[int, Any, dict] | None:
    """Restores `step` (default: newest readable); None when there is none."""
    steps = [step] if step is not None else sorted(self.all_steps(),
                                                   reverse=True)
    errors = []
    for s in steps:
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
        if errors:
          logging.warning("resumed from step %d after skipping unreadable "
                          "checkpoint(s): %s", s, "; ".join(errors))
        return s, out["state"], out["data"]
      except (ValueError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "shape" in msg.lower() or "structure" in msg.lower() or (
            "tree" in msg.lower()):
          raise CheckpointError(
              f"checkpoint {self.directory}/{s} does not match this model: "
              f"{msg}") from None
        errors.append(f"step {s}: {type(e).__name__}: {msg}")
        logging.warning("checkpoint step %d unreadable (%s); trying an "
                        "older one", s, msg)
        self._quarantine(s)
      except Exception as e:  # orbax/tensorstore raise many types on damage
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        errors.append(f"step {s}: {type(e).__name__}: {msg}")
        logging.warning("checkpoint step %d unreadable (%s); trying an "
                        "older one", s, msg)
        self._quarantine(s)
    if errors:
      raise CheckpointError(f"no readable checkpoint in {self.directory}: "
                            + "; ".join(errors))
    return None

  def _quarantine(self, step: int) -> None:
    """Moves an unreadable step aside (never deletes it) so it can be redone."""
    src = os.path.join(self.directory, str(step))
    if jax.process_index() == 0 and os.path.isdir(src):
      dst_dir = self.directory + "_unreadable"
      os.makedirs(dst_dir, exist_ok=True)
      dst = os.path.join(dst_dir, f"{step}-{int(time.time())}")
      os.rename(src, dst)
      logging.warning("moved unreadable checkpoint %s to %s", src, dst)
    self.manager.reload()

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs with shardings, for restoring onto a mesh."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
