"""Sentence splitting, labeler (CheXpert space), tokenizers.

Sectioning is tested in test_sections.py, the labeler's certainty rules and
its measurement on real reports in test_labeler.py.
"""

import csv
import gzip
import math
import subprocess
import sys

import numpy as np
import pytest

from data_prep import labeler
from data_prep import sections
from data_prep import sentences
from data_prep import tokenizer as tok_train
from jointcxr.data import tokenizer as tok


@pytest.mark.parametrize("text,expected", [
    ("A 1.5 cm nodule. No effusion.", ["A 1.5 cm nodule.", "No effusion."]),
    ("Discussed with Dr. ___ at 3 p.m. on ___. Done.",
     ["Discussed with Dr. ___ at 3 p.m. on ___.", "Done."]),
    ("1. Small effusion. 2. No pneumothorax.",
     ["Small effusion.", "No pneumothorax."]),
    ("1. First\n 2. Second item\n", ["First", "Second item"]),
    ("Approx. 2 cm, e.g. a cyst. Effusion vs. atelectasis.",
     ["Approx. 2 cm, e.g. a cyst.", "Effusion vs. atelectasis."]),
    ("wrapped line\n continues here.  Next one", ["wrapped line continues "
                                                 "here.", "Next one"]),
    ("No. 2 tube. ...", ["No. 2 tube."]),
])
def test_sentence_splitter(text, expected):
  assert sentences.split_sentences(text) == expected


def _same(a, b):
  return (math.isnan(a) and math.isnan(b)) or a == b


def test_labeler_reproduces_chexpert_goldens(shared_data):
  d = shared_data / "chexpert_labeler_samples"
  texts = labeler.read_reports(str(d / "sample_reports.csv"))
  truth = labeler.read_labels(str(d / "labeled_reports.csv"))
  assert len(texts) == len(truth) == 4
  for text, t in zip(texts, truth):
    pred = labeler.label_report(text)
    assert all(_same(pred[k], v) for k, v in t.items()), (text, pred)


@pytest.mark.parametrize("text,expected", [
    ("Cannot exclude pneumonia.", {"Pneumonia": -1.0}),
    ("A small effusion cannot be excluded.", {"Pleural Effusion": -1.0}),
    ("No pleural effusion or pneumothorax.",
     {"Pleural Effusion": 0.0, "Pneumothorax": 0.0, "No Finding": 1.0}),
    ("Possible left lower lobe consolidation.", {"Consolidation": -1.0}),
    ("Opacity may be due to overlapping soft tissue.",
     {"Lung Opacity": -1.0}),
    ("The heart and mediastinum are normal.",
     {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0,
      "No Finding": 1.0}),
    ("Mild cardiomegaly and the lungs are clear.", {"Cardiomegaly": 1.0}),
    ("Stable cardiac silhouette.", {"Cardiomegaly": -1.0}),
    ("Findings suggest CHF.", {"Edema": -1.0, "Cardiomegaly": -1.0}),
    ("Endotracheal tube in standard position.",
     {"Support Devices": 1.0, "No Finding": 1.0}),
    ("Tube projects over the cardiac silhouette.",
     {"Support Devices": 1.0, "No Finding": 1.0}),
    ("No pericardial effusion.", {"No Finding": 1.0}),
    ("Calcified granuloma.", {}),
])
def test_labeler_rules(text, expected):
  pred = labeler.label_report(text)
  got = {k: v for k, v in pred.items() if not math.isnan(v)}
  assert got == expected


def test_labeler_chestxray14_space():
  pred = labeler.label_report("Right upper lobe nodule. No emphysema.",
                              "chestxray14")
  assert pred["Nodule"] == 1.0 and pred["Emphysema"] == 0.0
  assert math.isnan(pred["Mass"])
  with pytest.raises(ValueError, match="unknown label space 'x'"):
    labeler.label_report("a", "x")


