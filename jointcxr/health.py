"""Training health on the host: the stuck-at-chance warning, early stopping.

Both are small state machines over values the trainer already logs, kept
as plain JSON in every checkpoint's `data` item, so a resumed run decides
exactly what the uninterrupted run decides (the values come out of the
jitted steps replicated, so every process decides the same).

**Stuck at chance.** With B candidates and no information in the
embeddings, every InfoNCE direction is -log(1/B) = ln(B). The trainer logs
the global contrastive loss divided by ln(B) (`loss/global_over_lnB`,
objectives.py); `stuck_at_chance` says whether the mean of the last
`window` logged values after the warm-up is still >= 1 - `tol` (chance is
a floor for uninformative embeddings, see there), and `ChanceMonitor`
turns that into one clear warning per run (repeated at the end of
training if the run is still there).

**Early stopping** (LoVT: on `val/total_loss`, patience 10 validations,
min_delta 1e-5): `EarlyStopping.update` records each validation value,
whether it improved on the best by more than `min_delta`, and stops after
`patience` validations without improvement.
"""

import dataclasses
import math
from typing import Any, Sequence


def stuck_at_chance(history: Sequence[Sequence[float]], *, after_step: int,
                    window: int, tol: float) -> bool:
  """Whether the loss has stayed at chance level after the warm-up.

  Chance is a floor, not a point: for embeddings that carry no information
  about which text pairs with which image (the positive's score is then
  exchangeable with the negatives'), E[loss] >= ln(B), because a
  logsumexp over B scores is at least their mean plus ln(B); equality
  holds only when all scores are equal (collapse). So the run is "at
  chance" when the loss has not gone below (1 - tol) ln(B): within `tol`
  of ln(B), or above it. The window's mean is judged, not each value: a
  step's loss still fluctuates with the batch (at B = 8 by several percent
  of ln(B)), while a learning run's mean drops below the band and stays.

  Args:
    history: `(step, loss / ln(B))` pairs in logging order.
    after_step: only values logged at steps > this count (the warm-up).
    window: how many of the latest such values are averaged.
    tol: relative band: a mean ratio >= 1 - tol is "at chance" (a NaN in
      the window never is).

  Returns:
    True when at least `window` values were logged after `after_step` and
    the mean of the last `window` of them is >= 1 - tol.
  """
  recent = [float(r) for s, r in history if s > after_step][-window:]
  return len(recent) >= window and sum(recent) / len(recent) >= 1.0 - tol


def chance_message(history: Sequence[Sequence[float]], *, window: int,
                   tol: float, batch_size: int) -> str:
  """The warning text for a run `stuck_at_chance` flagged (with numbers)."""
  recent = list(history)[-window:]
  first, last = int(recent[0][0]), int(recent[-1][0])
  ratios = [float(r) for _, r in recent]
  ln_b = math.log(batch_size)
  return (
      f"training health: the global contrastive loss has stayed within "
      f"{100 * tol:.0f}% of ln(B) = ln({batch_size}) = {ln_b:.3f} or above "
      f"it over the last {len(recent)} logged values (steps {first}-{last}; "
      f"loss/ln(B) mean {sum(ratios) / len(ratios):.4f}, range "
      f"{min(ratios):.4f}-{max(ratios):.4f}; loss now "
      f"{ratios[-1] * ln_b:.4f}): that is chance level, what embeddings "
      f"that carry nothing about which report goes with which image score; "
      f"the model is not learning (often: collapsed, near-constant "
      f"embeddings; compare sim/pos with sim/neg and health/*_eff_rank). "
      f"Check the augmentation strength (input.image_aug), the learning "
      f"rate and its warm-up (optim.lr, optim.warmup_steps) and the text "
      f"mode (input.text_aug, the tokenizer).")


