"""Sectioning: every rule of the official MIMIC-CXR section files.

Crafted texts with the expected output worked out from the documented
behaviour of MIT-LCP's `section_parser.py` + `create_section_files.py`.
`test_matches_official_parser` also compares with the official parser
itself on MIMIC-style texts built from real Open-i report sections when
you point JOINTCXR_OFFICIAL_SECTION_PARSER at your copy of
`txt/section_parser.py` (it is not vendored here).
"""

import importlib.util
import os
import random

import pytest

from data_prep import section_rules
from data_prep import sections

REPORT = (
    "                                 FINAL REPORT\n"
    " EXAMINATION:  CHEST (PA AND LAT)\n \n"
    " INDICATION:  ___ year old woman with cough\n \n"
    " COMPARISON:  ___\n \n"
    " FINDINGS: \n \n Small left pleural effusion.  No pneumothorax.\n"
    " Heart size is normal.\n \n"
    " IMPRESSION: \n \n Small left pleural effusion.\n")


def test_standard_report():
  texts, names, starts = sections.parse_sections(REPORT)
  assert names == ["preamble", "examination", "indication", "comparison",
                   "findings", "impression"]
  # The preamble runs to the first header's name (its "\n " included).
  assert texts[0] == REPORT[:REPORT.index("EXAMINATION")]
  for t, s in zip(texts[1:], starts[1:]):
    assert REPORT[s:s + len(t)] == t
  r = sections.extract_sections(REPORT)
  assert r.impression == "Small left pleural effusion."
  assert r.findings == ("Small left pleural effusion. No pneumothorax. Heart "
                        "size is normal.")
  assert r.comparison == "___" and r.last_paragraph == ""
  assert r.chosen == r.conclusion == r.impression


def test_header_may_have_more_leading_spaces():
  text = "x\n  FINDINGS: clear lungs\n IMPRESSION: normal\n"
  texts, names, _ = sections.parse_sections(text)
  assert names == ["preamble", "findings", "impression"]
  assert texts[0] == "x\n " and texts[1] == "clear lungs"
  # Lower case, no colon, or no space after the newline: no header.
  for t in ("x\n Impression: b", "x\n IMPRESSION b", "x\nIMPRESSION: b"):
    assert sections.parse_sections(t)[1] == ["full report"]


def test_next_header_searched_from_the_line_after_the_header():
  # The whitespace after "IMPRESSION:" is the newline, so " FOO:" begins
  # the header's own (first) line and is text; "\n BAZ:" is a header.
  text = "x\n IMPRESSION:\n FOO: bar\n BAZ: q\n"
  texts, names, _ = sections.parse_sections(text)
  assert names == ["preamble", "impression", "baz"]
  assert texts[1] == " FOO: bar"
  text = "x\n FINDINGS: a NOTE: not a header\n IMPRESSION: b\n"
  assert sections.parse_sections(text)[1] == ["preamble", "findings",
                                              "impression"]


@pytest.mark.parametrize("header,expected", [
    # Misspellings and variants in the official table.
    ("MPRESSION", "impression"), ("IMORESSION", "impression"),
    ("IMPRESSOIN", "impression"), ("IMPRSSION", "impression"),
    ("IMPERSSION", "impression"), ("NDICATION", "impression"),
    ("FINDINGS/ IMPRESSION", "impression"), ("CONCLUSION", "impression"),
    ("REFERENCE FINDINGS", "findings"), ("FINIDNGS", "findings"),
    ("FINDNINGS", "findings"), ("FINDGINGS", "findings"),
    ("CHEST, TWO VIEWS", "findings"), ("IDICATION", "indication"),
    ("COMPARRISON", "comparison"), ("COMPARISIONS", "comparison"),
    ("COMPARISON FILM", "comparison"), ("REFERENCE EXAM", "comparison"),
    ("WET READ", "wet read"), ("WETREAD", "wet read"),
    ("RECOMMENDATION(S)", "recommendations"), ("PFI", "history"),
    ("REASON FOR EXAM", "indication"), ("TYPE OF EXAMINATION", "examination"),
    # Names outside the table stay as they are (stripped, lower-cased).
    ("SUMMARY", "summary"), ("OPINION", "opinion"), ("PRIOR", "prior"),
    ("PRIOR STUDIES", "prior studies"), ("HX", "hx"),
    ("PROCEDURE", "procedure"), ("REASON FOR STUDY", "reason for study"),
    ("WET  READ", "wet  read"), ("  NOTE ", "note"),
    # Containing a main name, then a view phrase.
    ("PRELIMINARY IMPRESSION", "impression"), ("IMPRESSIONS", "impression"),
    ("IMPRESSION AND FINDINGS", "impression"),
    ("HISTORY AND COMPARISON", "history"), ("FINAL ADDENDUM", "addendum"),
    ("PA AND LATERAL CHEST", "findings"), ("BONE WINDOW VIEWS", "findings"),
    ("PORTABLE AP", "findings"), ("FOO BAR", "foo bar"),
])
def test_name_normalisation(header, expected):
  assert sections.normalize_name(header) == expected


