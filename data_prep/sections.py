"""Report sectioning identical to the official MIMIC-CXR section files.

Our own implementation of the behaviour of MIT-LCP's `txt/section_parser.py`
and `txt/create_section_files.py` (DATA_FORMATS.md A1.4), which produced
`mimic_cxr_sectioned.csv` and the conclusions the CheXpert / NegBio labels
were made from:

1. A header is a newline, one space, then upper-case letters, spaces and
   ( ) / , - characters (so further spaces may lead: "\\n  FINDINGS:"),
   then a colon and one whitespace character.
2. No header: the whole text is one section, `full report`. Otherwise the
   text before the first header's name is the `preamble`, and each
   section runs from its header to the next one, which is searched for
   only from the first newline after the header's end (a header-like
   string later on the header's own line does not start a section).
3. Names are lower-cased and stripped (inner spaces are kept), then
   normalised: an exact-name table of variants and misspellings
   (`NAME_TABLE`), else the first of impression / findings / history /
   comparison / addendum the name contains, else `findings` if it contains
   a view or anatomy phrase ("pa and lateral", "chest", ...), else the
   name itself.
4. Empty (whitespace-only) `impression` and `findings` sections are
   dropped; no other section is.
5. With neither left, the last section is split at the literal "\\n \\n":
   its first piece stays, the rest, joined again with "\\n \\n", becomes
   `last_paragraph` (its offset is where the first piece ends).
6. Selection takes the *last* section of each name, empty or not, stripped.
   The conclusion is the first of impression > findings > last_paragraph >
   comparison that is present (even if empty); "" when none is.
7. Per-study rules (`section_rules.py`, on by default): a fixed character
   span, or the last section of a named kind, is the conclusion.

Texts are read as Python's text mode reads them ("\\r\\n" and "\\r" become
"\\n") before anything else, so spans count characters as the official
scripts did.
"""

import dataclasses
import re
from typing import Mapping

from data_prep import section_rules

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
_UNDERSCORES = re.compile(r"_{4,}")
_PARAGRAPH = "\n \n"

# Exact name (lower-cased, stripped) -> normalised name.
NAME_TABLE = {
    # impression
    "impression": "impression", "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression", "impresson": "impression",
    "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression",
    "impresion": "impression", "imperssion": "impression",
    "mpression": "impression", "impession": "impression",
    "ndication": "impression",
    # findings
    "findings": "findings", "finding": "findings", "findins": "findings",
    "findindgs": "findings", "findgings": "findings", "findngs": "findings",
    "findnings": "findings", "finidngs": "findings",
    "chest, two views": "findings", "reference findings": "findings",
    # comparison
    "comparison": "comparison", "comparisons": "comparison",
    "reference exam": "comparison", "comparison exam": "comparison",
    "comparison film": "comparison", "comparision": "comparison",
    "comparsion": "comparison", "comparrison": "comparison",
    "comparisions": "comparison",
    # indication
    "indication": "indication", "reason for examination": "indication",
    "reason for exam": "indication", "clinical indication": "indication",
    "idication": "indication",
    # history
    "history": "history", "clinical history": "history",
    "clinical information": "history", "patient history": "history",
    "pfi": "history",
    # examination, technique
    "examination": "examination", "exam": "examination",
    "type of examination": "examination", "technique": "technique",
    # others
    "preamble": "preamble", "notification": "notification",
    "recommendation(s)": "recommendations",
    "recommendations": "recommendations",
    "recommendation": "recommendations", "addendum": "addendum",
    "date": "date", "comment": "comment", "wet read": "wet read",
    "wetread": "wet read",
}
_CONTAINS = ("impression", "findings", "history", "comparison", "addendum")
_VIEW_PHRASES = re.compile("|".join(re.escape(p) for p in (
    "chest", "portable", "pa and lateral", "lateral and pa", "ap and lateral",
    "lateral and ap", "frontal and", "two views", "frontal view", "pa view",
    "ap view", "one view", "lateral view", "bone window", "frontal upright",
    "frontal semi-upright", "ribs", "pa and lat")))
PRIORITY = ("impression", "findings", "last_paragraph", "comparison")


def normalize_name(header: str) -> str:
  """Normalised section name of a raw header name (without its colon)."""
  name = header.lower().strip()
  if name in NAME_TABLE:
    return NAME_TABLE[name]
  for key in _CONTAINS:
    if key in name:
      return key
  return "findings" if _VIEW_PHRASES.search(name) else name


def read_text(raw: str) -> str:
  """The text as Python's text mode reads a file: universal newlines."""
  return raw.replace("\r\n", "\n").replace("\r", "\n")


