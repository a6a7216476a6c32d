"""Reliability: exact resume (in process and after SIGKILL/SIGTERM), checkpoint
fallback, NaN policy, one-line errors for bad configs and foreign checkpoints,
clean exits of stop/resume cycles under load."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import lovt
from jointcxr import checkpointing
from jointcxr import exit_stress
from jointcxr import kill_resume
from jointcxr import train


def _cfg(data_dir, tok, steps, **kw):
  c = lovt.get_config("tiny")
  c.input.data_dir = str(data_dir)
  c.input.tokenizer = str(tok)
  c.total_steps = steps
  c.ckpt_every_steps = 2
  c.log_every_steps = 1
  c.evals.retrieval.limit = 0
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _leaves(workdir):
  return kill_resume.compare(workdir, workdir)["leaves"]


@pytest.fixture(scope="module")
def reference(converted_mimic, tokenizer_path, tmp_path_factory):
  w = tmp_path_factory.mktemp("ref")
  train.train_and_evaluate(_cfg(converted_mimic, tokenizer_path, 8), str(w))
  return w


def test_stop_and_resume_in_process_is_bit_identical(
    reference, converted_mimic, tokenizer_path, tmp_path):
  w = str(tmp_path / "r")
  train.train_and_evaluate(_cfg(converted_mimic, tokenizer_path, 5), w)
  train.train_and_evaluate(_cfg(converted_mimic, tokenizer_path, 8), w)
  res = kill_resume.compare(str(reference), w)
  assert res["identical"], res
  assert res["leaves"] > 100


@pytest.mark.slow
def test_sigkill_then_sigterm_then_finish_equals_uninterrupted(
    reference, converted_mimic, tokenizer_path, tmp_path):
  w = str(tmp_path / "k")
  cfg = "configs/lovt.py:tiny"
  extra = (f"--config.input.tokenizer={tokenizer_path}",)
  env = dict(os.environ)
  for sig, target in ((signal.SIGKILL, 3), (signal.SIGTERM, 6)):
    proc = subprocess.Popen(kill_resume._cmd(cfg, str(converted_mimic), w, 8,
                                             extra),
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and kill_resume._logged_steps(w) < target:
      time.sleep(0.05)
    if proc.poll() is None:
      proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    if sig == signal.SIGTERM:
      assert "Traceback" not in err
  done = subprocess.run(kill_resume._cmd(cfg, str(converted_mimic), w, 8,
                                         extra),
                        env=env, capture_output=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  res = kill_resume.compare(str(reference), w)
  assert res["identical"], res


def test_corrupt_latest_checkpoint_falls_back(reference, converted_mimic,
                                             tokenizer_path, tmp_path):
  import shutil
  w = tmp_path / "c"
  shutil.copytree(reference, w)
  ckpt = checkpointing.Checkpointer(str(w / "checkpoints"), async_save=False)
  steps = ckpt.all_steps()
  assert steps[-1] == 8
  for f in glob.glob(str(w / "checkpoints" / "8" / "state" / "**" / "*"),
                     recursive=True):
    if os.path.isfile(f):
      with open(f, "wb") as fh:
        fh.write(b"garbage")
  # Training resumes from the previous step and recomputes step 8 exactly.
  train.train_and_evaluate(_cfg(converted_mimic, tokenizer_path, 8), str(w))
  # The corrupt step was moved aside (not deleted) and recomputed exactly.
  assert os.path.isdir(str(w / "checkpoints" / "8.unreadable-0"))
  res = kill_resume.compare(str(reference), str(w))
  assert res["identical"], res


def test_nan_stop_keeps_last_good_checkpoint(converted_mimic, tokenizer_path,
                                             tmp_path):
  w = str(tmp_path / "n")
  cfg = _cfg(converted_mimic, tokenizer_path, 8, debug_nan_step=3)
  with pytest.raises(train.TrainingDiverged,
                     match=r"non-finite loss or gradient at step 3 "
                     r"\(nan_policy=stop\).*last good checkpoint: step 2"):
    train.train_and_evaluate(cfg, w)
  ckpt = checkpointing.Checkpointer(os.path.join(w, "checkpoints"),
                                    async_save=False)
  assert max(ckpt.all_steps()) == 2


def test_nan_skip_counts_and_continues(converted_mimic, tokenizer_path,
                                       tmp_path):
  w = str(tmp_path / "s")
  cfg = _cfg(converted_mimic, tokenizer_path, 5, debug_nan_step=2,
             nan_policy="skip")
  train.train_and_evaluate(cfg, w)
  with open(os.path.join(w, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert rows[-1]["skipped_steps"] == 1
  state = checkpointing.Checkpointer(os.path.join(w, "checkpoints"),
                                     async_save=False)
  assert max(state.all_steps()) == 5
  assert all(np.isfinite(r["loss"]) or r["step"] == 3 for r in rows)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "jointcxr.train", *args],
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_bad_config_key_and_type_are_one_line_errors(tmp_path):
  res = _cli("--config=configs/lovt.py:tiny", f"--workdir={tmp_path}",
             "--config.no_such_key=1")
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert res.stderr.strip().splitlines()[-1].startswith(
      "error: unknown config key")
  res = _cli("--config=configs/lovt.py:tiny", f"--workdir={tmp_path}",
             "--config.total_steps=abc")
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert res.stderr.strip().splitlines()[-1].startswith("error:")
  res = _cli("--config=configs/lovt.py:tiny,nosuchflag",
             f"--workdir={tmp_path}")
  assert res.returncode == 2 and "Traceback" not in res.stderr


def test_checkpoint_of_another_model_is_a_one_line_error(
    reference, converted_mimic, tokenizer_path, tmp_path):
  import shutil
  w = tmp_path / "other"
  shutil.copytree(reference, w)
  res = _cli("--config=configs/convirt.py:tiny", f"--workdir={w}",
             f"--config.input.data_dir={converted_mimic}",
             f"--config.input.tokenizer={tokenizer_path}",
             "--config.evals.retrieval.limit=0")
  assert res.returncode == 1, res.stderr[-2000:]
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "checkpoint" in last
  assert "Traceback" not in res.stderr


# ------------------------------------------------------------ clean exit ---
_ABORT = """step 4/4 loss 2.0602 0.5 ex/s
terminate called after throwing an instance of '('
FATAL: exception not rethrown
Fatal Python error: Aborted
"""


def test_exit_stress_recognises_an_abort_at_exit(tmp_path):
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  final = '{"loss": 2.06, "step": 4}\n'
  assert exit_stress.check_cycle(0, final, "", str(tmp_path), 4) == []
  problems = exit_stress.check_cycle(134, final, _ABORT, str(tmp_path), 4)
  assert problems[0] == "exit status 134 (SIGABRT)"
  assert "stderr: terminate called after throwing an instance of '('" in (
      problems)
  assert "stderr: Fatal Python error: Aborted" in problems
  assert exit_stress.check_cycle(0, "", "", str(tmp_path), 6) == [
      "no final metrics line for step 6",
      "last checkpoint 4, expected 6"]


@pytest.mark.slow
@pytest.mark.serial
def test_stop_resume_cycles_under_load_exit_cleanly(converted_mimic,
                                                    tokenizer_path, tmp_path):
  # A short version of `python -m jointcxr.exit_stress --cycles=10` (see
  # RELIABILITY.md): each run continues the previous one's checkpoint while
  # another training job loads the CPU; a deep input prefetch keeps the
  # tf.data stream busy up to the end, where an unjoined producer used to
  # abort the interpreter's exit.
  report = exit_stress.run(
      "configs/convirt.py:tiny", str(converted_mimic), str(tmp_path),
      cycles=2, load=1, extra=(f"--config.input.tokenizer={tokenizer_path}",
                               "--config.input.prefetch=64"))
  assert report["exit_codes"] == [0, 0], report
  assert report["ok"], report