def test_empty_findings_and_impression_dropped_others_kept():
  text = ("x\n FINDINGS: \n \n FINDINGS: real text.\n IMPRESSION:\n \n"
          " COMPARISON: ___\n COMPARISON: \n")
  _, names, _ = sections.parse_sections(text)
  assert names == ["preamble", "findings", "comparison", "comparison"]
  sel = sections.official_selection(text)
  # The last comparison is taken even though it is empty.
  assert sel.sections == {"impression": None, "findings": "real text.",
                          "last_paragraph": None, "comparison": ""}
  assert sel.conclusion == "real text."


def test_last_paragraph_splits_on_the_literal_separator():
  text = ("x\n EXAMINATION: chest\n \n The lungs are clear.\n \n No "
          "effusion.\n")
  texts, names, starts = sections.parse_sections(text)
  assert names[-2:] == ["examination", "last_paragraph"]
  assert texts[-2] == "chest"
  # The rest is joined again with "\n \n"; the offset is where the first
  # piece ends.
  assert texts[-1] == " The lungs are clear.\n \n No effusion.\n"
  assert starts[-1] == text.index("chest") + len("chest")
  sel = sections.official_selection(text)
  assert sel.conclusion == "The lungs are clear.\n \n No effusion."
  r = sections.extract_sections(text)
  assert r.last_paragraph == r.chosen == "The lungs are clear. No effusion."


def test_last_paragraph_leading_blank_line_and_other_blank_lines():
  # "COMPARISON: " takes the space; the body starts with the separator, so
  # the first piece is empty and the whole rest is the last paragraph.
  text = "x\n COMPARISON: \n \n None.\n \n Lungs clear.\n"
  sel = sections.official_selection(text)
  assert sel.sections["comparison"] == ""
  assert sel.sections["last_paragraph"] == "None.\n \n Lungs clear."
  # "\n\n" and "\n  \n" are not the separator.
  for sep in ("\n\n", "\n  \n"):
    text = f"x\n EXAMINATION: chest{sep} Lungs clear.\n"
    assert "last_paragraph" not in sections.parse_sections(text)[1]
  # No header at all: the full report is split the same way.
  texts, names, _ = sections.parse_sections("Title\n \n Lungs clear.")
  assert names == ["full report", "last_paragraph"]
  assert texts == ["Title", " Lungs clear."]


def test_conclusion_is_the_first_present_section_even_if_empty():
  text = "x\n COMPARISON: ___\n EXAMINATION: chest\n \n"
  sel = sections.official_selection(text)
  assert sel.sections["last_paragraph"] == ""
  assert sel.sections["comparison"] == "___"
  assert sel.conclusion == ""
  assert sections.official_selection("x\n NOTE: a\n").conclusion == ""


def test_selection_takes_the_last_section_of_each_name():
  text = ("x\n IMPRESSION: first.\n FINDINGS: f.\n IMPRESSION: second.\n"
          " ADDENDUM: later.\n")
  sel = sections.official_selection(text)
  assert sel.sections["impression"] == "second."
  assert sel.conclusion == "second."


def test_universal_newlines():
  crlf = REPORT.replace("\n", "\r\n")
  assert sections.official_selection(crlf) == sections.official_selection(
      REPORT)
  assert sections.official_selection(REPORT.replace("\n", "\r")) == (
      sections.official_selection(REPORT))


def test_rule_tables_are_the_documented_counts():
  assert len(section_rules.SECTION_NAMES) == 23
  assert len(section_rules.SPANS) == 31
  assert sum(v == (0, 0) for v in section_rules.SPANS.values()) == 8
  assert not set(section_rules.SECTION_NAMES) & set(section_rules.SPANS)
  for sid in list(section_rules.SECTION_NAMES) + list(section_rules.SPANS):
    assert len(sid) == 9 and sid.startswith("s5") and sid[1:].isdigit()


