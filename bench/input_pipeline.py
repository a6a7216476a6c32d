r"""Training input pipeline throughput vs the train step it feeds.

    python -m bench.input_pipeline --output_dir=bench/results \
        [--methods=lovt,convirt] [--subjects=48] [--batches=20] [--batch=32]

Builds a synthetic MIMIC-CXR tree in a temp dir (`data_prep.synthetic`,
512-px images), converts it the way real data is converted
(`data_prep.mimic_cxr.convert`, 256 px shorter side, JPEG), trains a
SentencePiece tokenizer on it, then for each method runs the trainer's own
input stream (`jointcxr.data.pipeline.train_iterator` with the method's
default `config.input`: LoVT augmentations and sentence swaps at 224 px,
512 tokens for LoVT; ConVIRT's one-sentence sampling) on a one-device
mesh, and times `--batches` global batches after two warm-up batches.

Reported per method: examples/s (wall, all cores) and examples per CPU
second (this process's user + system time, tf.data threads included), and
against the same method's JAX step from `train_step.json` in the output
directory (written earlier in the same `make bench` run):
`input / step` = pipeline examples/s over step examples/s (> 1: the input
outruns the step), and the share of one core the pipeline needs at the
step's rate. `cores per 1,000 ex/s` sizes an accelerator host's input
workers (e.g. a LoVT GPU step at N ex/s needs N/1000 times that many
cores). Nothing derived from ../shared is written; everything is in a
temp dir removed at exit.
"""

import json
import os
import tempfile
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging

from bench import data_prep
from bench import report

METHODS = ("lovt", "convirt")


def build_data(root: str, subjects: int) -> tuple[str, str]:
  """Synthetic tree -> converted TFRecords + tokenizer; returns both paths."""
  # pylint: disable=g-import-not-at-top
  from data_prep import mimic_cxr
  from data_prep import synthetic
  from data_prep import tokenizer
  # pylint: enable=g-import-not-at-top
  raw = os.path.join(root, "raw")
  synthetic.generate(raw, num_subjects=subjects, seed=0, image_size=512,
                     progress=False, localized=False)
  data = os.path.join(root, "tfds")
  mimic_cxr.convert(mimic_cxr_jpg_dir=os.path.join(raw, "mimic-cxr-jpg"),
                    reports_dir=os.path.join(raw, "mimic-cxr-reports"),
                    output_dir=data, image_size=256, progress=False)
  tok = os.path.join(root, "spm.model")
  with open(tok, "wb") as f:
    f.write(tokenizer.train_sentencepiece(tokenizer.read_sentences(data),
                                          1000))
  return data, tok


def time_method(method: str, data_dir: str, tok_path: str, *, batch: int,
                batches: int) -> dict[str, Any]:
  """Times `batches` batches of the method's training stream."""
  # pylint: disable=g-import-not-at-top
  import importlib
  import jax
  from jointcxr import sharding
  from jointcxr.data import augment as augment_lib
  from jointcxr.data import pipeline
  from jointcxr.data import tokenizer as tok_lib
  # pylint: enable=g-import-not-at-top
  c = importlib.import_module(f"configs.{method}").get_config()
  inp = c.input
  mesh = sharding.make_mesh([("data", 1)], jax.devices()[:1])
  it = pipeline.train_iterator(
      data_dir, split="train", global_batch_size=batch,
      tokenizer=tok_lib.load_tokenizer(tok_path),
      image_size=inp.image_size, max_tokens=inp.max_tokens,
      max_sentences=inp.max_sentences, image_aug=inp.image_aug,
      text_aug=inp.text_aug, view=inp.view, seed=0, mesh=mesh,
      data_axis="data", prefetch=inp.prefetch, hflip=inp.hflip,
      mean=inp.mean, std=inp.std, shuffle_buffer=inp.shuffle_buffer,
      aug=augment_lib.Params.from_dict(inp.aug.to_dict()))
  for _ in range(2):  # tf.data start-up and the first shuffle fill
    jax.block_until_ready(next(it))
  t, cpu = time.perf_counter(), data_prep.cpu_seconds()
  for _ in range(batches):
    jax.block_until_ready(next(it))
  wall, cpu = time.perf_counter() - t, data_prep.cpu_seconds() - cpu
  it.close()  # its prefetch thread must not run on into the next method
  n = batch * batches
  return {"method": method, "image_size": inp.image_size,
          "image_aug": inp.image_aug, "text_aug": inp.text_aug,
          "max_tokens": inp.max_tokens, "batch": batch, "batches": batches,
          "epoch_examples": it.epoch_examples, "wall_s": wall,
          "cpu_s": cpu, "examples_per_s": n / wall,
          "examples_per_cpu_s": n / cpu,
          "cores_per_1000_examples_per_s": 1000.0 / (n / cpu)}


