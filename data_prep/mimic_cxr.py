r"""MIMIC-CXR-JPG + MIMIC-CXR reports -> TFDS-loadable TFRecords.

    python -m data_prep.mimic_cxr --mimic_cxr_jpg_dir=D --reports_dir=R \
        --output_dir=O [--image_size=256] [--views=PA,AP] [--num_workers=N] \
        [--exclude_ids=MS_CXR_Local_Alignment_v1.0.0.csv]

`D` holds `files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg` and the four
`mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz`; `R` holds
`files/pXX/pXXXXXXXX/sXXXXXXXX.txt`. Splits `train`, `validate` and `test`
come from the official split CSV.

One example per study (`jointcxr.data.features.study_features`): every image
of the chosen views (so the pipeline can pick one per step), decoded at
reduced scale (PIL `draft`, see bench/data_prep.py) and resized so the
*shorter* side is `image_size` (never upsampled; aspect ratio and the whole
field of view are kept, so the pipeline can still pad to a square as LoVT
does, or crop), stored as 8-bit grayscale JPEG q95 (PNG with
--image_encoding=png; bench/data_prep.py has the measurements behind the
default); the FINDINGS and IMPRESSION sections (the official section files'
selection, `data_prep.sections`, with the dataset's 54 per-study rules
unless --noofficial_section_rules), their sentences (findings first), and the
CheXpert and NegBio labels with positive (1) / negative (0) / uncertain (-1)
/ missing (NaN) kept distinct.

Skipped studies are counted by reason in `O/manifest.json`, listed in
`O/skipped.csv` and logged one line per reason (`--verbose`: one line per
study; ids only, never report text):

  excluded_id                 in --exclude_ids (e.g. MS-CXR, so phrase
                              grounding is evaluated on unseen images)
  missing_split_entry         an image of the study has no split row
  unknown_split_value         split not train / validate / test
  conflicting_split           the study's images are in different splits
  subject_in_two_splits       the subject's other studies are in another
                              split (kept there; never a leak)
  no_image_of_chosen_views    no PA/AP (or --views) image
  missing_report              no report file
  report_without_sections     no section header at all
  empty_findings_impression   FINDINGS and IMPRESSION absent or empty (the
                              ~9,000 studies that crash other pipelines)
  too_short_report            fewer than 3 tokens of text (LoVT's rule)
  no_usable_image             every chosen image missing or unreadable
  invalid_id_in_metadata      a metadata row whose ids are malformed (ids
                              build paths: "../" could escape the root)
  duplicate_dicom_id          a repeated metadata row (the first is kept)
  study_in_two_subjects       a study id listed under a second subject

Kept studies with a remark are counted under `notes`: `missing_label_row`
(labels all NaN), `missing_negbio_row`, `duplicate_label_row` (first kept),
`non_utf8_report` (undecodable bytes become U+FFFD; the text is otherwise
usable, so the study is kept), `image_<reason>` for an unusable image of a
study that still has another, `converted_16bit`, and
`impression_from_last_paragraph` with --fallback_last_paragraph.
Re-running resumes; --overwrite starts over.
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
MIN_TOKENS = 3
_LABEL_VALUES = {"": NAN, "1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "1": 1.0,
                 "0": 0.0, "-1": -1.0}
# When a subject's studies disagree, the evaluation splits win (they are the
# ones whose composition must not change).
_SPLIT_PRIORITY = ("test", "validate", "train")


def _read_csv(path: str, required: Sequence[str]) -> list[dict]:
  """Rows of a (gzipped) CSV; raises ConversionError naming the file."""
  if not os.path.exists(path):
    raise writer.ConversionError(f"{path}: file not found")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    # utf-8-sig: a BOM (a CSV re-saved by Excel or pandas) is not part of
    # the first column's name.
    with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      missing = [c for c in required if c not in (reader.fieldnames or [])]
      if missing:
        raise writer.ConversionError(f"{path}: missing columns {missing}")
      return list(reader)
  except (OSError, UnicodeDecodeError, EOFError, csv.Error) as e:
    raise writer.ConversionError(f"{path}: cannot read ({e})") from None


def _label_table(path: str, kind: str, notes: collections.Counter
                 ) -> dict[str, dict]:
  """study_id -> label row; repeated studies keep their first row."""
  table: dict[str, dict] = {}
  for row in _read_csv(path, ["subject_id", "study_id"]):
    study = row["study_id"].strip()
    if study in table:
      notes[f"duplicate_{kind}_row"] += 1
      logging.warning("%s: study %s listed twice; keeping the first row",
                      os.path.basename(path), study)
      continue
    table[study] = row
  return table


def labels_from_row(row: dict | None) -> np.ndarray:
  """CheXpert-order float32 labels of a CSV row; NaN where blank or absent.

  Raises:
    ValueError: a value other than 1, 0, -1 or blank.
  """
  if row is None:
    return np.full(len(features_lib.CHEXPERT_LABELS), NAN, np.float32)
  out = []
  for name in features_lib.CHEXPERT_LABELS:
    v = (row.get(name) or "").strip()
    if v not in _LABEL_VALUES:
      raise ValueError(f"study {row.get('study_id')}: {name}={v!r} is not "
                       "1.0, 0.0, -1.0 or blank")
    out.append(_LABEL_VALUES[v])
  return np.asarray(out, np.float32)


def _study_path(root: str, subject: str, study: str) -> str:
  return os.path.join(root, "files", f"p{subject[:2]}", f"p{subject}",
                      f"s{study}")


def _report_text(item: dict, notes: collections.Counter
                 ) -> tuple[str, str] | writer.Skip:
  """(findings, impression) of a study's report, or the reason to skip."""
  sid = item["id"]
  try:
    with open(item["report_path"], "rb") as f:
      raw = f.read()
  except OSError:
    return writer.Skip("missing_report", sid)
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    text = raw.decode("utf-8", errors="replace")
    notes["non_utf8_report"] += 1
  sec = sections_lib.extract_sections(
      text, sid, official_rules=item.get("official_section_rules", True))
  findings, impression = sec.findings, sec.impression
  if not findings and not impression and item["fallback_last_paragraph"]:
    impression = sec.last_paragraph
    notes["impression_from_last_paragraph"] += int(bool(impression))
  if not findings and not impression:
    _, names, _ = sections_lib.parse_sections(text)
    return writer.Skip("report_without_sections" if names == ["full report"]
                       else "empty_findings_impression", sid)
  return findings, impression


