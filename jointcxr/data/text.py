"""Report text -> tokens with sentence ids, and the methods' text augmentations.

Runs inside tf.data through `tf.numpy_function`; randomness comes from a
NumPy generator seeded by (run seed, example index), so it is reproducible
and resumable like the image augmentations.

- `none`: all sentences in order (findings then impression).
- `sentence_swap` (LoVT): the number of swaps ~ Geometric(p=0.4) on {0, 1,
  ...} (mean 1.5); each swaps two random sentence positions.
- `one_sentence` (ConVIRT, CLIP*): one random sentence per report.
"""

from typing import Sequence

import numpy as np

TEXT_AUGS = ("none", "sentence_swap", "one_sentence")


def augment_sentences(sentences: Sequence[str], kind: str,
                      rng: np.random.Generator) -> list[str]:
  """Applies a text augmentation to a report's sentence list."""
  sents = list(sentences)
  if kind == "none" or len(sents) <= 1:
    return sents
  if kind == "one_sentence":
    return [sents[int(rng.integers(len(sents)))]]
  if kind == "sentence_swap":
    n_swaps = int(rng.geometric(0.4)) - 1  # numpy's geometric starts at 1
    for _ in range(n_swaps):
      i, j = rng.integers(len(sents), size=2)
      sents[i], sents[j] = sents[j], sents[i]
    return sents
  raise ValueError(f"unknown text augmentation {kind!r}; expected one of "
                   f"{TEXT_AUGS}")


class ReportEncoder:
  """Callable for tf.numpy_function: (sentences, seed) -> (ids, sent_ids)."""

  def __init__(self, tokenizer, max_tokens: int, max_sentences: int,
               text_aug: str = "none"):
    if text_aug not in TEXT_AUGS:
      raise ValueError(f"unknown text augmentation {text_aug!r}; expected "
                       f"one of {TEXT_AUGS}")
    self.tokenizer = tokenizer
    self.max_tokens = max_tokens
    self.max_sentences = max_sentences
    self.text_aug = text_aug

  def __call__(self, sentences: np.ndarray, seed: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    sents = [s.decode("utf-8") if isinstance(s, bytes) else str(s)
             for s in sentences]
    rng = np.random.default_rng([int(x) & 0xFFFFFFFF for x in seed])
    sents = augment_sentences(sents, self.text_aug, rng)
    enc = self.tokenizer.encode_report(sents, self.max_tokens,
                                       self.max_sentences)
    return enc.ids, enc.sentence_ids
