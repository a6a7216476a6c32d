"""Findings rendered onto the phantom, each with its ground-truth mask.

A `Finding` says what the report will say (type, side, zone, severity,
certainty); `render` draws it where the report places it and returns the
pixel mask, so every label has located ground truth.
"""

import dataclasses

import numpy as np
from scipy import ndimage

from data_prep.synthetic import anatomy

# Finding type -> the CheXpert observation its report sentence mentions.
CHEXPERT_OF = {
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "lung_opacity": "Lung Opacity",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "edema": "Edema",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "cardiomegaly": "Cardiomegaly",
    "enlarged_cardiomediastinum": "Enlarged Cardiomediastinum",
    "rib_fracture": "Fracture",
    "et_tube": "Support Devices",
    "ng_tube": "Support Devices",
    "central_line": "Support Devices",
    "pacemaker": "Support Devices",
    "pleural_thickening": "Pleural Other",
}
DEVICES = ("et_tube", "ng_tube", "central_line", "pacemaker")
SIDED = ("pleural_effusion", "pneumothorax", "consolidation", "lung_opacity",
         "pneumonia", "atelectasis", "nodule", "mass", "rib_fracture",
         "pleural_thickening")
ZONED = ("consolidation", "lung_opacity", "pneumonia", "nodule", "mass")
SEVERITIES = ("small", "moderate", "large")


@dataclasses.dataclass(frozen=True)
class Finding:
  """One finding as the report states it."""
  type: str
  side: str | None = None       # "right" | "left" | "bilateral" | None
  zone: str | None = None       # "upper" | "middle" | "lower" | None
  severity: str = "moderate"    # small | moderate | large
  certainty: str = "positive"   # positive | uncertain
  seed: int = 0                 # shape randomness of the rendering

  @property
  def label(self) -> str:
    """The CheXpert observation the finding's sentence mentions."""
    return CHEXPERT_OF[self.type]

  def to_json(self) -> dict:
    """The fields as a JSON-ready dict."""
    return dataclasses.asdict(self)


def sample_finding(rng: np.random.Generator, ftype: str,
                   uncertain_p: float = 0.15) -> Finding:
  """Random side/zone/severity/certainty for a finding type."""
  side = None
  if ftype in SIDED:
    side = str(rng.choice(["right", "left", "bilateral"], p=[0.42, 0.42,
                                                              0.16]))
    if ftype in ("nodule", "mass", "rib_fracture", "pneumothorax"):
      side = str(rng.choice(["right", "left"]))
  elif ftype == "edema":
    side = "bilateral"
  zone = str(rng.choice(["upper", "middle", "lower"])) if ftype in ZONED else (
      "lower" if ftype in ("atelectasis", "pleural_effusion") else None)
  certainty = "positive"
  if ftype not in DEVICES and rng.random() < uncertain_p:
    certainty = "uncertain"
  severity = str(rng.choice(SEVERITIES, p=[0.45, 0.4, 0.15]))
  if certainty == "uncertain":
    severity = "small"
  return Finding(ftype, side, zone, severity, certainty,
                 int(rng.integers(1 << 30)))


def _sides(f: Finding) -> list[int]:
  return {"right": [-1], "left": [1], "bilateral": [-1, 1], None: []}[f.side]


_SEV = {"small": 0.6, "moderate": 1.0, "large": 1.5}


def _blob(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, cu: float,
          cv: float, ru: float, rv: float,
          roughness: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
  """A patchy region: an ellipse whose edge is perturbed by smooth noise.

  Returns:
    (mask, alpha): the region, and a weight falling from 1 inside to 0 at
    its edge so the opacity has ill-defined margins.
  """
  d = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2
  d = d + roughness * _smooth_noise(rng, u.shape, max(1.0, 0.04 * u.shape[0]))
  return d < 1.0, np.clip((1.0 - d) / 0.5, 0, 1)


def _line(u: np.ndarray, v: np.ndarray, pts: list[tuple[float, float]],
          width: float) -> np.ndarray:
  """Pixels within `width` of a polyline given in body-frame points."""
  out = np.zeros(u.shape, bool)
  for (u0, v0), (u1, v1) in zip(pts[:-1], pts[1:]):
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9),
                0, 1)
    out |= (u - (u0 + t * du)) ** 2 + (v - (v0 + t * dv)) ** 2 < width ** 2
  return out


