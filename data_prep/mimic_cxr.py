"""MIMIC-CXR-JPG + MIMIC-CXR reports -> TFDS-loadable TFRecords.

    python -m data_prep.mimic_cxr --mimic_cxr_jpg_dir=D --reports_dir=R \
        --output_dir=O [--image_size=256] [--views=PA,AP] [--num_workers=N] \
        [--exclude_ids=MS_CXR_Local_Alignment_v1.0.0.csv]

One example per study (schema `jointcxr.data.features.study_features`): all
its images of the chosen views (so the pipeline can pick one), resized to
`image_size` on the shorter side, the findings and impression sections (the
official parser's behaviour, `data_prep.sections`), their sentences, and the
CheXpert and NegBio labels with positive / negative / uncertain / missing
kept distinct. Splits come from the official split CSV.

Skipped studies are counted by reason in `O/manifest.json` and listed in
`O/skipped.csv` (ids only, never report text): no image of the chosen
views, missing / unreadable images, missing report, empty findings and
impression (the ~9,000 studies that crash other pipelines), fewer than 3
tokens, missing split entry, excluded ids (e.g. MS-CXR's, to keep grounding
evaluation clean). Studies without a label row are kept with all-missing
labels and counted under `notes`. Re-running resumes; `--overwrite` starts
over.
"""

import collections
import csv
import functools
import gzip
import logging
import os
import re
import sys
from typing import Sequence

import numpy as np

from data_prep import images as images_lib
from data_prep import sections as sections_lib
from data_prep import sentences as sentences_lib
from data_prep import writer
from jointcxr.data import features as features_lib

NAME = "mimic_cxr"
_DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
_NUM = re.compile(r"^\d{1,9}$")
NAN = float("nan")


def _read_csv(path: str, required: Sequence[str]) -> list[dict]:
  if not os.path.exists(path):
    raise writer.ConversionError(f"{path}: file not found")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      missing = [c for c in required if c not in (reader.fieldnames or [])]
      if missing:
        raise writer.ConversionError(f"{path}: missing columns {missing}")
      return list(reader)
  except (OSError, UnicodeDecodeError, EOFError) as e:
    raise writer.ConversionError(f"{path}: cannot read ({e})") from None


def _labels(row: dict | None) -> np.ndarray:
  if row is None:
    return np.full(len(features_lib.CHEXPERT_LABELS), NAN, np.float32)
  out = []
  for name in features_lib.CHEXPERT_LABELS:
    v = (row.get(name) or "").strip()
    out.append(float(v) if v else NAN)
  return np.asarray(out, np.float32)


def _study_path(root: str, subject: str, study: str) -> str:
  return os.path.join(root, "files", f"p{subject[:2]}", f"p{subject}",
                      f"s{study}")


def encode_study(item: dict, *, image_size: int, image_encoding: str
                 ) -> tuple[dict, dict] | writer.Skip:
  """One study -> (example, notes) or a Skip (runs in worker processes)."""
  sid = f"s{item['study_id']}"
  notes: dict[str, int] = collections.Counter()
  try:
    with open(item["report_path"], "rb") as f:
      raw = f.read()
  except OSError:
    return writer.Skip("missing_report", sid)
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    # Keep the study: undecodable bytes become U+FFFD and are counted.
    text = raw.decode("utf-8", errors="replace")
    notes["non_utf8_report"] += 1
  sec = sections_lib.extract_sections(text, sid)
  if not sec.findings and not sec.impression:
    return writer.Skip("empty_findings_impression", sid)
  sents = (sentences_lib.split_sentences(sec.findings) +
           sentences_lib.split_sentences(sec.impression))
  if sum(len(s.split()) for s in sents) < 3:
    return writer.Skip("too_short_report", sid)
  imgs, dids, views = [], [], []
  for did, view, path in item["images"]:
    try:
      arr, img_notes = images_lib.load_gray(path, image_size)
    except images_lib.ImageError as e:
      notes[f"image_{e.reason}"] += 1
      logging.warning("study %s: %s", sid, e)
      continue
    notes.update(img_notes)
    imgs.append(arr)
    dids.append(did)
    views.append(view)
  if not imgs:
    return writer.Skip("no_usable_image", sid, dict(notes))
  if not item["has_label_row"]:
    notes["missing_label_row"] += 1
  example = {
      "study_id": int(item["study_id"]), "subject_id": int(item["subject_id"]),
      "images": imgs, "dicom_ids": dids, "views": views,
      "findings": sec.findings, "impression": sec.impression,
      "sentences": sents, "labels": item["labels"],
      "labels_negbio": item["labels_negbio"]}
  del image_encoding
  return example, dict(notes)


