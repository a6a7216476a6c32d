r"""Hsu et al.'s tables: supervision fraction x regime x text family, sections.

    python -m jointcxr.hsu.sweep --config=configs/hsu.py:tiny --workdir=W \
        --config.input.data_dir=D

(also reached from `python -m jointcxr.eval_global ... :hsu` through
`run_sweep`). Features are extracted once and cached in the workdir exactly
as `jointcxr.hsu.train` does, so a sweep after a training run starts at the
alignment. Cells:

- every `sweep.texts` family x `sweep.regimes` regime x `sweep.fractions`
  fraction, on `text.section`. EA at fraction 0 is undefined and shown as
  "n/a". Adv never uses pairs, so it is computed once per family and the
  same numbers fill its row (marked in the JSON as `shared_across_fractions`).
- the section comparison: every family on each of `sweep.sections`, with
  `sweep.section_regime` at `sweep.section_fraction` (default EA with all
  pairs).

Writes `W/eval/hsu_sweep.json` (nested results) and `W/eval/hsu_sweep.md`
(one Markdown table per metric: mean cosine of true pairs, MRR T->I and
I->T, nDCG@1 and nDCG@100 T->I; rows = family and regime, columns =
fraction) and returns {"results": ..., "markdown": ...}.
"""

import json
import math
import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections as mlc
from tqdm import tqdm

from jointcxr.hsu import pipeline
from jointcxr.hsu import train as hsu_train

FLAGS = flags.FLAGS

METRICS = (
    ("retrieval/pair_cosine", "Similarity: mean cosine of aligned true pairs"),
    ("retrieval/t2i/MRR", "MRR, text -> image"),
    ("retrieval/i2t/MRR", "MRR, image -> text"),
    ("retrieval/t2i/nDCG@1", "nDCG@1, text -> image"),
    ("retrieval/t2i/nDCG@100", "nDCG@100, text -> image"),
)


def define_flags() -> None:
  """Flags of the binary (defined only when run as a program)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Hsu config.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory (features cache).")


def _keep(m: dict) -> dict:
  keys = [k for k, _ in METRICS]
  out = {k: m[k] for k in keys if k in m}
  out.update({f"random_map/{k}": m[f"random_map/{k}"] for k in keys
              if f"random_map/{k}" in m})
  out.update({k: v for k, v in m.items() if k.startswith(("meta/", "adv/"))})
  return out


def _fmt(v) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  return f"{v:.4f}"


def markdown(results: dict, config: mlc.ConfigDict) -> str:
  """The sweep and section tables as Markdown."""
  sw = config.sweep
  fr = [str(f) for f in sw.fractions]
  lines = [f"## Hsu et al.: supervision sweep (section "
           f"{config.text.section})", ""]
  for key, title in METRICS:
    lines += [f"### {title}", "",
              "| text | regime | " + " | ".join(fr) + " |",
              "|---|---|" + "---|" * len(fr)]
    for text, by_regime in results["sweep"].items():
      for regime, cells in by_regime.items():
        vals = [_fmt((cells.get(f) or {}).get(key)) for f in fr]
        lines.append(f"| {text} | {regime} | " + " | ".join(vals) + " |")
      rnd = next((c for cells in by_regime.values() for c in cells.values()
                  if c), {})
      lines.append(f"| {text} | random map | " + " | ".join(
          [_fmt(rnd.get(f"random_map/{key}"))] * len(fr)) + " |")
    lines.append("")
  secs = list(sw.sections)
  lines += [f"## Hsu et al.: report sections ({sw.section_regime}, "
            f"fraction {sw.section_fraction})", "",
            "| text | metric | " + " | ".join(secs) + " |",
            "|---|---|" + "---|" * len(secs)]
  for text, by_sec in results["sections"].items():
    for key, title in METRICS:
      lines.append(f"| {text} | {title} | " + " | ".join(
          _fmt(by_sec[s].get(key)) for s in secs) + " |")
  return "\n".join(lines) + "\n"


def run_sweep(config: mlc.ConfigDict, workdir: str) -> dict:
  """Runs every cell of the sweep and the section table.

  Args:
    config: a `configs/hsu.py` config (`sweep` block).
    workdir: run directory (the features cache is shared with training).

  Returns:
    {"results": {"sweep": {text: {regime: {fraction: metrics | None}}},
    "sections": {text: {section: metrics}}}, "markdown": str}.

  Raises:
    ValueError: not a Hsu config, or unusable data.
  """
  hsu_train._check(config)  # pylint: disable=protected-access
  for r in config.sweep.regimes:
    if r not in pipeline.REGIMES:
      raise ValueError(f"sweep.regimes: unknown regime {r!r}")
  cache_dir = os.path.join(workdir, "features", hsu_train.data_key(config))
  train, ev, _ = hsu_train.load_studies(config, cache_dir)
  sw = config.sweep
  results = {"sweep": {}, "sections": {}}
  cells = len(sw.texts) * (len(sw.regimes) * len(sw.fractions) +
                           len(sw.sections))
  bar = tqdm(total=cells, disable=not config.progress, desc="hsu sweep")

  def one(text, section, regime, fraction):
    tr, te, x_tr, x_te, info = hsu_train.text_arrays(
        config, train, ev, cache_dir, text, section)
    m, _ = pipeline.run(tr.image, x_tr, te.image, x_te, te.labels, config,
                        regime=regime, fraction=fraction, seed=config.seed)
    m.update(info)
    return _keep(m)

  for text in sw.texts:
    by_regime = results["sweep"].setdefault(text, {})
    for regime in sw.regimes:
      row, shared = {}, None
      for f in sw.fractions:
        if regime == "ea" and f == 0:
          row[str(f)] = None
        elif regime == "adv":
          shared = shared or dict(one(text, config.text.section, "adv", 0.0),
                                  shared_across_fractions=1.0)
          row[str(f)] = shared
        else:
          row[str(f)] = one(text, config.text.section, regime, f)
        bar.update(1)
      by_regime[regime] = row
    for section in sw.sections:
      results["sections"].setdefault(text, {})[section] = one(
          text, section, sw.section_regime, sw.section_fraction)
      bar.update(1)
  bar.close()
  md = markdown(results, config)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  for name, text in (("hsu_sweep.json", json.dumps(results, indent=2,
                                                   sort_keys=True)),
                     ("hsu_sweep.md", md)):
    path = os.path.join(out_dir, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
  return {"results": results, "markdown": md}


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if not FLAGS.workdir or FLAGS.config is None:
    print("error: --config and --workdir are required", file=sys.stderr)
    sys.exit(2)
  try:
    out = run_sweep(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(out["markdown"])


if __name__ == "__main__":
  from jointcxr import config_validation  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main, flags_parser=config_validation.parse_flags)
