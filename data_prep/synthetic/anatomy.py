"""A phantom chest radiograph: anatomy only (findings are in `findings.py`).

Rendering works on a normalised "body frame": u runs left->right across the
image (u = 0 at the midline, patient's right lung at u < 0 because radiographs
are displayed as if facing the patient), v runs top->bottom (v = 0 near the
neck, v = 1 near the pelvis). A `Patient` holds the per-subject variation and
maps pixel grids into that frame, so findings can be placed by side and zone.
Intensities are linear "attenuation" values in 0..255 before the exposure
curve and noise are applied.
"""

import dataclasses

import numpy as np
from scipy import ndimage

# Base intensities (linear, before exposure): air is dark, bone is bright.
AIR, SOFT, LUNG, MEDIASTINUM, HEART, SPINE, ABDOMEN = (
    6.0, 112.0, 42.0, 176.0, 166.0, 205.0, 152.0)
RIB_GAIN, CLAVICLE_GAIN = 24.0, 36.0
# Lung shape in the body frame: centre u, centre v, half width, half height.
LUNG_U, LUNG_V, LUNG_A, LUNG_B = 0.175, 0.44, 0.135, 0.31
NUM_RIBS = 9


# Top of the lung fields in the body frame: deeper inspiration stretches the
# frame downward from here (the apices stay put, the domes descend).
APEX_V = LUNG_V - LUNG_B


@dataclasses.dataclass(frozen=True)
class Patient:
  """Per-image geometry, habitus and exposure (sampled in `sample_patient`).

  The geometric fields all act through `body_frame`, so findings and their
  masks move, scale and rotate with the anatomy and the ground truth stays
  exact. The acquisition fields (window, blur, collimation, marker) act on
  the exposed image only.
  """
  cx: float = 0.5          # image x of the midline
  cy: float = 0.0          # vertical offset of the body frame
  scale: float = 1.0       # body size relative to the field of view
  rotation: float = 0.0    # radians
  habitus: float = 1.0     # chest width (>1 broad, <1 slender)
  inspiration: float = 1.0  # lung height (>1 deep breath, <1 poor effort)
  # Smooth anatomical shape variation: (amplitude, frequency, phase) of one
  # sinusoidal displacement of u along v and one of v along u.
  shape: tuple[float, ...] = (0.0, 1.0, 0.0, 0.0, 1.0, 0.0)
  soft_tissue: float = 0.0  # extra soft-tissue density over the body
  exposure: float = 1.0    # gamma of the exposure curve
  brightness: float = 0.0  # additive offset after exposure
  window: tuple[float, float] = (0.0, 255.0)  # display window (lo, hi)
  blur: float = 0.0        # detector blur (fraction of the image height)
  gradient: tuple[float, float] = (0.0, 0.0)  # exposure tilt across x, y
  noise: float = 4.0       # std of the quantum noise (8-bit units)
  collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
  collimator_value: float = 0.0  # pixel value outside the collimated field
  marker: int = -1         # side marker corner (0..3), -1 none
  ctr: float = 0.45        # cardiothoracic ratio
  mediastinum: float = 0.055  # half width of the upper mediastinum
  ap: bool = False         # AP projection: magnified heart, higher clavicles
  aspect: float = 2544 / 3056  # width / height of the detector
  texture_seed: int = 0    # lung markings (fixed per subject)


# The centre of each nuisance distribution in `sample_patient`: what
# `variation=0` renders (one fixed position, size, shape and exposure).
_NOMINAL = dict(cx=0.5, cy=0.0, scale=0.97, rotation=0.0, habitus=1.0,
                soft_tissue=11.0, exposure=1.0, brightness=0.0,
                window=(20.0, 245.0), blur=0.003, gradient=(0.0, 0.0),
                noise=5.5, collimation=(0.0, 0.0, 0.0, 0.0))