def plan(mimic_cxr_jpg_dir: str, reports_dir: str,
         views: Sequence[str], exclude: set[str]
         ) -> tuple[dict[str, list[dict]], list[writer.Skip]]:
  """Reads the CSVs and groups images into study items per split."""
  d = mimic_cxr_jpg_dir
  meta = _read_csv(os.path.join(d, "mimic-cxr-2.0.0-metadata.csv.gz"),
                   ["dicom_id", "subject_id", "study_id", "ViewPosition"])
  split_rows = _read_csv(os.path.join(d, "mimic-cxr-2.0.0-split.csv.gz"),
                         ["dicom_id", "study_id", "subject_id", "split"])
  label_cols = ["subject_id", "study_id"]
  chex = {r["study_id"]: r for r in _read_csv(
      os.path.join(d, "mimic-cxr-2.0.0-chexpert.csv.gz"), label_cols)}
  negbio_path = os.path.join(d, "mimic-cxr-2.0.0-negbio.csv.gz")
  negbio = ({r["study_id"]: r for r in _read_csv(negbio_path, label_cols)}
            if os.path.exists(negbio_path) else {})
  split_of = {r["dicom_id"]: r["split"].strip() for r in split_rows}
  skips: list[writer.Skip] = []
  seen: set[str] = set()
  studies: dict[tuple[str, str], list] = collections.OrderedDict()
  for r in meta:
    did, sub, study = (r["dicom_id"].strip(), r["subject_id"].strip(),
                       r["study_id"].strip())
    if not (_DICOM_ID.match(did) and _NUM.match(sub) and _NUM.match(study)):
      # Ids build the file paths: anything else (e.g. "../") could escape
      # the dataset root, so the row is rejected.
      skips.append(writer.Skip("invalid_id_in_metadata", f"{study}/{did}"))
      continue
    if did in seen:
      skips.append(writer.Skip("duplicate_dicom_id", did))
      continue
    seen.add(did)
    studies.setdefault((sub, study), []).append(
        (did, (r.get("ViewPosition") or "").strip(), split_of.get(did)))
  by_split: dict[str, list[dict]] = {s: [] for s in features_lib.SPLITS}
  for (sub, study), imgs in studies.items():
    sid = f"s{study}"
    if sid in exclude or any(i[0] in exclude for i in imgs):
      skips.append(writer.Skip("excluded_id", sid))
      continue
    splits = {i[2] for i in imgs}
    if None in splits or not splits <= set(features_lib.SPLITS):
      skips.append(writer.Skip("missing_split_entry", sid))
      continue
    if len(splits) > 1:
      skips.append(writer.Skip("conflicting_split", sid))
      continue
    chosen = [(did, view, os.path.join(_study_path(d, sub, study),
                                       f"{did}.jpg"))
              for did, view, _ in imgs if view in views]
    if not chosen:
      skips.append(writer.Skip("no_image_of_chosen_views", sid))
      continue
    by_split[splits.pop()].append({
        "study_id": study, "subject_id": sub, "images": chosen,
        "report_path": _study_path(reports_dir, sub, study) + ".txt",
        "labels": _labels(chex.get(study)),
        "labels_negbio": _labels(negbio.get(study) or chex.get(study)),
        "has_label_row": study in chex})
  for items in by_split.values():
    items.sort(key=lambda it: int(it["study_id"]))
  return by_split, skips


def read_exclusions(path: str | None) -> set[str]:
  """dicom ids (and s<study> ids) from an MS-CXR-style CSV or a plain list."""
  if not path:
    return set()
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if rows and "dicom_id" in rows[0]:
    i = rows[0].index("dicom_id")
    return {r[i].strip() for r in rows[1:] if len(r) > i}
  return {r[0].strip() for r in rows if r}


