r"""Hsu et al. 2018: classic features + linear alignment (EA / Adv / EA+Adv).

    python -m jointcxr.train --config=configs/hsu.py:regime=adv,text=tfidf,tiny \
        --workdir=W --config.input.data_dir=D

The supervision-fraction x regime x text-family sweep and the
findings-vs-impression table:

    python -m jointcxr.hsu.sweep --config=configs/hsu.py:tiny --workdir=W \
        --config.input.data_dir=D

Arg keys: `regime` = ea | adv | ea_adv, `text` = tfidf | word | sentence |
paragraph | dan, `fraction` = share of training pairs used as supervision
(0 ... 1), `section` = findings | impression | both, `tiny` (seconds on a
CPU). Defaults reproduce what is known of the paper (METHODS.md §1) and
MUSE's published defaults for everything the paper does not state
(documented in `jointcxr/hsu/*`): DenseNet-121 avgpool image features,
common PCA dimension 256, MUSE's discriminator (2 x 2048, LeakyReLU 0.2,
input dropout 0.1), SGD 0.1, 5 discriminator steps per mapping step, batch
32, label smoothing 0.1, beta 0.001, 5 epochs of 31,250 mapping steps, 5
refinement iterations with CSLS (k = 10) mutual nearest neighbours.

Stable keys shared with the trainer: `total_steps` (adversarial mapping
steps per restart), `batch_size` (adversarial batch), `log_every_steps`
(one adversarial "epoch": criterion, lr decay and logging), `seed`,
`input.data_dir`, `mesh`, `sharding_rules` (the alignment is small and runs
replicated), `ckpt_every_steps` (the alignment is checkpointed once, at the
end; features are cached in the workdir).
"""

import ml_collections as mlc

from configs import common
from jointcxr.hsu import adversary


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  """The Hsu config; see the module docstring for the arg keys."""
  a = common.parse_arg(arg, regime="ea_adv", text="tfidf", fraction=0.001,
                       section="findings", tiny=False)
  c = mlc.ConfigDict()
  c.method = "hsu"
  c.seed = 0
  c.total_steps = 156250        # MUSE: 5 epochs x 1M samples / batch 32
  c.batch_size = 32
  c.log_every_steps = 31250     # one MUSE epoch
  c.ckpt_every_steps = 156250
  c.mesh = [("data", -1)]
  c.sharding_rules = [(".*", "replicate")]
  c.progress = True

  c.input = mlc.ConfigDict(dict(
      data_dir="", train_split="train", eval_split="test", image_size=224,
      # ImageNet statistics averaged over RGB (grayscale DenseNet stem).
      mean=0.449, std=0.226, batch_size=32, limit_train=0, limit_eval=0))

  c.image = mlc.ConfigDict(dict(
      growth=32, blocks=(6, 12, 24, 16), init_features=64, bn_size=4,
      conv_impl="xla", init=""))  # init: safetensors of Flax variables

  c.text = mlc.ConfigDict(dict(family=a.text, section=a.section,
                               glove_path=""))
  c.text.tfidf = mlc.ConfigDict(dict(dim=512, min_df=2, max_features=0))
  c.text.word = mlc.ConfigDict(dict(dim=300, window=5, min_count=5,
                                    epochs=10, sg=0))
  c.text.sentence = mlc.ConfigDict(dict(sif_a=1e-3, remove_pc=True))
  c.text.paragraph = mlc.ConfigDict(dict(dim=300, dm=0, window=5,
                                         min_count=5, epochs=20))
  c.text.dan = mlc.ConfigDict(dict(hidden=(300, 300), word_dropout=0.3,
                                   steps=2000, batch_size=64, lr=1e-3,
                                   max_tokens=256))

  c.align = mlc.ConfigDict(dict(
      regime=a.regime, fraction=a.fraction, dim=256, source="image",
      semi_mode="best_start", unpaired_pool="rest", refine_iters=5,
      csls_k=10, dictionary="mutual", pair_weight=1.0, chunk_size=1024))
  c.adv = adversary.default_config()
  # Set from the top-level keys (total_steps, log_every_steps, batch_size).
  for k in ("epochs", "epoch_steps", "batch_size"):
    del c.adv[k]

  c.eval = mlc.ConfigDict(dict(pool_size=0, chunk_size=1024))

  c.sweep = mlc.ConfigDict(dict(
      texts=("tfidf", "word", "sentence", "paragraph", "dan"),
      regimes=("ea", "adv", "ea_adv"),
      fractions=(0.0, 0.001, 0.01, 0.1, 1.0),
      sections=("findings", "impression"),
      section_regime="ea", section_fraction=1.0))

  if a.tiny:
    c.total_steps = 600
    c.log_every_steps = 200
    c.ckpt_every_steps = 600
    c.progress = False
    c.input.image_size = 64
    c.input.batch_size = 16
    c.image.update(dict(growth=8, blocks=(2, 2, 2, 2), init_features=16))
    c.text.tfidf.update(dict(dim=32, min_df=1))
    c.text.word.update(dict(dim=16, min_count=1, epochs=5))
    c.text.paragraph.update(dict(dim=16, min_count=1, epochs=10))
    c.text.dan.update(dict(hidden=(16,), steps=50, batch_size=16, lr=1e-2,
                           max_tokens=64))
    c.align.dim = 8
    # Low-dimensional games need a stronger pull to orthogonality and a
    # faster map than MUSE's 300-d setting (see tests/test_alignment.py).
    c.adv.update(dict(hidden=64, map_lr=1.0, beta=0.1, restarts=4,
                      criterion_items=2000))
    c.sweep.texts = ("tfidf", "word")
  return c
