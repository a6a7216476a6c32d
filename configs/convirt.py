r"""ConVIRT (Zhang et al.), as LoVT's baseline: global InfoNCE only.

ResNet-50 with average pooling, token-max-pooled report, projections without
BatchNorm, tau 0.1, image->report weight 0.75, Adam 1e-4, one random
sentence per report per step (METHODS.md §3.3).

    python -m jointcxr.train --config=configs/convirt.py:tiny --workdir=W \
        --config.input.data_dir=D
"""

from configs import common


def get_config(arg: str | None = None):
  a = common.parse_arg(arg, tiny=False, size=224)
  c = common.base("convirt")
  c.batch_size = 32
  c.total_steps = 60000
  c.input.image_size = a.size
  c.input.text_aug = "one_sentence"
  c.model.image = dict(depth=50)
  c.model.text = common.bert_base()
  c.model.heads = dict(dim=512, hidden=2048, norm="none")
  c.optim.optimizer = "adam"
  c.optim.lr = 1e-4
  c.optim.wd = 0.0
  c.optim.frozen = (r"^txt/embed_", r"^txt/encoder/layer_[0-5]/")
  # LoVT (and its ConVIRT / CLIP* runs) validate every epoch and
  # early-stop on the validation loss: patience 10, min_delta 1e-5.
  c.val.every_steps = -1
  c.early_stopping.patience = 10
  if a.tiny:
    common.tiny(c)
    c.optim.frozen = ()
  return c
