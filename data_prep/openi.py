r"""Open-i (IU X-ray) reports (+ images) -> TFDS-loadable TFRecords.

    python -m data_prep.openi --reports_tgz=NLMCXR_reports.tgz \
        [--images_dir=NLMCXR_png] [--projections_csv=indiana_projections.csv] \
        [--split_csv=r2gen_split.csv] --output_dir=O

The XML is parsed straight from the tarball (`data_prep.iu_xml`); nothing is
extracted. One example per report (each IU report is one patient).

Images: with `--images_dir`, each report is paired with its `parentImage`
PNGs (`<id>.png`), resized like MIMIC (shorter side `--image_size`).
Frontal choice: IU image ids do not encode the view reliably (the `-1001`
suffix is often, not always, frontal), so without view information every
listed image is kept with view "" and the pipeline picks among them. With
`--projections_csv` (Kaggle `indiana_projections.csv`: uid, filename,
projection) only `Frontal` images are kept, with view "FRONTAL".
Reports-only mode (no `--images_dir`, for text work) writes
`jointcxr.data.features.report_features`: the same text and label fields,
no image fields.

Labels: the project's rule-based labeler on the impression (the section
the CheXpert labeler reads), else the findings; `labels_negbio` repeats them.

Splits: with `--split_csv` (R2Gen ids), `train` / `validate` / `test` are
exactly R2Gen's (val -> validate), so results stay comparable; reports
R2Gen does not list (it keeps only two-image studies) go to a separate
split `extra` (use `train+extra` for more training text). Without it, a
seeded 80/10/10 split by report.

Skips (manifest + skipped.csv + a log line per reason, per report with
--verbose): malformed_xml,
duplicate_uid, empty_findings_impression, too_short_report (< 3 tokens),
no_image_listed / no_frontal_image / no_usable_image (image mode).
Notes: image_<reason> for an unusable image of a report that keeps
another, invalid_image_id (an id that is not a plain file name).
"""

import collections
import csv
import functools
import os
import re
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
MIN_TOKENS = 3
_R2GEN = {"train": "train", "val": "validate", "validate": "validate",
          "test": "test"}
# All 7,470 real parentImage ids match this (DATA_FORMATS.md A2.2); ids
# become file names, so anything else (e.g. "../x") is refused.
_IMAGE_ID = re.compile(r"^CXR\d+[A-Za-z0-9_-]*$")


def labels_of(findings: str, impression: str) -> np.ndarray:
  """CheXpert-order labels from the impression (else the findings)."""
  lab = labeler.label_report(impression or findings)
  return np.asarray([lab.get(n, float("nan")) for n in
                     features_lib.CHEXPERT_LABELS], np.float32)


def encode_report(item: dict, *, image_size: int, image_encoding: str
                  ) -> tuple[dict, dict] | writer.Skip:
  """One report -> (example, notes) or Skip (runs in worker processes).

  Args:
    item: {"report": IUReport, "images": [(id, path, view)], "with_images"}.
    image_size: shorter side of the stored images.
    image_encoding: "png" or "jpeg".

  Returns:
    The example (`study_features` or `report_features`) and its notes.
  """
  r: iu_xml.IUReport = item["report"]
  notes: collections.Counter = collections.Counter()
  if not r.findings and not r.impression:
    return writer.Skip("empty_findings_impression", r.uid)
  sents = (sentences_lib.split_sentences(r.findings) +
           sentences_lib.split_sentences(r.impression))
  if sum(len(s.split()) for s in sents) < MIN_TOKENS:
    return writer.Skip("too_short_report", r.uid)
  labels = labels_of(r.findings, r.impression)
  example = {"study_id": r.number, "subject_id": r.number,
             "findings": r.findings, "impression": r.impression,
             "sentences": sents, "labels": labels, "labels_negbio": labels}
  if not item["with_images"]:
    return example, {}
  imgs, ids, views = [], [], []
  for img_id, path, view in item["images"]:
    try:
      arr, n = images_lib.load_gray(path, image_size)
    except images_lib.ImageError as e:
      notes[f"image_{e.reason}"] += 1
      continue
    notes.update(n)
    imgs.append(writer.encode_image(arr, image_encoding))
    ids.append(img_id)
    views.append(view)
  if not imgs:
    return writer.Skip("no_usable_image", r.uid, dict(notes))
  example.update(images=imgs, dicom_ids=ids, views=views)
  return example, dict(notes)


