r"""What the demo's linear probe can tell apart: per-label ceilings and floors.

    python -m bench.ceilings --output_dir=bench/results [--subjects=1800] \
        [--image_size=64] [--steps=1500] [--seeds=3]

On the default demo data (`jointcxr.demo`'s generator settings and
conversion), the same linear probe as `eval_global` (one logistic
regression per CheXpert label, C chosen on `validate`, AUROC on `test`) is
fitted on four feature sets:

- **raw pixels**: the eval-pipeline image, 2 x 2 average-pooled, flattened
  and projected on its first 256 principal components (fitted on train;
  they keep most of the variance, and a 1,024-dimensional logistic
  regression per label and C took ~25 CPU-minutes on 3,000 studies);
- **random-init tower**: the demo's image tower (ResNet-18, width 16) as
  initialised, global average-pooled features (`seeds` inits);
- **supervised tower**: the same tower trained on the CheXpert labels
  (U-ones, missing = negative; binary cross-entropy) with the demo's image
  augmentation, batch and optimiser for `steps` steps (by default 5x the
  demo's pretraining budget: a ceiling, not a competitor), then frozen and
  probed the same way (`seeds` runs) — what a tower that learned the
  findings can show through this probe;
- **TF-IDF text**: word 1-2-gram TF-IDF of the report (findings +
  impression) — how much the text says.

A pretraining method is measurable on this benchmark only if the
random-init and raw-pixel floors sit clearly below the supervised ceiling;
the table says by how much, label by label. Writes `ceilings.json` and
`ceilings.md`.
"""

import os
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
import numpy as np

from bench import report


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program)."""
  flags.DEFINE_string("output_dir", "bench/results", "Where ceilings.* go.")
  flags.DEFINE_string("work_dir", "", "Data/run directory (default: temp).")
  flags.DEFINE_integer("subjects", 0, "Synthetic MIMIC subjects (0: the "
                       "demo's).")
  flags.DEFINE_integer("image_size", 64, "Model input size (px).")
  flags.DEFINE_integer("steps", 1500, "Supervised training steps.")
  flags.DEFINE_integer("seeds", 3, "Random-init / supervised repetitions.")
  flags.DEFINE_integer("seed", 0, "Data seed.")


def supervised_tower(cfg, seed: int) -> tuple[Any, dict]:
  """Trains the config's image tower on the CheXpert labels.

  Args:
    cfg: a training config (`demo.train_config`): its input stream,
      augmentation, image tower, batch size, step count and optimiser.
    seed: run seed (init and stream).

  Returns:
    (tower module, its variables {params, batch_stats}).
  """
  # pylint: disable=g-import-not-at-top
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax
  from jointcxr import optim
  from jointcxr import sharding
  from jointcxr.data import augment
  from jointcxr.data import pipeline
  from jointcxr.data import tokenizer as tok_lib
  from jointcxr.evaluators import probes
  # pylint: enable=g-import-not-at-top
  tower, tv = probes.image_tower(cfg.model, None, seed=seed,
                                 image_size=cfg.input.image_size)
  n_labels = pipeline.NUM_LABELS
  head = nn.Dense(n_labels)
  hp = head.init(jax.random.PRNGKey(seed + 1), jnp.zeros((1, tower_dim(
      tower, tv, cfg.input.image_size))))["params"]
  params = {"tower": tv["params"], "head": hp}
  stats = tv.get("batch_stats", {})
  tx = optim.Optimizer(cfg.optim.to_dict(), params, cfg.total_steps,
                       1).tx
  opt_state = tx.init(params)
  mesh = sharding.make_mesh([("data", -1)], jax.devices()[:1])
  inp = cfg.input
  it = pipeline.train_iterator(
      inp.data_dir, global_batch_size=cfg.batch_size,
      tokenizer=tok_lib.load_tokenizer(inp.tokenizer),
      image_size=inp.image_size, max_tokens=inp.max_tokens,
      max_sentences=inp.max_sentences, image_aug=inp.image_aug,
      view=inp.view, seed=seed, mesh=mesh, hflip=inp.hflip, mean=inp.mean,
      std=inp.std, shuffle_buffer=inp.shuffle_buffer,
      aug=augment.Params.from_dict(inp.aug.to_dict()))

  @jax.jit
  def step(params, stats, opt_state, image, labels, present):
    def loss_fn(p):
      out, mut = tower.apply({"params": p["tower"], "batch_stats": stats},
                             image, train=True, mutable=["batch_stats"])
      logits = head.apply({"params": p["head"]}, out["global"])
      # U-ones; a missing label counts as negative (as the probe's targets).
      y = (present & (labels != 0)).astype(jnp.float32)
      return optax.sigmoid_binary_cross_entropy(logits, y).mean(), mut
    (loss, mut), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(g, opt_state, params)
    return (optax.apply_updates(params, updates), mut["batch_stats"],
            opt_state, loss)

  try:
    with jax.set_mesh(mesh):
      for _ in range(cfg.total_steps):
        b = next(it)
        params, stats, opt_state, _ = step(params, stats, opt_state,
                                           b["image"], b["labels"],
                                           b["labels_present"])
  finally:
    it.close()
  return tower, {"params": params["tower"], "batch_stats": stats}


def tower_dim(tower, variables: dict, size: int) -> int:
  """Width of the tower's global feature."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  out = jax.eval_shape(lambda: tower.apply(variables, jnp.zeros(
      (1, size, size, 1)), train=False))
  return int(out["global"].shape[-1])


