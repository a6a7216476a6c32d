"""Tests of Hsu et al.'s text and image features (jointcxr.hsu)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from configs import hsu as hsu_config
from jointcxr.hsu import features
from jointcxr.hsu import image_features
from jointcxr.hsu import text_features as tf_lib

_PHRASES = {
    0: ("Bibasilar atelectasis.", "Atelectasis at the bases."),
    1: ("The heart is enlarged.", "Moderate cardiomegaly."),
    9: ("Small right pleural effusion.", "Left pleural effusion."),
    12: ("Small apical pneumothorax.", "Right pneumothorax."),
}
_NORMAL = ("Lungs are clear.", "No focal consolidation.",
           "The mediastinal contours are normal.")


def corpus(n: int, seed: int):
  """Template reports whose text follows their CheXpert-style labels."""
  rng = np.random.default_rng(seed)
  findings, impressions, labels = [], [], []
  for _ in range(n):
    lab = np.full(14, np.nan, np.float32)
    sents = [str(rng.choice(_NORMAL))]
    for idx, (a, b) in _PHRASES.items():
      if rng.random() < 0.4:
        lab[idx] = 1.0
        sents.append(a if rng.random() < 0.5 else b)
    rng.shuffle(sents)
    findings.append(" ".join(sents))
    impressions.append(sents[0])
    labels.append(lab)
  return findings, impressions, np.stack(labels)


@pytest.fixture(scope="module")
def text_cfg():
  return hsu_config.get_config("tiny").text


@pytest.mark.parametrize("family", tf_lib.FAMILIES)
def test_text_families_shapes_and_determinism(family, text_cfg):
  f_tr, i_tr, lab = corpus(40, 0)
  f_te, _, _ = corpus(9, 1)
  run = lambda: features.compute_text(
      family, f_tr, [f_tr, f_te], text_cfg, seed=3, word_corpus=f_tr + i_tr,
      train_labels=lab)
  (a_tr, a_te), stats = run()
  assert a_tr.shape[0] == 40 and a_te.shape[0] == 9
  assert a_tr.shape[1] == a_te.shape[1] > 1
  assert a_tr.dtype == np.float32 and np.isfinite(a_tr).all()
  assert stats["empty"] == [0, 0]
  assert np.abs(a_tr).sum(1).min() > 0
  (b_tr, b_te), _ = run()
  np.testing.assert_array_equal(a_tr, b_tr)
  np.testing.assert_array_equal(a_te, b_te)
  if family == "dan":  # fine-tuning learned the labels
    assert stats["dan_loss_final"] < 0.8 * stats["dan_loss_initial"]


def test_unknown_family_and_empty_documents(text_cfg):
  with pytest.raises(tf_lib.TextFeatureError, match="unknown text family"):
    features.compute_text("bert", ["a b"], [["a b"]], text_cfg, seed=0)
  wv = tf_lib.WordVectors(["lung", "clear"], np.eye(2, dtype=np.float32))
  out, empty = tf_lib.mean_word_vectors([["lung", "clear", "zzz"], ["zzz"]],
                                        wv)
  np.testing.assert_allclose(out, [[0.5, 0.5], [0.0, 0.0]])
  assert empty == 1


_SCRIPT = """
import hashlib, sys
sys.path.insert(0, {root!r})
from jointcxr.hsu import text_features as t
docs = [("no effusion heart size normal " * (1 + i % 3) + "opacity %d" % (i % 5)
         ).split() for i in range(30)]
out = t.doc2vec_features(docs, [docs[:7]], dim=8, dm=0, window=3,
                         min_count=1, epochs=5, seed=1)[0]
