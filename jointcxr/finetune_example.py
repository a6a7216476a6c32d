r"""Worked example: fine-tune an exported image tower on a segmentation set.

    python -m jointcxr.finetune_example --model_dir=EXPORTED \
        --data_dir=CONVERTED_SIIM [--epochs=10] [--image_size=224]

Loads the tower with `jointcxr.loading.load_image_encoder` (a plain Flax
module + variables: no jointcxr training code needed), puts a U-Net decoder
on it and trains both end to end (after a short frozen warm-up), then
prints the test Dice. Copy this file as the starting point of your own
downstream task.
"""

import sys

from absl import app
from absl import flags

from jointcxr import loading
from jointcxr.data import localized
from jointcxr.evaluators import probes
from jointcxr.evaluators import segmentation

_MODEL = flags.DEFINE_string("model_dir", None, "jointcxr.export output.")
_DATA = flags.DEFINE_string("data_dir", None, "data_prep.localized output.")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Input size.")
_LR = flags.DEFINE_float("lr", 3e-4, "Adam learning rate.")


def finetune(model_dir: str, data_dir: str, *, epochs: int, image_size: int,
             lr: float, seed: int = 0) -> dict:
  """Fine-tunes; returns validation and test Dice (%)."""
  tower, variables = loading.load_image_encoder(model_dir)
  splits = {s: localized.load_split(data_dir, s, image_size)
            for s in ("train", "validation", "test")}
  n_cls = splits["train"].masks.shape[-1]
  task = probes.Task(
      splits["train"].images, splits["train"].masks,
      splits["validation"].images, splits["validation"].masks,
      splits["test"].images, splits["test"].masks, segmentation.dice_loss,
      segmentation.seg_targets, segmentation.evaluate_dice,
      segmentation.UNetHead(n_cls, (64, 32, 16, 16)))
  val, test, _ = probes.train_probe(
      task, tower, variables, lr=lr, seed=seed, mode="finetune",
      epochs=epochs, batch_size=16, warmup_frozen_steps=20)
  return {"val_dice": val, "test_dice": test}


def main(argv):
  del argv
  if not _MODEL.value or not _DATA.value:
    print("error: --model_dir and --data_dir are required", file=sys.stderr)
    sys.exit(2)
  try:
    res = finetune(_MODEL.value, _DATA.value, epochs=_EPOCHS.value,
                   image_size=_SIZE.value, lr=_LR.value)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"validation Dice {res['val_dice']:.2f}%, test Dice "
        f"{res['test_dice']:.2f}%")


if __name__ == "__main__":
  app.run(main)