@dataclasses.dataclass
class ChanceMonitor:
  """Watches `loss/global_over_lnB` at log steps; warns once per run.

  Attributes:
    after_step: warm-up steps not judged.
    window: consecutive logged values that must be at chance.
    tol: relative band around ln(B).
    history: the latest `window` `(step, ratio)` pairs logged after the
      warm-up (JSON in checkpoints).
    warned: the step of the warning, or -1.
  """
  after_step: int
  window: int
  tol: float
  history: list = dataclasses.field(default_factory=list)
  warned: int = -1

  def observe(self, step: int, ratio: float | None) -> bool:
    """Records one logged value; True when the run is at chance now."""
    if ratio is None or step <= self.after_step:
      return False
    self.history = (self.history + [[int(step), float(ratio)]])[
        -self.window:]
    return stuck_at_chance(self.history, after_step=self.after_step,
                           window=self.window, tol=self.tol)

  def stuck(self) -> bool:
    """Whether the latest logged values are at chance."""
    return stuck_at_chance(self.history, after_step=self.after_step,
                           window=self.window, tol=self.tol)

  def state(self) -> dict:
    """JSON-serialisable state (for the checkpoint's `data` item)."""
    return {"history": [list(h) for h in self.history],
            "warned": self.warned}

  def restore(self, state: dict | None) -> None:
    """Loads `state()` output (None: nothing saved, a fresh monitor)."""
    if state:
      self.history = [list(h) for h in state.get("history", [])][
          -self.window:]
      self.warned = int(state.get("warned", -1))


def chance_after_step(total_steps: int, warmup_steps: int,
                      fraction: float) -> int:
  """The warm-up the chance monitor skips: max(warm-up, fraction * total)."""
  return max(int(warmup_steps), int(math.ceil(fraction * total_steps)))


@dataclasses.dataclass
class EarlyStopping:
  """Patience / min_delta early stopping on one validation metric.

  Attributes:
    patience: validations without improvement before stopping; 0 = never
      stop (the best value and step are still tracked).
    min_delta: an improvement must beat the best by more than this.
    mode: "min" (losses) or "max" (accuracies, recalls).
    best: best value so far (None before the first validation).
    best_step: step of `best` (-1 before the first validation).
    bad_count: validations since the last improvement.
    stopped_step: the step the run stopped at, or -1.
  """
  patience: int = 0
  min_delta: float = 1e-5
  mode: str = "min"
  best: float | None = None
  best_step: int = -1
  bad_count: int = 0
  stopped_step: int = -1

  def improves(self, value: float) -> bool:
    """Whether `value` beats the best by more than `min_delta`."""
    if not math.isfinite(value):
      return False
    if self.best is None:
      return True
    if self.mode == "min":
      return value < self.best - self.min_delta
    return value > self.best + self.min_delta

  def update(self, step: int, value: float) -> bool:
    """Records a validation value; returns whether it is the new best."""
    value = float(value)
    better = self.improves(value)
    if better:
      self.best, self.best_step, self.bad_count = value, int(step), 0
    else:
      self.bad_count += 1
    if self.patience > 0 and self.bad_count >= self.patience:
      self.stopped_step = int(step)
    return better

  @property
  def stopped(self) -> bool:
    """Whether the patience ran out (the run should end)."""
    return self.stopped_step >= 0

  def state(self) -> dict:
    """JSON-serialisable state (the settings are the config's)."""
    return {"best": self.best, "best_step": self.best_step,
            "bad_count": self.bad_count, "stopped_step": self.stopped_step}

  def restore(self, state: dict | None) -> None:
    """Loads `state()` output (None: nothing saved yet)."""
    if state:
      self.best = None if state.get("best") is None else float(
          state["best"])
      self.best_step = int(state.get("best_step", -1))
      self.bad_count = int(state.get("bad_count", 0))
      self.stopped_step = int(state.get("stopped_step", -1))


def from_config(config: Any) -> tuple[ChanceMonitor, EarlyStopping]:
  """The run's monitor and early stopping from a training config."""
  h, es = config.health, config.early_stopping
  monitor = ChanceMonitor(
      after_step=chance_after_step(config.total_steps,
                                   config.optim.warmup_steps,
                                   h.chance_after),
      window=int(h.chance_window), tol=float(h.chance_tol))
  stopping = EarlyStopping(patience=int(es.patience),
                           min_delta=float(es.min_delta), mode=es.mode)
  return monitor, stopping
