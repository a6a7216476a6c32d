"""Localized-evaluation sets in their public formats (DATA_FORMATS.md A3).

SIIM-ACR (DICOM + column-major relative RLE), RSNA pneumonia (DICOM + boxes),
NIH ChestX-ray14 (PNG + BBox_List_2017.csv), Object-CXR (JPG + shape
annotations), COVID-rural (RGB JPG + PNG masks), MS-CXR (phrase boxes over the
synthetic MIMIC-CXR-JPG tree). Subjects use id namespaces of their own, as
the real sets do.
"""

import csv
import dataclasses
import json
import os

import numpy as np
from PIL import Image, ImageDraw
import pydicom
from pydicom import dataset as dcm_dataset
from pydicom import uid as dcm_uid
from scipy import ndimage

from data_prep import rle
from data_prep.synthetic import anatomy
from data_prep.synthetic import findings as fnd
from data_prep.synthetic import render

NIH_CLASSES = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly",
               "Effusion": "pleural_effusion", "Infiltrate": "lung_opacity",
               "Mass": "mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
               "Pneumothorax": "pneumothorax"}
MS_CXR_CATEGORIES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                     "Lung Opacity", "Pleural Effusion", "Pneumonia",
                     "Pneumothorax")


def _uid(rng: np.random.Generator) -> str:
  return "1.2.276.0.7230010.3.1.4.8323329.{}.{}.{}".format(
      int(rng.integers(1000, 32000)), int(rng.integers(1517875000, 1517999999)),
      int(rng.integers(100000, 999999)))


def write_dicom(path: str, img: np.ndarray, uid: str,
                monochrome1: bool = False, patient_id: str = "") -> None:
  """An 8-bit CR DICOM (uncompressed, explicit VR little endian)."""
  meta = dcm_dataset.FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image
  meta.MediaStorageSOPInstanceUID = uid
  meta.TransferSyntaxUID = dcm_uid.ExplicitVRLittleEndian
  ds = dcm_dataset.FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = uid
  ds.StudyInstanceUID = uid + ".1"
  ds.SeriesInstanceUID = uid + ".2"
  ds.Modality = "CR"
  ds.PatientID = patient_id
  ds.BodyPartExamined = "CHEST"
  ds.ViewPosition = "PA"
  ds.Rows, ds.Columns = img.shape
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else \
      "MONOCHROME2"
  ds.BitsAllocated = ds.BitsStored = 8
  ds.HighBit = 7
  ds.PixelRepresentation = 0
  data = (255 - img) if monochrome1 else img
  ds.PixelData = np.ascontiguousarray(data, np.uint8).tobytes()
  pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _frontal(rng: np.random.Generator, found: list[fnd.Finding],
             size: int) -> tuple[np.ndarray, list[np.ndarray]]:
  p = anatomy.sample_patient(rng)
  return render.render_frontal(p, found, size, size,
                               int(rng.integers(1 << 31)))


def _box(m: np.ndarray) -> list[int] | None:
  ys, xs = np.nonzero(m)
  if not ys.size:
    return None
  return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
          int(ys.max() - ys.min() + 1)]


def _components(m: np.ndarray) -> list[np.ndarray]:
  lab, n = ndimage.label(m)
  return [lab == i for i in range(1, n + 1)]


@dataclasses.dataclass
class Ctx:
  """Where and how big one localized set is; collects its ground truth."""
  root: str
  size: int
  seed: int
  n: int
  truth: list


def _record(ctx: Ctx, dataset: str, path: str, subject: str,
            found: list[fnd.Finding], masks: list[np.ndarray],
            extra: dict | None = None) -> None:
  ctx.truth.append({
      "dataset": dataset, "path": path, "subject_id": subject,
      "height": ctx.size, "width": ctx.size, **(extra or {}),
      "findings": [{**f.to_json(), "label": f.label, "box": _box(m),
                    "mask_rle": rle.encode(m)} for f, m in zip(found, masks)]})


