r"""CLIP* (LoVT's global-only baseline) and its SigLIP variant.

LoVT's encoders with attention pooling and BatchNorm heads, the global loss
only, LoVT's optimiser, one random sentence per report. `loss=sigmoid`
switches to SigLIP (learnable temperature and bias); `learn_t` makes the
softmax temperature learnable as in CLIP.

    python -m jointcxr.train --config=configs/clip.py:tiny,loss=sigmoid \
        --workdir=W --config.input.data_dir=D
"""

from configs import common


def get_config(arg: str | None = None):
  a = common.parse_arg(arg, tiny=False, loss="softmax", learn_t=False,
                       size=224)
  if a.loss not in ("softmax", "sigmoid"):
    raise ValueError(f"loss={a.loss!r}: expected softmax or sigmoid")
  method = "siglip" if a.loss == "sigmoid" else "clip"
  c = common.base(method)
  c.batch_size = 512
  c.accum_steps = 16
  c.total_epochs = 100.0      # LoVT's maximum (it early-stops on val loss)
  c.input.image_size = a.size
  c.input.text_aug = "one_sentence"
  c.model.image = dict(depth=50)
  c.model.text = common.bert_base()
  c.model.heads = dict(dim=512, hidden=2048, norm="batch", pool_heads=8,
                       learn_temperature=a.learn_t, temperature=0.1)
  c.optim.lr = 1e-4
  c.optim.wd = 1e-6
  c.optim.schedule = "cosine_per_epoch"
  c.optim.frozen = (r"^txt/embed_", r"^txt/encoder/layer_[0-5]/")
  # LoVT (and its ConVIRT / CLIP* runs) validate every epoch and
  # early-stop on the validation loss: patience 10, min_delta 1e-5.
  c.val.every_steps = -1
  c.early_stopping.patience = 10
  if a.tiny:
    common.tiny(c)
    c.accum_steps = 1
    c.optim.frozen = ()
  return c