def _toward_nominal(p: Patient, variation: float) -> Patient:
  """Scales every nuisance field's deviation from its nominal value."""
  def blend(value, nominal):
    if isinstance(value, tuple):
      return tuple(blend(v, n) for v, n in zip(value, nominal))
    return float(nominal + variation * (value - nominal))
  changes = {k: blend(getattr(p, k), n) for k, n in _NOMINAL.items()}
  changes["inspiration"] = blend(p.inspiration, 0.93 if p.ap else 1.0)
  a, f, ph, b, g, q = p.shape  # amplitudes scale; frequencies, phases stay
  changes["shape"] = (variation * a, f, ph, variation * b, g, q)
  if variation == 0.0:
    changes["marker"] = -1
  return dataclasses.replace(p, **changes)


def sample_patient(rng: np.random.Generator, *, ap: bool = False,
                   variation: float = 1.0) -> Patient:
  """Draws realistic patient, positioning and acquisition variation.

  Ranges follow what varies between real radiographs: the patient is
  off-centre by up to ~12 % of the field and fills 78-118 % of it, is
  rotated by a few degrees (more on portable AP films), has a broad or
  slender chest and a deep or shallow breath (AP films: poorer effort),
  and the exposure, display window, noise and sharpness change from
  machine to machine. Half the films show collimator edges, most a side
  marker. `variation` scales every such deviation from its nominal value
  (0: one fixed phantom; 1: the ranges above), drawing the same random
  numbers either way. Findings, heart size and mediastinum are not
  nuisances and do not change with it.
  """
  p = _sample(rng, ap)
  return p if variation == 1.0 else _toward_nominal(p, variation)


def _sample(rng: np.random.Generator, ap: bool) -> Patient:
  coll = rng.uniform(0.0, [0.05, 0.06, 0.05, 0.1]) * (rng.random() < 0.5)
  return Patient(
      cx=float(0.5 + np.clip(rng.normal(0, 0.05), -0.12, 0.12)),
      cy=float(np.clip(rng.normal(0, 0.05), -0.1, 0.1)),
      scale=float(np.clip(rng.normal(0.97, 0.08), 0.78, 1.18)),
      rotation=float(np.deg2rad(np.clip(rng.normal(0, 5.0 if ap else 3.5),
                                        -12, 12))),
      habitus=float(np.clip(rng.normal(1.0, 0.06), 0.86, 1.16)),
      inspiration=float(np.clip(rng.normal(0.93 if ap else 1.0, 0.06), 0.82,
                                1.12)),
      shape=(float(rng.normal(0, 0.02)), float(rng.uniform(0.5, 2.0)),
             float(rng.uniform(0, 2 * np.pi)), float(rng.normal(0, 0.02)),
             float(rng.uniform(0.5, 2.0)), float(rng.uniform(0, 2 * np.pi))),
      soft_tissue=float(rng.uniform(0.0, 22.0)),
      exposure=float(np.clip(rng.normal(1.0, 0.2), 0.65, 1.5)),
      brightness=float(rng.normal(0, 10)),
      window=(float(rng.uniform(0.0, 40.0)), float(rng.uniform(205.0,
                                                               285.0))),
      blur=float(rng.uniform(0.0, 0.006)),
      gradient=(float(rng.uniform(-0.25, 0.25)),
                float(rng.uniform(-0.25, 0.25))),
      noise=float(rng.uniform(2.0, 9.0)),
      collimation=tuple(float(c) for c in coll),
      collimator_value=float(rng.choice([rng.uniform(0, 25),
                                         rng.uniform(200, 250)])),
      marker=int(rng.integers(4)) if rng.random() < 0.8 else -1,
      ctr=float(np.clip(rng.normal(0.45, 0.03), 0.38, 0.5)) * (
          1.12 if ap else 1.0),
      mediastinum=float(np.clip(rng.normal(0.055, 0.005), 0.045, 0.065)),
      ap=ap,
      texture_seed=int(rng.integers(1 << 30)),
  )


