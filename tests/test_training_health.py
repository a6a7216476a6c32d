"""Training health through the trainer: the embedding statistics and the
ln(B) ratio it logs, the stuck-at-chance warning of an untrained (lr = 0)
run, the validation loss (checked against the objective of the eval-mode
embeddings), early stopping, the best checkpoint, and an interrupted run
that stops where the uninterrupted one does."""

import json
import math
import os

import numpy as np
import pytest

from configs import convirt
from jointcxr import checkpointing
from jointcxr import kill_resume
from jointcxr import loading
from jointcxr import objectives
from jointcxr import train
from jointcxr.evaluators import common
from jointcxr.evaluators import embedding_stats


def _cfg(data_dir, tok, *, steps, lr):
  # As tests/test_train.py: 8 studies, batch 8, no image augmentation.
  c = convirt.get_config("tiny")
  c.input.data_dir = str(data_dir)
  c.input.tokenizer = str(tok)
  c.input.split = "train[:8]"
  c.input.image_aug = "none"
  c.total_steps = steps
  c.log_every_steps = 1
  c.ckpt_every_steps = 4
  c.evals.retrieval.limit = 0
  c.optim.lr = lr
  return c


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_untrained_run_logs_health_and_warns_at_chance(
    converted_mimic, tokenizer_path, tmp_path, capsys):
  c = _cfg(converted_mimic, tokenizer_path, steps=5, lr=0.0)
  c.health.chance_window = 3
  c.health.chance_after = 0.25   # judged after step 2
  result = train.train_and_evaluate(c, str(tmp_path))
  out = capsys.readouterr().out
  # Untrained: steps 3-5 average at or above ln(8) (chance), one warning
  # at step 5 that says what it means and what to check, repeated at the
  # end.
  assert result["health/chance_warning_step"] == 5
  warnings = [ln for ln in out.splitlines() if ln.startswith("WARNING: ")]
  assert len(warnings) == 2, out
  assert "ln(B) = ln(8) = 2.079" in warnings[0]
  assert "steps 3-5" in warnings[0] and "collapsed" in warnings[0]
  assert "optim.lr" in warnings[0] and "at the end of training" in (
      warnings[1])
  rows = [r for r in _rows(tmp_path) if "loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
  for r in rows:
    # ConVIRT's loss is its global term; the ratio is to ln(B = 8).
    assert r["loss/global"] == pytest.approx(r["loss"], rel=1e-6)
    assert r["loss/global_over_lnB"] == pytest.approx(
        r["loss"] / math.log(8), rel=1e-5)
    assert 0.95 <= r["loss/global_over_lnB"] < 1.1
    for tower in ("img", "txt"):
      assert 1.0 <= r[f"health/{tower}_eff_rank"] <= 8.0
      assert 0.0 < r[f"health/{tower}_std"] < 1.0
      assert r[f"health/{tower}_uniformity"] < 0.0
    assert -1.0 <= r["sim/neg"] <= 1.0 and -1.0 <= r["sim/pos"] <= 1.0
  # lr = 0 and the same 8 un-augmented images every step (in another
  # order each epoch): the image tower's statistics do not move.
  ranks = [r["health/img_eff_rank"] for r in rows]
  assert max(ranks) - min(ranks) < 1e-5 * ranks[0]


def _es_cfg(data_dir, tok, steps):
  c = _cfg(data_dir, tok, steps=steps, lr=1e-3)
  c.val.every_steps = 2
  c.val.batches = 2
  c.early_stopping.patience = 2
  # Planted: nothing after the first validation counts as an improvement,
  # so the run stops at the third validation (step 6) with step 2 best.
  c.early_stopping.min_delta = 10.0
  return c


@pytest.fixture(scope="module")
def stopped(converted_mimic, tokenizer_path, tmp_path_factory):
  w = tmp_path_factory.mktemp("es")
  result = train.train_and_evaluate(
      _es_cfg(converted_mimic, tokenizer_path, 12), str(w))
  return w, result


def test_early_stopping_and_the_best_checkpoint(stopped, converted_mimic):
  w, result = stopped
  assert result["step"] == 6
  assert result["early_stopping/stopped_step"] == 6
  assert result["early_stopping/best_step"] == 2
  val = {r["step"]: r for r in _rows(w) if "val/loss" in r}
  assert sorted(val) == [2, 4, 6]
  assert result["early_stopping/best"] == val[2]["val/loss"]
  assert [val[s]["early_stopping/bad_count"] for s in (2, 4, 6)] == [0, 1, 2]
  assert max(r["step"] for r in _rows(w)) == 6  # no step after the stop
  best = checkpointing.Checkpointer(
      str(w / checkpointing.BEST_DIR), async_save=False)
  assert best.all_steps() == [2]
  assert checkpointing.Checkpointer(
      str(w / "checkpoints"), async_save=False).all_steps() == [4, 6]
  # checkpoint="best" loads the step-2 state, "latest" the final one.
  b = loading.load(str(w), "best")
  assert b.step == 2 and loading.load(str(w)).step == 6
  # The validation loss is the objective of the eval-mode embeddings of the
  # validation split (4 studies: one batch of 8 with 4 padded rows), and
  # its chance ratio is to ln(4), the real candidates.
  # (Whole reports, as the eval pipeline feeds the validation step.)
  emb = common.embed_split(b, str(converted_mimic), "validate", batch_size=8,
                           text_mode="report")
  n = len(emb.img)
  assert val[2]["val/examples"] == n
  loss, aux = objectives.compute("convirt", {}, {"img_global": emb.img,
                                                 "txt_global": emb.txt})
  assert val[2]["val/loss"] == pytest.approx(float(loss), rel=1e-5)
  assert val[2]["val/loss/global_over_lnB"] == pytest.approx(
      float(loss) / math.log(n), rel=1e-5)
  assert val[2]["val/sim/pos"] == pytest.approx(float(aux["sim/pos"]),
                                                rel=1e-4, abs=1e-6)
  want = embedding_stats.tower_stats(emb.img, emb.txt)
  for k, v in want.items():
    assert val[2][f"val/{k}"] == pytest.approx(float(v), rel=1e-4), k


def test_interrupted_run_stops_where_the_uninterrupted_one_does(
    stopped, converted_mimic, tokenizer_path, tmp_path):
  ref, ref_result = stopped
  w = str(tmp_path / "r")
  # Ends at step 4 (a validation step, so no extra validation), then the
  # same run resumes and must stop at step 6 like the reference.
  first = train.train_and_evaluate(
      _es_cfg(converted_mimic, tokenizer_path, 4), w)
  assert first["early_stopping/stopped_step"] == -1
  again = train.train_and_evaluate(
      _es_cfg(converted_mimic, tokenizer_path, 12), w)
  for key in ("step", "early_stopping/best", "early_stopping/best_step",
              "early_stopping/stopped_step"):
    assert again[key] == ref_result[key], key
  res = kill_resume.compare(str(ref), w)
  assert res["identical"], res
  val = lambda d: {r["step"]: r["val/loss"] for r in _rows(d)
                   if "val/loss" in r}
  assert val(w) == val(ref)
  # A stopped run stays stopped: restarting it trains nothing.
  done = train.train_and_evaluate(
      _es_cfg(converted_mimic, tokenizer_path, 12), w)
  assert done["step"] == 6 and max(r["step"] for r in _rows(w)) == 6
  assert np.array_equal(
      checkpointing.Checkpointer(os.path.join(w, checkpointing.BEST_DIR),
                                 async_save=False).all_steps(), [2])
