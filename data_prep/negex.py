"""NegEx / ConText-style certainty of one mention in a report sentence.

Our own implementation of the published idea (Chapman et al. 2001, NegEx;
Harkema et al. 2009, ConText): trigger phrases before or after a mention
change its certainty when the mention lies in the trigger's scope. Here:

* A sentence is lower-cased beforehand (`labeler.preprocess`). Pseudo
  triggers ("no change", "not only", "gram negative") are blanked first so
  they never act as triggers.
* Scope is the clause: terminators (but, however, although, which, ;, :, ...)
  end it, and a comma ends it unless the comma separates items of a list
  ("no effusion, pneumothorax, or consolidation"; "heart size, mediastinal
  contour, and pulmonary vascularity are normal"). A negation before the
  mention also stops at a finite verb in between ("no effusion is seen and
  there is ...").
* Decision order, first match wins: possibility cues containing a
  negation word ("cannot exclude", "not excluded") -> possible; negation
  -> negative; possibility ("may represent", "question of", or a
  sentence-wide "in the appropriate clinical setting") -> possible;
  probability ("probable", "likely", "X versus Y") -> probable; an
  asserted reading ("consistent with") or a hedged cause after the mention
  ("consolidation may represent atelectasis") -> positive under a rule of
  its own; else positive.

The cue tables are in `negex_cues.py`; `classify` returns which cue
decided, so each table can be measured (`labeler_eval --cues`).
"""

import dataclasses
import functools
import re
from typing import Sequence

from data_prep import negex_cues as C

POSITIVE = "positive"
PROBABLE = "probable"
POSSIBLE = "possible"
NEGATIVE = "negative"
CERTAINTIES = (POSITIVE, PROBABLE, POSSIBLE, NEGATIVE)

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_CONJ = re.compile(r"\b(?:and|or|nor)\b")


@dataclasses.dataclass(frozen=True)
class Decision:
  """The certainty of a mention and the cue that decided it."""
  certainty: str
  rule: str = ""  # the cue table, e.g. "pre_negation"; "" when positive
  cue: str = ""   # the trigger text as matched


def alternation(patterns: Sequence[str]) -> re.Pattern:
  """One regex of phrase patterns, each anchored at word boundaries."""
  pats = sorted(patterns, key=len, reverse=True)
  return re.compile(r"(?<![a-z0-9])(?:" + "|".join(pats) + r")(?![a-z0-9])")


@functools.lru_cache(maxsize=None)
def _tables() -> dict[str, re.Pattern]:
  return {name: alternation(getattr(C, name.upper())) for name in (
      "pseudo", "terminators", "post_terminators", "verbs",
      "finite_verbs", "item_modifiers", "pre_possible_neg",
      "post_possible_neg", "pre_negation", "post_negation", "pre_possible",
      "post_possible", "post_attribution", "pre_probable", "post_probable",
      "pre_assertion", "sentence_possible")}


def _blank(text: str, pattern: re.Pattern) -> str:
  """Replaces every match by spaces (offsets stay valid)."""
  return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _words(text: str) -> int:
  return len(_WORD.findall(text))


def _is_list_item(text: str, max_words: int = 6) -> bool:
  """A short stretch without a finite verb: one item of a list."""
  return _words(text) <= max_words and not _tables()["verbs"].search(text)


def clause(s: str, start: int, end: int) -> tuple[str, str]:
  """The text before and after s[start:end] inside its clause."""
  t = _tables()
  before, after = s[:start], s[end:]
  cuts = list(t["terminators"].finditer(before))
  if cuts:
    before = before[cuts[-1].end():]
  for name in ("terminators", "post_terminators"):
    cut = t[name].search(after)
    if cut:
      after = after[:cut.start()]
  return before, after


def _list_continues(after: str) -> bool:
  """Whether a conjunction follows within the list items after a mention."""
  for seg in after.split(","):
    if _CONJ.search(seg):
      return True
    if not _is_list_item(seg):
      return False
  return False