print(hashlib.md5(out.tobytes()).hexdigest())
"""


def test_paragraph_vectors_do_not_depend_on_python_hash_seed():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digests = set()
  for seed in ("1", "2"):
    env = dict(os.environ, PYTHONHASHSEED=seed)
    res = subprocess.run([sys.executable, "-c", _SCRIPT.format(root=root)],
                         capture_output=True, text=True, env=env, check=True)
    digests.add(res.stdout.strip())
  assert len(digests) == 1


def test_read_glove_and_word_family_from_file(tmp_path, text_cfg):
  path = tmp_path / "glove.txt"
  path.write_text("lung 1 0 0\nclear 0 1 0\nheart 0 0 2\nlung 9 9 9\n")
  wv = tf_lib.read_glove(str(path))
  assert wv.words == ["lung", "clear", "heart"]  # first occurrence wins
  assert tf_lib.read_glove(str(path), vocab={"heart"}).words == ["heart"]
  cfg = text_cfg.copy_and_resolve_references()
  cfg.glove_path = str(path)
  (out,), _ = features.compute_text("word", ["Lung clear."],
                                    [["The heart: clear!", "lung"]], cfg,
                                    seed=0)
  np.testing.assert_allclose(out, [[0, 0.5, 1.0], [1, 0, 0]])


@pytest.mark.parametrize("content,message", [
    ("a 1 2 3\nb 1 2\n", "glove.txt:2: expected 3 values, got 2"),
    ("a 1 2\nb 1 x\n", "glove.txt:2: non-numeric vector value for 'b'"),
    ("a\n", "glove.txt:1: no vector values after 'a'"),
    ("\n\n", "glove.txt: no word vectors read"),
])
def test_read_glove_errors(tmp_path, content, message):
  path = tmp_path / "glove.txt"
  path.write_text(content)
  with pytest.raises(tf_lib.TextFeatureError) as e:
    tf_lib.read_glove(str(path))
  assert str(e.value) == f"{path.parent}/{message}"


def test_sif_matches_formula():
  rng = np.random.default_rng(0)
  words = ["lung", "clear", "heart", "big", "no"]
  vecs = rng.normal(size=(5, 4)).astype(np.float32)
  wv = tf_lib.WordVectors(words, vecs)
  train = [["lung", "clear"], ["heart", "big"], ["no", "lung", "lung"]]
  sif = tf_lib.fit_sif(train, wv, a=0.1)
  counts = {"lung": 3, "clear": 1, "heart": 1, "big": 1, "no": 1}
  p = {w: c / 7 for w, c in counts.items()}

  def raw(sent):
    return np.mean([0.1 / (0.1 + p[t]) * vecs[words.index(t)]
                    for t in sent], axis=0)

  m = np.stack([raw(s) for s in train]).astype(np.float64)
  pc = np.linalg.svd(m)[2][0]
  rm = lambda v: v - pc * (v @ pc)
  doc = [["heart", "clear"], ["no", "oov"]]
  want = (rm(raw(doc[0])) + rm(raw(["no"]))) / 2
  got, empty = sif.documents([doc])
  np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)
  assert empty == 0


def test_text_cache_roundtrip(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    return [np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)], {
        "empty": [0, 1]}

  a, s = features.cached_text(str(tmp_path), "k", ("train", "eval"), compute)
  b, t = features.cached_text(str(tmp_path), "k", ("train", "eval"), compute)
  assert len(calls) == 1 and s == t
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def _tiny_densenet_cfg():
  cfg = hsu_config.get_config("tiny").image
  cfg.update(dict(growth=4, blocks=(1, 1, 1, 1), init_features=8))
  return cfg


def test_image_extractor_batching_and_variable_import(tmp_path):
  cfg = _tiny_densenet_cfg()
  model, variables = image_features.variables_for(cfg, 32, seed=0)
  imgs = np.random.default_rng(0).normal(size=(5, 32, 32, 1)).astype(
      np.float32)
  ex2 = image_features.Extractor(model, variables, batch_size=2)
  a = ex2(imgs)
  b = image_features.Extractor(model, variables, batch_size=8)(imgs)
  # 8 stem + 4 -> 12 -> /2 = 6 + 4 -> 10 -> 5 + 4 -> 9 -> 4 + 4 = 8.
  assert a.shape == (5, 8)
  np.testing.assert_allclose(a, b, atol=1e-5)
  # Features of one image do not depend on its batch neighbours.
  np.testing.assert_allclose(a[3:4], ex2(imgs[3:4]), atol=1e-5)
  path = str(tmp_path / "dn.safetensors")
  image_features.save_variables(path, variables)
  cfg.init = path
  model2, loaded = image_features.variables_for(cfg, 32, seed=99)
  np.testing.assert_allclose(image_features.Extractor(model2, loaded, 8)(
      imgs), b, atol=1e-6)
  other = _tiny_densenet_cfg()
  other.growth = 6
  with pytest.raises(image_features.ImageFeatureError,
                     match="does not fit the DenseNet"):
    image_features.load_variables(path, image_features.build(other), 32)
  with pytest.raises(image_features.ImageFeatureError,
                     match="pickled files are never loaded"):
    image_features.load_variables(str(tmp_path / "w.pth"), model, 32)


def test_image_feature_key_tracks_settings():
  cfg = _tiny_densenet_cfg()
  k = image_features.config_key(cfg, 32, 0)
  assert k == image_features.config_key(cfg, 32, 0)
  assert k != image_features.config_key(cfg, 64, 0)
  assert k != image_features.config_key(cfg, 32, 1)
