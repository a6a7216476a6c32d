"""Evaluation embeds reports the way the model was trained on them."""

import ml_collections as mlc
import numpy as np
import pytest

from jointcxr.evaluators import common


class _Tok:
  cls_id, sep_id, pad_id = 2, 3, 0


def test_resolve_text_mode_follows_the_training_text_augmentation():
  one = mlc.ConfigDict({"input": {"text_aug": "one_sentence"}})
  swap = mlc.ConfigDict({"input": {"text_aug": "sentence_swap"}})
  assert common.resolve_text_mode(one) == "sentence_mean"
  assert common.resolve_text_mode(swap) == "report"
  assert common.resolve_text_mode(one, "report") == "report"
  with pytest.raises(ValueError, match="unknown text mode 'x'"):
    common.resolve_text_mode(one, "x")


def test_split_sentences_makes_one_sentence_reports():
  tokens = np.array([[2, 10, 11, 12, 13, 3, 0, 0],
                     [2, 3, 0, 0, 0, 0, 0, 0]], np.int32)
  sids = np.array([[-1, 0, 0, 1, 1, -1, -1, -1],
                   [-1, -1, -1, -1, -1, -1, -1, -1]], np.int32)
  st, ss, owner = common.split_sentences(tokens, sids, _Tok())
  np.testing.assert_array_equal(owner, [0, 0, 1])
  np.testing.assert_array_equal(st[0], [2, 10, 11, 3, 0, 0, 0, 0])
  np.testing.assert_array_equal(st[1], [2, 12, 13, 3, 0, 0, 0, 0])
  np.testing.assert_array_equal(ss[1], [-1, 0, 0, -1, -1, -1, -1, -1])
  # A report without sentences keeps its [CLS] [SEP] row.
  np.testing.assert_array_equal(st[2], [2, 3, 0, 0, 0, 0, 0, 0])


def test_sentence_mean_averages_normalised_sentence_embeddings():
  tokens = np.array([[2, 5, 6, 3], [2, 7, 3, 0]], np.int32)
  sids = np.array([[-1, 0, 1, -1], [-1, 0, -1, -1]], np.int32)
  # A "text encoder" whose embedding is the one-hot of the sentence's
  # token (scaled), so the expected mean is known.
  def enc(variables, tok, mask, sid):
    del variables, mask, sid
    z = np.zeros((len(tok), 8), np.float32)
    z[np.arange(len(tok)), tok[:, 1]] = 3.0
    return z
  out = common._sentence_mean(enc, None, lambda x: x,  # pylint: disable=protected-access
                              {"tokens": tokens, "sentence_ids": sids},
                              _Tok())
  expected = np.zeros((2, 8), np.float32)
  expected[0, [5, 6]] = 1.0
  expected[1, 7] = 1.0
  np.testing.assert_allclose(out, expected)
