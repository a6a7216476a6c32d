r"""Hsu et al. 2018 end to end: features -> alignment -> retrieval metrics.

    python -m jointcxr.train --config=configs/hsu.py:regime=adv,text=tfidf,tiny \
        --workdir=W --config.input.data_dir=D

(`jointcxr.train` dispatches here when `config.method == "hsu"`.) The run:

1. Image features (frozen DenseNet avgpool) and the report texts/labels of
   the training and evaluation splits, cached under
   `W/features/<key>/` as .npy + JSON (key = hash of the data and image
   settings), so re-runs and sweeps skip the network.
2. Text features of `config.text.family` on `config.text.section`, fitted
   on the training split and cached next to them. Studies whose section is
   empty are dropped from that run and counted (`data/*/empty_section`).
3. `pipeline.run`: preprocessing, alignment in `config.align.regime` with
   `config.align.fraction` supervision, evaluation.
4. Outputs: `W/eval/hsu.json` + `.md` (flat metrics), an orbax checkpoint
   of W, the preprocessing arrays and the discriminator in
   `W/hsu/checkpoint`, TensorBoard scalars (adversarial epochs and the
   final metrics) through clu, and `W/config.json`.
"""

import hashlib
import json
import os

from absl import logging
import jax
import ml_collections as mlc
import numpy as np

from jointcxr.evaluators import report
from jointcxr.hsu import data as data_lib
from jointcxr.hsu import features
from jointcxr.hsu import image_features
from jointcxr.hsu import pipeline


def _check(config: mlc.ConfigDict) -> None:
  if config.method != "hsu":
    raise ValueError(f"not a Hsu config (method={config.method!r})")
  if not config.input.data_dir:
    raise ValueError("input.data_dir is empty (set --config.input.data_dir "
                     "to a converted dataset)")
  if config.log_every_steps <= 0 or config.total_steps <= 0:
    raise ValueError("total_steps and log_every_steps must be positive")


def data_key(config: mlc.ConfigDict) -> str:
  """Cache key of the studies: data, splits, limits and image settings."""
  inp = config.input
  blob = dict(data=os.path.abspath(inp.data_dir), train=inp.train_split,
              eval=inp.eval_split, lt=inp.limit_train, le=inp.limit_eval,
              mean=inp.mean, std=inp.std,
              image=image_features.config_key(config.image, inp.image_size,
                                              config.seed))
  return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()
                        ).hexdigest()[:12]


def load_studies(config: mlc.ConfigDict, cache_dir: str
                 ) -> tuple[data_lib.Studies, data_lib.Studies, dict]:
  """Training and evaluation studies with image features (cached).

  Returns:
    (train, eval, skip counts as flat metrics).
  """
  inp = config.input
  os.makedirs(cache_dir, exist_ok=True)
  extractor = None
  out, skips = [], {}
  for name, split, limit in (("train", inp.train_split, inp.limit_train),
                             ("eval", inp.eval_split, inp.limit_eval)):
    studies = data_lib.Studies.load(cache_dir, name)
    info_path = os.path.join(cache_dir, f"{name}_skips.json")
    if studies is None:
      if extractor is None:
        model, variables = image_features.variables_for(
            config.image, inp.image_size, config.seed)
        extractor = image_features.Extractor(model, variables,
                                             inp.batch_size)
      studies, sk = data_lib.read_split(
          inp.data_dir, split, extract=extractor, image_size=inp.image_size,
          mean=inp.mean, std=inp.std, batch_size=inp.batch_size,
          limit=limit, progress=config.progress)
      with open(info_path, "w") as f:
        json.dump(sk, f)
      studies.save(cache_dir, name)
    with open(info_path) as f:
      skips.update({f"data/{name}/{k}": float(v) for k, v in json.load(
          f).items()})
    out.append(studies)
  return out[0], out[1], skips


