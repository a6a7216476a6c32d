"""Orbax checkpoints: async saves, keep N, restore onto any mesh, fall back.

A checkpoint `<dir>/<step>/` holds two items:

- `state`: the train state (params, batch_stats, optimizer state, step,
  rng, NaN counters) through `StandardSave`, restored against the abstract
  *sharded* state of the current run, so a run can resume on a different
  topology (orbax reshards on read);
- `data`: JSON with the input-pipeline position and everything else on the
  host that the next steps depend on (`JsonSave`), which is what makes a
  resumed run continue exactly.

Saves are asynchronous (the step loop continues while tensorstore writes);
orbax commits a step directory atomically, so a crash mid-write leaves no
half checkpoint that looks complete. A checkpoint that is nevertheless
unreadable (a truncated or overwritten file) is moved aside to
`<step>.unreadable-<n>` and the previous one is tried, with a warning line;
a checkpoint of another model (different tree or shapes) is a one-line
`CheckpointError` naming the mismatch, never a silent partial load.

With validation on, the trainer keeps a second directory, `BEST_DIR`, with
the single best state by the validation metric (params, batch_stats and
step only); `jointcxr.loading.load_workdir(w, "best")` loads it.
"""

import os
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp


# Sibling of a workdir's `checkpoints/` holding the best state by the
# validation metric (params, batch_stats, step; see jointcxr.train).
BEST_DIR = "checkpoints_best"


class CheckpointError(RuntimeError):
  """No usable checkpoint, or one that does not fit the model."""


# Substrings of orbax/tensorstore errors that mean "wrong model", as opposed
# to "damaged files".
_MISMATCH = ("shape", "structure", "tree", "does not match", "mismatch",
             "missing", "unexpected key")