def encode_study(item: dict, *, image_size: int, image_encoding: str
                 ) -> tuple[dict, dict] | writer.Skip:
  """One study -> (example, notes) or a Skip (runs in worker processes).

  Args:
    item: a study from `plan`.
    image_size: shorter side of the stored images.
    image_encoding: "png" or "jpeg".

  Returns:
    The example for `study_features` and its notes, or a Skip.
  """
  sid = item["id"]
  notes: collections.Counter = collections.Counter()
  text = _report_text(item, notes)
  if isinstance(text, writer.Skip):
    return text
  findings, impression = text
  sents = (sentences_lib.split_sentences(findings) +
           sentences_lib.split_sentences(impression))
  if sum(len(s.split()) for s in sents) < MIN_TOKENS:
    return writer.Skip("too_short_report", sid)
  imgs, dids, views = [], [], []
  for did, view, path in item["images"]:
    try:
      arr, img_notes = images_lib.load_gray(path, image_size)
    except images_lib.ImageError as e:
      notes[f"image_{e.reason}"] += 1
      logging.warning("study %s image %s: %s", sid, did, e.reason)
      continue
    notes.update(img_notes)
    imgs.append(writer.encode_image(arr, image_encoding))
    dids.append(did)
    views.append(view)
  if not imgs:
    return writer.Skip("no_usable_image", sid, dict(notes))
  notes["missing_label_row"] += int(not item["has_label_row"])
  notes["missing_negbio_row"] += int(not item["has_negbio_row"])
  example = {
      "study_id": int(item["study_id"]), "subject_id": int(item["subject_id"]),
      "images": imgs, "dicom_ids": dids, "views": views,
      "findings": findings, "impression": impression, "sentences": sents,
      "labels": item["labels"], "labels_negbio": item["labels_negbio"]}
  return example, {k: v for k, v in notes.items() if v}


def _group_images(meta: list[dict], skips: list[writer.Skip]
                  ) -> dict[tuple[str, str], list[tuple[str, str]]]:
  """(subject, study) -> [(dicom_id, view)] with bad rows skipped."""
  seen: set[str] = set()
  subject_of: dict[str, str] = {}
  studies: dict[tuple[str, str], list] = {}
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
    if subject_of.setdefault(study, sub) != sub:
      skips.append(writer.Skip("study_in_two_subjects", f"s{study}/{did}"))
      continue
    studies.setdefault((sub, study), []).append(
        (did, (r.get("ViewPosition") or "").strip()))
  return studies


def _read_splits(path: str) -> dict[str, str | None]:
  """dicom_id -> split (None when its rows disagree)."""
  split_of: dict[str, str | None] = {}
  for r in _read_csv(path, ["dicom_id", "study_id", "subject_id", "split"]):
    did, split = r["dicom_id"].strip(), r["split"].strip()
    split_of[did] = split if split_of.get(did, split) == split else None
  return split_of


