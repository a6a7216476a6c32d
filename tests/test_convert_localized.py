"""Localized-set and Open-i converters: masks/boxes, splits, real samples."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import openi
from data_prep import rle
from data_prep import splits
from data_prep.localized import common
from data_prep.localized import covid_rural
from data_prep.localized import ms_cxr
from data_prep.localized import nih
from data_prep.localized import object_cxr
from data_prep.localized import rsna
from data_prep.localized import siim

CONVERTERS = {"siim": siim, "rsna": rsna, "nih": nih,
              "object_cxr": object_cxr, "covid_rural": covid_rural,
              "ms_cxr": ms_cxr}


@pytest.fixture(scope="module")
def localized_out(synthetic_root, tmp_path_factory):
  out = {}
  for name, mod in CONVERTERS.items():
    d = tmp_path_factory.mktemp(name)
    extra = ({"mimic_cxr_jpg_dir": str(synthetic_root / "mimic-cxr-jpg")}
             if name == "ms_cxr" else {})
    m = mod.convert(input_dir=str(synthetic_root / name), output_dir=str(d),
                    image_size=64, progress=False, **extra)
    out[name] = (d, m)
  return out


def _examples(d, split):
  return list(tfds.as_numpy(tfds.builder_from_directory(str(d)).as_dataset(
      split=split)))


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_loads_and_no_subject_in_two_splits(localized_out, name):
  d, m = localized_out[name]
  seen = {}
  for split in ("train", "validation", "test"):
    exs = _examples(d, split)
    assert len(exs) == m["written"][split] > 0
    for ex in exs:
      assert ex["image"].shape[-1] == 1 and min(ex["image"].shape[:2]) <= 64
      assert ex["mask"].shape[:2] == ex["image"].shape[:2]
      seen.setdefault(ex["subject_id"], set()).add(split)
  assert all(len(v) == 1 for v in seen.values()), name
  # Label fractions are nested subsets of train.
  train = {e["image_id"] for e in _examples(d, "train")}
  p1 = {e["image_id"] for e in _examples(d, "train_1pct")}
  p10 = {e["image_id"] for e in _examples(d, "train_10pct")}
  assert p1 and p1 <= p10 <= train


def test_siim_masks_match_truth(localized_out, synthetic_root):
  d, _ = localized_out["siim"]
  truth = {}
  with open(synthetic_root / "ground_truth.jsonl") as f:
    for line in f:
      t = json.loads(line)
      if t["dataset"] == "siim":
        truth[t["image_id"]] = t
  checked = 0
  for split in ("train", "validation", "test"):
    for ex in _examples(d, split):
      t = truth[ex["image_id"].decode()]
      m = np.zeros((t["height"], t["width"]), bool)
      for f in t["findings"]:
        m |= rle.decode(f["mask_rle"], t["height"], t["width"]).astype(bool)
      small = common.resize_mask(m.astype(np.uint8)[..., None], (
          ex["mask"].shape[1], ex["mask"].shape[0]))[..., 0]
      np.testing.assert_array_equal(ex["mask"][..., 0], small)
      checked += int(m.any())
  assert checked > 0


def test_boxes_normalised_and_rasterised(localized_out):
  d, _ = localized_out["rsna"]
  for ex in _examples(d, "train"):
    b = ex["boxes"]["bbox"]
    if len(b):
      assert np.all((b >= 0) & (b <= 1))
      h, w = ex["mask"].shape[:2]
      y0, x0, y1, x1 = b[0]
      cy, cx = int((y0 + y1) / 2 * h), int((x0 + x1) / 2 * w)
      assert ex["mask"][cy, cx, 0] == 1
      return
  pytest.fail("no positive RSNA example")


def test_ms_cxr_carries_phrases(localized_out):
  d, _ = localized_out["ms_cxr"]
  exs = _examples(d, "train")
  assert all(len(e["phrase"]) > 0 and len(e["boxes"]["bbox"]) >= 1
             for e in exs)


def test_object_cxr_annotation_parsing_and_shapes():
  objs = object_cxr.parse_annotation("0 1 2 11 12;1 0 0 4 4;2 0 0 4 0 4 4")
  assert [k for k, _ in objs] == ["rect", "ellipse", "polygon"]
  with pytest.raises(ValueError, match="unknown object type '7'"):
    object_cxr.parse_annotation("7 1 2 3 4")
  with pytest.raises(ValueError, match="bad coordinate count 3"):
    object_cxr.parse_annotation("0 1 2 3")
  m = common.rasterize([("ellipse", [0, 0, 9, 9], 0), ("rect", [12, 0, 15, 3],
                                                        0)], 16, 16, 1)
  assert m[5, 5, 0] == 1 and m[0, 0, 0] == 0 and m[1, 13, 0] == 1


def test_splits_by_subject_are_disjoint_and_deterministic():
  items = [{"id": i, "s": f"p{i // 3}"} for i in range(300)]
  a = splits.split_by_subject(items, lambda it: it["s"], seed=1)
  b = splits.split_by_subject(items, lambda it: it["s"], seed=1)
  assert a == b
  subj = {n: {it["s"] for it in a[n]} for n in ("train", "validation",
                                                 "test")}
  assert not (subj["train"] & subj["validation"] or subj["train"] &
              subj["test"] or subj["validation"] & subj["test"])
  assert sum(len(a[n]) for n in subj) == 300
  assert len(a["train_1pct"]) == 2 and len(a["train_10pct"]) == 18


def test_nih_on_real_samples(shared_data, tmp_path):
  src = shared_data / "nih_cxr14"
  root = tmp_path / "nih"
  (root / "images").mkdir(parents=True)
  shutil.copy(src / "BBox_List_2017.csv.gz", root)
  import gzip
  with gzip.open(src / "BBox_List_2017.csv.gz", "rt") as f:
    rows = [r.split(",") for r in f.read().splitlines()[1:]]
  names = sorted({r[0] for r in rows})
  # Place the two real 512 px images under two listed names (temp only);
  # boxes are in 1024 px coordinates, hence box_reference_size.
  for real, name in zip(sorted(os.listdir(src / "images")), names[:2]):
    shutil.copy(src / "images" / real, root / "images" / name)
  m = nih.convert(input_dir=str(root), output_dir=str(tmp_path / "o"),
                  image_size=128, progress=False, box_reference_size=1024)
  assert sum(m["split_sizes"][s] for s in ("train", "validation",
                                            "test")) == 2
  assert m["skipped"]["missing_image"] == len(names) - 2
  assert len(rows) == 984
  ex = next(e for s in ("train", "validation", "test") for e in
            _examples(tmp_path / "o", s))
  b = ex["boxes"]["bbox"]
  r = next(r for r in rows if r[0] == ex["image_id"].decode())
  x, y = float(r[2]), float(r[3])
  np.testing.assert_allclose(b[0][:2], [y / 1024, x / 1024], atol=1e-6)


def test_openi_real_archive_reports_only(shared_data, tmp_path):
  iu = shared_data / "iu_xray"
  m = openi.convert(reports_tgz=str(iu / "NLMCXR_reports.tgz"),
                    split_csv=str(iu / "r2gen_split.csv"),
                    output_dir=str(tmp_path / "oi"), progress=False)
  assert m["total_written"] + m["total_skipped"] == 3955
  assert m["split_source"]["r2gen"] == 2955
  builder = tfds.builder_from_directory(str(tmp_path / "oi"))
  assert builder.info.splits["train"].num_examples == m["written"]["train"]


def test_openi_synthetic_with_images(synthetic_root, tmp_path):
  m = openi.convert(reports_tgz=str(synthetic_root / "openi" /
                                    "NLMCXR_reports.tgz"),
                    images_dir=str(synthetic_root / "openi" / "images"),
                    output_dir=str(tmp_path / "o"), image_size=64,
                    progress=False)
  assert m["total_written"] > 0
  ex = _examples(tmp_path / "o", "train")[0]
  assert ex["images"].shape[0] >= 1 and ex["labels"].shape == (14,)
