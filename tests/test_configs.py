"""Configs: `parse_arg`, the papers' defaults, `tiny`, and one-line errors."""

import importlib
import os
import pathlib
import subprocess
import sys

import ml_collections as mlc
import pytest

from configs import common
from jointcxr import config_validation
from jointcxr import sharding

ROOT = pathlib.Path(__file__).resolve().parents[1]
METHOD_CONFIGS = ("convirt", "clip", "lovt", "joimternet")


# ------------------------------------------------------------ parse_arg ---
def test_parse_arg_key_values_bare_booleans_and_first_key():
  a = common.parse_arg("tiny,size=64", tiny=False, size=224, loss="softmax")
  assert a.tiny is True and a.size == 64 and a.loss == "softmax"
  assert isinstance(a.size, int)
  a = common.parse_arg("sigmoid", loss="softmax", tiny=False)
  assert a.loss == "sigmoid" and a.tiny is False
  a = common.parse_arg("lr=3e-4,tiny=false", lr=1e-4, tiny=True)
  assert a.lr == pytest.approx(3e-4) and a.tiny is False
  assert common.parse_arg(None, size=2).size == 2
  assert common.parse_arg("", size=2).size == 2


@pytest.mark.parametrize("arg,message", [
    ("size=abc", "config arg size='abc': expected int"),
    ("tiny=maybe", "config arg tiny='maybe': expected a boolean"),
    ("depth=3", "config arg key 'depth' unknown; known: ['size', 'tiny']"),
    ("tiny,oops", "config arg 'oops': not a known flag; known: ['size', "
     "'tiny']"),
])
def test_parse_arg_errors_name_the_argument(arg, message):
  with pytest.raises(ValueError) as e:
    common.parse_arg(arg, size=224, tiny=False)
  assert str(e.value) == message


# ------------------------------------------------------ method configs ---
def _get(name: str, arg: str | None = None) -> mlc.ConfigDict:
  return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_every_config_has_the_stable_keys_and_a_runnable_example(name):
  for arg in (None, "tiny"):
    c = _get(name, arg)
    for key, kind in (("method", str), ("total_steps", int),
                      ("batch_size", int), ("ckpt_every_steps", int),
                      ("keep_checkpoints", int), ("log_every_steps", int),
                      ("seed", int), ("nan_policy", str),
                      ("model_init", str)):
      assert isinstance(c[key], kind), (name, key)
    assert isinstance(c.input.data_dir, str)
    assert isinstance(c.input.tokenizer, str)
    assert sharding.parse_mesh(c.mesh) == [("data", -1)]
    assert sharding.parse_rules(c.sharding_rules) == [(".*", "replicate")]
    c.input.data_dir = "/d"
    config_validation.check(c)
  doc = importlib.import_module(f"configs.{name}").__doc__
  assert f"python -m jointcxr.train --config=configs/{name}.py" in doc


def test_tiny_shrinks_to_a_cpu_sized_run():
  for name in METHOD_CONFIGS:
    c = _get(name, "tiny")
    assert c.batch_size == 8 and c.total_steps <= 10, name
    assert c.model.text.hidden <= 32 and c.model.text.layers <= 2, name
    assert c.input.max_tokens <= 64, name
    if c.model.image_model == "resnet":
      assert c.input.image_size <= 64 and c.model.image.width <= 16, name


def test_lovt_defaults_reproduce_the_paper():
  c = _get("lovt")
  assert c.method == "lovt" and c.model.image.depth == 50
  assert c.input.image_size == 224 and c.input.max_tokens == 512
  assert c.model.text.hidden == 768 and c.model.text.layers == 12
  # 32 x 16 accumulation = 512 per step, contrastive-aware here.
  assert c.batch_size == 512 and c.accum_steps == 16
  o = c.optim
  assert (o.optimizer, o.lr, o.wd, o.schedule) == (
      "adamw", 1e-4, 1e-6, "cosine_per_epoch")
  assert list(o.frozen) == [r"^txt/embed_", r"^txt/encoder/layer_[0-5]/"]
  assert c.input.text_aug == "sentence_swap"
  assert _get("lovt", "accum=4").accum_steps == 4


def test_joimternet_defaults_reproduce_the_code():
  c = _get("joimternet")
  assert c.batch_size == 128 and c.input.image_size == 2048
  assert c.model.text.layers == 3 and c.model.text.hidden == 512
  assert c.mlm_prob == 0.0 and _get("joimternet", "mlm").mlm_prob == 0.7
  o = c.optim
  assert (o.optimizer, o.lr, o.wd, o.schedule) == ("adamw", 1e-4, 1e-4,
                                                   "step")
  assert list(o.step_epochs) == [20] and o.step_factor == 0.1
  assert c.total_epochs == 35
  groups = {g["name"]: g for g in o.groups}
  assert groups["image"]["clip_norm"] == 1.5
  assert groups["text"]["clip_norm"] == 1.5


def test_convirt_and_clip_variants():
  c = _get("convirt")
  assert (c.optim.optimizer, c.optim.lr, c.optim.wd) == ("adam", 1e-4, 0.0)
  assert c.input.text_aug == "one_sentence"
  assert _get("clip").method == "clip"
  assert _get("clip", "loss=sigmoid").method == "siglip"
  with pytest.raises(ValueError, match="loss='x': expected softmax or "
                     "sigmoid"):
    _get("clip", "loss=x")


