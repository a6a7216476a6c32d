r"""Localized evaluation binary: segmentation/detection probes + grounding.

    python -m jointcxr.eval_localized --config=configs/eval/localized.py[:tiny] \
        --workdir=W --config.datasets.rsna=R ...

For each task ("dataset/probe/mode/percent") the pretrained image tower
(frozen or fine-tuned) gets a new head; the learning rate is picked on the
validation split, then `seeds` runs give mean +- std and a 95% CI on test.
The same protocol runs for each baseline (random init). Writes
`W/eval/localized.json` (keys like `seg/siim/unet-frozen-100/dice_mean`,
`det/rsna/detection-frozen-10/map_mean`, `random/seg/...`, and
`grounding/ms_cxr/pointing_game`) and `W/eval/localized.md`.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np

from jointcxr import config_validation
from jointcxr import loading
from jointcxr import logging_setup
from jointcxr.data import localized as loc_data
from jointcxr.evaluators import common
from jointcxr.evaluators import detection
from jointcxr.evaluators import grounding
from jointcxr.evaluators import probes
from jointcxr.evaluators import report
from jointcxr.evaluators import segmentation

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the binary (defined only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "Eval config.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Training workdir.")

FRACTION_SPLIT = {"1": "train_1pct", "10": "train_10pct", "100": "train"}


def _load(data_dir, split, size, limit):
  return loc_data.load_split(data_dir, split, size, limit or None)


def feature_grids(tower, tower_vars: dict, size: int) -> list[int]:
  """Side of the conv3 / conv4 / conv5 maps of `tower` at `size` px (the
  detection scales; not size // 8, 16, 32 when output_stride < 32)."""
  out = jax.eval_shape(lambda: tower.apply(
      tower_vars, jax.numpy.zeros((1, size, size, 1)), train=False))
  return [int(out[k].shape[1]) for k in detection.SCALES]


def make_task(kind: str, train, val, test, config,
              grids: list[int] | None = None) -> probes.Task:
  """A probe task of `kind` (linear | unet | detection).

  `grids`: the detection scales' map sides (`feature_grids`); default the
  stride-8/16/32 sides of the images.
  """
  n_cls = train.masks.shape[-1]
  if kind in ("linear", "unet"):
    head = (segmentation.LinearSegHead(n_cls) if kind == "linear" else
            segmentation.UNetHead(n_cls, tuple(config.unet_widths)))
    return probes.Task(
        train.images, train.masks, val.images, val.masks, test.images,
        test.masks, segmentation.dice_loss, segmentation.seg_targets,
        segmentation.evaluate_dice, head)
  n_cls = len(train.class_names)
  wh = np.concatenate([np.stack([b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]], -1)
                       for b in train.boxes if len(b)] or [np.zeros((0, 2))])
  anchors = detection.kmeans_anchors(wh)
  size = train.images.shape[1]
  grids = grids or [size // 8, size // 16, size // 32]
  metric = "froc" if "object" in config.get("_dataset", "") else "map"

  def targets(y, idx, flip):
    bx = [y[0][i].copy() for i in idx]
    if flip:
      for b in bx:
        b[:, [1, 3]] = 1.0 - b[:, [3, 1]]
    return detection.build_targets(bx, [y[1][i] for i in idx], grids,
                                   anchors, n_cls)

  return probes.Task(
      train.images, (train.boxes, train.box_labels), val.images,
      (val.boxes, val.box_labels), test.images,
      (test.boxes, test.box_labels), detection.yolo_loss, targets,
      lambda pred, x, y: detection.evaluate(pred, x, y, anchors, metric),
      detection.YoloHead(n_cls, width=config.detection_width))


def run_task(spec: str, config, towers: dict, keep: dict | None = None
             ) -> dict:
  """Runs one task for the model and every baseline; returns flat metrics.

  With `keep`, the model's predict function and test split are stored
  under `keep[spec]` (for pictures).
  """
  dataset, kind, mode, pct = spec.split("/")
  data_dir = config.datasets.get(dataset, "")
  if not data_dir:
    return {}
  size, limit = config.image_size, config.limit
  train = _load(data_dir, FRACTION_SPLIT[pct], size, limit)
  val = _load(data_dir, "validation", size, limit)
  test = _load(data_dir, "test", size, limit)
  with config.unlocked():
    config._dataset = dataset  # pylint: disable=protected-access
  grids = (feature_grids(*next(iter(towers.values())), train.images.shape[1])
           if kind == "detection" else None)
  task = make_task(kind, train, val, test, config, grids)
  family = "det" if kind == "detection" else "seg"
  metric = ("froc" if dataset == "object_cxr" else "map") if family == (
      "det") else "dice"
  out = {}
  for name, (tower, tv) in towers.items():
    t0 = time.time()
    res = probes.run_protocol(
        task, tower, tv, lr_grid=tuple(config.lr_grid[kind]),
        seeds=config.seeds, mode=mode, epochs=config.epochs,
        batch_size=config.batch_size,
        warmup_frozen_steps=config.warmup_frozen_steps,
        patience=config.patience)
    if keep is not None and name == "model":
      keep[spec] = (res["predict"], test)
    prefix = "" if name == "model" else f"{name}/"
    key = f"{prefix}{family}/{dataset}/{kind}-{mode}-{pct}"
    out.update({f"{key}/{metric}_mean": res["mean"],
                f"{key}/{metric}_std": res["std"],
                f"{key}/{metric}_ci95_low": res["ci95_low"],
                f"{key}/{metric}_ci95_high": res["ci95_high"],
                f"{key}/best_lr": res["best_lr"]})
    logging.info("%s [%s]: %s %.2f +- %.2f (%.0fs)", spec, name, metric,
                 res["mean"], res["std"], time.time() - t0)
    print(f"{spec} [{name}]: {metric} {res['mean']:.2f} +- {res['std']:.2f}",
          flush=True)
  return out


def evaluate(config, workdir: str, keep: dict | None = None) -> dict:
  """All configured tasks + grounding; writes JSON and Markdown."""
  source = config.model_dir or workdir
  loaded = loading.load(source, config.get("checkpoint", "latest"))
  towers = {"model": probes.image_tower(loaded.config.model,
                                        loaded.variables)}
  for b in config.baselines:
    if b != "random":
      raise ValueError(f"unknown baseline {b!r} (supported: random)")
    towers["random"] = probes.image_tower(loaded.config.model, None, seed=0,
                                          image_size=config.image_size)
  out, skipped = {}, []
  for spec in config.tasks:
    res = run_task(spec, config, towers, keep)
    if not res:
      skipped.append(spec)
    out.update(res)
  # Shortcut keys: the first task per dataset, e.g. seg/siim/dice_mean.
  for spec in config.tasks:
    dataset, kind, mode, pct = spec.split("/")
    fam = "det" if kind == "detection" else "seg"
    for k in list(out):
      if k.startswith(f"{fam}/{dataset}/{kind}-{mode}-{pct}/") and k.endswith(
          "_mean"):
        short = f"{fam}/{dataset}/{k.rsplit('/', 1)[1]}"
        out.setdefault(short, out[k])
  if config.grounding and config.datasets.get("ms_cxr"):
    split = _load(config.datasets.ms_cxr, "test", loaded.config.input.
                  image_size, config.limit)
    g = grounding.evaluate(loaded, split, loaded.config.input.mean,
                           loaded.config.input.std)
    out.update({f"grounding/ms_cxr/{k}": v for k, v in g.items()})
  out["meta/skipped_tasks"] = len(skipped)
  extra = ("\nSkipped (dataset not configured): " + ", ".join(skipped) + "\n"
           if skipped else "")
  # Every process computes the same probes (on its local devices); one
  # writer keeps a shared workdir free of racing renames.
  if jax.process_index() == 0:
    jpath, mpath = report.write(os.path.join(workdir, "eval"), "localized",
                                out, f"Localized evaluation of {source}",
                                extra)
    print(f"wrote {jpath} and {mpath}")
  return out


def main(argv):
  del argv
  logging_setup.setup()
  if not FLAGS.workdir:
    print("error: --workdir is required", file=sys.stderr)
    sys.exit(2)
  try:
    evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=config_validation.parse_flags)
