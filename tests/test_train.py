"""The trainer: every method's tiny config learns on synthetic TFRecords,
two real processes (`jax.distributed` on 127.0.0.1) give the parameters of
one process, and Hsu et al. runs end to end through `jointcxr.train`."""

import importlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jointcxr import train

WORKER = os.path.join(os.path.dirname(__file__), "_dist_worker.py")

# (config module, arg, overrides). Each run trains on 8 studies (a TFDS
# slice, batch 8: every step sees them, freshly augmented) with lr 1e-3 so 24
# steps show learning; on the whole tiny split the ResNet towers memorise
# each new batch and their loss on unseen batches stays near chance. The
# ResNet methods train without image augmentation here: at 64 px LoVT's
# crops + jitter + blur make 8 studies a task that 24 steps do not show
# (the augmentations have their own tests in test_pipeline.py).
_NO_AUG = {"input.image_aug": "none"}
METHODS = [
    ("lovt", "tiny", _NO_AUG),
    ("convirt", "tiny", _NO_AUG),
    ("clip", "tiny", {}),
    ("clip", "tiny,loss=sigmoid", {}),
    ("joimternet", "tiny", {}),
    ("joimternet", "tiny,mlm", {}),
]


def _losses(workdir) -> list[float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f]


@pytest.mark.parametrize("module,arg,overrides", METHODS,
                         ids=[f"{m}:{a}" for m, a, _ in METHODS])
def test_tiny_config_learns(module, arg, overrides, converted_mimic,
                            tokenizer_path, tmp_path):
  c = importlib.import_module(f"configs.{module}").get_config(arg)
  c.input.data_dir = str(converted_mimic)
  c.input.tokenizer = str(tokenizer_path)
  c.input.split = "train[:8]"
  c.batch_size = 8
  c.total_steps = 24
  c.log_every_steps = 1
  c.ckpt_every_steps = 24
  c.accum_steps = 1
  c.evals.retrieval.limit = 0
  c.optim.lr = 1e-3
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.update_from_flattened_dict(overrides)
  result = train.train_and_evaluate(c, str(tmp_path))
  losses = _losses(tmp_path)
  assert len(losses) == 24 and np.all(np.isfinite(losses))
  first, last = np.mean(losses[:6]), np.mean(losses[-6:])
  assert last < 0.9 * first, (first, last, losses)
  assert result["step"] == 24


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_workers(nproc, out, converted_mimic, tokenizer_path, layout):
  port = str(_free_port())
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen(
      [sys.executable, WORKER, str(i), str(nproc), port, str(out),
       str(converted_mimic), str(tokenizer_path), *layout], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(nproc)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=600)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]


# (mesh, sharding rules) over the 4 devices of both runs: data parallel with
# replicated parameters, and FSDP with every large parameter split over the
# 4 devices, i.e. across the two processes.
LAYOUTS = {"replicated": ("data:-1", ".*=replicate"),
           "fsdp": ("data:1,fsdp:4", ".*=fsdp(axis=fsdp)")}


@pytest.mark.serial
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_two_processes_match_one_process(converted_mimic, tokenizer_path,
                                         tmp_path, layout):
  one, two = tmp_path / "one", tmp_path / "two"
  one.mkdir()
  two.mkdir()
  _run_workers(1, one, converted_mimic, tokenizer_path, LAYOUTS[layout])
  _run_workers(2, two, converted_mimic, tokenizer_path, LAYOUTS[layout])
  a, b = np.load(one / "params.npz"), np.load(two / "params.npz")
  assert sorted(a.files) == sorted(b.files) and len(a.files) > 50
  # Adam turns float-noise gradients (e.g. of a bias followed by BatchNorm,
  # whose true gradient is 0) into lr-sized steps of either sign, so such
  # leaves may differ by up to 2 runs x 3 steps x lr; the real check is that
  # most leaves and every loss agree to float32 reduction noise.
  lr = 1e-4
  tight = 0
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], rtol=0, atol=6.01 * lr, err_msg=k)
    tight += np.allclose(a[k], b[k], rtol=1e-4, atol=1e-6)
  assert tight >= 0.8 * len(a.files), (tight, len(a.files))
  la = json.loads((one / "losses.json").read_text())
  lb = json.loads((two / "losses.json").read_text())
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  # Parameters moved: the comparison is not between two initialisations.
  assert la[0] != la[-1]
  # The full binary across two processes: pipeline, checkpoints, evals.
  result = json.loads((two / "result.json").read_text())
  assert result["step"] == 2
  # The in-training evaluation gathered every validation study from both
  # processes.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  n_val = tfds.builder_from_directory(str(converted_mimic)).info.splits[
      "validate"].num_examples
  assert result["val/retrieval/pool_size"] == min(16, n_val)
  assert sorted(os.listdir(two / "run" / "checkpoints"))[:2] == ["1", "2"]


def test_hsu_through_the_trainer(converted_mimic, tmp_path):
  hsu = importlib.import_module("configs.hsu")
  c = hsu.get_config("regime=ea,text=tfidf,fraction=1.0,tiny")
  c.input.data_dir = str(converted_mimic)
  c.input.eval_split = "validate"
  result = train.train_and_evaluate(c, str(tmp_path))
  with open(tmp_path / "eval" / "hsu.json") as f:
    on_disk = json.load(f)
  assert on_disk["retrieval/i2t/R@1"] == pytest.approx(
      result["retrieval/i2t/R@1"])
  assert 0.0 <= on_disk["retrieval/i2t/R@1"] <= 1.0
