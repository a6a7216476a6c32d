r"""Content-free floors for the localized segmentation probes.

    python -m bench.localized_floors --output_dir=bench/results \
        [--data_dir=DEMO_OUT/tfds] [--subjects=1800] [--image_size=64]

A segmentation probe shows that a tower learned something about the image
only if it beats predictors that never look at the image. On each
localized set the demo converts (`rsna`, `siim`, `covid_rural`, `nih`),
scored with the probes' own metric (`segmentation.evaluate_dice`: Dice %
over the whole test split, mean over classes with positive pixels):

- **all positive**: every pixel positive (Dice = 2P / (N + P));
- **location prior**: a pixel is positive where the *train* split's mean
  mask exceeds a threshold chosen on the *validation* split (per class) —
  where findings usually are, the same map for every image.

`--data_dir` reuses converted sets (e.g. `make demo`'s `demo_out/tfds`);
without it the demo's data are generated and converted in a temp
directory. Writes `localized_floors.json` and `localized_floors.md`.
"""

import os
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
import numpy as np

from bench import report

SEG_SETS = ("rsna", "siim", "covid_rural", "nih")


def _define_flags() -> None:
  flags.DEFINE_string("output_dir", "bench/results", "Where the tables go.")
  flags.DEFINE_string("data_dir", "", "Converted localized sets "
                      "(<data_dir>/<set>); default: build the demo's data.")
  flags.DEFINE_integer("subjects", 0, "Synthetic subjects when building "
                       "(0: the demo's default).")
  flags.DEFINE_integer("image_size", 64, "Probe input size (px).")


def all_positive_dice(masks: np.ndarray) -> float:
  """Dice % of predicting every pixel positive (mean over present classes)."""
  from jointcxr.evaluators import segmentation  # pylint: disable=g-import-not-at-top
  return segmentation.evaluate_dice(lambda x: np.ones(x.shape), masks, masks)


def _prior_predict(prior: np.ndarray, thr: np.ndarray
                   ) -> Callable[[np.ndarray], np.ndarray]:
  """A predictor that ignores its input: logit > 0 where prior > thr."""
  return lambda x: np.broadcast_to(prior - thr, x.shape[:1] + prior.shape)


def location_prior_dice(train: np.ndarray, val: np.ndarray,
                        test: np.ndarray, grid: int = 64) -> dict:
  """Dice % on test of the train-split mean mask, thresholded per class on
  validation (candidates: `grid` quantiles of the prior below its max)."""
  from jointcxr.evaluators import segmentation  # pylint: disable=g-import-not-at-top
  prior = (train > 0).mean(axis=0).astype(np.float64)  # [H, W, C]
  thr = np.zeros(prior.shape[-1])
  for c in range(prior.shape[-1]):
    p, v = prior[..., c:c + 1], val[..., c:c + 1]
    cands = np.unique(np.quantile(p, np.linspace(0, 1, grid)))
    cands = cands[cands < p.max()]
    if not cands.size or not (v > 0).any():
      continue  # no train positives, or nothing to choose on
    scores = [segmentation.evaluate_dice(_prior_predict(p, t), v, v)
              for t in cands]
    thr[c] = cands[int(np.argmax(scores))]
  return {"dice": segmentation.evaluate_dice(_prior_predict(prior, thr),
                                             test, test),
          "thresholds": thr.tolist()}


def measure(data_dir: str, image_size: int = 64) -> dict:
  """Both floors on every segmentation set found under `data_dir`."""
  from jointcxr.data import localized  # pylint: disable=g-import-not-at-top
  out = {}
  for name in SEG_SETS:
    d = os.path.join(data_dir, name)
    if not os.path.isdir(d):
      continue
    sp = {s: localized.load_split(d, s, image_size).masks
          for s in ("train", "validation", "test")}
    present = (sp["test"] > 0).any(axis=(0, 1, 2))
    out[name] = {
        "test_images": int(len(sp["test"])),
        "positive_pixel_fraction": float((sp["test"][..., present] > 0
                                          ).mean()),
        "all_positive": all_positive_dice(sp["test"]),
        "location_prior": location_prior_dice(sp["train"], sp["validation"],
                                              sp["test"])["dice"]}
  if not out:
    raise ValueError(f"no localized segmentation set ({', '.join(SEG_SETS)})"
                     f" under {data_dir}")
  return out


def to_markdown(r: dict) -> str:
  """The floors as a Markdown table."""
  lines = [
      f"# Content-free floors of the localized segmentation probes "
      f"({r['image_size']} px)", "",
      "Dice % on the test split as the probes score it (whole split, mean "
      "over classes with positive pixels). Neither predictor looks at the "
      "image; a probe below the location prior has not shown that its "
      "features say where a finding is. Written by "
      "`python -m bench.localized_floors`.", "",
      "| set | test images | positive pixels | all positive | location "
      "prior |", "|---|---:|---:|---:|---:|"]
  for name, v in r["sets"].items():
    lines.append(f"| {name} | {v['test_images']} | "
                 f"{100 * v['positive_pixel_fraction']:.2f} % | "
                 f"{v['all_positive']:.2f} | {v['location_prior']:.2f} |")
  lines += ["", f"{r['seconds']:.0f} s."]
  return "\n".join(lines)


def main(argv):
  del argv
  from jointcxr import logging_setup  # pylint: disable=g-import-not-at-top
  logging_setup.setup()
  f = flags.FLAGS
  t0 = time.time()
  data_dir = f.data_dir
  if not data_dir:
    from jointcxr import demo  # pylint: disable=g-import-not-at-top
    work = tempfile.mkdtemp(prefix="localized_floors_")
    demo.generate_data(work, f.subjects or demo.DEFAULT_SUBJECTS, 0)
    data_dir = os.path.dirname(demo.convert_data(work, f.image_size)[
        "mimic_cxr"])
  r = {"image_size": f.image_size, "data_dir": data_dir,
       "sets": measure(data_dir, f.image_size)}
  r["seconds"] = time.time() - t0
  md = to_markdown(r)
  paths = report.write_pair(f.output_dir, "localized_floors", r, md)
  print(md)
  print("wrote", *paths)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