def siim(ctx: Ctx) -> int:
  """Pneumothorax masks: train-rle.csv + dicom-images-train/<uid>/<uid>/."""
  rng = np.random.default_rng([ctx.seed, 11])
  d = os.path.join(ctx.root, "siim")
  rows = []
  for i in range(ctx.n):
    pos = rng.random() < 0.35
    found = [fnd.sample_finding(rng, "pneumothorax", 0.0)] if pos else []
    if pos and rng.random() < 0.2:
      found = [dataclasses.replace(found[0], side="right"),
               dataclasses.replace(found[0], side="left",
                                   seed=found[0].seed + 1)]
    img, masks = _frontal(rng, found, ctx.size)
    image_id = _uid(rng)
    # dicom-images-train/<study uid>/<series uid>/<instance uid>.dcm
    sub = os.path.join(d, "dicom-images-train", image_id + ".1",
                       image_id + ".2")
    os.makedirs(sub, exist_ok=True)
    write_dicom(os.path.join(sub, image_id + ".dcm"), img, image_id,
                patient_id=f"siim{i:05d}")
    union = np.zeros((ctx.size, ctx.size), bool)
    for m in masks:
      union |= m
    comps = _components(union)
    for c in comps or [None]:
      rows.append([image_id, " " + ("-1" if c is None else rle.encode(c))])
    _record(ctx, "siim", os.path.relpath(os.path.join(sub, image_id + ".dcm"),
                                         ctx.root), f"siim{i:05d}", found,
            masks, {"image_id": image_id})
  with open(os.path.join(d, "train-rle.csv"), "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["ImageId", " EncodedPixels"])
    w.writerows(rows)
  return ctx.n


def rsna(ctx: Ctx) -> int:
  """Opacity boxes: stage_2_train_labels.csv + stage_2_train_images/*.dcm."""
  rng = np.random.default_rng([ctx.seed, 12])
  d = os.path.join(ctx.root, "rsna")
  os.makedirs(os.path.join(d, "stage_2_train_images"), exist_ok=True)
  labels, classes = [], []
  for i in range(ctx.n):
    r = rng.random()
    found = []
    if r < 0.3:
      found = [dataclasses.replace(fnd.sample_finding(rng, "lung_opacity",
                                                      0.0), side=s)
               for s in (["right", "left"] if rng.random() < 0.4 else
                         [str(rng.choice(["right", "left"]))])]
      cls = "Lung Opacity"
    elif r < 0.6:
      found = [fnd.sample_finding(rng, str(rng.choice(
          ["pleural_effusion", "cardiomegaly", "nodule"])), 0.0)]
      cls = "No Lung Opacity / Not Normal"
    else:
      cls = "Normal"
    img, masks = _frontal(rng, found, ctx.size)
    pid = "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}".format(
        *(int(rng.integers(1 << b)) for b in (32, 16, 16, 16, 48)))
    write_dicom(os.path.join(d, "stage_2_train_images", pid + ".dcm"), img,
                _uid(rng), patient_id=pid)
    boxes = [_box(m) for f, m in zip(found, masks) if f.type == "lung_opacity"
             and m.any()]
    if boxes:
      for b in boxes:
        labels.append([pid, float(b[0]), float(b[1]), float(b[2]),
                       float(b[3]), 1])
    else:
      labels.append([pid, "", "", "", "", 0])
    classes.append([pid, cls])
    _record(ctx, "rsna", f"rsna/stage_2_train_images/{pid}.dcm", pid, found,
            masks)
  for name, header, rows in (
      ("stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height",
                                    "Target"], labels),
      ("stage_2_detailed_class_info.csv", ["patientId", "class"], classes)):
    with open(os.path.join(d, name), "w", newline="") as f:
      w = csv.writer(f, lineterminator="\n")
      w.writerow(header)
      w.writerows(rows)
  return ctx.n


