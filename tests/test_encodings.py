"""RRE, Hextile, ZLIB, Tight, ZRLE and TRLE: decoders against tiny encoders written here,
against hostile servers, and live against Xvnc and x11vnc."""
import asyncio
import io
import os
import shutil
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from rfbtools import Pump, matches_x_server, mismatch_report, options_for
from workers.rfb import ProtocolError, RFBSession
from workers.rfb import constants as C
from workers.rfb import decoders
from workers.rfb.decoders import DECODERS, DecoderState
from workers.rfb.stream import Stream
from xshot import root_image


# -- harness -------------------------------------------------------------------------------

class NullWriter:
    def write(self, data):
        pass

    async def drain(self):
        pass

    def close(self):
        pass


def decode(encoding, data, w, h, *, state=None, fb=None, x=0, y=0):
    """Feed `data` to one decoder; return the framebuffer. Every byte must be consumed."""
    fb = np.zeros((y + h, x + w, 4), np.uint8) if fb is None else fb
    state = DecoderState() if state is None else state

    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        stream = Stream(reader, NullWriter())
        await DECODERS[encoding](state, stream, fb, x, y, w, h)
        assert stream.bytes_read == len(data), f"decoder read {stream.bytes_read} of {len(data)} bytes"
    asyncio.run(main())
    return fb


def rgbx(words):
    """uint32 words (R | G << 8 | B << 16) -> (h, w, 4) bytes R, G, B, 0, as the framebuffer holds them."""
    return np.ascontiguousarray(words, "<u4").view(np.uint8).reshape(*words.shape, 4)


def pixel(word):
    return struct.pack("<I", int(word))


def cpixel(word):
    return struct.pack("<I", int(word))[:3]


def random_colours(rng, n):
    return rng.integers(0, 1 << 24, n, dtype=np.uint32)


def runny(rng, h, w, colours, max_run=300):
    """An image of runs (some longer than a row, some over 255 pixels) of the given colours,
    each colour used at least once when there is room."""
    n = h * w
    picks, lengths = [], []
    while sum(lengths) < n:
        picks.append(rng.integers(len(colours)))
        lengths.append(int(rng.integers(1, max_run)))
    flat = np.repeat(np.array(picks), lengths)[:n]
    k = min(len(colours), n)
    flat[:k] = np.arange(k)
    return np.asarray(colours, np.uint32)[flat].reshape(h, w)


# -- tiny encoders ---------------------------------------------------------------------------

