"""Report text -> tokens with sentence ids, and the methods' text augmentations.

Runs inside tf.data through `tf.numpy_function`. Randomness comes from a
NumPy generator seeded by the example's stateless seed (run seed, example
index), so it is reproducible and resumable like the image augmentations.

- `none`: all sentences in order (findings then impression).
- `sentence_swap` (LoVT): the number of swaps ~ Geometric(p=0.4) on {0, 1,
  ...} (mean 1.5); each swaps two random sentence positions (possibly the
  same one); no sentence is dropped.
- `one_sentence` (ConVIRT, CLIP*): one random sentence per report.

`text_section` picks the sentences of `both` sections (the stored
`sentences` field), `findings` or `impression` only. The stored field is
findings sentences followed by impression sentences, so the split point is
the number of sentences the converter's splitter finds in `findings`.
"""

from typing import Sequence

import numpy as np

TEXT_AUGS = ("none", "sentence_swap", "one_sentence")
TEXT_SECTIONS = ("both", "findings", "impression")


def augment_sentences(sentences: Sequence[str], kind: str,
                      rng: np.random.Generator) -> list[str]:
  """Applies a text augmentation to a report's sentence list.

  Args:
    sentences: the report's sentences in order.
    kind: one of `TEXT_AUGS`.
    rng: the example's generator.

  Returns:
    The augmented sentence list (a new list).
  """
  if kind not in TEXT_AUGS:
    raise ValueError(f"unknown text augmentation {kind!r}; expected one of "
                     f"{TEXT_AUGS}")
  sents = list(sentences)
  if kind == "none" or len(sents) <= 1:
    return sents
  if kind == "one_sentence":
    return [sents[int(rng.integers(len(sents)))]]
  n_swaps = int(rng.geometric(0.4)) - 1  # numpy's geometric starts at 1
  for _ in range(n_swaps):
    i, j = rng.integers(len(sents), size=2)
    sents[i], sents[j] = sents[j], sents[i]
  return sents


def section_sentences(sentences: Sequence[str], findings: str,
                      section: str) -> list[str]:
  """The sentences of one report section.

  Args:
    sentences: the stored sentences (findings first, then impression).
    findings: the stored findings text.
    section: one of `TEXT_SECTIONS`.

  Returns:
    The selected sentences.
  """
  if section not in TEXT_SECTIONS:
    raise ValueError(f"unknown text section {section!r}; expected one of "
                     f"{TEXT_SECTIONS}")
  sents = list(sentences)
  if section == "both":
    return sents
  # The converter's own splitter, so the count matches what it stored.
  from data_prep import sentences as splitter  # pylint: disable=g-import-not-at-top
  k = min(len(splitter.split_sentences(findings)), len(sents))
  return sents[:k] if section == "findings" else sents[k:]


def _str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


class ReportEncoder:
  """Callable for tf.numpy_function: (sentences, findings, seed) -> ids.

  Returns (ids int32 [max_tokens], sentence_ids int32 [max_tokens]) of the
  tokenizer's `encode_report` (LoVT's joint encoding, `[CLS] s1 .. [SEP]`,
  cut at sentence boundaries) after the section choice and augmentation.
  """

  def __init__(self, tokenizer, max_tokens: int, max_sentences: int,
               text_aug: str = "none", text_section: str = "both"):
    if text_aug not in TEXT_AUGS:
      raise ValueError(f"unknown text augmentation {text_aug!r}; expected "
                       f"one of {TEXT_AUGS}")
    if text_section not in TEXT_SECTIONS:
      raise ValueError(f"unknown text section {text_section!r}; expected "
                       f"one of {TEXT_SECTIONS}")
    self.tokenizer = tokenizer
    self.max_tokens = max_tokens
    self.max_sentences = max_sentences
    self.text_aug = text_aug
    self.text_section = text_section

  def sentences(self, sentences: Sequence, findings, seed: Sequence[int]
                ) -> list[str]:
    """The (section-selected, augmented) sentences of one example."""
    sents = section_sentences([_str(s) for s in sentences], _str(findings),
                              self.text_section)
    rng = np.random.default_rng([int(x) & 0xFFFFFFFF for x in seed])
    return augment_sentences(sents, self.text_aug, rng)

  def __call__(self, sentences: np.ndarray, findings: np.ndarray,
               seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    enc = self.tokenizer.encode_report(
        self.sentences(sentences, findings, seed), self.max_tokens,
        self.max_sentences)
    return enc.ids, enc.sentence_ids