def nih(ctx: Ctx) -> int:
  """8-class boxes: BBox_List_2017.csv, Data_Entry_2017_v2020.csv, PNGs."""
  rng = np.random.default_rng([ctx.seed, 13])
  d = os.path.join(ctx.root, "nih")
  os.makedirs(os.path.join(d, "images"), exist_ok=True)
  boxes, entries = [], []
  names = list(NIH_CLASSES)
  for i in range(ctx.n):
    patient = 30000 + i // 2
    name = f"{patient:08d}_{i % 2:03d}.png"
    label = names[i % len(names)] if rng.random() < 0.85 else None
    found = ([fnd.sample_finding(rng, NIH_CLASSES[label], 0.0)]
             if label else [])
    if found and found[0].side == "bilateral":
      found = [dataclasses.replace(found[0], side="right")]
    img, masks = _frontal(rng, found, ctx.size)
    Image.fromarray(img).save(os.path.join(d, "images", name))
    if label and masks[0].any():
      b = _box(masks[0])
      boxes.append([name, label] + [f"{v:.6f}" for v in b])
    entries.append([name, label or "No Finding", i % 2, patient,
                    int(rng.integers(20, 90)), str(rng.choice(["M", "F"])),
                    "PA", ctx.size, ctx.size, 0.143, 0.143])
    _record(ctx, "nih", f"nih/images/{name}", str(patient), found, masks)
  with open(os.path.join(d, "BBox_List_2017.csv"), "w", newline="") as f:
    f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    csv.writer(f, lineterminator="\n").writerows(boxes)
  with open(os.path.join(d, "Data_Entry_2017_v2020.csv"), "w",
            newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID",
                "Patient Age", "Patient Gender", "View Position",
                "OriginalImage[Width", "Height]",
                "OriginalImagePixelSpacing[x", "y]"])
    w.writerows(entries)
  return ctx.n


def object_cxr(ctx: Ctx) -> int:
  """Foreign objects (rectangles, ellipses, polygons): train/dev CSV + JPGs."""
  rng = np.random.default_rng([ctx.seed, 14])
  d = os.path.join(ctx.root, "object_cxr")
  n_dev = max(2, ctx.n // 5)
  for split, count in (("train", ctx.n - n_dev), ("dev", n_dev)):
    os.makedirs(os.path.join(d, split), exist_ok=True)
    rows = []
    for i in range(count):
      h = ctx.size
      w = int(ctx.size * rng.uniform(0.8, 1.0))
      img, _ = render.render_frontal(anatomy.sample_patient(rng), [], h, w,
                                     int(rng.integers(1 << 31)))
      im = Image.fromarray(img)
      draw = ImageDraw.Draw(im)
      anns, objs = [], []
      if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
          kind = int(rng.integers(0, 3))
          cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
          r = rng.uniform(0.02, 0.06) * h
          if kind == 2:
            pts = [(int(cx + r * np.cos(a)), int(cy + r * np.sin(a)))
                   for a in np.sort(rng.uniform(0, 2 * np.pi, 5))]
            draw.polygon(pts, fill=250)
            coords = [c for pt in pts for c in pt]
          else:
            coords = [int(cx - r), int(cy - r), int(cx + r), int(cy + r)]
            (draw.rectangle if kind == 0 else draw.ellipse)(coords, fill=250)
          anns.append(f"{kind} " + " ".join(map(str, coords)))
          objs.append({"type": kind, "coords": coords})
      name = f"{split}{i:05d}.jpg"
      im.save(os.path.join(d, split, name), quality=95)
      rows.append([name, ";".join(anns)])
      ctx.truth.append({"dataset": "object_cxr", "path":
                        f"object_cxr/{split}/{name}", "subject_id": name,
                        "height": h, "width": w, "objects": objs,
                        "findings": []})
    with open(os.path.join(d, f"{split}.csv"), "w", newline="") as f:
      wr = csv.writer(f, lineterminator="\n")
      wr.writerow(["image_name", "annotation"])
      wr.writerows(rows)
  return ctx.n


def covid_rural(ctx: Ctx) -> int:
  """Opacity masks: jpgs/<stem>.jpg (RGB) + pngs_masks/<stem>.png."""
  rng = np.random.default_rng([ctx.seed, 15])
  d = os.path.join(ctx.root, "covid_rural")
  for sub in ("jpgs", "pngs_masks"):
    os.makedirs(os.path.join(d, sub), exist_ok=True)
  for i in range(ctx.n):
    found = [dataclasses.replace(fnd.sample_finding(rng, "lung_opacity", 0.0),
                                 side=s, zone=str(rng.choice(
                                     ["middle", "lower"])))
             for s in ("right", "left") if rng.random() < 0.75]
    img, masks = _frontal(rng, found, ctx.size)
    stem = f"COVID-19-AR-{16424000 + i}_{int(rng.integers(1, 13)):02d}-" \
           f"{int(rng.integers(1, 29)):02d}-2020-XR"
    Image.fromarray(np.stack([img] * 3, -1)).save(
        os.path.join(d, "jpgs", stem + ".jpg"), quality=95)
    union = np.zeros((ctx.size, ctx.size), bool)
    for m in masks:
      union |= m
    Image.fromarray(union.astype(np.uint8) * 255).save(
        os.path.join(d, "pngs_masks", stem + ".png"))
    _record(ctx, "covid_rural", f"covid_rural/jpgs/{stem}.jpg",
            str(16424000 + i), found, masks)
  return ctx.n


def ms_cxr(root: str, mimic_truth: list[dict]) -> int:
  """Phrase boxes over frontal MIMIC images whose report states the finding."""
  rows = []
  for t in mimic_truth:
    if t["dataset"] != "mimic" or t["view"] not in ("PA", "AP"):
      continue
    for f in t["findings"]:
      if f["label"] not in MS_CXR_CATEGORIES or f["certainty"] != "positive":
        continue
      if f["type"] not in ("pleural_effusion", "pneumothorax",
                           "consolidation", "lung_opacity", "pneumonia",
                           "atelectasis", "edema", "cardiomegaly"):
        continue
      if not f.get("sentence"):
        continue  # MS-CXR phrases come from the study's report text
      m = rle.decode(f["mask_rle"], t["height"], t["width"])
      phrase = phrase_of(f)
      for c in _components(m) or []:
        b = _box(c)
        rows.append([t["dicom_id"], f["label"], phrase,
                     t["path"].replace("mimic-cxr-jpg/", ""), *b,
                     t["width"], t["height"]])
  d = os.path.join(root, "ms_cxr")
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "MS_CXR_Local_Alignment_v1.0.0.csv"), "w",
            newline="") as fh:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(["dicom_id", "category_name", "label_text", "path", "x", "y",
                "w", "h", "image_width", "image_height"])
    w.writerows(rows)
  return len(rows)


