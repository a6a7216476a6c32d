"""The synthetic MIMIC-format generator: layout, labels, visibility, seeds."""

import csv
import dataclasses
import gzip
import hashlib
import json
import os
import re
import tarfile
import zlib
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from data_prep import rle
from data_prep import synthetic
from data_prep.synthetic import anatomy
from data_prep.synthetic import findings as fnd
from data_prep.synthetic import mimic
from data_prep.synthetic import render
from jointcxr.data.features import CHEXPERT_LABELS


def _read_gz_csv(path):
  with gzip.open(path, "rt") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def test_mimic_csv_columns_ids_and_split(synthetic_root):
  d = synthetic_root / "mimic-cxr-jpg"
  header, meta = _read_gz_csv(d / "mimic-cxr-2.0.0-metadata.csv.gz")
  assert tuple(header) == mimic.METADATA_COLUMNS
  assert meta == sorted(meta, key=lambda r: (int(r[1]), int(r[2]), r[0]))
  for r in meta:
    assert re.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}", r[0])
    assert re.fullmatch(r"1\d{7}", r[1]) and re.fullmatch(r"5\d{7}", r[2])
    assert r[4] in ("PA", "AP", "LATERAL", "LL", "")
    path = d / "files" / f"p{r[1][:2]}" / f"p{r[1]}" / f"s{r[2]}" / \
        f"{r[0]}.jpg"
    assert path.is_file(), path
  for name in ("chexpert", "negbio"):
    header, rows = _read_gz_csv(d / f"mimic-cxr-2.0.0-{name}.csv.gz")
    assert tuple(header) == ("subject_id", "study_id") + CHEXPERT_LABELS
    values = {v for r in rows for v in r[2:]}
    assert values <= {"1.0", "0.0", "-1.0", ""}
    nf = header.index("No Finding")
    assert {r[nf] for r in rows} <= {"1.0", ""}
  header, split = _read_gz_csv(d / "mimic-cxr-2.0.0-split.csv.gz")
  assert tuple(header) == ("dicom_id", "study_id", "subject_id", "split")
  assert sorted(r[0] for r in split) == sorted(r[0] for r in meta)
  by_subject = {}
  for r in split:
    by_subject.setdefault(r[2], set()).add(r[3])
  assert all(len(s) == 1 for s in by_subject.values())
  assert {s for v in by_subject.values() for s in v} == {"train", "validate",
                                                          "test"}


def test_reports_look_like_mimic(synthetic_root):
  files = sorted((synthetic_root / "mimic-cxr-reports" / "files").rglob(
      "s*.txt"))
  assert files
  headers = set()
  for f in files:
    text = f.read_text()
    lines = text.split("\n")
    assert "FINAL REPORT" in text
    for ln in lines:
      if not ln or "FINAL REPORT" in ln:
        continue
      assert ln.startswith(" ") and not ln.startswith("  "), repr(ln)
      assert len(ln) <= 79, repr(ln)
    headers |= set(re.findall(r"\n ([A-Z ()/,-]+):", text))
  assert {"EXAMINATION", "INDICATION", "IMPRESSION"} <= headers


def _truth(root):
  with open(root / "ground_truth.jsonl") as f:
    return [json.loads(line) for line in f]


def test_labels_follow_rendered_truth(synthetic_root):
  _, rows = _read_gz_csv(synthetic_root / "mimic-cxr-jpg" /
                         "mimic-cxr-2.0.0-chexpert.csv.gz")
  labels = {int(r[1]): dict(zip(CHEXPERT_LABELS, r[2:])) for r in rows}
  by_study = {}
  for t in _truth(synthetic_root):
    if t["dataset"] == "mimic" and t["view"] in ("PA", "AP"):
      by_study.setdefault(t["study_id"], t)
  checked = 0
  for sid, t in by_study.items():
    if sid not in labels:
      continue
    lab = labels[sid]
    non_device = [f for f in t["findings"] if f["label"] != "Support Devices"]
    for f in non_device:
      pos = any(g["label"] == f["label"] and g["certainty"] == "positive"
                for g in non_device)
      assert lab[f["label"]] == ("1.0" if pos else "-1.0"), (sid, f)
      checked += 1
    assert (lab["No Finding"] == "1.0") == (not non_device), sid
    # Every positive label is explained by a rendered finding.
    explained = {f["label"] for f in t["findings"]} | {"No Finding"}
    # Some phrasings of effusion, pneumonia and atelectasis also state an
    # opacity ("effusion with adjacent basilar opacity", "opacity ...
    # compatible with pneumonia"), in findings or in the impression's own
    # phrasing: the labeler rightly reads Lung Opacity there.
    for f in t["findings"]:
      explained |= {k for k, v in f["sentence_labels"].items() if v == 1.0}
      if f["type"] in ("pleural_effusion", "pneumonia", "atelectasis"):
        explained.add("Lung Opacity")
    for name, v in lab.items():
      if v == "1.0":
        assert name in explained or name == "Support Devices", (sid, name)
  assert checked > 5