def attach_step(rows: list[dict[str, Any]], output_dir: str) -> str | None:
  """Adds the train-step comparison from train_step.json; returns its date."""
  path = os.path.join(output_dir, "train_step.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    ts = json.load(f)
  steps = {r["method"]: r for r in ts.get("rows", []) if "error" not in r}
  for r in rows:
    s = steps.get(r["method"])
    if s is None or s.get("size", {}).get("image_size") != r["image_size"]:
      continue  # no step at this image size to compare with
    r["step_examples_per_s"] = s["jax_examples_per_s"]
    r["input_over_step"] = r["examples_per_s"] / s["jax_examples_per_s"]
    r["core_share_at_step_rate"] = (s["jax_examples_per_s"]
                                    / r["examples_per_cpu_s"])
  return ts.get("config", {}).get("date")


def to_markdown(r: dict[str, Any]) -> str:
  """The result as a Markdown section."""
  def f(x, spec):
    return "n/a" if x is None else format(x, spec)
  lines = [
      "# Training input pipeline vs the train step", "",
      f"{r['date']}, {r['cpu_count']} CPUs; synthetic MIMIC-CXR "
      f"({r['subjects']} subjects, {r['train_examples']} train studies) "
      "converted at 256 px as JPEG; the trainer's own stream on a one-device"
      f" mesh, {r['batches']} batches after 2 warm-up. Step figures: "
      f"train_step.json ({r['train_step_date'] or 'absent: n/a'}).", "",
      "| method | px | image aug | text aug | tokens | ex/s (wall) | "
      "ex per CPU s | cores per 1,000 ex/s | JAX step ex/s | input / step |"
      " core share at step rate |",
      "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for m in r["methods"]:
    lines.append(
        f"| {m['method']} | {m['image_size']} | {m['image_aug']} | "
        f"{m['text_aug']} | {m['max_tokens']} | {m['examples_per_s']:.1f} |"
        f" {m['examples_per_cpu_s']:.1f} | "
        f"{m['cores_per_1000_examples_per_s']:.1f} | "
        f"{f(m.get('step_examples_per_s'), '.2f')} | "
        f"{f(m.get('input_over_step'), '.1f')} | "
        f"{f(m.get('core_share_at_step_rate'), '.3f')} |")
  return "\n".join(lines + [""])


def run(output_dir: str, *, methods: Sequence[str], subjects: int,
        batch: int, batches: int) -> dict[str, Any]:
  """Builds the data, times every method; returns the result."""
  with tempfile.TemporaryDirectory(prefix="bench_input_") as root:
    data, tok = build_data(root, subjects)
    rows = []
    for m in methods:
      print(f"[bench.input_pipeline] {m} ...", flush=True)
      rows.append(time_method(m, data, tok, batch=batch, batches=batches))
  r = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
       "cpu_count": os.cpu_count(), "subjects": subjects,
       "train_examples": rows[0]["epoch_examples"] if rows else 0,
       "batches": batches, "methods": rows}
  r["train_step_date"] = attach_step(rows, output_dir)
  return r


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program)."""
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where input_pipeline.{json,md} go (and where "
                      "train_step.json is read).")
  flags.DEFINE_list("methods", list(METHODS), "Methods' input configs.")
  flags.DEFINE_integer("subjects", 48, "Synthetic subjects to convert.")
  flags.DEFINE_integer("batch", 32, "Global batch size.")
  flags.DEFINE_integer("batches", 20, "Timed batches per method.")


def main(argv: Sequence[str]) -> None:
  """absl entry point."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # not a line per skipped study
  fl = flags.FLAGS
  unknown = sorted(set(fl.methods) - set(METHODS))
  if unknown:
    raise app.UsageError(f"unknown methods {unknown}; expected some of "
                         f"{list(METHODS)}")
  if min(fl.subjects, fl.batch, fl.batches) < 1:
    raise app.UsageError("--subjects, --batch and --batches must be positive")
  r = run(fl.output_dir, methods=fl.methods, subjects=fl.subjects,
          batch=fl.batch, batches=fl.batches)
  paths = report.write_pair(fl.output_dir, "input_pipeline", r,
                            to_markdown(r))
  print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _define_flags()
  app.run(main)