def test_per_study_section_rule():
  sid = "s50913680"  # conclusion in RECOMMENDATION(S)
  assert section_rules.SECTION_NAMES[sid] == "recommendations"
  text = ("x\n FINDINGS: f.\n IMPRESSION: i.\n RECOMMENDATION(S):  "
          "Follow-up CT.\n")
  sel = sections.official_selection(text, sid)
  assert (sel.conclusion, sel.sections, sel.rule) == (
      "Follow-up CT.", None, "section:recommendations")
  r = sections.extract_sections(text, sid)
  assert (r.impression, r.findings, r.chosen) == ("Follow-up CT.", "f.",
                                                  "Follow-up CT.")
  # Switched off, or another study: the ordinary selection.
  assert sections.extract_sections(text, sid,
                                   official_rules=False).impression == "i."
  assert sections.extract_sections(text, "s50000001").impression == "i."


def test_per_study_span_rules():
  sid = "s50525523"
  start, end = section_rules.SPANS[sid]
  text = "".join(chr(ord("a") + i % 26) for i in range(400))
  text = text[:start] + "\n" + text[start + 1:]
  sel = sections.official_selection(text, sid)
  assert sel.conclusion == text[start:end] and sel.rule == "span"
  r = sections.extract_sections(text, sid)
  assert r.impression == sections.clean(text[start:end])
  assert (r.findings, r.last_paragraph, r.comparison) == ("", "", "")
  empty = "s58235663"  # no findings at all: (0, 0)
  assert sections.extract_sections(REPORT, empty).chosen == ""
  assert sections.extract_sections(REPORT, empty,
                                   official_rules=False).chosen != ""
  # Your own rules win over the official ones.
  r = sections.extract_sections(REPORT, empty, {empty: "comparison"})
  assert r.impression == "___"


def test_addendum_on_top():
  text = (" FINAL REPORT\n ADDENDUM:\n \n Called ___.\n " + "_" * 78 + "\n"
          + REPORT)
  r = sections.extract_sections(text)
  assert r.impression == "Small left pleural effusion."


def _official(path: str):
  spec = importlib.util.spec_from_file_location("official_sp", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _last(texts, names, name):
  i = len(names) - 1 - names[::-1].index(name)
  return texts[i].strip()


def _mimic_style(rng: random.Random, report) -> str:
  """A MIMIC-like text from real Open-i sections, with header variants."""
  heads = list(sections.NAME_TABLE) + ["PA AND LATERAL CHEST", "NOTE",
                                       "SUMMARY", "WET  READ", "FOO BAR"]
  parts = [" " * 33 + "FINAL REPORT"]
  for name, body in (("EXAMINATION", "CHEST (PA AND LAT)"),
                     ("INDICATION", report.indication),
                     ("COMPARISON", report.comparison),
                     ("FINDINGS", report.findings),
                     ("IMPRESSION", report.impression)):
    if rng.random() < 0.15:
      continue
    if rng.random() < 0.3:
      name = rng.choice(heads).upper()
    words = body.split() if rng.random() > 0.1 else []
    lines = [" ".join(words[i:i + 10]) for i in range(0, len(words), 10)]
    if len(lines) > 1 and rng.random() < 0.3:
      lines.insert(rng.randrange(1, len(lines)), "")
    parts.append(rng.choice(["\n \n", "\n\n", "\n"]) +
                 rng.choice([" ", " ", "  "]) + f"{name}:" +
                 rng.choice([" ", "  ", "\n"]) + "\n ".join(lines))
  return "".join(parts) + rng.choice(["\n", "\n \n", ""])


@pytest.mark.shared_data
def test_matches_official_parser(shared_data):
  path = os.environ.get("JOINTCXR_OFFICIAL_SECTION_PARSER")
  if not path or not os.path.isfile(path):
    pytest.skip("set JOINTCXR_OFFICIAL_SECTION_PARSER to section_parser.py")
  from data_prep import iu_xml  # pylint: disable=g-import-not-at-top
  official = _official(path)
  reports = list(iu_xml.iter_reports(
      str(shared_data / "iu_xray" / "NLMCXR_reports.tgz"), {}))
  rng = random.Random(0)
  for _ in range(3000):
    text = _mimic_style(rng, rng.choice(reports))
    texts, names, starts = official.section_text(text)
    assert sections.parse_sections(text) == (texts, names, starts), text
    found = {n: _last(texts, names, n) if n in names else None
             for n in sections.PRIORITY}
    sel = sections.official_selection(text)
    assert sel.sections == found, text
    assert sel.conclusion == next(
        (found[n] for n in sections.PRIORITY if found[n] is not None), "")