def _report_words(root, t):
  rel = os.path.dirname(t["path"]).split("files/")[1] + ".txt"
  return " ".join((root / "mimic-cxr-reports" / "files" / rel).read_text()
                  .split())


def test_truth_sentences_and_ms_cxr_phrases_come_from_the_report(
    synthetic_root):
  truth = [t for t in _truth(synthetic_root) if t["dataset"] == "mimic"]
  by_dicom = {t["dicom_id"]: t for t in truth}
  stated = 0
  for t in truth:
    words = _report_words(synthetic_root, t)
    for f in t["findings"]:
      if t["report_style"] == "no_text":
        assert f["sentence"] is None
        continue
      assert f["sentence"] in words, (f["sentence"], words)
      expect = -1.0 if f["certainty"] == "uncertain" else 1.0
      assert f["sentence_labels"][f["label"]] == expect
      stated += 1
  assert stated > 10
  with open(synthetic_root / "ms_cxr" /
            "MS_CXR_Local_Alignment_v1.0.0.csv") as f:
    rows = list(csv.DictReader(f))
  assert rows
  for r in rows:
    t = by_dicom[r["dicom_id"]]
    assert r["label_text"] in _report_words(synthetic_root, t), r
    assert "," not in r["label_text"]
    assert r["category_name"] in {f["label"] for f in t["findings"]}
    x, y, w, h = (float(r[k]) for k in ("x", "y", "w", "h"))
    assert 0 <= x and x + w <= float(r["image_width"]) == t["width"]
    assert 0 <= y and y + h <= float(r["image_height"]) == t["height"]


@pytest.mark.parametrize("ftype", sorted(fnd.CHEXPERT_OF))
def test_each_finding_is_visible_inside_its_mask(ftype):
  from scipy import ndimage
  for k, severity in enumerate(fnd.SEVERITIES):
    rng = np.random.default_rng([zlib.crc32(ftype.encode()), k])
    p = anatomy.sample_patient(rng)
    f = dataclasses.replace(fnd.sample_finding(rng, ftype, uncertain_p=0.0),
                            severity=severity)
    with_f, masks = render.render_frontal(p, [f], 224, 224, seed=3)
    without, _ = render.render_frontal(p, [], 224, 224, seed=3)
    m = masks[0]
    assert m.sum() > 5, (ftype, severity)
    diff = np.abs(with_f.astype(float) - without.astype(float))
    assert diff[m].mean() > 8.0, (ftype, severity, diff[m].mean())
    # Far from the finding nothing changes (same noise stream).
    far = ~ndimage.binary_dilation(
        m, iterations=30 if ftype == "rib_fracture" else 8)
    assert diff[far].mean() < 1.0, (ftype, severity, diff[far].mean())


def test_findings_sit_where_the_report_places_them():
  # Side: the mask lies in the named hemithorax (the patient's right is the
  # image left); zone: upper-zone masks sit above lower-zone ones; severity:
  # a large effusion covers more than a small one.
  rng = np.random.default_rng(0)
  p = anatomy.sample_patient(rng)
  def mask(**kw):
    f = fnd.Finding(**{"severity": "moderate", "seed": 4, **kw})
    return render.render_frontal(p, [f], 128, 128, seed=1)[1][0]
  cols = np.arange(128)[None, :]
  rows = np.arange(128)[:, None]
  for t in ("pleural_effusion", "pneumothorax", "consolidation", "nodule",
            "atelectasis", "pleural_thickening"):
    right, left = mask(type=t, side="right", zone="middle"), mask(
        type=t, side="left", zone="middle")
    assert (cols * right).sum() / right.sum() < 64 < (
        cols * left).sum() / left.sum(), t
  for t in ("consolidation", "lung_opacity", "pneumonia", "mass"):
    up, low = mask(type=t, side="left", zone="upper"), mask(
        type=t, side="left", zone="lower")
    assert (rows * up).sum() / up.sum() < (rows * low).sum() / low.sum(), t
  small = mask(type="pleural_effusion", side="left", severity="small")
  large = mask(type="pleural_effusion", side="left", severity="large")
  assert large.sum() > 2 * small.sum()
  # Cardiomegaly: the cardiac silhouette is wider than the patient's own.
  heart = anatomy.render_anatomy(p, 128, 128)[1]["heart"]
  big = mask(type="cardiomegaly", severity="small")
  width = lambda m: np.ptp(np.nonzero(m.any(0))[0])
  assert width(big) > 1.2 * width(heart)


