"""Reads the Open-i (IU X-ray) report archive straight from its tarball.

`NLMCXR_reports.tgz` holds `ecgen-radiology/<n>.xml` files (DATA_FORMATS.md
A2.1): four `AbstractText` sections, MeSH `major`/`automatic` terms and the
`parentImage` ids of the report's images. Nothing is extracted to disk.
"""

import csv
import dataclasses
import logging
import tarfile
from typing import Iterator
from xml.etree import ElementTree as ET


@dataclasses.dataclass(frozen=True)
class IUReport:
  uid: str                 # "CXR1"
  number: int              # 1
  comparison: str
  indication: str
  findings: str
  impression: str
  mesh_major: list[str]
  mesh_automatic: list[str]
  images: list[str]        # parentImage ids, e.g. "CXR1_1_IM-0001-3001"
  captions: list[str]


def _text(el) -> str:
  return " ".join((el.text or "").split()) if el is not None else ""


def parse_xml(data: bytes, name: str = "<xml>") -> IUReport:
  """One report from its XML bytes (raises ValueError naming `name`)."""
  try:
    root = ET.fromstring(data)
  except ET.ParseError as e:
    raise ValueError(f"{name}: malformed XML ({e})") from None
  uid_el = root.find("uId")
  if uid_el is None or not uid_el.get("id", "").startswith("CXR"):
    raise ValueError(f"{name}: no <uId id='CXR...'> element")
  uid = uid_el.get("id")
  sections = {e.get("Label", "").upper(): _text(e)
              for e in root.iter("AbstractText")}
  mesh = root.find("MeSH")
  major = [_text(e) for e in mesh.findall("major")] if mesh is not None else []
  auto = ([_text(e) for e in mesh.findall("automatic")]
          if mesh is not None else [])
  images, captions = [], []
  for pi in root.findall("parentImage"):
    images.append(pi.get("id"))
    captions.append(_text(pi.find("caption")))
  return IUReport(uid, int(uid[3:]), sections.get("COMPARISON", ""),
                  sections.get("INDICATION", ""), sections.get("FINDINGS", ""),
                  sections.get("IMPRESSION", ""), major, auto, images,
                  captions)


def iter_reports(tgz_path: str, skipped: dict | None = None
                 ) -> Iterator[IUReport]:
  """Yields every report in the archive, in member order.

  Args:
    tgz_path: path of NLMCXR_reports.tgz.
    skipped: optional dict; malformed members are counted there under
      "malformed_xml" (and logged with their member name) instead of raising.
  """
  with tarfile.open(tgz_path, "r:*") as tar:
    for member in tar:
      if not member.isfile() or not member.name.endswith(".xml"):
        continue
      data = tar.extractfile(member).read()
      try:
        yield parse_xml(data, member.name)
      except ValueError as e:
        if skipped is None:
          raise
        skipped["malformed_xml"] = skipped.get("malformed_xml", 0) + 1
        logging.warning("skip %s", e)


def read_r2gen_split(csv_path: str) -> dict[str, str]:
  """Report uid ("CXR1") -> R2Gen split ("train" / "val" / "test")."""
  with open(csv_path, newline="", encoding="utf-8-sig") as f:
    return {row["uid"]: row["split"] for row in csv.DictReader(f)}
