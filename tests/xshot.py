"""The X server's own picture of the root window (xwd), to compare frames against."""
from __future__ import annotations

import struct
import subprocess

import numpy as np


def parse_xwd(data: bytes) -> np.ndarray:
    """XWD (ZPixmap, 24/32 bpp TrueColor) -> (h, w, 3) uint8 RGB."""
    fields = struct.unpack(">25I", data[:100])
    header_size, _version, pixmap_format, _depth, width, height = fields[:6]
    byte_order, bits_per_pixel, bytes_per_line = fields[7], fields[11], fields[12]
    red_mask, green_mask, blue_mask = fields[14:17]
    ncolors = fields[19]
    assert pixmap_format == 2 and bits_per_pixel == 32, (pixmap_format, bits_per_pixel)
    offset = header_size + 12 * ncolors
    rows = np.frombuffer(data, np.uint8, count=height * bytes_per_line, offset=offset)
    words = rows.reshape(height, bytes_per_line)[:, :width * 4].copy().view("<u4" if byte_order == 0 else ">u4")
    out = np.empty((height, width, 3), np.uint8)
    for i, mask in enumerate((red_mask, green_mask, blue_mask)):
        shift = (mask & -mask).bit_length() - 1
        out[:, :, i] = (words >> shift) & 0xFF
    return out


def root_image(env: dict) -> np.ndarray:
    data = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True, check=True).stdout
    return parse_xwd(data)
