"""MIMIC-CXR converter: TFDS loading, splits, resume, and the bad-input corpus."""

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import mimic_cxr


@pytest.fixture(scope="module")
def converted(synthetic_root, tmp_path_factory):
  out = tmp_path_factory.mktemp("conv")
  manifest = mimic_cxr.convert(
      mimic_cxr_jpg_dir=str(synthetic_root / "mimic-cxr-jpg"),
      reports_dir=str(synthetic_root / "mimic-cxr-reports"),
      output_dir=str(out), image_size=64, examples_per_shard=16,
      progress=False)
  return out, manifest


def _split_csv(root):
  with gzip.open(root / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-split.csv.gz",
                 "rt") as f:
    return list(csv.DictReader(f))


def test_tfds_loads_every_split_with_manifest_counts(converted,
                                                      synthetic_root):
  out, manifest = converted
  builder = tfds.builder_from_directory(str(out))
  studies = {r["study_id"] for r in _split_csv(synthetic_root)}
  total = sum(manifest["written"].values()) + sum(
      manifest["skipped"].values())
  assert total == len(studies)  # every study written or skipped by reason
  subjects = {}
  for split, n in manifest["written"].items():
    assert builder.info.splits[split].num_examples == n
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
      assert ex["images"].shape[1:] and min(ex["images"].shape[1:3]) <= 64
      assert set(ex["views"].astype(str)) <= {"PA", "AP"}
      assert len(ex["sentences"]) >= 1 and ex["labels"].shape == (14,)
      subjects.setdefault(int(ex["subject_id"]), set()).add(split)
  assert all(len(s) == 1 for s in subjects.values())  # patient-disjoint
  with open(out / "manifest.json") as f:
    on_disk = json.load(f)
  assert on_disk["written"] == manifest["written"]
  assert all(len(v["sha256"]) == 64 for v in on_disk["shards"].values())


