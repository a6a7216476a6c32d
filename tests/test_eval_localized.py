"""eval_localized's probe paths on a planted localized set.

The set is written by the real converter machinery
(`data_prep.localized.common.convert`): grey noisy 64 px images, five in
six with one bright 12 px square whose box (and so its mask) is the
finding. An "oracle" encoder whose features are the image itself makes
the finding learnable by a linear probe, so a working pipeline reaches a
Dice near 100 and anything that misaligns images and masks (transposed
or flipped masks, another split's labels) falls far below.
"""

import importlib
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from data_prep.localized import common as loc_common
from jointcxr import eval_localized
from jointcxr.data import localized as loc_data
from jointcxr.evaluators import probes
from jointcxr.models import resnet
from jointcxr.models import testing

SIZE, SIDE, N = 64, 12, 60


class Oracle(nn.Module):
  """Features = the image (times a learnable scalar `s`) at every stride.

  `regions` is the full-resolution image; `conv1`..`conv5` are its average
  pools at strides 2..32, the layout the U-Net and detection heads read.
  With `informative=False` every feature is zero.
  """
  informative: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    s = self.param("s", nn.initializers.ones, ())
    x = x * s if self.informative else jnp.zeros_like(x) * s
    out = {"regions": x, "global": x.mean((1, 2))}
    for k in range(1, 6):
      out[f"conv{k}"] = nn.avg_pool(x, (2**k, 2**k), (2**k, 2**k))
    return out


def _oracle(informative: bool = True):
  return Oracle(informative), {"params": {"s": jnp.ones(())}}


def write_planted(root) -> tuple[str, dict]:
  """Writes the planted set under `root`: (converted directory, manifest)."""
  rng = np.random.default_rng(0)
  items = []
  for k in range(N):
    # Background straddles the normalised zero, so a fresh linear head
    # (zero bias) does not already threshold it right: it has to learn.
    img = rng.integers(90, 150, (SIZE, SIZE)).astype(np.uint8)
    boxes = []
    if k % 6:
      y, x = (int(v) for v in rng.integers(0, SIZE - SIDE, 2))
      img[y:y + SIDE, x:x + SIDE] = 230
      boxes = [(float(x), float(y), float(SIDE), float(SIDE), 0)]
    path = os.path.join(root, f"{k:03d}.png")
    Image.fromarray(img).save(path)
    items.append({"id": f"img{k:03d}", "subject": f"p{k:03d}",
                  "image": ("file", path), "boxes": boxes, "mask": None})
  out = os.path.join(root, "tfds")
  manifest = loc_common.convert(
      name="planted", items=items, skips=[], output_dir=out,
      class_names=("finding",), image_size=SIZE, num_workers=1, seed=0,
      args={}, equalize=False, progress=False)
  return out, manifest


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[str, dict]:
  """(converted directory, manifest) of the planted set."""
  return write_planted(str(tmp_path_factory.mktemp("planted")))


def _config(data_dir: str, **overrides):
  c = importlib.import_module("configs.eval.localized").get_config("tiny")
  c.datasets.siim = data_dir
  c.datasets.rsna = data_dir
  c.limit = 0
  c.seeds = 1
  c.epochs = 1
  with c.unlocked():
    for k, v in overrides.items():
      if k.startswith("lr_"):
        c.lr_grid[k[3:]] = v
      else:
        c[k] = v
  return c


