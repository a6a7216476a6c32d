"""Shared config pieces: `parse_arg` and the blocks every method config uses.

Configs are Python (ml_collections), by design: they are code you read and
review, never data loaded from the network. `get_config(arg)` parses `arg`
with `parse_arg` (big_vision style): "k=v,k2=v2", bare boolean names
("tiny") or a single unnamed value for the first key; values are typed by
the defaults. Fields are then overridden with `--config.a.b=value`;
configs are locked, so a typo is an error.
"""

import ast
from typing import Any

import ml_collections as mlc


def parse_arg(arg: str | None, **defaults: Any) -> mlc.ConfigDict:
  """Parses "k=v,flag,k2=v2" into a ConfigDict typed by `defaults`.

  Raises:
    ValueError: an unknown key or a value that does not fit its type.
  """
  out = mlc.ConfigDict(dict(defaults))
  if not arg:
    return out
  keys = list(defaults)
  for i, part in enumerate(p.strip() for p in arg.split(",")):
    if not part:
      continue
    if "=" in part:
      k, v = (s.strip() for s in part.split("=", 1))
    elif part in defaults and isinstance(defaults[part], bool):
      k, v = part, "True"
    elif i == 0 and keys:
      k, v = keys[0], part
    else:
      raise ValueError(f"config arg {part!r}: not a known flag; known: "
                       f"{sorted(defaults)}")
    if k not in defaults:
      raise ValueError(f"config arg key {k!r} unknown; known: "
                       f"{sorted(defaults)}")
    out[k] = _typed(k, v, defaults[k])
  return out


def _typed(key: str, value: str, default: Any) -> Any:
  if isinstance(default, bool):
    if value.lower() in ("true", "1", "yes"):
      return True
    if value.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"config arg {key}={value!r}: expected a boolean")
  if isinstance(default, (int, float)):
    try:
      return type(default)(ast.literal_eval(value))
    except (ValueError, SyntaxError):
      raise ValueError(f"config arg {key}={value!r}: expected "
                       f"{type(default).__name__}") from None
  return value


def base(method: str) -> mlc.ConfigDict:
  """Everything but the method-specific model/optimiser choices."""
  c = mlc.ConfigDict()
  c.method = method
  c.seed = 0
  c.total_steps = 1000
  c.total_epochs = 0.0       # > 0: train this many epochs (overrides steps)
  c.batch_size = 32          # global, per optimizer step
  c.accum_steps = 1          # contrastive-aware micro-batches per step
  c.ckpt_every_steps = 500
  c.keep_checkpoints = 3
  c.log_every_steps = 50
  c.eval_every_steps = 0     # 0: evaluate at the end only
  c.nan_policy = "stop"      # stop | skip
  c.dtype = "float32"        # compute dtype; params stay float32
  c.model_init = ""          # local pretrained weights (see export.py)
  c.resume = ""              # another workdir's checkpoint to start from
  c.mlm_prob = 0.0           # JoImTeRNet: share of MLM-only steps
  c.debug_nan_step = -1      # tests: make this step's loss NaN

  c.input = mlc.ConfigDict()
  c.input.data_dir = ""
  c.input.split = "train"
  c.input.tokenizer = ""     # .model / vocab.txt; "" trains one in workdir
  c.input.vocab_size = 8000  # when training the tokenizer
  c.input.image_size = 224
  c.input.max_tokens = 512
  c.input.max_sentences = 32
  c.input.image_aug = "lovt"
  # Augmentation strengths (jointcxr.data.augment.Params); pixel-valued
  # ones (the blur) are defined at aug.reference_size and scale with the
  # image size. Every method config sets its own explicitly.
  c.input.aug = mlc.ConfigDict(lovt_aug())
  c.input.text_aug = "none"
  c.input.view = "random"
  c.input.hflip = True
  c.input.mean = 0.5
  c.input.std = 0.5
  c.input.shuffle_buffer = 16384
  c.input.prefetch = 2

  c.model = mlc.ConfigDict()
  c.model.method = method
  c.model.image_model = "resnet"
  c.model.image = mlc.ConfigDict()
  c.model.text_model = "bert"
  c.model.text = mlc.ConfigDict()
  c.model.heads = mlc.ConfigDict()

  c.loss = mlc.ConfigDict()

  c.optim = mlc.ConfigDict()
  c.optim.optimizer = "adamw"
  c.optim.lr = 1e-4
  c.optim.wd = 1e-6
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.step_epochs = ()
  c.optim.step_factor = 0.1
  c.optim.clip_norm = 0.0
  c.optim.groups = ()        # ({"name", "regex", overrides...}, ...)
  c.optim.frozen = ()        # regexes of frozen parameter paths

  # Strings, so `--config.mesh=data:-1,fsdp:4` and
  # `--config.sharding_rules='.*=fsdp(axis=fsdp)'` override them (syntax:
  # jointcxr/sharding.py).
  c.mesh = "data:-1"
  c.sharding_rules = ".*=replicate"
  c.logical_axis_rules = [("act_batch", ("data", "fsdp")), ("mlp", "model"),
                          ("heads", "model"), ("kv", "model"),
                          ("vocab", "model")]

  c.evals = mlc.ConfigDict()
  c.evals.retrieval = mlc.ConfigDict(dict(split="validate", limit=1000,
                                          batch_size=64))

  # Validation loss (the method's objective, eval mode, full global
  # batches) with early stopping and best-checkpoint selection.
  c.val = mlc.ConfigDict()
  c.val.every_steps = 0      # 0: off; -1: once per epoch; N: every N steps
  c.val.split = "validate"
  c.val.batches = 8          # global batches per validation (0: the split)
  c.val.keep_best = True     # best state by the metric -> checkpoints_best/
  c.early_stopping = mlc.ConfigDict()
  c.early_stopping.patience = 0      # validations without improvement; 0: off
  c.early_stopping.min_delta = 1e-5
  c.early_stopping.metric = "val/loss"
  c.early_stopping.mode = "min"      # min | max

  # Training health: warn when the global InfoNCE loss stays at chance.
  c.health = mlc.ConfigDict()
  c.health.chance_tol = 0.02   # mean loss / ln(B) >= 1 - tol: "at chance"
  c.health.chance_window = 5   # for this many consecutive logged values
  c.health.chance_after = 0.1  # after max(warmup_steps, this * total_steps)
  return c