def test_labels_keep_four_states(converted, synthetic_root):
  out, _ = converted
  with gzip.open(synthetic_root / "mimic-cxr-jpg" /
                 "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as f:
    truth = {int(r["study_id"]): r for r in csv.DictReader(f)}
  builder = tfds.builder_from_directory(str(out))
  seen = set()
  for ex in tfds.as_numpy(builder.as_dataset(split="train")):
    row = truth.get(int(ex["study_id"]))
    for name, v in zip(mimic_cxr.features_lib.CHEXPERT_LABELS, ex["labels"]):
      expected = row[name] if row else ""
      if expected == "":
        assert np.isnan(v)
        seen.add("missing")
      else:
        assert v == float(expected)
        seen.add(float(expected))
  assert {"missing", 1.0, 0.0} <= seen


def test_rerun_resumes_and_rewrites_corrupt_shard(converted, synthetic_root,
                                                  tmp_path):
  out, manifest = converted
  copy = tmp_path / "copy"
  shutil.copytree(out, copy)
  shard = sorted(manifest["shards"])[0]
  with open(copy / shard, "r+b") as f:  # corrupt one byte
    f.seek(10)
    f.write(b"\xff")
  os.remove(copy / sorted(manifest["shards"])[-1])  # and lose another
  again = mimic_cxr.convert(
      mimic_cxr_jpg_dir=str(synthetic_root / "mimic-cxr-jpg"),
      reports_dir=str(synthetic_root / "mimic-cxr-reports"),
      output_dir=str(copy), image_size=64, examples_per_shard=16,
      progress=False)
  assert again["shards"] == manifest["shards"]  # byte-identical again


# --- the bad-input corpus -------------------------------------------------


def _gz_rows(path):
  with gzip.open(path, "rt", newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _write_gz(path, header, rows):
  with gzip.open(path, "wt", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


@pytest.fixture()
def bad_tree(synthetic_root, tmp_path):
  """A copy of the synthetic tree with one defect per frontal-image study."""
  src = synthetic_root
  jpg, rep = tmp_path / "jpg", tmp_path / "rep"
  shutil.copytree(src / "mimic-cxr-jpg", jpg)
  shutil.copytree(src / "mimic-cxr-reports", rep)
  header, meta = _gz_rows(jpg / "mimic-cxr-2.0.0-metadata.csv.gz")
  frontal = [r for r in meta if r[4] in ("PA", "AP")]
  by_study = {}
  for r in frontal:
    by_study.setdefault(r[2], []).append(r)
  studies = [s for s, rs in by_study.items() if len(rs) == 1]
  # Only studies whose report has findings or impression are usable probes.
  usable = []
  for s in studies:
    sub = by_study[s][0][1]
    text = (rep / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{s}.txt"
            ).read_text()
    if "IMPRESSION" in text or "FINDINGS" in text:
      usable.append(s)
  defects = ["zero_byte", "truncated", "not_image", "missing_image",
             "missing_report", "non_utf8", "empty_sections", "no_label_row",
             "missing_split", "png16"]
  assert len(usable) >= len(defects) + 2
  chosen = dict(zip(defects, usable))

  def img_path(s):
    r = by_study[s][0]
    return jpg / "files" / f"p{r[1][:2]}" / f"p{r[1]}" / f"s{s}" / \
        f"{r[0]}.jpg"

  def rep_path(s):
    sub = by_study[s][0][1]
    return rep / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{s}.txt"

  img_path(chosen["zero_byte"]).write_bytes(b"")
  data = img_path(chosen["truncated"]).read_bytes()
  img_path(chosen["truncated"]).write_bytes(data[: len(data) // 3])
  img_path(chosen["not_image"]).write_bytes(b"this is not a jpeg")
  os.remove(img_path(chosen["missing_image"]))
  os.remove(rep_path(chosen["missing_report"]))
  text = rep_path(chosen["non_utf8"]).read_text()
  rep_path(chosen["non_utf8"]).write_bytes(
      text.replace("FINAL", "FIN\xe9AL").encode("latin-1"))
  rep_path(chosen["empty_sections"]).write_text(
      " FINAL REPORT\n EXAMINATION: CHEST\n \n FINDINGS:\n \n IMPRESSION:\n")
  from PIL import Image
  png16 = np.linspace(0, 60000, 64 * 53).reshape(64, 53).astype(np.uint16)
  Image.fromarray(png16).save(img_path(chosen["png16"]), format="PNG")
  # Labels: drop a row. Split: drop the entries of one study.
  lh, lrows = _gz_rows(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz")
  _write_gz(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", lh,
            [r for r in lrows if r[1] != chosen["no_label_row"]])
  sh, srows = _gz_rows(jpg / "mimic-cxr-2.0.0-split.csv.gz")
  _write_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", sh,
            [r for r in srows if r[1] != chosen["missing_split"]])
  # Metadata: a duplicated row and a row whose id escapes the root.
  evil = list(frontal[0])
  evil[0] = "../../../../etc/passwd"
  _write_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", header,
            meta + [frontal[1], evil])
  return jpg, rep, chosen


def test_bad_inputs_are_counted_skips_never_tracebacks(bad_tree, tmp_path):
  jpg, rep, chosen = bad_tree
  m = mimic_cxr.convert(mimic_cxr_jpg_dir=str(jpg), reports_dir=str(rep),
                        output_dir=str(tmp_path / "out"), image_size=64,
                        progress=False)
  sk, notes = m["skipped"], m["notes"]
  assert sk["no_usable_image"] == 4  # zero-byte, truncated, not image, gone
  assert notes["image_empty_image_file"] == 1
  assert notes["image_unreadable_image"] == 2
  assert notes["image_missing_image"] == 1
  assert sk["missing_report"] == 1
  assert sk["missing_split_entry"] == 1
  assert sk["duplicate_dicom_id"] == 1
  assert sk["invalid_id_in_metadata"] == 1
  assert sk["empty_findings_impression"] >= 1
  assert notes["non_utf8_report"] == 1
  assert notes["missing_label_row"] >= 1
  assert notes["converted_16bit"] == 1
  with open(tmp_path / "out" / "skipped.csv") as f:
    listed = list(csv.DictReader(f))
  assert len(listed) == sum(sk.values())
  assert f"s{chosen['missing_report']},missing_report" in (
      tmp_path / "out" / "skipped.csv").read_text()


def test_cli_errors_are_one_line(tmp_path):
  res = subprocess.run(
      [sys.executable, "-m", "data_prep.mimic_cxr",
       f"--mimic_cxr_jpg_dir={tmp_path}/nope", f"--reports_dir={tmp_path}",
       f"--output_dir={tmp_path}/o"], capture_output=True, text=True,
      check=False)
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1] == (
      f"error: --mimic_cxr_jpg_dir {tmp_path}/nope is not a directory")
  assert "Traceback" not in res.stderr
  (tmp_path / "j").mkdir()
  res = subprocess.run(
      [sys.executable, "-m", "data_prep.mimic_cxr",
       f"--mimic_cxr_jpg_dir={tmp_path}/j", f"--reports_dir={tmp_path}",
       f"--output_dir={tmp_path}/o"], capture_output=True, text=True,
      check=False)
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert "mimic-cxr-2.0.0-metadata.csv.gz: file not found" in res.stderr