def plan(mimic_cxr_jpg_dir: str, reports_dir: str, views: Sequence[str],
         exclude: set[str], fallback_last_paragraph: bool = False,
         official_section_rules: bool = True
         ) -> tuple[dict[str, list[dict]], list[writer.Skip], dict]:
  """Reads the CSVs and groups images into study items per split.

  Returns:
    (split -> items sorted by study id, planning skips, planning notes).
  """
  d = mimic_cxr_jpg_dir
  meta = _read_csv(os.path.join(d, "mimic-cxr-2.0.0-metadata.csv.gz"),
                   ["dicom_id", "subject_id", "study_id", "ViewPosition"])
  split_of = _read_splits(os.path.join(d, "mimic-cxr-2.0.0-split.csv.gz"))
  notes: collections.Counter = collections.Counter()
  chex_path = os.path.join(d, "mimic-cxr-2.0.0-chexpert.csv.gz")
  chex = _label_table(chex_path, "label", notes)
  negbio_path = os.path.join(d, "mimic-cxr-2.0.0-negbio.csv.gz")
  negbio = (_label_table(negbio_path, "negbio", notes)
            if os.path.exists(negbio_path) else {})
  if not negbio:
    notes["negbio_csv_absent"] = 1
  skips: list[writer.Skip] = []
  studies = _group_images(meta, skips)
  assigned: dict[tuple[str, str], str] = {}
  for (sub, study), imgs in studies.items():
    sid = f"s{study}"
    splits = {split_of.get(did, "") for did, _ in imgs}
    if sid in exclude or any(did in exclude for did, _ in imgs):
      skips.append(writer.Skip("excluded_id", sid))
    elif "" in splits:
      skips.append(writer.Skip("missing_split_entry", sid))
    elif None in splits or len(splits) > 1:
      skips.append(writer.Skip("conflicting_split", sid))
    elif not splits <= set(features_lib.SPLITS):
      skips.append(writer.Skip("unknown_split_value", sid))
    else:
      assigned[(sub, study)] = splits.pop()
  by_subject: dict[str, set[str]] = collections.defaultdict(set)
  for (sub, _), split in assigned.items():
    by_subject[sub].add(split)
  by_split: dict[str, list[dict]] = {s: [] for s in features_lib.SPLITS}
  for (sub, study), split in assigned.items():
    sid = f"s{study}"
    keep = next(s for s in _SPLIT_PRIORITY if s in by_subject[sub])
    if split != keep:
      skips.append(writer.Skip("subject_in_two_splits", sid))
      continue
    chosen = [(did, view, os.path.join(_study_path(d, sub, study),
                                       f"{did}.jpg"))
              for did, view in studies[(sub, study)] if view in views]
    if not chosen:
      skips.append(writer.Skip("no_image_of_chosen_views", sid))
      continue
    try:
      labels = labels_from_row(chex.get(study))
    except ValueError as e:
      raise writer.ConversionError(f"{chex_path}: {e}") from None
    try:
      labels_negbio = labels_from_row(negbio.get(study))
    except ValueError as e:
      raise writer.ConversionError(f"{negbio_path}: {e}") from None
    by_split[split].append({
        "id": sid, "study_id": study, "subject_id": sub, "images": chosen,
        "report_path": _study_path(reports_dir, sub, study) + ".txt",
        "labels": labels, "labels_negbio": labels_negbio,
        "has_label_row": study in chex,
        "has_negbio_row": study in negbio or not negbio,
        "fallback_last_paragraph": fallback_last_paragraph,
        "official_section_rules": official_section_rules})
  for items in by_split.values():
    items.sort(key=lambda it: int(it["study_id"]))
  return by_split, skips, dict(notes)


def read_exclusions(path: str | None) -> set[str]:
  """dicom ids (and s<study> ids) from an MS-CXR-style CSV or a plain list.

  Raises:
    ConversionError: the file cannot be read.
  """
  if not path:
    return set()
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise writer.ConversionError(f"--exclude_ids {path}: cannot read ({e})"
                                 ) from None
  if rows and "dicom_id" in rows[0]:
    i = rows[0].index("dicom_id")
    return {r[i].strip() for r in rows[1:] if len(r) > i}
  return {r[0].strip() for r in rows if r}