def test_check_lists_every_cross_field_problem():
  c = _get("lovt", "tiny")
  c.batch_size, c.accum_steps, c.nan_policy = 6, 4, "ignore"
  c.sharding_rules = ".*=shard_everything"
  c.mesh = "data:-1,data:2"
  with pytest.raises(ValueError) as e:
    config_validation.check(c)
  msg = str(e.value)
  assert "\n" not in msg
  assert "batch_size 6 is not divisible by accum_steps 4" in msg
  assert "nan_policy 'ignore' is not stop|skip" in msg
  assert "input.data_dir is empty" in msg
  assert ("sharding rule '.*=shard_everything': unknown sharding tactic "
          "'shard_everything'") in msg
  assert "mesh 'data:-1,data:2' names an axis twice" in msg


def test_validation_and_early_stopping_defaults_and_checks():
  # LoVT and its ConVIRT / CLIP* runs: validate every epoch, early-stop on
  # the validation loss with patience 10, min_delta 1e-5; tiny turns both
  # off (seconds-long runs), JoImTeRNet trains its fixed 35 epochs.
  for name in ("lovt", "convirt", "clip"):
    c = _get(name)
    assert (c.val.every_steps, c.early_stopping.patience) == (-1, 10), name
    assert c.early_stopping.min_delta == 1e-5
    assert c.early_stopping.metric == "val/loss" and c.val.keep_best
    t = _get(name, "tiny")
    assert (t.val.every_steps, t.early_stopping.patience) == (0, 0), name
  assert _get("joimternet").early_stopping.patience == 0
  c = _get("lovt", "tiny")
  c.input.data_dir = "/d"
  c.early_stopping.patience = 3
  c.early_stopping.mode = "lowest"
  c.early_stopping.metric = "loss"
  c.val.batches = -1
  c.health.chance_tol = 0.0
  c.health.chance_window = 0
  with pytest.raises(ValueError) as e:
    config_validation.check(c)
  msg = str(e.value)
  for part in ("early_stopping.patience 3 needs a validation loss",
               "early_stopping.mode 'lowest' is not min|max",
               "early_stopping.metric 'loss' is not a validation value",
               "val.batches must be >= 0", "health.chance_tol 0.0",
               "health.chance_window must be >= 1"):
    assert part in msg, part
  c.val.every_steps = -2
  with pytest.raises(ValueError, match="val.every_steps must be -1"):
    config_validation.check(c)


# -------------------------------------------------- command-line errors ---
_PARSER = """
import sys
from absl import flags
from ml_collections import config_flags
from jointcxr import config_validation
config_flags.DEFINE_config_file("config", None, "c", lock_config=True)
config_validation.parse_flags(sys.argv)
c = flags.FLAGS.config
print(c.total_steps, c.optim.lr)
print(c.mesh)
print(c.sharding_rules)
"""


def _parse(*args: str) -> subprocess.CompletedProcess:
  # The parser alone (no TF/JAX import): the same code path as the trainer.
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-c", _PARSER, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=120,
                        check=False)


@pytest.mark.parametrize("args,line", [
    (("--config=configs/lovt.py:tiny", "--config.no_such_key=1"),
     "error: unknown config key 'no_such_key' in --config.no_such_key=1"),
    (("--config=configs/lovt.py:tiny", "--config.optim.nokey=1"),
     "error: unknown config key 'nokey' in --config.optim.nokey=1"),
    (("--config=configs/lovt.py:tiny", "--config.total_steps=abc"),
     "error: flag --config.total_steps=abc: invalid literal for int() with "
     "base 10: 'abc'"),
    (("--config=configs/lovt.py:tiny,nosuch",),
     "error: flag --config=configs/lovt.py:tiny,nosuch: ValueError: config "
     "arg 'nosuch': not a known flag; known: ['accum', 'size', 'tiny']"),
    (("--config=configs/missing.py",),
     "error: cannot load config: [Errno 2] No such file or directory: "
     "'configs/missing.py'"),
])
def test_bad_flags_are_one_line_errors_with_exit_2(args, line):
  res = _parse(*args)
  assert res.returncode == 2, res.stderr
  assert res.stderr.strip() == line
  assert "Traceback" not in res.stderr


def test_good_overrides_parse():
  res = _parse("--config=configs/lovt.py:tiny", "--config.total_steps=7",
               "--config.optim.lr=3e-4")
  assert res.returncode == 0, res.stderr
  assert res.stdout.splitlines()[0].split() == ["7", "0.0003"]


@pytest.mark.parametrize("mesh,rules", [
    ("data:-1,fsdp:4", ".*=fsdp(axis=fsdp)"),
    # The Python-literal spelling (the README's before the fields became
    # strings) still works.
    ('[("data", -1), ("fsdp", 4)]', '[(".*", "fsdp(axis=\\"fsdp\\")")]'),
])
def test_mesh_and_sharding_rules_override_from_the_command_line(mesh, rules):
  res = _parse("--config=configs/lovt.py:tiny", f"--config.mesh={mesh}",
               f"--config.sharding_rules={rules}")
  assert res.returncode == 0, res.stderr
  got_mesh, got_rules = res.stdout.splitlines()[1:3]
  assert sharding.parse_mesh(got_mesh) == [("data", -1), ("fsdp", 4)]
  [(regex, tactic)] = sharding.parse_rules(got_rules)
  assert regex == ".*"
  assert sharding.parse_tactic(tactic) == ("fsdp", {"axis": "fsdp"})
