"""Image augmentations as stateless TF ops (exactly reproducible from a seed).

Every random draw uses `tf.random.stateless_*` with a seed derived from an
example seed and an op id, so an example's augmentation depends only on its
place in the stream: a resumed run sees the same pixels.

Geometry is one 3x3 matrix per example that maps output pixel coordinates
to input pixel coordinates (pixel centres at integers); the crop, resize,
flip and affine steps are composed into it and the image is resampled once
(`ImageProjectiveTransformV3`). The same matrix warps a mask (nearest
neighbour) and maps boxes (`transform_boxes`), so images, masks and boxes
stay aligned by construction.

- `lovt` (METHODS.md 3.3): torchvision-style RandomResizedCrop (scale
  0.6-1, ratio 3/4-4/3, ten tries then a centre crop), horizontal flip
  (p 0.5; LoVT's default although reports mention laterality, so it is
  configurable with `hflip`), RandomAffine (rotation +-20 deg, translation
  +-10 % rounded to pixels, scale 0.95-1.05, zero fill), ColorJitter
  brightness and contrast in [0.6, 1.4] in random order with clamping,
  Gaussian blur sigma in [0.1, 3.0] with a 23-tap kernel at 224 px (sigma
  and kernel scale with the output size; reflect padding as torchvision).
- `joimternet` (METHODS.md 2.3): the original crops 2048 px out of ~2544 px
  MIMIC images; here the stored image is resized so that its shorter side
  is `size / JOIMTERNET_CROP_FRACTION`, rotated by +-15 deg about its
  centre, and a random `size` x `size` window is cut (zero padding if
  needed); ColorJitter brightness / contrast / saturation in [0.5, 1.8]
  (saturation is the identity on grayscale, as in torchvision).
- `none` / `eval`: pad to a square (centred, zeros), resize (LoVT's
  validation transform).

Resampling is bilinear where torchvision's RandomAffine defaults to
nearest: one bilinear resampling of the composed transform is closer to
crop-resize-then-rotate than two nearest ones.
"""

import dataclasses
import math
from typing import Any, Mapping

import tensorflow as tf

AUGMENTATIONS = ("lovt", "joimternet", "none")

# JoImTeRNet: 2048-px crops of MIMIC-CXR-JPG images whose shorter side is
# ~2544 px.
JOIMTERNET_CROP_FRACTION = 2048.0 / 2544.0


@dataclasses.dataclass(frozen=True)
class Params:
  """Strengths of the random augmentations (one set per config).

  Geometric strengths are fractions of the image (crop area, translation,
  zoom) or angles, so they mean the same at every size; the blur is given
  in pixels at `reference_size` and scaled to the output size (sigma and
  kernel alike). The defaults are LoVT's (METHODS.md 3.3, defined at 224
  px); `joimternet` reads `degrees`, `brightness`, `contrast` and
  `crop_fraction`.

  Attributes:
    crop_scale: RandomResizedCrop area range (fraction of the image).
    crop_ratio: RandomResizedCrop aspect-ratio range.
    degrees: rotation range +-degrees.
    translate: translation range +- fraction of the side.
    zoom: RandomAffine scale range.
    brightness: ColorJitter brightness factor range.
    contrast: ColorJitter contrast factor range.
    blur_sigma: Gaussian blur sigma range in pixels at `reference_size`
      ((0, 0): no blur).
    blur_kernel: blur taps at `reference_size`.
    reference_size: the side the pixel-valued strengths are defined at.
    crop_fraction: JoImTeRNet's crop side / resized shorter side.
  """
  crop_scale: tuple[float, float] = (0.6, 1.0)
  crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
  degrees: float = 20.0
  translate: float = 0.1
  zoom: tuple[float, float] = (0.95, 1.05)
  brightness: tuple[float, float] = (0.6, 1.4)
  contrast: tuple[float, float] = (0.6, 1.4)
  blur_sigma: tuple[float, float] = (0.1, 3.0)
  blur_kernel: int = 23
  reference_size: int = 224
  crop_fraction: float = JOIMTERNET_CROP_FRACTION

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | None) -> "Params":
    """Params from a config dict (missing keys keep LoVT's values).

    Raises:
      ValueError: an unknown key or an out-of-range value.
    """
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown augmentation parameter(s) {unknown}; known: "
                       f"{sorted(names)}")
    kw = {k: (tuple(float(x) for x in v) if isinstance(v, (list, tuple))
              else v) for k, v in d.items()}
    p = cls(**kw)
    p.check()
    return p

  def check(self) -> None:
    """Raises ValueError naming the first out-of-range strength."""
    for name in ("crop_scale", "crop_ratio", "zoom", "brightness", "contrast",
                 "blur_sigma"):
      lo, hi = getattr(self, name)
      if not 0 <= lo <= hi:
        raise ValueError(f"augmentation {name}={getattr(self, name)}: need "
                         "0 <= low <= high")
    if not 0 < self.crop_scale[1] <= 1 or self.crop_ratio[0] <= 0:
      raise ValueError(f"augmentation crop_scale={self.crop_scale} / "
                       f"crop_ratio={self.crop_ratio} out of range")
    if self.degrees < 0 or not 0 <= self.translate < 0.5:
      raise ValueError(f"augmentation degrees={self.degrees} / translate="
                       f"{self.translate} out of range")
    if self.blur_kernel < 1 or self.reference_size < 1:
      raise ValueError("augmentation blur_kernel and reference_size must be "
                       ">= 1")

  def pixels(self, value: float, size: int) -> float:
    """A length in pixels at `reference_size`, at output side `size`."""
    return value * size / self.reference_size


