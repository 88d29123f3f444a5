"""Rectangle decoders. Every decoder writes into the framebuffer, a numpy array of shape
(height, width, 4), dtype uint8, bytes R, G, B, X (the pixel format the client asks for:
32 bpp, depth 24, little-endian, red shift 0, green 8, blue 16).

A decoder is an async function (state, stream, fb, x, y, w, h). The caller has already
checked that the rectangle lies inside the framebuffer. Decoders must not read more than
the server announced, and must refuse data that would inflate past what the rectangle needs
(ProtocolError), so that memory stays bounded whatever the server sends.

Byte layouts follow the RFB community specification (rfbproto.rst) and RFC 6143 (TRLE).
With our pixel format a PIXEL is 4 bytes R, G, B, X, and the "compressed" pixels of ZRLE,
TRLE (CPIXEL) and Tight (TPIXEL) are 3 bytes R, G, B. Internally most decoders paint through
a little-endian uint32 view of the framebuffer, so that one pixel is one number: a fill is
one slice assignment and a palette lookup one np.take.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import constants as C
from .errors import ProtocolError
from .stream import Stream

BYTES_PER_PIXEL = 4
WORD = np.dtype("<u4")  # one framebuffer pixel: R | G << 8 | B << 16 | X << 24


@dataclass
class DecoderState:
    """Per-session decoder state: zlib streams persist across rectangles (RFC 6143 7.7),
    and so may TRLE's palette (subencodings 127 and 129 reuse the previous tile's)."""
    zlib_streams: dict = field(default_factory=dict)
    trle_palette: np.ndarray | None = None

    def inflater(self, key) -> "zlib._Decompress":
        if key not in self.zlib_streams:
            self.zlib_streams[key] = zlib.decompressobj()
        return self.zlib_streams[key]

    def reset(self, key) -> None:
        self.zlib_streams.pop(key, None)


def inflate_exact(inflater, data: bytes, expected: int, what: str) -> bytes:
    """Inflate `data` and insist on exactly `expected` bytes: no more (a zip bomb, or a
    server out of sync), no less."""
    out = _inflate(inflater, data, expected, what)
    if len(out) != expected:
        raise ProtocolError(f"{what}: zlib data inflated to {len(out)} bytes, expected {expected}")
    return out


def _inflate(inflater, data: bytes, limit: int, what: str) -> bytes:
    """Inflate `data`, refusing to produce more than `limit` bytes."""
    if limit == 0:
        # To zlib, max_length 0 means "no limit". An empty rectangle may still carry zlib
        # bytes that inflate to nothing (a sync flush); they must be consumed all the same.
        limit_for_zlib, limit = 1, 0
    else:
        limit_for_zlib = limit
    try:
        out = inflater.decompress(data, limit_for_zlib)
        # Output can also wait inside the inflater with all input consumed (data cut after a
        # match that runs past the limit); it would come out as the next rectangle's start.
        beyond = (len(out) > limit or bool(inflater.unconsumed_tail)
                  or (len(out) == limit and bool(inflater.decompress(b"", 1))))
    except zlib.error as e:
        raise ProtocolError(f"{what}: corrupt zlib data ({e})") from None
    if beyond:
        raise ProtocolError(f"{what}: zlib data inflates beyond the {limit} bytes the rectangle can need")
    return out


def deflate_bound(n: int) -> int:
    """The most compressed bytes an honest server needs for `n` bytes: deflate's stored
    blocks cost 5 bytes per 64 KiB, plus the zlib header and sync-flush markers. Generous,
    but proportional to the rectangle, so a length field cannot make us buffer more."""
    return n + (n >> 6) + 1024


# -- pixels ----------------------------------------------------------------------------

def _words(fb: np.ndarray) -> np.ndarray:
    """The framebuffer as (height, width) little-endian uint32, sharing its memory."""
    return fb.view(WORD)[..., 0]


def _rgb24(data) -> np.ndarray:
    """3-byte R, G, B pixels (CPIXEL, TPIXEL; bytes or an (n, 3) array) -> uint32 words, X = 0.

    Reads each pixel as an unaligned uint32 at a 3-byte stride (a pad byte makes the last
    one readable) and masks off the next pixel's red: several times faster than copying
    the bytes into a 4-byte layout."""
    raw = (data.tobytes() if isinstance(data, np.ndarray) else bytes(data)) + b"\0"
    return np.ndarray(((len(raw) - 1) // 3,), WORD, raw, 0, (3,)) & 0xFFFFFF


def _rgb24_one(data) -> int:
    return data[0] | data[1] << 8 | data[2] << 16


def _tiles(x: int, y: int, w: int, h: int, size: int):
    """(x, y, w, h) of each tile, left to right, top to bottom; the last column and row
    are cut to what is left of the rectangle."""
    for ty in range(y, y + h, size):
        th = min(size, y + h - ty)
        for tx in range(x, x + w, size):
            yield tx, ty, min(size, x + w - tx), th


def _unpack_indices(data, width: int, height: int, bits: int) -> np.ndarray:
    """Palette indices packed `bits` (1, 2, 4 or 8) per pixel, most significant bits first,
    each row padded to a whole byte -> (height, width) uint8."""
    packed = np.frombuffer(data, np.uint8).reshape(height, -1)
    if bits == 8:
        return packed[:, :width]
    if bits == 1:
        return np.unpackbits(packed, axis=1)[:, :width]
    # One shift per field position: much faster in numpy than a broadcast shift.
    per_byte = 8 // bits
    indices = np.empty(packed.shape + (per_byte,), np.uint8)
    for i in range(per_byte):
        indices[:, :, i] = (packed >> (8 - bits * (i + 1))) & ((1 << bits) - 1)
    return indices.reshape(height, -1)[:, :width]


def _packed_size(width: int, height: int, bits: int) -> int:
    return (width * bits + 7) // 8 * height


def _lookup(palette: np.ndarray, indices: np.ndarray, what: str, bits: int = 8) -> np.ndarray:
    """palette[indices], refusing indices beyond the palette (unless `bits`-wide indices
    cannot reach beyond it)."""
    if len(palette) < (1 << bits) and indices.size and int(indices.max()) >= len(palette):
        raise ProtocolError(f"{what}: palette index {int(indices.max())} but the palette has "
                            f"{len(palette)} colours")
    return np.take(palette, indices)


# -- Raw, CopyRect -----------------------------------------------------------------------

async def decode_raw(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    data = await stream.read(w * h * BYTES_PER_PIXEL)
    fb[y:y + h, x:x + w] = np.frombuffer(data, np.uint8).reshape(h, w, BYTES_PER_PIXEL)


async def decode_copyrect(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    src_x, src_y = await stream.u16(), await stream.u16()
    fb_h, fb_w = fb.shape[:2]
    if src_x + w > fb_w or src_y + h > fb_h:
        raise ProtocolError(f"CopyRect source {w}x{h}+{src_x}+{src_y} lies outside the {fb_w}x{fb_h} framebuffer")
    fb[y:y + h, x:x + w] = fb[src_y:src_y + h, src_x:src_x + w].copy()


# -- painting many small rectangles (RRE, Hextile) -------------------------------------

BATCH_PIXELS = 1 << 18   # bounds a batch's index arrays (a few MB)
BIG_AREA = 1 << 16       # a rectangle this large is a slice assignment of its own


def _paint_rects(rect: np.ndarray, x, y, w, h, colour) -> None:
    """Fill rectangles (numpy int arrays, rect coordinates) in the order given: later ones
    win where they overlap. A numpy call costs as much as filling a few hundred pixels,
    and text arrives as thousands of rectangles of a few pixels, so they go in batches of
    one fancy assignment each, up to BATCH_PIXELS; a big one is a slice of its own."""
    area = w * h
    start = 0
    for big in np.flatnonzero(area > BIG_AREA).tolist() + [len(area)]:
        cumulative = np.cumsum(area[start:big])
        first = 0
        while first < big - start:
            done = int(cumulative[first] - area[start + first])
            last = max(first + 1, int(np.searchsorted(cumulative, done + BATCH_PIXELS, side="right")))
            pick = slice(start + first, start + last)
            _paint_batch(rect, x[pick], y[pick], w[pick], h[pick], colour[pick])
            first = last
        if big < len(area):
            rect[y[big]:y[big] + h[big], x[big]:x[big] + w[big]] = colour[big]
        start = big + 1


def _paint_batch(rect: np.ndarray, x, y, w, h, colour) -> None:
    """One fancy assignment paints the pixels in no particular order. That only matters
    where rectangles of different colours overlap (TigerVNC's Hextile overlaps some of one
    colour); then the pixels do not all read back as written, and we paint again in order."""
    area = w * h
    which = np.repeat(np.arange(len(area)), area)
    offset = np.arange(len(which)) - np.repeat(np.cumsum(area) - area, area)
    width = w[which]
    rows, cols = y[which] + offset // width, x[which] + offset % width
    pixels = colour[which]
    rect[rows, cols] = pixels
    if not (rect[rows, cols] == pixels).all():
        for x0, y0, x1, y1, c in zip(*(a.tolist() for a in (x, y, x + w, y + h, colour))):
            rect[y0:y1, x0:x1] = c


# -- RRE -------------------------------------------------------------------------------

RRE_SUBRECT = np.dtype([("pixel", "<u4"), ("x", ">u2"), ("y", ">u2"), ("w", ">u2"), ("h", ">u2")])
RRE_CHUNK = 4096     # subrectangles per read: bounds the buffer whatever count the server claims
RRE_MAX_OVERDRAW = 16


async def decode_rre(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    head = await stream.read(8)
    count, background = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "little")
    # An honest encoder never needs more subrectangles than pixels...
    if count > w * h:
        raise ProtocolError(f"RRE rectangle {w}x{h} announces {count} subrectangles, more than its pixels")
    rect = _words(fb)[y:y + h, x:x + w]
    rect[:] = background
    # ...nor paints them many times over: that would only cost us time.
    budget = RRE_MAX_OVERDRAW * w * h
    while count:
        n = min(count, RRE_CHUNK)
        count -= n
        subs = np.frombuffer(await stream.read(n * RRE_SUBRECT.itemsize), RRE_SUBRECT)
        sx, sy, sw, sh = (subs[f].astype(np.int64) for f in ("x", "y", "w", "h"))
        bad = np.flatnonzero((sx + sw > w) | (sy + sh > h))
        if bad.size:
            i = bad[0]
            raise ProtocolError(f"RRE subrectangle {sw[i]}x{sh[i]}+{sx[i]}+{sy[i]} lies outside "
                                f"its {w}x{h} rectangle")
        budget -= int((sw * sh).sum())
        if budget < 0:
            raise ProtocolError(f"RRE subrectangles cover the {w}x{h} rectangle more than "
                                f"{RRE_MAX_OVERDRAW} times over")
        _paint_rects(rect, sx, sy, sw, sh, subs["pixel"])


# -- Hextile ---------------------------------------------------------------------------

HEX_RAW, HEX_BACKGROUND, HEX_FOREGROUND, HEX_ANY_SUBRECTS, HEX_COLOURED = 1, 2, 4, 8, 16
HEX_PLAIN_SUBRECT = np.dtype([("xy", "u1"), ("wh", "u1")])
HEX_COLOURED_SUBRECT = np.dtype([("pixel", "<u4"), ("xy", "u1"), ("wh", "u1")])
# Bytes after the mask: background, foreground (4 each), subrect count (1), by mask.
HEX_HEAD_SIZE = [4 * bool(m & HEX_BACKGROUND) + 4 * bool(m & HEX_FOREGROUND) + bool(m & HEX_ANY_SUBRECTS)
                 for m in range(32)]


async def decode_hextile(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    """Tiles are read one by one (a few reads each), but painted together at the end,
    since numpy pays per call: every background as one grid, then the raw tiles, then
    all subrectangles (see _paint_rects)."""
    backgrounds = []  # per tile, in order (raw tiles: 0, painted over)
    raw_tiles = []
    subrects = _HextileSubrects()
    # Background and foreground carry over from tile to tile within the rectangle. The spec
    # says they may not carry over a raw tile; we keep them anyway (a conforming server
    # re-sends them, and keeping them costs nothing).
    background = foreground = None
    for tx, ty, tw, th in _tiles(0, 0, w, h, 16):
        mask = await stream.u8()
        if mask & HEX_RAW:
            raw_tiles.append((tx, ty, tw, th, await stream.read(tw * th * 4)))
            backgrounds.append(0)
            continue
        if mask > 31:
            raise ProtocolError(f"Hextile tile at ({x + tx},{y + ty}) has subencoding {mask:#x} "
                                "(ZlibHex bits; not asked for)")
        # The optional background, foreground and subrect count in a single read.
        head = await stream.read(HEX_HEAD_SIZE[mask]) if mask else b""
        if mask & HEX_BACKGROUND:
            background = int.from_bytes(head[0:4], "little")
        if mask & HEX_FOREGROUND:
            at = 4 if mask & HEX_BACKGROUND else 0
            foreground = int.from_bytes(head[at:at + 4], "little")
        if background is None:
            raise ProtocolError(f"Hextile tile at ({x + tx},{y + ty}) has no background and none was sent before")
        backgrounds.append(background)
        if mask & HEX_ANY_SUBRECTS:
            coloured = bool(mask & HEX_COLOURED)
            if not coloured and foreground is None:
                raise ProtocolError(f"Hextile tile at ({x + tx},{y + ty}) has subrectangles but no foreground colour")
            size = HEX_COLOURED_SUBRECT.itemsize if coloured else HEX_PLAIN_SUBRECT.itemsize
            subrects.add(tx, ty, tw, th, await stream.read(head[-1] * size), coloured, foreground)

    rect = _words(fb)[y:y + h, x:x + w]
    grid = np.array(backgrounds, WORD).reshape(-(-h // 16), -(-w // 16))
    rect[:] = np.repeat(np.repeat(grid, 16, axis=0), 16, axis=1)[:h, :w]
    for tx, ty, tw, th, data in raw_tiles:
        rect[ty:ty + th, tx:tx + tw] = np.frombuffer(data, WORD).reshape(th, tw)
    subrects.paint(rect, x, y)


class _HextileSubrects:
    """A rectangle's Hextile subrectangles, gathered tile by tile (the data as read, no
    per-subrectangle work) and decoded and painted together."""

    def __init__(self):
        self.tiles = []        # (x, y, w, h, foreground) in rectangle coordinates
        self.plain = []        # (tile number, data): subrects in the tile's foreground
        self.coloured = []     # (tile number, data): subrects with their own pixel

    def add(self, tx: int, ty: int, tw: int, th: int, data: bytes, coloured: bool, foreground: int | None) -> None:
        (self.coloured if coloured else self.plain).append((len(self.tiles), data))
        self.tiles.append((tx, ty, tw, th, foreground or 0))

    def paint(self, rect: np.ndarray, x: int, y: int) -> None:
        if not self.tiles:
            return
        tiles = np.array(self.tiles, np.int64)
        plain, plain_tile, plain_nth = _subrect_records(self.plain, HEX_PLAIN_SUBRECT)
        coloured, coloured_tile, coloured_nth = _subrect_records(self.coloured, HEX_COLOURED_SUBRECT)
        # Back into the order sent: tile by tile, and in order within a tile.
        tile = np.concatenate([plain_tile, coloured_tile])
        order = np.lexsort((np.concatenate([plain_nth, coloured_nth]), tile))
        tile = tile[order]
        xy = np.concatenate([plain["xy"], coloured["xy"]]).astype(np.int64)[order]
        wh = np.concatenate([plain["wh"], coloured["wh"]]).astype(np.int64)[order]
        colour = np.concatenate([tiles[plain_tile, 4].astype(WORD), coloured["pixel"]])[order]
        sx, sy, sw, sh = xy >> 4, xy & 15, (wh >> 4) + 1, (wh & 15) + 1
        tx, ty, tw, th = (tiles[tile, i] for i in range(4))
        bad = np.flatnonzero((sx + sw > tw) | (sy + sh > th))
        if bad.size:
            i = bad[0]
            raise ProtocolError(f"Hextile subrectangle {sw[i]}x{sh[i]}+{sx[i]}+{sy[i]} lies outside its "
                                f"{tw[i]}x{th[i]} tile at ({x + tx[i]},{y + ty[i]})")
        _paint_rects(rect, sx + tx, sy + ty, sw, sh, colour)


def _subrect_records(chunks: list, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The subrects of several tiles as one record array, with each one's tile number and
    its place within its tile."""
    records = np.frombuffer(b"".join(data for _, data in chunks), dtype)
    counts = np.array([len(data) // dtype.itemsize for _, data in chunks], np.int64)
    tile = np.repeat(np.array([n for n, _ in chunks], np.int64), counts)
    nth = np.arange(len(records)) - np.repeat(np.cumsum(counts) - counts, counts)
    return records, tile, nth


# -- ZLIB ------------------------------------------------------------------------------

async def decode_zlib(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    expected = w * h * BYTES_PER_PIXEL
    length = await stream.u32()
    if length > deflate_bound(expected):
        raise ProtocolError(f"ZLIB rectangle {w}x{h} announces {length} bytes of zlib data, "
                            f"more than {deflate_bound(expected)} it could need")
    data = inflate_exact(state.inflater("zlib"), await stream.read(length), expected, "ZLIB")
    fb[y:y + h, x:x + w] = np.frombuffer(data, np.uint8).reshape(h, w, BYTES_PER_PIXEL)


# -- Tight -----------------------------------------------------------------------------

TIGHT_FILL, TIGHT_JPEG = 0x8, 0x9
TIGHT_NO_ZLIB, TIGHT_NO_ZLIB_FILTER = 0xA, 0xE  # "BasicCompression Without Zlib"
TIGHT_READ_FILTER = 0x4                         # bit 6 of the control byte, in the top nibble
TIGHT_COPY, TIGHT_PALETTE, TIGHT_GRADIENT = 0, 1, 2
TIGHT_MIN_TO_COMPRESS = 12                      # shorter data is sent as is
TIGHT_MAX_LENGTH = (1 << 22) - 1                # what a 3-byte compact length can say


async def decode_tight(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    control = await stream.u8()
    # The low four bits reset zlib streams 0-3, whatever the compression method.
    for i in range(4):
        if control & (1 << i):
            state.reset(("tight", i))
    method = control >> 4
    words = _words(fb)[y:y + h, x:x + w]
    if method == TIGHT_FILL:
        words[:] = _rgb24_one(await stream.read(3))
    elif method == TIGHT_JPEG:
        await _tight_jpeg(stream, words, w, h)
    elif method < 8 or method in (TIGHT_NO_ZLIB, TIGHT_NO_ZLIB_FILTER):
        zlib_stream = None if method >= 8 else method & 3
        filter_id = await stream.u8() if method & TIGHT_READ_FILTER else TIGHT_COPY
        await _tight_basic(state, stream, words, w, h, zlib_stream, filter_id)
    else:
        raise ProtocolError(f"Tight rectangle {w}x{h}+{x}+{y} has invalid compression control {control:#04x}")


async def _tight_length(stream: Stream) -> int:
    """The 1-3 byte compact length: 7 bits, 7 bits, then 8 bits, least significant first."""
    b = await stream.u8()
    length = b & 0x7F
    if b & 0x80:
        b = await stream.u8()
        length |= (b & 0x7F) << 7
        if b & 0x80:
            length |= await stream.u8() << 14
    return length


async def _tight_jpeg(stream: Stream, words: np.ndarray, w: int, h: int) -> None:
    length = await _tight_length(stream)
    # A JPEG of a few pixels is mostly headers and tables; beyond that it never needs more
    # than the raw pixels would.
    limit = min(w * h * 4 + 65536, TIGHT_MAX_LENGTH)
    if length > limit:
        raise ProtocolError(f"Tight JPEG for a {w}x{h} rectangle announces {length} bytes (limit {limit})")
    data = await stream.read(length)
    from PIL import Image  # only Tight JPEG needs Pillow
    try:
        image = Image.open(io.BytesIO(data))
        # Check the size before decoding: the header might announce a huge image.
        if image.size != (w, h):
            raise ProtocolError(f"Tight JPEG is {image.size[0]}x{image.size[1]} for a {w}x{h} rectangle")
        rgb = image.convert("RGB").tobytes()
    except ProtocolError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        raise ProtocolError(f"Tight JPEG for a {w}x{h} rectangle does not decode: {e}") from None
    words[:] = _rgb24(rgb).reshape(h, w)


async def _tight_basic(state: DecoderState, stream: Stream, words: np.ndarray, w: int, h: int,
                       zlib_stream: int | None, filter_id: int) -> None:
    if filter_id == TIGHT_COPY:
        data = await _tight_data(state, stream, w * h * 3, zlib_stream, w, h)
        words[:] = _rgb24(data).reshape(h, w)
    elif filter_id == TIGHT_PALETTE:
        size = await stream.u8() + 1
        palette = _rgb24(await stream.read(3 * size))  # the palette itself is never compressed
        bits = 1 if size == 2 else 8
        data = await _tight_data(state, stream, _packed_size(w, h, bits), zlib_stream, w, h)
        words[:] = _lookup(palette, _unpack_indices(data, w, h, bits), f"Tight {w}x{h} palette rectangle", bits)
    elif filter_id == TIGHT_GRADIENT:
        data = await _tight_data(state, stream, w * h * 3, zlib_stream, w, h)
        words[:] = _rgb24(_ungradient(data, w, h)).reshape(h, w)
    else:
        raise ProtocolError(f"Tight rectangle {w}x{h} uses unknown filter {filter_id}")


async def _tight_data(state: DecoderState, stream: Stream, size: int, zlib_stream: int | None,
                      w: int, h: int) -> bytes:
    """The `size` bytes of filtered pixel data: as is when short or when sent without zlib,
    else a compact length and that much zlib data on the given stream."""
    if zlib_stream is None or size < TIGHT_MIN_TO_COMPRESS:
        return await stream.read(size)
    length = await _tight_length(stream)
    if length > deflate_bound(size):
        raise ProtocolError(f"Tight {w}x{h} rectangle announces {length} bytes of zlib data for "
                            f"{size} bytes of pixels")
    what = f"Tight {w}x{h} rectangle (zlib stream {zlib_stream})"
    return inflate_exact(state.inflater(("tight", zlib_stream)), await stream.read(length), size, what)


def _ungradient(data: bytes, w: int, h: int) -> bytes:
    """Undo Tight's gradient filter: each component was sent as the difference from the
    prediction up + left - up_left (clamped to 0..255, zero outside the rectangle).

    A pixel depends on its left and upper neighbours, so no row or column can be done at
    once; but all pixels of one anti-diagonal (i + j = k) only depend on the two previous
    diagonals. In a zero-padded (h+1) x (w+1) layout, flattened, a diagonal is a slice
    with step w, and so are its upper, left and upper-left neighbours."""
    stride = w + 1
    diffs = np.zeros(((h + 1) * stride, 3), np.int16)
    diffs.reshape(h + 1, stride, 3)[1:, 1:] = np.frombuffer(data, np.uint8).reshape(h, w, 3)
    values = np.zeros_like(diffs)
    for k in range(w + h - 1):
        first, last = max(0, k - w + 1), min(h - 1, k)  # rows the diagonal crosses
        start = (first + 1) * stride + (k - first) + 1
        stop = start + (last - first) * w + 1
        # up + left - up_left, clamped, plus the difference sent (in place: a step is
        # only a few dozen pixels, so numpy's per-call cost is what counts).
        p = values[start - stride:stop - stride:w] + values[start - 1:stop - 1:w]
        p -= values[start - stride - 1:stop - stride - 1:w]
        np.maximum(p, 0, out=p)
        np.minimum(p, 255, out=p)
        p += diffs[start:stop:w]
        p &= 0xFF
        values[start:stop:w] = p
    return values.reshape(h + 1, stride, 3)[1:, 1:].astype(np.uint8).tobytes()


# -- ZRLE and TRLE ---------------------------------------------------------------------
# Both split the rectangle into tiles (ZRLE 64x64, TRLE 16x16), each led by a subencoding
# byte: 0 raw CPIXELs, 1 one CPIXEL for the whole tile, 2-16 a palette of that many
# CPIXELs then packed indices (1, 2 or 4 bits), 128 runs of (CPIXEL, length), 130-255 a
# palette of (sub - 128) CPIXELs then runs of indices. TRLE adds 127 and 129: packed or RLE
# with the previous tile's palette. A run length is 1 + the sum of its bytes, every byte
# but the last being 255. ZRLE inflates the whole rectangle from one per-session zlib
# stream first; TRLE reads its tiles straight off the connection.

RLE_PLAIN, TRLE_REUSE_PACKED, TRLE_REUSE_RLE = 128, 127, 129


def _palette_bits(size: int) -> int:
    return 1 if size <= 2 else 2 if size <= 4 else 4


def _rle_bound(w: int, h: int, tile: int) -> int:
    """The most bytes an honest encoder can spend on a rectangle's tiles: plain RLE of
    one-pixel runs costs 4 bytes a pixel; a 127-colour palette (381 bytes) with one byte a
    pixel is the worst for small tiles; plus each tile's subencoding byte."""
    tiles = -(-w // tile) * -(-h // tile)
    return 4 * w * h + 384 * tiles


def _run_overrun(what: str, length: int, left: int, unfinished: bool = False) -> ProtocolError:
    """`unfinished`: we stopped reading the run's length bytes as soon as it was too long."""
    at_least = "at least " if unfinished else ""
    return ProtocolError(f"{what}: run of {at_least}{length} pixels overruns the {left} left in the tile")


class _Buffer:
    """ZRLE's inflated tile data, read front to back."""

    def __init__(self, data: bytes, what: str):
        self.data = data
        self.view = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError(f"{self.what}: data ends inside a tile")
        chunk = self.view[self.pos:end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]


async def decode_zrle(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    what = f"ZRLE {w}x{h}+{x}+{y}"
    length = await stream.u32()
    bound = _rle_bound(w, h, 64)
    if length > deflate_bound(bound):
        raise ProtocolError(f"{what}: announces {length} bytes of zlib data, more than the "
                            f"{deflate_bound(bound)} the rectangle could need")
    buf = _Buffer(_inflate(state.inflater("zrle"), await stream.read(length), bound, what), what)
    words = _words(fb)
    for tx, ty, tw, th in _tiles(x, y, w, h, 64):
        tile = words[ty:ty + th, tx:tx + tw]
        _zrle_tile(buf, tile, f"{what}, tile at ({tx},{ty})")
    if buf.pos != len(buf.data):
        raise ProtocolError(f"{what}: {len(buf.data) - buf.pos} bytes of data beyond the last tile")


def _zrle_tile(buf: _Buffer, tile: np.ndarray, what: str) -> None:
    th, tw = tile.shape
    sub = buf.u8()
    if sub == 0:
        tile[:] = _rgb24(buf.take(3 * tw * th)).reshape(th, tw)
    elif sub == 1:
        tile[:] = _rgb24_one(buf.take(3))
    elif 2 <= sub <= 16:
        palette = _rgb24(buf.take(3 * sub))
        bits = _palette_bits(sub)
        indices = _unpack_indices(buf.take(_packed_size(tw, th, bits)), tw, th, bits)
        tile[:] = _lookup(palette, indices, what, bits)
    elif sub == RLE_PLAIN:
        tile[:] = _plain_runs(buf, tw * th, what).reshape(th, tw)
    elif sub >= 130:
        palette = _rgb24(buf.take(3 * (sub - 128)))
        tile[:] = _palette_runs(buf, tw * th, palette, what).reshape(th, tw)
    else:
        raise ProtocolError(f"{what}: unused subencoding {sub}")


def _plain_runs(buf: _Buffer, npix: int, what: str) -> np.ndarray:
    """Runs of (CPIXEL, length) covering exactly `npix` pixels, as uint32 words."""
    data, pos, end = buf.data, buf.pos, len(buf.data)
    starts, lengths = [], []
    left = npix
    while left:
        if pos + 4 > end:
            raise ProtocolError(f"{what}: data ends inside a run")
        starts.append(pos)
        length = 1 + data[pos + 3]
        pos += 4
        if length == 256:  # the length goes on while its bytes are 255
            length, pos = _long_run(data, pos, end, length, left, what)
        if length > left:
            raise _run_overrun(what, length, left)
        lengths.append(length)
        left -= length
    buf.pos = pos
    colours = np.frombuffer(data, np.uint8)[np.add.outer(np.array(starts), np.arange(3))]
    return np.repeat(_rgb24(colours), lengths)


def _palette_runs(buf: _Buffer, npix: int, palette: np.ndarray, what: str) -> np.ndarray:
    """Runs of palette indices covering exactly `npix` pixels: an index below 128 is one
    pixel; index + 128 is followed by a run length."""
    data, pos, end = buf.data, buf.pos, len(buf.data)
    indices, lengths = [], []
    left = npix
    while left:
        if pos >= end:
            raise ProtocolError(f"{what}: data ends inside a run")
        b = data[pos]
        pos += 1
        if b < 128:
            indices.append(b)
            lengths.append(1)
            left -= 1
            continue
        if pos >= end:
            raise ProtocolError(f"{what}: data ends inside a run")
        length = 1 + data[pos]
        pos += 1
        if length == 256:
            length, pos = _long_run(data, pos, end, length, left, what)
        if length > left:
            raise _run_overrun(what, length, left)
        indices.append(b - 128)
        lengths.append(length)
        left -= length
    buf.pos = pos
    return np.repeat(_lookup(palette, np.array(indices, np.uint8), what), lengths)


def _long_run(data: bytes, pos: int, end: int, length: int, left: int, what: str) -> tuple[int, int]:
    """Continue a run length whose bytes so far were all 255; stop as soon as it exceeds
    the tile, so a server cannot keep us counting."""
    while True:
        if length > left:
            raise _run_overrun(what, length, left, unfinished=True)
        if pos >= end:
            raise ProtocolError(f"{what}: data ends inside a run length")
        b = data[pos]
        pos += 1
        length += b
        if b != 255:
            return length, pos


async def decode_trle(state: DecoderState, stream: Stream, fb: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    words = _words(fb)
    for tx, ty, tw, th in _tiles(x, y, w, h, 16):
        tile = words[ty:ty + th, tx:tx + tw]
        await _trle_tile(state, stream, tile, f"TRLE {w}x{h}+{x}+{y}, tile at ({tx},{ty})")


async def _trle_tile(state: DecoderState, stream: Stream, tile: np.ndarray, what: str) -> None:
    th, tw = tile.shape
    sub = await stream.u8()
    if sub == 0:
        tile[:] = _rgb24(await stream.read(3 * tw * th)).reshape(th, tw)
    elif sub == 1:
        tile[:] = _rgb24_one(await stream.read(3))
    elif 2 <= sub <= 16 or sub == TRLE_REUSE_PACKED:
        palette = await _trle_palette(state, stream, sub, sub == TRLE_REUSE_PACKED, what)
        bits = _palette_bits(len(palette))
        data = await stream.read(_packed_size(tw, th, bits))
        tile[:] = _lookup(palette, _unpack_indices(data, tw, th, bits), what, bits)
    elif sub == RLE_PLAIN:
        tile[:] = (await _trle_plain_runs(stream, tw * th, what)).reshape(th, tw)
    elif sub >= TRLE_REUSE_RLE:
        palette = await _trle_palette(state, stream, sub - 128, sub == TRLE_REUSE_RLE, what)
        tile[:] = (await _trle_palette_runs(stream, tw * th, palette, what)).reshape(th, tw)
    else:
        raise ProtocolError(f"{what}: unused subencoding {sub}")


async def _trle_palette(state: DecoderState, stream: Stream, size: int, reuse: bool, what: str) -> np.ndarray:
    """A new palette of `size` CPIXELs, or (127 and 129) the one the previous tile used."""
    if reuse:
        if state.trle_palette is None:
            raise ProtocolError(f"{what}: reuses a palette but no tile has sent one")
        return state.trle_palette
    state.trle_palette = _rgb24(await stream.read(3 * size))
    return state.trle_palette


async def _trle_run_length(stream: Stream, first: int, left: int, what: str) -> int:
    length = 1 + first
    while first == 255:
        if length > left:
            raise _run_overrun(what, length, left, unfinished=True)
        first = await stream.u8()
        length += first
    if length > left:
        raise _run_overrun(what, length, left)
    return length


async def _trle_plain_runs(stream: Stream, npix: int, what: str) -> np.ndarray:
    colours, lengths = [], []
    left = npix
    while left:
        head = await stream.read(4)  # CPIXEL and the first length byte
        length = await _trle_run_length(stream, head[3], left, what)
        colours.append(head[:3])
        lengths.append(length)
        left -= length
    return np.repeat(_rgb24(b"".join(colours)), lengths)


async def _trle_palette_runs(stream: Stream, npix: int, palette: np.ndarray, what: str) -> np.ndarray:
    indices, lengths = [], []
    left = npix
    while left:
        b = await stream.u8()
        length = await _trle_run_length(stream, await stream.u8(), left, what) if b & 128 else 1
        indices.append(b & 127)
        lengths.append(length)
        left -= length
    return np.repeat(_lookup(palette, np.array(indices, np.uint8), what), lengths)


DECODERS = {
    C.ENC_RAW: decode_raw,
    C.ENC_COPYRECT: decode_copyrect,
    C.ENC_RRE: decode_rre,
    C.ENC_HEXTILE: decode_hextile,
    C.ENC_ZLIB: decode_zlib,
    C.ENC_TIGHT: decode_tight,
    C.ENC_ZRLE: decode_zrle,
    C.ENC_TRLE: decode_trle,
}