def test_label_fractions_train_on_the_converter_splits(planted, monkeypatch):
  data_dir, manifest = planted
  sizes = manifest["split_sizes"]
  assert sizes["train_1pct"] == 1 and sizes["train_10pct"] == 4
  assert sizes["train"] == 36
  seen = []
  real = probes.run_protocol

  def spy(task, tower, tower_vars, **kw):
    seen.append(task)
    return real(task, tower, tower_vars, **kw)

  monkeypatch.setattr(probes, "run_protocol", spy)
  c = _config(data_dir, lr_linear=(0.1,))
  for pct, split in (("1", "train_1pct"), ("10", "train_10pct"),
                     ("100", "train")):
    out = eval_localized.run_task(f"siim/linear/frozen/{pct}", c,
                                  {"model": _oracle()})
    task = seen.pop()
    want = loc_data.load_split(data_dir, split, SIZE)
    assert len(task.train_x) == sizes[split] == len(want), pct
    np.testing.assert_array_equal(task.train_x, want.images)
    np.testing.assert_array_equal(task.train_y, want.masks)
    assert len(task.val_x) == sizes["validation"]
    assert len(task.test_x) == sizes["test"]
    dice = out[f"seg/siim/linear-frozen-{pct}/dice_mean"]
    assert 0.0 <= dice <= 100.0, (pct, dice)


def test_planted_linear_probe_reaches_high_dice(planted):
  data_dir, _ = planted
  # 30 epochs: a fresh head whose kernel has the wrong sign sits on the
  # soft Dice loss's all-positive plateau for ~14 epochs before escaping.
  c = _config(data_dir, lr_linear=(0.1,), epochs=30, seeds=2, patience=30)
  out = eval_localized.run_task(
      "siim/linear/frozen/100", c,
      {"model": _oracle(), "random": _oracle(informative=False)})
  key = "seg/siim/linear-frozen-100"
  # Thresholding the image is the answer: a working pipeline gets ~100;
  # features that say nothing give the constant predictor (~6).
  assert out[f"{key}/dice_mean"] >= 90.0, out
  assert out[f"random/{key}/dice_mean"] <= 20.0, out
  for prefix in ("", "random/"):
    lo, mean, hi = (out[f"{prefix}{key}/dice_{s}"] for s in
                    ("ci95_low", "mean", "ci95_high"))
    assert lo <= mean <= hi and out[f"{prefix}{key}/dice_std"] >= 0.0
    assert out[f"{prefix}{key}/best_lr"] == 0.1


def _record_tower(monkeypatch) -> list:
  """Spies on every train_probe run: [(mode, (params, stats), steps)].

  `steps` collects the tower's (params, batch_stats) after every step.
  """
  runs = []
  real = probes.train_probe

  def spy(task, tower, tower_vars, **kw):
    steps = []
    runs.append((kw["mode"], (tower_vars["params"],
                              tower_vars.get("batch_stats", {})), steps))
    kw["on_step"] = lambda i, p, s: steps.append(
        (jax.device_get(p["tower"]), jax.device_get(s.get("tower", {}))))
    return real(task, tower, tower_vars, **kw)

  monkeypatch.setattr(probes, "train_probe", spy)
  return runs


def _tasks(data_dir):
  split = lambda s: loc_data.load_split(data_dir, s, SIZE)
  tr, va, te = split("train"), split("validation"), split("test")
  c = _config(data_dir)
  return {k: eval_localized.make_task(k, tr, va, te, c)
          for k in ("linear", "detection")}


def _perfect_logits(targets) -> list[np.ndarray]:
  """YOLO outputs that decode to exactly the boxes of `targets`."""
  out = []
  for t in targets:
    t = np.asarray(t)
    sure = lambda m: np.where(m > 0.5, 12.0, -12.0)
    xy = np.clip(t[..., 1:3], 1e-4, 1 - 1e-4)
    out.append(np.concatenate([
        sure(t[..., :1]), np.log(xy / (1 - xy)), t[..., 3:5],
        sure(t[..., 5:])], -1).astype(np.float32))
  return out