def rle_length(n):
    return b"\xff" * ((n - 1) // 255) + bytes([(n - 1) % 255])


def runs_of(flat):
    out = []
    for v in flat.tolist():
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def pack_rows(indices, bits):
    per = 8 // bits
    out = bytearray()
    for row in indices.tolist():
        for i in range(0, len(row), per):
            byte = 0
            for j, v in enumerate(row[i:i + per]):
                byte |= v << (8 - bits * (j + 1))
            out.append(byte)
    return bytes(out)


def palette_bits(n):
    return 1 if n <= 2 else 2 if n <= 4 else 4


def rle_tile(tile, kind, palette=None):
    """One ZRLE/TRLE tile in the given subencoding. `palette` fixes the palette (and its
    order), as the reuse kinds need."""
    flat = tile.ravel()
    if kind == "raw":
        return b"\x00" + b"".join(cpixel(v) for v in flat)
    if kind == "solid":
        return b"\x01" + cpixel(flat[0])
    if kind == "plain_rle":
        return b"\x80" + b"".join(cpixel(v) + rle_length(n) for v, n in runs_of(flat))
    pal = list(palette) if palette is not None else list(dict.fromkeys(flat.tolist()))
    index = {c: i for i, c in enumerate(pal)}
    pal_bytes = b"".join(cpixel(c) for c in pal)
    if kind in ("packed", "reuse_packed"):
        indices = np.vectorize(index.get)(tile)
        head = bytes([len(pal)]) + pal_bytes if kind == "packed" else b"\x7f"
        return head + pack_rows(indices, palette_bits(len(pal)))
    if kind in ("palette_rle", "reuse_rle"):
        head = bytes([128 + len(pal)]) + pal_bytes if kind == "palette_rle" else b"\x81"
        body = b"".join(bytes([index[v]]) if n == 1 else bytes([index[v] | 128]) + rle_length(n)
                        for v, n in runs_of(flat))
        return head + body
    raise ValueError(kind)


def tiles(w, h, size):
    for ty in range(0, h, size):
        for tx in range(0, w, size):
            yield tx, ty, min(size, w - tx), min(size, h - ty)


def tile_content(rng, kind, th, tw, colours):
    if kind == "raw":
        return random_colours(rng, th * tw).reshape(th, tw)
    if kind == "solid":
        return np.full((th, tw), random_colours(rng, 1)[0], np.uint32)
    return runny(rng, th, tw, colours, max_run=40 if th <= 16 else 300)


def tiled_image(rng, w, h, size, plan):
    """An image and its tile stream, tile i in subencoding plan[i % len(plan)] = (kind, colours)."""
    image = np.zeros((h, w), np.uint32)
    out = b""
    palette = None
    for i, (tx, ty, tw, th) in enumerate(tiles(w, h, size)):
        kind, ncolours = plan[i % len(plan)]
        if kind.startswith("reuse"):
            content = runny(rng, th, tw, palette)
            out += rle_tile(content, kind, palette)
        else:
            colours = random_colours(rng, ncolours) if ncolours else None
            content = tile_content(rng, kind, th, tw, colours)
            out += rle_tile(content, kind)
            if kind in ("packed", "palette_rle"):
                palette = list(dict.fromkeys(content.ravel().tolist()))
        image[ty:ty + th, tx:tx + tw] = content
    return image, out


def zlib_chunk(compressor, data):
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def compact_length(n):
    out = bytes([n & 0x7F | (0x80 if n > 0x7F else 0)])
    if n > 0x7F:
        out += bytes([(n >> 7) & 0x7F | (0x80 if n > 0x3FFF else 0)])
        if n > 0x3FFF:
            out += bytes([n >> 14])
    return out


def gradient_encode(rgb):
    """Tight's gradient filter, straight from the spec's pseudo-code."""
    v = rgb.astype(int)
    h, w, _ = v.shape
    out = np.zeros_like(v)
    for i in range(h):
        for j in range(w):
            up = v[i - 1, j] if i else 0
            left = v[i, j - 1] if j else 0
            up_left = v[i - 1, j - 1] if i and j else 0
            out[i, j] = (v[i, j] - np.clip(up + left - up_left, 0, 255)) & 0xFF
    return out.astype(np.uint8).tobytes()


def rgb_bytes(words):
    return rgbx(words)[:, :, :3].tobytes()


PLAN_ZRLE = [("raw", 0), ("solid", 0), ("packed", 2), ("packed", 3), ("packed", 16), ("plain_rle", 60),
             ("palette_rle", 2), ("palette_rle", 127), ("packed", 9)]
PLAN_TRLE = PLAN_ZRLE[:3] + [("reuse_packed", 0), ("palette_rle", 5), ("reuse_rle", 0), ("reuse_packed", 0),
                             ("palette_rle", 127), ("reuse_rle", 0)] + PLAN_ZRLE[3:]


# -- pure unit tests ---------------------------------------------------------------------------

def test_zrle_every_subencoding_across_two_rects_on_one_zlib_stream():
    rng = np.random.default_rng(1)
    state, compressor = DecoderState(), zlib.compressobj()
    fb = np.zeros((140, 330, 4), np.uint8)
    expected = fb.copy()
    for x, y, w, h in [(0, 0, 200, 130), (201, 3, 129, 137)]:  # 12 and 9 tiles, ragged edges
        image, tile_data = tiled_image(rng, w, h, 64, PLAN_ZRLE)
        data = zlib_chunk(compressor, tile_data)
        decode(C.ENC_ZRLE, struct.pack(">I", len(data)) + data, w, h, state=state, fb=fb, x=x, y=y)
        expected[y:y + h, x:x + w] = rgbx(image)
    assert np.array_equal(fb, expected)


def test_trle_every_subencoding_with_palette_reuse():
    rng = np.random.default_rng(2)
    image, data = tiled_image(rng, 70, 50, 16, PLAN_TRLE)  # 5 x 4 tiles, the last ones cut
    assert b"\x7f" in data and b"\x81" in data
    assert np.array_equal(decode(C.ENC_TRLE, data, 70, 50), rgbx(image))


def test_trle_palette_carries_over_to_the_next_rectangle():
    rng = np.random.default_rng(3)
    state = DecoderState()
    first = runny(rng, 16, 16, random_colours(rng, 6))
    palette = list(dict.fromkeys(first.ravel().tolist()))
    decode(C.ENC_TRLE, rle_tile(first, "packed"), 16, 16, state=state)
    second = runny(rng, 8, 8, palette)
    assert np.array_equal(decode(C.ENC_TRLE, rle_tile(second, "reuse_rle", palette), 8, 8, state=state),
                          rgbx(second))


def test_run_lengths_at_the_255_boundaries():
    for n in (1, 2, 255, 256, 257, 510, 511, 4096):
        colours = np.array([0x112233, 0x445566], np.uint32)
        flat = np.concatenate([np.full(n, colours[0], np.uint32), np.full(4096 - n, colours[1], np.uint32)])[:4096]
        tile = flat.reshape(64, 64)
        for kind in ("plain_rle", "palette_rle"):
            data = zlib.compress(rle_tile(tile, kind, palette=colours.tolist()))
            assert np.array_equal(decode(C.ENC_ZRLE, struct.pack(">I", len(data)) + data, 64, 64), rgbx(tile))


def test_rre_overlapping_subrects_paint_in_order():
    rng = np.random.default_rng(4)
    w, h = 37, 23
    background = 0x204060
    image = np.full((h, w), background, np.uint32)
    subs = b""
    for _ in range(50):
        sw, sh = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
        sx, sy = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
        colour = int(random_colours(rng, 1)[0])
        image[sy:sy + sh, sx:sx + sw] = colour
        subs += pixel(colour) + struct.pack(">HHHH", sx, sy, sw, sh)
    data = struct.pack(">I", 50) + pixel(background) + subs
    fb = decode(C.ENC_RRE, data, w, h, x=5, y=7)
    assert np.array_equal(fb[7:, 5:], rgbx(image))
    assert not fb[:7].any() and not fb[:, :5].any()


def test_rre_big_and_many_subrects_keep_their_order():
    # Big subrects (painted alone) between many small and medium ones (painted in
    # batches), all overlapping in different colours: later ones must win.
    rng = np.random.default_rng(10)
    w, h = 700, 400
    image = np.zeros((h, w), np.uint32)
    subs = b""
    sizes = [(600, 300), (5, 3), (100, 100), (1, 1), (400, 200), (30, 40)] * 12
    for sw, sh in sizes:
        sx, sy = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
        colour = int(random_colours(rng, 1)[0])
        image[sy:sy + sh, sx:sx + sw] = colour
        subs += pixel(colour) + struct.pack(">HHHH", sx, sy, sw, sh)
    data = struct.pack(">I", len(sizes)) + pixel(0) + subs
    assert sum(sw * sh for sw, sh in sizes) > 4 * decoders.BATCH_PIXELS
    assert np.array_equal(decode(C.ENC_RRE, data, w, h), rgbx(image))


def hextile_encode(rng, w, h):
    """A Hextile rectangle using every tile form, and the image it paints."""
    image = np.zeros((h, w), np.uint32)
    out = b""
    forms = ["raw", "bg", "keep_bg", "fg_subrects", "keep_fg_subrects", "coloured", "keep_bg_coloured"]
    for i, (tx, ty, tw, th) in enumerate(tiles(w, h, 16)):
        form = forms[i % len(forms)]
        tile = image[ty:ty + th, tx:tx + tw]
        if form == "raw":
            tile[:] = random_colours(rng, tw * th).reshape(th, tw)
            out += b"\x01" + b"".join(pixel(v) for v in tile.ravel())
            continue
        mask, head = 0, b""
        if not form.startswith("keep_bg"):
            background = int(random_colours(rng, 1)[0])
            mask |= 2
            head += pixel(background)
        if form == "fg_subrects":
            foreground = int(random_colours(rng, 1)[0])
            mask |= 4
            head += pixel(foreground)
        tile[:] = background
        if form in ("bg", "keep_bg"):
            out += bytes([mask]) + head
            continue
        coloured = "coloured" in form
        mask |= 8 | (16 if coloured else 0)
        n = int(rng.integers(1, 40))
        body = b""
        for _ in range(n):
            sw, sh = int(rng.integers(1, tw + 1)), int(rng.integers(1, th + 1))
            sx, sy = int(rng.integers(0, tw - sw + 1)), int(rng.integers(0, th - sh + 1))
            colour = int(random_colours(rng, 1)[0]) if coloured else foreground
            tile[sy:sy + sh, sx:sx + sw] = colour
            body += (pixel(colour) if coloured else b"") + bytes([sx << 4 | sy, (sw - 1) << 4 | (sh - 1)])
        out += bytes([mask]) + head + bytes([n]) + body
    return image, out


def test_hextile_every_tile_form():
    rng = np.random.default_rng(5)
    for w, h in [(16, 16), (75, 50), (3, 40)]:
        image, data = hextile_encode(rng, w, h)
        assert np.array_equal(decode(C.ENC_HEXTILE, data, w, h), rgbx(image)), (w, h)


def test_zlib_rects_share_one_stream():
    rng = np.random.default_rng(6)
    state, compressor = DecoderState(), zlib.compressobj()
    for w, h in [(31, 17), (64, 9), (1, 1)]:
        image = runny(rng, h, w, random_colours(rng, 7))
        data = zlib_chunk(compressor, rgbx(image).tobytes())
        assert np.array_equal(decode(C.ENC_ZLIB, struct.pack(">I", len(data)) + data, w, h, state=state),
                              rgbx(image))


def test_empty_zlib_rect_consumes_its_flush_and_keeps_the_stream():
    # An empty rectangle whose zlib data inflates to nothing (a sync flush) is legal and must
    # be consumed; data that inflates to anything is refused (zlib reads max_length 0 as "no limit").
    rng = np.random.default_rng(9)
    state, compressor = DecoderState(), zlib.compressobj()
    flush = compressor.flush(zlib.Z_SYNC_FLUSH)
    decode(C.ENC_ZLIB, struct.pack(">I", len(flush)) + flush, 0, 0, state=state)
    image = runny(rng, 5, 7, random_colours(rng, 3))
    data = zlib_chunk(compressor, rgbx(image).tobytes())
    assert np.array_equal(decode(C.ENC_ZLIB, struct.pack(">I", len(data)) + data, 7, 5, state=state), rgbx(image))
    spill = zlib_chunk(zlib.compressobj(), b"\1\2\3\4")
    expect_error(C.ENC_ZLIB, struct.pack(">I", len(spill)) + spill, 0, 0, "inflates beyond the 0 bytes")


def tight_basic(compressors, stream_id, filter_id, payload, *, pre=b"", no_zlib=False):
    """A Tight BasicCompression rectangle; filter_id None: no filter byte (copy filter).
    `pre`: what goes before the pixel data (a palette)."""
    if no_zlib:
        control = 0xA0 if filter_id is None else 0xE0
    else:
        control = stream_id << 4 | (0 if filter_id is None else 0x40)
    out = bytes([control]) + (b"" if filter_id is None else bytes([filter_id])) + pre
    if no_zlib or len(payload) < 12:
        return out + payload
    data = zlib_chunk(compressors[stream_id], payload)
    return out + compact_length(len(data)) + data


def test_tight_fill_copy_palette_gradient_and_stream_resets():
    rng = np.random.default_rng(7)
    state = DecoderState()
    compressors = [zlib.compressobj() for _ in range(4)]

    def check(data, image):
        h, w = image.shape
        assert np.array_equal(decode(C.ENC_TIGHT, data, w, h, state=state), rgbx(image))

    # Fill.
    check(b"\x80" + cpixel(0xABCDEF), np.full((9, 13), 0xABCDEF, np.uint32))
    # Copy filter, implicit and explicit, compressed on several streams, and short (raw).
    for stream_id in range(4):
        image = random_colours(rng, 40 * 7).reshape(7, 40)
        check(tight_basic(compressors, stream_id, None, rgb_bytes(image)), image)
        check(tight_basic(compressors, stream_id, 0, rgb_bytes(image)), image)
    tiny = random_colours(rng, 3).reshape(1, 3)  # 9 bytes: sent without zlib
    check(tight_basic(compressors, 0, None, rgb_bytes(tiny)), tiny)
    # Palette: two colours (1 bit per pixel, rows padded) and more (a byte per pixel).
    for ncolours, (h, w) in [(2, (11, 21)), (2, (2, 3)), (5, (9, 14)), (256, (20, 30))]:
        colours = random_colours(rng, ncolours)
        image = runny(rng, h, w, colours, max_run=5)
        indices = np.searchsorted(np.sort(colours), image)
        pal = np.sort(colours)
        packed = pack_rows(indices, 1) if ncolours == 2 else indices.astype(np.uint8).tobytes()
        pre = bytes([ncolours - 1]) + b"".join(cpixel(c) for c in pal)
        check(tight_basic(compressors, 1, 1, packed, pre=pre), image)
    # Gradient, on a smooth image and on noise (wrapping differences).
    yy, xx = np.mgrid[0:17, 0:23]
    smooth = ((xx * 11) | (yy * 13) << 8 | ((xx + yy) * 5) << 16).astype(np.uint32)
    noise = random_colours(rng, 17 * 23).reshape(17, 23)
    for image in (smooth, noise, noise[:1], noise[:, :1]):
        check(tight_basic(compressors, 2, 2, gradient_encode(rgbx(image)[:, :, :3])), image)
    # Reset: a fresh compressor on stream 3; the control byte tells the decoder to start over.
    compressors[3] = zlib.compressobj()
    image = random_colours(rng, 50).reshape(5, 10)
    data = tight_basic(compressors, 3, None, rgb_bytes(image))
    check(bytes([data[0] | 0x08]) + data[1:], image)
    # Without zlib (the pseudo-encoding we do not send, but cheap to understand).
    check(tight_basic(compressors, 0, None, rgb_bytes(image), no_zlib=True), image)
    check(tight_basic(compressors, 0, 0, rgb_bytes(image), no_zlib=True), image)


def test_tight_reset_bits_apply_to_fill_too():
    state = DecoderState()
    compressor = zlib.compressobj()
    image = np.arange(60, dtype=np.uint32).reshape(6, 10) * 0x010203
    first = tight_basic([compressor], 0, None, rgb_bytes(image))
    decode(C.ENC_TIGHT, first, 10, 6, state=state)
    decode(C.ENC_TIGHT, b"\x81" + cpixel(0), 1, 1, state=state)  # fill that resets stream 0
    again = tight_basic([zlib.compressobj()], 0, None, rgb_bytes(image))
    assert np.array_equal(decode(C.ENC_TIGHT, again, 10, 6, state=state), rgbx(image))


def test_tight_compact_length_examples():
    assert compact_length(10000) == b"\x90\x4e"  # the spec's example
    for n in (0, 127, 128, 16383, 16384, 4194303):
        async def main():
            reader = asyncio.StreamReader()
            reader.feed_data(compact_length(n))
            reader.feed_eof()
            return await decoders._tight_length(Stream(reader, NullWriter()))
        assert asyncio.run(main()) == n


def test_tight_jpeg_decodes_like_pillow():
    yy, xx = np.mgrid[0:40, 0:56]
    rgb = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=80)
    jpeg = out.getvalue()
    fb = decode(C.ENC_TIGHT, b"\x90" + compact_length(len(jpeg)) + jpeg, 56, 40, x=3, y=2)
    truth = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert np.array_equal(fb[2:, 3:, :3], truth)
    assert np.abs(fb[2:, 3:, :3].astype(int) - rgb).mean() < 3


