"""Rule-based report labeler: mentions, then NegEx-style certainty.

The CheXpert-labeler / NegBio idea, own implementation: regex mention
tables per observation (`labeler_rules.py`) and trigger phrases with
clause scopes (`negex.py`, `negex_cues.py`) in place of a dependency
parser. Each mention gets a certainty (positive / probable / possible /
negative); the label space maps it to a value:

* `chexpert` (CheXpert's 14 observations): positive 1, probable and
  possible -1 (uncertain), negative 0. "Stable cardiac silhouette" and a
  hedged cause ("opacity may be due to overlying soft tissue") are
  uncertain, and a positive/uncertain "CHF"/"heart failure" also makes
  Cardiomegaly uncertain, as the CheXpert labeler does.
* `chestxray14` (ChestX-ray14's 14 findings, mentions that name the
  finding, not the anatomy): positive ("consistent with pneumonia") 1,
  probable ("probable pneumonia", "atelectasis versus scarring") -1,
  possible ("may represent", "cannot exclude", "differential includes")
  and negative 0. A finding raised only as a possibility is not labelled
  positive: the convention of the Open-i expert gold, measured by
  `labeler_eval` (README: "Report text as MIMIC users know it").

Per report: several mentions aggregate as positive > uncertain > negative;
CheXpert's "No Finding" is 1 iff nothing but Support Devices is positive or
uncertain (blank otherwise). Not mentioned is NaN.

    python -m data_prep.labeler --input=reports.csv --output=labels.csv \
        [--label_space=chexpert|chestxray14] [--truth=labels.csv]

Input: a header-less one-column CSV of report texts (the CheXpert labeler's
format), or a CSV with a `Reports`/`text`/`report` column. Output: `Reports`
plus one column per observation with 1.0 / 0.0 / -1.0 / blank.
`python -m data_prep.labeler_eval` measures it on real Open-i reports.
"""

import csv
import dataclasses
import functools
import math
import re
import sys
from typing import Iterable, Iterator, Mapping, Sequence

from data_prep import labeler_rules as R
from data_prep import negex
from data_prep import sentences as sentences_lib

NAN = float("nan")
LABEL_SPACES = ("chexpert", "chestxray14")
# Certainty -> label value, per label space.
VALUES = {
    "chexpert": {negex.POSITIVE: 1.0, negex.PROBABLE: -1.0,
                 negex.POSSIBLE: -1.0, negex.NEGATIVE: 0.0},
    "chestxray14": {negex.POSITIVE: 1.0, negex.PROBABLE: -1.0,
                    negex.POSSIBLE: 0.0, negex.NEGATIVE: 0.0},
}


@dataclasses.dataclass(frozen=True)
class Mention:
  """One mention of an observation in a preprocessed sentence."""
  label: str
  start: int
  end: int
  decision: negex.Decision
  value: float


def _alternation(patterns: Sequence[str]) -> re.Pattern:
  # Mentions are anchored at a word start only: "atelecta\w*", "nodul".
  pats = sorted(patterns, key=len, reverse=True)
  return re.compile(r"(?<![a-z])(?:" + "|".join(
      f"(?:{p})" for p in pats) + r")")


def _join(patterns: Sequence[str]) -> list[re.Pattern]:
  # Several patterns with the same group name need one regex each.
  return [_alternation([p]) for p in patterns]


@functools.lru_cache(maxsize=None)
def _tables(label_space: str):
  if label_space == "chexpert":
    labels = [n for n in R.CHEXPERT if n != "No Finding"]
    mentions, unmentions = R.MENTIONS, R.UNMENTIONS
  elif label_space == "chestxray14":
    labels = list(R.CHESTXRAY14)
    mentions, unmentions = R.CHESTXRAY14_MENTIONS, R.CHESTXRAY14_UNMENTIONS
  else:
    raise ValueError(f"unknown label space {label_space!r}; expected one of "
                     f"{LABEL_SPACES}")
  return [(name, _join(mentions[name]),
           _alternation(unmentions[name]) if name in unmentions else None)
          for name in labels]


_STABLE = re.compile(R.STABLE)
_OTHER = _alternation(R.OTHER_ABNORMALITIES)