def test_detection_targets_decode_to_the_boxes_and_score_map_100(planted):
  data_dir, _ = planted
  task = _tasks(data_dir)["detection"]
  n = len(task.test_x)
  logits = _perfect_logits(task.targets_fn(task.test_y, np.arange(n), False))
  assert [l.shape[1] for l in logits] == [SIZE // 8, SIZE // 16, SIZE // 32]
  perfect = lambda x: logits if len(x) == n else None
  assert task.evaluate_fn(perfect, task.test_x, task.test_y) == 100.0
  # The same predictions scored against the images in reverse order.
  rev = [l[::-1] for l in logits]
  assert task.evaluate_fn(lambda x: rev, task.test_x, task.test_y) < 30.0


def test_flipped_batches_keep_images_and_targets_aligned(planted):
  data_dir, _ = planted
  tasks = _tasks(data_dir)
  idx = np.arange(8)
  for flip in (False, True):
    x = tasks["linear"].train_x[idx]
    x = x[:, :, ::-1] if flip else x
    masks = np.asarray(tasks["linear"].targets_fn(
        tasks["linear"].train_y, idx, flip)) > 0
    bright = x >= 200
    assert masks.any() and np.array_equal(masks, bright), flip
    # Detection: every assigned cell's box centre lies on the square.
    det = tasks["detection"]
    found = np.zeros(len(idx), int)
    for t in det.targets_fn(det.train_y, idx, flip):
      g = t.shape[1]
      for b, i, j, a in zip(*np.nonzero(t[..., 0] > 0.5)):
        cx, cy = t[b, i, j, a, 1:3]
        r, c = int((i + cy) / g * SIZE), int((j + cx) / g * SIZE)
        assert bright[b, r, c, 0], (flip, b, r, c)
        found[b] += 1
    assert list(found) == [len(det.train_y[0][k]) for k in idx], flip


def test_run_protocol_reuses_the_grid_run_as_seed_0(planted, monkeypatch):
  data_dir, _ = planted
  runs = _record_tower(monkeypatch)
  results = []
  real = probes.train_probe

  def keep(*a, **kw):
    results.append((kw["lr"], kw["seed"], real(*a, **kw)))
    return results[-1][2]

  monkeypatch.setattr(probes, "train_probe", keep)
  split = lambda s: loc_data.load_split(data_dir, s, SIZE)
  task = eval_localized.make_task(
      "linear", split("train"), split("validation"), split("test"),
      _config(data_dir))
  tower, tv = _oracle()
  res = probes.run_protocol(task, tower, tv, lr_grid=(1e-4, 0.1), seeds=3,
                            mode="frozen", epochs=2, batch_size=16)
  grid = {lr: r for lr, seed, r in results[:2]}
  best = max(grid, key=lambda lr: grid[lr][0])
  assert res["best_lr"] == best and grid[best][0] > grid[
      0.1 if best != 0.1 else 1e-4][0]
  assert [(lr, seed) for lr, seed, _ in results] == [
      (1e-4, 0), (0.1, 0), (best, 1), (best, 2)]
  assert len(runs) == 4
  assert res["runs"] == [grid[best][1]] + [r[1] for _, _, r in results[2:]]
  assert res["mean"] == pytest.approx(np.mean(res["runs"]))
  assert res["std"] == pytest.approx(np.std(res["runs"]))
  assert res["ci95_low"] <= res["mean"] <= res["ci95_high"]


def _moved(a, b) -> float:
  """Share of leaves that differ between two trees."""
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) > 0
  return float(np.mean([not np.array_equal(x, y) for x, y in zip(la, lb)]))


def test_finetune_tunes_the_encoder_after_warmup_with_fresh_adam(
    planted, monkeypatch):
  data_dir, _ = planted
  runs = _record_tower(monkeypatch)
  lr = 0.01
  c = _config(data_dir, lr_linear=(lr,), epochs=3, warmup_frozen_steps=2)
  for mode in ("frozen", "finetune"):
    eval_localized.run_task(f"siim/linear/{mode}/100", c,
                            {"model": _oracle()})
  assert {m for m, _, _ in runs} == {"frozen", "finetune"}
  for mode, _, steps in runs:
    s = [float(p["s"]) for p, _ in steps]
    assert len(s) == 6, (mode, s)  # 36 // 16 steps x 3 epochs
    if mode == "frozen":
      assert s == [1.0] * 6
      continue
    assert s[:2] == [1.0, 1.0], s          # warmup: the encoder is frozen
    # The first tuned step is Adam's first step for the encoder: |ds| = lr.
    # (Moments counted through the frozen steps would give 0.64 lr here.)
    assert abs(s[2] - 1.0) == pytest.approx(lr, rel=1e-3), s
    assert len(set(s[2:])) == 4, s


