"""Image augmentations as stateless TF ops (exactly reproducible from a seed).

Every random draw uses `tf.random.stateless_*` with a seed derived from (run
seed, example index, op id), so an example's augmentation depends only on
its position in the stream: a resumed run sees the same pixels.

- `lovt`: random resized crop (scale 0.6-1, ratio 3/4-4/3), horizontal flip
  (p 0.5, LoVT's default although reports mention laterality: set
  `hflip=False` to disable), affine (rotation +-20 deg, translation +-10%,
  scale 0.95-1.05), brightness and contrast in [0.6, 1.4], Gaussian blur
  sigma in [0.1, 3.0] px at 224 px (scaled with the image size).
- `joimternet`: rotation +-15 deg, random crop with zero padding,
  brightness / contrast in [0.5, 1.8] (saturation has no effect on gray).
- `none` / eval: pad to a square, resize.

Geometric ops can be applied to a mask with the same seed (`geometric`) so
images and masks stay aligned.
"""

import math

import tensorflow as tf


def _seed(seed: tf.Tensor, op: int) -> tf.Tensor:
  """A [2] int32 stateless seed for one op from an example seed."""
  return tf.random.experimental.stateless_fold_in(seed, op)


def pad_to_square(img: tf.Tensor) -> tf.Tensor:
  """Zero-pads [H, W, C] symmetrically to [max, max, C]."""
  h, w = tf.shape(img)[0], tf.shape(img)[1]
  s = tf.maximum(h, w)
  return tf.image.pad_to_bounding_box(img, (s - h) // 2, (s - w) // 2, s, s)


def eval_resize(img: tf.Tensor, size: int, method: str = "bilinear"
                ) -> tf.Tensor:
  """Pad to square, then resize (LoVT's validation transform)."""
  return tf.image.resize(pad_to_square(img), (size, size), method=method)


def _crop_box(seed, h, w, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3)):
  """Random-resized-crop window (offset, size) like torchvision's."""
  area = tf.cast(h * w, tf.float32)
  u = tf.random.stateless_uniform([2], seed)
  target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
  logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1]
  ar = tf.exp(logr)
  cw = tf.cast(tf.round(tf.sqrt(target * ar)), tf.int32)
  ch = tf.cast(tf.round(tf.sqrt(target / ar)), tf.int32)
  cw, ch = tf.clip_by_value(cw, 1, w), tf.clip_by_value(ch, 1, h)
  o = tf.random.stateless_uniform([2], _seed(seed, 1))
  oy = tf.cast(tf.floor(o[0] * tf.cast(h - ch + 1, tf.float32)), tf.int32)
  ox = tf.cast(tf.floor(o[1] * tf.cast(w - cw + 1, tf.float32)), tf.int32)
  return oy, ox, ch, cw


def _affine(img, seed, degrees, translate, scale, method):
  """Rotation/translation/scale about the centre (ImageProjectiveTransform)."""
  size = tf.cast(tf.shape(img)[0], tf.float32)
  u = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
  ang = u[0] * degrees * math.pi / 180.0
  s = 1.0 + u[1] * (scale - 1.0) if scale else tf.constant(1.0)
  tx, ty = u[2] * translate * size, u[3] * translate * size
  c = (size - 1.0) / 2.0
  cos, sin = tf.cos(ang) / s, tf.sin(ang) / s
  # Output pixel (x, y) samples input at A (x - c - t) + c (inverse map).
  a0, a1 = cos, sin
  b0, b1 = -sin, cos
  a2 = c - a0 * (c + tx) - a1 * (c + ty)
  b2 = c - b0 * (c + tx) - b1 * (c + ty)
  m = tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=img[None], transforms=m, output_shape=tf.shape(img)[:2],
      fill_value=0.0, interpolation=method.upper(), fill_mode="CONSTANT")
  return out[0]


def geometric(img: tf.Tensor, seed: tf.Tensor, size: int, kind: str,
              nearest: bool = False, hflip: bool = True) -> tf.Tensor:
  """The geometric part of an augmentation ([H, W, C] float -> [size]^2)."""
  method = "nearest" if nearest else "bilinear"
  if kind in ("none", "eval"):
    return eval_resize(img, size, method)
  h, w = tf.shape(img)[0], tf.shape(img)[1]
  if kind == "lovt":
    oy, ox, ch, cw = _crop_box(_seed(seed, 10), h, w)
    img = tf.image.resize(img[oy:oy + ch, ox:ox + cw], (size, size),
                          method=method)
    if hflip:
      flip = tf.random.stateless_uniform([], _seed(seed, 11)) < 0.5
      img = tf.cond(flip, lambda: tf.reverse(img, [1]), lambda: img)
    return _affine(img, _seed(seed, 12), 20.0, 0.1, 1.05,
                   "nearest" if nearest else "bilinear")
  if kind == "joimternet":
    img = eval_resize(img, size, method)
    img = _affine(img, _seed(seed, 20), 15.0, 0.0, 0.0, method)
    pad = max(1, size // 16)
    img = tf.image.pad_to_bounding_box(img, pad, pad, size + 2 * pad,
                                       size + 2 * pad)
    o = tf.random.stateless_uniform([2], _seed(seed, 21), 0, 2 * pad + 1,
                                    dtype=tf.int32)
    return img[o[0]:o[0] + size, o[1]:o[1] + size]
  raise ValueError(f"unknown augmentation {kind!r}; expected lovt, "
                   "joimternet or none")


def _blur(img, sigma, size):
  radius = max(1, int(11 * size / 224))
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-0.5 * (x / sigma) ** 2)
  k = k / tf.reduce_sum(k)
  img = img[None]
  img = tf.nn.depthwise_conv2d(tf.pad(img, [[0, 0], [radius, radius], [0, 0],
                                            [0, 0]], "SYMMETRIC"),
                               tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 1, 1],
                               "VALID")
  img = tf.nn.depthwise_conv2d(tf.pad(img, [[0, 0], [0, 0], [radius, radius],
                                            [0, 0]], "SYMMETRIC"),
                               tf.reshape(k, [1, -1, 1, 1]), [1, 1, 1, 1],
                               "VALID")
  return img[0]


def photometric(img: tf.Tensor, seed: tf.Tensor, size: int, kind: str
                ) -> tf.Tensor:
  """Brightness / contrast / blur on a [0, 255] float image."""
  if kind in ("none", "eval"):
    return img
  lo, hi = (0.6, 1.4) if kind == "lovt" else (0.5, 1.8)
  u = tf.random.stateless_uniform([3], _seed(seed, 30), lo, hi)
  img = img * u[0]
  mean = tf.reduce_mean(img)
  img = (img - mean) * u[1] + mean
  if kind == "lovt":
    sigma = tf.random.stateless_uniform([], _seed(seed, 31), 0.1, 3.0)
    img = _blur(img, sigma * size / 224.0, size)
  return tf.clip_by_value(img, 0.0, 255.0)


def augment(img: tf.Tensor, seed: tf.Tensor, size: int, kind: str,
            hflip: bool = True) -> tf.Tensor:
  """Full augmentation of a uint8/float [H, W, 1] image -> float [size]^2."""
  img = tf.cast(img, tf.float32)
  img = geometric(img, seed, size, kind, hflip=hflip)
  return photometric(img, seed, size, kind)