def import_features(config: mlc.ConfigDict, workdir: str,
                    train: data_lib.Studies, ev: data_lib.Studies,
                    text: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> str:
  """Puts precomputed features into a run's cache; returns its directory.

  A later `train_and_evaluate` or sweep with the same config and workdir
  then reads them instead of running the DenseNet (and, with `text`, the
  `config.text.family` encoder on `config.text.section`): e.g. image
  features of a network trained elsewhere, or planted features in tests.

  Args:
    config: the Hsu config the run will use (its cache keys).
    workdir: the run's workdir.
    train: training studies, `image` holding their features.
    ev: evaluation studies.
    text: optional (train, eval) text features, one row per study that
      keeps the section (`Studies.with_section` order).

  Returns:
    The cache directory written.
  """
  cache_dir = os.path.join(workdir, "features", data_key(config))
  os.makedirs(cache_dir, exist_ok=True)
  for name, studies in (("train", train), ("eval", ev)):
    # Skip counts first: `Studies.save` writes the file that marks the
    # split's cache complete last.
    with open(os.path.join(cache_dir, f"{name}_skips.json"), "w") as f:
      json.dump({"no_image": 0}, f)
    studies.save(cache_dir, name)
  if text is not None:
    section = config.text.section
    sizes = (len(train.with_section(section)[0]),
             len(ev.with_section(section)[0]))
    if tuple(len(t) for t in text) != sizes:
      raise ValueError(f"text features have {[len(t) for t in text]} rows; "
                       f"the studies keeping {section!r} are {list(sizes)}")
    key = features.text_key(config.text.family, section, config.text,
                            config.seed, os.path.basename(cache_dir))
    features.cached_text(cache_dir, key, ("train", "eval"), lambda: (
        [np.asarray(t, np.float32) for t in text],
        {"empty": [int((np.abs(t).sum(1) == 0).sum()) for t in text]}))
  return cache_dir


def text_arrays(config: mlc.ConfigDict, train: data_lib.Studies,
                ev: data_lib.Studies, cache_dir: str, family: str,
                section: str):
  """Section-filtered studies and their text features (cached).

  Returns:
    (train studies, eval studies, train text [N, D], eval text, metrics).
  """
  tr, drop_tr = train.with_section(section)
  te, drop_te = ev.with_section(section)
  if len(tr) < 2 or len(te) < 1:
    raise data_lib.HsuDataError(
        f"section {section!r} is empty in too many studies: {len(tr)} "
        f"training and {len(te)} evaluation studies keep it")
  key = features.text_key(family, section, config.text, config.seed,
                          os.path.basename(cache_dir))
  (x_tr, x_te), stats = features.cached_text(
      cache_dir, key, ("train", "eval"),
      lambda: features.compute_text(
          family, tr.texts(section), [tr.texts(section), te.texts(section)],
          config.text, seed=config.seed, word_corpus=train.texts("both"),
          train_labels=tr.labels))
  info = {"data/train/empty_section": float(drop_tr),
          "data/eval/empty_section": float(drop_te),
          "data/train/empty_text": float(stats["empty"][0]),
          "data/eval/empty_text": float(stats["empty"][1])}
  return tr, te, x_tr, x_te, info


def save_checkpoint(path: str, artefacts: dict) -> None:
  """Orbax checkpoint of the alignment (overwrites an existing one)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  tree = jax.tree.map(np.asarray, artefacts)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.abspath(path), tree, force=True)
    ckpt.wait_until_finished()


def restore_checkpoint(workdir: str) -> dict:
  """The alignment saved by `train_and_evaluate` (numpy arrays).

  Raises:
    FileNotFoundError: no checkpoint in the workdir.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.path.join(workdir, "hsu", "checkpoint"))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{workdir}: no Hsu checkpoint at {path}")
  with ocp.StandardCheckpointer() as ckpt:
    return jax.tree.map(np.asarray, ckpt.restore(path))


def train_and_evaluate(config: mlc.ConfigDict, workdir: str) -> dict:
  """Runs the whole Hsu pipeline from a config; returns the flat metrics.

  Args:
    config: a `configs/hsu.py` config.
    workdir: output directory (features cache, eval JSON, checkpoint).

  Returns:
    Flat dict of floats (also written to `workdir/eval/hsu.json`).

  Raises:
    ValueError: a bad config or unusable data (one-line message).
  """
  _check(config)
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  main = jax.process_index() == 0
  if main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  cache_dir = os.path.join(workdir, "features", data_key(config))
  train, ev, skips = load_studies(config, cache_dir)
  family, section = config.text.family, config.text.section
  tr, te, x_tr, x_te, info = text_arrays(config, train, ev, cache_dir,
                                         family, section)
  writer = metric_writers.create_default_writer(workdir,
                                                just_logging=not main)

  def log_fn(epoch: int, row: dict) -> None:
    logging.info("adversarial epoch %d: %s", epoch, row)
    writer.write_scalars(epoch * config.log_every_steps,
                         {f"adv/{k}": v for k, v in row.items()})

  metrics, art = pipeline.run(
      tr.image, x_tr, te.image, x_te, te.labels, config,
      regime=config.align.regime, fraction=config.align.fraction,
      seed=config.seed, log_fn=log_fn)
  metrics.update(skips)
  metrics.update(info)
  writer.write_scalars(config.total_steps, metrics)
  writer.flush()
  if main:
    save_checkpoint(os.path.join(workdir, "hsu", "checkpoint"), art)
    title = (f"Hsu et al.: {config.align.regime}, text={family}, "
             f"section={section}, fraction={config.align.fraction}")
    jpath, _ = report.write(os.path.join(workdir, "eval"), "hsu", metrics,
                            title)
    logging.info("wrote %s", jpath)
  return metrics
