"""Hsu et al.'s classic report features: TF-IDF, word, sentence, paragraph.

The paper lists TF-IDF (+PCA), pre-trained GloVe word vectors, "sentence"
and "paragraph" embeddings and a fine-tuned DAN (METHODS.md §1.1); which
sentence/paragraph models were used is not known (§6), so these are our
documented choices. Everything is fitted on the training split only and
then applied to every split:

- `tfidf`: scikit-learn `TfidfVectorizer` (our word tokenizer, sublinear tf,
  `min_df`) reduced with `TruncatedSVD` to `tfidf_dim`. TruncatedSVD is PCA
  without centring, the standard choice for sparse matrices (a dense
  N x vocab matrix would not fit at MIMIC scale); the pipeline centres and
  PCA-reduces every family afterwards anyway.
- `word`: the mean of the report's word vectors (out-of-vocabulary words
  skipped). Vectors come from a local GloVe-format text file
  (`glove_path`: "word v1 ... vD" per line; nothing is downloaded) or from
  gensim word2vec trained on the training split's sentences (all sections)
  with a fixed seed and one worker, so training is deterministic.
- `sentence`: SIF sentence vectors (Arora et al. 2017): each sentence is the
  average of a/(a + p(w)) weighted word vectors (p = unigram frequency in
  the training sentences, a = 1e-3), with the first principal component of
  the training sentence vectors removed; the report vector is the mean over
  the section's sentences (split by `data_prep.sentences`).
- `paragraph`: gensim Doc2Vec (PV-DBOW by default, `dm=1` for PV-DM)
  trained on the training split's section texts; every report, training
  ones included, is embedded with `infer_vector`, so all splits are treated
  alike. gensim seeds each inferred vector from Python's salted `hash`; we
  substitute a CRC32 hash so features are identical across processes.
- `dan`: see `jointcxr.hsu.dan`.

A report whose words are all out of vocabulary gets a zero vector; such
reports are counted and reported (`stats["empty"]`), never dropped.
"""

import contextlib
import dataclasses
import re
import zlib
from typing import Iterator, Sequence

import numpy as np

from data_prep import sentences as sentences_lib

FAMILIES = ("tfidf", "word", "sentence", "paragraph", "dan")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?")


class TextFeatureError(ValueError):
  """Bad text-feature input (e.g. a malformed GloVe file)."""


def tokenize(text: str) -> list[str]:
  """Lower-cased word and number tokens (punctuation dropped)."""
  return _TOKEN.findall(text.lower())


def stable_hash(s: str) -> int:
  """A process-independent string hash (CRC32) for gensim's seeding."""
  return zlib.crc32(s.encode("utf-8"))


@dataclasses.dataclass
class WordVectors:
  """A vocabulary and its vectors (from word2vec or a GloVe file).

  Attributes:
    words: the vocabulary, row order of `vectors`.
    vectors: [V, D] float32.
  """
  words: list[str]
  vectors: np.ndarray

  def __post_init__(self):
    self.index = {w: i for i, w in enumerate(self.words)}

  @property
  def dim(self) -> int:
    return int(self.vectors.shape[1])


def read_glove(path: str, vocab: set[str] | None = None) -> WordVectors:
  """Reads a GloVe-format text file ("word v1 ... vD" per line).

  Args:
    path: local file (never a URL).
    vocab: keep only these words (saves memory on large files); None keeps
      all.

  Returns:
    The word vectors (the first occurrence of a repeated word wins).

  Raises:
    TextFeatureError: a line with a different number of values than the
      first, a value that is not a number, or no vectors at all.
  """
  words, rows, dim = [], [], None
  seen = set()
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      parts = line.rstrip("\n").rstrip().split(" ")
      if not parts or parts == [""]:
        continue
      word, values = parts[0], parts[1:]
      if dim is None:
        dim = len(values)
        if dim == 0:
          raise TextFeatureError(f"{path}:{lineno}: no vector values after "
                                 f"{word!r}")
      if len(values) != dim:
        raise TextFeatureError(f"{path}:{lineno}: expected {dim} values, "
                               f"got {len(values)}")
      if word in seen or (vocab is not None and word not in vocab):
        continue
      try:
        rows.append(np.asarray(values, np.float32))
      except ValueError:
        raise TextFeatureError(f"{path}:{lineno}: non-numeric vector value "
                               f"for {word!r}") from None
      words.append(word)
      seen.add(word)
  if not words:
    raise TextFeatureError(f"{path}: no word vectors read"
                           + (" for the corpus vocabulary" if vocab else ""))
  return WordVectors(words, np.stack(rows))


