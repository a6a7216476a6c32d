"""The README's front door runs: every ```bash block's commands, in order,
with tiny sizes and temporary paths substituted (in process, through each
binary's own flag parsing), so a command that stops working fails here.

A command the substitutions below do not cover fails the test too: a new
README command needs a line here (and a path or size to shrink)."""

import os
import pathlib
import re
import runpy
import shlex
import sys
import time
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Commands that are not binaries of this repository run here.
NOT_RUN = {"make"}  # the Makefile targets (`make test` is this suite)
# Binaries and the extra flags that make them tiny (after the README's own
# flags, so they win): small images, no worker processes, 2 training steps,
# one seed.
TINY = {
    "data_prep.synthetic": ["--num_workers=1", "--image_size=128"],
    "data_prep.mimic_cxr": ["--num_workers=1", "--image_size=64"],
    "data_prep.localized.siim": ["--num_workers=1", "--image_size=64"],
    "data_prep.tokenizer": [],
    "data_prep.labeler_eval": [],
    "jointcxr.train": ["--config.total_steps=2", "--config.ckpt_every_steps=2",
                       "--config.evals.retrieval.limit=8",
                       "--config.evals.retrieval.batch_size=8"],
    "jointcxr.eval_global": ["--config.probe_limit=16", "--config.limit=16"],
    "jointcxr.eval_localized": ["--config.seeds=1", "--config.epochs=1",
                                "--config.limit=16"],
    "jointcxr.export": [],
}
# Environment assignments before a command: what they mean here.
ENV = {"JOINTCXR_DISTRIBUTED": None}  # one process: not initialised


def _substitutions(tmp: pathlib.Path) -> list[tuple[str, str]]:
  raw, out = tmp / "raw", tmp / "out"
  return [
      # Sizes.
      ("--num_subjects=300", "--num_subjects=24"),
      ("--vocab_size=30000", "--vocab_size=256"),
      ("--config.batch_size=4096", "--config.batch_size=8"),
      # Paper-size configs become their tiny variants.
      ("--config=configs/lovt.py", "--config=configs/lovt.py:tiny"),
      ("--config=configs/lovt.py:tiny:tiny", "--config=configs/lovt.py:tiny"),
      # Paths: the quick start's /tmp tree, the real-data and pod variables.
      ("/tmp/raw", str(raw)), ("/tmp/tfds", str(out / "tfds")),
      ("/tmp/w", str(out / "w")), ("/tmp/export", str(out / "export")),
      ("$JPG", str(raw / "mimic-cxr-jpg")),
      ("$REPORTS", str(raw / "mimic-cxr-reports")),
      ("$MSCXR", str(raw / "ms_cxr")), ("$DATA", str(out / "data")),
      ("$(nproc)", "1"),
      ("gs://bucket/mimic_cxr", str(out / "tfds" / "mimic")),
      ("gs://bucket/lovt", str(out / "pod")),
  ]


def bash_commands(text: str) -> list[str]:
  """Every command of the ```bash blocks (continuations joined)."""
  cmds = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
      if line.strip() and not line.lstrip().startswith("#"):
        cmds.append(line.strip())
  return cmds


def _resolve(cmd: str, tmp: pathlib.Path) -> tuple[dict, str, list[str]]:
  """(env, binary, args) of a README command after the substitutions."""
  for old, new in _substitutions(tmp):
    cmd = cmd.replace(old, new)
  words = shlex.split(cmd, comments=True)
  left = [w for w in words if "$" in w or "gs://" in w or re.search(
      r"(^|=)/tmp/", w.replace(str(tmp), ""))]
  assert not left, f"add a substitution for {left} ({cmd})"
  env = {}
  while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
    k, v = words.pop(0).split("=", 1)
    assert k in ENV, f"README sets {k}: say here what it means in a test"
    env[k] = v
  if words[0] in NOT_RUN:
    return env, words[0], words[1:]
  assert words[:2] == ["python", "-m"], f"not a python -m command: {cmd}"
  assert words[2] in TINY, f"README runs {words[2]}: add it to TINY"
  return env, words[2], words[3:]


def _run_in_process(module: str, args: list[str]) -> int:
  """Runs `python -m module args` here; returns its exit status."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  app.define_help_flags()  # absl's own flags stay (defined once)
  before = set(flags.FLAGS)
  verbosity = logging.get_verbosity()
  argv = sys.argv
  sys.argv = [module, *args]
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)  # "found in sys.modules"
      runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0
  except SystemExit as e:
    return 0 if e.code is None else e.code if isinstance(e.code, int) else 1
  finally:
    sys.argv = argv
    logging.set_verbosity(verbosity)
    for name in set(flags.FLAGS) - before:  # the binary's flags
      delattr(flags.FLAGS, name)


def test_readme_commands_are_all_known(tmp_path):
  cmds = bash_commands(README.read_text())
  binaries = [_resolve(c, tmp_path)[1] for c in cmds]
  # The quick start, the real-data preparation, the labeler check and the
  # pod command are all there (a README edit that drops one is deliberate).
  for b in ("data_prep.synthetic", "data_prep.mimic_cxr", "jointcxr.train",
            "jointcxr.eval_global", "jointcxr.eval_localized",
            "jointcxr.export", "data_prep.tokenizer",
            "data_prep.labeler_eval"):
    assert b in binaries, b
  assert binaries.count("jointcxr.train") == 2  # quick start + pod


@pytest.mark.slow
def test_readme_commands_run(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(ROOT)  # the README's paths are relative to the clone
  ran, seconds = [], {}
  for cmd in bash_commands(README.read_text()):
    env, binary, args = _resolve(cmd, tmp_path)
    if binary in NOT_RUN:
      continue
    if binary == "data_prep.labeler_eval" and not any(
        os.path.exists(ROOT / a.split("=", 1)[1]) for a in args
        if a.startswith("--reports_tgz=")):
      continue  # needs ../shared/data (the Open-i gold), absent here
    del env  # JOINTCXR_DISTRIBUTED: a single process here
    t0 = time.time()
    rc = _run_in_process(binary, args + TINY[binary])
    seconds[binary] = seconds.get(binary, 0.0) + time.time() - t0
    out = capsys.readouterr()
    assert rc == 0, (cmd, out.err[-3000:])
    assert "Traceback" not in out.err, (cmd, out.err[-3000:])
    ran.append((binary, out.out))
  print("seconds per binary:", {k: round(v) for k, v in seconds.items()})
  names = [b for b, _ in ran]
  assert names.count("jointcxr.train") == 2, names
  w = tmp_path / "out"
  assert (w / "w" / "checkpoints" / "2").is_dir()
  assert (w / "w" / "eval" / "global.json").exists()
  assert (w / "w" / "eval" / "localized.json").exists()
  assert (w / "export" / "resnet_torchvision.safetensors").exists()
  assert (w / "data" / "spm.model").exists()
  # The pod command trained with parameters sharded over its fsdp axis and
  # evaluated.
  pod = [o for b, o in ran if b == "jointcxr.train"][-1]
  assert '"step": 2' in pod and "val/retrieval/i2t/R@1" in pod
  assert (w / "pod" / "checkpoints" / "2").is_dir()