def preprocess(sentence: str) -> str:
  """Lower-case and normalise a sentence as the CheXpert loader does."""
  s = sentence.lower().replace("and/or", "or")
  s = re.sub(r"(?<=[a-z])/(?=[a-z])", " or ", s)
  s = re.sub(r"\.{2,}", ".", s)
  s = re.sub(r"([,.])(?=[a-z])", r"\1 ", s)
  return " ".join(s.split())


def _spans(patterns: Sequence[re.Pattern], text: str
           ) -> list[tuple[int, int]]:
  """Match spans (group `m` where a pattern has one), overlaps merged."""
  found = []
  for pattern in patterns:
    for m in pattern.finditer(text):
      g = "m" if "m" in pattern.groupindex and m.group("m") else 0
      found.append((m.start(g), m.end(g), m.start(), m.end()))
  found.sort()
  out: list[list[int]] = []
  for a, b, fa, fb in found:
    if out and fa <= out[-1][3] + 1:
      out[-1][1] = max(out[-1][1], b)
      out[-1][3] = max(out[-1][3], fb)
    else:
      out.append([a, b, fa, fb])
  return [(a, b) for a, b, _, _ in out]


def classify(s: str, start: int, end: int, label: str,
             label_space: str = "chexpert") -> float:
  """1 / 0 / -1 for the mention s[start:end] of `label`."""
  return _value(s, start, end, label, label_space)[1]


def _value(s: str, start: int, end: int, label: str, label_space: str,
           values: Mapping[str, float] | None = None
           ) -> tuple[negex.Decision, float]:
  d = negex.classify(s, start, end)
  value = (values or VALUES[label_space])[d.certainty]
  if label_space == "chexpert" and d.rule == "post_attribution":
    value = -1.0  # CheXpert: "opacity may be due to overlying soft tissue"
  if (label_space == "chexpert" and value == 1.0 and
      label in R.STABLE_LABELS and "cardiomegaly" not in s[start:end]):
    before, after = negex.clause(s, start, end)
    if _STABLE.search(before) or _STABLE.search(after):
      d, value = negex.Decision(negex.POSSIBLE, "stable", "stable"), -1.0
  return d, value


def mentions(sentence: str, label_space: str = "chexpert",
             values: Mapping[str, float] | None = None
             ) -> Iterator[Mention]:
  """Every mention in one raw sentence with its certainty and value.

  Args:
    sentence: one raw sentence.
    label_space: "chexpert" or "chestxray14".
    values: certainty -> value, in place of the space's `VALUES`.
  """
  s = preprocess(sentence)
  for name, mention, unmention in _tables(label_space):
    blocked = _spans([unmention], s) if unmention is not None else []
    for a, b in _spans(mention, s):
      if any(a < y and x < b for x, y in blocked):
        continue
      d, value = _value(s, a, b, name, label_space, values)
      yield Mention(name, a, b, d, value)


def _aggregate(values: list[float]) -> float:
  if not values:
    return NAN
  if 1.0 in values:
    return 1.0
  return -1.0 if -1.0 in values else 0.0


def label_sentences(sents: Iterable[str], label_space: str = "chexpert",
                    values: Mapping[str, float] | None = None
                    ) -> dict[str, float]:
  """Labels of a report given as sentences (`values` as in `mentions`)."""
  tables = _tables(label_space)
  found: dict[str, list[float]] = {name: [] for name, _, _ in tables}
  other: list[float] = []
  for raw in sents:
    s = preprocess(raw)
    for m in mentions(raw, label_space, values):
      found[m.label].append(m.value)
      if (m.label == "Edema" and label_space == "chexpert" and
          re.search(r"chf|heart failure", s[m.start:m.end]) and
          m.value != 0.0):
        found["Cardiomegaly"].append(-1.0)
    if label_space == "chexpert":
      for a, b in _spans([_OTHER], s):
        other.append(classify(s, a, b, "other"))
  out = {name: _aggregate(v) for name, v in found.items()}
  if label_space == "chexpert":
    abnormal = any(v in (1.0, -1.0) for k, v in out.items()
                   if k != "Support Devices") or any(
                       v in (1.0, -1.0) for v in other)
    out = {"No Finding": NAN if abnormal else 1.0, **out}
  return out


