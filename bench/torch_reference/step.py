r"""PyTorch (CPU) reference train steps for bench/train_step.py.

    bench/torch_reference/.venv/bin/python -m bench.torch_reference.step \
        --spec='{"method": "lovt", "batch": 8, "image_size": 224, ...}'

Protocol (stdin/stdout, one JSON object per line): after building the model
and the batch (`bench.torch_reference.batch`, the same NumPy batch the JAX
side times) it prints a `ready` line with the parameter count, thread count
and torch version; then every stdin line `run N` runs N train steps and
prints `{"loss": ..., "times": [seconds of each step]}`; `quit` (or EOF)
exits. The spec is a `SIZES` entry of bench/train_step.py plus `method`,
`threads`, `seed` and optionally `heads` (the JAX config's head settings).

Architectures and losses follow jointcxr (channels-last NHWC on the JAX side
is NCHW here, PyTorch's native layout):

* `lovt`: torchvision-style ResNet (v1.5 Bottleneck / BasicBlock, 1-channel
  stem), a post-LayerNorm BERT (learned positions, GELU MLP, dropout) with
  max-pooled sentences, 8-head attention pooling of regions / sentences
  (`nn.MultiheadAttention`, head-averaged weights), Linear-BN-ReLU-Linear
  projections (global and per unit; masked BatchNorm over real sentences),
  LoVT's symmetric single-head cross-attention with BatchNorm, and the loss
  0.75 L_I->R + 0.25 L_R->I (InfoNCE, tau 0.1) + 0.375 x each local
  direction (image side with spatial soft targets, report side identity).
* `convirt`: the same towers; average-pooled image, token-max-pooled report
  (without [CLS]), projections without BatchNorm, InfoNCE tau 0.1 weighted
  0.75 / 0.25.
* `joimternet`: the JoImTeRNet CNN (7x7/4 stem, six stages of two
  BasicBlocks, SoftAttention after stages 4 and 5, 1x1 region projection,
  2x2 average pool + Linear global) and the 3-layer BERT; Linear word and
  [CLS] heads; DAMSM sentence + word losses (gamma 4/5/10) and sentence +
  word triplets (margin 0.5, one random in-batch negative per anchor, lambda
  1 / 2), per-group gradient clipping at 1.5 (image / text groups).

Every step is forward, backward and a `torch.optim.AdamW` update of all
parameters with the config's lr / weight decay. Simplifications, none of
which changes the FLOPs by more than a rounding error: no NaN guard (the
JAX step's `jnp.where(finite, ...)` select); LoVT's and JoImTeRNet's
weight initialisations are PyTorch's defaults; the JoImTeRNet image and
text groups share one AdamW (same lr / wd) with a clip per group instead of
two optimisers; accuracies and logged diagnostics are not computed.
Denormals are flushed to zero (`torch.set_flush_denormal`), as XLA:CPU does.
"""

import json
import math
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.torch_reference import batch as batch_lib

NEG_INF = -1e9


# -------------------------------------------------------------- image ---
class BasicBlock(nn.Module):
  """torchvision BasicBlock: two 3x3 convs, stride on the first."""

  expansion = 1

  def __init__(self, cin: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.down = None
    if stride != 1 or cin != width:
      self.down = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False),
                                nn.BatchNorm2d(width))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
  """torchvision Bottleneck v1.5 (stride on the 3x3 conv)."""

  expansion = 4

  def __init__(self, cin: int, width: int, stride: int):
    super().__init__()
    out = width * self.expansion
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, out, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out)
    self.down = None
    if stride != 1 or cin != out:
      self.down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                nn.BatchNorm2d(out))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
  """ResNet-18/50 on 1-channel images; returns (regions NCHW, global)."""

  def __init__(self, depth: int = 50, width: int = 64):
    super().__init__()
    block, counts = {18: (BasicBlock, (2, 2, 2, 2)),
                     50: (Bottleneck, (3, 4, 6, 3))}[depth]
    self.stem = nn.Sequential(nn.Conv2d(1, width, 7, 2, 3, bias=False),
                              nn.BatchNorm2d(width), nn.ReLU(),
                              nn.MaxPool2d(3, 2, 1))
    layers, cin = [], width
    for s, n in enumerate(counts):
      w = width * 2 ** s
      for i in range(n):
        layers.append(block(cin, w, 2 if (s > 0 and i == 0) else 1))
        cin = w * block.expansion
    self.layers = nn.Sequential(*layers)
    self.out_dim = cin

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = self.layers(self.stem(x))
    return y, y.mean(dim=(2, 3))