def eval_arrays(cfg, split: str) -> dict[str, np.ndarray]:
  """Eval-pipeline images, binary labels (U-ones) and report text."""
  # pylint: disable=g-import-not-at-top
  from jointcxr.data import pipeline
  from jointcxr.data import tokenizer as tok_lib
  from jointcxr.evaluators import classification
  import tensorflow_datasets as tfds
  # pylint: enable=g-import-not-at-top
  inp = cfg.input
  gen, _ = pipeline.eval_batches(
      inp.data_dir, split=split, global_batch_size=64,
      tokenizer=tok_lib.load_tokenizer(inp.tokenizer),
      image_size=inp.image_size, max_tokens=inp.max_tokens,
      max_sentences=inp.max_sentences, mean=inp.mean, std=inp.std,
      process_index=0, process_count=1)
  keep = {"image": [], "labels": [], "present": [], "sid": []}
  for b in gen:
    m = b["mask"]
    for k, src in (("image", "image"), ("labels", "labels"),
                   ("present", "labels_present"), ("sid", "study_id")):
      keep[k].append(b[src][m])
  arr = {k: np.concatenate(v) for k, v in keep.items()}
  text = {}
  builder = tfds.builder_from_directory(inp.data_dir)
  for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
    text[int(ex["study_id"])] = (ex["findings"].decode() + " " +
                                 ex["impression"].decode())
  arr["text"] = np.array([text[int(s)] for s in arr["sid"]])
  arr["y"] = classification.binary_labels(arr.pop("labels"),
                                          arr.pop("present"))
  return arr


