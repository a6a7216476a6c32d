r"""LoVT (Müller et al. 2022): global InfoNCE + local intra-sample losses.

Paper settings (METHODS.md §3): ResNet-50 at 224 px with attention pooling,
a BERT-base report encoder (import Bio_ClinicalBERT with `model_init`;
embeddings and the first 6 layers frozen), projection MLPs 2048 -> 512 with
BatchNorm, symmetric region <-> sentence cross-attention, AdamW 1e-4 (wd
1e-6), LoVT's per-epoch cosine, batch 32 x 16 accumulation (512 per step;
ours keeps all 512 as contrastive negatives), LoVT augmentations and
sentence swaps.

    python -m jointcxr.train --config=configs/lovt.py:tiny --workdir=W \
        --config.input.data_dir=D
"""

from configs import common


def get_config(arg: str | None = None):
  a = common.parse_arg(arg, tiny=False, accum=16, size=224)
  c = common.base("lovt")
  c.batch_size = 512
  c.accum_steps = a.accum
  c.total_epochs = 100.0      # LoVT's maximum (it early-stops on val loss)
  c.input.image_size = a.size
  c.input.text_aug = "sentence_swap"
  c.model.image = dict(depth=50)
  c.model.text = common.bert_base()
  c.model.heads = dict(dim=512, hidden=2048, norm="batch", pool_heads=8,
                       attention_norm="batch")
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
    c.accum_steps = 2
    c.optim.frozen = (r"^txt/embed_position",)
  return c
