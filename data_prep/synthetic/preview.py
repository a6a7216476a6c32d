"""A preview sheet: images with findings outlined and the report beside each."""

import os
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_prep import rle

COLOURS = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (120, 255, 120),
           (255, 120, 255), (255, 150, 60)]


def _font(size: int) -> ImageFont.ImageFont:
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow without FreeType support
    return ImageFont.load_default()


def write(root: str, truth: list[dict], path: str, n: int = 8,
          tile: int = 256) -> str:
  """Writes a PNG of the first `n` frontal MIMIC images with findings."""
  picks = [t for t in truth if t["dataset"] == "mimic" and t["view"] in
           ("PA", "AP") and t["findings"]][:n]
  picks += [t for t in truth if t["dataset"] == "mimic" and t["view"] in
            ("PA", "AP") and not t["findings"]][:max(0, n - len(picks))]
  text_w = int(tile * 1.6)
  sheet = Image.new("RGB", (2 * (tile + text_w), ((len(picks) + 1) // 2) *
                            tile), (20, 20, 20))
  font = _font(max(10, tile // 20))
  for k, t in enumerate(picks):
    img = Image.open(os.path.join(root, t["path"])).convert("RGB")
    arr = np.asarray(img).copy()
    for j, f in enumerate(t["findings"]):
      m = rle.decode(f["mask_rle"], t["height"], t["width"]).astype(bool)
      edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) &
                   np.roll(m, -1, 1))
      arr[edge] = COLOURS[j % len(COLOURS)]
    img = Image.fromarray(arr)
    scale = tile / max(img.size)
    img = img.resize((int(img.size[0] * scale), int(img.size[1] * scale)))
    x0, y0 = (k % 2) * (tile + text_w), (k // 2) * tile
    sheet.paste(img, (x0, y0))
    draw = ImageDraw.Draw(sheet)
    rep = os.path.join(root, "mimic-cxr-reports", "files",
                       os.path.dirname(t["path"]).split("files/")[1] + ".txt")
    with open(rep) as fh:
      body = " ".join(fh.read().split())
    lines = [f"{t['view']}  s{t['study_id']}"]
    for j, f in enumerate(t["findings"]):
      lines.append(f"[{j}] {f['type']} {f.get('side') or ''} "
                   f"({f['certainty']})")
    lines += textwrap.wrap(body.replace("FINAL REPORT", ""), 52)
    y = y0 + 4
    for i, line in enumerate(lines[: tile // (font.size + 2)] if hasattr(
        font, "size") else lines[:20]):
      colour = (COLOURS[(i - 1) % len(COLOURS)] if 0 < i <= len(
          t["findings"]) else (230, 230, 230))
      draw.text((x0 + tile + 6, y), line, fill=colour, font=font)
      y += (font.size + 2) if hasattr(font, "size") else 12
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  sheet.save(path)
  return path
