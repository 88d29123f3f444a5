"""Screenshots that fit the client: scale, overlays, encoding within a byte budget.

Clients reject large tool results (Claude Desktop: 1 MB for the whole result, and images
travel base64, 4/3 of their size), so every image is fitted to a budget: downscaled to
`max_width` x `max_height`, then, if the encoded bytes are still too many, sent as JPEG
(when no format was asked for) or at a lower quality, and then smaller again. One uniform
scale factor is used for both axes, so `desktop = origin + image / scale` maps any image
pixel back to the desktop, and the result says so.

Overlays are drawn after scaling, so their labels stay legible whatever the scale:
- grid: lines every `step` desktop pixels, labelled with desktop coordinates;
- marks: a numbered tag on each OCR word, the numbers that click(mark=N) accepts.

Pure functions of pixels in, bytes out; the caller runs `render` in a thread.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_MAX_WIDTH = 1280
DEFAULT_MAX_HEIGHT = 800
# Image bytes; base64 makes ~933 KB of them, under Claude Desktop's 1 MB per tool result.
DEFAULT_MAX_BYTES = 700_000
MIN_SIDE = 64                     # never shrink below this to meet a budget
LOSSY_QUALITIES = (85, 70, 55, 40)
SHRINK = 0.75                     # each further step when even the lowest quality is too big
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
GRID_STEPS = (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000)
GRID_COLOR = (255, 0, 255)
MARK_COLOR = (220, 0, 0)


@dataclass
class Mark:
    """A numbered, clickable OCR word."""
    number: int
    text: str
    box: tuple[int, int, int, int]     # x0, y0, x1, y1 (exclusive), desktop pixels

    @property
    def center(self) -> tuple[int, int]:
        return (self.box[0] + self.box[2]) // 2, (self.box[1] + self.box[3]) // 2


@dataclass
class Rendered:
    data: bytes
    format: str                       # png | jpeg | webp
    width: int                        # image pixels
    height: int
    scale: float                      # image pixels per desktop pixel (<= 1)
    quality: int | None               # JPEG/WebP quality, None for PNG
    notes: list[str] = field(default_factory=list)

    @property
    def mime(self) -> str:
        return MIME[self.format]


def fitted_size(w: int, h: int, max_w: int, max_h: int) -> tuple[int, int, float]:
    """The largest size within max_w x max_h with w:h kept (never enlarged), and its scale."""
    scale = min(1.0, max_w / w, max_h / h)
    return max(1, round(w * scale)), max(1, round(h * scale)), scale


def grid_step(w: int, h: int, lines: int = 10) -> int:
    """A round step in desktop pixels that gives about `lines` grid lines across."""
    target = max(w, h) / lines
    return min(GRID_STEPS, key=lambda s: abs(s - target))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, fill, limit: tuple[int, int]) -> None:
    """Text on a filled box whose top-left is at xy, kept inside the image."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    tw, th = x1 - x0 + 4, y1 - y0 + 2
    x = min(max(xy[0], 0), max(limit[0] - tw, 0))
    y = min(max(xy[1], 0), max(limit[1] - th, 0))
    draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=fill)
    draw.text((x + 2 - x0, y + 1 - y0), text, font=font, fill=(255, 255, 255))