def train_word2vec(sentences: Sequence[Sequence[str]], *, dim: int,
                   window: int, min_count: int, epochs: int, sg: int,
                   seed: int) -> WordVectors:
  """gensim word2vec on tokenised sentences, deterministic given the seed.

  Args:
    sentences: token lists.
    dim: vector size.
    window: context window.
    min_count: ignore rarer words.
    epochs: passes over the corpus.
    sg: 1 skip-gram, 0 CBOW.
    seed: random seed (one worker thread keeps the result reproducible).

  Returns:
    The trained vectors.
  """
  from gensim.models import Word2Vec  # pylint: disable=g-import-not-at-top
  model = Word2Vec(sentences=[list(s) for s in sentences if s],
                   vector_size=dim, window=window, min_count=min_count,
                   epochs=epochs, sg=sg, seed=seed, workers=1,
                   hashfxn=stable_hash)
  return WordVectors(list(model.wv.index_to_key),
                     np.asarray(model.wv.vectors, np.float32))


def mean_word_vectors(docs: Sequence[Sequence[str]], wv: WordVectors
                      ) -> tuple[np.ndarray, int]:
  """Average in-vocabulary word vectors per document.

  Args:
    docs: token lists.
    wv: word vectors.

  Returns:
    ([N, D] features, number of documents with no known word -> zeros).
  """
  out = np.zeros((len(docs), wv.dim), np.float32)
  empty = 0
  for i, toks in enumerate(docs):
    ids = [wv.index[t] for t in toks if t in wv.index]
    if ids:
      out[i] = wv.vectors[ids].mean(0)
    else:
      empty += 1
  return out, empty


def _sif_vectors(sents: Sequence[Sequence[str]], wv: WordVectors,
                 prob: dict[str, float], a: float) -> np.ndarray:
  out = np.zeros((len(sents), wv.dim), np.float32)
  for i, toks in enumerate(sents):
    known = [t for t in toks if t in wv.index]
    if known:
      wts = np.asarray([a / (a + prob.get(t, 0.0)) for t in known],
                       np.float32)
      out[i] = (wts[:, None] * wv.vectors[[wv.index[t] for t in known]]
                ).sum(0) / len(known)
  return out


@dataclasses.dataclass
class SifModel:
  """SIF sentence encoder fitted on training sentences.

  Attributes:
    wv: word vectors.
    prob: unigram probabilities from the training sentences.
    a: SIF smoothing constant.
    pc: [D] first principal component removed from every sentence vector
      (zeros when disabled).
  """
  wv: WordVectors
  prob: dict[str, float]
  a: float
  pc: np.ndarray

  def sentences(self, sents: Sequence[Sequence[str]]) -> np.ndarray:
    """[S, D] SIF vectors of tokenised sentences."""
    v = _sif_vectors(sents, self.wv, self.prob, self.a)
    return v - np.outer(v @ self.pc, self.pc)

  def documents(self, docs: Sequence[Sequence[Sequence[str]]]
                ) -> tuple[np.ndarray, int]:
    """Mean SIF vector over each document's sentences (+ empty count)."""
    out = np.zeros((len(docs), self.wv.dim), np.float32)
    empty = 0
    for i, sents in enumerate(docs):
      sents = [s for s in sents if any(t in self.wv.index for t in s)]
      if sents:
        out[i] = self.sentences(sents).mean(0)
      else:
        empty += 1
    return out, empty


def fit_sif(train_sentences: Sequence[Sequence[str]], wv: WordVectors, *,
            a: float = 1e-3, remove_pc: bool = True) -> SifModel:
  """Fits SIF word weights and the common component on training sentences.

  Args:
    train_sentences: tokenised training sentences.
    wv: word vectors.
    a: smoothing constant (Arora et al.: 1e-3).
    remove_pc: remove the first principal component (the "common
      discourse" direction).

  Returns:
    The fitted `SifModel`.
  """
  counts: dict[str, int] = {}
  for s in train_sentences:
    for t in s:
      counts[t] = counts.get(t, 0) + 1
  total = max(1, sum(counts.values()))
  prob = {t: c / total for t, c in counts.items()}
  pc = np.zeros((wv.dim,), np.float32)
  if remove_pc:
    v = _sif_vectors([s for s in train_sentences if s], wv, prob, a)
    v = v[np.abs(v).sum(1) > 0]
    if len(v):
      # Arora et al. remove the first singular vector (no centring).
      pc = np.linalg.svd(v.astype(np.float64), full_matrices=False)[2][0]
      pc = pc.astype(np.float32)
  return SifModel(wv, prob, a, pc)