LOVT = Params()
JOIMTERNET = Params(degrees=15.0, brightness=(0.5, 1.8),
                    contrast=(0.5, 1.8))


def _seed(seed: tf.Tensor, op: int) -> tf.Tensor:
  """A [2] int32 stateless seed for one op from an example seed."""
  return tf.random.experimental.stateless_fold_in(seed, op)


def check_kind(kind: str) -> None:
  """Raises ValueError for an unknown augmentation name."""
  if kind not in AUGMENTATIONS + ("eval",):
    raise ValueError(f"unknown augmentation {kind!r}; expected one of "
                     f"{AUGMENTATIONS}")


# --- Deterministic primitives ----------------------------------------------

def pad_to_square(img: tf.Tensor) -> tf.Tensor:
  """Zero-pads [H, W, C] symmetrically to [max, max, C]."""
  h, w = tf.shape(img)[0], tf.shape(img)[1]
  s = tf.maximum(h, w)
  return tf.image.pad_to_bounding_box(img, (s - h) // 2, (s - w) // 2, s, s)


def eval_resize(img: tf.Tensor, size: int, method: str = "bilinear"
                ) -> tf.Tensor:
  """Pad to square, then resize (LoVT's validation transform).

  Args:
    img: [H, W, C] image or mask.
    size: output side.
    method: "bilinear" (antialiased when shrinking, like PIL) or "nearest".

  Returns:
    float32 [size, size, C].
  """
  img = tf.cast(img, tf.float32)
  return tf.image.resize(pad_to_square(img), (size, size), method=method,
                         antialias=method == "bilinear")


def _matrix(rows) -> tf.Tensor:
  """3x3 float32 matrix from nested rows of scalars (tensors or numbers)."""
  return tf.stack([tf.stack([tf.cast(v, tf.float32) for v in r])
                   for r in rows])


def _translate(tx, ty) -> tf.Tensor:
  return _matrix([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _scale(sx, sy) -> tf.Tensor:
  return _matrix([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def rotation_scale_matrix(angle: tf.Tensor, scale: tf.Tensor, cx, cy
                          ) -> tf.Tensor:
  """Inverse map of a rotation by `angle` (radians) and zoom about (cx, cy).

  The forward map sends input point p to s R(angle) (p - c) + c; the
  returned matrix is its inverse (output -> input).
  """
  cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
  inv = _matrix([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
  return _translate(cx, cy) @ inv @ _translate(-cx, -cy)


def resize_matrix(h, w, out_h, out_w) -> tf.Tensor:
  """Output -> input map of a (h, w) -> (out_h, out_w) resize.

  Half-pixel centres, as `tf.image.resize` and PIL.
  """
  sy = tf.cast(h, tf.float32) / tf.cast(out_h, tf.float32)
  sx = tf.cast(w, tf.float32) / tf.cast(out_w, tf.float32)
  return _translate(-0.5, -0.5) @ _scale(sx, sy) @ _translate(0.5, 0.5)


def eval_matrix(h, w, size: int) -> tf.Tensor:
  """Output -> input map of `eval_resize` (pad to square, resize)."""
  s = tf.maximum(h, w)
  return _translate(-((s - w) // 2), -((s - h) // 2)) @ resize_matrix(
      s, s, size, size)


def warp(img: tf.Tensor, matrix: tf.Tensor, size: int, nearest: bool = False
         ) -> tf.Tensor:
  """Samples [H, W, C] at `matrix` @ (x, y, 1) for every output pixel.

  Args:
    img: [H, W, C] image or mask.
    matrix: [3, 3] affine output -> input map (last row 0, 0, 1).
    size: output side.
    nearest: nearest-neighbour (masks) instead of bilinear sampling.

  Returns:
    float32 [size, size, C]; points outside the input read 0.
  """
  flat = tf.reshape(matrix, [-1])[:8]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(img, tf.float32)[None], transforms=flat[None],
      output_shape=tf.constant([size, size], tf.int32),
      fill_value=tf.constant(0.0), fill_mode="CONSTANT",
      interpolation="NEAREST" if nearest else "BILINEAR")
  return out[0]


def transform_boxes(boxes: tf.Tensor, matrix: tf.Tensor, h, w, size: int
                    ) -> tuple[tf.Tensor, tf.Tensor]:
  """Maps normalised boxes of an [h, w] input through a warp.

  Args:
    boxes: [M, 4] (ymin, xmin, ymax, xmax) in [0, 1] of the input.
    matrix: the output -> input matrix given to `warp`.
    h: input height.
    w: input width.
    size: output side.

  Returns:
    (boxes [M, 4] normalised to the output, the axis-aligned hull of the
    mapped corners clipped to the image; valid [M] bool, False for boxes
    that left the image or collapsed).
  """
  boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  # Box edges -> pixel-centre coordinates of the four corners.
  y0, x0 = boxes[:, 0] * hf - 0.5, boxes[:, 1] * wf - 0.5
  y1, x1 = boxes[:, 2] * hf - 0.5, boxes[:, 3] * wf - 0.5
  xs = tf.stack([x0, x1, x0, x1], axis=1)
  ys = tf.stack([y0, y0, y1, y1], axis=1)
  fwd = tf.linalg.inv(matrix)
  ox = fwd[0, 0] * xs + fwd[0, 1] * ys + fwd[0, 2]
  oy = fwd[1, 0] * xs + fwd[1, 1] * ys + fwd[1, 2]
  n = float(size)
  out = tf.stack([tf.reduce_min(oy, 1), tf.reduce_min(ox, 1),
                  tf.reduce_max(oy, 1), tf.reduce_max(ox, 1)], axis=1)
  out = tf.clip_by_value((out + 0.5) / n, 0.0, 1.0)
  valid = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
  return out, valid


def adjust_brightness(img: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """torchvision's brightness on [0, 255]: scale, clamp."""
  return tf.clip_by_value(img * factor, 0.0, 255.0)


def adjust_contrast(img: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """torchvision's contrast: blend with the image mean, clamp."""
  mean = tf.reduce_mean(img)
  return tf.clip_by_value((img - mean) * factor + mean, 0.0, 255.0)


def blur_radius(size: int, params: Params = LOVT) -> int:
  """Half-width of the blur kernel (23 taps at 224 px for LoVT) at `size`."""
  return max(1, round(params.pixels(params.blur_kernel // 2, size)))


def gaussian_blur(img: tf.Tensor, sigma: tf.Tensor, radius: int
                  ) -> tf.Tensor:
  """Separable Gaussian blur of [H, W, C] with reflect padding.

  Args:
    img: [H, W, C] float image (H, W > radius).
    sigma: standard deviation in pixels.
    radius: kernel half-width (2 * radius + 1 taps).

  Returns:
    The blurred image.
  """
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-0.5 * tf.square(x / sigma))
  k = k / tf.reduce_sum(k)
  c = tf.shape(img)[-1]
  kv = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, c, 1])
  kh = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, c, 1])
  out = tf.pad(img[None], [[0, 0], [radius, radius], [0, 0], [0, 0]],
               "REFLECT")
  out = tf.nn.depthwise_conv2d(out, kv, [1, 1, 1, 1], "VALID")
  out = tf.pad(out, [[0, 0], [0, 0], [radius, radius], [0, 0]], "REFLECT")
  out = tf.nn.depthwise_conv2d(out, kh, [1, 1, 1, 1], "VALID")
  return out[0]


# --- Random parameters -------------------------------------------------------

def _randint(u: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
  """Integer in [lo, hi] from a uniform [0, 1) draw."""
  span = tf.cast(hi - lo + 1, tf.float32)
  return lo + tf.minimum(tf.cast(tf.floor(u * span), tf.int32), hi - lo)


def resized_crop_window(seed: tf.Tensor, h, w, scale=LOVT.crop_scale,
                        ratio=LOVT.crop_ratio, tries: int = 10):
  """torchvision RandomResizedCrop.get_params, statelessly.

  Ten candidate (area, log-ratio) draws; the first that fits is used, else
  the centre crop with the ratio clamped to the range.

  Returns:
    (top, left, height, width) int32 scalars.
  """
  h, w = tf.cast(h, tf.int32), tf.cast(w, tf.int32)
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  u = tf.random.stateless_uniform([tries, 2], seed)
  target = hf * wf * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
  lo, hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = tf.exp(lo + (hi - lo) * u[:, 1])
  cw = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  ch = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  # Centre-crop fallback with the aspect ratio clamped to `ratio`.
  in_ratio = wf / hf
  fw = tf.where(in_ratio < ratio[0], w, tf.where(
      in_ratio > ratio[1], tf.cast(tf.round(hf * ratio[1]), tf.int32), w))
  fh = tf.where(in_ratio < ratio[0], tf.cast(tf.round(wf / ratio[0]),
                                             tf.int32), h)
  ok = tf.reduce_any(fits)
  ch = tf.where(ok, ch[first], fh)
  cw = tf.where(ok, cw[first], fw)
  o = tf.random.stateless_uniform([2], _seed(seed, 1))
  top = tf.where(ok, _randint(o[0], 0, h - ch), (h - ch) // 2)
  left = tf.where(ok, _randint(o[1], 0, w - cw), (w - cw) // 2)
  return top, left, ch, cw


def lovt_matrix(seed: tf.Tensor, h, w, size: int, hflip: bool = True,
                params: Params = LOVT) -> tf.Tensor:
  """LoVT's crop -> flip -> affine as one output -> input matrix."""
  top, left, ch, cw = resized_crop_window(_seed(seed, 10), h, w,
                                          params.crop_scale,
                                          params.crop_ratio)
  crop = _translate(tf.cast(left, tf.float32), tf.cast(top, tf.float32)) @ (
      resize_matrix(ch, cw, size, size))
  c = (size - 1) / 2.0
  flip = tf.eye(3)
  if hflip:
    do = tf.random.stateless_uniform([], _seed(seed, 11)) < 0.5
    flip = tf.where(do, _matrix([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0],
                                 [0.0, 0.0, 1.0]]), flip)
  u = tf.random.stateless_uniform([4], _seed(seed, 12), -1.0, 1.0)
  angle = u[0] * params.degrees * math.pi / 180.0
  zoom = (params.zoom[0] + params.zoom[1]) / 2 + u[1] * (
      params.zoom[1] - params.zoom[0]) / 2
  # torchvision rounds the translation to whole pixels.
  tx = tf.round(u[2] * params.translate * size)
  ty = tf.round(u[3] * params.translate * size)
  affine = rotation_scale_matrix(angle, zoom, c, c) @ _translate(-tx, -ty)
  return crop @ flip @ affine


def joimternet_matrix(seed: tf.Tensor, h, w, size: int,
                      params: Params = JOIMTERNET) -> tf.Tensor:
  """JoImTeRNet's resize -> rotate -> random crop as one matrix."""
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  k = (size / params.crop_fraction) / tf.minimum(hf, wf)
  rh = tf.maximum(tf.cast(tf.round(hf * k), tf.int32), 1)
  rw = tf.maximum(tf.cast(tf.round(wf * k), tf.int32), 1)
  resize = resize_matrix(h, w, rh, rw)
  angle = tf.random.stateless_uniform(
      [], _seed(seed, 20), -1.0, 1.0) * params.degrees * math.pi / 180.0
  rot = rotation_scale_matrix(angle, 1.0, (tf.cast(rw, tf.float32) - 1) / 2,
                              (tf.cast(rh, tf.float32) - 1) / 2)
  # RandomCrop(pad_if_needed): a side shorter than `size` is padded on both
  # sides by the shortfall, so the offset may go negative.
  o = tf.random.stateless_uniform([2], _seed(seed, 21))
  oy = _randint(o[0], tf.minimum(0, rh - size), tf.maximum(0, rh - size))
  ox = _randint(o[1], tf.minimum(0, rw - size), tf.maximum(0, rw - size))
  crop = _translate(tf.cast(ox, tf.float32), tf.cast(oy, tf.float32))
  return resize @ rot @ crop


def geometric_matrix(seed: tf.Tensor, h, w, size: int, kind: str,
                     hflip: bool = True, params: Params | None = None
                     ) -> tf.Tensor:
  """The output -> input matrix of augmentation `kind` for an [h, w] input.

  Args:
    seed: [2] int32 example seed.
    h: input height.
    w: input width.
    size: output side.
    kind: "lovt", "joimternet", "none" or "eval".
    hflip: LoVT's random horizontal flip.
    params: augmentation strengths (None: the paper's for `kind`).

  Returns:
    [3, 3] float32.
  """
  check_kind(kind)
  params = params or default_params(kind)
  if kind == "lovt":
    return lovt_matrix(seed, h, w, size, hflip, params)
  if kind == "joimternet":
    return joimternet_matrix(seed, h, w, size, params)
  return eval_matrix(h, w, size)


def default_params(kind: str) -> Params:
  """The paper's strengths for augmentation `kind`."""
  return JOIMTERNET if kind == "joimternet" else LOVT


def geometric(img: tf.Tensor, seed: tf.Tensor, size: int, kind: str,
              nearest: bool = False, hflip: bool = True,
              params: Params | None = None) -> tf.Tensor:
  """The geometric part of an augmentation ([H, W, C] -> float [size]^2).

  Calling it on an image and (with `nearest=True`) on its mask with the same
  seed transforms both identically.
  """
  check_kind(kind)
  if kind in ("none", "eval"):
    return eval_resize(img, size, "nearest" if nearest else "bilinear")
  m = geometric_matrix(seed, tf.shape(img)[0], tf.shape(img)[1], size, kind,
                       hflip, params)
  return warp(img, m, size, nearest)


def photometric(img: tf.Tensor, seed: tf.Tensor, size: int, kind: str,
                params: Params | None = None) -> tf.Tensor:
  """ColorJitter (random order) and, for LoVT, blur on a [0, 255] image."""
  check_kind(kind)
  if kind in ("none", "eval"):
    # Resizing can overshoot [0, 255] by float rounding; keep the range.
    return tf.clip_by_value(img, 0.0, 255.0)
  params = params or default_params(kind)
  # Two U(0, 1) draws mapped to each range (LoVT's ranges are equal, so
  # this is the former U(lo, hi) draw).
  u01 = tf.random.stateless_uniform([2], _seed(seed, 30))
  u = tf.stack([params.brightness[0] + u01[0] * (params.brightness[1] -
                                                 params.brightness[0]),
                params.contrast[0] + u01[1] * (params.contrast[1] -
                                               params.contrast[0])])
  brightness_first = tf.random.stateless_uniform([], _seed(seed, 32)) < 0.5
  img = tf.cond(
      brightness_first,
      lambda: adjust_contrast(adjust_brightness(img, u[0]), u[1]),
      lambda: adjust_brightness(adjust_contrast(img, u[1]), u[0]))
  if kind == "lovt" and params.blur_sigma[1] > 0:
    sigma = tf.random.stateless_uniform([], _seed(seed, 31),
                                        *params.blur_sigma)
    img = gaussian_blur(img, tf.maximum(params.pixels(sigma, size), 1e-3),
                        blur_radius(size, params))
  return tf.clip_by_value(img, 0.0, 255.0)


def augment(img: tf.Tensor, seed: tf.Tensor, size: int, kind: str,
            hflip: bool = True, params: Params | None = None) -> tf.Tensor:
  """Full augmentation of a uint8/float [H, W, 1] image.

  Args:
    img: [H, W, 1] with values in [0, 255].
    seed: [2] int32 example seed.
    size: output side.
    kind: "lovt", "joimternet", "none" or "eval".
    hflip: LoVT's random horizontal flip.
    params: augmentation strengths (None: the paper's for `kind`).

  Returns:
    float32 [size, size, 1] in [0, 255].
  """
  img = tf.cast(img, tf.float32)
  img = geometric(img, seed, size, kind, hflip=hflip, params=params)
  return photometric(img, seed, size, kind, params)