def _first_line(e: BaseException) -> str:
  """One line from an orbax error: the first sentence, plus the keys a
  tree-structure mismatch lists on the following lines."""
  lines = str(e).strip().splitlines()
  if not lines:
    return type(e).__name__
  first = lines[0].split(". ")[0].rstrip(".")
  if first.endswith(":"):
    keys = [ln.rstrip(":") for ln in lines[1:]
            if ln.endswith(":") and not ln.startswith(" ")]
    more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
    first = f"{first} {', '.join(keys[:5])}{more}".rstrip(": ")
  return first


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for (state, data) pairs."""

  def __init__(self, directory: str, *, keep: int = 3, every: int = 1000,
               async_save: bool = True):
    """Opens (or creates) a checkpoint directory.

    Args:
      directory: where step directories live.
      keep: checkpoints kept (oldest deleted first).
      every: `save` writes steps divisible by this (or forced ones).
      async_save: write in the background (`wait` / `close` to finish).
    """
    self.directory = os.path.abspath(directory)
    self.every = max(1, int(every))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=async_save),
        item_names=("state", "data"))

  def all_steps(self) -> list[int]:
    """Saved steps, oldest first."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, data: dict, *, force: bool = False
           ) -> bool:
    """Saves if `step` is due (a multiple of `every`) or forced.

    Args:
      step: the step number (the directory name).
      state: pytree of global jax.Arrays (every process calls `save`).
      data: JSON-serialisable dict.
      force: save even when the step is not due.

    Returns:
      Whether a save was started (False when not due or already saved).
    """
    if not (force or step % self.every == 0) or step in self.all_steps():
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
                             force=True)

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[int, Any, dict] | None:
    """Restores `step` (default: the newest readable one).

    Args:
      abstract_state: tree of `jax.ShapeDtypeStruct`s with shardings (the
        layout to restore into).
      step: a specific step; None tries the newest first, then older ones.

    Returns:
      (step, state, data), or None when the directory has no checkpoint.

    Raises:
      CheckpointError: the checkpoint belongs to another model, or none is
        readable.
    """
    steps = [step] if step is not None else sorted(self.all_steps(),
                                                   reverse=True)
    errors = []
    for s in steps:
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
      except Exception as e:  # orbax/tensorstore raise many types on damage
        msg = _first_line(e)
        if any(m in msg.lower() for m in _MISMATCH) and not isinstance(
            e, (OSError,)):
          raise CheckpointError(
              f"checkpoint {self.directory}/{s} does not match this model: "
              f"{msg}") from None
        errors.append(f"step {s}: {type(e).__name__}: {msg}")
        logging.warning("checkpoint step %d unreadable (%s: %s); trying an "
                        "older one", s, type(e).__name__, msg)
        continue
      if errors:
        logging.warning("resumed from step %d after setting aside "
                        "unreadable checkpoint(s): %s", s, "; ".join(errors))
        self._set_aside([int(e.split()[1].rstrip(":")) for e in errors])
      return s, out["state"], out["data"]
    if errors:
      raise CheckpointError(f"no readable checkpoint in {self.directory}: "
                            + "; ".join(errors))
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged step directories so the run can save them again."""
    if jax.process_index() == 0:
      for s in steps:
        src = os.path.join(self.directory, str(s))
        n = 0
        while os.path.exists(f"{src}.unreadable-{n}"):
          n += 1
        if os.path.isdir(src):
          os.rename(src, f"{src}.unreadable-{n}")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoint_set_aside")
    self.manager.reload()

  def delete_after(self, step: int) -> list[int]:
    """Deletes saved steps newer than `step`; returns them.

    A run resumed at `step` recomputes what came after it, so newer
    checkpoints (the best-by-validation ones of `BEST_DIR`) belong to an
    abandoned future and would otherwise outrank the recomputed ones.
    """
    gone = [s for s in self.all_steps() if s > step]
    for s in gone:
      self.manager.delete(s)
    return gone

  def reached_preemption(self, step: int) -> bool:
    """Whether a multi-host preemption notice asks to save at `step`."""
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending async saves are committed."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def read_variables(directory: str, step: int | None = None
                   ) -> tuple[int, dict]:
  """The model variables of a saved state, for evaluation and export.

  Only `params` and `batch_stats` are read (`partial_restore`: the
  optimizer state, often 2x the parameters, stays on disk), as saved, onto
  this process's first device. Read-only: an unreadable step is skipped
  with a warning (the newest readable one is used), never moved aside.

  Args:
    directory: a checkpoint directory (`W/checkpoints` or `W/BEST_DIR`).
    step: a specific step; None for the newest readable one.

  Returns:
    (step, {"params": ..., "batch_stats": ...}); "batch_stats" only when
    the model has any.

  Raises:
    CheckpointError: no checkpoint, the step is absent, or none readable.
  """
  mngr = ocp.CheckpointManager(
      os.path.abspath(directory),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "data": ocp.JsonCheckpointHandler()},
      # Not orbax's read_only (it warns on every open); this manager just
      # never saves or deletes.
      options=ocp.CheckpointManagerOptions(create=False))
  saved = sorted(mngr.all_steps(), reverse=True)
  if not saved:
    raise CheckpointError(f"{directory} holds no checkpoint")
  if step is not None and step not in saved:
    raise CheckpointError(f"{directory} has no step {step} (saved: "
                          f"{sorted(saved)})")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  errors = []
  for s in [step] if step is not None else saved:
    try:
      tree = mngr.item_metadata(s)["state"]
      tree = getattr(tree, "tree", tree)
      want = {k: tree[k] for k in ("params", "batch_stats")
              if tree.get(k)}
      abstract = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
          want)
      out = mngr.restore(s, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              item=abstract, partial_restore=True,
              restore_args=jax.tree.map(
                  lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding),
                  abstract))))["state"]
    except Exception as e:  # orbax/tensorstore raise many types on damage
      errors.append(f"step {s}: {type(e).__name__}: {_first_line(e)}")
      logging.warning("checkpoint %s/%d unreadable (%s); trying an older "
                      "one", directory, s, errors[-1])
      continue
    return s, dict(out)
  raise CheckpointError(f"no readable checkpoint in {directory}: "
                        + "; ".join(errors))


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs with shardings, for restoring onto a mesh.

  Args:
    tree: pytree of arrays (e.g. the freshly initialised state).

  Returns:
    The same tree of `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`.
  """
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
