"""MIMIC-CXR converter: TFDS loading, content, resume, workers, bad inputs."""

import collections
import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import mimic_cxr
from data_prep import sections
from data_prep import sentences
from jointcxr.data import features

JPG, REP = "mimic-cxr-jpg", "mimic-cxr-reports"


def _convert(root, out, examples_per_shard=16, **kw):
  return mimic_cxr.convert(mimic_cxr_jpg_dir=str(root / JPG),
                           reports_dir=str(root / REP), output_dir=str(out),
                           image_size=64,
                           examples_per_shard=examples_per_shard,
                           progress=False, **kw)


@pytest.fixture(scope="module")
def converted(synthetic_root, tmp_path_factory):
  out = tmp_path_factory.mktemp("conv")
  return out, _convert(synthetic_root, out)


def _rows(path):
  with gzip.open(path, "rt", newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _write_rows(path, header, rows):
  with gzip.open(path, "wt", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


def _examples(out, split):
  return list(tfds.as_numpy(tfds.builder_from_directory(str(out)).as_dataset(
      split=split, shuffle_files=False)))


def _report_path(root, sub, study):
  return root / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{study}.txt"


def test_tfds_loads_every_split_and_counts_add_up(converted, synthetic_root):
  out, m = converted
  _, split_rows = _rows(synthetic_root / JPG / "mimic-cxr-2.0.0-split.csv.gz")
  truth = {r[1]: r[3] for r in split_rows}
  # every study is written or skipped with a reason
  assert m["total_written"] + m["total_skipped"] == len(truth)
  assert set(m["written"]) == set(features.SPLITS)
  subjects = collections.defaultdict(set)
  for split, n in m["written"].items():
    exs = _examples(out, split)
    assert len(exs) == n
    for ex in exs:
      assert truth[str(ex["study_id"])] == split  # the official split
      subjects[int(ex["subject_id"])].add(split)
  assert all(len(s) == 1 for s in subjects.values())  # patient-disjoint
  on_disk = json.loads((out / "manifest.json").read_text())
  assert on_disk == m and on_disk["schema_version"] == features.SCHEMA_VERSION


def test_example_content_images_text_and_four_label_states(converted,
                                                           synthetic_root):
  out, _ = converted
  meta_h, meta = _rows(synthetic_root / JPG / "mimic-cxr-2.0.0-metadata.csv.gz")
  view_of = {r[0]: r[meta_h.index("ViewPosition")] for r in meta}
  tables = {}
  for kind in ("chexpert", "negbio"):
    head, rows = _rows(synthetic_root / JPG / f"mimic-cxr-2.0.0-{kind}.csv.gz")
    tables[kind] = {r[1]: dict(zip(head, r)) for r in rows}
  seen = set()
  for ex in _examples(out, "train"):
    study, sub = str(ex["study_id"]), str(ex["subject_id"])
    text = _report_path(synthetic_root / REP, sub, study).read_text()
    sec = sections.extract_sections(text)
    assert ex["findings"].decode() == sec.findings
    assert ex["impression"].decode() == sec.impression
    assert [s.decode() for s in ex["sentences"]] == (
        sentences.split_sentences(sec.findings) +
        sentences.split_sentences(sec.impression))
    for did, view, img in zip(ex["dicom_ids"], ex["views"], ex["images"]):
      did = did.decode()
      assert view.decode() == view_of[did] and view_of[did] in ("PA", "AP")
      src = Image.open(synthetic_root / JPG / "files" / f"p{sub[:2]}" /
                       f"p{sub}" / f"s{study}" / f"{did}.jpg")
      h, w = img.shape[:2]
      assert min(h, w) == 64 and img.shape[2] == 1
      assert abs(h / w - src.size[1] / src.size[0]) < 0.03
      # the stored pixels are the source image, resized
      ref = np.asarray(src.convert("L").resize((w, h), Image.BILINEAR),
                       np.float64)
      assert np.mean(np.abs(img[..., 0] - ref)) < 6.0
    for key, kind in (("labels", "chexpert"), ("labels_negbio", "negbio")):
      row = tables[kind].get(study, {})
      for name, v in zip(features.CHEXPERT_LABELS, ex[key]):
        cell = row.get(name, "")
        if cell == "":
          assert np.isnan(v)
          seen.add("missing")
        else:
          assert v == float(cell)
          seen.add(float(cell))
  assert {"missing", 1.0, 0.0, -1.0} <= seen


def test_rerun_resumes_and_rewrites_corrupt_shard(converted, synthetic_root,
                                                  tmp_path):
  out, manifest = converted
  copy = tmp_path / "copy"
  shutil.copytree(out, copy)
  names = sorted(manifest["shards"])
  with open(copy / names[0], "r+b") as f:  # corrupt one byte
    f.seek(10)
    f.write(b"\xff")
  os.remove(copy / names[-1])  # and lose another
  again = _convert(synthetic_root, copy)
  assert again["shards"] == manifest["shards"]  # byte-identical again


def test_parallel_workers_write_identical_shards(converted, synthetic_root,
                                                 tmp_path):
  _, manifest = converted
  m = _convert(synthetic_root, tmp_path / "par", num_workers=2)
  assert m["shards"] == manifest["shards"]


# --- encode_study on hand-made reports -------------------------------------


def _study_item(tmp_path, report: bytes, **kw):
  img = tmp_path / "x.jpg"
  Image.fromarray(np.tile(np.arange(96, dtype=np.uint8), (80, 1))).save(img)
  rep = tmp_path / "r.txt"
  # headers are only recognised after a newline, as in real reports
  rep.write_bytes(b"                FINAL REPORT\n" + report)
  item = {"id": "s50000001", "study_id": "50000001", "subject_id": "10000001",
          "images": [("d", "PA", str(img))], "report_path": str(rep),
          "labels": np.zeros(14, np.float32),
          "labels_negbio": np.zeros(14, np.float32), "has_label_row": True,
          "has_negbio_row": True, "fallback_last_paragraph": False}
  item.update(kw)
  return item


def _encode(item):
  return mimic_cxr.encode_study(item, image_size=32, image_encoding="png")


def test_encode_study_report_rules(tmp_path):
  ok = _encode(_study_item(tmp_path, b" FINDINGS: Heart is normal. Lungs "
                           b"clear.\n \n IMPRESSION: No acute process.\n"))
  ex, notes = ok
  assert ex["sentences"] == ["Heart is normal.", "Lungs clear.",
                             "No acute process."]
  assert notes == {} and len(ex["images"]) == 1
  no_headers = b" Heart normal, lungs clear.\n"
  assert _encode(_study_item(tmp_path, no_headers)).reason == (
      "report_without_sections")
  last_par = (b" EXAMINATION: CHEST\n \n COMPARISON: None.\n \n There is no "
              b"pleural effusion or pneumothorax.\n")
  assert _encode(_study_item(tmp_path, last_par)).reason == (
      "empty_findings_impression")
  ex, notes = _encode(_study_item(tmp_path, last_par,
                                  fallback_last_paragraph=True))
  assert ex["impression"] == "There is no pleural effusion or pneumothorax."
  assert notes == {"impression_from_last_paragraph": 1}
  short = _encode(_study_item(tmp_path, b" IMPRESSION: Normal.\n"))
  assert short.reason == "too_short_report"
  ex, notes = _encode(_study_item(
      tmp_path, b" IMPRESSION: No focal consolidation seen\xff here.\n"))
  assert notes == {"non_utf8_report": 1}
  assert ex["impression"] == "No focal consolidation seen\ufffd here."
  assert _encode(_study_item(tmp_path, b"", report_path=str(
      tmp_path / "absent.txt"))).reason == "missing_report"


def test_encode_study_applies_the_per_study_section_rules(tmp_path):
  report = b" FINDINGS: Heart is normal. Lungs clear.\n"
  # s58235663 is one of the 8 official reports with no findings at all.
  item = _study_item(tmp_path, report, id="s58235663")
  assert _encode(item).reason == "empty_findings_impression"
  ex, _ = _encode(_study_item(tmp_path, report, id="s58235663",
                              official_section_rules=False))
  assert ex["findings"] == "Heart is normal. Lungs clear."


# --- the bad-input corpus -------------------------------------------------


def _fresh_dicom_id(i):
  return f"{i:08x}-00000000-00000000-00000000-00000000"


@pytest.fixture()
def bad_tree(synthetic_root, converted, tmp_path):
  """A copy of the synthetic tree with one defect per probe study.

  Probes are studies the clean conversion wrote without any note, so every
  expected count below is exact: clean counts + what was injected.
  """
  jpg, rep = tmp_path / "jpg", tmp_path / "rep"
  shutil.copytree(synthetic_root / JPG, jpg)
  shutil.copytree(synthetic_root / REP, rep)
  out, _ = converted
  clean = {split: [(str(e["subject_id"]), str(e["study_id"]))
                   for e in _examples(out, split)] for split in
           features.SPLITS}
  label_files = {k: jpg / f"mimic-cxr-2.0.0-{k}.csv.gz"
                 for k in ("chexpert", "negbio")}
  labelled = [{r[1] for r in _rows(p)[1]} for p in label_files.values()]
  usable = [(sub, st) for sub, st in clean["train"]
            if st in labelled[0] and st in labelled[1]]
  by_subject = collections.defaultdict(list)
  for sub, st in usable:
    by_subject[sub].append(st)
  # the subject used for the cross-split leak: >= 2 usable train studies,
  # and nothing else of it written anywhere else
  leak_sub = next(s for s, sts in by_subject.items() if len(sts) >= 2 and
                  len([1 for x in clean["train"] if x[0] == s]) == len(sts))
  probes = [x for x in usable if x[0] != leak_sub]
  defects = ["zero_byte", "truncated", "not_image", "missing_image",
             "missing_report", "non_utf8", "empty_sections", "no_sections",
             "too_short", "no_label_row", "no_negbio_row", "missing_split",
             "unknown_split", "conflicting_split", "png16", "second_missing",
             "duplicate_label_row", "excluded"]
  assert len(probes) >= len(defects)
  chosen = dict(zip(defects, probes))
  meta_h, meta = _rows(jpg / "mimic-cxr-2.0.0-metadata.csv.gz")
  frontal = {r[2]: r for r in meta if r[4] in ("PA", "AP")}

  def img(name):
    r = frontal[chosen[name][1]]
    return jpg / "files" / f"p{r[1][:2]}" / f"p{r[1]}" / f"s{r[2]}" / \
        f"{r[0]}.jpg"

  def report(name):
    return _report_path(rep, *chosen[name])

  img("zero_byte").write_bytes(b"")
  data = img("truncated").read_bytes()
  img("truncated").write_bytes(data[: len(data) // 3])
  img("not_image").write_bytes(b"this is not a jpeg")
  os.remove(img("missing_image"))
  os.remove(report("missing_report"))
  text = report("non_utf8").read_text()
  report("non_utf8").write_bytes(text.replace("FINAL", "FIN\xe9AL").encode(
      "latin-1"))
  report("empty_sections").write_text(
      " FINAL REPORT\n EXAMINATION: CHEST\n \n FINDINGS:\n \n IMPRESSION:\n")
  report("no_sections").write_text("  FINAL REPORT\n Lungs are clear.\n")
  report("too_short").write_text("  FINAL REPORT\n FINDINGS: Normal.\n")
  png16 = np.linspace(0, 60000, 64 * 53).reshape(64, 53).astype(np.uint16)
  Image.fromarray(png16).save(img("png16"), format="PNG")
  for kind, name in (("chexpert", "no_label_row"),
                     ("negbio", "no_negbio_row")):
    head, rows = _rows(label_files[kind])
    rows = [r for r in rows if r[1] != chosen[name][1]]
    if kind == "chexpert":
      rows += [r for r in rows if r[1] == chosen["duplicate_label_row"][1]]
    _write_rows(label_files[kind], head, rows)
  split_h, split_rows = _rows(jpg / "mimic-cxr-2.0.0-split.csv.gz")
  new_splits = []
  for r in split_rows:
    if r[1] == chosen["missing_split"][1]:
      continue
    if r[1] == chosen["unknown_split"][1]:
      r = r[:3] + ["holdout"]
    if r[1] == chosen["conflicting_split"][1]:
      new_splits.append(r[:3] + ["test"])
    new_splits.append(r)
  leak_study = by_subject[leak_sub][0]
  new_splits = [r[:3] + ["test"] if r[1] == leak_study else r
                for r in new_splits]
  # a second frontal image listed for one study, but absent on disk
  sub2, st2 = chosen["second_missing"]
  extra = list(frontal[st2])
  extra[0] = _fresh_dicom_id(1)
  new_splits.append([extra[0], st2, sub2, "train"])
  _write_rows(jpg / "mimic-cxr-2.0.0-split.csv.gz", split_h, new_splits)
  # metadata: a duplicated row, an id escaping the root, a study listed
  # under a second subject
  evil = list(meta[0])
  evil[0] = "../../../../etc/passwd"
  moved = list(frontal[probes[-1][1]])
  moved[0], moved[1] = _fresh_dicom_id(2), leak_sub
  _write_rows(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", meta_h,
              meta + [extra, meta[1], evil, moved])
  excl = tmp_path / "ms_cxr.csv"
  excl.write_text("dicom_id,category_name\n"
                  f"{frontal[chosen['excluded'][1]][0]},Edema\n")
  n_leak = len(by_subject[leak_sub]) - 1
  return jpg, rep, excl, chosen, n_leak


def test_bad_inputs_are_exact_counted_skips(bad_tree, converted, tmp_path):
  jpg, rep, excl, chosen, n_leak = bad_tree
  _, clean = converted
  m = mimic_cxr.convert(mimic_cxr_jpg_dir=str(jpg), reports_dir=str(rep),
                        output_dir=str(tmp_path / "out"), image_size=64,
                        exclude_ids=str(excl), progress=False)
  injected = {"no_usable_image": 4, "missing_report": 1,
              "empty_findings_impression": 1, "report_without_sections": 1,
              "too_short_report": 1, "missing_split_entry": 1,
              "unknown_split_value": 1, "conflicting_split": 1,
              "excluded_id": 1, "subject_in_two_splits": n_leak,
              "duplicate_dicom_id": 1, "invalid_id_in_metadata": 1,
              "study_in_two_subjects": 1}
  expected = collections.Counter(clean["skipped"])
  expected.update(injected)
  assert m["skipped"] == dict(expected)
  expected_notes = collections.Counter(clean["notes"])
  expected_notes.update({
      "image_empty_image_file": 1, "image_unreadable_image": 2,
      "image_missing_image": 2, "non_utf8_report": 1, "converted_16bit": 1,
      "missing_label_row": 1, "missing_negbio_row": 1,
      "duplicate_label_row": 1})
  assert m["notes"] == dict(expected_notes)
  # skipped studies leave; the leaked subject's kept study moves to test
  n_gone = sum(injected.values()) - 3  # three row-level skips drop no study
  assert m["total_written"] == clean["total_written"] - n_gone
  assert m["written"]["test"] == clean["written"]["test"] + 1
  listed = (tmp_path / "out" / "skipped.csv").read_text().splitlines()
  assert len(listed) == 1 + m["total_skipped"]
  assert f"s{chosen['missing_report'][1]},missing_report" in listed
  subjects = collections.defaultdict(set)
  for split in m["written"]:
    for ex in _examples(tmp_path / "out", split):
      subjects[int(ex["subject_id"])].add(split)
  assert all(len(s) == 1 for s in subjects.values())


def test_bad_label_value_is_a_one_line_error(synthetic_root, tmp_path):
  jpg = tmp_path / "jpg"
  shutil.copytree(synthetic_root / JPG, jpg)
  path = jpg / "mimic-cxr-2.0.0-chexpert.csv.gz"
  head, rows = _rows(path)
  rows[0][head.index("Edema")] = "2.0"
  _write_rows(path, head, rows)
  with pytest.raises(mimic_cxr.writer.ConversionError,
                     match=f"{path}: study {rows[0][1]}: Edema='2.0' is not "
                     r"1.0, 0.0, -1.0 or blank"):
    mimic_cxr.convert(mimic_cxr_jpg_dir=str(jpg), reports_dir=str(
        synthetic_root / REP), output_dir=str(tmp_path / "o"),
                      progress=False)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "data_prep.mimic_cxr", *args],
                        capture_output=True, text=True, check=False)


def test_cli_errors_are_one_line(tmp_path):
  res = _cli(f"--mimic_cxr_jpg_dir={tmp_path}/nope",
             f"--reports_dir={tmp_path}", f"--output_dir={tmp_path}/o")
  assert res.returncode == 2
  assert res.stderr.strip().splitlines() == [
      f"error: --mimic_cxr_jpg_dir {tmp_path}/nope is not a directory"]
  (tmp_path / "j").mkdir()
  res = _cli(f"--mimic_cxr_jpg_dir={tmp_path}/j", f"--reports_dir={tmp_path}",
             f"--output_dir={tmp_path}/o")
  assert res.returncode == 2
  assert res.stderr.strip().splitlines() == [
      f"error: {tmp_path}/j/mimic-cxr-2.0.0-metadata.csv.gz: file not found"]
  res = _cli(f"--reports_dir={tmp_path}")
  assert res.returncode == 2 and res.stderr.strip().splitlines() == [
      "error: --mimic_cxr_jpg_dir and --output_dir required"]


def test_sigkill_mid_conversion_then_resume_is_byte_identical(
    synthetic_root, tmp_path):
  # Two examples per shard gives dozens of shards, and the converter is
  # frozen (SIGSTOP) the moment a finished shard shows up, before the kill:
  # with a few large shards a loaded machine let it finish them all between
  # two polls, and the kill landed after the end.
  clean = _convert(synthetic_root, tmp_path / "clean", examples_per_shard=2)
  out = tmp_path / "killed"
  proc = subprocess.Popen(
      [sys.executable, "-m", "data_prep.mimic_cxr",
       f"--mimic_cxr_jpg_dir={synthetic_root / JPG}",
       f"--reports_dir={synthetic_root / REP}", f"--output_dir={out}",
       "--image_size=64", "--examples_per_shard=2", "--num_workers=1"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  progress = out / ".progress.json"
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and proc.poll() is None:
    try:
      if json.loads(progress.read_text())["shards"]:
        proc.send_signal(signal.SIGSTOP)  # at least one shard is finished
        break
    except (OSError, ValueError, KeyError):
      pass
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = json.loads(progress.read_text())["shards"]
  assert 0 < len(done) < len(clean["shards"])  # really killed mid-way
  resumed = _convert(synthetic_root, out, examples_per_shard=2)
  assert resumed["shards"] == clean["shards"]
  assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