def test_gradient_matches_reference_on_wide_and_tall_rects():
    rng = np.random.default_rng(8)
    for h, w in [(1, 1), (3, 40), (40, 3), (12, 12)]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert decoders._ungradient(gradient_encode(rgb), w, h) == rgb.tobytes()


# -- hostile servers ---------------------------------------------------------------------------

def expect_error(encoding, data, w, h, match, state=None):
    with pytest.raises(ProtocolError, match=match):
        decode(encoding, data, w, h, state=state)


def test_zlib_bomb_is_refused():
    bomb = zlib.compress(b"\0" * (8 << 20))  # 8 MiB of zeros in ~8 KiB
    expect_error(C.ENC_ZLIB, struct.pack(">I", len(bomb)) + bomb, 64, 64, "inflates beyond")
    expect_error(C.ENC_ZRLE, struct.pack(">I", len(bomb)) + bomb, 64, 64, "inflates beyond")
    data = b"\x00" + compact_length(len(bomb)) + bomb
    expect_error(C.ENC_TIGHT, data, 64, 64, "inflates beyond")


def test_length_fields_beyond_the_rectangle_are_refused_before_reading():
    # Only the length is sent: the decoder must refuse it without waiting for the data.
    expect_error(C.ENC_ZLIB, struct.pack(">I", 1 << 30), 4, 4, "more than")
    expect_error(C.ENC_ZRLE, struct.pack(">I", 1 << 30), 4, 4, "more than")
    expect_error(C.ENC_TIGHT, b"\x00" + compact_length(4194303), 4, 4, "announces")
    expect_error(C.ENC_TIGHT, b"\x90" + compact_length(4194303), 4, 4, "Tight JPEG")
    expect_error(C.ENC_RRE, struct.pack(">I", 1 << 31) + pixel(0), 4, 4, "more than its pixels")


