"""The evaluation binaries end to end on a tiny trained model, and the probe
machinery learning what an informative encoder makes learnable.

Values, not just keys: planted embeddings with a known answer go through
the same functions the binaries call (retrieval, linear probe, zero-shot)
and through `eval_global.evaluate` itself; every written report is checked
against its Markdown twin.
"""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lovt
from jointcxr import eval_global
from jointcxr import eval_localized
from jointcxr import export
from jointcxr import loading
from jointcxr import train
from jointcxr.data.features import CHEXPERT_LABELS
from jointcxr.data.features import NO_FINDING_INDEX
from jointcxr.evaluators import classification
from jointcxr.evaluators import common
from jointcxr.evaluators import embedding_stats
from jointcxr.evaluators import probes
from jointcxr.evaluators import retrieval
from jointcxr.evaluators import segmentation


@pytest.fixture(scope="module")
def workdir(converted_mimic, tokenizer_path, tmp_path_factory):
  w = tmp_path_factory.mktemp("evalrun")
  c = lovt.get_config("tiny")
  c.input.data_dir = str(converted_mimic)
  c.input.tokenizer = str(tokenizer_path)
  c.total_steps = 4
  c.evals.retrieval.limit = 0
  # LoVT's validation loss (its accumulated, cross-attending objective in
  # eval mode) and a best checkpoint, for `checkpoint=best`.
  c.val.every_steps = 2
  c.val.batches = 1
  train.train_and_evaluate(c, str(w))
  return w


def _report_agrees(out: dict, out_dir, name: str) -> dict:
  """The JSON equals `out` (NaN as null); the Markdown has every key once,
  with the value as the JSON rounds it. Returns the JSON."""
  with open(os.path.join(out_dir, f"{name}.json")) as f:
    on_disk = json.load(f)
  assert set(on_disk) == set(out)
  for k, v in out.items():
    if isinstance(v, float) and np.isnan(v):
      assert on_disk[k] is None, k
    else:
      assert on_disk[k] == v, k
  rows = {}
  for line in (out_dir / f"{name}.md").read_text().splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 2 and cells[0] not in ("metric", "---"):
      assert cells[0] not in rows, cells[0]
      rows[cells[0]] = cells[1]
  assert set(rows) == set(on_disk)
  for k, v in on_disk.items():
    if v is None:
      assert rows[k] == "n/a", k
    elif isinstance(v, float):
      tol = 0.5 if abs(v) >= 1000 else 5.1e-5
      assert abs(float(rows[k]) - v) <= tol, (k, rows[k], v)
    else:
      assert rows[k] == str(v), k
  return on_disk