def body_frame(p: Patient, height: int, width: int) -> tuple[np.ndarray,
                                                            np.ndarray]:
  """(u, v) coordinates of every pixel of an image of the given size."""
  y = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
  x = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
  # Work in units of image height so shapes are not stretched by the aspect.
  dx = (x - p.cx) * (width / height)
  dy = y - 0.5 - p.cy
  c, s = np.cos(p.rotation), np.sin(p.rotation)
  u = (c * dx + s * dy) / (p.scale * p.habitus)
  v = (-s * dx + c * dy) / p.scale + 0.5
  v = APEX_V + (v - APEX_V) / p.inspiration
  # Anatomy is not a template: a smooth displacement bends the lungs,
  # heart and diaphragm differently in every patient.
  au, fu, pu, av, fv, pv = p.shape
  u, v = (u + au * np.sin(2 * np.pi * fu * v + pu),
          v + av * np.sin(2 * np.pi * fv * u + pv))
  return u.astype(np.float32), v.astype(np.float32)


def diaphragm(u: np.ndarray, side: int) -> np.ndarray:
  """v of the hemidiaphragm dome under lung `side` (-1 right, +1 left)."""
  t = (np.abs(u) - LUNG_U) / LUNG_A
  # The right hemidiaphragm sits higher (liver).
  return 0.70 + 0.06 * t ** 2 + (0.015 if side > 0 else -0.01)


def dome(u: np.ndarray) -> np.ndarray:
  """v of the diaphragm at every u: both domes, deep costophrenic angles."""
  t = np.clip((np.abs(u) - LUNG_U) / LUNG_A, -1.2, 1.6)
  return 0.70 + 0.06 * t ** 2 + np.where(u > 0, 0.015, -0.01)


def lung_mask(u: np.ndarray, v: np.ndarray, side: int,
              p: Patient | None = None) -> np.ndarray:
  """Boolean mask of the right (-1) or left (+1) lung field."""
  # Lungs are narrow at the apex and splay laterally toward the bases.
  cu = side * (LUNG_U + 0.03 * (v - LUNG_V) / LUNG_B)
  a = LUNG_A * (0.93 if side > 0 else 1.0)  # the heart takes room on the left
  inside = ((u - cu) / a) ** 2 + ((v - LUNG_V) / LUNG_B) ** 2 < 1.0
  inside &= v < diaphragm(u, side)
  heart = heart_mask(u, v, p) if p is not None else False
  return inside & ~heart


def heart_mask(u: np.ndarray, v: np.ndarray, p: Patient | None,
               ctr: float | None = None) -> np.ndarray:
  """Cardiac silhouette for a cardiothoracic ratio (default: the patient's).

  Two half-ellipses joined at u = 0.01: about 2/5 of the cardiac width lies
  right of the midline and 3/5 left, as on a normal PA film.
  """
  ctr = (p.ctr if p is not None else 0.45) if ctr is None else ctr
  width = ctr * 2 * (LUNG_U + LUNG_A)
  half = np.where(u < 0.01, 0.38 * width, 0.62 * width)
  return ((u - 0.01) / half) ** 2 + ((v - 0.575) / 0.135) ** 2 < 1.0


def lung_zone(v: np.ndarray, zone: str) -> np.ndarray:
  """Upper / middle / lower thirds of the lung fields (by v)."""
  top, bottom = LUNG_V - LUNG_B, LUNG_V + LUNG_B
  third = (bottom - top) / 3
  lo = {"upper": top, "middle": top + third, "lower": top + 2 * third}[zone]
  return (v >= lo) & (v < lo + third + (0.05 if zone == "lower" else 0))


def _rib_centre(au: np.ndarray, k: np.ndarray) -> np.ndarray:
  return 0.16 + 0.066 * k + 0.55 * (au - 0.04) ** 2 + 0.1 * (au - 0.04)


