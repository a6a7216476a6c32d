r"""`make demo`: the whole product on synthetic MIMIC-format data.

    python -m jointcxr.demo --output_dir=demo_out [--subjects=900] [--steps=300]

1. synthetic MIMIC-CXR (+ localized sets) in the real formats,
2. data_prep converters to TFRecords,
3. pretraining: LoVT and a ConVIRT-style global-only baseline (and an
   untrained copy as the random-init baseline),
4. eval_global (retrieval, linear probe, zero-shot) and eval_localized
   (segmentation / detection probes, grounding) for each,
5. export of the LoVT towers,
6. `results.md` with the table and the pictures (heatmaps, retrieval grid,
   segmentation overlay, learning curves).

Numbers on synthetic data validate the machinery, not clinical performance.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the binary (defined only when run as a program, so benchmarks
  can import the demo's data and recipe functions next to their own)."""
  flags.DEFINE_string("output_dir", "demo_out", "Where everything goes.")
  flags.DEFINE_integer("subjects", DEFAULT_SUBJECTS, "Synthetic MIMIC "
                       "subjects (~2.2 studies each).")
  flags.DEFINE_integer("steps", DEFAULT_STEPS, "Pretraining steps per "
                       "method.")
  flags.DEFINE_integer("image_size", DEFAULT_SIZE, "Model input size (px).")
  flags.DEFINE_integer("seed", 0, "Seed.")


DEFAULT_SUBJECTS = 1800
DEFAULT_STEPS = 1200
DEFAULT_SIZE = 64
LOCALIZED = ("rsna", "siim", "nih", "object_cxr", "covid_rural", "ms_cxr")
TASKS = ("rsna/linear/frozen/100", "rsna/linear/frozen/10",
         "siim/linear/frozen/100", "siim/unet/frozen/100",
         "covid_rural/linear/frozen/100", "nih/linear/frozen/100",
         "rsna/detection/frozen/100")


def _step(msg: str) -> float:
  print(f"\n=== {msg}", flush=True)
  return time.time()


def _done(t0: float) -> None:
  print(f"    ({time.time() - t0:.0f}s)", flush=True)


