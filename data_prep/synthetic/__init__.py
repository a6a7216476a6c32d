"""Synthetic MIMIC-CXR (and localized sets) written in the real formats.

MIMIC-CXR is credentialed, so the project ships a generator whose output has
the exact layouts of the real datasets: the real converters, the trainer,
every probe and every benchmark run on it, and on the real data unchanged.
Images are phantom radiographs with findings rendered where the report places
them; `ground_truth.jsonl` records every finding with its box and mask.

    python -m data_prep.synthetic --output_dir=/tmp/syn --num_subjects=100

Output layout (under output_dir): `mimic-cxr-jpg/`, `mimic-cxr-reports/`,
`siim/`, `rsna/`, `nih/`, `object_cxr/`, `covid_rural/`, `ms_cxr/`, `openi/`,
`ground_truth.jsonl`, `summary.json`.
"""

import json
import multiprocessing
import os

import numpy as np
import tqdm

from data_prep.synthetic import localized as loc
from data_prep.synthetic import mimic
from data_prep.synthetic import openi
from data_prep.synthetic import preview as preview_lib


def _split_subjects(ids: list[int], rng: np.random.Generator) -> dict:
  """Patient-disjoint train / validate / test (about 80 / 10 / 10)."""
  order = rng.permutation(len(ids))
  n = len(ids)
  n_val = max(1, n // 10) if n >= 3 else 0
  n_test = max(1, n // 10) if n >= 3 else 0
  out = {}
  for rank, i in enumerate(order):
    out[ids[i]] = ("validate" if rank < n_val else "test"
                   if rank < n_val + n_test else "train")
  return out


def _localized_task(task: tuple) -> tuple[int, list[dict]]:
  """Writes one localized set (runs in a worker process)."""
  name, root, size, seed, n = task
  if name == "openi":
    return openi.write(root, n, size, seed), []
  ctx = loc.Ctx(root, size, seed, n, [])
  return getattr(loc, name)(ctx), ctx.truth


def generate(output_dir: str, *, num_subjects: int, seed: int = 0,
             image_size: int | str = 512, progress: bool = True,
             localized: bool = True, preview: str | None = None,
             num_workers: int | None = None,
             variation: float = 1.0) -> dict:
  """Writes the whole synthetic tree; deterministic per arguments.

  Args:
    output_dir: destination (created).
    num_subjects: MIMIC subjects (each with 1-4 studies of 1-3 images).
    seed: the seed; same seed and arguments give byte-identical files.
    image_size: image height in pixels, or "full" for MIMIC size (3056 x
      2544).
    progress: show progress bars.
    localized: also write the localized-evaluation sets and Open-i.
    preview: optional PNG path for a grid of images with their findings
      outlined and reports beside them.
    num_workers: rendering processes (default: all cores); the output does
      not depend on it.
    variation: how much MIMIC patients' position, size, rotation, shape,
      habitus, breath and exposure vary (1: realistic ranges, 0: one fixed
      phantom, as early versions rendered; in between: scaled toward it).

  Returns:
    A summary dict (also written to output_dir/summary.json).
  """
  if image_size != "full":
    image_size = int(image_size)
    if image_size < 32:
      raise ValueError(f"image_size must be >= 32 or 'full', got {image_size}")
  if not 0.0 <= variation <= 2.0:
    raise ValueError(f"variation must be in [0, 2], got {variation}")
  if num_subjects < 1:
    raise ValueError(f"num_subjects must be >= 1, got {num_subjects}")
  os.makedirs(output_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  subject_ids = sorted(set(int(x) for x in rng.choice(
      np.arange(10_000_000, 20_000_000), size=num_subjects, replace=False)))
  n_studies = np.clip(1 + rng.poisson(1.2, size=len(subject_ids)), 1, 4)
  study_pool = rng.choice(np.arange(50_000_000, 60_000_000),
                          size=int(n_studies.sum()), replace=False)
  jobs, k = [], 0
  for i, sid in enumerate(subject_ids):
    studies = sorted(int(s) for s in study_pool[k:k + n_studies[i]])
    k += n_studies[i]
    jobs.append(mimic.SubjectJob(i, sid, studies, seed, output_dir,
                                 image_size, variation=variation))
  workers = num_workers or os.cpu_count() or 1
  bar = dict(disable=not progress, total=len(jobs), unit="subject",
             desc="synthetic MIMIC-CXR")
  if workers > 1 and len(jobs) > 4:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
      results = list(tqdm.tqdm(pool.imap(mimic.render_subject, jobs,
                                         chunksize=4), **bar))
  else:
    results = [mimic.render_subject(j) for j in tqdm.tqdm(jobs, **bar)]
  splits = _split_subjects(subject_ids, np.random.default_rng([seed, 1]))
  summary = {"seed": seed, "image_size": image_size, "variation": variation,
             "num_subjects": num_subjects,
             "mimic": mimic.finish(output_dir, results, splits, seed)}
  truth = [t for res in results for t in res["truth"]]
  if localized:
    size = 512 if image_size == "full" else image_size
    n = max(16, num_subjects // 2)
    tasks = [(name, output_dir, size, seed, n) for name in (
        "siim", "rsna", "nih", "object_cxr", "covid_rural", "openi")]
    if workers > 1:
      with multiprocessing.get_context("spawn").Pool(workers) as pool:
        done = list(tqdm.tqdm(pool.imap(_localized_task, tasks),
                              total=len(tasks), disable=not progress,
                              desc="localized sets"))
    else:
      done = [_localized_task(t) for t in tqdm.tqdm(
          tasks, disable=not progress, desc="localized sets")]
    for (name, *_), (count, records) in zip(tasks, done):
      summary[name] = count
      truth += records
    summary["ms_cxr"] = loc.ms_cxr(output_dir, truth)
  loc.write_truth(os.path.join(output_dir, "ground_truth.jsonl"),
                        loc.dumps(truth))
  if preview:
    preview_lib.write(output_dir, truth, preview)
    summary["preview"] = preview
  with open(os.path.join(output_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  return summary
