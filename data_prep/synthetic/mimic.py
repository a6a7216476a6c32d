"""The MIMIC-CXR-JPG + MIMIC-CXR reports trees, with their CSVs.

Layout, id formats, column names and value conventions follow
DATA_FORMATS.md A1 exactly; see `write_mimic`.
"""

import csv
import dataclasses
import gzip
import io
import os
from typing import Sequence

import numpy as np
from PIL import Image

from data_prep import rle
from data_prep.synthetic import anatomy
from data_prep.synthetic import findings as fnd
from data_prep.synthetic import render
from data_prep.synthetic import reports
from jointcxr.data.features import CHEXPERT_LABELS

METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
    "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
    "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning")
LABEL_COLUMNS = ("subject_id", "study_id") + CHEXPERT_LABELS
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")

# Relative frequency of each finding type among abnormal studies.
FINDING_WEIGHTS = {
    "pleural_effusion": 0.2, "pneumothorax": 0.05, "consolidation": 0.07,
    "lung_opacity": 0.15, "pneumonia": 0.07, "atelectasis": 0.15,
    "edema": 0.1, "nodule": 0.04, "mass": 0.02, "cardiomegaly": 0.1,
    "enlarged_cardiomediastinum": 0.03, "rib_fracture": 0.02,
    "pleural_thickening": 0.02}
REPORT_STYLES = {
    "standard": 0.58, "impression_only": 0.2, "findings_only": 0.06,
    "combined": 0.05, "view_header": 0.03, "last_paragraph": 0.03,
    "no_text": 0.03, "addendum": 0.02}
VIEW_SETS = (
    (("PA", "LATERAL"), 0.5), (("AP",), 0.3), (("PA",), 0.1),
    (("AP", "LATERAL"), 0.05), (("PA", "LATERAL", "LL"), 0.05))


def dicom_id(rng: np.random.Generator) -> str:
  """40 hex characters in five dash-separated groups of 8."""
  return "-".join(f"{int(rng.integers(1 << 32)):08x}" for _ in range(5))


def sample_findings(rng: np.random.Generator) -> list[fnd.Finding]:
  """Findings of one study: ~1/3 normal, else 1-3 findings, plus devices."""
  out = []
  if rng.random() > 0.33:
    names = list(FINDING_WEIGHTS)
    w = np.array([FINDING_WEIGHTS[n] for n in names])
    k = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    for name in rng.choice(names, size=k, replace=False, p=w / w.sum()):
      out.append(fnd.sample_finding(rng, str(name)))
  if rng.random() < 0.25:
    for name in rng.choice(fnd.DEVICES, size=int(rng.integers(1, 3)),
                           replace=False):
      out.append(fnd.sample_finding(rng, str(name)))
  return out


def write_report(rng: np.random.Generator, found: Sequence[fnd.Finding],
                 views: Sequence[str]) -> tuple[str, dict | None, dict]:
  """(report text, labels or None when unlabelable, sentence info)."""
  # Uncertain mentions also suppress the pertinent negative of their label.
  present = {f.label for f in found}
  order = rng.permutation(len(found))
  fsents = [reports.describe(found[i], rng) for i in order]
  fsents += reports.pertinent_negatives(present, rng, impression=False)
  isents = [reports.describe(found[i], rng) for i in order
            if found[i].type not in fnd.DEVICES or rng.random() < 0.5]
  if not isents:
    isents = [reports.Sentence(str(rng.choice([
        "No acute cardiopulmonary process.",
        "No acute intrathoracic abnormality.",
        "No acute cardiopulmonary abnormality.",
        "No radiographic evidence of acute disease.",
        "No acute intrathoracic process.",
        "Normal chest radiograph."])), {})]
  isents += reports.pertinent_negatives(present, rng, impression=True)
  names = list(REPORT_STYLES)
  p = np.array([REPORT_STYLES[n] for n in names])
  style = str(rng.choice(names, p=p / p.sum()))
  desc = ("CHEST (PORTABLE AP)" if views[0] == "AP" else "CHEST (PA AND LAT)"
          if len(views) > 1 else "CHEST (PA)")
  text = reports.format_report([s.text for s in fsents],
                               [s.text for s in isents], style=style,
                               view_desc=desc, rng=rng)
  section = reports.labeled_section(style, fsents, isents)
  labels = None if section is None else reports.aggregate(section,
                                                          CHEXPERT_LABELS)
  # The FINDINGS-section sentence of each finding (in `found` order); every
  # style but "no_text" prints those sentences.
  own = [None] * len(found)
  for k, i in enumerate(order):
    own[i] = None if style == "no_text" else fsents[k]
  info = {"style": style, "findings": [s.text for s in fsents],
          "impression": [s.text for s in isents], "sentences": own}
  return text, labels, info