def pooled_pixels(images: np.ndarray) -> np.ndarray:
  """[N, H, W, 1] -> [N, H/2 * W/2] 2 x 2 average-pooled pixels."""
  n, h, w, _ = images.shape
  x = images[:, :h // 2 * 2, :w // 2 * 2, 0]
  return x.reshape(n, h // 2, 2, w // 2, 2).mean((2, 4)).reshape(n, -1)


def tower_features(tower, variables: dict, images: np.ndarray) -> np.ndarray:
  """Global average-pooled features of eval images (batches of 64)."""
  import jax  # pylint: disable=g-import-not-at-top
  fn = jax.jit(lambda x: tower.apply(variables, x, train=False)["global"])
  return np.concatenate([np.asarray(fn(images[s:s + 64]))
                         for s in range(0, len(images), 64)])


def pca_pixels(train: np.ndarray, *others: np.ndarray, dim: int = 256
               ) -> list[np.ndarray]:
  """Pooled pixels of every set projected on train's top `dim` PCs."""
  x = pooled_pixels(train)
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  basis = vt[:dim].T
  return [(pooled_pixels(a) - mean) @ basis for a in (train, *others)]


def measure(work_dir: str, subjects: int = 0, image_size: int = 64,
            steps: int = 1500, seeds: int = 3, seed: int = 0) -> dict:
  """Builds the demo data (if absent) and fits the four probes."""
  # pylint: disable=g-import-not-at-top
  from sklearn.feature_extraction import text as sk_text
  from jointcxr import demo
  from jointcxr.evaluators import classification
  from jointcxr.evaluators import localized_metrics
  from jointcxr.evaluators import probes
  # pylint: enable=g-import-not-at-top
  t0 = time.time()
  subjects = subjects or demo.DEFAULT_SUBJECTS
  demo.generate_data(work_dir, subjects, seed, localized=False)
  data = demo.convert_data(work_dir, image_size, localized=False)
  cfg = demo.train_config("convirt", data["mimic_cxr"], steps, image_size,
                          data["tokenizer"], seed)
  sets = {s: eval_arrays(cfg, s) for s in ("train", "validate", "test")}
  say = lambda msg: print(f"[ceilings] {msg} ({time.time() - t0:.0f}s)",
                          flush=True)
  say("data ready")
  probe = lambda f: classification.linear_probe(
      f("train"), sets["train"]["y"], f("validate"), sets["validate"]["y"],
      f("test"), sets["test"]["y"])
  runs: dict[str, list[dict]] = {}
  splits = ("train", "validate", "test")
  pixels = dict(zip(splits, pca_pixels(*(sets[s]["image"] for s in splits))))
  runs["raw pixels"] = [probe(lambda s: pixels[s])]
  say("raw-pixel probe done")
  tfidf = sk_text.TfidfVectorizer(ngram_range=(1, 2), min_df=2,
                                  max_features=2000).fit(
      sets["train"]["text"])
  runs["TF-IDF text"] = [probe(lambda s: tfidf.transform(
      sets[s]["text"]).toarray())]
  say("TF-IDF probe done")
  for name in ("random-init tower", "supervised tower"):
    runs[name] = []
    for k in range(seeds):
      if name == "random-init tower":
        tower, tv = probes.image_tower(cfg.model, None, seed=k,
                                       image_size=image_size)
      else:
        tower, tv = supervised_tower(cfg, seed + k)
      feats = {s: tower_features(tower, tv, sets[s]["image"]) for s in sets}
      runs[name].append(probe(lambda s, f=feats: f[s]))
      say(f"{name} {k + 1}/{seeds} done")
  labels = sorted({k.split("/", 2)[2] for r in runs.values() for d in r
                   for k in d if k.startswith("probe/auroc/")})
  table: dict[str, dict[str, dict]] = {}
  for name, rs in runs.items():
    table[name] = {}
    for lab in labels + ["mean"]:
      key = "probe/auroc_mean" if lab == "mean" else f"probe/auroc/{lab}"
      vals = [r[key] for r in rs if key in r]
      if vals:
        table[name][lab] = localized_metrics.mean_std_ci(vals)
  return {"subjects": subjects, "image_size": image_size, "steps": steps,
          "seeds": seeds, "test_studies": int(len(sets["test"]["y"])),
          "positives_test": {lab: int(sets["test"]["y"][:, j].sum())
                             for j, lab in enumerate(
                                 classification.CHEXPERT_LABELS)},
          "table": table, "seconds": time.time() - t0}


def to_markdown(r: dict) -> str:
  """The per-label table (AUROC, mean and 95% CI over runs)."""
  cols = ["raw pixels", "random-init tower", "supervised tower",
          "TF-IDF text"]
  lines = [f"# Probe ceilings on the demo data ({r['subjects']} subjects, "
           f"{r['image_size']} px, {r['test_studies']} test studies)", "",
           "Linear-probe test AUROC per CheXpert label (the `eval_global` "
           f"probe). Towers: {r['seeds']} runs each, mean [95% CI]; the "
           f"supervised tower trained {r['steps']} steps with the demo's "
           "recipe. Written by `python -m bench.ceilings`.", "",
           "| label (test positives) | " + " | ".join(cols) + " |",
           "|---|" + "---:|" * len(cols)]
  labels = [k for k in r["table"]["supervised tower"] if k != "mean"]
  for lab in labels + ["mean"]:
    cells = []
    for c in cols:
      s = r["table"].get(c, {}).get(lab)
      if s is None:
        cells.append("n/a")
      elif s["n"] > 1:
        cells.append(f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, "
                     f"{s['ci95'][1]:.3f}]")
      else:
        cells.append(f"{s['mean']:.3f}")
    name = ("**mean of labels**" if lab == "mean" else
            f"{lab} ({r['positives_test'].get(lab, 0)})")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  t = r["table"]
  gap = t["supervised tower"]["mean"]["mean"] - max(
      t["random-init tower"]["mean"]["mean"], t["raw pixels"]["mean"]["mean"])
  lines += ["", f"Supervised ceiling minus the better floor (mean AUROC): "
            f"{gap:+.3f}. {r['seconds']:.0f} s."]
  return "\n".join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  work = f.work_dir or tempfile.mkdtemp(prefix="jointcxr_ceilings_")
  os.makedirs(work, exist_ok=True)
  r = measure(work, f.subjects, f.image_size, f.steps, f.seeds, f.seed)
  paths = report.write_pair(f.output_dir, "ceilings", r, to_markdown(r))
  print(to_markdown(r))
  print("wrote", *paths)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