class SoftAttention(nn.Module):
  """JoImTeRNet's x + s * (x * sum_h softmax_hw(leaky(conv1x1(x))))."""

  def __init__(self, channels: int, heads: int = 16):
    super().__init__()
    self.conv = nn.Conv2d(channels, heads, 1)
    self.scale = nn.Parameter(torch.rand(()))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    logits = F.leaky_relu(self.conv(x), 0.01).reshape(b, -1, h * w)
    a = logits.softmax(dim=-1).sum(dim=1).reshape(b, 1, h, w)
    return x + self.scale * (x * a)


class JoImTerCNN(nn.Module):
  """JoImTeRNet image tower; returns (regions NCHW, global)."""

  def __init__(self, channels=(16, 32, 64, 128, 256, 512),
               stem_channels: int = 8, region_dim: int = 512,
               global_dim: int = 512, attention_after=(4, 5)):
    super().__init__()
    self.stem = nn.Sequential(
        nn.Conv2d(1, stem_channels, 7, 4, 3, bias=False),
        nn.BatchNorm2d(stem_channels), nn.ReLU())
    self.stages = nn.ModuleList()
    cin = stem_channels
    for s, c in enumerate(channels, start=1):
      mods = [BasicBlock(cin, c, 2), BasicBlock(c, c, 1)]
      if s in attention_after:
        mods.append(SoftAttention(c))
      self.stages.append(nn.Sequential(*mods))
      cin = c
    self.region_proj = nn.Conv2d(channels[-2], region_dim, 1, bias=False)
    self.global_proj = nn.Linear(4 * channels[-1], global_dim)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = self.stem(x)
    for stage in self.stages[:-1]:
      y = stage(y)
    regions = self.region_proj(y)
    y = self.stages[-1](y)
    pooled = F.adaptive_avg_pool2d(y, 2).flatten(1)
    return regions, self.global_proj(pooled)


# --------------------------------------------------------------- text ---
class Bert(nn.Module):
  """Post-LN BERT encoder; returns word states [B, T, D]."""

  def __init__(self, vocab: int, hidden: int, layers: int, heads: int,
               mlp_dim: int, max_len: int, dropout: float):
    super().__init__()
    self.word = nn.Embedding(vocab, hidden)
    self.position = nn.Embedding(max_len, hidden)
    self.token_type = nn.Embedding(2, hidden)
    self.ln = nn.LayerNorm(hidden, eps=1e-12)
    self.drop = nn.Dropout(dropout)
    layer = nn.TransformerEncoderLayer(
        hidden, heads, mlp_dim, dropout, activation="gelu",
        layer_norm_eps=1e-12, batch_first=True, norm_first=False)
    # enable_nested_tensor would skip padded tokens in eval only; training
    # runs the dense path, like XLA.
    self.encoder = nn.TransformerEncoder(layer, layers,
                                         enable_nested_tensor=False)

  def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(tokens.shape[1])
    x = self.word(tokens) + self.position(pos)[None] + self.token_type.weight[0]
    x = self.drop(self.ln(x))
    return self.encoder(x, src_key_padding_mask=~mask)


def sentence_max_pool(words: torch.Tensor, sids: torch.Tensor,
                      slots: int) -> tuple[torch.Tensor, torch.Tensor]:
  """Max over each sentence's tokens: ([B, S, D], mask [B, S])."""
  b, _, d = words.shape
  # Slot 0 collects the tokens outside sentences (-1) and is dropped.
  idx = (sids + 1).clamp(0, slots).long()[..., None].expand(-1, -1, d)
  out = torch.zeros(b, slots + 1, d, dtype=words.dtype)
  out = out.scatter_reduce(1, idx, words, reduce="amax", include_self=False)
  mask = torch.zeros(b, slots + 1, dtype=torch.bool)
  mask = mask.scatter(1, idx[..., 0], True)
  return out[:, 1:], mask[:, 1:]