def test_localized_formats(synthetic_root):
  r = synthetic_root
  with open(r / "siim" / "train-rle.csv") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["ImageId", " EncodedPixels"]
  assert any(v.strip() == "-1" for _, v in rows[1:])
  truth = {t.get("image_id"): t for t in _truth(r) if t["dataset"] == "siim"}
  for image_id, enc in rows[1:]:
    t = truth[image_id]
    m = rle.decode(enc.strip(), t["height"], t["width"])
    union = np.zeros_like(m, bool)
    for f in t["findings"]:
      union |= rle.decode(f["mask_rle"], t["height"], t["width"]).astype(bool)
    assert not (m.astype(bool) & ~union).any()
  assert len(list((r / "siim" / "dicom-images-train").glob("*/*/*.dcm"))) == \
      len(truth)
  with open(r / "nih" / "BBox_List_2017.csv") as f:
    assert f.readline().strip() == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
  with open(r / "rsna" / "stage_2_train_labels.csv") as f:
    rs = list(csv.DictReader(f))
  assert {x["Target"] for x in rs} == {"0", "1"}
  assert all(x["x"] == "" for x in rs if x["Target"] == "0")
  with open(r / "object_cxr" / "train.csv") as f:
    oc = list(csv.DictReader(f))
  assert set(oc[0]) == {"image_name", "annotation"}
  for row in oc:
    for obj in filter(None, row["annotation"].split(";")):
      kind, *coords = obj.split()
      assert kind in "012" and len(coords) >= 4
  with open(r / "ms_cxr" / "MS_CXR_Local_Alignment_v1.0.0.csv") as f:
    ms = list(csv.DictReader(f))
  assert ms and all((r / "mimic-cxr-jpg" / m["path"]).is_file() for m in ms)
  assert len(list((r / "covid_rural" / "jpgs").glob("*.jpg"))) == len(
      list((r / "covid_rural" / "pngs_masks").glob("*.png")))
  with tarfile.open(r / "openi" / "NLMCXR_reports.tgz") as tar:
    members = [m for m in tar.getmembers() if m.name.endswith(".xml")]
    root = ET.fromstring(tar.extractfile(members[0]).read())
  labels = [e.get("Label") for e in root.iter("AbstractText")]
  assert labels == ["COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION"]
  for img in root.iter("parentImage"):
    assert re.fullmatch(r"CXR\d+_IM-\d{4}-\d+", img.get("id"))
    assert (r / "openi" / "images" / (img.get("id") + ".png")).is_file()


def _tree_hash(root):
  h = hashlib.sha256()
  for dirpath, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      p = os.path.join(dirpath, name)
      h.update(os.path.relpath(p, root).encode())
      with open(p, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def test_deterministic_per_seed_whatever_the_workers(tmp_path):
  kw = dict(num_subjects=6, image_size=64, progress=False)
  synthetic.generate(str(tmp_path / "a"), seed=5, num_workers=1, **kw)
  synthetic.generate(str(tmp_path / "b"), seed=5, num_workers=2, **kw)
  synthetic.generate(str(tmp_path / "c"), seed=6, num_workers=1, **kw)
  assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
  assert _tree_hash(tmp_path / "a") != _tree_hash(tmp_path / "c")


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_subjects must be >= 1"):
    synthetic.generate("/tmp/never", num_subjects=0)
  with pytest.raises(ValueError, match="image_size must be >= 32"):
    synthetic.generate("/tmp/never", num_subjects=1, image_size=8)


def test_preview_written(tmp_path):
  out = synthetic.generate(str(tmp_path / "p"), num_subjects=3, image_size=64,
                           progress=False, num_workers=1,
                           localized=False,
                           preview=str(tmp_path / "p.png"))
  from PIL import Image
  assert Image.open(out["preview"]).size[0] > 200



def test_variation_scales_nuisances_toward_one_phantom():
  full = anatomy.sample_patient(np.random.default_rng(5), ap=True)
  assert anatomy.sample_patient(np.random.default_rng(5), ap=True,
                                variation=1.0) == full
  fixed = anatomy.sample_patient(np.random.default_rng(5), ap=True,
                                 variation=0.0)
  assert (fixed.cx, fixed.cy, fixed.scale, fixed.rotation) == (
      0.5, 0.0, 0.97, 0.0)
  assert fixed.inspiration == 0.93 and fixed.marker == -1
  assert fixed.shape[0] == fixed.shape[3] == 0.0
  # Findings-related anatomy is not a nuisance.
  assert (fixed.ctr, fixed.mediastinum) == (full.ctr, full.mediastinum)
  half = anatomy.sample_patient(np.random.default_rng(5), ap=True,
                                variation=0.5)
  assert half.cx == pytest.approx(0.5 + 0.5 * (full.cx - 0.5))
  assert half.window[1] == pytest.approx(245.0 + 0.5 * (full.window[1] - 245))
  with pytest.raises(ValueError, match=r"variation must be in \[0, 2\], "
                     "got -1"):
    synthetic.generate("/nonexistent", num_subjects=1, variation=-1)