def _labels(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
  """CheXpert-style labels (1 / 0 / -1) and presence, ~30 % positive."""
  y = rng.choice([1.0, 0.0, -1.0], size=(n, len(CHEXPERT_LABELS)),
                 p=[0.3, 0.6, 0.1])
  present = rng.random(y.shape) < 0.9
  return np.where(present, y, 0.0).astype(np.float32), present


def _planted_embeddings(rng, n: int, dim: int = 32, *, aligned: bool = True,
                        informative: bool = True) -> common.Embeddings:
  """Text = image embedding (+ noise) when aligned, another study's if not;
  image features separate every label (U-ones) when informative."""
  labels, present = _labels(rng, n)
  img = rng.normal(size=(n, dim)).astype(np.float32)
  src = img if aligned else img[np.roll(np.arange(n), 1)]
  txt = src + 0.01 * rng.normal(size=src.shape).astype(np.float32)
  y = classification.binary_labels(labels, present)
  noise = rng.normal(size=(n, 8)).astype(np.float32)
  feats = np.concatenate([3.0 * y + 0.5 * rng.normal(size=y.shape), noise],
                         1) if informative else rng.normal(size=(n, 22))
  return common.Embeddings(img, txt, feats.astype(np.float32), labels,
                           present, np.arange(n))


def test_retrieval_values_on_planted_embeddings():
  rng = np.random.default_rng(0)
  n = 200
  good = retrieval.metrics(_planted_embeddings(rng, n), pool_size=100)
  for d in ("i2t", "t2i"):
    for pre in ("retrieval", "retrieval_100"):
      for k in ("R@1", "R@5", "R@10", "MRR"):
        assert good[f"{pre}/{d}/{k}"] == 1.0, (pre, d, k)
      assert good[f"{pre}/{d}/median_rank"] == 1.0
  # Each report's own image is top-1 and shares all of its positives.
  assert good["retrieval/t2i/nDCG@1"] == 1.0
  assert good["retrieval/pair_cosine"] > 0.99
  assert good["retrieval/pool_size"] == n
  # Every text paired with another study's image: chance level.
  bad = retrieval.metrics(_planted_embeddings(rng, n, aligned=False),
                          pool_size=100)
  for d in ("i2t", "t2i"):
    assert bad[f"retrieval/{d}/R@1"] <= 2 / n
    assert bad[f"retrieval/{d}/R@10"] <= 0.15  # chance 10 / n = 0.05
    assert bad[f"retrieval/{d}/MRR"] < 0.1
    assert n / 4 < bad[f"retrieval/{d}/median_rank"] < 3 * n / 4
    assert bad[f"retrieval_100/{d}/R@10"] <= 0.3  # chance 0.1
  assert abs(bad["retrieval/pair_cosine"]) < 0.15
  assert bad["retrieval/t2i/nDCG@100"] < good["retrieval/t2i/nDCG@100"]


def test_linear_probe_auroc_of_a_planted_separable_feature():
  rng = np.random.default_rng(1)
  split = lambda n, inf: _planted_embeddings(rng, n, informative=inf)
  for informative in (True, False):
    tr, va, te = (split(n, informative) for n in (240, 120, 120))
    b = lambda e: classification.binary_labels(e.labels, e.labels_present)
    out = classification.linear_probe(tr.img_features, b(tr),
                                      va.img_features, b(va),
                                      te.img_features, b(te))
    per_label = [out[f"probe/auroc/{name}"] for name in CHEXPERT_LABELS]
    assert out["probe/num_labels"] == 13.0  # No Finding is left out
    assert out["probe/auroc_mean"] == pytest.approx(np.mean(
        np.delete(per_label, NO_FINDING_INDEX)))
    if informative:
      assert min(per_label) > 0.98 and out["probe/auroc_mean"] > 0.99, out
      assert out["probe/auroc_weighted"] > 0.99
    else:
      assert abs(out["probe/auroc_mean"] - 0.5) < 0.1, out


def test_zero_shot_auroc_of_planted_prompts():
  rng = np.random.default_rng(2)
  n = 200
  labels, present = _labels(rng, n)
  y = classification.binary_labels(labels, present)
  index = {}
  for j, name in enumerate(CHEXPERT_LABELS):
    pos, neg = classification.PROMPTS[name]
    index[pos], index[neg] = (j, 1.0), (j, -1.0)

  def encode(sentences):
    out = np.zeros((len(sentences), len(CHEXPERT_LABELS)), np.float32)
    for i, sent in enumerate(sentences):
      j, sign = index[sent]
      out[i, j] = sign
    return out

  img = (2.0 * y - 1.0 + 0.3 * rng.normal(size=y.shape)).astype(np.float32)
  out = classification.zero_shot(img, encode, y)
  assert min(out[f"zeroshot/auroc/{k}"] for k in CHEXPERT_LABELS) > 0.99
  # Prompts swapped (positive <-> negative): every AUROC flips.
  flipped = classification.zero_shot(img, lambda s: -encode(s), y)
  assert flipped["zeroshot/auroc_mean"] == pytest.approx(
      1.0 - out["zeroshot/auroc_mean"])


def _global_cfg(data_dir):
  import importlib
  c = importlib.import_module("configs.eval.global").get_config("tiny")
  c.input.data_dir = str(data_dir)
  c.split = "validate"
  c.probe_val_split = "validate"
  c.pool_size = 2
  return c


def test_eval_global_writes_flat_json_and_markdown(workdir, converted_mimic):
  out = eval_global.evaluate(_global_cfg(converted_mimic), str(workdir))
  with open(workdir / "eval" / "global.json") as f:
    on_disk = json.load(f)
  for key in ("retrieval/i2t/R@1", "retrieval/t2i/R@1", "retrieval/i2t/MRR",
              "retrieval/t2i/nDCG@100", "retrieval_2/i2t/R@1",
              "retrieval/pair_cosine", "probe/auroc_mean",
              "zeroshot/auroc_mean"):
    assert key in on_disk, key
    assert on_disk[key] is None or -1.0 <= on_disk[key] <= 1.0
  assert out["retrieval/pool_size"] == on_disk["retrieval/pool_size"]
  assert "| retrieval/i2t/R@1 |" in (workdir / "eval" / "global.md"
                                     ).read_text()
  _report_agrees(out, workdir / "eval", "global")
  n = out["meta/num_examples"]
  assert out["retrieval/pool_size"] == n > 0
  for d in ("i2t", "t2i"):
    r = [out[f"retrieval/{d}/R@{k}"] for k in (1, 5, 10)]
    assert 0.0 <= r[0] <= r[1] <= r[2] <= 1.0, r
    assert 1.0 / n <= out[f"retrieval/{d}/MRR"] <= 1.0
    assert 1.0 <= out[f"retrieval/{d}/median_rank"] <= n
    # Pools of 2: the true match ranks 1 or 2.
    assert 0.5 <= out[f"retrieval_2/{d}/MRR"] <= 1.0
  for k, v in out.items():
    if "/auroc" in k:
      assert 0.0 <= v <= 1.0, (k, v)


def test_eval_global_values_on_planted_embeddings(workdir, converted_mimic,
                                                  monkeypatch, tmp_path):
  """The binary's wiring: known answers in, the same values written out."""
  rng = np.random.default_rng(3)
  sizes = {"validate": 60, "train": 200, "test": 100}
  calls = []

  def embed(loaded, data_dir, split, *, batch_size, limit, **kw):
    del loaded, batch_size
    calls.append((data_dir, split, limit, kw.get("text_mode")))
    return _planted_embeddings(rng, sizes[split])

  monkeypatch.setattr(common, "embed_split", embed)
  c = _global_cfg(converted_mimic)
  c.split, c.probe_train_split, c.probe_val_split = "test", "train", "validate"
  c.pool_size = 50
  c.model_dir = str(workdir)  # the trained model; reports go to tmp_path
  out = eval_global.evaluate(c, str(tmp_path))
  d = str(converted_mimic)
  assert calls == [(d, "test", c.limit, c.text_mode),
                   (d, "train", c.probe_limit, "report"),
                   (d, "validate", c.probe_limit, "report")]
  assert out["meta/num_examples"] == out["retrieval/pool_size"] == 100
  for key in ("retrieval/i2t/R@1", "retrieval/t2i/R@10",
              "retrieval_50/i2t/R@1", "retrieval_50/t2i/MRR"):
    assert out[key] == 1.0, key
  assert out["probe/auroc_mean"] > 0.99
  # Zero-shot: the trained model's prompts on planted images, in range.
  assert 0.0 <= out["zeroshot/auroc_mean"] <= 1.0
  assert out["meta/step"] == 4.0
  _report_agrees(out, tmp_path / "eval", "global")


def test_eval_global_health_tells_a_collapsed_model(workdir, converted_mimic,
                                                   tmp_path, monkeypatch):
  cfg = _global_cfg(converted_mimic)
  cfg.probe = False
  cfg.zero_shot = False
  real = loading.load(str(workdir))
  good = eval_global.evaluate(cfg, str(workdir))
  # The written statistics are those of the embedded split.
  emb = common.embed_split(real, str(converted_mimic), cfg.split,
                           batch_size=cfg.batch_size, limit=cfg.limit)
  want = embedding_stats.host_stats(emb.img, emb.txt)
  for key, value in want.items():
    assert good[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
  # Planted collapse: the image projection's last layer outputs its bias
  # whatever the image, as the make-demo runs ended up doing.
  params = jax.tree.map(np.array, real.variables["params"])
  fc2 = params["img_proj_global"]["fc2"]
  fc2["kernel"] = np.zeros_like(fc2["kernel"])
  fc2["bias"] = np.linspace(-1.0, 1.0, fc2["bias"].size).astype(np.float32)
  collapsed = dataclasses.replace(
      real, variables={**real.variables, "params": params})
  monkeypatch.setattr(loading, "load", lambda *a, **k: collapsed)
  bad = eval_global.evaluate(cfg, str(tmp_path))
  with open(tmp_path / "eval" / "global.json") as f:
    assert json.load(f)["health/img_eff_rank"] == bad["health/img_eff_rank"]
  assert bad["health/img_std"] < 1e-5 < good["health/img_std"]
  assert bad["health/img_eff_rank"] == pytest.approx(1.0, abs=1e-3)
  assert good["health/img_eff_rank"] > 1.5
  assert bad["health/img_uniformity"] == pytest.approx(0.0, abs=1e-5)
  assert good["health/img_uniformity"] < -0.05
  # One image embedding for all: positives are exactly as close as
  # negatives; the text tower is untouched.
  assert bad["sim/pos"] == pytest.approx(bad["sim/neg"], abs=1e-5)
  for key in ("health/txt_std", "health/txt_eff_rank",
              "health/txt_uniformity"):
    assert bad[key] == pytest.approx(good[key], rel=1e-6), key


def test_lovt_validation_loss_and_checkpoint_choice(workdir, tmp_path):
  with open(workdir / "metrics.jsonl") as f:
    val = {r["step"]: r for r in map(json.loads, f) if "val/loss" in r}
  assert sorted(val) == [2, 4]
  for r in val.values():
    parts = (0.75 * r["val/loss/global_i2t"] + 0.25 * r["val/loss/global_t2i"]
             + 0.375 * sum(r[f"val/loss/local_{n}"] for n in (
                 "img_l2att", "img_att2l", "txt_l2att", "txt_att2l")))
    assert r["val/loss"] == pytest.approx(parts, rel=1e-5)
    assert 0.5 < r["val/loss/global_over_lnB"] < 1.5
    assert 1.0 <= r["val/health/img_eff_rank"] <= 8.0
  best = min(val, key=lambda s: val[s]["val/loss"])
  assert loading.load(str(workdir), "best").step == best
  assert loading.load(str(workdir), "4").step == 4
  assert loading.checkpoint_choice("latest") is None
  assert loading.checkpoint_choice("best") == "best"
  assert loading.checkpoint_choice("12") == 12
  with pytest.raises(ValueError, match="expected 'latest', 'best' or a "
                     "step number"):
    loading.checkpoint_choice("newest")
  # A workdir trained without validation has no best state.
  import shutil  # pylint: disable=g-import-not-at-top
  other = tmp_path / "noval"
  shutil.copytree(workdir, other, ignore=shutil.ignore_patterns(
      "checkpoints_best", "eval"))
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    loading.load(str(other), "best")


def test_export_round_trip_gives_same_embeddings(workdir, converted_mimic,
                                                 tmp_path):
  meta = export.export(str(workdir), str(tmp_path / "exp"), "torch")
  assert {"image_encoder.safetensors", "text_encoder.safetensors",
          "heads.safetensors", "resnet_torchvision.safetensors",
          "bert_hf.safetensors"} <= set(meta["files"])
  assert (tmp_path / "exp" / "model_card.md").read_text().startswith(
      "# jointcxr lovt model")
  a = eval_global.evaluate(_global_cfg(converted_mimic), str(workdir))
  cfg = _global_cfg(converted_mimic)
  cfg.model_dir = str(tmp_path / "exp")
  b = eval_global.evaluate(cfg, str(tmp_path / "evaldir"))
  for k in ("retrieval/i2t/R@1", "retrieval/pair_cosine"):
    assert a[k] == pytest.approx(b[k], abs=1e-6)
  tower, variables = loading.load_image_encoder(str(tmp_path / "exp"))
  out = tower.apply(variables, jnp.zeros((1, 64, 64, 1)))
  assert out["regions"].ndim == 4


def test_eval_localized_with_baseline(workdir, tmp_path):
  from data_prep import synthetic
  from data_prep.localized import ms_cxr
  from data_prep.localized import rsna
  # 60 subjects: enough that the RSNA test split holds positive masks.
  synthetic.generate(str(tmp_path / "syn"), num_subjects=60, seed=0,
                     image_size=64, progress=False)
  rsna.convert(input_dir=str(tmp_path / "syn" / "rsna"),
               output_dir=str(tmp_path / "rsna"), image_size=64,
               progress=False)
  import importlib
  c = importlib.import_module("configs.eval.localized").get_config("tiny")
  c.datasets.rsna = str(tmp_path / "rsna")
  c.tasks = ("rsna/linear/frozen/100", "rsna/detection/frozen/100",
             "siim/linear/frozen/100")
  c.epochs = 1
  c.seeds = 2
  # Grounding on the synthetic MS-CXR phrases, through the binary.
  ms_cxr.convert(input_dir=str(tmp_path / "syn" / "ms_cxr"),
                 mimic_cxr_jpg_dir=str(tmp_path / "syn" / "mimic-cxr-jpg"),
                 output_dir=str(tmp_path / "ms_cxr"), image_size=64,
                 progress=False)
  c.datasets.ms_cxr = str(tmp_path / "ms_cxr")
  out = eval_localized.evaluate(c, str(workdir))
  for prefix in ("", "random/"):
    assert f"{prefix}seg/rsna/linear-frozen-100/dice_mean" in out
    assert f"{prefix}det/rsna/detection-frozen-100/map_mean" in out
  assert out["seg/rsna/dice_mean"] == out[
      "seg/rsna/linear-frozen-100/dice_mean"]
  assert out["meta/skipped_tasks"] == 1  # siim not configured
  for prefix in ("", "random/"):
    for key, metric in (("seg/rsna/linear-frozen-100", "dice"),
                        ("det/rsna/detection-frozen-100", "map")):
      k = f"{prefix}{key}/{metric}"
      mean, std = out[f"{k}_mean"], out[f"{k}_std"]
      assert np.isfinite(mean) and 0.0 <= mean <= 100.0, (k, mean)
      assert np.isfinite(std) and std >= 0.0
      assert out[f"{k}_ci95_low"] <= mean <= out[f"{k}_ci95_high"]
      assert out[f"{prefix}{key}/best_lr"] in tuple(
          c.lr_grid["linear" if metric == "dice" else "detection"])
  g = {k.rsplit("/", 1)[1]: v for k, v in out.items()
       if k.startswith("grounding/ms_cxr/")}
  assert g["num_phrases"] > 0
  assert 0.0 <= g["pointing_game"] <= 1.0 and 0.0 <= g["iou"] <= 1.0
  assert np.isfinite(g["cnr"]) and g["cnr"] >= 0.0
  _report_agrees(out, workdir / "eval", "localized")


class _Oracle(nn.Module):
  """'Regions' = the image itself (an encoder that kept everything)."""
  informative: bool

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    scale = self.param("s", nn.initializers.ones, ())
    feats = x * scale if self.informative else jnp.zeros_like(x) * scale
    return {"regions": feats, "global": feats.mean((1, 2))}


def test_linear_probe_learns_from_informative_features():
  rng = np.random.default_rng(0)
  n, s = 48, 16
  imgs = rng.integers(0, 60, size=(n, s, s, 1)).astype(np.uint8)
  masks = np.zeros((n, s, s, 1), np.uint8)
  for i in range(n):
    y, x = rng.integers(0, s - 6, 2)
    imgs[i, y:y + 6, x:x + 6] = 230
    masks[i, y:y + 6, x:x + 6] = 1
  def task():
    return probes.Task(imgs[:32], masks[:32], imgs[32:40], masks[32:40],
                       imgs[40:], masks[40:], segmentation.dice_loss,
                       segmentation.seg_targets, segmentation.evaluate_dice,
                       segmentation.LinearSegHead(1))
  scores = {}
  for informative in (True, False):
    tower = _Oracle(informative)
    tv = {"params": {"s": jnp.ones(())}}
    res = probes.run_protocol(task(), tower, tv, lr_grid=(0.1,), seeds=2,
                              mode="frozen", epochs=25, batch_size=16,
                              patience=25)
    scores[informative] = res["mean"]
  assert scores[True] > 80.0 and scores[False] < 30.0, scores
