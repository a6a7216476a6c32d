"""The bad-input corpus: every case is a named skip with an exact count, or
a clear one-line error; none is a traceback, none is a silent drop.

One corrupted copy of the synthetic MIMIC tree carries one defect per
study and is converted once; the other converters and CLIs get their own
small cases.
"""

import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from data_prep import mimic_cxr
from data_prep import openi
from data_prep.localized import ms_cxr
from data_prep.localized import nih
from data_prep.localized import object_cxr
from data_prep.localized import siim

MIMIC_DEFECTS = ("zero_byte_jpeg", "truncated_jpeg", "not_an_image",
                 "image_missing", "report_missing", "non_utf8_report",
                 "empty_findings_impression", "report_without_sections",
                 "label_row_missing", "split_entry_missing", "png_16bit",
                 "too_short_report")


def _gz(path):
  with gzip.open(path, "rt", newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _write_gz(path, header, rows):
  with gzip.open(path, "wt", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


@pytest.fixture(scope="module")
def corrupted(synthetic_root, tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  jpg, rep = root / "jpg", root / "rep"
  shutil.copytree(synthetic_root / "mimic-cxr-jpg", jpg)
  shutil.copytree(synthetic_root / "mimic-cxr-reports", rep)
  header, meta = _gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz")
  by_study = {}
  for r in meta:
    if r[4] in ("PA", "AP"):
      by_study.setdefault(r[2], []).append(r)
  usable = []
  for s, rows in sorted(by_study.items()):
    sub = rows[0][1]
    text = (rep / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{s}.txt"
            ).read_text()
    if len(rows) == 1 and ("IMPRESSION:" in text or "FINDINGS:" in text):
      usable.append(s)
  assert len(usable) >= len(MIMIC_DEFECTS) + 2
  case = dict(zip(MIMIC_DEFECTS, usable))

  def img(s):
    r = by_study[s][0]
    return jpg / "files" / f"p{r[1][:2]}" / f"p{r[1]}" / f"s{s}" / \
        f"{r[0]}.jpg"

  def report(s):
    sub = by_study[s][0][1]
    return rep / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{s}.txt"

  img(case["zero_byte_jpeg"]).write_bytes(b"")
  data = img(case["truncated_jpeg"]).read_bytes()
  img(case["truncated_jpeg"]).write_bytes(data[:len(data) // 3])
  img(case["not_an_image"]).write_bytes(b"%PDF-1.4 not an image")
  os.remove(img(case["image_missing"]))
  os.remove(report(case["report_missing"]))
  t = report(case["non_utf8_report"]).read_text()
  report(case["non_utf8_report"]).write_bytes(
      t.replace("FINAL", "FIN\xe9AL").encode("latin-1"))
  report(case["empty_findings_impression"]).write_text(
      " FINAL REPORT\n EXAMINATION: CHEST\n \n FINDINGS:\n \n IMPRESSION:\n")
  report(case["report_without_sections"]).write_text(
      "no headers at all in this text\n")
  report(case["too_short_report"]).write_text(
      " FINAL REPORT\n IMPRESSION: Clear.\n")
  Image.fromarray(np.linspace(0, 60000, 64 * 53).reshape(64, 53).astype(
      np.uint16)).save(img(case["png_16bit"]), format="PNG")
  lh, lrows = _gz(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz")
  _write_gz(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", lh,
            [r for r in lrows if r[1] != case["label_row_missing"]])
  sh, srows = _gz(jpg / "mimic-cxr-2.0.0-split.csv.gz")
  _write_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", sh,
            [r for r in srows if r[1] != case["split_entry_missing"]])
  evil = list(meta[0])
  evil[0] = "../../../../etc/passwd"
  _write_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", header,
            meta + [meta[1], evil])
  manifest = mimic_cxr.convert(mimic_cxr_jpg_dir=str(jpg),
                               reports_dir=str(rep),
                               output_dir=str(root / "out"), image_size=64,
                               progress=False)
  return manifest, case, root / "out"


MIMIC_EXPECTED = [
    # (case, "skipped"|"notes", key, minimum count)
    ("zero_byte_jpeg", "notes", "image_empty_image_file", 1),
    ("truncated_jpeg", "notes", "image_unreadable_image", 2),
    ("not_an_image", "notes", "image_unreadable_image", 2),
    ("image_missing", "notes", "image_missing_image", 1),
    ("unusable_images_skip_study", "skipped", "no_usable_image", 4),
    ("report_missing", "skipped", "missing_report", 1),
    ("non_utf8_report", "notes", "non_utf8_report", 1),
    ("empty_findings_impression", "skipped", "empty_findings_impression", 1),
    ("report_without_sections", "skipped", "report_without_sections", 1),
    ("too_short_report", "skipped", "too_short_report", 1),
    ("label_row_missing", "notes", "missing_label_row", 1),
    ("split_entry_missing", "skipped", "missing_split_entry", 1),
    ("duplicate_dicom_id", "skipped", "duplicate_dicom_id", 1),
    ("path_escaping_root", "skipped", "invalid_id_in_metadata", 1),
    ("png_16bit", "notes", "converted_16bit", 1),
]


@pytest.mark.parametrize("case,where,key,count", MIMIC_EXPECTED,
                         ids=[c[0] for c in MIMIC_EXPECTED])
def test_mimic_case(corrupted, case, where, key, count):
  manifest, _, _ = corrupted
  assert manifest[where].get(key, 0) >= count, (key, manifest[where])


def test_mimic_skips_are_listed_by_id_exactly(corrupted):
  manifest, case, out = corrupted
  with open(out / "skipped.csv") as f:
    listed = list(csv.DictReader(f))
  assert len(listed) == sum(manifest["skipped"].values())
  ids = {r["id"] for r in listed}
  assert f"s{case['report_missing']}" in ids
  # Report text never reaches the logs or the skip list.
  assert "pleural" not in (out / "skipped.csv").read_text().lower()


def test_siim_malformed_rle_is_a_named_skip(synthetic_root, tmp_path):
  src = synthetic_root / "siim"
  d = tmp_path / "siim"
  shutil.copytree(src, d)
  rows = list(csv.reader(open(d / "train-rle.csv")))
  rows[1][1] = " 1 2 3"  # odd number of integers
  with open(d / "train-rle.csv", "w", newline="") as f:
    csv.writer(f, lineterminator="\n").writerows(rows)
  m = siim.convert(input_dir=str(d), output_dir=str(tmp_path / "o"),
                   image_size=32, progress=False)
  assert m["skipped"].get("bad_rle", 0) == 1


def test_object_cxr_bad_annotation_is_a_named_skip(synthetic_root, tmp_path):
  d = tmp_path / "obj"
  shutil.copytree(synthetic_root / "object_cxr", d)
  rows = list(csv.reader(open(d / "train.csv")))
  rows[1][1] = "7 1 2 3 4"
  with open(d / "train.csv", "w", newline="") as f:
    csv.writer(f, lineterminator="\n").writerows(rows)
  m = object_cxr.convert(input_dir=str(d), output_dir=str(tmp_path / "o"),
                         image_size=32, progress=False)
  assert m["skipped"].get("bad_annotation", 0) == 1


def test_nih_short_row_and_missing_image(synthetic_root, tmp_path):
  d = tmp_path / "nih"
  shutil.copytree(synthetic_root / "nih", d)
  with open(d / "BBox_List_2017.csv", "a") as f:
    f.write("00099999_000.png,Mass\n")           # short row
    f.write("00099998_000.png,Mass,1,2,3,4\n")   # image absent
  m = nih.convert(input_dir=str(d), output_dir=str(tmp_path / "o"),
                  image_size=32, progress=False)
  assert m["skipped"].get("short_row", 0) == 1
  assert m["skipped"].get("missing_image", 0) >= 1


def test_ms_cxr_path_escaping_root(synthetic_root, tmp_path):
  d = tmp_path / "ms"
  shutil.copytree(synthetic_root / "ms_cxr", d)
  f = d / "MS_CXR_Local_Alignment_v1.0.0.csv"
  rows = list(csv.reader(open(f)))
  rows[1][3] = "../../../etc/passwd"
  with open(f, "w", newline="") as fh:
    csv.writer(fh, lineterminator="\n").writerows(rows)
  m = ms_cxr.convert(input_dir=str(d), output_dir=str(tmp_path / "o"),
                     mimic_cxr_jpg_dir=str(synthetic_root / "mimic-cxr-jpg"),
                     image_size=32, progress=False)
  assert m["skipped"].get("path_escapes_root", 0) == 1


def test_openi_malformed_xml_member(synthetic_root, tmp_path):
  src = synthetic_root / "openi" / "NLMCXR_reports.tgz"
  dst = tmp_path / "r.tgz"
  with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
    for m in tin.getmembers():
      tout.addfile(m, tin.extractfile(m))
    bad = b"<eCitation><uId id='CXR9999'>"
    info = tarfile.TarInfo("ecgen-radiology/9999.xml")
    info.size = len(bad)
    tout.addfile(info, io.BytesIO(bad))
  m = openi.convert(reports_tgz=str(dst), output_dir=str(tmp_path / "o"),
                    progress=False)
  assert m["skipped"].get("malformed_xml", 0) == 1


@pytest.mark.parametrize("argv,expect", [
    (["-m", "data_prep.mimic_cxr", "--mimic_cxr_jpg_dir=/nonexistent",
      "--reports_dir=/nonexistent", "--output_dir=/tmp/x"],
     "not a directory"),
    (["-m", "data_prep.labeler", "--input=/nonexistent.csv",
      "--output=/tmp/x.csv"], "cannot read"),
    (["-m", "data_prep.localized.siim", "--input_dir=/nonexistent",
      "--output_dir=/tmp/x"], "error"),
    (["-m", "data_prep.tokenizer", "--input=/nonexistent",
      "--output=/tmp/x.model"], "does not exist"),
])
def test_cli_errors_are_one_line(argv, expect):
  res = subprocess.run([sys.executable, *argv], capture_output=True,
                       text=True, check=False, timeout=120)
  assert res.returncode != 0
  assert "Traceback" not in res.stderr
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error") and expect in last, last
