"""Every CSV the converters read accepts a UTF-8 byte-order mark.

Excel, and pandas with encoding="utf-8-sig", write a BOM before the header;
read as plain UTF-8 it becomes part of the first column's name
("\\ufeffsubject_id"), which used to abort the MIMIC conversion with
"missing columns ['subject_id']".
"""

import csv
import gzip
import io

import pytest

from data_prep import iu_xml
from data_prep import labeler
from data_prep import mimic_cxr
from data_prep import openi
from data_prep import tokenizer
from data_prep import writer
from data_prep.localized import ms_cxr
from data_prep.localized import nih
from data_prep.localized import object_cxr
from data_prep.localized import rsna
from data_prep.localized import siim

BOM = "\ufeff"
JPG = "mimic-cxr-jpg"


def _write(path, rows, bom=True):
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows(rows)
  text = (BOM if bom else "") + buf.getvalue()
  if str(path).endswith(".gz"):
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
      f.write(text)
  else:
    path.write_text(text, encoding="utf-8")
  return str(path)


def _with_bom(src, dst):
  with gzip.open(src, "rt", encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f))
  assert not rows[0][0].startswith(BOM)
  return _write(dst, rows)


def test_mimic_plan_reads_bom_csvs_like_plain_ones(synthetic_root, tmp_path):
  src = synthetic_root / JPG
  jpg = tmp_path / JPG
  jpg.mkdir()
  for name in ("metadata", "split", "chexpert", "negbio"):
    f = f"mimic-cxr-2.0.0-{name}.csv.gz"
    _with_bom(src / f, jpg / f)
  reports = str(synthetic_root / "mimic-cxr-reports")
  plain, plain_skips, _ = mimic_cxr.plan(str(src), reports, ("PA", "AP"),
                                         set())
  bom, bom_skips, _ = mimic_cxr.plan(str(jpg), reports, ("PA", "AP"), set())
  def summary(by_split):
    # Bytes, so NaN labels compare equal.
    return {s: [(it["id"], it["labels"].tobytes(),
                 it["labels_negbio"].tobytes()) for it in items]
            for s, items in by_split.items()}
  assert summary(bom) == summary(plain)
  assert sum(len(v) for v in plain.values()) > 10
  assert bom_skips == plain_skips


def test_mimic_missing_column_still_named(tmp_path):
  path = _write(tmp_path / "x.csv.gz", [["study_id"], ["5"]])
  with pytest.raises(writer.ConversionError,
                     match=r"missing columns \['subject_id'\]"):
    # pylint: disable-next=protected-access
    mimic_cxr._read_csv(path, ["subject_id", "study_id"])


def test_mimic_exclusions(tmp_path):
  path = _write(tmp_path / "ms.csv", [["dicom_id", "x"], ["abc", "1"]])
  assert mimic_cxr.read_exclusions(path) == {"abc"}


def test_openi_split_and_projections(tmp_path):
  path = _write(tmp_path / "s.csv", [["r2gen_id", "uid", "split"],
                                     ["CXR1_IM-1", "CXR1", "train"]])
  assert iu_xml.read_r2gen_split(path) == {"CXR1": "train"}
  path = _write(tmp_path / "p.csv", [["uid", "filename", "projection"],
                                     ["1", "1_IM-0001-4001.dcm.png",
                                      "Frontal"]])
  assert openi.read_projections(path) == {"CXR1_IM-0001-4001": "Frontal"}


def test_labeler_and_tokenizer_inputs(tmp_path):
  path = _write(tmp_path / "r.csv", [["Reports"], ["No effusion."]])
  assert labeler.read_reports(path) == ["No effusion."]
  path = _write(tmp_path / "l.csv", [["Reports", "Edema"], ["x", "1.0"]])
  assert labeler.read_labels(path) == [{"Edema": 1.0}]
  path = _write(tmp_path / "t.csv", [["text"], ["Lungs clear."]])
  assert list(tokenizer.read_sentences(path)) == ["Lungs clear."]


def test_localized_readers(tmp_path):
  skips = []
  path = _write(tmp_path / "train-rle.csv", [["ImageId", "EncodedPixels"],
                                              ["1.2.3", "-1"]])
  assert siim.read_rles(path, skips) == {"1.2.3": []}
  _write(tmp_path / "Data_Entry_2017.csv", [["Image Index", "Patient ID"],
                                            ["00000001_000.png", "1"]])
  assert nih.read_patients(str(tmp_path)) == {"00000001_000.png": "1"}
  _write(tmp_path / "stage_2_train_labels.csv",
         [["patientId", "x", "y", "width", "height", "Target"],
          ["abc", "", "", "", "", "0"]])
  items, _ = rsna.build_items(str(tmp_path))
  assert len(items) <= 1  # read, whatever the absent image does
  _write(tmp_path / "dev.csv", [["image_name", "annotation"], ["a.jpg", ""]])
  _, skips = object_cxr.build_items(str(tmp_path), "dev")
  assert [s.reason for s in skips] == ["missing_image"]
  _write(tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv",
         [list(ms_cxr._COLUMNS)])  # pylint: disable=protected-access
  jpg = tmp_path / "jpg"
  jpg.mkdir()
  items, _, _ = ms_cxr.build_items(str(tmp_path), str(jpg))
  assert items == []


def test_bom_in_report_csv_cli(tmp_path):
  """The end-to-end case of the issue, in miniature: the labeler CLI."""
  inp = tmp_path / "r.csv"
  _write(inp, [["Reports"], ["Mild cardiomegaly."]])
  out = tmp_path / "o.csv"
  assert labeler.main(["x", f"--input={inp}", f"--output={out}"]) == 0
  rows = list(csv.DictReader(open(out, encoding="utf-8")))
  assert rows[0]["Reports"] == "Mild cardiomegaly."