def label_report(text: str, label_space: str = "chexpert") -> dict[str, float]:
  """Labels of one report text (1.0 / 0.0 / -1.0 / NaN = not mentioned)."""
  return label_sentences(sentences_lib.split_sentences(text or ""),
                         label_space)


def evaluate(pred: Sequence[Mapping[str, float]],
             truth: Sequence[Mapping[str, float]],
             labels: Sequence[str]) -> dict[str, dict[str, float]]:
  """Per-label precision/recall of positives and exact agreement of states.

  Missing (NaN) is a state of its own for the agreement.
  """
  def state(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
  out = {}
  for name in labels:
    p = [state(x.get(name)) for x in pred]
    t = [state(x.get(name)) for x in truth]
    tp = sum(a == 1.0 and b == 1.0 for a, b in zip(p, t))
    npred = sum(a == 1.0 for a in p)
    ntrue = sum(b == 1.0 for b in t)
    out[name] = {
        "precision": tp / npred if npred else float("nan"),
        "recall": tp / ntrue if ntrue else float("nan"),
        "agreement": sum(a == b for a, b in zip(p, t)) / max(len(p), 1),
        "support": ntrue}
  return out


def format_table(table: Mapping[str, Mapping[str, float]]) -> str:
  """Markdown table of `evaluate` output."""
  lines = ["| label | precision | recall | agreement | positives |",
           "|---|---|---|---|---|"]
  for name, m in table.items():
    lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | "
                 f"{m['agreement']:.3f} | {m['support']} |")
  return "\n".join(lines)


def read_reports(path: str) -> list[str]:
  """Report texts of a header-less one-column CSV or one with a text column."""
  with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
    rows = list(csv.reader(f))
  if not rows:
    return []
  head = [h.strip().lower() for h in rows[0]]
  for key in ("reports", "report", "text"):
    if key in head:
      i = head.index(key)
      return [r[i] if i < len(r) else "" for r in rows[1:]]
  return [r[0] if r else "" for r in rows]


def _fmt(v: float) -> str:
  return "" if math.isnan(v) else f"{v:.1f}"


def read_labels(path: str) -> list[dict[str, float]]:
  """A labels CSV (ours, the CheXpert labeler's or MIMIC's) as dicts."""
  import gzip  # pylint: disable=g-import-not-at-top
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
    rows = list(csv.DictReader(f))
  return [{k: (float(v) if v not in ("", None) else NAN) for k, v in r.items()
           if k in R.CHEXPERT or k in R.CHESTXRAY14} for r in rows]


def main(argv: Sequence[str]) -> int:
  """CLI entry point (absl flags)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("input", None, "Reports CSV.", flag_values=fl)
  flags.DEFINE_string("output", None, "Labels CSV to write.", flag_values=fl)
  flags.DEFINE_enum("label_space", "chexpert", LABEL_SPACES, "Label space.",
                    flag_values=fl)
  flags.DEFINE_string("truth", None, "Optional labels CSV to compare with.",
                      flag_values=fl)
  try:
    fl(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not fl.input or not fl.output:
    print("error: --input and --output are required", file=sys.stderr)
    return 2
  try:
    texts = read_reports(fl.input)
  except OSError as e:
    print(f"error: cannot read {fl.input}: {e.strerror}", file=sys.stderr)
    return 1
  names = list(R.CHEXPERT if fl.label_space == "chexpert" else
               R.CHESTXRAY14)
  preds = [label_report(t, fl.label_space) for t in texts]
  with open(fl.output, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["Reports"] + names)
    for t, p in zip(texts, preds):
      w.writerow([t] + [_fmt(p[n]) for n in names])
  print(f"labelled {len(texts)} reports -> {fl.output}")
  if fl.truth:
    truth = read_labels(fl.truth)
    if len(truth) != len(preds):
      print(f"error: {fl.truth} has {len(truth)} rows, {fl.input} has "
            f"{len(preds)}", file=sys.stderr)
      return 1
    print(format_table(evaluate(preds, truth, names)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