def left_scope(before: str, after: str) -> str:
  """The end of `before` a preceding trigger can reach across list commas.

  A comma is crossed backwards when the stretch after it is a list item and
  either the list has a conjunction ("no A, B, or C") or the item does not
  open like a new finding, so "no pneumothorax, mild cardiomegaly" keeps the
  cardiomegaly while "no consolidation, effusion, pneumothorax" does not.
  """
  t = _tables()
  segs = before.split(",")
  i = len(segs) - 1
  conj = _list_continues(after)
  while i > 0 and _is_list_item(segs[i]):
    conj = conj or bool(_CONJ.search(segs[i]))
    if not conj and (_words(segs[i]) > 4 or t["item_modifiers"].search(
        segs[i])):
      break
    i -= 1
  return ",".join(segs[i:])


def right_scope(after: str) -> str:
  """The start of `after` a following trigger can reach across list commas.

  "Heart size, mediastinal contour, and vascularity are normal": the
  mention is directly followed by a comma, the next stretches are list
  items, and a later stretch holds the conjunction (and the predicate).
  """
  segs = after.split(",")
  if len(segs) == 1 or segs[0].strip():
    return segs[0]
  for j in range(1, len(segs)):
    if _CONJ.search(segs[j]):
      return ",".join(segs[:j + 1])
    if not _is_list_item(segs[j], 4):
      break
  return segs[0]


def _pre(pattern: re.Pattern, scope: str, *, verb_stops: bool,
         max_words: int) -> re.Match | None:
  """The last trigger in `scope` whose reach covers the scope's end."""
  t = _tables()
  for m in reversed(list(pattern.finditer(scope))):
    gap = scope[m.end():]
    if verb_stops and t["finite_verbs"].search(gap):
      continue
    if _words(gap.split(",")[-1]) > max_words:
      continue
    return m
  return None


def _post(pattern: re.Pattern, scope: str, max_words: int
          ) -> re.Match | None:
  """The first trigger in `scope` with only a subject-like gap before it."""
  m = pattern.search(scope)
  if m is None:
    return None
  gap = scope[:m.start()]
  if _words(gap) > max_words or _tables()["verbs"].search(gap):
    return None
  return m


def classify(s: str, start: int, end: int) -> Decision:
  """The certainty of the mention s[start:end] (s already preprocessed)."""
  t = _tables()
  s = _blank(s, t["pseudo"])
  before, after = clause(s, start, end)
  pre = left_scope(before, after)
  post = right_scope(after)
  possible = _pre(t["pre_possible"], pre, verb_stops=False, max_words=12)
  probable = _pre(t["pre_probable"], pre, verb_stops=False, max_words=12)
  if possible and probable and probable.start() <= possible.start() < (
      probable.end()):
    possible = None  # "most suggestive of" is the probable reading
  checks = (
      (POSSIBLE, "pre_possible_neg", _pre(t["pre_possible_neg"], pre,
                                           verb_stops=False, max_words=10)),
      (POSSIBLE, "post_possible_neg", _post(t["post_possible_neg"], post,
                                            12)),
      (NEGATIVE, "pre_negation", _pre(t["pre_negation"], pre,
                                      verb_stops=True, max_words=10)),
      (NEGATIVE, "post_negation", _post(t["post_negation"], post, 14)),
      (POSSIBLE, "pre_possible", possible),
      (POSSIBLE, "post_possible", _post(t["post_possible"], post, 3)),
      (POSSIBLE, "sentence_possible", t["sentence_possible"].search(s)),
      (PROBABLE, "pre_probable", probable),
      (PROBABLE, "post_probable", _post(t["post_probable"], post, 3)),
      (POSITIVE, "pre_assertion", _pre(t["pre_assertion"], pre,
                                       verb_stops=False, max_words=12)),
      (POSITIVE, "post_attribution", _post(t["post_attribution"], post, 3)),
  )
  for certainty, rule, m in checks:
    if m is not None:
      return Decision(certainty, rule, m.group(0).strip())
  return Decision(POSITIVE)