def parse_sections(text: str) -> tuple[list[str], list[str], list[int]]:
  """Splits a report into sections (rules 1-5 of the module docstring).

  Args:
    text: the report, newlines already universal (`read_text`).

  Returns:
    (section texts, normalised names, start offsets), in document order.
  """
  m = _HEADER.search(text)
  if m is None:
    texts, names, starts = [text], ["full report"], [0]
  else:
    texts, names, starts = [text[:m.start(1)]], ["preamble"], [0]
    while m is not None:
      body = m.end()
      newline = text.find("\n", body)
      nxt = _HEADER.search(text, newline if newline >= 0 else body)
      texts.append(text[body:nxt.start() if nxt else len(text)])
      names.append(normalize_name(m.group(1)))
      starts.append(body)
      m = nxt
  keep = [i for i, (t, n) in enumerate(zip(texts, names))
          if n not in ("impression", "findings") or t.strip()]
  texts = [texts[i] for i in keep]
  names = [names[i] for i in keep]
  starts = [starts[i] for i in keep]
  if ("impression" not in names and "findings" not in names and
      _PARAGRAPH in texts[-1]):
    first, rest = texts[-1].split(_PARAGRAPH, 1)
    texts[-1] = first
    texts.append(rest)
    names.append("last_paragraph")
    starts.append(starts[-1] + len(first))
  return texts, names, starts


@dataclasses.dataclass(frozen=True)
class Selection:
  """The official selection of one report, stripped but not cleaned.

  `sections` maps each of `PRIORITY` to its last section's text, or None
  when the report has none (the official `mimic_cxr_sectioned.csv` row);
  it is None for a study with a per-study rule, which that file omits.
  `conclusion` is the text of the official `mimic_cxr_sections.csv`.
  """
  conclusion: str
  sections: dict[str, str | None] | None
  rule: str  # "", "section:<name>" or "span"


def _last(texts: list[str], names: list[str], name: str) -> str | None:
  for t, n in zip(reversed(texts), reversed(names)):
    if n == name:
      return t.strip()
  return None


def official_selection(text: str, study_id: str | None = None,
                       official_rules: bool = True,
                       overrides: Mapping | None = None) -> Selection:
  """The official section files' content for one report (rules 6-7).

  Args:
    text: the raw report (newlines made universal here).
    study_id: e.g. "s50414267"; selects a per-study rule.
    official_rules: apply the dataset's 54 per-study rules.
    overrides: more rules of your own, study id -> section name or
      (start, end); they win over the official ones.
  """
  text = read_text(text)
  rules: dict = {}
  if official_rules:
    rules.update(section_rules.SPANS)
    rules.update(section_rules.SECTION_NAMES)
  rules.update(overrides or {})
  rule = rules.get(study_id) if study_id else None
  if rule is not None and not isinstance(rule, str):
    start, end = rule
    return Selection(text[start:end], None, "span")
  texts, names, _ = parse_sections(text)
  if isinstance(rule, str):
    picked = _last(texts, names, rule)
    return Selection(picked or "", None, f"section:{rule}")
  found = {n: _last(texts, names, n) for n in PRIORITY}
  conclusion = next((found[n] for n in PRIORITY if found[n] is not None), "")
  return Selection(conclusion, found, "")


def clean(text: str) -> str:
  """Undoes hard wrapping: whitespace collapsed, underscore rules removed."""
  return " ".join(_UNDERSCORES.sub(" ", text).split())


@dataclasses.dataclass(frozen=True)
class ReportSections:
  """The sections the pipelines use, cleaned ("" when absent).

  For a study with a per-study rule the rule's text is the impression; a
  span rule leaves the other three empty, a section rule keeps them.
  """
  findings: str
  impression: str
  last_paragraph: str
  comparison: str
  conclusion: str = ""
  rule: str = ""

  @property
  def chosen(self) -> str:
    """The official conclusion: impression > findings > last_paragraph > ..."""
    return self.conclusion


def extract_sections(text: str, study_id: str | None = None,
                     overrides: Mapping | None = None,
                     official_rules: bool = True) -> ReportSections:
  """The official selection of a report, cleaned (see `official_selection`).

  Args:
    text: the raw report.
    study_id: e.g. "s50414267"; selects a per-study rule.
    overrides: more per-study rules (a section name or a (start, end) span).
    official_rules: apply the dataset's per-study rules (the default).
  """
  sel = official_selection(text, study_id, official_rules, overrides)
  conclusion = clean(sel.conclusion)
  if sel.sections is None:
    parsed = {}
    if sel.rule != "span":
      texts, names, _ = parse_sections(read_text(text))
      parsed = {n: _last(texts, names, n) for n in PRIORITY}
    found = {n: clean(parsed.get(n) or "") for n in PRIORITY}
    found["impression"] = conclusion
  else:
    found = {n: clean(v or "") for n, v in sel.sections.items()}
  return ReportSections(**found, conclusion=conclusion, rule=sel.rule)