def train_config(method_module: str, data_dir: str, steps: int, size: int,
                  tokenizer: str, seed: int):
  """The demo's recipe for one method (the `tiny` config, scaled up)."""
  import importlib  # pylint: disable=g-import-not-at-top
  cfg = importlib.import_module(f"configs.{method_module}").get_config(
      "tiny")
  cfg.total_steps = steps
  cfg.batch_size = 32
  cfg.accum_steps = 1
  cfg.ckpt_every_steps = max(50, steps // 3)
  cfg.log_every_steps = max(10, steps // 15)
  cfg.seed = seed
  cfg.input.data_dir = data_dir
  cfg.input.tokenizer = tokenizer
  cfg.input.image_size = size
  cfg.input.max_tokens = 64
  cfg.input.max_sentences = 8
  # The same image tower for every method (one footing): ResNet-18 at
  # width 16 with stride 16 (a 4 x 4 region grid at 64 px).
  cfg.model.image_model = "resnet"
  cfg.model.image = dict(depth=18, width=16, output_stride=16)
  cfg.model.text = dict(vocab_size=-1, hidden=64, layers=2, heads=4,
                        mlp_dim=128, max_len=64, max_sentences=8, dropout=0.0)
  cfg.model.heads.dim = 64
  cfg.model.heads.hidden = 128
  if method_module == "lovt":
    # LoVT's BatchNorm in the projection heads and after the cross-attention
    # slows it down at batch 32 here (validation R@10 0.10 vs 0.13-0.19
    # without, 400 steps); the demo leaves it out.
    cfg.model.heads.norm = "none"
    cfg.model.heads.attention_norm = "none"
  if method_module == "convirt":
    # ConVIRT's one random sentence per report does not learn at this
    # budget (its loss stays at ln B: most sentences are shared negatives
    # such as "No pneumothorax."); the demo trains it on the whole report,
    # which eval then embeds the same way (text_mode "auto").
    cfg.input.text_aug = "none"
  if method_module == "joimternet":
    # JoImTeRNet's own CNN and 2048-px crops do not fit a 64-px demo; its
    # losses run on the shared tower, whose regions are its words' space.
    cfg.input.image_aug = "lovt"
    cfg.model.heads = dict(dim=16 * 8)
  cfg.optim.lr = 1e-3
  cfg.optim.schedule = "warmup_cosine"
  cfg.optim.warmup_steps = max(1, steps // 20)
  cfg.evals.retrieval.limit = 256
  # Validation loss + embedding health every few logs (a collapsed run is
  # then visible in val/loss/global_over_lnB, not only in the train loss).
  cfg.val.every_steps = max(50, steps // 6)
  cfg.val.batches = 4
  return cfg


def eval_config(name: str, **overrides):
  """An eval binary's `tiny` config with dotted-key overrides."""
  import importlib  # pylint: disable=g-import-not-at-top
  cfg = importlib.import_module(f"configs.eval.{name}").get_config("tiny")
  with cfg.unlocked():
    for k, v in overrides.items():
      node, *rest = k.split(".")
      if rest:
        cfg[node][rest[0]] = v
      else:
        cfg[k] = v
  return cfg


def localized_eval_config(loc_dirs: dict, size: int, tasks=TASKS,
                          epochs: int = 8, seeds: int | None = None):
  """The demo's eval_localized config: its tasks on the converted sets."""
  cfg = eval_config("localized", image_size=size, epochs=epochs,
                    tasks=tuple(tasks), baselines=())
  with cfg.unlocked():
    for name, d in loc_dirs.items():
      cfg.datasets[name] = d
    if seeds is not None:
      cfg.seeds = seeds
    cfg.lr_grid.linear = (1e-2,)
    cfg.lr_grid.unet = (3e-3,)
    cfg.lr_grid.detection = (1e-3,)
  return cfg


def generate_data(out: str, subjects: int, seed: int,
                  localized: bool = True) -> str:
  """Step 1: synthetic MIMIC-CXR (+ localized sets) at 128 px, unless present.

  Returns:
    The raw directory (`out/raw`).
  """
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  raw = os.path.join(out, "raw")
  if not os.path.exists(os.path.join(raw, "summary.json")):
    synthetic.generate(raw, num_subjects=subjects, seed=seed, image_size=128,
                       preview=os.path.join(out, "preview.png"),
                       localized=localized)
  return raw


def convert_data(out: str, size: int, localized: bool = True) -> dict:
  """Step 2: the data_prep converters on `out/raw`, and a tokenizer.

  Returns:
    dict with `mimic_cxr` (converted dir), `localized` ({name: dir}) and
    `tokenizer` (SentencePiece model path).
  """
  # pylint: disable=g-import-not-at-top
  import importlib
  from data_prep import mimic_cxr
  from data_prep import tokenizer as tok_train
  # pylint: enable=g-import-not-at-top
  raw, data = os.path.join(out, "raw"), os.path.join(out, "tfds")
  m = mimic_cxr.convert(mimic_cxr_jpg_dir=os.path.join(raw, "mimic-cxr-jpg"),
                        reports_dir=os.path.join(raw, "mimic-cxr-reports"),
                        output_dir=os.path.join(data, "mimic_cxr"),
                        image_size=size, num_workers=os.cpu_count() or 1,
                        examples_per_shard=512)
  print(f"    mimic_cxr written {m['written']} skipped {m['skipped']}")
  loc_dirs = {}
  for name in LOCALIZED if localized else ():
    mod = importlib.import_module(f"data_prep.localized.{name}")
    d = os.path.join(data, name)
    extra = ({"mimic_cxr_jpg_dir": os.path.join(raw, "mimic-cxr-jpg")}
             if name == "ms_cxr" else {})
    mod.convert(input_dir=os.path.join(raw, name), output_dir=d,
                image_size=size, num_workers=os.cpu_count() or 1,
                progress=False, **extra)
    loc_dirs[name] = d
  tok_path = os.path.join(data, "spm.model")
  if not os.path.exists(tok_path):
    with open(tok_path, "wb") as f:
      f.write(tok_train.train_sentencepiece(tok_train.read_sentences(
          os.path.join(data, "mimic_cxr")), 1000))
  return {"mimic_cxr": os.path.join(data, "mimic_cxr"), "localized": loc_dirs,
          "tokenizer": tok_path}


def run(out: str, subjects: int, steps: int, size: int, seed: int) -> dict:
  """Runs the demo; returns the paths of its outputs."""
  out = os.path.abspath(out)
  os.makedirs(out, exist_ok=True)
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.path.join(out,
                                                              ".jax_cache"))
  from jointcxr import eval_global  # pylint: disable=g-import-not-at-top
  from jointcxr import eval_localized  # pylint: disable=g-import-not-at-top
  from jointcxr import export  # pylint: disable=g-import-not-at-top
  from jointcxr import train  # pylint: disable=g-import-not-at-top
  from jointcxr.demo_report import write_results  # pylint: disable=g-import-not-at-top
  paths = {}
  t_all = time.time()

  t = _step(f"1/6 synthetic MIMIC-CXR: {subjects} subjects at 128 px")
  generate_data(out, subjects, seed)
  paths["preview"] = os.path.join(out, "preview.png")
  _done(t)

  t = _step("2/6 data_prep: MIMIC-CXR and localized sets -> TFRecords")
  data = convert_data(out, size)
  loc_dirs, tok_path = data["localized"], data["tokenizer"]
  _done(t)

  runs = {}
  for label, module, n in (("LoVT", "lovt", steps),
                           ("ConVIRT", "convirt", steps),
                           ("random init", "lovt", 0)):
    t = _step(f"3/6 pretraining {label} ({n} steps)")
    workdir = os.path.join(out, "runs", label.replace(" ", "_").lower())
    cfg = train_config(module, data["mimic_cxr"], n, size, tok_path, seed)
    train.train_and_evaluate(cfg, workdir)
    runs[label] = workdir
    _done(t)

  results, keep = {}, {}
  for label, workdir in runs.items():
    t = _step(f"4/6 evaluating {label}: global")
    g = eval_global.evaluate(eval_config(
        "global", **{"input.data_dir": data["mimic_cxr"],
                     "limit": 0, "probe_limit": 0}), workdir)
    _done(t)
    t = _step(f"4/6 evaluating {label}: localized")
    lcfg = localized_eval_config(loc_dirs, size)
    keep[label] = {}
    loc = eval_localized.evaluate(lcfg, workdir, keep[label])
    results[label] = {**g, **loc}
    _done(t)

  t = _step("5/6 exporting the LoVT towers")
  paths["export"] = os.path.join(out, "export_lovt")
  export.export(runs["LoVT"], paths["export"], "torch")
  _done(t)

  t = _step("6/6 results table and pictures")
  paths.update(write_results(out, runs, results, keep, loc_dirs,
                             data["mimic_cxr"]))
  _done(t)
  print(f"\ndemo finished in {time.time() - t_all:.0f}s")
  for k, v in paths.items():
    print(f"  {k}: {v}")
  return paths


def main(argv):
  del argv
  # The demo's console is its six steps (our prints); the binaries' own
  # INFO lines are not shown (warnings are). --verbosity=0 shows our INFO
  # lines too, --verbosity=1 everything.
  from jointcxr import logging_setup  # pylint: disable=g-import-not-at-top
  logging_setup.setup()
  if logging.get_verbosity() < logging.DEBUG and (
      not FLAGS["verbosity"].present):
    logging.set_verbosity(logging.WARNING)
  run(FLAGS.output_dir, FLAGS.subjects, FLAGS.steps, FLAGS.image_size,
      FLAGS.seed)


if __name__ == "__main__":
  define_flags()
  app.run(main)
