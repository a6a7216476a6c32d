"""DICOM to 8-bit (real CR + built DICOMs) and the Open-i XML reader."""

import io
import tarfile

import numpy as np
import pytest

from data_prep import dicom
from data_prep import iu_xml
from data_prep.synthetic import localized


def test_real_monochrome1_chest_is_inverted(shared_data):
  img = dicom.dicom_to_uint8(str(shared_data / "dicom_samples" /
                                 "RG1_UNCR.dcm"))
  h, w = img.shape
  assert (h, w) == (1955, 1841) and img.dtype == np.uint8
  lung = img[h // 3:h // 2, w // 5:w // 3].mean()
  spine = img[h // 3:h // 2, int(w * 0.47):int(w * 0.53)].mean()
  assert lung < spine - 30  # lungs dark, mediastinum/spine bright


def _write(tmp_path, name, img, mono1=False, **attrs):
  p = str(tmp_path / name)
  localized.write_dicom(p, img, "1.2.3.4." + str(len(name)), monochrome1=mono1)
  if attrs:
    import pydicom
    ds = pydicom.dcmread(p)
    for k, v in attrs.items():
      setattr(ds, k, v)
    ds.save_as(p)
  return p


def test_monochrome_slope_window_and_equalise(tmp_path):
  ramp = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (20, 1))
  a = dicom.dicom_to_uint8(_write(tmp_path, "m2.dcm", ramp))
  b = dicom.dicom_to_uint8(_write(tmp_path, "m1.dcm", ramp, mono1=True))
  # Both stored the same visible image (MONOCHROME1 stores it inverted).
  np.testing.assert_array_equal(a, b)
  assert a[0, 0] == 0 and a[0, -1] == 255
  c = dicom.dicom_to_uint8(_write(tmp_path, "s.dcm", ramp,
                                  RescaleSlope="2", RescaleIntercept="-10"))
  np.testing.assert_array_equal(c, a)  # linear rescale, then min-max
  d = dicom.dicom_to_uint8(_write(tmp_path, "w.dcm", ramp, WindowCenter="50",
                                  WindowWidth="20"))
  assert d[0, :20].max() == 0 and d[0, 35:].min() == 255
  e = dicom.dicom_to_uint8(_write(tmp_path, "e.dcm", ramp), equalize=True)
  assert e.min() == 0 and e.max() == 255


def test_bad_dicom_errors(tmp_path):
  p = tmp_path / "x.dcm"
  p.write_bytes(b"not a dicom at all")
  with pytest.raises(dicom.DicomError, match=r"x.dcm: not a readable DICOM"):
    dicom.dicom_to_uint8(str(p))


def test_iu_counts_on_real_archive(shared_data):
  tgz = str(shared_data / "iu_xray" / "NLMCXR_reports.tgz")
  reports = list(iu_xml.iter_reports(tgz))
  assert len(reports) == 3955
  assert sum(bool(r.findings) for r in reports) == 3425
  assert sum(bool(r.impression) for r in reports) == 3921
  assert sum(len(r.images) for r in reports) == 7470
  r1 = next(r for r in reports if r.uid == "CXR1")
  assert r1.number == 1 and r1.images == ["CXR1_1_IM-0001-3001",
                                          "CXR1_1_IM-0001-4001"]
  split = iu_xml.read_r2gen_split(str(shared_data / "iu_xray" /
                                      "r2gen_split.csv"))
  counts = {s: list(split.values()).count(s) for s in ("train", "val", "test")}
  assert counts == {"train": 2069, "val": 296, "test": 590}
  assert set(split) <= {r.uid for r in reports}


def test_malformed_member_counted(tmp_path):
  p = tmp_path / "r.tgz"
  with tarfile.open(p, "w:gz") as tar:
    for name, data in (("ecgen-radiology/1.xml", b"<eCitation><uId id='CXR1'/>"
                        b"</eCitation>"), ("ecgen-radiology/2.xml", b"<oops")):
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  skipped = {}
  got = list(iu_xml.iter_reports(str(p), skipped))
  assert [r.uid for r in got] == ["CXR1"] and skipped == {"malformed_xml": 1}
  with pytest.raises(ValueError, match="ecgen-radiology/2.xml: malformed XML"):
    list(iu_xml.iter_reports(str(p)))
