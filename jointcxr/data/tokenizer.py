"""Run-time tokenizers with sentence boundaries kept (SentencePiece, WordPiece).

Both expose one interface: `vocab_size`, `pad_id`, `unk_id`, `cls_id`,
`sep_id`, `mask_id`, `encode`, `decode` and `encode_report`, the LoVT "joint"
encoding of a report: sentences tokenised without specials, concatenated,
truncated at a sentence boundary so `[CLS] s1 s2 ... [SEP]` fits `max_len`,
with the sentence index of every token kept for sentence- and word-level
losses. WordPiece reads a local BERT `vocab.txt` (e.g. Bio_ClinicalBERT's),
so imported HF BERT weights get their own tokenisation; nothing is
downloaded.
"""

import dataclasses
import json
import os
import re
import unicodedata
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class EncodedReport:
  ids: np.ndarray           # int32 [max_len]
  sentence_ids: np.ndarray  # int32 [max_len], -1 for CLS / SEP / padding
  num_sentences: int


class _Base:
  """Shared report encoding."""
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def encode_report(self, sentences: Sequence[str], max_len: int,
                    max_sentences: int) -> EncodedReport:
    """`[CLS] s1 ... sk [SEP]` padded to max_len, cut at sentence boundaries.

    A first sentence longer than the budget is truncated itself; later
    sentences that do not fit are dropped whole. Sentences that tokenise to
    nothing are skipped (indices count kept sentences only).
    """
    if max_len < 3:
      raise ValueError(f"max_len must be >= 3, got {max_len}")
    ids = [self.cls_id]
    sids = [-1]
    budget = max_len - 2
    kept = 0
    for s in sentences:
      if kept >= max_sentences:
        break
      toks = self.encode(s)
      if not toks:
        continue
      if len(toks) > budget:
        if kept:
          break
        toks = toks[:budget]
      ids += toks
      sids += [kept] * len(toks)
      budget -= len(toks)
      kept += 1
    ids.append(self.sep_id)
    sids.append(-1)
    pad = max_len - len(ids)
    return EncodedReport(
        np.asarray(ids + [self.pad_id] * pad, np.int32),
        np.asarray(sids + [-1] * pad, np.int32), kept)

  def encode_reports(self, reports: Sequence[Sequence[str]], max_len: int,
                     max_sentences: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch form: (ids [N, max_len], sentence_ids [N, max_len])."""
    enc = [self.encode_report(r, max_len, max_sentences) for r in reports]
    return (np.stack([e.ids for e in enc]) if enc else np.zeros(
        (0, max_len), np.int32),
            np.stack([e.sentence_ids for e in enc]) if enc else np.zeros(
                (0, max_len), np.int32))


class SentencePieceTokenizer(_Base):
  """A model trained by `data_prep.tokenizer` (fixed special ids 0..4)."""

  def __init__(self, model: str | bytes):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if isinstance(model, str):
      with open(model, "rb") as f:
        model = f.read()
    self.model_bytes = bytes(model)
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
    self.vocab_size = self._sp.get_piece_size()
    self.pad_id, self.unk_id = self._sp.pad_id(), self._sp.unk_id()
    self.cls_id = self._sp.piece_to_id("[CLS]")
    self.sep_id = self._sp.piece_to_id("[SEP]")
    self.mask_id = self._sp.piece_to_id("[MASK]")
    if min(self.pad_id, self.cls_id, self.sep_id, self.mask_id) < 0 or (
        self.unk_id in (self.cls_id, self.sep_id, self.mask_id)):
      raise ValueError("SentencePiece model lacks <pad>/[CLS]/[SEP]/[MASK]; "
                       "train it with data_prep.tokenizer")

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def decode(self, ids: Sequence[int]) -> str:
    specials = {self.pad_id, self.cls_id, self.sep_id}
    return self._sp.decode([int(i) for i in ids if int(i) not in specials])


def _is_punct(ch: str) -> bool:
  """BERT's punctuation: ASCII symbols and every Unicode P* character."""
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
  """A CJK ideograph (the CJK Unified / Compatibility Ideographs blocks)."""
  cp = ord(ch)
  return any(a <= cp <= b for a, b in _CJK_RANGES)


_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
               (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
               (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _clean(text: str) -> str:
  """NUL, U+FFFD and other (C*) characters dropped, whitespace -> " "."""
  out = []
  for ch in text:
    if ch in "\t\n\r":
      out.append(" ")
    elif ch == "\ufffd" or unicodedata.category(ch).startswith("C"):
      continue  # control before whitespace: "\x0b" and "\x85" are dropped
    else:
      out.append(" " if ch.isspace() else ch)
  return "".join(out)


def vocab_is_cased(vocab: Sequence[str]) -> bool:
  """Whether a BERT vocabulary keeps case: an uncased one has no capitals.

  Tokens in brackets ("[CLS]", "[unused0]") are ignored.
  """
  return any(t != t.lower() for t in vocab
             if not (t.startswith("[") and t.endswith("]")))


def _config_lower_case(vocab_txt_path: str) -> bool | None:
  """`do_lower_case` of a tokenizer_config.json beside vocab.txt, if any."""
  path = os.path.join(os.path.dirname(vocab_txt_path), "tokenizer_config.json")
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f).get("do_lower_case")
  except (OSError, ValueError, AttributeError):
    return None
  return value if isinstance(value, bool) else None


class WordPieceTokenizer(_Base):
  """BERT basic + WordPiece tokenisation from a local `vocab.txt`.

  The same ids as Hugging Face's BERT tokenizer (`BertTokenizerFast`, the
  `tokenizers` library) with the same vocabulary, which
  tests/test_wordpiece.py checks: text cleaned (NUL, U+FFFD and
  control/format characters dropped, whitespace made a space), a space
  around every CJK ideograph, and for an uncased vocabulary accents
  stripped (NFD, combining marks dropped) and each character lower-cased
  on its own (no final-sigma rule, like the Rust tokenizer); then split at
  whitespace and around each punctuation character, then greedy
  longest-match WordPiece with "##" continuations, `[UNK]` for a word with
  an unknown piece or over `max_chars_per_word` characters. The five
  special tokens written literally in the text are kept whole.

  `lower_case=None` takes `do_lower_case` from a Hugging Face
  `tokenizer_config.json` beside the vocabulary when there is one (so a
  downloaded model directory tokenises as Hugging Face loads it), else
  reads the casing from the vocabulary itself (`vocab_is_cased`):
  Bio_ClinicalBERT's vocabulary is cased, BERT-base-uncased's is not.
  """

  def __init__(self, vocab_txt_path: str, lower_case: bool | None = None,
               max_chars_per_word: int = 100):
    with open(vocab_txt_path, encoding="utf-8") as f:
      # Trailing whitespace (a "\r" of a Windows file) is not part of a token.
      tokens = [line.rstrip() for line in f]
    self.vocab = {t: i for i, t in enumerate(tokens)}
    self.inv = {i: t for t, i in self.vocab.items()}
    if lower_case is None:
      lower_case = _config_lower_case(vocab_txt_path)
    self.lower_case = (not vocab_is_cased(tokens) if lower_case is None else
                       lower_case)
    self.max_chars = max_chars_per_word
    missing = [t for t in _SPECIALS if t not in self.vocab]
    if missing:
      raise ValueError(f"{vocab_txt_path}: vocab lacks {missing}")
    self.vocab_size = len(tokens)
    (self.pad_id, self.unk_id, self.cls_id, self.sep_id,
     self.mask_id) = (self.vocab[t] for t in _SPECIALS)
    self._special = re.compile("(" + "|".join(re.escape(t) for t in
                                              _SPECIALS) + ")")

  def _basic(self, text: str) -> list[str]:
    """Cleaning, CJK spacing, casing and accents, whitespace + punctuation."""
    text = "".join(f" {c} " if _is_cjk(c) else c for c in _clean(text))
    if self.lower_case:
      text = "".join(c for c in unicodedata.normalize("NFD", text)
                     if unicodedata.category(c) != "Mn")
      text = "".join(c.lower() for c in text)
    out = []
    for word in text.split():
      cur = ""
      for ch in word:
        if _is_punct(ch):
          if cur:
            out.append(cur)
            cur = ""
          out.append(ch)
        else:
          cur += ch
      if cur:
        out.append(cur)
    return out

  def encode(self, text: str) -> list[int]:
    """Token ids of a text, without [CLS] / [SEP]."""
    ids = []
    for i, part in enumerate(self._special.split(text)):
      if i % 2:
        ids.append(self.vocab[part])
      else:
        ids += self._encode_plain(part)
    return ids

  def _encode_plain(self, text: str) -> list[int]:
    ids = []
    for word in self._basic(text):
      if len(word) > self.max_chars:
        ids.append(self.unk_id)
        continue
      start, pieces = 0, []
      while start < len(word):
        end = len(word)
        piece = None
        while start < end:
          sub = word[start:end] if start == 0 else "##" + word[start:end]
          if sub in self.vocab:
            piece = self.vocab[sub]
            break
          end -= 1
        if piece is None:
          pieces = [self.unk_id]
          break
        pieces.append(piece)
        start = end
      ids += pieces
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    specials = {self.pad_id, self.cls_id, self.sep_id}
    toks = [self.inv.get(int(i), "[UNK]") for i in ids if int(i) not in
            specials]
    return " ".join(toks).replace(" ##", "")


# Where a training run keeps the SentencePiece model it trained itself.
RUN_TOKENIZER = "tokenizer.model"


def run_tokenizer_path(config, workdir: str) -> str:
  """The tokenizer file of a run: `config.input.tokenizer` if set, else the
  one the trainer wrote into the workdir (`RUN_TOKENIZER`)."""
  return config.input.tokenizer or os.path.join(workdir, RUN_TOKENIZER)


def load_tokenizer(path: str) -> _Base:
  """A tokenizer from a `.model` (SentencePiece) or `vocab.txt` file."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"tokenizer file {path} does not exist")
  if path.endswith(".txt"):
    return WordPieceTokenizer(path)
  return SentencePieceTokenizer(path)