def draw_grid(img: Image.Image, origin: tuple[int, int], scale: float, step: int) -> None:
    draw = ImageDraw.Draw(img)
    font = _font(11)
    ox, oy = origin
    w, h = img.size
    # Lines at multiples of `step` in desktop coordinates, labelled with those coordinates.
    first_x = -(-ox // step) * step
    for dx in range(first_x, ox + int(w / scale) + 1, step):
        ix = round((dx - ox) * scale)
        draw.line((ix, 0, ix, h), fill=GRID_COLOR)
        _label(draw, (ix + 1, 0), str(dx), font, GRID_COLOR, (w, h))
    first_y = -(-oy // step) * step
    for dy in range(first_y, oy + int(h / scale) + 1, step):
        iy = round((dy - oy) * scale)
        draw.line((0, iy, w, iy), fill=GRID_COLOR)
        _label(draw, (0, iy + 1), str(dy), font, GRID_COLOR, (w, h))


def draw_marks(img: Image.Image, origin: tuple[int, int], scale: float, marks: list[Mark]) -> None:
    draw = ImageDraw.Draw(img)
    font = _font(11)
    ox, oy = origin
    w, h = img.size
    for m in marks:
        x0, y0 = round((m.box[0] - ox) * scale), round((m.box[1] - oy) * scale)
        x1, y1 = round((m.box[2] - ox) * scale), round((m.box[3] - oy) * scale)
        draw.rectangle((x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)), outline=MARK_COLOR)
        # The tag sits above the word's top-left corner, so the word itself stays readable.
        _label(draw, (x0, y0 - 13), str(m.number), font, MARK_COLOR, (w, h))


def _encode(img: Image.Image, fmt: str, quality: int | None) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        # Level 1: screens compress almost as well as at 6, at half the time.
        img.save(buf, "PNG", compress_level=1)
    elif fmt == "jpeg":
        # No chroma subsampling: coloured text stays sharp.
        img.save(buf, "JPEG", quality=quality, subsampling=0)
    else:
        img.save(buf, "WEBP", quality=quality, method=2)
    return buf.getvalue()


def render(rgbx: np.ndarray, origin: tuple[int, int], *, max_width: int = DEFAULT_MAX_WIDTH,
           max_height: int = DEFAULT_MAX_HEIGHT, fmt: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
           grid: int | None = None, marks: list[Mark] | None = None) -> Rendered:
    """Encode a region of the desktop (`rgbx`: (h, w, 4) uint8 whose top-left is desktop
    pixel `origin`). `fmt` None means PNG, or JPEG when PNG does not fit `max_bytes`."""
    h, w = rgbx.shape[:2]
    full = Image.frombytes("RGB", (w, h), np.ascontiguousarray(rgbx).data, "raw", "RGBX")
    out_w, out_h, _ = fitted_size(w, h, max_width, max_height)
    notes: list[str] = []
    if fmt is None:
        plan = [("png", None)] + [("jpeg", q) for q in LOSSY_QUALITIES]
    elif fmt == "png":
        plan = [("png", None)]
    else:
        plan = [(fmt, q) for q in LOSSY_QUALITIES]
    shrunk = False
    while True:
        if (out_w, out_h) == (w, h):
            img = full.copy() if (grid or marks) else full  # overlays must not touch `full`
        else:
            # BOX averages every source pixel: text stays readable when it shrinks.
            img = full.resize((out_w, out_h), Image.Resampling.BOX)
        if grid:
            draw_grid(img, origin, out_w / w, grid)
        if marks:
            draw_marks(img, origin, out_w / w, marks)
        for kind, quality in plan:
            data = _encode(img, kind, quality)
            if len(data) <= max_bytes:
                if fmt is None and kind != "png":
                    notes.append(f"PNG exceeded the {max_bytes} byte budget: sent as JPEG quality {quality}")
                elif quality is not None and quality != LOSSY_QUALITIES[0]:
                    notes.append(f"quality lowered to {quality} to fit the {max_bytes} byte budget")
                if shrunk:
                    notes.append(f"downscaled to {out_w}x{out_h} to fit the {max_bytes} byte budget")
                return Rendered(data, kind, out_w, out_h, out_w / w, quality, notes)
        if min(out_w, out_h) * SHRINK < MIN_SIDE:
            notes.append(f"could not fit {max_bytes} bytes even at {out_w}x{out_h}")
            return Rendered(data, kind, out_w, out_h, out_w / w, quality, notes)
        out_w, out_h = max(1, round(out_w * SHRINK)), max(1, round(out_h * SHRINK))
        shrunk = True