@dataclasses.dataclass
class SubjectJob:
  """One subject to render in a worker (all studies, all views)."""
  index: int
  subject_id: int
  study_ids: list[int]
  seed: int
  root: str
  image_size: int | str
  quality: int = 95
  variation: float = 1.0  # nuisance variation (anatomy.sample_patient)


def _view_meta(view: str) -> tuple[str, str]:
  return {"PA": ("postero-anterior", "Erect"),
          "AP": ("antero-posterior", ""),
          "LATERAL": ("lateral", "Erect"),
          "LL": ("left lateral", "Erect")}[view]


def render_subject(job: SubjectJob) -> dict:
  """Renders and writes every study of one subject; returns CSV rows + truth."""
  rng = np.random.default_rng([job.seed, job.index])
  rows, chex, truth, reports_written = [], [], [], 0
  base_patient = anatomy.sample_patient(rng, variation=job.variation)
  pdir = f"p{str(job.subject_id)[:2]}/p{job.subject_id}"
  for study_id in job.study_ids:
    r = rng.random()
    acc = 0.0
    views = VIEW_SETS[-1][0]
    for vs, pr in VIEW_SETS:
      acc += pr
      if r < acc:
        views = vs
        break
    found = sample_findings(rng)
    text, labels, info = write_report(rng, found, views)
    rep_dir = os.path.join(job.root, "mimic-cxr-reports", "files", pdir)
    os.makedirs(rep_dir, exist_ok=True)
    with open(os.path.join(rep_dir, f"s{study_id}.txt"), "w") as f:
      f.write(text)
    reports_written += 1
    img_dir = os.path.join(job.root, "mimic-cxr-jpg", "files", pdir,
                           f"s{study_id}")
    os.makedirs(img_dir, exist_ok=True)
    date = f"21{rng.integers(10, 99)}{rng.integers(1, 13):02d}" \
           f"{rng.integers(1, 29):02d}"
    time_ = float(f"{rng.integers(0, 24)}{rng.integers(0, 60):02d}"
                  f"{rng.integers(0, 60):02d}.{rng.integers(0, 1000):03d}")
    for view in views:
      did = dicom_id(rng)
      ap = view == "AP"
      view_patient = anatomy.sample_patient(rng, ap=ap,
                                            variation=job.variation)
      p = dataclasses.replace(view_patient,
                              ctr=base_patient.ctr * (1.12 if ap else 1.0),
                              texture_seed=base_patient.texture_seed)
      h, w = render.output_shape(job.image_size)
      seed = int(rng.integers(1 << 31))
      frontal = view in ("PA", "AP")
      if frontal:
        img, masks = render.render_frontal(p, found, h, w, seed)
      else:
        img, masks = render.render_lateral(p, h, w, seed), []
      rel = f"files/{pdir}/s{study_id}/{did}.jpg"
      Image.fromarray(img).save(os.path.join(job.root, "mimic-cxr-jpg", rel),
                                quality=job.quality)
      code, orient = _view_meta(view)
      vp = view if rng.random() > 0.02 or frontal else ""
      rows.append([did, job.subject_id, study_id, desc_of(views), vp, h, w,
                   date, time_, desc_of(views), code, orient])
      truth.append(_truth("mimic", "mimic-cxr-jpg/" + rel, job, study_id, did,
                          view, found if frontal else [], masks, labels, h, w,
                          info["sentences"], info["style"]))
    if labels is not None:
      chex.append([job.subject_id, study_id] + [labels[n] for n in
                                                CHEXPERT_LABELS])
  return {"rows": rows, "chexpert": chex, "truth": truth,
          "reports": reports_written}


