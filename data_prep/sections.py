"""Report sectioning with the behaviour of the official MIMIC-CXR parser.

An own implementation of what MIT-LCP's `section_parser.py` and
`create_section_files.py` do (DATA_FORMATS.md A1.4):

1. A header is a newline, exactly one space, then upper-case letters, spaces
   and ( ) / , - characters, then a colon and whitespace.
2. No header: the whole text is one section, `full report`.
3. Text before the first header is the `preamble`; each header's section
   runs to the next header, which is searched for only from the first
   newline after the current header (so a header-like string mid-line does
   not start a section).
4. Names are normalised: a table of frequent variants and misspellings, then
   "contains impression / findings / history / comparison / addendum", then
   view or anatomy titles ("PA AND LATERAL CHEST:") become `findings`.
5. Empty `impression` / `findings` sections are dropped.
6. With neither left, the last section is split at its first blank line and
   the rest becomes `last_paragraph`.

The chosen text follows the official priority impression > findings >
last_paragraph > comparison (the last occurrence of each). The official
repository also hard-codes 54 per-study rules; they are not reproduced here:
pass your own through `overrides` (study id -> section name or (start, end)).
"""

import dataclasses
import re
from typing import Mapping

_HEADER = re.compile(r"\n ([A-Z()/,-][A-Z ()/,-]*):\s")
_BLANK_LINE = re.compile(r"\n\s*\n")
_UNDERSCORES = re.compile(r"_{4,}")

# Exact lower-cased header -> normalised name. Our own table, built from the
# documented behaviour: frequent variants plus common misspellings.
_NAMES = {
    "impression": "impression", "impressions": "impression",
    "conclusion": "impression", "conclusions": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression", "impression/findings": "impression",
    "impresson": "impression", "imprression": "impression",
    "impressiom": "impression", "impresion": "impression",
    "impession": "impression", "impressio": "impression",
    "summary": "impression", "opinion": "impression",
    "findings": "findings", "finding": "findings", "findngs": "findings",
    "findins": "findings", "fidnings": "findings", "findigns": "findings",
    "findinds": "findings", "chest, two views": "findings",
    "comparison": "comparison", "comparisons": "comparison",
    "comparison exam": "comparison", "comparison study": "comparison",
    "reference exam": "comparison", "comparision": "comparison",
    "comparsion": "comparison", "comparisson": "comparison",
    "prior": "comparison", "prior studies": "comparison",
    "history": "history", "clinical history": "history",
    "patient history": "history", "clinical information": "history",
    "pfi": "history", "medical history": "history", "hx": "history",
    "indication": "indication", "indications": "indication",
    "reason for exam": "indication", "reason for examination": "indication",
    "clinical indication": "indication", "reason for study": "indication",
    "exam": "examination", "examination": "examination",
    "examinations": "examination", "type of examination": "examination",
    "study": "examination",
    "technique": "technique", "techniques": "technique",
    "procedure": "technique",
    "wet read": "wet read", "wetread": "wet read", "wet reads": "wet read",
    "addendum": "addendum", "recommendation": "recommendations",
    "recommendations": "recommendations",
    "recommendation(s)": "recommendations",
    "notification": "notification", "notifications": "notification",
}
_CONTAINS = ("impression", "findings", "history", "comparison", "addendum")
_VIEW_PHRASES = (
    "chest", "portable", "pa and lateral", "lateral and pa", "ap and lateral",
    "frontal and", "two views", "frontal view", "pa view", "ap view",
    "one view", "lateral view", "bone window", "frontal upright",
    "frontal semi-upright", "ribs", "pa and lat")
PRIORITY = ("impression", "findings", "last_paragraph", "comparison")


def normalize_name(header: str) -> str:
  """Normalised section name of a raw header (without its colon)."""
  name = " ".join(header.lower().split())
  if name in _NAMES:
    return _NAMES[name]
  for key in _CONTAINS:
    if key in name:
      return key
  if any(p in name for p in _VIEW_PHRASES):
    return "findings"
  return name


def parse_sections(text: str) -> tuple[list[str], list[str], list[int]]:
  """Splits a report into sections.

  Args:
    text: the raw report.

  Returns:
    (section texts, normalised names, start offsets), in document order.
  """
  first = _HEADER.search(text)
  if first is None:
    return [text], ["full report"], [0]
  texts, names, starts = [text[:first.start()]], ["preamble"], [0]
  m = first
  while m is not None:
    body_start = m.end()
    # Search the next header only from the first newline after this header.
    nl = text.find("\n", m.end() - 1)
    nxt = _HEADER.search(text, nl if nl >= 0 else len(text))
    end = nxt.start() if nxt else len(text)
    texts.append(text[body_start:end])
    names.append(normalize_name(m.group(1)))
    starts.append(body_start)
    m = nxt
  keep = [i for i, (t, n) in enumerate(zip(texts, names))
          if not (n in ("impression", "findings") and not t.strip())]
  texts = [texts[i] for i in keep]
  names = [names[i] for i in keep]
  starts = [starts[i] for i in keep]
  if "impression" not in names and "findings" not in names:
    # Leading blank lines (a header followed by an empty line) are not the
    # paragraph break the rule is about.
    lead = len(texts[-1]) - len(texts[-1].lstrip())
    last = texts[-1][lead:]
    blank = _BLANK_LINE.search(last)
    if blank is not None:
      texts[-1] = texts[-1][:lead + blank.start()]
      texts.append(last[blank.end():])
      names.append("last_paragraph")
      starts.append(starts[-1] + lead + blank.end())
  return texts, names, starts


def clean(text: str) -> str:
  """Undoes the hard wrapping: whitespace collapsed, underscore rules removed."""
  return " ".join(_UNDERSCORES.sub(" ", text).split())


@dataclasses.dataclass(frozen=True)
class ReportSections:
  """The sections the pipelines use (cleaned; "" when absent)."""
  findings: str
  impression: str
  last_paragraph: str
  comparison: str

  @property
  def chosen(self) -> str:
    """impression > findings > last_paragraph > comparison."""
    for name in PRIORITY:
      if getattr(self, name):
        return getattr(self, name)
    return ""


def extract_sections(text: str, study_id: str | None = None,
                     overrides: Mapping | None = None) -> ReportSections:
  """The last findings / impression / last_paragraph / comparison sections.

  Args:
    text: the raw report.
    study_id: e.g. "s50414267"; used to look up `overrides`.
    overrides: optional per-study rules: a section name (its last section is
      used as the impression) or a (start, end) character span.
  """
  texts, names, _ = parse_sections(text)
  found = {n: "" for n in PRIORITY}
  for t, n in zip(texts, names):
    if n in found and t.strip():
      found[n] = clean(t)
  rule = (overrides or {}).get(study_id) if study_id else None
  if isinstance(rule, str):
    picked = [clean(t) for t, n in zip(texts, names) if n == rule]
    found = dict(found, impression=picked[-1] if picked else "")
  elif rule is not None:
    start, end = rule
    found = dict.fromkeys(PRIORITY, "")
    found["impression"] = clean(text[start:end])
  return ReportSections(**found)
