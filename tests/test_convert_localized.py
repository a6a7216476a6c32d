"""Localized-set and Open-i converters: masks, boxes, splits, bad input."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import openi
from data_prep import rle
from data_prep import writer
from data_prep.localized import common
from data_prep.localized import covid_rural
from data_prep.localized import ms_cxr
from data_prep.localized import nih
from data_prep.localized import object_cxr
from data_prep.localized import rsna
from data_prep.localized import siim
from jointcxr.data import features

CONVERTERS = {"siim": siim, "rsna": rsna, "nih": nih,
              "object_cxr": object_cxr, "covid_rural": covid_rural,
              "ms_cxr": ms_cxr}


def _convert(mod, root, out, **kw):
  if mod is ms_cxr:
    kw.setdefault("mimic_cxr_jpg_dir", str(root.parent / "mimic-cxr-jpg"))
  return mod.convert(input_dir=str(root), output_dir=str(out), image_size=64,
                     progress=False, **kw)


@pytest.fixture(scope="module")
def localized_out(synthetic_root, tmp_path_factory):
  out = {}
  for name, mod in CONVERTERS.items():
    d = tmp_path_factory.mktemp(name)
    out[name] = (d, _convert(mod, synthetic_root / name, d))
  return out


@pytest.fixture(scope="module")
def truth(synthetic_root):
  by = {}
  with open(synthetic_root / "ground_truth.jsonl") as f:
    for line in f:
      t = json.loads(line)
      by.setdefault(t["dataset"], {})[t["path"]] = t
  return by


def _examples(d, split):
  return list(tfds.as_numpy(tfds.builder_from_directory(str(d)).as_dataset(
      split=split, shuffle_files=False)))


def _all(d):
  splits = tfds.builder_from_directory(str(d)).info.splits
  return [e for s in common.SPLITS if s in splits for e in _examples(d, s)]


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_loads_and_no_subject_in_two_splits(localized_out, name):
  d, m = localized_out[name]
  seen = {}
  for split in common.SPLITS:
    exs = _examples(d, split)
    assert len(exs) == m["written"][split] == m["split_sizes"][split] > 0
    for ex in exs:
      assert ex["image"].shape[-1] == 1 and min(ex["image"].shape[:2]) == 64
      assert ex["mask"].shape[:2] == ex["image"].shape[:2]
      assert ex["mask"].shape[2] == len(m["class_names"])
      seen.setdefault(ex["subject_id"], set()).add(split)
  assert all(len(v) == 1 for v in seen.values()), name
  # Label fractions are nested subsets of train, first-N sized.
  train = {e["image_id"] for e in _examples(d, "train")}
  p1 = {e["image_id"] for e in _examples(d, "train_1pct")}
  p10 = {e["image_id"] for e in _examples(d, "train_10pct")}
  assert p1 <= p10 <= train
  assert len(p1) == max(1, round(0.01 * len(train)))
  assert len(p10) == max(1, round(0.10 * len(train)))


@pytest.mark.parametrize("name", ["siim", "rsna", "nih", "covid_rural"])
def test_subjects_are_the_true_patients(localized_out, truth, name):
  d, _ = localized_out[name]
  want = {t.get("image_id", os.path.basename(p)): t["subject_id"]
          for p, t in truth[name].items()}
  for ex in _all(d):
    image_id = ex["image_id"].decode()
    key = next(k for k in want if k == image_id or
               os.path.splitext(k)[0] == image_id)
    assert want[key] in ex["subject_id"].decode()


def test_siim_masks_match_truth(localized_out, truth):
  d, _ = localized_out["siim"]
  by_id = {t["image_id"]: t for t in truth["siim"].values()}
  checked = 0
  for ex in _all(d):
    t = by_id[ex["image_id"].decode()]
    m = np.zeros((t["height"], t["width"]), np.uint8)
    for f in t["findings"]:
      m |= rle.decode(f["mask_rle"], t["height"], t["width"])
    h, w = ex["mask"].shape[:2]
    small = np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))
    np.testing.assert_array_equal(ex["mask"][..., 0], small)
    checked += int(m.any())
  assert checked > 0


def _box_reference_mask(h, w, boxes):
  """float64 reference: pixel (i, j) is in if its unit square meets a box."""
  ii, jj = np.mgrid[0:h, 0:w].astype(np.float64)
  out = np.zeros((h, w), bool)
  for x, y, bw, bh in boxes:
    out |= (jj + 1 > x) & (jj < x + bw) & (ii + 1 > y) & (ii < y + bh)
  return out


def test_box_rasterisation_matches_reference():
  boxes = [(3.0, 4.0, 10.0, 6.0), (20.5, 1.25, 4.5, 7.5), (0.0, 0.0, 1.0, 1.0)]
  got = common.rasterize([("box", b, 0) for b in boxes], 24, 30, 1)[..., 0]
  np.testing.assert_array_equal(got.astype(bool),
                                _box_reference_mask(24, 30, boxes))


def test_rsna_boxes_normalised_and_rasterised(localized_out, truth):
  d, _ = localized_out["rsna"]
  by_id = {os.path.basename(p)[:-4]: t for p, t in truth["rsna"].items()}
  positives = 0
  for ex in _all(d):
    t = by_id[ex["image_id"].decode()]
    # RSNA boxes are the lung opacities (other findings are not labelled)
    boxes = [f["box"] for f in t["findings"] if f["type"] == "lung_opacity"]
    want = [(y / t["height"], x / t["width"], (y + h) / t["height"],
             (x + w) / t["width"]) for x, y, w, h in boxes]
    np.testing.assert_allclose(np.reshape(ex["boxes"]["bbox"], (-1, 4)),
                               np.reshape(want, (-1, 4)), atol=1e-6)
    full = _box_reference_mask(t["height"], t["width"], boxes)
    h, w = ex["mask"].shape[:2]
    small = np.asarray(Image.fromarray(full.astype(np.uint8)).resize(
        (w, h), Image.NEAREST))
    np.testing.assert_array_equal(ex["mask"][..., 0], small)
    positives += bool(boxes)
  assert positives > 0


def test_object_cxr_shapes_boxes_and_ellipses(localized_out, truth):
  d, _ = localized_out["object_cxr"]
  by_id = {os.path.basename(p): t for p, t in truth["object_cxr"].items()}
  n_ellipses = 0
  for ex in _all(d):
    t = by_id[ex["image_id"].decode()]
    want = []
    for obj in t["objects"]:
      xs, ys = obj["coords"][0::2], obj["coords"][1::2]
      want.append((min(ys) / t["height"], min(xs) / t["width"],
                   max(ys) / t["height"], max(xs) / t["width"]))
      n_ellipses += obj["type"] == 1
    np.testing.assert_allclose(np.reshape(ex["boxes"]["bbox"], (-1, 4)),
                               np.reshape(want, (-1, 4)), atol=1e-6)
  assert n_ellipses > 0
  objs = object_cxr.parse_annotation("0 1 2 11 12;1 0 0 4 4;2 0 0 4 0 4 4")
  assert [k for k, _ in objs] == ["rect", "ellipse", "polygon"]
  with pytest.raises(ValueError, match="unknown object type '7'"):
    object_cxr.parse_annotation("7 1 2 3 4")
  with pytest.raises(ValueError, match="bad coordinate count 3"):
    object_cxr.parse_annotation("0 1 2 3")
  # An ellipse is rasterised as an ellipse (float64 reference, IoU).
  m = common.rasterize([("ellipse", [4, 10, 44, 30], 0)], 40, 50, 1)[..., 0]
  ii, jj = np.mgrid[0:40, 0:50] + 0.5
  ref = ((jj - 24.5) / 20.5) ** 2 + ((ii - 20.5) / 10.5) ** 2 <= 1
  iou = (m.astype(bool) & ref).sum() / (m.astype(bool) | ref).sum()
  assert iou > 0.9 and m[20, 5] == 1 and m[11, 5] == 0


def test_covid_masks_are_the_png_masks(localized_out, synthetic_root):
  d, _ = localized_out["covid_rural"]
  for ex in _all(d):
    png = np.asarray(Image.open(synthetic_root / "covid_rural" / "pngs_masks" /
                                (ex["image_id"].decode() + ".png")).convert(
                                    "L")) > 127
    h, w = ex["mask"].shape[:2]
    small = np.asarray(Image.fromarray(png.astype(np.uint8)).resize(
        (w, h), Image.NEAREST))
    np.testing.assert_array_equal(ex["mask"][..., 0], small)


def test_ms_cxr_phrases_and_rescaled_boxes(localized_out, synthetic_root,
                                           tmp_path):
  d, _ = localized_out["ms_cxr"]
  exs = _all(d)
  assert exs and all(e["phrase"] and len(e["boxes"]["bbox"]) for e in exs)
  # Boxes given for a 2x image are rescaled to the file on disk.
  src = synthetic_root / "ms_cxr" / "MS_CXR_Local_Alignment_v1.0.0.csv"
  lines = src.read_text().splitlines()
  head = lines[0].split(",")
  row = lines[1].split(",")
  doubled = list(row)
  for k in ("x", "y", "w", "h", "image_width", "image_height"):
    doubled[head.index(k)] = str(2 * float(row[head.index(k)]))
  (tmp_path / "m").mkdir()
  (tmp_path / "m" / src.name).write_text(
      lines[0] + "\n" + ",".join(doubled) + "\n")
  items, _, _ = ms_cxr.build_items(str(tmp_path / "m"), str(
      synthetic_root / "mimic-cxr-jpg"))
  ex, notes = common.encode(items[0], image_size=64,
                            class_names=ms_cxr.CLASSES)
  x, y, w, h = (float(row[head.index(k)]) for k in ("x", "y", "w", "h"))
  iw, ih = float(row[head.index("image_width")]), float(
      row[head.index("image_height")])
  b = ex["boxes"][0]["bbox"]
  np.testing.assert_allclose([b.ymin, b.xmin, b.ymax, b.xmax],
                             [y / ih, x / iw, (y + h) / ih, (x + w) / iw],
                             atol=1e-6)
  assert "box_clipped" not in notes


def test_localized_bad_inputs_are_named_skips(synthetic_root, tmp_path):
  # object_cxr: a path escaping the root, a bad annotation, a zero-byte JPG
  obj = tmp_path / "object_cxr"
  shutil.copytree(synthetic_root / "object_cxr", obj)
  lines = (obj / "train.csv").read_text().splitlines()
  first = lines[1].split(",")[0]
  (obj / "train" / first).write_bytes(b"")
  lines += ["../../etc/passwd,", "train00001.jpg,9 1 2 3 4"]
  (obj / "train.csv").write_text("\n".join(lines) + "\n")
  m = _convert(object_cxr, obj, tmp_path / "o1")
  assert m["skipped"] == {"path_escapes_root": 1, "bad_annotation": 1,
                          "empty_image_file": 1}
  # covid_rural: a missing mask and a mask of the wrong size
  cov = tmp_path / "covid_rural"
  shutil.copytree(synthetic_root / "covid_rural", cov)
  masks = sorted(os.listdir(cov / "pngs_masks"))
  os.remove(cov / "pngs_masks" / masks[0])
  Image.new("L", (5, 5)).save(cov / "pngs_masks" / masks[1])
  m = _convert(covid_rural, cov, tmp_path / "o2")
  assert m["skipped"] == {"missing_mask": 1, "mask_size_mismatch": 1}
  # siim: a bad RLE, a row without the RLE column, an id without a DICOM
  sm = tmp_path / "siim"
  shutil.copytree(synthetic_root / "siim", sm)
  lines = (sm / "train-rle.csv").read_text().splitlines()
  victim = lines[1].split(",")[0]
  lines = [lines[0]] + [f"{victim}, 5 99999999"] + lines[2:] + [
      "only-one-field", "1.2.3.4.5, -1"]
  (sm / "train-rle.csv").write_text("\n".join(lines) + "\n")
  m = _convert(siim, sm, tmp_path / "o3")
  assert m["skipped"] == {"bad_rle": 1, "short_row": 1, "missing_image": 1}
  # ms_cxr: a path leaving the MIMIC root, an unknown label
  ms = tmp_path / "ms_cxr"
  shutil.copytree(synthetic_root / "ms_cxr", ms)
  csv_path = ms / "MS_CXR_Local_Alignment_v1.0.0.csv"
  lines = csv_path.read_text().splitlines()
  row = lines[1].split(",")
  evil = list(row)
  evil[3] = "../../../etc/passwd"
  other = list(row)
  other[1] = "Fracture"
  csv_path.write_text("\n".join(lines + [",".join(evil), ",".join(other)])
                      + "\n")
  m = _convert(ms_cxr, ms, tmp_path / "o4", mimic_cxr_jpg_dir=str(
      synthetic_root / "mimic-cxr-jpg"))
  assert m["skipped"] == {"path_escapes_root": 1, "unknown_label": 1}


def test_official_split_leak_and_duplicate_ids_are_errors(synthetic_root,
                                                          tmp_path):
  ms = tmp_path / "ms_cxr"
  ms.mkdir()
  src = (synthetic_root / "ms_cxr" / "MS_CXR_Local_Alignment_v1.0.0.csv"
         ).read_text().splitlines()
  rows = [r + ",train" for r in src[1:]]
  # the same image (so the same subject) with another phrase, in test
  leak = src[1].split(",")
  leak[2] = "another phrase"
  rows.append(",".join(leak) + ",test")
  (ms / "MS_CXR_Local_Alignment_v1.1.0.csv").write_text(
      "\n".join([src[0] + ",split"] + rows) + "\n")
  with pytest.raises(writer.ConversionError, match=r"ms_cxr: the official "
                     r"split puts 1 subject\(s\) in two splits"):
    _convert(ms_cxr, ms, tmp_path / "o", mimic_cxr_jpg_dir=str(
        synthetic_root / "mimic-cxr-jpg"))
  item = {"id": "a", "subject": "s", "image": ("file", "x"), "boxes": [],
          "mask": None}
  with pytest.raises(writer.ConversionError,
                     match=r"toy: duplicate image ids \['a'\]"):
    common.convert(name="toy", items=[item, dict(item)], skips=[],
                   output_dir=str(tmp_path / "t"), class_names=("c",),
                   image_size=8, num_workers=1, seed=0, args={})


def test_nih_on_real_samples(shared_data, tmp_path):
  src = shared_data / "nih_cxr14"
  with gzip.open(src / "BBox_List_2017.csv.gz", "rt") as f:
    rows = [r.split(",") for r in f.read().splitlines()[1:]]
  names = sorted({r[0] for r in rows})
  assert len(rows) == 984 and len(names) == 880
  # As shipped, none of the box list's images is among the 2 real PNGs.
  with pytest.raises(writer.ConversionError, match=r"nih: no usable example "
                     r"found \(skipped: \{'missing_image': 880\}\)"):
    nih.convert(input_dir=str(src), output_dir=str(tmp_path / "none"),
                progress=False)
  root = tmp_path / "nih"
  (root / "images").mkdir(parents=True)
  shutil.copy(src / "BBox_List_2017.csv.gz", root)
  # Place the two real 512 px images under two listed names (temp only);
  # boxes are in 1024 px coordinates, hence box_reference_size.
  for real, name in zip(sorted(os.listdir(src / "images")), names[:2]):
    shutil.copy(src / "images" / real, root / "images" / name)
  m = nih.convert(input_dir=str(root), output_dir=str(tmp_path / "o"),
                  image_size=128, progress=False, box_reference_size=1024)
  assert sum(m["split_sizes"][s] for s in common.SPLITS) == 2
  assert m["skipped"] == {"missing_image": len(names) - 2}
  assert "box_clipped" not in m["notes"]
  for ex in _all(tmp_path / "o"):
    mine = [r for r in rows if r[0] == ex["image_id"].decode()]
    want = [(float(r[3]) / 1024, float(r[2]) / 1024,
             (float(r[3]) + float(r[5])) / 1024,
             (float(r[2]) + float(r[4])) / 1024) for r in mine]
    np.testing.assert_allclose(ex["boxes"]["bbox"], want, atol=1e-6)
    labels = [features.NIH_BOX_LABELS.index(r[1]) for r in mine]
    np.testing.assert_array_equal(ex["boxes"]["label"], labels)
  # Without the reference size the 1024 px boxes overflow the 512 px image.
  m = nih.convert(input_dir=str(root), output_dir=str(tmp_path / "o2"),
                  image_size=128, progress=False)
  assert m["notes"].get("box_clipped", 0) > 0


def test_openi_real_archive_reports_only(shared_data, tmp_path):
  iu = shared_data / "iu_xray"
  m = openi.convert(reports_tgz=str(iu / "NLMCXR_reports.tgz"),
                    split_csv=str(iu / "r2gen_split.csv"),
                    output_dir=str(tmp_path / "oi"), progress=False)
  # 3,955 reports; FINDINGS 3,425, IMPRESSION 3,921, both 3,419 non-empty:
  # 3,955 - (3,425 + 3,921 - 3,419) = 28 have neither.
  assert m["skipped"] == {"empty_findings_impression": 28}
  assert m["total_written"] == 3955 - 28
  assert m["written"]["train"] == 2069 and m["written"]["validate"] == 296
  assert m["written"]["test"] == 590
  assert m["split_source"] == {"r2gen": 2955, "extra": 1000}
  assert m["reports_only"] is True
  builder = tfds.builder_from_directory(str(tmp_path / "oi"))
  assert "images" not in builder.info.features
  ex = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
  assert len(ex["sentences"]) >= 1 and ex["labels"].shape == (14,)
  findings = sum(bool(e["findings"]) for s in m["written"]
                 for e in tfds.as_numpy(builder.as_dataset(split=s)))
  assert findings == 3425


def test_openi_synthetic_with_images_and_frontal_choice(synthetic_root,
                                                        tmp_path):
  src = synthetic_root / "openi"
  m = openi.convert(reports_tgz=str(src / "NLMCXR_reports.tgz"),
                    images_dir=str(src / "images"),
                    output_dir=str(tmp_path / "o"), image_size=64,
                    progress=False)
  n_images = {}
  for split in m["written"]:
    for ex in _examples(tmp_path / "o", split):
      assert min(ex["images"].shape[1:3]) == 64
      assert set(ex["views"].astype(str)) == {""}  # view unknown
      n_images[ex["study_id"]] = len(ex["images"])
  # With a projections table only the frontal images are kept.
  pngs = sorted(os.listdir(src / "images"))
  table = tmp_path / "indiana_projections.csv"
  table.write_text("uid,filename,projection\n" + "".join(
      f"{p.split('_')[0][3:]},{p[3:-4]}.dcm.png,"
      f"{'Frontal' if i % 2 == 0 else 'Lateral'}\n"
      for i, p in enumerate(pngs)))
  m2 = openi.convert(reports_tgz=str(src / "NLMCXR_reports.tgz"),
                     images_dir=str(src / "images"),
                     projections_csv=str(table),
                     output_dir=str(tmp_path / "o2"), image_size=64,
                     progress=False)
  frontal = {p[:-4] for i, p in enumerate(pngs) if i % 2 == 0}
  kept = 0
  for split in m2["written"]:
    for ex in _examples(tmp_path / "o2", split):
      assert set(ex["dicom_ids"].astype(str)) <= frontal
      assert set(ex["views"].astype(str)) == {"FRONTAL"}
      kept += len(ex["images"])
  assert kept == len(frontal) - m2["skipped"].get("no_usable_image", 0)
  assert sum(m2["written"].values()) + m2["skipped"].get(
      "no_frontal_image", 0) == sum(m["written"].values())


def test_localized_cli_one_line_errors(tmp_path):
  res = subprocess.run([sys.executable, "-m", "data_prep.localized.nih",
                        f"--input_dir={tmp_path}", f"--output_dir={tmp_path}"
                        "/o"], capture_output=True, text=True, check=False)
  assert res.returncode == 2
  assert res.stderr.strip().splitlines() == [
      f"error: {tmp_path}/BBox_List_2017.csv: file not found"]
