r"""Global evaluation: retrieval both ways, linear probe, zero-shot.

    python -m jointcxr.eval_global --config=configs/eval/global.py:tiny \
        --workdir=W --config.input.data_dir=D [--config.model_dir=EXPORTED]

`tiny` limits the pools so it runs in seconds on CPU.
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str | None = None):
  a = common.parse_arg(arg, tiny=False, hsu=False)
  c = mlc.ConfigDict()
  c.checkpoint = "latest"     # of the workdir: latest | best | a step
  c.model_dir = ""            # exported model dir; "" = the workdir
  c.input = mlc.ConfigDict(dict(data_dir=""))
  c.split = "test"
  c.batch_size = 64
  c.limit = 0                 # 0: the whole split
  # How reports are embedded: "auto" = as in training ("sentence_mean" for
  # one-sentence training, ConVIRT/CLIP*; else "report"); see
  # jointcxr.evaluators.common.resolve_text_mode.
  c.text_mode = "auto"
  c.pool_size = 1000          # JoImTeRNet's 1k pools
  c.probe = True
  c.probe_train_split = "train"
  c.probe_val_split = "validate"
  c.probe_limit = 0
  c.uncertain = "ones"
  c.zero_shot = True
  c.hsu_sweep = a.hsu         # Hsu et al.'s supervision/section tables
  if a.tiny:
    c.batch_size = 16
    c.limit = 256
    c.probe_limit = 512
  return c