def test_short_zlib_data_is_refused():
    data = zlib_chunk(zlib.compressobj(), b"\0" * 10)
    expect_error(C.ENC_ZLIB, struct.pack(">I", len(data)) + data, 2, 2, "expected 16")
    expect_error(C.ENC_ZLIB, struct.pack(">I", 5) + b"\x01\x02\x03\x04\x05", 2, 2, "corrupt zlib")


def zrle(tile_data):
    data = zlib.compress(tile_data)
    return struct.pack(">I", len(data)) + data


def test_overlong_runs_are_refused():
    over = b"\x80" + cpixel(1) + rle_length(4097)
    expect_error(C.ENC_ZRLE, zrle(over), 64, 64, "run of 4097 pixels overruns the 4096")
    over = b"\x82" + cpixel(1) + cpixel(2) + b"\x80" + rle_length(100) + b"\x81" + rle_length(200)
    expect_error(C.ENC_TRLE, over, 16, 16, "run of 200 pixels overruns the 156")
    endless = b"\x80" + cpixel(1) + b"\xff" * 10000
    expect_error(C.ENC_TRLE, endless, 16, 16, "run of at least 511 pixels overruns the 256")
    expect_error(C.ENC_ZRLE, zrle(endless), 64, 64, "run of at least 4336 pixels overruns the 4096")