def section_sentences(text: str) -> list[list[str]]:
  """Tokenised sentences of a section (the converters' splitter)."""
  return [tokenize(s) for s in sentences_lib.split_sentences(text)]


def tfidf_features(train_docs: Sequence[str], splits: Sequence[Sequence[str]],
                   *, dim: int, min_df: int, max_features: int, seed: int
                   ) -> list[np.ndarray]:
  """TF-IDF fitted on the training docs, TruncatedSVD to `dim`.

  Args:
    train_docs: training texts (fit).
    splits: texts of each split to transform.
    dim: SVD dimension (clipped to vocabulary size - 1).
    min_df: minimum document frequency.
    max_features: vocabulary cap (0: none).
    seed: SVD random state.

  Returns:
    One [N, dim'] float32 array per split.

  Raises:
    TextFeatureError: an empty vocabulary.
  """
  from sklearn.decomposition import TruncatedSVD  # pylint: disable=g-import-not-at-top
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=g-import-not-at-top
  vec = TfidfVectorizer(tokenizer=tokenize, lowercase=False,
                        token_pattern=None, min_df=min_df,
                        max_features=max_features or None,
                        sublinear_tf=True, dtype=np.float32)
  try:
    m = vec.fit_transform(train_docs)
  except ValueError as e:
    raise TextFeatureError(f"TF-IDF: {e} (training docs: "
                           f"{len(train_docs)})") from None
  k = max(1, min(dim, m.shape[1] - 1, m.shape[0] - 1))
  svd = TruncatedSVD(n_components=k, random_state=seed, n_iter=7)
  svd.fit(m)
  return [svd.transform(vec.transform(s)).astype(np.float32) for s in splits]


@contextlib.contextmanager
def _stable_doc2vec_inference() -> Iterator[None]:
  """Seeds gensim's inferred-vector init with CRC32 instead of `hash`."""
  from gensim.models import doc2vec  # pylint: disable=g-import-not-at-top
  original = doc2vec.pseudorandom_weak_vector

  def seeded(size, seed_string=None, hashfxn=None):
    del hashfxn
    return original(size, seed_string=seed_string, hashfxn=stable_hash)

  doc2vec.pseudorandom_weak_vector = seeded
  try:
    yield
  finally:
    doc2vec.pseudorandom_weak_vector = original


def doc2vec_features(train_docs: Sequence[Sequence[str]],
                     splits: Sequence[Sequence[Sequence[str]]], *, dim: int,
                     dm: int, window: int, min_count: int, epochs: int,
                     seed: int) -> list[np.ndarray]:
  """Doc2Vec trained on the training docs; every doc embedded by inference.

  Args:
    train_docs: tokenised training documents.
    splits: tokenised documents of each split.
    dim: vector size.
    dm: 1 PV-DM, 0 PV-DBOW.
    window: context window.
    min_count: ignore rarer words.
    epochs: training (and inference) passes.
    seed: random seed (one worker: reproducible).

  Returns:
    One [N, dim] float32 array per split.
  """
  from gensim.models.doc2vec import Doc2Vec, TaggedDocument  # pylint: disable=g-import-not-at-top
  model = Doc2Vec([TaggedDocument(list(t), [i])
                   for i, t in enumerate(train_docs)], vector_size=dim,
                  dm=dm, window=window, min_count=min_count, epochs=epochs,
                  seed=seed, workers=1, hashfxn=stable_hash)
  out = []
  with _stable_doc2vec_inference():
    for docs in splits:
      # Reseed per split so a split's vectors do not depend on which splits
      # were inferred before it.
      model.random = np.random.RandomState(seed)
      out.append(np.stack([model.infer_vector(list(t)) for t in docs]
                          ) if len(docs) else np.zeros((0, dim), np.float32))
  return [o.astype(np.float32) for o in out]
