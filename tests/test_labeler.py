"""Labeler certainty rules (negex), the ChestX-ray14 space and its measurement.

The real-report check (`test_dev_gold_macro_f1`) runs on the Open-i reports
and the development half of NegBio's gold in ../shared/data; everything else
uses crafted sentences and a tiny crafted archive.
"""

import io
import json
import math
import subprocess
import sys
import tarfile

import pytest

from data_prep import labeler
from data_prep import labeler_eval
from data_prep import negex


def _certainty(sentence: str, word: str) -> str:
  s = labeler.preprocess(sentence)
  i = s.index(word)
  return negex.classify(s, i, i + len(word)).certainty


@pytest.mark.parametrize("sentence,word,expected", [
    # Negation reaches across the items of a list, before and after.
    ("No focal consolidation, suspicious opacity, large pleural effusion, or "
     "pneumothorax is identified.", "pleural effusion", negex.NEGATIVE),
    ("No consolidation, effusion, pneumothorax.", "pneumothorax",
     negex.NEGATIVE),
    ("No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or "
     "masses.", "pneumothorax", negex.NEGATIVE),
    ("Heart size, mediastinal contour, and pulmonary vascularity are within "
     "normal limits.", "heart size", negex.NEGATIVE),
    ("The heart, pulmonary XXXX and mediastinum are within normal limits.",
     "heart", negex.NEGATIVE),
    ("Consolidation, atelectasis, and blunting in the left lower lobe have "
     "cleared in the interval.", "atelectasis", negex.NEGATIVE),
    ("Heart size is upper limits of normal.", "heart size", negex.NEGATIVE),
    ("The previously noted nodule is not well-seen today.", "nodule",
     negex.NEGATIVE),
    ("No visualized pneumothorax.", "pneumothorax", negex.NEGATIVE),
    ("The mediastinum is not widened.", "mediastinum", negex.NEGATIVE),
    # ... but not into a new finding or a new clause.
    ("No pneumothorax, mild cardiomegaly.", "cardiomegaly", negex.POSITIVE),
    ("Cardiomegaly, lungs are normal.", "cardiomegaly", negex.POSITIVE),
    ("No effusion is seen and there is a pneumothorax.", "pneumothorax",
     negex.POSITIVE),
    ("No edema but small effusions.", "effusions", negex.POSITIVE),
    ("Cardiomegaly with normal pulmonary vascularity.", "cardiomegaly",
     negex.POSITIVE),
    # Pseudo triggers.
    ("No interval change in the left basilar atelectasis.", "atelectasis",
     negex.POSITIVE),
    ("Redemonstration without significant interval change of atelectasis.",
     "atelectasis", negex.POSITIVE),
    # Possibility, checked before negation where it contains "not".
    ("Pneumonia cannot be excluded.", "pneumonia", negex.POSSIBLE),
    ("Difficult to completely exclude a superimposed pneumonia.", "pneumonia",
     negex.POSSIBLE),
    ("Left base opacity may represent early infection or atelectasis.",
     "atelectasis", negex.POSSIBLE),
    ("Bibasilar airspace disease, possibly atelectasis.", "atelectasis",
     negex.POSSIBLE),
    ("Differential diagnosis includes edema.", "edema", negex.POSSIBLE),
    ("In the appropriate clinical setting, this is compatible with "
     "pneumonia.", "pneumonia", negex.POSSIBLE),
    ("True pulmonary nodule is a possibility.", "nodule", negex.POSSIBLE),
    # Probable reading, and its overlap with a possibility cue.
    ("Probable right lower lobe pneumonia.", "pneumonia", negex.PROBABLE),
    ("Stable left basilar atelectasis versus scarring.", "atelectasis",
     negex.PROBABLE),
    ("Opacities most suggestive of pulmonary edema.", "edema",
     negex.PROBABLE),
    # Asserted readings and hedged causes keep the mention positive.
    ("Airspace disease consistent with pneumonia.", "pneumonia",
     negex.POSITIVE),
    ("Mild basilar consolidation may represent atelectasis.",
     "consolidation", negex.POSITIVE),
])
def test_negex_certainty(sentence, word, expected):
  assert _certainty(sentence, word) == expected


def test_negex_reports_the_deciding_cue():
  s = labeler.preprocess("There is no evidence of pneumothorax.")
  i = s.index("pneumothorax")
  d = negex.classify(s, i, i + len("pneumothorax"))
  assert (d.certainty, d.rule, d.cue) == (negex.NEGATIVE, "pre_negation",
                                          "no evidence of")


def _cxr14(text: str) -> dict[str, float]:
  pred = labeler.label_report(text, "chestxray14")
  return {k: v for k, v in pred.items() if not math.isnan(v)}


@pytest.mark.parametrize("text,expected", [
    # Anatomy alone is no mention; an enlarged heart is.
    ("The heart is top normal in size.", {}),
    ("Heart size is normal.", {}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0.0}),
    ("Heart size mildly enlarged.", {"Cardiomegaly": 1.0}),
    ("Stable mild cardiomegaly.", {"Cardiomegaly": 1.0}),
    ("Borderline heart size.", {"Cardiomegaly": -1.0}),
    # Possible -> 0, probable -> -1 (ChestX-ray14's convention).
    ("Opacity may represent pneumonia.", {"Pneumonia": 0.0}),
    ("Probable pneumonia.", {"Pneumonia": -1.0}),
    ("Calcified nodule in the left lung.", {"Nodule": 1.0}),
    ("Hyperinflated lungs.", {}),
    ("Subcutaneous emphysema.", {}),
    ("Pleural effusion versus thickening.",
     {"Effusion": -1.0, "Pleural_Thickening": -1.0}),
    ("No pericardial effusion.", {}),
])
def test_chestxray14_space(text, expected):
  assert _cxr14(text) == expected


