"""The benchmark batch, built identically in the JAX and PyTorch processes.

Pure NumPy (both environments have it, nothing else in common), so the two
frameworks time the same shapes, masks and sentence layout. The layout
mimics the input pipeline's batches (jointcxr/data/pipeline.py): images
normalised to about [-1, 1]; [CLS] at position 0 and [SEP] after the last
token; reports of 60-100% of `tokens` long, split into sentences of 8-16
tokens; `sentence_ids` -1 on [CLS], [SEP] and padding; at most
`max_sentences` sentences (longer reports keep their first ones).
"""

from typing import Any

import numpy as np

FIRST_WORD_ID = 5  # ids 0..4 are special tokens (pad, unk, cls, sep, mask)


def make_batch(*, batch: int, image_size: int, tokens: int, vocab: int,
               max_sentences: int, seed: int = 0) -> dict[str, Any]:
  """A deterministic synthetic batch.

  Args:
    batch: examples B.
    image_size: square image side S.
    tokens: token slots T.
    vocab: vocabulary size (word ids are drawn from [5, vocab)).
    max_sentences: sentence slots of the text tower.
    seed: NumPy seed.

  Returns:
    dict with `image` float32 [B, S, S, 1], `tokens` int32 [B, T],
    `text_mask` bool [B, T], `sentence_ids` int32 [B, T].
  """
  if tokens < 4:
    raise ValueError(f"need at least 4 token slots, got {tokens}")
  rng = np.random.default_rng(seed)
  image = np.clip(rng.normal(0.0, 0.5, (batch, image_size, image_size, 1)),
                  -1.0, 1.0).astype(np.float32)
  ids = np.zeros((batch, tokens), np.int32)
  mask = np.zeros((batch, tokens), bool)
  sids = np.full((batch, tokens), -1, np.int32)
  for b in range(batch):
    n = int(rng.integers(max(3, int(0.6 * tokens)), tokens + 1))
    ids[b, 0], ids[b, n - 1] = 2, 3  # [CLS] ... [SEP]
    ids[b, 1:n - 1] = rng.integers(FIRST_WORD_ID, vocab, n - 2)
    mask[b, :n] = True
    pos, s = 1, 0
    while pos < n - 1 and s < max_sentences:
      length = int(rng.integers(8, 17))
      sids[b, pos:min(pos + length, n - 1)] = s
      pos += length
      s += 1
  return {"image": image, "tokens": ids, "text_mask": mask,
          "sentence_ids": sids}