def test_bad_palette_indices_are_refused():
    # ZRLE packed palette of 3 colours (2 bits), index 3 in the first pixel.
    tile = b"\x03" + cpixel(1) + cpixel(2) + cpixel(3) + b"\xc0" + b"\x00" * 3
    expect_error(C.ENC_ZRLE, zrle(tile), 4, 4, "palette index 3 but the palette has 3")
    # Palette RLE of 2 colours, index 5.
    expect_error(C.ENC_TRLE, b"\x82" + cpixel(1) + cpixel(2) + b"\x85\x02\x00", 2, 2, "palette index 5")
    # Tight palette of 5 colours, index 9.
    payload = bytes([9, 0, 0, 0])
    data = bytes([0x40, 1, 4]) + cpixel(1) * 5 + payload
    expect_error(C.ENC_TIGHT, data, 2, 2, "palette index 9")


def test_subrects_outside_their_rect_are_refused():
    data = struct.pack(">I", 1) + pixel(0) + pixel(1) + struct.pack(">HHHH", 3, 0, 2, 1)
    expect_error(C.ENC_RRE, data, 4, 4, "RRE subrectangle 2x1\\+3\\+0 lies outside its 4x4")
    # A 10x10 tile with a subrect at x 8, width 3.
    tile = bytes([2 | 4 | 8]) + pixel(0) + pixel(1) + bytes([1, 8 << 4 | 0, 2 << 4 | 0])
    expect_error(C.ENC_HEXTILE, tile, 10, 10, "Hextile subrectangle 3x1\\+8\\+0 lies outside its 10x10 tile")