def test_unet_finetune_on_a_resnet_through_eval_localized(planted,
                                                         monkeypatch):
  """A real tiny ResNet: the U-Net reads conv1..conv5, fine-tuning moves
  every encoder leaf and its BatchNorm statistics after the warmup."""
  data_dir, _ = planted
  runs = _record_tower(monkeypatch)
  model = importlib.import_module("configs.lovt").get_config("tiny").model
  model.image = dict(depth=18, width=8, stage_sizes=(1, 1, 1, 1))
  # "Pretrained" variables as a checkpoint holds them (`img` subtrees),
  # filled on the host: a random init's samplers take long to compile.
  abstract = jax.eval_shape(lambda: resnet.Model(**model.image).init(
      jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 1))))
  v = nn.meta.unbox(testing.fill_variables(abstract))
  towers = {"model": probes.image_tower(
      model, {"params": {"img": v["params"]},
              "batch_stats": {"img": v["batch_stats"]}})}
  c = _config(data_dir, epochs=2, warmup_frozen_steps=1)
  out = eval_localized.run_task("siim/unet/finetune/100", c, towers)
  key = "seg/siim/unet-finetune-100"
  mean = out[f"{key}/dice_mean"]
  assert math.isfinite(mean) and 0.0 <= mean <= 100.0, out
  assert out[f"{key}/dice_ci95_low"] <= mean <= out[f"{key}/dice_ci95_high"]
  assert [(m, len(st)) for m, _, st in runs] == [("finetune", 4)]  # 2 x 2
  _, (p0, s0), steps = runs[0]
  # Step 0 is the warmup: nothing in the encoder moves (BatchNorm in
  # inference mode). Then every leaf and every running statistic does.
  assert _moved(p0, steps[0][0]) == 0.0 and _moved(s0, steps[0][1]) == 0.0
  for i, (p, st) in enumerate(steps[1:], 1):
    assert _moved(p0, p) > 0.9 and _moved(s0, st) == 1.0, i


def test_detection_on_label_fractions_through_eval_localized(planted,
                                                             monkeypatch):
  data_dir, manifest = planted
  runs = _record_tower(monkeypatch)
  tasks = []
  real = probes.run_protocol
  monkeypatch.setattr(probes, "run_protocol", lambda task, *a, **kw: (
      tasks.append(task), real(task, *a, **kw))[1])
  c = _config(data_dir, epochs=2, warmup_frozen_steps=1, detection_width=8)
  out = {}
  for spec in ("rsna/detection/finetune/10", "rsna/detection/frozen/1"):
    out.update(eval_localized.run_task(spec, c, {"model": _oracle()}))
  for key in ("det/rsna/detection-finetune-10", "det/rsna/detection-frozen-1"):
    mean = out[f"{key}/map_mean"]
    assert math.isfinite(mean) and 0.0 <= mean <= 100.0, (key, mean)
    assert out[f"{key}/map_ci95_low"] <= mean <= out[f"{key}/map_ci95_high"]
  sizes = manifest["split_sizes"]
  for task, split in zip(tasks, ("train_10pct", "train_1pct")):
    want = loc_data.load_split(data_dir, split, SIZE)
    assert len(task.train_x) == len(task.train_y[0]) == sizes[split]
    np.testing.assert_array_equal(task.train_x, want.images)
    for got, box in zip(task.train_y[0], want.boxes):
      np.testing.assert_array_equal(got, box)
  # One batch per epoch (4 images, then 1): the encoder moves after the
  # one warmup step when fine-tuned, never when frozen.
  s = {m: [float(p["s"]) for p, _ in st] for m, _, st in runs}
  assert len(s["finetune"]) == len(s["frozen"]) == 2, s
  assert s["finetune"][0] == 1.0 != s["finetune"][1], s
  assert s["frozen"] == [1.0, 1.0], s