def lovt_aug() -> dict:
  """LoVT's augmentation strengths, defined at 224 px (METHODS.md 3.3)."""
  return dict(crop_scale=(0.6, 1.0), crop_ratio=(3.0 / 4.0, 4.0 / 3.0),
              degrees=20.0, translate=0.1, zoom=(0.95, 1.05),
              brightness=(0.6, 1.4), contrast=(0.6, 1.4),
              blur_sigma=(0.1, 3.0), blur_kernel=23, reference_size=224,
              crop_fraction=2048.0 / 2544.0)


def joimternet_aug() -> dict:
  """JoImTeRNet's: rotation +-15 deg, ColorJitter [0.5, 1.8], 2048 of
  ~2544 px crops (METHODS.md 2.3); the crop/affine/blur keys are unused."""
  return dict(lovt_aug(), degrees=15.0, brightness=(0.5, 1.8),
              contrast=(0.5, 1.8))


def small_image_aug() -> dict:
  """Mild strengths for small images (the tiny configs and the demo, 64 px).

  LoVT's strengths are defined for 224-px real radiographs; at 64 px their
  60 % crops, +-20 deg rotations and +-40 % intensity jitter remove or
  distort most findings (bench.ceilings' supervised tower measures it), so
  small configs jitter geometry and intensity by a few per cent only and
  skip the blur.
  """
  return dict(lovt_aug(), crop_scale=(0.9, 1.0), crop_ratio=(0.9, 1.1),
              degrees=3.0, translate=0.05, zoom=(0.95, 1.05),
              brightness=(0.9, 1.1), contrast=(0.9, 1.1),
              blur_sigma=(0.0, 0.0))


def bert_base(vocab_size: int = -1) -> dict:
  """BERT-base sized text tower (vocab -1: taken from the tokenizer)."""
  return dict(vocab_size=vocab_size, hidden=768, layers=12, heads=12,
              mlp_dim=3072, max_len=512, max_sentences=32, dropout=0.1)


def tiny(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """Shrinks a config so a run takes seconds on a CPU."""
  c.total_steps = 8
  c.total_epochs = 0.0
  c.batch_size = 8
  c.ckpt_every_steps = 4
  c.log_every_steps = 2
  c.input.image_size = 64
  c.input.max_tokens = 48
  c.input.max_sentences = 6
  c.input.vocab_size = 256
  c.input.shuffle_buffer = 256
  c.evals.retrieval.limit = 64
  c.evals.retrieval.batch_size = 16
  c.input.aug = mlc.ConfigDict(small_image_aug())
  # Reports name sides ("left effusion"): a flip makes the pair disagree.
  # LoVT flips anyway (its default); the small configs do not.
  c.input.hflip = False
  c.val.every_steps = 0  # seconds-long runs: set it to see val/loss
  c.early_stopping.patience = 0
  if c.model.image_model == "resnet":
    # Stride 16: a 4 x 4 region grid at 64 px (2 x 2 at stride 32 is too
    # coarse for local losses, grounding and segmentation probes).
    c.model.image = mlc.ConfigDict(dict(depth=18, width=8, output_stride=16))
  c.model.text = mlc.ConfigDict(dict(
      vocab_size=-1, hidden=32, layers=1, heads=2, mlp_dim=64, max_len=48,
      max_sentences=6, dropout=0.0))
  c.model.heads.dim = 32
  c.model.heads.hidden = 64
  c.model.heads.pool_heads = 2
  return c