def read_projections(path: str) -> dict[str, str]:
  """parentImage id -> "Frontal" / "Lateral" from indiana_projections.csv.

  Raises:
    ConversionError: unreadable file or missing columns.
  """
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      if not {"uid", "filename", "projection"} <= set(reader.fieldnames or
                                                       ()):
        raise writer.ConversionError(f"{path}: expected columns uid, "
                                     "filename, projection")
      out = {}
      for row in reader:
        # "1_IM-0001-4001.dcm.png" -> "CXR1_IM-0001-4001"
        stem = row["filename"].strip().split(".")[0]
        out["CXR" + stem] = row["projection"].strip()
      return out
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise writer.ConversionError(f"{path}: cannot read ({e})") from None


def _items(reports: list[iu_xml.IUReport], images_dir: str | None,
           projections: dict[str, str] | None, max_images: int,
           skips: list[writer.Skip], notes: collections.Counter
           ) -> list[dict]:
  """Report items with their image paths; planning skips appended."""
  items, seen = [], set()
  for r in reports:
    if r.uid in seen:
      skips.append(writer.Skip("duplicate_uid", r.uid))
      continue
    seen.add(r.uid)
    imgs = []
    if images_dir:
      for img_id in r.images:
        if not _IMAGE_ID.match(img_id or ""):
          notes["invalid_image_id"] += 1
          continue
        view = ""
        if projections is not None:
          if projections.get(img_id) != "Frontal":
            continue
          view = "FRONTAL"
        imgs.append((img_id, os.path.join(images_dir, img_id + ".png"),
                     view))
      imgs = imgs[:max_images] if max_images > 0 else imgs
      if not imgs:
        reason = ("no_frontal_image" if projections is not None and r.images
                  else "no_image_listed")
        skips.append(writer.Skip(reason, r.uid))
        continue
    items.append({"id": r.uid, "report": r, "images": imgs,
                  "with_images": bool(images_dir)})
  return items


def _assign_splits(items: list[dict], split_csv: str | None, seed: int
                   ) -> tuple[dict[str, list[dict]], dict]:
  """R2Gen splits (+ `extra`) or a seeded split by report."""
  if not split_csv:
    seeded = splits_lib.split_by_subject(
        items, lambda it: it["id"], seed=seed,
        fractions=(("train", 0.8), ("validate", 0.1), ("test", 0.1)),
        label_fractions=())
    return seeded, {"seeded": len(items)}
  try:
    r2gen = iu_xml.read_r2gen_split(split_csv)
  except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
    raise writer.ConversionError(f"--split_csv {split_csv}: cannot read "
                                 f"({e!r})") from None
  by_split: dict[str, list[dict]] = {"train": [], "validate": [], "test": [],
                                     "extra": []}
  for it in items:
    value = r2gen.get(it["id"])
    if value is not None and value not in _R2GEN:
      raise writer.ConversionError(f"--split_csv {split_csv}: {it['id']} has "
                                   f"unknown split {value!r}")
    by_split[_R2GEN.get(value, "extra")].append(it)
  return by_split, {"r2gen": len(items) - len(by_split["extra"]),
                    "extra": len(by_split["extra"])}