def convert(*, mimic_cxr_jpg_dir: str, reports_dir: str, output_dir: str,
            image_size: int = 256, views: Sequence[str] = ("PA", "AP"),
            num_workers: int = 1, examples_per_shard: int = 1024,
            image_encoding: str = "png", exclude_ids: str | None = None,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Converts; returns the manifest (see module docstring)."""
  for p, flag in ((mimic_cxr_jpg_dir, "mimic_cxr_jpg_dir"),
                  (reports_dir, "reports_dir")):
    if not os.path.isdir(p):
      raise writer.ConversionError(f"--{flag} {p} is not a directory")
  if image_encoding not in ("png", "jpeg"):
    raise writer.ConversionError(
        f"image_encoding must be png or jpeg, got {image_encoding!r}")
  by_split, skips = plan(mimic_cxr_jpg_dir, reports_dir, tuple(views),
                         read_exclusions(exclude_ids))
  jobs = [j for split, items in by_split.items() if items
          for j in writer.plan_shards(NAME, split, items, examples_per_shard)]
  if not jobs:
    raise writer.ConversionError("no study survived planning: "
                                 f"{collections.Counter(s.reason for s in skips)}")
  args = {"mimic_cxr_jpg_dir": os.path.abspath(mimic_cxr_jpg_dir),
          "reports_dir": os.path.abspath(reports_dir), "image_size":
          image_size, "views": list(views), "image_encoding": image_encoding,
          "examples_per_shard": examples_per_shard, "exclude_ids": exclude_ids}
  return writer.run(
      name=NAME, out_dir=output_dir, jobs=jobs,
      encode=functools.partial(encode_study, image_size=image_size,
                               image_encoding=image_encoding),
      features_fn=functools.partial(features_lib.study_features,
                                    image_encoding),
      args=args, num_workers=num_workers, pre_skipped=skips,
      progress=progress, overwrite=overwrite)


def main(argv: Sequence[str]) -> int:
  """CLI entry point."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("mimic_cxr_jpg_dir", None, "MIMIC-CXR-JPG root (with "
                      "files/ and the CSVs).", flag_values=fl)
  flags.DEFINE_string("reports_dir", None, "Reports root (with files/).",
                      flag_values=fl)
  flags.DEFINE_string("output_dir", None, "Output directory.", flag_values=fl)
  flags.DEFINE_integer("image_size", 256, "Shorter image side after resize.",
                       flag_values=fl)
  flags.DEFINE_list("views", ["PA", "AP"], "ViewPositions to keep.",
                    flag_values=fl)
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Processes.",
                       flag_values=fl)
  flags.DEFINE_integer("examples_per_shard", 1024, "Studies per shard.",
                       flag_values=fl)
  flags.DEFINE_enum("image_encoding", "png", ["png", "jpeg"], "Stored format.",
                    flag_values=fl)
  flags.DEFINE_string("exclude_ids", None, "CSV of dicom ids to exclude "
                      "(e.g. MS-CXR's).", flag_values=fl)
  flags.DEFINE_bool("overwrite", False, "Discard previous output.",
                    flag_values=fl)
  try:
    fl(argv)
    for name in ("mimic_cxr_jpg_dir", "reports_dir", "output_dir"):
      if not fl[name].value:
        raise writer.ConversionError(f"--{name} is required")
    manifest = convert(
        mimic_cxr_jpg_dir=fl.mimic_cxr_jpg_dir, reports_dir=fl.reports_dir,
        output_dir=fl.output_dir, image_size=fl.image_size, views=fl.views,
        num_workers=fl.num_workers, examples_per_shard=fl.examples_per_shard,
        image_encoding=fl.image_encoding, exclude_ids=fl.exclude_ids,
        overwrite=fl.overwrite)
  except (writer.ConversionError, flags.Error, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"written {manifest['written']}; skipped {manifest['skipped']}; "
        f"notes {manifest['notes']}")
  print(f"output: {fl.output_dir} (manifest.json, skipped.csv)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
