"""Rectangle decoders. Every decoder writes into the framebuffer, a numpy array of shape
(height, width, 4), dtype uint8, bytes R, G, B, X (the pixel format the client asks for:
32 bpp, depth 24, little-endian, red shift 0, green 8, blue 16).

A decoder is an async function (state, stream, fb, x, y, w, h). The caller has already
checked that the rectangle lies inside the framebuffer. Decoders must not read more than
the server announced, and must refuse data that would inflate past what the rectangle needs
(ProtocolError), so that memory stays bounded whatever the server sends.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from . import constants as C
from .errors import ProtocolError
from .stream import Stream

BYTES_PER_PIXEL = 4


@dataclass
class DecoderState:
    """Per-session decoder state: zlib streams persist across rectangles (RFC 6143 7.7)."""
    zlib_streams: dict = field(default_factory=dict)

    def inflater(self, key) -> "zlib._Decompress":
        if key not in self.zlib_streams:
            self.zlib_streams[key] = zlib.decompressobj()
        return self.zlib_streams[key]

    def reset(self, key) -> None:
        self.zlib_streams.pop(key, None)


def inflate_exact(inflater, data: bytes, expected: int, what: str) -> bytes:
    """Inflate `data` and insist on exactly `expected` bytes: no more (a zip bomb, or a
    server out of sync), no less."""
    out = inflater.decompress(data, expected)
    if inflater.unconsumed_tail:
        raise ProtocolError(f"{what}: zlib data inflates beyond the {expected} bytes the rectangle needs")
    if len(out) != expected:
        raise ProtocolError(f"{what}: zlib data inflated to {len(out)} bytes, expected {expected}")
    return out


async def decode_raw(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    data = await stream.read(w * h * BYTES_PER_PIXEL)
    fb[y:y + h, x:x + w] = np.frombuffer(data, np.uint8).reshape(h, w, BYTES_PER_PIXEL)


async def decode_copyrect(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    src_x, src_y = await stream.u16(), await stream.u16()
    fb_h, fb_w = fb.shape[:2]
    if src_x + w > fb_w or src_y + h > fb_h:
        raise ProtocolError(f"CopyRect source {w}x{h}+{src_x}+{src_y} lies outside the {fb_w}x{fb_h} framebuffer")
    fb[y:y + h, x:x + w] = fb[src_y:src_y + h, src_x:src_x + w].copy()


DECODERS = {
    C.ENC_RAW: decode_raw,
    C.ENC_COPYRECT: decode_copyrect,
}