def test_rre_overdraw_is_refused():
    # 17 subrects each covering the whole 8x8 rectangle: only ever a way to waste our time.
    data = struct.pack(">I", 17) + pixel(0) + (pixel(1) + struct.pack(">HHHH", 0, 0, 8, 8)) * 17
    expect_error(C.ENC_RRE, data, 8, 8, "more than 16 times over")


def test_malformed_rects_are_refused():
    expect_error(C.ENC_HEXTILE, b"\x08\x01\x00\x00", 4, 4, "no background")
    expect_error(C.ENC_HEXTILE, b"\x02" + pixel(0) + b"\x08\x01\x00\x00", 32, 4, "no foreground")
    expect_error(C.ENC_HEXTILE, b"\x40", 4, 4, "ZlibHex")
    expect_error(C.ENC_TIGHT, b"\xf0", 4, 4, "invalid compression control")
    expect_error(C.ENC_TIGHT, b"\x40\x07", 4, 4, "unknown filter 7")
    expect_error(C.ENC_ZRLE, zrle(b"\x11"), 4, 4, "unused subencoding 17")
    expect_error(C.ENC_ZRLE, zrle(b"\x7f"), 4, 4, "unused subencoding 127")
    expect_error(C.ENC_ZRLE, zrle(b"\x01" + cpixel(1) + b"\x00"), 4, 4, "1 bytes of data beyond")
    expect_error(C.ENC_ZRLE, zrle(b"\x00" + cpixel(1)), 4, 4, "data ends inside a tile")
    expect_error(C.ENC_TRLE, b"\x7f", 4, 4, "no tile has sent one")
    expect_error(C.ENC_TRLE, b"\x81", 4, 4, "no tile has sent one")