def convert(*, reports_tgz: str, output_dir: str, images_dir: str | None =
            None, projections_csv: str | None = None,
            split_csv: str | None = None, image_size: int = 256,
            image_encoding: str = features_lib.DEFAULT_IMAGE_ENCODING,
            max_images: int = 0, seed: int = 0, num_workers: int = 1,
            examples_per_shard: int = 1024, overwrite: bool = False,
            progress: bool = True) -> dict:
  """Converts the Open-i archive (see the module docstring).

  Args:
    reports_tgz: NLMCXR_reports.tgz.
    output_dir: output directory.
    images_dir: directory of `<parentImage id>.png`; None = reports only.
    projections_csv: Kaggle indiana_projections.csv (keep frontal only).
    split_csv: R2Gen split ids (`uid`, `split` columns).
    image_size: shorter image side after resizing.
    image_encoding: "png" or "jpeg".
    max_images: keep at most this many images per report (0 = all).
    seed: seed of the split when no split_csv is given.
    num_workers: worker processes.
    examples_per_shard: reports per shard.
    overwrite: discard previous output instead of resuming.
    progress: show a progress bar.

  Returns:
    The manifest (with `split_source` and `reports_only`).
  """
  if not os.path.isfile(reports_tgz):
    raise writer.ConversionError(f"--reports_tgz {reports_tgz}: file not "
                                 "found")
  if images_dir and not os.path.isdir(images_dir):
    raise writer.ConversionError(f"--images_dir {images_dir} is not a "
                                 "directory")
  if projections_csv and not images_dir:
    raise writer.ConversionError("--projections_csv needs --images_dir")
  counts: dict[str, int] = {}
  try:
    reports = list(iu_xml.iter_reports(reports_tgz, counts))
  except (OSError, EOFError) as e:  # tarfile errors are OSError subclasses
    raise writer.ConversionError(f"--reports_tgz {reports_tgz}: cannot read "
                                 f"({e})") from None
  skips = [writer.Skip("malformed_xml", f"member {i}") for i in range(
      counts.get("malformed_xml", 0))]
  notes: collections.Counter = collections.Counter()
  projections = read_projections(projections_csv) if projections_csv else None
  items = _items(reports, images_dir, projections, max_images, skips, notes)
  by_split, source = _assign_splits(items, split_csv, seed)
  jobs = [j for split, its in by_split.items() if its
          for j in writer.plan_shards(NAME, split, its, examples_per_shard)]
  if not jobs:
    raise writer.ConversionError(f"{reports_tgz}: no usable report")
  reports_only = not images_dir
  args = {"reports_tgz": os.path.abspath(reports_tgz),
          "images_dir": images_dir and os.path.abspath(images_dir),
          "projections_csv": projections_csv and os.path.abspath(
              projections_csv),
          "split_csv": split_csv and os.path.abspath(split_csv),
          "image_size": image_size, "image_encoding": image_encoding,
          "max_images": max_images, "seed": seed,
          "examples_per_shard": examples_per_shard}
  features_fn = (features_lib.report_features if reports_only else
                 functools.partial(features_lib.study_features,
                                   image_encoding))
  return writer.run(
      name=NAME, out_dir=output_dir, jobs=jobs,
      encode=functools.partial(encode_report, image_size=image_size,
                               image_encoding=image_encoding),
      features_fn=features_fn, args=args, id_of=_item_id,
      num_workers=num_workers, pre_skipped=skips, pre_notes=dict(notes),
      progress=progress, overwrite=overwrite,
      extra_manifest={"split_source": source, "reports_only": reports_only},
      description="Open-i / IU X-ray reports (CC BY-NC-ND 4.0, Demner-"
      "Fushman et al. 2016) converted by data_prep.openi.")


def _item_id(item: dict) -> str:
  return item["id"]


def _define_flags(fl) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("reports_tgz", None, "NLMCXR_reports.tgz.",
                      flag_values=fl)
  flags.DEFINE_string("images_dir", None, "Directory of <id>.png (optional; "
                      "without it: reports only).", flag_values=fl)
  flags.DEFINE_string("projections_csv", None, "indiana_projections.csv: "
                      "keep frontal images only.", flag_values=fl)
  flags.DEFINE_string("split_csv", None, "R2Gen split ids (optional).",
                      flag_values=fl)
  flags.DEFINE_string("output_dir", None, "Output directory.", flag_values=fl)
  flags.DEFINE_integer("image_size", 256, "Shorter side.", flag_values=fl)
  flags.DEFINE_enum("image_encoding", features_lib.DEFAULT_IMAGE_ENCODING,
                    ["png", "jpeg"], "Stored image format.", flag_values=fl)
  flags.DEFINE_integer("max_images", 0, "Images kept per report (0: all).",
                       flag_values=fl)
  flags.DEFINE_integer("seed", 0, "Split seed.", flag_values=fl)
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Processes.",
                       flag_values=fl)
  flags.DEFINE_integer("examples_per_shard", 1024, "Reports per shard.",
                       flag_values=fl)
  flags.DEFINE_bool("overwrite", False, "Discard previous output.",
                    flag_values=fl)


def _convert_from_flags(fl) -> dict:
  return convert(reports_tgz=fl.reports_tgz, output_dir=fl.output_dir,
                 images_dir=fl.images_dir, projections_csv=fl.projections_csv,
                 split_csv=fl.split_csv, image_size=fl.image_size,
                 image_encoding=fl.image_encoding, max_images=fl.max_images,
                 seed=fl.seed, num_workers=fl.num_workers,
                 examples_per_shard=fl.examples_per_shard,
                 overwrite=fl.overwrite)


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return writer.cli(argv, doc=__doc__, define=_define_flags,
                    convert=_convert_from_flags,
                    required=("reports_tgz", "output_dir"))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
