r"""Localized evaluation: LoVT's probes + phrase grounding.

Tasks are "dataset/probe/mode/percent" strings (probe: linear | unet |
detection; mode: frozen | finetune); the default list is LoVT's 18 tasks.
`datasets.<name>` points at a `data_prep.localized` output directory (tasks
whose dataset is not set are skipped and listed). Every task reports mean /
population std / 95% CI over `seeds` runs after choosing the learning rate
on validation; `baselines` (random init) run in the same table.

    python -m jointcxr.eval_localized --config=configs/eval/localized.py:tiny \
        --workdir=W --config.datasets.rsna=R --config.datasets.siim=S
"""

import ml_collections as mlc

from configs import common

LOVT_TASKS = (
    "rsna/detection/finetune/1", "rsna/detection/finetune/10",
    "rsna/detection/finetune/100", "rsna/detection/frozen/1",
    "rsna/detection/frozen/10", "rsna/detection/frozen/100",
    "rsna/linear/frozen/1", "rsna/linear/frozen/10", "rsna/linear/frozen/100",
    "covid_rural/unet/finetune/100", "covid_rural/unet/frozen/100",
    "covid_rural/linear/frozen/100", "siim/unet/finetune/100",
    "siim/unet/frozen/100", "object_cxr/detection/finetune/100",
    "object_cxr/detection/frozen/100", "object_cxr/linear/frozen/100",
    "nih/linear/frozen/100")


def get_config(arg: str | None = None):
  a = common.parse_arg(arg, tiny=False)
  c = mlc.ConfigDict()
  c.checkpoint = "latest"     # of the workdir: latest | best | a step
  c.model_dir = ""
  c.input = mlc.ConfigDict(dict(data_dir=""))
  c.datasets = mlc.ConfigDict({k: "" for k in (
      "rsna", "siim", "covid_rural", "object_cxr", "nih", "ms_cxr")})
  c.tasks = LOVT_TASKS
  c.image_size = 224
  c.seeds = 5
  c.epochs = 50
  c.batch_size = 16
  c.patience = 10
  c.warmup_frozen_steps = 100
  c.lr_grid = mlc.ConfigDict(dict(linear=(1e-3, 3e-3, 1e-2),
                                  unet=(1e-4, 3e-4, 1e-3),
                                  detection=(1e-4, 3e-4, 1e-3)))
  c.unet_widths = (256, 128, 64, 32)
  c.detection_width = 128
  c.baselines = ("random",)
  c.grounding = True
  c.limit = 0               # cap examples per split (0 = all)
  if a.tiny:
    c.image_size = 64
    c.seeds = 2
    c.epochs = 3
    c.patience = 3
    c.warmup_frozen_steps = 2
    c.lr_grid = mlc.ConfigDict(dict(linear=(3e-3,), unet=(1e-3,),
                                    detection=(1e-3,)))
    c.unet_widths = (16, 16, 8, 8)
    c.detection_width = 16
    c.limit = 200
    c.tasks = ("rsna/detection/frozen/100", "rsna/linear/frozen/10",
               "rsna/linear/frozen/100", "siim/unet/frozen/100",
               "siim/linear/frozen/100", "covid_rural/linear/frozen/100",
               "nih/linear/frozen/100", "object_cxr/detection/frozen/100")
  return c