def rib_field(u: np.ndarray, v: np.ndarray,
              skip: tuple[int, int, float] | None = None) -> np.ndarray:
  """Posterior ribs as curved bands (1 on a rib, 0 elsewhere).

  Each pixel is tested against its nearest rib only (ribs are parallel
  curves spaced 0.066 apart), which keeps this O(pixels).

  Args:
    u: body-frame u.
    v: body-frame v.
    skip: optional (side, rib index, u position) where the rib is broken:
      the lateral part is displaced (a rib fracture).
  """
  au = np.abs(u)
  k = np.clip(np.round((v - _rib_centre(au, 0)) / 0.066), 0, NUM_RIBS - 1)
  on = np.abs(v - _rib_centre(au, k)) < 0.011
  on &= (au > 0.045) & (au < 0.33)
  if skip is not None:
    side, rib, pos = skip
    this = (np.sign(u) == side)
    # Lateral fragment displaced downwards, with a gap at the fracture line.
    k2 = np.clip(np.round((v - 0.012 - _rib_centre(au, 0)) / 0.066), 0,
                 NUM_RIBS - 1)
    lateral = this & (au > abs(pos))
    on_lat = (np.abs(v - 0.012 - _rib_centre(au, k2)) < 0.011) & (
        au < 0.33)
    broken = lateral & (np.round((v - 0.012 - _rib_centre(au, 0)) / 0.066)
                        == rib)
    on = np.where(broken, on_lat & (k2 == rib), on & ~(lateral & (k == rib)))
    on &= ~(this & (np.abs(au - abs(pos)) < 0.006) & (np.abs(
        v - _rib_centre(au, rib)) < 0.03))
  return on.astype(np.float32)


def lung_markings(p: Patient, height: int, width: int) -> np.ndarray:
  """Smooth zero-mean texture standing in for vessels (unit std)."""
  rng = np.random.default_rng(p.texture_seed)
  tex = rng.standard_normal((height, width), dtype=np.float32)
  tex = ndimage.gaussian_filter(tex, max(1.0, 0.008 * height))
  return tex / (tex.std() + 1e-6)


def render_anatomy(p: Patient, height: int, width: int,
                   rib_break: tuple[int, int, float] | None = None
                   ) -> tuple[np.ndarray, dict]:
  """Linear-intensity frontal radiograph without findings.

  Returns:
    (image [H, W] float32, geometry dict with the body-frame grids and the
    region masks findings need: `u`, `v`, `lungs`, `lung_r`, `lung_l`,
    `body`, `heart`, and `px`, the size of one pixel in body-frame units).
  """
  u, v = body_frame(p, height, width)
  body = (u / 0.43) ** 2 + ((v - 0.62) / 0.66) ** 2 < 1.0
  shoulders = (np.abs(u) < 0.47) & (v > 0.08) & (v < 0.35)
  body |= shoulders & ((np.abs(u) / 0.47) ** 4 + ((v - 0.35) / 0.3) ** 2 < 1)
  img = np.where(body, SOFT, AIR).astype(np.float32)
  # Soft tissue is thicker toward the flanks and the neck.
  img = np.where(body, img + 18.0 * np.clip(np.abs(u) / 0.43, 0, 1) ** 4 +
                 p.soft_tissue, img)
  below = v > dome(u) + 0.008
  img = np.where(body & below, ABDOMEN, img)
  # Gastric air bubble under the left dome, with a flat air-fluid level.
  gv = 0.70 + 0.015 + 0.05
  bubble = (((u - 0.2) / 0.05) ** 2 + ((v - gv) / 0.03) ** 2 < 1) & (
      v < gv + 0.01) & below
  img = np.where(bubble, ABDOMEN - 55.0, img)
  lung_r = lung_mask(u, v, -1, p)
  lung_l = lung_mask(u, v, +1, p)
  lungs = lung_r | lung_l
  # Lungs: darker at the bases (more air, less overlying muscle), brighter
  # toward the hila with branching vessels (smooth texture) fading outward.
  hilum = np.exp(-(((np.abs(u) - 0.09) / 0.09) ** 2 +
                   ((v - 0.45) / 0.12) ** 2))
  tex = lung_markings(p, height, width)
  # Overlying soft tissue (habitus) also lies over the lungs.
  lung_val = LUNG + 10.0 * (0.45 - v) + 16.0 * hilum + 6.0 * tex * (
      0.5 + hilum) + 0.6 * p.soft_tissue
  img = np.where(lungs, lung_val, img)
  medi = (np.abs(u - 0.005) < p.mediastinum) & (v > 0.08) & (v < 0.72)
  knob = ((u - 0.055) / 0.034) ** 2 + ((v - 0.33) / 0.03) ** 2 < 1.0
  img = np.where((medi | knob) & body, MEDIASTINUM, img)
  trachea = (np.abs(u) < 0.018) & (v > 0.02) & (v < 0.3)
  img = np.where(trachea, img - 60.0, img)
  # The spine shows through the mediastinum only faintly, and through the
  # heart hardly at all, as on a well-penetrated PA film.
  spine = (np.abs(u) < 0.034) & body & (v > 0.05)
  vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * v / 0.055)
  img = np.where(spine, np.maximum(img, SPINE - 30 - 14 * vertebrae), img)
  heart = heart_mask(u, v, p)
  img = np.where(heart & body, HEART + 6.0 * spine, img)
  img += RIB_GAIN * rib_field(u, v, rib_break) * body * ~below
  for side in (-1, 1):
    # Clavicles: straight bars from the manubrium to the shoulders.
    t = np.clip((np.abs(u) - 0.04) / 0.28, 0, 1)
    cv = (0.13 if not p.ap else 0.09) - 0.05 * t
    clav = (np.sign(u) == side) & (np.abs(u) > 0.04) & (np.abs(u) < 0.32)
    img = np.where(clav & (np.abs(v - cv) < 0.014), img + CLAVICLE_GAIN, img)
  geom = dict(u=u, v=v, lungs=lungs, lung_r=lung_r, lung_l=lung_l, body=body,
              heart=heart,
              # Geometric mean of the frame's two pixel pitches.
              px=1.0 / (height * p.scale * np.sqrt(p.habitus *
                                                   p.inspiration)))
  return img, geom