# -------------------------------------------------------------- heads ---
class Projection(nn.Module):
  """Linear -> (masked) BatchNorm -> ReLU -> Linear, on [B, D] or [B, N, D]."""

  def __init__(self, din: int, hidden: int, out: int, norm: bool):
    super().__init__()
    self.fc1 = nn.Linear(din, hidden)
    self.bn = nn.BatchNorm1d(hidden) if norm else None
    self.fc2 = nn.Linear(hidden, out)

  def forward(self, x: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    h = self.fc1(x)
    if self.bn is not None:
      shape = h.shape
      flat = h.reshape(-1, shape[-1])
      if mask is None:
        flat = self.bn(flat)
      else:
        # Statistics over real units only, as jointcxr's masked BatchNorm.
        keep = mask.reshape(-1)
        flat = flat.index_put((keep,), self.bn(flat[keep]))
      h = flat.reshape(shape)
    return self.fc2(F.relu(h))


class AttentionPool(nn.Module):
  """Multi-head attention with the masked mean of the units as query."""

  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

  def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    if mask is None:
      mask = torch.ones(x.shape[:2], dtype=torch.bool)
    m = mask[..., None].to(x.dtype)
    q = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
    pooled, w = self.mha(q, x, x, key_padding_mask=~mask,
                         average_attn_weights=True)
    return pooled[:, 0], w[:, 0] * mask


class CrossAttention(nn.Module):
  """LoVT's symmetric single-head region <-> sentence attention."""

  def __init__(self, dim: int, norm: bool):
    super().__init__()
    self.key = nn.Linear(dim, dim)
    self.value = nn.Linear(dim, dim)
    self.out = nn.Linear(dim, dim)
    self.bn_r = nn.BatchNorm1d(dim) if norm else None
    self.bn_s = nn.BatchNorm1d(dim) if norm else None
    self.dim = dim

  def forward(self, regions: torch.Tensor, sents: torch.Tensor,
              smask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.einsum("bnd,bsd->bns", self.key(regions),
                          self.key(sents)) / math.sqrt(self.dim)
    alpha = scores.masked_fill(~smask[:, None, :], NEG_INF).softmax(2)
    beta = scores.softmax(1)
    r2i = self.out(torch.einsum("bns,bsd->bnd", alpha, self.value(sents)))
    i2r = self.out(torch.einsum("bns,bnd->bsd", beta, self.value(regions)))
    if self.bn_r is not None:
      r2i = self.bn_r(r2i.reshape(-1, self.dim)).reshape(r2i.shape)
      flat = i2r.reshape(-1, self.dim)
      keep = smask.reshape(-1)
      i2r = flat.index_put((keep,), self.bn_s(flat[keep])).reshape(i2r.shape)
    return r2i, i2r


# ------------------------------------------------------------- losses ---
def infonce(zi: torch.Tensor, zt: torch.Tensor,
            tau: float) -> tuple[torch.Tensor, torch.Tensor]:
  """(image->text CE, text->image CE) of cosine logits / tau."""
  logits = F.normalize(zi, dim=-1) @ F.normalize(zt, dim=-1).T / tau
  target = torch.arange(zi.shape[0])
  return F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)


def grid_targets(h: int, w: int, threshold: float,
                 smooth_lambda: float) -> torch.Tensor:
  """LoVT's spatial soft targets over an h x w grid, [N, N]."""
  ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
  pos = torch.stack([ii.reshape(-1), jj.reshape(-1)], -1).float()
  pos = pos / math.sqrt(h * h + w * w)
  dist = torch.cdist(pos, pos)
  return torch.where(dist <= threshold, torch.exp(-smooth_lambda * dist),
                     torch.zeros(()))


def lovt_local(zl: torch.Tensor, za: torch.Tensor, weights: torch.Tensor,
               valid: torch.Tensor, tau: float,
               targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
  """(l2att, att2l) of LoVT's local intra-sample loss."""
  w = weights.detach() * valid
  w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
  pi = targets[None] * valid[:, None, :]
  pi = pi / pi.sum(-1, keepdim=True).clamp_min(1e-12)
  s = torch.einsum("bkd,bjd->bkj", F.normalize(zl, dim=-1),
                   F.normalize(za, dim=-1)) / tau
  ok = valid.any(-1).float()

  def direction(scores: torch.Tensor) -> torch.Tensor:
    masked = scores.masked_fill(~valid[:, None, :], NEG_INF)
    per_unit = masked.logsumexp(-1) - (pi * scores).sum(-1)
    return ((w * per_unit).sum(-1) * ok).sum() / ok.sum().clamp_min(1.0)

  return direction(s), direction(s.transpose(1, 2))


def damsm_word_scores(regions: torch.Tensor, words: torch.Tensor,
                      wmask: torch.Tensor, gamma1: float,
                      gamma2: float) -> torch.Tensor:
  """DAMSM R(i, j) for every image i and text j, [B, B]."""
  aff = torch.einsum("jtd,ird->ijtr", words, regions)
  over_words = aff.masked_fill(~wmask[None, :, :, None], NEG_INF).softmax(2)
  alpha = (gamma1 * over_words).softmax(3)
  context = torch.einsum("ijtr,ird->ijtd", alpha, regions)
  cos = (F.normalize(context, dim=-1)
         * F.normalize(words, dim=-1)[None]).sum(-1)
  return (gamma2 * cos).masked_fill(~wmask[None], NEG_INF).logsumexp(2)


def hinge(pos: torch.Tensor, neg: torch.Tensor,
          margin: float) -> torch.Tensor:
  """mean_i [m - pos_i + neg_i]+."""
  return F.relu(margin - pos + neg).mean()


# -------------------------------------------------------------- model ---
class TwoTowers(nn.Module):
  """Image tower + text tower + the method's heads and loss."""

  def __init__(self, spec: dict[str, Any]):
    super().__init__()
    self.method = m = spec["method"]
    hd = dict(dim=512, hidden=2048, pool_heads=8)
    hd.update(spec.get("heads") or {})
    dim, hidden = hd["dim"], hd["hidden"]
    text = dict(hidden=512, layers=3, heads=8, mlp_dim=2048, dropout=0.1)
    text.update(spec["text"])
    self.txt = Bert(spec["vocab"], text["hidden"], text["layers"],
                    text["heads"], text["mlp_dim"], spec["tokens"],
                    text["dropout"])
    th = text["hidden"]
    self.slots = spec["max_sentences"]
    if m == "joimternet":
      self.img = JoImTerCNN(**spec["image"])
      rd = spec["image"].get("region_dim", 512)
      self.words_proj = nn.Linear(th, rd)
      self.txt_proj = nn.Linear(th, spec["image"].get("global_dim", 512))
      return
    self.img = ResNet(**spec["image"])
    c = self.img.out_dim
    norm = m != "convirt"
    self.img_proj = Projection(c, hidden, dim, norm)
    self.txt_proj = Projection(th, hidden, dim, norm)
    if m == "lovt":
      self.img_pool = AttentionPool(c, hd["pool_heads"])
      self.txt_pool = AttentionPool(th, hd["pool_heads"])
      self.img_local = Projection(c, hidden, dim, norm)
      self.txt_local = Projection(th, hidden, dim, norm)
      self.cross = CrossAttention(dim, True)

  def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """The method's total loss on batch `b`."""
    regions, glob = self.img(b["image"])
    words = self.txt(b["tokens"], b["text_mask"])
    wmask = b["text_mask"].clone()
    wmask[:, 0] = False  # [CLS] is not a word
    if self.method == "convirt":
      zi = self.img_proj(glob)
      zt = self.txt_proj(words.masked_fill(~wmask[..., None], NEG_INF)
                         .amax(1))
      i2t, t2i = infonce(zi, zt, 0.1)
      return 0.75 * i2t + 0.25 * t2i
    bsz, c, h, w = regions.shape
    units = regions.flatten(2).transpose(1, 2)  # [B, h*w, C]
    if self.method == "joimternet":
      return self._joimternet(units, glob, words, wmask)
    pooled, iw = self.img_pool(units)
    sents, smask = sentence_max_pool(words, b["sentence_ids"], self.slots)
    spooled, sw = self.txt_pool(sents, smask)
    i2t, t2i = infonce(self.img_proj(pooled), self.txt_proj(spooled), 0.1)
    zl_i = self.img_local(units)
    zl_t = self.txt_local(sents, smask)
    r2i, i2r = self.cross(zl_i, zl_t, smask)
    targets = grid_targets(h, w, 0.5, 1.0)
    li = lovt_local(zl_i, r2i, iw, torch.ones(bsz, h * w, dtype=torch.bool),
                    0.3, targets)
    lt = lovt_local(zl_t, i2r, sw, smask, 0.3, torch.eye(self.slots))
    return (0.75 * i2t + 0.25 * t2i
            + 0.375 * (li[0] + li[1] + lt[0] + lt[1]))

  def _joimternet(self, regions, glob, words, wmask) -> torch.Tensor:
    zt = self.txt_proj(words[:, 0])
    emb = self.words_proj(words)
    n = zt.shape[0]
    neg = (torch.arange(n) + torch.randint(1, n, (n,))) % n
    zi_n, zt_n = F.normalize(glob, dim=-1), F.normalize(zt, dim=-1)
    sim = zi_n @ zt_n.T
    target = torch.arange(n)
    l_s = (F.cross_entropy(10.0 * sim, target)
           + F.cross_entropy(10.0 * sim.T, target))
    pos = sim.diagonal()
    l_st = hinge(pos, sim[target, neg], 0.5) + hinge(pos, sim[neg, target],
                                                     0.5)
    scores = damsm_word_scores(regions, emb, wmask, 4.0, 5.0)
    l_w = (F.cross_entropy(10.0 * scores, target)
           + F.cross_entropy(10.0 * scores.T, target))
    # D = -R: [R(i,n(i)) - R(i,i) + m]+ both ways.
    pr = scores.diagonal()
    l_wt = hinge(pr, scores[target, neg], 0.5) + hinge(pr, scores[neg, target],
                                                       0.5)
    return (l_s + l_w) + 2.0 * (l_st + l_wt)


# --------------------------------------------------------------- main ---
def to_torch(host: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
  """The NumPy batch as tensors (image NHWC -> NCHW)."""
  # Copied into a fresh tensor: with C = 1, permute(...).contiguous() (and
  # NumPy's ascontiguousarray) keep the permuted strides, since size-1 dims
  # count as contiguous, and oneDNN's convolution backward then corrupts
  # the heap (seen at the JoImTeRNet stem).
  nchw = torch.from_numpy(host["image"]).permute(0, 3, 1, 2)
  image = torch.empty(nchw.shape, dtype=nchw.dtype).copy_(nchw)
  return {"image": image,
          "tokens": torch.from_numpy(host["tokens"]).long(),
          "text_mask": torch.from_numpy(host["text_mask"]),
          "sentence_ids": torch.from_numpy(host["sentence_ids"]).long()}


class Step:
  """Model + AdamW + batch; `run(n)` times n train steps."""

  def __init__(self, spec: dict[str, Any]):
    torch.manual_seed(spec.get("seed", 0))
    self.model = TwoTowers(spec)
    self.method = spec["method"]
    lr, wd = {"lovt": (1e-4, 1e-6), "convirt": (1e-4, 1e-6),
              "joimternet": (1e-4, 1e-4)}[self.method]
    lr, wd = spec.get("lr", lr), spec.get("wd", wd)
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr,
                                 weight_decay=wd)
    self.groups = None
    if self.method == "joimternet":
      # Clip image and text groups separately, as the config's groups do.
      named = list(self.model.named_parameters())
      self.groups = [[p for k, p in named if k.startswith("img.")],
                     [p for k, p in named if not k.startswith("img.")]]
    self.batch = to_torch(batch_lib.make_batch(
        batch=spec["batch"], image_size=spec["image_size"],
        tokens=spec["tokens"], vocab=spec["vocab"],
        max_sentences=spec["max_sentences"], seed=spec.get("seed", 0)))
    self.model.train()
    self.params = sum(p.numel() for p in self.model.parameters())

  def run(self, n: int) -> tuple[float, list[float]]:
    """Runs n steps; returns (last loss, seconds of each step)."""
    times, loss = [], float("nan")
    for _ in range(n):
      t = time.perf_counter()
      self.opt.zero_grad(set_to_none=True)
      out = self.model(self.batch)
      out.backward()
      if self.groups is not None:
        for g in self.groups:
          torch.nn.utils.clip_grad_norm_(g, 1.5)
      self.opt.step()
      loss = float(out.detach())
      times.append(time.perf_counter() - t)
    return loss, times


def peak_rss_mib() -> float:
  """This process's peak RSS (VmHWM: unlike getrusage's ru_maxrss it starts
  afresh at exec, so the forked JAX parent's pages are not counted)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def main(argv: list[str]) -> None:
  """Reads --spec=JSON, prints the ready line, serves `run N` / `quit`."""
  specs = [a for a in argv[1:] if a.startswith("--spec=")]
  if not specs:
    raise SystemExit("usage: python -m bench.torch_reference.step "
                     "--spec=JSON")
  spec = json.loads(specs[-1][len("--spec="):])
  threads = int(spec.get("threads", 2))
  torch.set_num_threads(threads)
  # XLA:CPU executes with denormals flushed to zero (its ScopedFlushDenormal);
  # without the same, PyTorch steps that drift into denormal activations or
  # gradients (seen with ConVIRT's un-normalised heads) run several times
  # slower for a reason unrelated to either framework's kernels.
  torch.set_flush_denormal(True)
  t = time.perf_counter()
  step = Step(spec)
  ready = {"ready": True, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "params": step.params,
           "build_s": time.perf_counter() - t}
  print(json.dumps(ready), flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
      break
    if cmd[0] != "run" or len(cmd) != 2:
      raise SystemExit(f"unknown command {line!r}; expected 'run N' or "
                       "'quit'")
    loss, times = step.run(int(cmd[1]))
    print(json.dumps({"loss": loss, "times": times,
                      "peak_rss_mib": peak_rss_mib()}), flush=True)


if __name__ == "__main__":
  main(sys.argv)
