"""Hsu et al.'s regimes end to end on planted features.

Image and report features are planted in a run's feature cache
(`hsu.train.import_features`) with report = image @ Q + noise for a known
orthogonal Q, so every regime run through `jointcxr.train`'s Hsu path
(`hsu.train.train_and_evaluate`, `configs/hsu.py:tiny`) and the sweep
binary have a right answer: after each modality's PCA, the planted map is
W* = C_img^T Q C_txt (C = the PCA axes saved in the checkpoint).

PCA of a rotated copy finds the rotated axes, and the pipeline orients
them by skewness, so W* is close to the identity that starts MUSE's game:
these tests check that each regime, its criterion and refinement reach
and keep the planted map through the trainer, not that the game finds a
far-away rotation from scratch (tests/test_alignment.py does that).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import hsu as hsu_config
from jointcxr import train
from jointcxr.hsu import data as data_lib
from jointcxr.hsu import train as hsu_train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D_RAW = 12  # raw feature width of both modalities (PCA keeps tiny's 8)


def _studies(x: np.ndarray, rng: np.random.Generator, first_id: int
             ) -> data_lib.Studies:
  n = len(x)
  labels = np.where(rng.random((n, 14)) < 0.3, 1.0, np.nan).astype(
      np.float32)
  return data_lib.Studies(
      np.arange(first_id, first_id + n, dtype=np.int64),
      [f"finding {i}" for i in range(n)], [f"impression {i}" for i in
                                           range(n)], labels,
      x.astype(np.float32))


def _planted(n_train: int = 400, n_eval: int = 100, seed: int = 0):
  """Clustered image features, reports = images @ Q + 1 % noise."""
  rng = np.random.default_rng(seed)
  k = 12
  centres = rng.normal(size=(k, D_RAW)) * np.linspace(2.0, 0.5, D_RAW)
  n = n_train + n_eval
  lab = rng.integers(0, k, size=n)
  # Gamma noise: skewed axes, so the PCA sign convention is well defined.
  x = centres[lab] + rng.gamma(2.0, 0.15, size=(n, D_RAW))
  q, r = np.linalg.qr(rng.normal(size=(D_RAW, D_RAW)))
  q = q * np.sign(np.diag(r))
  y = x @ q + 0.01 * rng.normal(size=x.shape)
  tr = _studies(x[:n_train], rng, 0)
  ev = _studies(x[n_train:], rng, n_train)
  return tr, ev, (y[:n_train], y[n_train:]), q


def _config(data_dir, **arg):
  arg_str = ",".join(f"{k}={v}" for k, v in arg.items())
  c = hsu_config.get_config(f"{arg_str},text=tfidf,tiny")
  c.input.data_dir = str(data_dir)
  return c


@pytest.mark.parametrize("regime,fraction", [("ea", 1.0), ("adv", 0.0),
                                             ("ea_adv", 0.02)])
def test_each_regime_recovers_a_planted_rotation(tmp_path, regime,
                                                 fraction):
  tr, ev, text, q = _planted()
  # Nothing is read from here: the cache holds every feature.
  data_dir = tmp_path / "no_images"
  data_dir.mkdir()
  c = _config(data_dir, regime=regime, fraction=fraction)
  work = str(tmp_path / "run")
  hsu_train.import_features(c, work, tr, ev, text)
  # Through the trainer binary's entry point, as `--config=configs/hsu.py`.
  m = train.train_and_evaluate(c, work)
  assert m["meta/n_pairs"] == round(fraction * len(tr))
  assert m["meta/n_unpaired"] == {"ea": 0, "adv": 400, "ea_adv": 392}[
      regime]
  if regime != "ea":
    assert np.isfinite(m["adv/criterion"]) and m["adv/skipped"] == 0
  for d in ("i2t", "t2i"):
    assert m[f"retrieval/{d}/R@1"] > 0.95, (d, m[f"retrieval/{d}/R@1"])
    # A random orthogonal map of the same preprocessed features is far off.
    assert m[f"random_map/retrieval/{d}/R@1"] < 0.5
  assert m["retrieval/pair_cosine"] > 0.99
  art = hsu_train.restore_checkpoint(work)
  w_star = art["img_components"].T @ q @ art["txt_components"]
  assert np.linalg.norm(art["w"] - w_star) < 0.05
  # The two PCA subspaces correspond (W* orthogonal): a well-posed target.
  np.testing.assert_allclose(w_star.T @ w_star, np.eye(8), atol=0.02)
  with open(os.path.join(work, "eval", "hsu.json")) as f:
    assert json.load(f)["retrieval/t2i/MRR"] == pytest.approx(
        m["retrieval/t2i/MRR"])


def test_import_features_checks_text_rows(tmp_path):
  tr, ev, text, _ = _planted(n_train=20, n_eval=5)
  c = _config(tmp_path, regime="ea", fraction=1.0)
  with pytest.raises(ValueError, match=r"text features have \[20, 4\] rows"):
    hsu_train.import_features(c, str(tmp_path / "run"), tr, ev,
                              (text[0], text[1][:4]))


def test_sweep_binary_writes_its_tables(tmp_path):
  tr, ev, text, _ = _planted()
  data_dir = tmp_path / "no_images"
  data_dir.mkdir()
  c = _config(data_dir)
  work = tmp_path / "run"
  hsu_train.import_features(c, str(work), tr, ev, text)
  out = subprocess.run(
      [sys.executable, "-m", "jointcxr.hsu.sweep",
       "--config=configs/hsu.py:tiny", f"--workdir={work}",
       f"--config.input.data_dir={data_dir}",
       "--config.sweep.texts=('tfidf',)",
       "--config.sweep.fractions=(0.0, 0.01, 1.0)",
       "--config.sweep.sections=('findings',)",
       # A shorter game keeps the binary's test fast; W* is near its start.
       "--config.total_steps=200", "--config.log_every_steps=100"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  res = json.loads((work / "eval" / "hsu_sweep.json").read_text())
  rows = res["sweep"]["tfidf"]
  assert set(rows) == {"ea", "adv", "ea_adv"}
  assert rows["ea"]["0.0"] is None  # EA without pairs is undefined
  mrr = lambda r, f: rows[r][f]["retrieval/t2i/MRR"]
  # All pairs: the planted map is found; the random map is near chance.
  assert mrr("ea", "1.0") > 0.95 and mrr("ea_adv", "1.0") > 0.95
  assert rows["ea"]["1.0"]["random_map/retrieval/t2i/MRR"] < 0.3
  # Adv ignores pairs: one game fills its row.
  assert rows["adv"]["0.0"] == rows["adv"]["1.0"]
  assert rows["adv"]["0.0"]["shared_across_fractions"] == 1.0
  assert mrr("adv", "0.0") > 0.95 and mrr("ea_adv", "0.01") > 0.95
  assert rows["ea"]["0.01"]["meta/n_pairs"] == 4
  assert rows["ea_adv"]["1.0"]["adv/skipped"] == 1.0
  sec = res["sections"]["tfidf"]["findings"]
  assert sec["retrieval/t2i/MRR"] == pytest.approx(mrr("ea", "1.0"))
  md = (work / "eval" / "hsu_sweep.md").read_text()
  assert out.stdout.strip() == md.strip()
  lines = md.splitlines()
  i = lines.index("### MRR, text -> image")
  assert lines[i + 2] == "| text | regime | 0.0 | 0.01 | 1.0 |"
  ea_row = lines[i + 4].split(" | ")
  assert ea_row[:3] == ["| tfidf", "ea", "n/a"]
  assert float(ea_row[4].rstrip(" |")) == pytest.approx(mrr("ea", "1.0"),
                                                        abs=1e-4)
  assert lines[i + 7].startswith("| tfidf | random map | ")