def render_lateral(p: Patient, height: int, width: int) -> np.ndarray:
  """A lateral view phantom (findings are not rendered on laterals).

  Anterior is to the image left: sternum, retrosternal clear space, the
  heart low and anterior, the lungs over the spine posteriorly, the
  hemidiaphragms as domes, and the thoracic spine with its vertebral bodies.
  """
  u, v = body_frame(p, height, width)
  body = (u / 0.36) ** 2 + ((v - 0.6) / 0.66) ** 2 < 1.0
  img = np.where(body, SOFT + 8.0, AIR).astype(np.float32)
  dome_v = 0.73 - 0.05 * (1 - ((u - 0.02) / 0.3) ** 2)
  below = body & (v > dome_v)
  lung = ((u + 0.01) / 0.25) ** 2 + ((v - 0.44) / 0.3) ** 2 < 1.0
  lung &= ~below
  tex = lung_markings(p, height, width)
  img = np.where(lung, LUNG + 22.0 + 8.0 * (0.45 - v) + 4.0 * tex, img)
  heart = ((u + 0.09) / 0.13) ** 2 + ((v - 0.6) / 0.15) ** 2 < 1.0
  img = np.where(heart & body & ~below, HEART - 35.0, img)
  hilum = ((u - 0.03) / 0.06) ** 2 + ((v - 0.42) / 0.07) ** 2 < 1.0
  img = np.where(hilum & lung, img + 25.0, img)
  trachea = (np.abs(u - 0.06 + 0.15 * (v - 0.2)) < 0.013) & (v > 0.08) & (
      v < 0.4)
  img = np.where(trachea & body, img - 25.0, img)
  sternum = (np.abs(u + 0.27 - 0.08 * (v - 0.2)) < 0.012) & (v > 0.15) & (
      v < 0.55)
  img = np.where(sternum & body, img + 30.0, img)
  spine = (np.abs(u - 0.25) < 0.045) & body & (v > 0.05)
  disc = np.cos(2 * np.pi * v / 0.06) > 0.8
  img = np.where(spine, np.where(disc, SPINE - 60, SPINE - 20), img)
  img = np.where(below, np.maximum(img, ABDOMEN), img)
  return img
