"""Text features by family, fitted on the training split, cached as .npy.

`compute_text` dispatches to the family implementations of
`text_features` and `dan`; `cached_text` wraps it with a cache keyed on
everything that changes the result (family, section, the family's config,
the seed and the data key). Word vectors for `word`, `sentence` and `dan`
are trained on the sentences of *both* sections of the training reports
(or read from `glove_path`), so the findings-vs-impression comparison
changes only the text that is embedded, not the vectors.
"""

import hashlib
import json
import os
from typing import Sequence

import ml_collections as mlc
import numpy as np

from jointcxr.hsu import dan as dan_lib
from jointcxr.hsu import text_features as tf_lib


def _word_vectors(cfg: mlc.ConfigDict, corpus: Sequence[str],
                  splits: Sequence[Sequence[str]], seed: int
                  ) -> tf_lib.WordVectors:
  sents = [s for doc in corpus for s in tf_lib.section_sentences(doc)]
  if cfg.glove_path:
    # Pretrained vectors are independent of our splits, so every word that
    # will be embedded may use them; the rest of the file is not loaded.
    vocab = {t for s in sents for t in s} | {
        t for docs in splits for d in docs for t in tf_lib.tokenize(d)}
    return tf_lib.read_glove(cfg.glove_path, vocab=vocab)
  w = cfg.word
  if not any(sents):
    raise tf_lib.TextFeatureError("word2vec: the training reports have no "
                                  "words")
  return tf_lib.train_word2vec(sents, dim=w.dim, window=w.window,
                               min_count=w.min_count, epochs=w.epochs,
                               sg=w.sg, seed=seed)


def compute_text(family: str, train_docs: Sequence[str],
                 splits: Sequence[Sequence[str]], cfg: mlc.ConfigDict, *,
                 seed: int, word_corpus: Sequence[str] | None = None,
                 train_labels: np.ndarray | None = None
                 ) -> tuple[list[np.ndarray], dict]:
  """Features of one text family for every split (fitted on training docs).

  Args:
    family: one of `text_features.FAMILIES`.
    train_docs: the training studies' section texts (fit).
    splits: section texts of each split to embed (may include the
      training docs themselves).
    cfg: the `text` config block (family sub-blocks, `glove_path`).
    seed: seed of every random choice.
    word_corpus: texts to train word vectors on (default `train_docs`).
    train_labels: [N, 14] labels of `train_docs` (needed by `dan`).

  Returns:
    (one [N_s, D] float32 array per split, stats: empty-document counts
    per split and family-specific numbers).

  Raises:
    TextFeatureError: an unknown family or unusable input.
  """
  stats: dict = {}
  tok = lambda docs: [tf_lib.tokenize(d) for d in docs]
  if family == "tfidf":
    t = cfg.tfidf
    out = tf_lib.tfidf_features(train_docs, splits, dim=t.dim,
                                min_df=t.min_df, max_features=t.max_features,
                                seed=seed)
    stats["empty"] = [int((np.abs(o).sum(1) == 0).sum()) for o in out]
  elif family in ("word", "sentence", "dan"):
    wv = _word_vectors(cfg, word_corpus or train_docs, splits, seed)
    stats["vocab"] = len(wv.words)
    if family == "word":
      res = [tf_lib.mean_word_vectors(tok(s), wv) for s in splits]
      out, stats["empty"] = [r[0] for r in res], [r[1] for r in res]
    elif family == "sentence":
      train_sents = [s for d in train_docs
                     for s in tf_lib.section_sentences(d)]
      sif = tf_lib.fit_sif(train_sents, wv, a=cfg.sentence.sif_a,
                           remove_pc=cfg.sentence.remove_pc)
      res = [sif.documents([tf_lib.section_sentences(d) for d in s])
             for s in splits]
      out, stats["empty"] = [r[0] for r in res], [r[1] for r in res]
    else:
      if train_labels is None:
        raise tf_lib.TextFeatureError("the dan family needs the training "
                                      "labels")
      model, params, st = dan_lib.train_dan(tok(train_docs), train_labels,
                                            wv, cfg.dan, seed)
      stats.update({f"dan_{k}": v for k, v in st.items()})
      out = [dan_lib.dan_features(model, params, tok(s), wv.index,
                                  cfg.dan.max_tokens) for s in splits]
      stats["empty"] = [sum(not any(t in wv.index for t in d)
                            for d in tok(s)) for s in splits]
  elif family == "paragraph":
    p = cfg.paragraph
    out = tf_lib.doc2vec_features(tok(train_docs), [tok(s) for s in splits],
                                  dim=p.dim, dm=p.dm, window=p.window,
                                  min_count=p.min_count, epochs=p.epochs,
                                  seed=seed)
    stats["empty"] = [sum(not d for d in tok(s)) for s in splits]
  else:
    raise tf_lib.TextFeatureError(f"unknown text family {family!r}; "
                                  f"expected one of {tf_lib.FAMILIES}")
  return out, stats


def text_key(family: str, section: str, cfg: mlc.ConfigDict, seed: int,
             data_key: str) -> str:
  """Cache key of one (family, section) feature set."""
  sub = {"tfidf": ["tfidf"], "word": ["word"], "sentence": ["word",
                                                            "sentence"],
         "paragraph": ["paragraph"], "dan": ["word", "dan"]}.get(family, [])
  blob = {k: cfg[k].to_dict() for k in sub}
  if family in ("word", "sentence", "dan") and cfg.glove_path:
    st = os.stat(cfg.glove_path)
    blob["glove"] = [os.path.abspath(cfg.glove_path), st.st_size,
                     st.st_mtime_ns]
  blob.update(family=family, section=section, seed=seed, data=data_key)
  return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()
                        ).hexdigest()[:12]


def cached_text(cache_dir: str, key: str, names: Sequence[str], compute
                ) -> tuple[list[np.ndarray], dict]:
  """Loads `text_<key>_<name>.npy` for every name, or computes and saves.

  Args:
    cache_dir: directory of the cache.
    key: `text_key` value.
    names: one name per split (file suffixes).
    compute: zero-argument callable returning (arrays, stats) like
      `compute_text`.

  Returns:
    (arrays, stats).
  """
  paths = [os.path.join(cache_dir, f"text_{key}_{n}.npy") for n in names]
  meta = os.path.join(cache_dir, f"text_{key}.json")
  if os.path.exists(meta) and all(os.path.exists(p) for p in paths):
    with open(meta) as f:
      return [np.load(p) for p in paths], json.load(f)
  arrays, stats = compute()
  os.makedirs(cache_dir, exist_ok=True)
  for p, a in zip(paths, arrays):
    np.save(p, a)
  with open(meta + ".tmp", "w") as f:
    json.dump(stats, f)
  os.replace(meta + ".tmp", meta)  # written last: the entry is complete
  return arrays, stats
