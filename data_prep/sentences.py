"""A rule-based sentence splitter for radiology reports (no model downloads).

Splits at ., ! or ? followed by whitespace, except after abbreviations
("Dr.", "e.g.", "approx.", "vs.", "No. 2"), inside decimals ("1.5 cm") and
after bare list markers ("1."), and also at numbered-list items and blank
lines. Wrapped lines are joined first. Empty and punctuation-only pieces are
dropped; list markers are removed from the sentences.
"""

import re

# Words that end with a period without ending the sentence.
ABBREVIATIONS = frozenset({
    "dr", "mr", "mrs", "ms", "prof", "st", "vs", "e.g", "i.e", "eg", "ie",
    "approx", "appr", "etc", "cf", "fig", "figs", "incl", "resp", "a.m", "p.m",
    "am", "pm", "jr", "sr", "mt", "no", "nos", "ca", "pt", "pts", "hx", "dx",
    "sx", "ant", "post", "lat", "sup", "inf", "ext", "int", "max", "min",
    "mod", "sev", "w", "y.o", "yo", "esp",
})
_BREAK = re.compile(r"(?<=[.!?])\s+")
_LIST_MARKER = re.compile(r"^\(?\d{1,2}[.)]\s*")
_BLANK = re.compile(r"\n\s*\n")
# A numbered item at the start of a line begins a new sentence.
_LINE_ITEM = re.compile(r"\n\s*(?=\(?\d{1,2}[.)]\s)")
_HAS_WORD = re.compile(r"[A-Za-z0-9_]")


def _ends_with_abbreviation(chunk: str, following: str) -> bool:
  m = re.search(r"([A-Za-z][A-Za-z.]*)\.$", chunk)
  if not m:
    return False
  word = m.group(1).lower()
  if word == "no":
    # "No." is an abbreviation only before a number ("No. 2").
    return bool(re.match(r"\d", following))
  if word in ABBREVIATIONS:
    return True
  # Single capital initials ("J. Smith") and dotted acronyms ("U.S.").
  return bool(re.fullmatch(r"[a-z]", word) and chunk[-2].isupper()) or (
      "." in word and len(word) <= 5)


def split_sentences(text: str) -> list[str]:
  """Splits report text into sentences.

  Args:
    text: a section or a whole report; may contain hard line wraps.

  Returns:
    Sentences with whitespace collapsed and list markers removed.
  """
  if not text:
    return []
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  out: list[str] = []
  for block in _BLANK.split(text):
    for item in _LINE_ITEM.split(block):
      item = " ".join(item.split())
      chunks = [c for c in _BREAK.split(item) if _HAS_WORD.search(c)]
      merged: list[str] = []
      for chunk in chunks:
        if merged and (_LIST_MARKER.fullmatch(merged[-1]) or
                       _ends_with_abbreviation(merged[-1], chunk) or
                       not re.match(r"[A-Z0-9_(\"'\[]|___", chunk)):
          merged[-1] = f"{merged[-1]} {chunk}"
        else:
          merged.append(chunk)
      for s in merged:
        s = _LIST_MARKER.sub("", s).strip()
        if _HAS_WORD.search(s):
          out.append(s)
  return out