def test_possible_keeps_chexpert_uncertain():
  pred = labeler.label_report("Opacity may represent pneumonia.")
  assert pred["Pneumonia"] == -1.0
  pred = labeler.label_report("Opacity may be due to overlying soft tissue.")
  assert pred["Lung Opacity"] == -1.0
  pred = labeler.label_report("Opacities consistent with pneumonia.")
  assert pred["Pneumonia"] == 1.0


def _archive(path, reports: dict[int, tuple[str, str]]) -> None:
  """A tiny NLMCXR_reports.tgz: number -> (findings, impression)."""
  with tarfile.open(path, "w:gz") as tar:
    for n, (findings, impression) in reports.items():
      xml = (f'<eCitation><uId id="CXR{n}"/><MedlineCitation><Article>'
             f'<Abstract><AbstractText Label="FINDINGS">{findings}'
             f'</AbstractText><AbstractText Label="IMPRESSION">'
             f'{impression}</AbstractText></Abstract></Article>'
             f'</MedlineCitation><MeSH><major>normal</major></MeSH>'
             f'</eCitation>').encode()
      info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
      info.size = len(xml)
      tar.addfile(info, io.BytesIO(xml))


def _gold(path, rows: dict[int, dict[str, int]], bom: bool = False) -> None:
  names = list(labeler.R.CHESTXRAY14)
  lines = [",".join(["filename"] + names + ["normal"])]
  for n, pos in rows.items():
    lines.append(",".join([f"CXR{n}"] + [str(pos.get(k, 0)) for k in names]
                          + ["0"]))
  path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n",
                  encoding="utf-8")


def test_eval_counts_on_crafted_archive(tmp_path):
  _archive(tmp_path / "r.tgz", {
      1: ("Mild cardiomegaly.", "No effusion."),
      2: ("Heart size normal.", "Probable left lower lobe pneumonia."),
      3: ("Small effusion.", "Opacity may represent pneumonia."),
  })
  _gold(tmp_path / "g.csv", {1: {"Cardiomegaly": 1}, 2: {"Pneumonia": 1},
                             3: {"Pneumonia": 1}}, bom=True)
  result = labeler_eval.evaluate(
      labeler_eval.load_reports(str(tmp_path / "r.tgz")),
      labeler_eval.read_gold(str(tmp_path / "g.csv")), min_positives=1)
  t = result["chestxray14"]
  assert (t["Cardiomegaly"].tp, t["Cardiomegaly"].fp) == (1, 0)
  assert (t["Pneumonia"].tp, t["Pneumonia"].fn) == (1, 1)
  assert (t["Effusion"].fp, t["Effusion"].tp) == (1, 0)
  assert result["chestxray14_chexpert_values"]["Pneumonia"].tp == 2
  # Effusion has no gold positive: not in the mean.
  assert math.isclose(result["macro_f1"], (1.0 + 2 / 3) / 2)


def test_eval_cli_writes_tables_and_refuses_bad_gold(tmp_path):
  _archive(tmp_path / "r.tgz", {1: ("Mild cardiomegaly.", "")})
  _gold(tmp_path / "g.csv", {1: {"Cardiomegaly": 1}})
  cmd = [sys.executable, "-m", "data_prep.labeler_eval",
         f"--reports_tgz={tmp_path / 'r.tgz'}",
         f"--gold_csv={tmp_path / 'g.csv'}", "--min_positives=1",
         f"--output_dir={tmp_path / 'out'}"]
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr
  data = json.loads((tmp_path / "out" / "labeler_openi.json").read_text())
  assert data["chestxray14"]["Cardiomegaly"]["f1"] == 1.0
  assert "| Cardiomegaly | 1.000 |" in (tmp_path / "out" /
                                        "labeler_openi.md").read_text()
  res = subprocess.run(cmd + ["--cues"], capture_output=True, text=True,
                       check=False)
  assert "| (none) | 1 | 1 (100%) |" in res.stdout
  data = json.loads((tmp_path / "out" / "labeler_openi.json").read_text())
  assert data["cues"]["(none)"] == {"mentions": 1, "gold_positive": 1}
  bad = tmp_path / "bad.csv"
  bad.write_text((tmp_path / "g.csv").read_text().replace(",1,", ",yes,"))
  res = subprocess.run(cmd[:4] + [f"--gold_csv={bad}"], capture_output=True,
                       text=True, check=False)
  assert res.returncode == 1
  assert res.stderr.startswith("error: ") and "row 2 (CXR1)" in res.stderr
  assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1


@pytest.mark.shared_data
def test_dev_gold_macro_f1(shared_data):
  """Macro-F1 >= 0.90 on the real Open-i reports (dev half of the gold)."""
  d = shared_data / "iu_xray"
  result = labeler_eval.evaluate(
      labeler_eval.load_reports(str(d / "NLMCXR_reports.tgz")),
      labeler_eval.read_gold(str(d / "openi_gold_dev.csv")))
  assert result["reports"] == 1920
  assert result["macro_f1"] >= 0.90, labeler_eval.format_markdown(result)