def phrase_of(f: dict) -> str:
  """The report's own words for the finding, as MS-CXR phrases are.

  The finding's report sentence without a leading "There is a", the final
  period and anything after a comma (a comparison such as ", unchanged from
  prior"; commas stay out of the CSV's free-text column): a fragment of the
  report modulo line wrapping. A short generated phrase stands in when the
  sentence is missing or its first clause is too short to name the finding.
  """
  sent = (f.get("sentence") or "").rstrip(".").split(",")[0]
  for lead in ("There is an ", "There is a ", "There is "):
    if sent.startswith(lead):
      sent = sent[len(lead):]
  if len(sent.split()) >= 2:
    return sent
  side = f.get("side") or ""
  zone = {"upper": "upper", "middle": "mid", "lower": "lower"}.get(
      f.get("zone") or "", "")
  base = {"pleural_effusion": f"{side} pleural effusion",
          "pneumothorax": f"{side} pneumothorax",
          "consolidation": f"{side} {zone} lung consolidation",
          "lung_opacity": f"opacity in the {side} {zone} lung",
          "pneumonia": f"{side} {zone} lung pneumonia",
          "atelectasis": f"{side} basilar atelectasis",
          "edema": "pulmonary edema", "cardiomegaly": "cardiomegaly"}[f["type"]]
  return " ".join(base.split())


def write_truth(path: str, lines: list[str]) -> None:
  """Writes JSON lines."""
  with open(path, "w") as f:
    for ln in lines:
      f.write(ln + "\n")


def dumps(records: list[dict]) -> list[str]:
  """One canonical (key-sorted) JSON line per record."""
  return [json.dumps(r, sort_keys=True) for r in records]


