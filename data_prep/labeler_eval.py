r"""Measures the report labeler against expert labels of real Open-i reports.

    python -m data_prep.labeler_eval \
        --reports_tgz=../shared/data/iu_xray/NLMCXR_reports.tgz \
        --gold_csv=../shared/data/iu_xray/openi_gold_dev.csv \
        [--min_positives=20] [--output_dir=DIR]

The gold CSV is NegBio's Open-i gold standard layout: `filename` (`CXR<n>`,
the report's `<uId>`) and one 1 / 0 column per ChestX-ray14 observation
(plus `normal`). Each report's FINDINGS then IMPRESSION sentences are
labelled in the ChestX-ray14 space; uncertain (-1) counts as positive and
not mentioned as negative. Macro-F1 is over
the labels with at least `--min_positives` gold positives.

Two more tables measure the choices behind it: the same mentions with
CheXpert's certainty values (a finding raised only as a possibility, "may
represent", "cannot exclude", is uncertain -1 there and so counts as
positive; the chestxray14 space's own convention, the default, makes it
0), and the label-space mapping a CheXpert-only labeler would need:
CheXpert-space labels of the same text mapped to ChestX-ray14 names
(`CHEXPERT_TO_CHESTXRAY14`), for the observations both spaces have.

`--cues` adds a table of the certainty rules: for each rule that decided
a ChestX-ray14 mention, how many of its mentions are of a finding the gold
marks positive in that report.

With `--output_dir`, `labeler_openi.json` and `labeler_openi.md` are written
there (numbers only, never report text).
"""

import collections
import csv
import dataclasses
import math
import os
import sys
from typing import Iterable, Mapping, Sequence

from data_prep import iu_xml
from data_prep import labeler
from data_prep import labeler_rules as R
from data_prep import sentences as sentences_lib

# CheXpert observation -> the ChestX-ray14 label it stands for. Mass and
# Nodule both come from Lung Lesion; Emphysema, Fibrosis and Hernia have no
# CheXpert counterpart.
CHEXPERT_TO_CHESTXRAY14 = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly",
    "Pleural Effusion": "Effusion", "Lung Opacity": "Infiltration",
    "Lung Lesion": ("Mass", "Nodule"), "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax", "Consolidation": "Consolidation",
    "Edema": "Edema", "Pleural Other": "Pleural_Thickening",
}


class EvalError(Exception):
  """A bad input file; the message names the file, row and reason."""


@dataclasses.dataclass(frozen=True)
class Counts:
  """Per-label confusion counts of positives."""
  tp: int
  fp: int
  fn: int

  @property
  def precision(self) -> float:
    return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

  @property
  def recall(self) -> float:
    return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

  @property
  def f1(self) -> float:
    d = 2 * self.tp + self.fp + self.fn
    return 2 * self.tp / d if d else math.nan


def read_gold(path: str) -> dict[str, dict[str, int]]:
  """uid ("CXR1") -> {label: 0 / 1} from a NegBio-style gold CSV.

  Raises:
    EvalError: unreadable file, missing column or a value other than 0 / 1.
  """
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise EvalError(f"{path}: cannot read ({e})") from None
  if not rows or "filename" not in rows[0]:
    raise EvalError(f"{path}: missing column 'filename'")
  missing = [n for n in R.CHESTXRAY14 if n not in rows[0]]
  if missing:
    raise EvalError(f"{path}: missing columns {missing}")
  out = {}
  for i, row in enumerate(rows, start=2):
    uid = (row["filename"] or "").strip()
    labels = {}
    for name in R.CHESTXRAY14:
      v = (row[name] or "").strip()
      if v not in ("0", "1", "0.0", "1.0"):
        raise EvalError(f"{path}: row {i} ({uid}): {name}={v!r} is not 0 "
                        "or 1")
      labels[name] = int(float(v))
    out[uid] = labels
  return out


def report_sentences(report: iu_xml.IUReport) -> list[str]:
  """FINDINGS then IMPRESSION sentences of a report (the annotated text)."""
  return (sentences_lib.split_sentences(report.findings) +
          sentences_lib.split_sentences(report.impression))


