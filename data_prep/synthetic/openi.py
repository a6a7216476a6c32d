"""Open-i (IU X-ray) look-alike: NLMCXR_reports.tgz of ecgen XML + PNGs.

Follows the real archive's structure (DATA_FORMATS.md A2.1): root
`eCitation`, four `AbstractText` elements labelled COMPARISON / INDICATION /
FINDINGS / IMPRESSION, `MeSH` with `major` / `automatic` terms, and 0-3
`parentImage` ids with the real id grammar; PHI is `XXXX`.
"""

import gzip
import io
import os
import tarfile
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image

from data_prep.synthetic import anatomy
from data_prep.synthetic import mimic
from data_prep.synthetic import render

MESH_OF = {"Pleural Effusion": "Pleural Effusion", "Pneumothorax":
           "Pneumothorax", "Consolidation": "Consolidation", "Lung Opacity":
           "Opacity/lung", "Pneumonia": "Pneumonia", "Atelectasis":
           "Pulmonary Atelectasis", "Edema": "Pulmonary Edema",
           "Lung Lesion": "Nodule", "Cardiomegaly": "Cardiomegaly",
           "Enlarged Cardiomediastinum": "Mediastinum/enlarged",
           "Fracture": "Fractures, Bone/ribs", "Support Devices":
           "Medical Device", "Pleural Other": "Thickening/pleura"}


def _xml(uid: int, findings: str, impression: str, mesh_major: list[str],
         images: list[str]) -> bytes:
  root = ET.Element("eCitation")
  ET.SubElement(root, "meta", type="rr")
  ET.SubElement(root, "uId", id=f"CXR{uid}")
  ET.SubElement(root, "pmcId", id=str(uid))
  ET.SubElement(root, "docSource").text = "CXR"
  ET.SubElement(root, "IUXRId", id=str(uid))
  ET.SubElement(root, "licenseType").text = "open-access"
  ET.SubElement(root, "licenseURL").text = (
      "http://creativecommons.org/licenses/by-nc-nd/4.0/")
  ET.SubElement(root, "publisher").text = "Indiana University"
  art = ET.SubElement(ET.SubElement(root, "MedlineCitation"), "Article")
  abstract = ET.SubElement(art, "Abstract")
  for label, text in (("COMPARISON", "None."),
                      ("INDICATION", "XXXX-year-old with cough."),
                      ("FINDINGS", findings), ("IMPRESSION", impression)):
    el = ET.SubElement(abstract, "AbstractText", Label=label)
    el.text = text or None
  mesh = ET.SubElement(root, "MeSH")
  for term in mesh_major or ["normal"]:
    ET.SubElement(mesh, "major").text = term
  for i, img in enumerate(images, 1):
    pi = ET.SubElement(root, "parentImage", id=img)
    ET.SubElement(pi, "figureId").text = f"F{i}"
    ET.SubElement(pi, "caption").text = "Xray Chest PA and Lateral"
  return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write(root: str, n: int, size: int, seed: int) -> int:
  """Writes `n` reports (+ their PNGs) under root/openi; returns n."""
  rng = np.random.default_rng([seed, 21])
  d = os.path.join(root, "openi")
  os.makedirs(os.path.join(d, "images"), exist_ok=True)
  members = []
  for k in range(n):
    uid = k + 1
    found = mimic.sample_findings(rng)
    _, _, info = mimic.write_report(rng, found, ("PA", "LATERAL"))
    findings = " ".join(info["findings"]).replace("___", "XXXX")
    impression = " ".join(info["impression"])
    if rng.random() < 0.12:
      findings = ""  # about 13% of real reports have no FINDINGS
    major = sorted({MESH_OF[f.label] for f in found}) or ["normal"]
    n_img = int(rng.choice([0, 1, 2, 3], p=[0.03, 0.1, 0.8, 0.07]))
    series = int(rng.integers(1, 9999))
    ids = [f"CXR{uid}_IM-{series:04d}-{1001 + 1000 * j}" for j in range(n_img)]
    for j, img_id in enumerate(ids):
      p = anatomy.sample_patient(rng)
      s = int(rng.integers(1 << 31))
      img = (render.render_frontal(p, found, size, size, s)[0] if j == 0 else
             render.render_lateral(p, size, size, s))
      Image.fromarray(img).save(os.path.join(d, "images", img_id + ".png"))
    members.append((f"ecgen-radiology/{uid}.xml",
                    _xml(uid, findings, impression, major, ids)))
  # gzip with mtime 0 so the archive is byte-identical across runs.
  with open(os.path.join(d, "NLMCXR_reports.tgz"), "wb") as raw, \
      gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
      tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size, info.mtime = len(data), 0
      tar.addfile(info, io.BytesIO(data))
  return n
