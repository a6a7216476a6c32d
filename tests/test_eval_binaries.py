"""The evaluation binaries end to end on a tiny trained model, and the probe
machinery learning what an informative encoder makes learnable."""

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
from jointcxr import train
from jointcxr.evaluators import common
from jointcxr.evaluators import embedding_stats
from jointcxr.evaluators import probes
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


def test_eval_global_health_tells_a_collapsed_model(workdir, converted_mimic,
                                                   tmp_path, monkeypatch):
  cfg = _global_cfg(converted_mimic)
  cfg.probe = False
  cfg.zero_shot = False
  real = common.load(str(workdir))
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
  monkeypatch.setattr(common, "load", lambda *a, **k: collapsed)
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
  assert common.load(str(workdir), "best").step == best
  assert common.load(str(workdir), "4").step == 4
  assert common.checkpoint_choice("latest") is None
  assert common.checkpoint_choice("best") == "best"
  assert common.checkpoint_choice("12") == 12
  with pytest.raises(ValueError, match="expected 'latest', 'best' or a "
                     "step number"):
    common.checkpoint_choice("newest")
  # A workdir trained without validation has no best state.
  import shutil  # pylint: disable=g-import-not-at-top
  other = tmp_path / "noval"
  shutil.copytree(workdir, other, ignore=shutil.ignore_patterns(
      "checkpoints_best", "eval"))
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    common.load(str(other), "best")


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
  tower, variables = export.load_image_encoder(str(tmp_path / "exp"))
  out = tower.apply(variables, jnp.zeros((1, 64, 64, 1)))
  assert out["regions"].ndim == 4


def test_eval_localized_with_baseline(workdir, tmp_path):
  from data_prep import synthetic
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
  out = eval_localized.evaluate(c, str(workdir))
  for prefix in ("", "random/"):
    assert f"{prefix}seg/rsna/linear-frozen-100/dice_mean" in out
    assert f"{prefix}det/rsna/detection-frozen-100/map_mean" in out
  assert out["seg/rsna/dice_mean"] == out[
      "seg/rsna/linear-frozen-100/dice_mean"]
  assert out["meta/skipped_tasks"] == 1  # siim not configured
  lo = out["seg/rsna/linear-frozen-100/dice_ci95_low"]
  hi = out["seg/rsna/linear-frozen-100/dice_ci95_high"]
  assert lo <= out["seg/rsna/linear-frozen-100/dice_mean"] <= hi


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