def desc_of(views: Sequence[str]) -> str:
  """PerformedProcedureStepDescription for the views of a study."""
  if views[0] == "AP":
    return "CHEST (PORTABLE AP)"
  return "CHEST (PA AND LAT)" if len(views) > 1 else "CHEST (PA)"


def _truth(dataset: str, path: str, job: SubjectJob, study_id: int,
           did: str, view: str, found: Sequence[fnd.Finding],
           masks: Sequence[np.ndarray], labels: dict | None, h: int, w: int,
           sentences: Sequence[reports.Sentence | None], style: str) -> dict:
  """One ground-truth record: findings with boxes, masks and sentences.

  `sentence` is the report sentence stating the finding (None when the
  report has no usable text) and `sentence_labels` the CheXpert labels that
  sentence implies on its own.
  """
  items = []
  for f, m, sent in zip(found, masks, sentences):
    ys, xs = np.nonzero(m)
    box = ([int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)] if ys.size else None)
    items.append({**f.to_json(), "label": f.label, "box": box,
                  "mask_rle": rle.encode(m),
                  "sentence": None if sent is None else sent.text,
                  "sentence_labels": None if sent is None else dict(
                      sent.labels)})
  return {"dataset": dataset, "path": path, "subject_id": job.subject_id,
          "study_id": study_id, "dicom_id": did, "view": view, "height": h,
          "width": w, "report_style": style, "findings": items,
          "labels": None if labels is None else {
              k: (None if np.isnan(v) else v) for k, v in labels.items()}}


def _fmt(v: object) -> str:
  if isinstance(v, float):
    return "" if np.isnan(v) else f"{v:.1f}"
  return str(v)


def write_csv_gz(path: str, header: Sequence[str],
                 rows: Sequence[Sequence[object]]) -> None:
  """Deterministic gzip (mtime 0) CSV with the real value conventions."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(header)
  for r in rows:
    w.writerow([_fmt(v) for v in r])
  with open(path, "wb") as f:
    with gzip.GzipFile(fileobj=f, mode="wb", mtime=0,
                       filename="") as gz:
      gz.write(buf.getvalue().encode())


def negbio_from(chex_rows: list[list], rng: np.random.Generator) -> list:
  """NegBio labels: equal to CheXpert's except rare realistic disagreements."""
  out = []
  for r in chex_rows:
    r = list(r)
    if rng.random() < 0.03:
      idx = [i for i, n in enumerate(CHEXPERT_LABELS, 2)
             if n != "No Finding" and not np.isnan(r[i])]
      if idx:
        i = idx[int(rng.integers(len(idx)))]
        r[i] = {1.0: -1.0, -1.0: 1.0, 0.0: -1.0}[r[i]]
    out.append(r)
  return out


def finish(root: str, results: list[dict], splits: dict[int, str],
           seed: int) -> dict:
  """Writes the 4 gzipped CSVs and the truth; returns counts."""
  d = os.path.join(root, "mimic-cxr-jpg")
  rows = sorted((r for res in results for r in res["rows"]),
                key=lambda r: (r[1], r[2], r[0]))
  chex = sorted((r for res in results for r in res["chexpert"]),
                key=lambda r: (r[0], r[1]))
  write_csv_gz(os.path.join(d, "mimic-cxr-2.0.0-metadata.csv.gz"),
               METADATA_COLUMNS, rows)
  write_csv_gz(os.path.join(d, "mimic-cxr-2.0.0-chexpert.csv.gz"),
               LABEL_COLUMNS, chex)
  write_csv_gz(os.path.join(d, "mimic-cxr-2.0.0-negbio.csv.gz"),
               LABEL_COLUMNS, negbio_from(chex, np.random.default_rng(
                   [seed, 99])))
  write_csv_gz(os.path.join(d, "mimic-cxr-2.0.0-split.csv.gz"), SPLIT_COLUMNS,
               [[r[0], r[2], r[1], splits[r[1]]] for r in rows])
  counts = {s: 0 for s in ("train", "validate", "test")}
  for r in rows:
    counts[splits[r[1]]] += 1
  return {"images": len(rows), "studies": sum(res["reports"] for res in
                                               results),
          "labelled_studies": len(chex), "images_per_split": counts}