def _edge_distance(lung: np.ndarray, px: float) -> np.ndarray:
  """Distance of every lung pixel to the lung boundary, in body-frame units."""
  return ndimage.distance_transform_edt(lung).astype(np.float32) * px


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: float) -> np.ndarray:
  noise = ndimage.gaussian_filter(
      rng.standard_normal(shape, dtype=np.float32), sigma)
  return noise / (noise.std() + 1e-6)


# Effusion height above the dome (body-frame units) per severity factor.
_EFFUSION_HEIGHT = {0.6: 0.045, 1.0: 0.11, 1.5: 0.2}


def render(img: np.ndarray, geom: dict, f: Finding,
           p: anatomy.Patient) -> np.ndarray:
  """Draws `f` into `img` (in place) and returns its boolean mask."""
  u, v, lungs = geom["u"], geom["v"], geom["lungs"]
  rng = np.random.default_rng(f.seed)
  sev = _SEV[f.severity]
  mask = np.zeros(img.shape, bool)
  t = f.type
  for side in _sides(f) or [0]:
    lung = geom["lung_l"] if side > 0 else geom["lung_r"]
    # Lateral half of the lung (and the apex): where pleural air and
    # thickening show on a frontal film.
    lateral = side * u > anatomy.LUNG_U - 0.04
    if t == "pleural_effusion":
      # Fluid fills the base and rises laterally in a meniscus, denser
      # toward the bottom.
      lat = np.clip((side * u - anatomy.LUNG_U) / anatomy.LUNG_A + 1, 0, 2)
      level = anatomy.diaphragm(u, side) - _EFFUSION_HEIGHT[sev] - (
          0.035 * sev * lat ** 2)
      m = lung & (v > level)
      fluid = 118.0 + 30.0 * np.clip((v - level) / 0.05, 0, 1)
      img[m] = np.maximum(img[m], fluid[m])
    elif t == "pneumothorax":
      # A lucent rim without lung markings along the apex and lateral
      # wall, bounded by the thin bright visceral pleural line.
      dist = _edge_distance(lung, geom["px"])
      width = (0.02 + 0.025 * sev) * np.clip((0.62 - v) / 0.15, 0, 1)
      m = lung & lateral & (dist < width)
      img[m] = anatomy.AIR + 10.0
      rim = lung & lateral & (np.abs(dist - width) < 0.004) & (width > 0.006)
      img[rim] += 45.0
    elif t in ("consolidation", "lung_opacity", "pneumonia"):
      region = anatomy.lung_zone(v, f.zone or "lower") & lung
      if not region.any():
        region = lung
      cu = float(np.mean(u[region])) + rng.normal(0, 0.01)
      cv = float(np.mean(v[region]))
      m, alpha = _blob(u, v, rng, cu, cv, 0.08 * sev, 0.07 * sev)
      m &= lung
      # Patchy inside (air bronchograms, uneven filling), fading at the edge.
      patch = 0.75 + 0.25 * np.tanh(_smooth_noise(
          rng, img.shape, max(1.0, 0.015 * img.shape[0])))
      img[m] += 68.0 * min(sev, 1.2) * (patch * (0.35 + 0.65 * alpha))[m]
    elif t == "atelectasis":
      # A plate-like band just above the dome, slightly oblique.
      cu = side * anatomy.LUNG_U
      base = anatomy.diaphragm(cu, side) - 0.07
      m = lung & (np.abs(v - base - 0.12 * (u - cu) * side) <
                  0.008 + 0.012 * sev) & (np.abs(u - cu) < 0.11)
      img[m] += 55.0
    elif t in ("nodule", "mass"):
      radius = (0.018 if t == "nodule" else 0.05) * (0.8 + 0.3 * sev)
      zone = anatomy.lung_zone(v, f.zone or "middle") & lung
      dist = _edge_distance(lung, geom["px"])
      cand = np.argwhere(zone & (dist > radius * 1.1))
      if cand.size == 0:
        cand = np.argwhere(zone if zone.any() else lung)
      if cand.size == 0:
        continue
      r, c = cand[rng.integers(len(cand))]
      m = ((u - u[r, c]) ** 2 + (v - v[r, c]) ** 2 < radius ** 2) & lung
      img[m] += 72.0
    elif t == "rib_fracture":
      _, k, pos = rib_break(f)
      v0 = 0.16 + 0.066 * k
      centre = v0 + 0.55 * (pos - 0.04) ** 2 + 0.1 * (pos - 0.04)
      m = (np.abs(np.abs(u) - pos) < 0.03) & (np.abs(v - centre) < 0.03) & (
          np.sign(u) == side)
      # Callus: a bright knob at the fracture line.
      img[m & (np.abs(np.abs(u) - pos) < 0.012)] += 30.0
    elif t == "pleural_thickening":
      dist = _edge_distance(lung, geom["px"])
      m = lung & lateral & (dist < 0.012 + 0.008 * sev) & (v > 0.25)
      img[m] += 55.0
    if side != 0 and t in SIDED:
      mask |= m
  if t == "edema":
    haze = sum(np.exp(-(((u - s * 0.11) / 0.09) ** 2 + ((v - 0.46) / 0.13) **
                        2)) for s in (-1, 1))
    img += 32.0 * sev * haze * lungs
    mask = lungs & (haze > 0.35)
  elif t == "cardiomegaly":
    big = anatomy.heart_mask(u, v, p, ctr=0.58 + 0.04 * sev)
    img[big & geom["body"]] = anatomy.HEART
    mask = big
  elif t == "enlarged_cardiomediastinum":
    # The upper mediastinum bulges on both sides (smoothly, above the heart).
    bulge = np.clip(np.sin(np.pi * (v - 0.1) / 0.4), 0, 1)
    mask = (np.abs(u - 0.005) < p.mediastinum + 0.04 * sev * bulge) & (
        v > 0.1) & (v < 0.5)
    img[mask] = np.maximum(img[mask], anatomy.MEDIASTINUM)
  elif t in DEVICES:
    mask = _device_mask(u, v, t)
    img[mask] = 250.0
  return mask