def test_bad_jpeg_is_refused():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    jpeg = out.getvalue()
    expect_error(C.ENC_TIGHT, b"\x90" + compact_length(len(jpeg)) + jpeg, 9, 8, "is 8x8 for a 9x8")
    junk = b"\xff\xd8not a jpeg at all"
    expect_error(C.ENC_TIGHT, b"\x90" + compact_length(len(junk)) + junk, 8, 8, "does not decode")


# -- live, against Xvnc and x11vnc -------------------------------------------------------------

def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def xwd_file(rgb, path):
    """A 24-bit TrueColor XWD image, for xwud to show."""
    h, w, _ = rgb.shape
    name = b"photo\0"
    header = struct.pack(">25I", 100 + len(name), 7, 2, 24, w, h, 0, 0, 32, 0, 32, 32, w * 4, 4,
                         0xFF0000, 0xFF00, 0xFF, 8, 256, 0, w, h, 0, 0, 0)
    words = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    with open(path, "wb") as f:
        f.write(header + name + words.astype("<u4").tobytes())


def photo():
    """Smooth colour gradients with a noisy band: what JPEG and the gradient filter are for."""
    yy, xx = np.mgrid[0:180, 0:240]
    rgb = np.stack([xx * 255 // 240, yy * 255 // 180, 255 - (xx + yy) * 255 // 420], -1)
    rgb[120:150] = np.random.default_rng(9).integers(0, 256, (30, 240, 3))
    return rgb.astype(np.uint8)


PHOTO_AT = (520, 40)


def busy_scene(desktop):
    desktop.xterm(geometry="48x10+10+10", extra=["-bg", "navy", "-fg", "yellow"],
                  command=["sh", "-c", "printf 'colour \\033[31mred \\033[32mgreen \\033[1;35mbold\\033[0m\\n'; "
                           "ls -l /usr; sleep 120"])
    desktop.xterm(geometry="60x12+150+300",
                  command=["sh", "-c", "echo plain xterm; seq 1 200 | tr '\\n' ' '; sleep 120"])
    if shutil.which("xwud"):
        path = os.path.join(desktop.workdir, "photo.xwd")
        xwd_file(photo(), path)
        desktop.run_client(["xwud", "-in", path, "-geometry", f"+{PHOTO_AT[0]}+{PHOTO_AT[1]}"])
    time.sleep(1.0)


async def park_pointer(session):
    """Put the pointer over the bare root, bottom right. Until a client moves the pointer
    itself, TigerVNC draws the cursor (here xterm's I-beam) into the frame it sends, which
    the X server's own image does not have."""
    await session.pointer(session.info.width - 4, session.info.height - 4)


LIVE = [C.ENC_RRE, C.ENC_HEXTILE, C.ENC_ZLIB, C.ENC_TIGHT, C.ENC_ZRLE, C.ENC_TRLE]
# Encodings a server does not implement: it falls back to Raw (checked, then skipped).
NOT_IMPLEMENTED = {
    ("xvnc", "ZLIB"): "TigerVNC has no ZLIB encoder",
    ("xvnc", "TRLE"): "TigerVNC has no TRLE encoder",
    ("x11vnc", "TRLE"): "x11vnc (libvncserver) has no TRLE encoder",
}


@pytest.mark.parametrize("encoding", LIVE, ids=[C.encoding_name(e) for e in LIVE])
def test_encoding_alone_is_pixel_exact(any_server, encoding):
    name = C.encoding_name(encoding)
    busy_scene(any_server)

    async def main():
        session = await RFBSession.open(options_for(any_server, encodings=[encoding], jpeg_quality=None))
        pump = Pump(session)
        try:
            await park_pointer(session)
            ok = await matches_x_server(pump, any_server.env, timeout=20)
            assert ok, mismatch_report(session, any_server.env)
            return set(session.info.encodings_seen)
        finally:
            await pump.close()
    seen = run(main())
    reason = NOT_IMPLEMENTED.get((any_server.kind, name))
    if reason:
        assert name not in seen, f"{any_server.kind} now sends {name}: update NOT_IMPLEMENTED"
        assert "Raw" in seen
        pytest.skip(f"{any_server.kind} does not implement {name} ({reason}); it sent Raw, "
                    "which was pixel-exact")
    assert name in seen, f"{any_server.kind} sent {sorted(seen)}"


@pytest.mark.skipif(not shutil.which("xwud"), reason="needs xwud to show a photo-like image")
def test_tight_jpeg_is_close(any_server, monkeypatch):
    busy_scene(any_server)
    jpeg_rects = []
    real = decoders._tight_jpeg

    async def counting(stream, words, w, h):
        jpeg_rects.append((w, h))
        await real(stream, words, w, h)
    monkeypatch.setattr(decoders, "_tight_jpeg", counting)

    async def main():
        session = await RFBSession.open(options_for(any_server, encodings=[C.ENC_TIGHT], jpeg_quality=6))
        pump = Pump(session)
        try:
            await park_pointer(session)
            await pump.quiet(ms=500)
            truth = await asyncio.to_thread(root_image, any_server.env)
            error = np.abs(session.framebuffer[:, :, :3].astype(int) - truth)
            return error, set(session.info.encodings_seen)
        finally:
            await pump.close()
    error, seen = run(main())
    assert "Tight" in seen
    assert jpeg_rects, f"{any_server.kind} sent no JPEG rectangle"
    x, y = PHOTO_AT
    smooth = error[y:y + 120, x:x + 240]  # the photo above its noisy band
    print(f"{any_server.kind}: {len(jpeg_rects)} JPEG rects, mean abs error {error.mean():.2f} "
          f"(frame), {smooth.mean():.2f} (smooth photo)")
    assert error.mean() < 1.0  # lossless elsewhere; measured 0.04 (Xvnc), 0.25 (x11vnc)
    assert smooth.mean() < 3.0  # measured 0.4-0.7 at quality 6; R and B swapped would give 68