def test_labeler_reproduces_synthetic_truth(synthetic_root):
  root = synthetic_root
  with gzip.open(root / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-chexpert.csv.gz",
                 "rt") as f:
    rows = list(csv.DictReader(f))
  preds, truth = [], []
  for r in rows:
    sub, sid = r["subject_id"], r["study_id"]
    text = (root / "mimic-cxr-reports" / "files" / f"p{sub[:2]}" / f"p{sub}" /
            f"s{sid}.txt").read_text()
    preds.append(labeler.label_report(sections.extract_sections(text).chosen))
    truth.append({k: float(v) if v else float("nan") for k, v in r.items()
                  if k not in ("subject_id", "study_id")})
  table = labeler.evaluate(preds, truth, list(labeler.R.CHEXPERT))
  for name, m in table.items():
    assert m["agreement"] >= 0.98, (name, m)


def test_labeler_cli(tmp_path):
  inp = tmp_path / "r.csv"
  inp.write_text('"No effusion. Mild cardiomegaly."\n"Normal chest."\n')
  out = tmp_path / "l.csv"
  res = subprocess.run([sys.executable, "-m", "data_prep.labeler",
                        f"--input={inp}", f"--output={out}"],
                       capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr
  rows = list(csv.DictReader(open(out)))
  assert rows[0]["Cardiomegaly"] == "1.0"
  assert rows[0]["Pleural Effusion"] == "0.0" and rows[1]["No Finding"] == "1.0"
  res = subprocess.run([sys.executable, "-m", "data_prep.labeler",
                        f"--input={tmp_path / 'missing.csv'}",
                        f"--output={out}"], capture_output=True, text=True,
                       check=False)
  assert res.returncode == 1
  assert res.stderr.strip().startswith("error: cannot read")
  assert "Traceback" not in res.stderr


SENTS = ["No pleural effusion or pneumothorax.", "Small left pleural effusion.",
         "Heart size is normal.", "Mild pulmonary edema."] * 20


def test_sentencepiece_deterministic_with_fixed_specials():
  a = tok_train.train_sentencepiece(SENTS, 60)
  b = tok_train.train_sentencepiece(SENTS, 60)
  assert a == b
  t = tok.SentencePieceTokenizer(a)
  assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id) == (0, 1, 2, 3, 4)
  assert t.decode(t.encode("small left pleural effusion.")) == (
      "small left pleural effusion.")
  with pytest.raises(ValueError, match="no non-empty sentences"):
    tok_train.train_sentencepiece(["", "  "], 10)


def test_encode_report_truncates_at_sentence_boundary():
  t = tok.SentencePieceTokenizer(tok_train.train_sentencepiece(SENTS, 60))
  s = ["Small left pleural effusion.", "Heart size is normal.",
       "Mild pulmonary edema."]
  lens = [len(t.encode(x)) for x in s]
  max_len = 2 + lens[0] + lens[1] + 1  # room for two sentences, not three
  enc = t.encode_report(s, max_len, max_sentences=8)
  assert enc.num_sentences == 2
  assert enc.ids[0] == t.cls_id
  assert enc.ids[1 + lens[0] + lens[1]] == t.sep_id
  np.testing.assert_array_equal(
      enc.sentence_ids, [-1] + [0] * lens[0] + [1] * lens[1] + [-1, -1])
  enc = t.encode_report(s, 5, max_sentences=8)  # first sentence truncated
  assert enc.num_sentences == 1 and list(enc.sentence_ids) == [-1, 0, 0, 0, -1]
  enc = t.encode_report(s, 64, max_sentences=1)
  assert enc.num_sentences == 1 and (enc.ids == t.pad_id).sum() == 64 - 2 - \
      lens[0]


def test_wordpiece_against_hand_computed(tmp_path):
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural",
           "eff", "##usion", "##s", ".", "heart"]
  p = tmp_path / "vocab.txt"
  p.write_text("\n".join(vocab) + "\n")
  t = tok.load_tokenizer(str(p))
  assert isinstance(t, tok.WordPieceTokenizer)
  assert t.encode("No pleural Effusions.") == [5, 6, 7, 8, 9, 10]
  assert t.encode("cardiomegaly") == [1]
  assert t.decode([2, 7, 8, 3]) == "effusion"
  enc = t.encode_report(["No effusion.", "Heart."], 16, 4)
  assert list(enc.ids[:8]) == [2, 5, 7, 8, 10, 11, 10, 3]
  assert list(enc.sentence_ids[:8]) == [-1, 0, 0, 0, 0, 1, 1, -1]
