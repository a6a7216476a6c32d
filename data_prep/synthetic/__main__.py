"""CLI: python -m data_prep.synthetic --output_dir=DIR --num_subjects=N."""

import json
import sys

from absl import app
from absl import flags

from data_prep import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Destination directory.",
                    required=True)
flags.DEFINE_integer("num_subjects", 100, "MIMIC subjects to generate.")
flags.DEFINE_integer("seed", 0, "Seed (same seed -> identical files).")
flags.DEFINE_string("image_size", "512", "Image height in px, or 'full'.")
flags.DEFINE_string("preview", None, "Optional preview PNG path.")
flags.DEFINE_integer("num_workers", None, "Rendering processes.")
flags.DEFINE_bool("localized", True, "Also write the localized-eval sets.")
flags.DEFINE_float("variation", 1.0, "MIMIC nuisance variation: 1 realistic "
                   "ranges, 0 one fixed phantom.")


def main(argv: list[str]) -> None:
  """Generates the tree and prints its summary."""
  del argv
  size = FLAGS.image_size if FLAGS.image_size == "full" else None
  if size is None:
    try:
      size = int(FLAGS.image_size)
    except ValueError:
      sys.exit(f"--image_size must be an integer or 'full', got "
               f"{FLAGS.image_size!r}")
  try:
    summary = synthetic.generate(
        FLAGS.output_dir, num_subjects=FLAGS.num_subjects, seed=FLAGS.seed,
        image_size=size, preview=FLAGS.preview, num_workers=FLAGS.num_workers,
        localized=FLAGS.localized, variation=FLAGS.variation)
  except (ValueError, OSError) as e:
    sys.exit(f"error: {e}")
  print(json.dumps(summary, indent=2, sort_keys=True))
  print(f"wrote {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
