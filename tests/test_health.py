"""The host-side health logic: the stuck-at-chance detector over a loss
history, its once-per-run monitor, early stopping with patience and
min_delta, their JSON round trips, and the objectives' ln(B) ratio."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr import health
from jointcxr import objectives


def _hist(ratios, start=1):
  return [(start + i, r) for i, r in enumerate(ratios)]


def test_stuck_needs_a_full_window_after_the_warmup():
  kw = dict(after_step=3, window=4, tol=0.02)
  flat = [1.0, 0.999, 1.01, 0.985, 1.019]
  # Steps 1..5 at chance, but only 2 of them after step 3.
  assert not health.stuck_at_chance(_hist(flat), **kw)
  assert health.stuck_at_chance(_hist(flat + [1.0, 0.99]), **kw)
  # The window's mean is judged: batch noise around ln(B) (as an
  # untrained B = 8 step gives) is still chance ...
  assert health.stuck_at_chance(_hist([1.0] * 4 + [1.035, 0.97, 1.03, 0.99]),
                                **kw)
  # ... a loss on its way down is not ...
  assert not health.stuck_at_chance(_hist(flat + [0.97, 0.95, 0.93]), **kw)
  # ... and only the latest window counts: learning early, stuck later is
  # stuck; stuck early then learning is not.
  assert health.stuck_at_chance(_hist([0.5] * 4 + [1.0] * 4), **kw)
  assert not health.stuck_at_chance(_hist([1.0] * 8 + [0.9]), **kw)
  # The band is relative, and chance is a floor: a loss above ln(B) (what
  # untrained, spread-out embeddings give) is no better. NaN never counts.
  assert health.stuck_at_chance(_hist([0.9801] * 8), **kw)
  assert not health.stuck_at_chance(_hist([0.979] * 8), **kw)
  assert health.stuck_at_chance(_hist([1.021, 1.05, 1.3, 1.01] * 2), **kw)
  assert not health.stuck_at_chance(_hist([1.0] * 7 + [float("nan")]), **kw)


def test_monitor_state_round_trips_through_json():
  m = health.ChanceMonitor(after_step=2, window=3, tol=0.02)
  assert not m.observe(1, 1.0)  # warm-up: not recorded
  assert not m.observe(3, None)  # an MLM step logs no ratio
  assert [m.observe(s, 1.0) for s in (3, 4, 5)] == [False, False, True]
  assert m.history == [[3, 1.0], [4, 1.0], [5, 1.0]]
  m.warned = 5
  again = health.ChanceMonitor(after_step=2, window=3, tol=0.02)
  again.restore(json.loads(json.dumps(m.state())))
  assert again.history == m.history and again.warned == 5 and again.stuck()
  assert not again.observe(6, 0.8)


def test_chance_message_says_what_and_gives_the_numbers():
  msg = health.chance_message(_hist([1.0, 0.995, 1.004], start=10),
                              window=3, tol=0.02, batch_size=32)
  for part in ("within 2% of ln(B) = ln(32) = 3.466 or above it",
               "steps 10-12", "chance level",
               "mean 0.9997", "range 0.9950-1.0040", "collapsed", "augmentation",
               "learning rate", "text mode"):
    assert part in msg, part


def test_warmup_is_the_larger_of_warmup_steps_and_the_fraction():
  assert health.chance_after_step(300, 15, 0.1) == 30
  assert health.chance_after_step(300, 50, 0.1) == 50
  assert health.chance_after_step(8, 0, 0.25) == 2


def test_early_stopping_patience_and_min_delta():
  es = health.EarlyStopping(patience=2, min_delta=0.01)
  assert es.update(1, 1.0)          # first value is the best
  assert es.update(2, 0.98)         # improves by 0.02 > 0.01
  assert not es.update(3, 0.975)    # by 0.005: not an improvement
  assert es.bad_count == 1 and not es.stopped
  assert es.update(4, 0.9)          # resets the count
  assert not es.update(5, float("nan"))
  assert not es.update(6, 0.95)
  assert es.stopped and es.stopped_step == 6
  assert (es.best, es.best_step, es.bad_count) == (0.9, 4, 2)
  # Patience 0 never stops but still tracks the best.
  keep = health.EarlyStopping(patience=0)
  for s, v in enumerate([3.0, 2.0, 2.5, 2.6, 2.7]):
    keep.update(s, v)
  assert not keep.stopped and keep.best == 2.0 and keep.best_step == 1
  # mode="max" for metrics where higher is better.
  up = health.EarlyStopping(patience=1, mode="max")
  assert up.update(1, 0.2) and up.update(2, 0.3) and not up.update(3, 0.3)
  assert up.stopped


def test_early_stopping_resumed_decides_like_uninterrupted():
  values = [1.0, 0.9, 0.95, 0.91, 0.89, 0.92, 0.93, 0.94]
  whole = health.EarlyStopping(patience=3, min_delta=1e-5)
  for s, v in enumerate(values):
    if whole.stopped:
      break
    whole.update(s, v)
  part = health.EarlyStopping(patience=3, min_delta=1e-5)
  for s, v in enumerate(values[:4]):
    part.update(s, v)
  resumed = health.EarlyStopping(patience=3, min_delta=1e-5)
  resumed.restore(json.loads(json.dumps(part.state())))
  for s, v in list(enumerate(values))[4:]:
    if resumed.stopped:
      break
    resumed.update(s, v)
  assert resumed.state() == whole.state()
  assert whole.stopped_step == 7 and whole.best_step == 4


def _outputs(b, d, seed=0):
  g = np.random.default_rng(seed)
  return {"img_global": jnp.asarray(g.normal(size=(b, d)), jnp.float32),
          "txt_global": jnp.asarray(g.normal(size=(b, d)), jnp.float32)}


@pytest.mark.parametrize("method", ["convirt", "clip", "joimternet"])
def test_collapsed_embeddings_give_a_chance_ratio_of_one(method):
  b, d = 16, 8
  out = _outputs(b, d)
  const = jnp.ones((b, d))
  out.update(img_global=const, txt_global=const + 0.0)
  if method == "joimternet":
    out.update(img_regions=jnp.ones((b, 4, d)), txt_words=jnp.ones((b, 5, d)),
               txt_word_mask=jnp.ones((b, 5), bool))
  _, aux = objectives.compute(method, {}, out, {}, rng=jax.random.key(0))
  assert float(aux["loss/global_over_lnB"]) == pytest.approx(1.0, abs=1e-5)
  assert float(aux["sim/pos"]) == pytest.approx(float(aux["sim/neg"]))
  # Masked rows are not candidates: chance is ln(valid), not ln(B).
  mask = jnp.arange(b) < 5
  _, aux = objectives.compute(method, {}, out, {"mask": mask},
                              rng=jax.random.key(0))
  assert float(aux["loss/global"]) == pytest.approx(math.log(5), rel=1e-5)
  assert float(aux["loss/global_over_lnB"]) == pytest.approx(1.0, abs=1e-5)


def test_lovt_ratio_uses_its_global_weights_and_siglip_has_none():
  import test_objectives  # pylint: disable=g-import-not-at-top
  out = test_objectives._outputs("lovt")  # pylint: disable=protected-access
  b = out["img_global"].shape[0]
  _, aux = objectives.compute("lovt", {}, out, {})
  glob = 0.75 * aux["loss/global_i2t"] + 0.25 * aux["loss/global_t2i"]
  np.testing.assert_allclose(aux["loss/global"], glob, rtol=1e-6)
  np.testing.assert_allclose(aux["loss/global_over_lnB"],
                             glob / math.log(b), rtol=1e-6)
  # Its weights need not sum to one: the ratio is of the weighted mean.
  cfg = {"loss_weights": {"global_a2b": 1.5, "global_b2a": 0.5}}
  _, aux2 = objectives.compute("lovt", cfg, out, {})
  np.testing.assert_allclose(aux2["loss/global"], glob, rtol=1e-6)
  sig_out = test_objectives._outputs("siglip")  # pylint: disable=protected-access
  _, sig = objectives.compute("siglip", {}, sig_out, {})
  assert "loss/global_over_lnB" not in sig and "sim/pos" in sig