def rib_break(f: Finding) -> tuple[int, int, float]:
  """(side, rib index, u position) of a rib fracture, fixed by its seed."""
  rng = np.random.default_rng([f.seed, 7])
  side = 1 if f.side == "left" else -1
  return side, int(rng.integers(3, 7)), float(rng.uniform(0.17, 0.26))


def _device_mask(u: np.ndarray, v: np.ndarray, t: str) -> np.ndarray:
  """Where a support device lies (drawn at full radiopacity)."""
  if t == "et_tube":
    return _line(u, v, [(0.0, 0.0), (0.0, 0.27)], 0.007)
  if t == "ng_tube":
    return _line(u, v, [(0.0, 0.0), (0.015, 0.4), (0.05, 0.72), (0.15, 0.86)],
                 0.006)
  if t == "central_line":
    return _line(u, v, [(-0.27, 0.13), (-0.1, 0.2), (-0.035, 0.27),
                        (-0.03, 0.4)], 0.005)
  # Pacemaker: generator box in the left upper chest and a lead to the heart.
  box = (np.abs(u - 0.25) < 0.04) & (np.abs(v - 0.17) < 0.028)
  lead = _line(u, v, [(0.25, 0.17), (0.12, 0.25), (0.04, 0.4), (0.04, 0.62)],
               0.004)
  return box | lead