def convert(*, mimic_cxr_jpg_dir: str, reports_dir: str, output_dir: str,
            image_size: int = 256, views: Sequence[str] = ("PA", "AP"),
            num_workers: int = 1, examples_per_shard: int = 1024,
            image_encoding: str = features_lib.DEFAULT_IMAGE_ENCODING,
            exclude_ids: str | None = None,
            fallback_last_paragraph: bool = False,
            official_section_rules: bool = True, overwrite: bool = False,
            progress: bool = True) -> dict:
  """Converts MIMIC-CXR(-JPG) to TFRecords (see the module docstring).

  Args:
    mimic_cxr_jpg_dir: MIMIC-CXR-JPG root (files/ and the four CSVs).
    reports_dir: reports root (files/pXX/pXXXXXXXX/sXXXXXXXX.txt).
    output_dir: output directory.
    image_size: shorter image side after resizing.
    views: ViewPositions to keep (frontal by default).
    num_workers: worker processes.
    examples_per_shard: studies per TFRecord shard.
    image_encoding: stored image format, "png" or "jpeg".
    exclude_ids: CSV of dicom ids to leave out (e.g. MS-CXR's).
    fallback_last_paragraph: use the official parser's last paragraph as
      the impression of reports without FINDINGS/IMPRESSION (off: LoVT).
    official_section_rules: apply the dataset's 54 per-study sectioning
      rules (`data_prep.section_rules`), as the official section files do.
    overwrite: discard previous output instead of resuming.
    progress: show a progress bar.

  Returns:
    The manifest.

  Raises:
    ConversionError: missing inputs or no study survives.
  """
  for p, flag in ((mimic_cxr_jpg_dir, "mimic_cxr_jpg_dir"),
                  (reports_dir, "reports_dir")):
    if not os.path.isdir(p):
      raise writer.ConversionError(f"--{flag} {p} is not a directory")
  if image_encoding not in ("png", "jpeg"):
    raise writer.ConversionError(
        f"image_encoding must be png or jpeg, got {image_encoding!r}")
  if image_size < 8:
    raise writer.ConversionError(f"image_size must be >= 8, got {image_size}")
  by_split, skips, notes = plan(mimic_cxr_jpg_dir, reports_dir, tuple(views),
                                read_exclusions(exclude_ids),
                                fallback_last_paragraph,
                                official_section_rules)
  jobs = [j for split, items in by_split.items() if items
          for j in writer.plan_shards(NAME, split, items, examples_per_shard)]
  if not jobs:
    raise writer.ConversionError("no study survived planning: " + str(dict(
        collections.Counter(s.reason for s in skips))))
  args = {"mimic_cxr_jpg_dir": os.path.abspath(mimic_cxr_jpg_dir),
          "reports_dir": os.path.abspath(reports_dir),
          "image_size": image_size, "views": list(views),
          "image_encoding": image_encoding,
          "examples_per_shard": examples_per_shard,
          "exclude_ids": exclude_ids and os.path.abspath(exclude_ids),
          "fallback_last_paragraph": fallback_last_paragraph,
          "official_section_rules": official_section_rules}
  return writer.run(
      name=NAME, out_dir=output_dir, jobs=jobs,
      encode=functools.partial(encode_study, image_size=image_size,
                               image_encoding=image_encoding),
      features_fn=functools.partial(features_lib.study_features,
                                    image_encoding),
      args=args, id_of=_item_id, num_workers=num_workers, pre_skipped=skips,
      pre_notes=notes, progress=progress, overwrite=overwrite,
      description="MIMIC-CXR-JPG studies with their report sections and "
      "CheXpert/NegBio labels (data_prep.mimic_cxr).")


def _item_id(item: dict) -> str:
  return item["id"]


def _define_flags(fl) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
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
  flags.DEFINE_enum("image_encoding", features_lib.DEFAULT_IMAGE_ENCODING,
                    ["png", "jpeg"], "Stored image format.", flag_values=fl)
  flags.DEFINE_string("exclude_ids", None, "CSV of dicom ids to exclude "
                      "(e.g. MS-CXR's).", flag_values=fl)
  flags.DEFINE_bool("fallback_last_paragraph", False, "Use the last "
                    "paragraph of reports without FINDINGS/IMPRESSION.",
                    flag_values=fl)
  flags.DEFINE_bool("official_section_rules", True, "Apply MIMIC-CXR's 54 "
                    "per-study sectioning rules.", flag_values=fl)
  flags.DEFINE_bool("overwrite", False, "Discard previous output.",
                    flag_values=fl)


def _convert_from_flags(fl) -> dict:
  return convert(
      mimic_cxr_jpg_dir=fl.mimic_cxr_jpg_dir, reports_dir=fl.reports_dir,
      output_dir=fl.output_dir, image_size=fl.image_size, views=fl.views,
      num_workers=fl.num_workers, examples_per_shard=fl.examples_per_shard,
      image_encoding=fl.image_encoding, exclude_ids=fl.exclude_ids,
      fallback_last_paragraph=fl.fallback_last_paragraph,
      official_section_rules=fl.official_section_rules,
      overwrite=fl.overwrite)


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return writer.cli(argv, doc=__doc__, define=_define_flags,
                    convert=_convert_from_flags,
                    required=("mimic_cxr_jpg_dir", "reports_dir",
                              "output_dir"))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