def binarize(value: float) -> int:
  """Positive and uncertain -> 1; negative and not mentioned -> 0."""
  return int(value in (1.0, -1.0))


def count(pred: Sequence[Mapping[str, int]],
          gold: Sequence[Mapping[str, int]],
          labels: Iterable[str]) -> dict[str, Counts]:
  """Confusion counts per label of two parallel lists of 0 / 1 dicts."""
  out = {}
  for name in labels:
    pairs = [(p[name], g[name]) for p, g in zip(pred, gold)]
    out[name] = Counts(tp=sum(p and g for p, g in pairs),
                       fp=sum(p and not g for p, g in pairs),
                       fn=sum(g and not p for p, g in pairs))
  return out


def macro_f1(table: Mapping[str, Counts], min_positives: int) -> float:
  """Mean F1 of the labels with at least `min_positives` gold positives."""
  f1s = [c.f1 for c in table.values() if c.tp + c.fn >= min_positives]
  return sum(f1s) / len(f1s) if f1s else math.nan


def evaluate(reports: Mapping[str, iu_xml.IUReport],
             gold: Mapping[str, Mapping[str, int]], min_positives: int = 20
             ) -> dict:
  """Both tables (native ChestX-ray14 labels, mapped CheXpert labels).

  Raises:
    EvalError: a gold uid absent from the reports.
  """
  absent = [u for u in gold if u not in reports]
  if absent:
    raise EvalError(f"{len(absent)} gold ids have no report, e.g. "
                    f"{absent[0]}")
  uids = sorted(gold, key=lambda u: int(u[3:]) if u[3:].isdigit() else 0)
  golds = [gold[u] for u in uids]
  native, strict, mapped = [], [], []
  for u in uids:
    sents = report_sentences(reports[u])
    lab = labeler.label_sentences(sents, "chestxray14")
    native.append({n: binarize(lab[n]) for n in R.CHESTXRAY14})
    lab = labeler.label_sentences(sents, "chestxray14",
                                  labeler.VALUES["chexpert"])
    strict.append({n: binarize(lab[n]) for n in R.CHESTXRAY14})
    chex = labeler.label_sentences(sents, "chexpert")
    m = dict.fromkeys(R.CHESTXRAY14, 0)
    for src, dst in CHEXPERT_TO_CHESTXRAY14.items():
      for d in (dst if isinstance(dst, tuple) else (dst,)):
        m[d] = binarize(chex[src])
    mapped.append(m)
  mapped_names = sorted({d for v in CHEXPERT_TO_CHESTXRAY14.values()
                         for d in (v if isinstance(v, tuple) else (v,))},
                        key=R.CHESTXRAY14.index)
  t_native = count(native, golds, R.CHESTXRAY14)
  t_strict = count(strict, golds, R.CHESTXRAY14)
  t_mapped = count(mapped, golds, mapped_names)
  return {"reports": len(uids), "min_positives": min_positives,
          "chestxray14": t_native,
          "macro_f1": macro_f1(t_native, min_positives),
          "chestxray14_chexpert_values": t_strict,
          "macro_f1_chexpert_values": macro_f1(t_strict, min_positives),
          "chexpert_mapped": t_mapped,
          "macro_f1_chexpert_mapped": macro_f1(t_mapped, min_positives)}


def cue_table(reports: Mapping[str, iu_xml.IUReport],
              gold: Mapping[str, Mapping[str, int]]
              ) -> dict[str, tuple[int, int]]:
  """Certainty rule -> (mentions, of them in a gold-positive report).

  The rule is `negex.Decision.rule` ("" = no cue: positive), over every
  ChestX-ray14 mention in the gold's reports.
  """
  out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
  for uid, labels in gold.items():
    for sentence in report_sentences(reports[uid]):
      for m in labeler.mentions(sentence, "chestxray14"):
        out[m.decision.rule or "(none)"][0] += 1
        out[m.decision.rule or "(none)"][1] += labels[m.label]
  return {k: tuple(v) for k, v in sorted(out.items())}


def format_cues(table: Mapping[str, tuple[int, int]]) -> str:
  """Markdown table of `cue_table`'s result."""
  lines = ["| certainty rule | mentions | of a gold-positive finding |",
           "|---|---|---|"]
  lines += [f"| {rule} | {n} | {p} ({p / n:.0%}) |"
            for rule, (n, p) in table.items()]
  return "\n".join(lines)


