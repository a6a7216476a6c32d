r"""JoImTeRNet (Ji et al. 2021): global + DAMSM region-word matching, triplets.

Paper/code settings (METHODS.md §2): a small grayscale CNN with soft
attention at 2048 px (256 regions of 512-d), a 3-layer BERT-512 trained
from scratch (160 tokens), DAMSM gammas (4, 5, 10), triplet margins 0.5,
lambda (1, 2); two AdamW optimisers (image / text) with lr 1e-4, wd 1e-4,
clipping 1.5 each, StepLR x0.1 at epoch 20 of 35, batch 128; `mlm` turns on
the MLM multitask steps (70% of steps update the text tower alone).

    python -m jointcxr.train --config=configs/joimternet.py:tiny --workdir=W \
        --config.input.data_dir=D
"""

from configs import common


def get_config(arg: str | None = None):
  a = common.parse_arg(arg, tiny=False, mlm=False, size=2048)
  c = common.base("joimternet")
  c.batch_size = 128
  c.total_epochs = 35.0
  c.mlm_prob = 0.7 if a.mlm else 0.0
  c.input.image_size = a.size
  c.input.image_aug = "joimternet"
  c.input.aug = common.joimternet_aug()
  c.input.max_tokens = 160
  c.input.max_sentences = 32
  c.input.mean, c.input.std = 0.5, 0.5
  c.model.image_model = "joimter_cnn"
  c.model.image = dict(region_dim=512, global_dim=512)
  c.model.text = dict(vocab_size=-1, hidden=512, layers=3, heads=8,
                      mlp_dim=2048, max_len=160, max_sentences=32,
                      dropout=0.1)
  c.model.heads = dict(dim=512, mlm=a.mlm)
  c.optim.wd = 1e-4
  c.optim.schedule = "step"
  c.optim.step_epochs = (20,)
  c.optim.groups = ({"name": "image", "regex": "^img", "clip_norm": 1.5},
                    {"name": "text", "regex": "^(txt|mlm_head)",
                     "clip_norm": 1.5})
  if a.tiny:
    common.tiny(c)
    c.input.image_size = 256
    c.model.image = dict(channels=(4, 4, 8, 8, 16, 16), stem_channels=4,
                         region_dim=32, global_dim=32)
  return c
