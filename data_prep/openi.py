"""Open-i (IU X-ray) reports (+ images) -> TFDS-loadable TFRecords.

    python -m data_prep.openi --reports_tgz=NLMCXR_reports.tgz \
        [--images_dir=NLMCXR_png] [--split_csv=r2gen_split.csv] --output_dir=O

The XML is parsed straight from the tarball. With `--images_dir`, each
report is paired with its `parentImage` PNGs (`<id>.png`); IU image ids do
not reliably encode the view, so all images are kept with an empty view and
`--max_images` limits how many (the first ones are most often frontal).
Without images (reports-only mode, for text work) examples carry no image.
Labels come from the project's rule-based labeler on the impression (else
the findings). Splits: the R2Gen ids when `--split_csv` is given (val ->
validate; reports it does not list get a seeded split and are counted),
else a seeded split by report (one IU report = one patient).
"""

import collections
import functools
import os
import sys
from typing import Sequence

import numpy as np

from data_prep import images as images_lib
from data_prep import iu_xml
from data_prep import labeler
from data_prep import sentences as sentences_lib
from data_prep import splits as splits_lib
from data_prep import writer
from jointcxr.data import features as features_lib

NAME = "openi"
_R2GEN = {"train": "train", "val": "validate", "test": "test"}


def _labels(text: str) -> np.ndarray:
  lab = labeler.label_report(text)
  return np.asarray([lab.get(n, float("nan")) for n in
                     features_lib.CHEXPERT_LABELS], np.float32)


def encode_report(item: dict, *, image_size: int) -> tuple[dict, dict] | (
    writer.Skip):
  """One report -> (example, notes) or Skip."""
  r: iu_xml.IUReport = item["report"]
  notes = collections.Counter()
  if not r.findings and not r.impression:
    return writer.Skip("empty_findings_impression", r.uid)
  sents = (sentences_lib.split_sentences(r.findings) +
           sentences_lib.split_sentences(r.impression))
  imgs, ids = [], []
  for img_id, path in item["images"]:
    try:
      arr, n = images_lib.load_gray(path, image_size)
    except images_lib.ImageError as e:
      notes[f"image_{e.reason}"] += 1
      continue
    notes.update(n)
    imgs.append(arr)
    ids.append(img_id)
  if item["images"] and not imgs:
    return writer.Skip("no_usable_image", r.uid, dict(notes))
  labels = _labels(r.impression or r.findings)
  return {"study_id": r.number, "subject_id": r.number, "images": imgs,
          "dicom_ids": ids, "views": [""] * len(imgs),
          "findings": r.findings, "impression": r.impression,
          "sentences": sents, "labels": labels,
          "labels_negbio": labels}, dict(notes)


def convert(*, reports_tgz: str, output_dir: str, images_dir: str | None =
            None, split_csv: str | None = None, image_size: int = 256,
            max_images: int = 2, seed: int = 0, num_workers: int = 1,
            examples_per_shard: int = 1024, overwrite: bool = False,
            progress: bool = True) -> dict:
  """Converts; returns the manifest."""
  if not os.path.exists(reports_tgz):
    raise writer.ConversionError(f"--reports_tgz {reports_tgz}: file not "
                                 "found")
  if images_dir and not os.path.isdir(images_dir):
    raise writer.ConversionError(f"--images_dir {images_dir} is not a "
                                 "directory")
  skipped: dict[str, int] = {}
  reports = list(iu_xml.iter_reports(reports_tgz, skipped))
  pre = [writer.Skip("malformed_xml", f"#{i}") for i in range(
      skipped.get("malformed_xml", 0))]
  items = []
  for r in reports:
    imgs = []
    if images_dir:
      for img_id in r.images[:max_images]:
        imgs.append((img_id, os.path.join(images_dir, img_id + ".png")))
      if not imgs:
        pre.append(writer.Skip("no_image_listed", r.uid))
        continue
    items.append({"report": r, "images": imgs})
  seeded = splits_lib.split_by_subject(
      items, lambda it: it["report"].uid, seed=seed,
      fractions=(("train", 0.8), ("validate", 0.1), ("test", 0.1)),
      label_fractions=())
  by_split: dict[str, list] = {s: [] for s in features_lib.SPLITS}
  extra = {}
  if split_csv:
    r2gen = iu_xml.read_r2gen_split(split_csv)
    seeded_of = {it["report"].uid: s for s, its in seeded.items()
                 for it in its}
    n_seeded = 0
    for it in items:
      s = _R2GEN.get(r2gen.get(it["report"].uid, ""))
      if s is None:
        s = seeded_of[it["report"].uid]
        n_seeded += 1
      by_split[s].append(it)
    extra["split_source"] = {"r2gen": len(items) - n_seeded,
                             "seeded": n_seeded}
  else:
    by_split.update(seeded)
    extra["split_source"] = {"seeded": len(items)}
  jobs = [j for split, its in by_split.items() if its
          for j in writer.plan_shards(NAME, split, its, examples_per_shard)]
  args = {"reports_tgz": os.path.abspath(reports_tgz), "images_dir":
          images_dir and os.path.abspath(images_dir), "split_csv": split_csv,
          "image_size": image_size, "max_images": max_images, "seed": seed}
  return writer.run(
      name=NAME, out_dir=output_dir, jobs=jobs,
      encode=functools.partial(encode_report, image_size=image_size),
      features_fn=functools.partial(features_lib.study_features, "png"),
      args=args, num_workers=num_workers, pre_skipped=pre,
      progress=progress, overwrite=overwrite, extra_manifest=extra)


def main(argv: Sequence[str]) -> int:
  """CLI entry point."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("reports_tgz", None, "NLMCXR_reports.tgz.",
                      flag_values=fl)
  flags.DEFINE_string("images_dir", None, "Directory of <id>.png (optional).",
                      flag_values=fl)
  flags.DEFINE_string("split_csv", None, "R2Gen split ids (optional).",
                      flag_values=fl)
  flags.DEFINE_string("output_dir", None, "Output directory.", flag_values=fl)
  flags.DEFINE_integer("image_size", 256, "Shorter side.", flag_values=fl)
  flags.DEFINE_integer("max_images", 2, "Images kept per report.",
                       flag_values=fl)
  flags.DEFINE_integer("seed", 0, "Split seed.", flag_values=fl)
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Processes.",
                       flag_values=fl)
  flags.DEFINE_bool("overwrite", False, "Discard previous output.",
                    flag_values=fl)
  try:
    fl(argv)
    if not fl.reports_tgz or not fl.output_dir:
      raise writer.ConversionError("--reports_tgz and --output_dir are "
                                   "required")
    m = convert(reports_tgz=fl.reports_tgz, output_dir=fl.output_dir,
                images_dir=fl.images_dir, split_csv=fl.split_csv,
                image_size=fl.image_size, max_images=fl.max_images,
                seed=fl.seed, num_workers=fl.num_workers,
                overwrite=fl.overwrite)
  except (writer.ConversionError, flags.Error, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"written {m['written']}; skipped {m['skipped']}")
  print(f"output: {fl.output_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