def _row(name: str, c: Counts, min_positives: int) -> str:
  def f(x):
    return "—" if math.isnan(x) else f"{x:.3f}"
  mark = "" if c.tp + c.fn >= min_positives else " *"
  return (f"| {name}{mark} | {f(c.precision)} | {f(c.recall)} | {f(c.f1)} | "
          f"{c.tp + c.fn} | {c.tp} | {c.fp} | {c.fn} |")


def format_markdown(result: Mapping) -> str:
  """Markdown tables of `evaluate`'s result."""
  k = result["min_positives"]
  head = ["| label | precision | recall | F1 | positives | TP | FP | FN |",
          "|---|---|---|---|---|---|---|---|"]
  lines = [f"{result['reports']} reports; macro-F1 over labels with >= {k} "
           f"positives (* = fewer, not in the mean): "
           f"**{result['macro_f1']:.3f}**", ""] + head
  lines += [_row(n, c, k) for n, c in result["chestxray14"].items()]
  lines += ["", "Same mentions, CheXpert's certainty values (possible = -1, "
            "counted positive): macro-F1 "
            f"**{result['macro_f1_chexpert_values']:.3f}**", ""] + head
  lines += [_row(n, c, k) for n, c in
            result["chestxray14_chexpert_values"].items()]
  lines += ["", "CheXpert-space labels mapped to ChestX-ray14 "
            f"(`CHEXPERT_TO_CHESTXRAY14`): macro-F1 "
            f"**{result['macro_f1_chexpert_mapped']:.3f}**", ""] + head
  lines += [_row(n, c, k) for n, c in result["chexpert_mapped"].items()]
  return "\n".join(lines)


def to_json(result: Mapping) -> dict:
  """A JSON-serialisable copy of `evaluate`'s result."""
  def table(t):
    return {n: {"precision": c.precision, "recall": c.recall, "f1": c.f1,
                "positives": c.tp + c.fn, "tp": c.tp, "fp": c.fp,
                "fn": c.fn} for n, c in t.items()}
  out = {k: table(v) if isinstance(v, dict) and k != "cues" else v
         for k, v in result.items()}
  if "cues" in result:
    out["cues"] = {r: {"mentions": n, "gold_positive": p}
                   for r, (n, p) in result["cues"].items()}
  return out


def load_reports(path: str) -> dict[str, iu_xml.IUReport]:
  """uid -> report of an Open-i archive.

  Raises:
    EvalError: the archive is missing or unreadable.
  """
  if not os.path.isfile(path):
    raise EvalError(f"{path}: file not found")
  try:
    return {r.uid: r for r in iu_xml.iter_reports(path, {})}
  except (OSError, EOFError) as e:
    raise EvalError(f"{path}: cannot read ({e})") from None


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("reports_tgz", None, "NLMCXR_reports.tgz.",
                      flag_values=fl)
  flags.DEFINE_string("gold_csv", None, "NegBio-style Open-i gold labels.",
                      flag_values=fl)
  flags.DEFINE_integer("min_positives", 20, "Labels in the macro mean need "
                       "this many gold positives.", flag_values=fl)
  flags.DEFINE_string("output_dir", None, "Write labeler_openi.{json,md} "
                      "here.", flag_values=fl)
  flags.DEFINE_bool("cues", False, "Also tabulate the certainty rules.",
                    flag_values=fl)
  try:
    fl(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not fl.reports_tgz or not fl.gold_csv:
    print("error: --reports_tgz and --gold_csv are required", file=sys.stderr)
    return 2
  try:
    reports, gold = load_reports(fl.reports_tgz), read_gold(fl.gold_csv)
    result = evaluate(reports, gold, fl.min_positives)
  except EvalError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  md = format_markdown(result)
  if fl.cues:
    result["cues"] = cue_table(reports, gold)
    md += "\n\n" + format_cues(result["cues"])
  print(md)
  if fl.output_dir:
    from bench import report  # pylint: disable=g-import-not-at-top
    report.write_pair(fl.output_dir, "labeler_openi", to_json(result), md)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
