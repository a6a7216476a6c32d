r"""Global evaluation binary: retrieval, linear probe, zero-shot (+ Hsu tables).

    python -m jointcxr.eval_global --config=configs/eval/global.py[:tiny] \
        --workdir=W --config.input.data_dir=D

Loads the newest checkpoint of the training workdir W (or the exported
model in `--config.model_dir`), embeds the evaluation split, and writes
`W/eval/global.json` (flat keys such as `retrieval/i2t/R@1`,
`retrieval_1000/t2i/R@5`, `probe/auroc_mean`, `zeroshot/auroc_mean`, the
embedding health `health/{img,txt}_{std,uniformity,eff_rank}`, `sim/pos`,
`sim/neg`) and `W/eval/global.md`. `--config.checkpoint=best` evaluates the
best state by validation loss instead of the newest.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from jointcxr import config_validation
from jointcxr import loading
from jointcxr import logging_setup
from jointcxr.evaluators import classification
from jointcxr.evaluators import common
from jointcxr.evaluators import embedding_stats
from jointcxr.evaluators import report
from jointcxr.evaluators import retrieval

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the binary (defined only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "Eval config.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Training workdir.")


def _prompt_encoder(loaded):
  def encode(sentences):
    enc = [loaded.tokenizer.encode_report([s], loaded.config.input.max_tokens,
                                          loaded.config.input.max_sentences)
           for s in sentences]
    ids = jnp.asarray(np.stack([e.ids for e in enc]))
    sids = jnp.asarray(np.stack([e.sentence_ids for e in enc]))
    out = loaded.model.apply(loaded.variables, ids,
                             ids != loaded.tokenizer.pad_id, sids,
                             method=type(loaded.model).encode_text)
    return np.asarray(out["txt_global"])
  return encode


def evaluate(config, workdir: str) -> dict:
  """Runs the global evaluation; returns the metric dict (also written)."""
  source = config.model_dir or workdir
  loaded = loading.load(source, config.get("checkpoint", "latest"))
  data_dir = config.input.data_dir or loaded.config.input.data_dir
  if not data_dir:
    raise ValueError("set --config.input.data_dir (no data_dir in the model "
                     "config)")
  limit = config.limit or None
  logging.info("embedding %s/%s", data_dir, config.split)
  emb = common.embed_split(loaded, data_dir, config.split,
                           batch_size=config.batch_size, limit=limit,
                           text_mode=config.text_mode)
  out = retrieval.metrics(emb, pool_size=config.pool_size)
  # The same health statistics the trainer logs (health/img_eff_rank, ...,
  # sim/pos, sim/neg): a collapsed model shows here as well.
  out.update(embedding_stats.host_stats(emb.img, emb.txt))
  y_test = classification.binary_labels(emb.labels, emb.labels_present,
                                        config.uncertain)
  if config.probe:
    plimit = config.probe_limit or None
    # The probe reads image features only: the cheapest text mode.
    tr = common.embed_split(loaded, data_dir, config.probe_train_split,
                            batch_size=config.batch_size, limit=plimit,
                            text_mode="report")
    va = common.embed_split(loaded, data_dir, config.probe_val_split,
                            batch_size=config.batch_size, limit=plimit,
                            text_mode="report")
    b = lambda e: classification.binary_labels(e.labels, e.labels_present,
                                               config.uncertain)
    out.update(classification.linear_probe(
        tr.img_features, b(tr), va.img_features, b(va), emb.img_features,
        y_test))
  if config.zero_shot:
    out.update(classification.zero_shot(emb.img, _prompt_encoder(loaded),
                                        y_test))
  out["meta/step"] = float(loaded.step or 0)
  out["meta/num_examples"] = float(len(emb.img))
  extra = ""
  if config.hsu_sweep:
    from jointcxr.hsu import sweep  # pylint: disable=g-import-not-at-top
    extra = sweep.run_sweep(loaded.config, workdir)["markdown"]
  if jax.process_index() == 0:
    jpath, mpath = report.write(os.path.join(workdir, "eval"), "global", out,
                                f"Global evaluation of {source} on "
                                f"{config.split}", extra)
    print(f"wrote {jpath} and {mpath}")
  return out


def main(argv):
  del argv
  logging_setup.setup()
  if not FLAGS.workdir:
    print("error: --workdir is required", file=sys.stderr)
    sys.exit(2)
  try:
    out = evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  keys = [k for k in out if k.endswith(("R@1", "auroc_mean", "MRR"))]
  for k in sorted(keys):
    print(f"{k}: {out[k]:.4f}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=config_validation.parse_flags)
