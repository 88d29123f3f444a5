"""Terminal text without Tesseract: a table of monospace glyphs learned from its readings.

Most text on a working desktop is in terminals, where every character is drawn in a cell
of one fixed width, pixel for pixel the same wherever it appears. Tesseract's LSTM costs
about 0.4 ms per character (93 % of the OCR time), so once it has read a line of a
terminal, the glyphs of that line are worth keeping: a later line made only of known
glyphs is spelled out by table lookups in well under a millisecond.

    table = GlyphTable()
    words = table.decode(gray, box)      # [(text, box, conf)], or None: ask Tesseract
    table.learn(gray, box, words)        # after Tesseract read the line

Learning is strict and decoding refuses anything uncertain, because a wrong table would
repeat its mistake everywhere:
  * a line is learned only if one cell width and phase split it so that every word
    Tesseract read covers exactly as many cells as it has characters and no ink is left
    over; every split that fits must give the same glyphs;
  * a glyph is keyed by its exact shape (the cell's non-background pixels, trimmed), so
    it does not depend on colour, on where the cell starts, or on the line's height;
  * where it sits against the baseline is kept with it, which tells '-' from '_' and
    ',' from "'"; a decoded line must agree on one baseline;
  * a shape is used once Tesseract has read it the same way in two lines (one misreading
    alone is not repeated, however often the glyph occurs in that line), and a
    punctuation mark only if in two different words or in three lines (Tesseract misreads
    a word's ',' as '.' the same way wherever it is); one read
    as two different characters only when one reading has clearly won the vote; a
    decode that fits more than one cell phase with different text is refused.
  * one line in RECHECK_EVERY that the table could spell is read by Tesseract anyway and
    learned, so that a mistake the table made is outvoted in time;
  * a line with ink too faint to count (a dim or coloured word beside bright ones) where
    the table sees a blank cell is never spelled: its words would go missing.
Proportional text never fits a cell grid, so it is always read by Tesseract.

What one table learns can be taught to others (the OCR workers of one broker share their
readings through it): `take_shared()` gives the readings of the lines learned since the
last call, and `absorb()` counts them in another table as if it had read them itself.
"""
from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

MIN_PITCH, MAX_PITCH = 4, 40   # cell widths (px) of terminal fonts worth a table
LEARN_MIN_CONF = 80.0          # Tesseract's word confidence needed to learn its glyphs
MIN_LEARN_CHARS = 8            # characters a line needs to be learned from
MAX_SHAPES = 20000             # shapes kept (a few fonts of ~100 glyphs each need ~1000)
SHARED_BACKLOG = 256           # learned lines kept for take_shared() until taken
RECHECK_EVERY = 25             # one line in this many that could be spelled is read anyway
PARTLY_MIN_KNOWN = 0.5         # share of a line's glyphs known for it to be spelled in part
PARTLY_MIN_LETTERS = 4         # letters or digits a line spelled in part must spell
# Glyphs that reach above the x-height: Tesseract reads a word without one ("-rw-r--r--")
# as capitals, since nothing shows it how tall the font is, so a word left to it is read
# with a spelled neighbour that has one.
TALL = set("bdfhklt0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MIN_VOTES = 2                  # lines a shape must be read in before it is used
# Marks that Tesseract reads as one another from their context ("1,249.99" as "1.249.99"
# wherever that word is): their readings must come from two different words, or there
# must be this many.
CONTEXT_MARKS = set(".,:;'`\"")
MIN_VOTES_ONE_WORD = 3
MAX_SHAPE_BYTES = 2 * (MAX_PITCH * 64 // 8) + 16   # a relayed shape larger than a cell can be is garbage
MAJORITY_VOTES, MAJORITY_SHARE = 3, 0.75   # how a shape read two ways is settled
INK_CONTRAST = 24              # grey levels from the background that count as ink
CURSOR_FILL = 0.9              # a cell this full over the line's height is a block cursor
# Characters that stand on the baseline in every terminal font: the lowest ink of a
# learned line's cells holding them is its baseline.
ON_BASELINE = set("abcdefhiklmnorstuvwxzABCDEFGHIKLMNOPRSTUVWXYZ0123456789")


@dataclass
class _Reading:
    char: str
    top: int          # rows from the baseline to the shape's top (negative: above it)
    votes: int = 0
    conf_sum: float = 0.0
    words: set[str] = field(default_factory=set)   # words it was read in (two are enough)


class GlyphTable:
    """Glyph shapes of monospace text, learned from Tesseract's readings of lines."""

    def __init__(self, margin: int, max_shapes: int = MAX_SHAPES):
        self.margin = margin             # background columns kept on both sides of a line box
        self.max_shapes = max_shapes
        self._shapes: dict[bytes, list[_Reading]] = {}
        self._trusted: dict[bytes, list[_Reading] | None] = {}   # _readings, worked out once per vote
        self._pitches: collections.Counter[int] = collections.Counter()
        # Learned lines, [pitch, [[shape, char, top, conf, word]...]], for take_shared().
        self._shared: collections.deque[list] = collections.deque(maxlen=SHARED_BACKLOG)
        self.decoded = self.refused = self.learned = self.absorbed = 0
        self.spelled = self.rechecked = 0     # lines it could spell; of those, left to Tesseract
        self.partly = 0                       # lines spelled in part, the rest left to Tesseract

    def __len__(self) -> int:
        return len(self._shapes)

    # -- learning --------------------------------------------------------------------------
    def learn(self, gray: np.ndarray, box: tuple[int, int, int, int], words, read_by_tesseract=None) -> bool:
        """Take the glyphs of a line Tesseract read (`words`: objects with .text, .box in
        screen coordinates and .conf). Of a line spelled in part, all its words place the
        grid but only those in `read_by_tesseract` vote: the table must not teach itself.
        Returns whether the line was learned."""
        words = [w for w in words if w.text]
        if sum(len(w.text) for w in words) < MIN_LEARN_CHARS:
            return False    # a few glyphs of proportional text can fit a grid by chance
        line = _Line.of(gray, box, self.margin)
        if line is None:
            return False
        spans = []     # each word's ink columns [a, b), line-relative
        for w in words:
            start = max(w.box[0] - line.x0 - 1, 0)
            cols = np.flatnonzero(line.ink_cols[start:max(w.box[2] - line.x0 + 1, 0)])
            if cols.size == 0:
                return False
            spans.append((start + int(cols[0]), start + int(cols[-1]) + 1, w))
        covered = np.zeros(line.width, bool)
        for a, b, _ in spans:
            covered[a:b] = True
        if (line.ink_cols & ~covered).any():
            return False    # ink that no word accounts for: an icon, a masked frame, a cursor
        fits = []
        for p, phase in _fitting_grids([(a, b, w.text) for a, b, w in spans], line.width):
            cells = line.cells(p, phase)
            if cells is None:
                continue
            first = -1 if phase > 0 else 0     # the index of cells[0] (see _Line.cells)
            found = [(cells[(a - phase) // p - first + i], ch, w)
                     for a, b, w in spans for i, ch in enumerate(w.text)]
            if all(c is not None and c is not FAINT_ONLY for c, _, _ in found):
                fits.append((p, found))
        if not fits or any(p != fits[0][0] or [c.shape for c, _, _ in found] != [c.shape for c, _, _ in fits[0][1]]
                           for p, found in fits[1:]):
            return False    # no split fits, or two fit and disagree
        pitch, found = fits[0]
        bottoms = collections.Counter(c.bottom for c, ch, _ in found if ch in ON_BASELINE)
        if not bottoms or bottoms.most_common(1)[0][1] < 2:
            return False
        baseline = bottoms.most_common(1)[0][0]
        voters = None if read_by_tesseract is None else {id(w) for w in read_by_tesseract}
        votes = _one_per_reading([[cell.shape, ch, cell.top - baseline, round(w.conf, 1), w.text]
                                  for cell, ch, w in found
                                  if w.conf >= LEARN_MIN_CONF and (voters is None or id(w) in voters)])
        if not votes:
            return False
        self._count(pitch, votes)
        self._shared.append([pitch, votes])
        self.learned += 1
        return True

    def take_shared(self) -> list[list]:
        """The lines learned since the last call (at most SHARED_BACKLOG), as plain data
        for absorb() in another table: [[pitch, [[shape, char, top, conf, word]...]]...]."""
        out = list(self._shared)
        self._shared.clear()
        return out

    def absorb(self, lines) -> int:
        """Count lines another table learned (take_shared()'s output) as if this one had
        learned them. Records that are not well formed are skipped. Returns how many
        were taken."""
        taken = 0
        for record in lines if isinstance(lines, (list, tuple)) else ():
            try:
                pitch, votes = record
                if not (isinstance(pitch, int) and MIN_PITCH <= pitch <= MAX_PITCH and isinstance(votes, (list, tuple))):
                    continue
                checked = [[shape, char, top, float(conf), word] for shape, char, top, conf, word in votes
                           if isinstance(shape, bytes) and len(shape) <= MAX_SHAPE_BYTES
                           and isinstance(char, str) and len(char) == 1 and isinstance(top, int)
                           and isinstance(conf, (int, float)) and math.isfinite(conf) and isinstance(word, str)]
            except (TypeError, ValueError):
                continue
            if not checked:
                continue
            self._count(pitch, _one_per_reading(checked))
            taken += 1
        self.absorbed += taken
        return taken

    def _count(self, pitch: int, votes: list[list]) -> None:
        for shape, char, top, conf, word in votes:
            self._vote(shape, char, top, conf, word)
        self._pitches[pitch] += 1

    def _vote(self, shape: bytes, char: str, top: int, conf: float, word: str) -> None:
        self._trusted.pop(shape, None)
        # Kept in order of last vote, so that a full table forgets the glyphs least seen
        # lately, not the commonest ones, which were learned first.
        readings = self._shapes.pop(shape, None)
        if readings is None:
            if len(self._shapes) >= self.max_shapes:
                stale = next(iter(self._shapes))
                del self._shapes[stale]
                self._trusted.pop(stale, None)
            readings = []
        self._shapes[shape] = readings
        for r in readings:
            if r.char == char and r.top == top:
                break
        else:
            r = _Reading(char, top)
            readings.append(r)
        r.votes += 1
        r.conf_sum += conf
        if len(r.words) < 2:
            r.words.add(word)

    def _readings(self, shape: bytes) -> list[_Reading] | None:
        """The readings of a shape that can be trusted: one per position against the
        baseline, settled by vote when Tesseract read it more than one way. Two readings of
        a punctuation mark must be in different words: Tesseract misreads a word the same
        way wherever it is (xterm's 10x20 "1,249.99" read "1.249.99" on two lines made its
        ',' a '.' for good)."""
        if shape in self._trusted:
            return self._trusted[shape]
        readings = self._shapes.get(shape)
        if not readings:
            return None
        by_top: dict[int, list[_Reading]] = collections.defaultdict(list)
        for r in readings:
            by_top[r.top].append(r)
        out = []
        for rs in by_top.values():
            best = max(rs, key=lambda r: r.votes)
            total = sum(r.votes for r in rs)
            one_word = best.char in CONTEXT_MARKS and len(best.words) < 2
            enough = best.votes >= (MIN_VOTES_ONE_WORD if one_word else MIN_VOTES)
            if enough and (len(rs) == 1 or (best.votes >= MAJORITY_VOTES and best.votes >= MAJORITY_SHARE * total)):
                out.append(best)
        self._trusted[shape] = out or None
        return out or None

    # -- decoding --------------------------------------------------------------------------
    def decode(self, gray: np.ndarray, box: tuple[int, int, int, int]):
        """The words (text, box in screen coordinates, confidence) of a line spelled from
        known glyphs, or None when a cell is unknown or the line fits in two ways."""
        spelling = self.spell(gray, box, partly=False)
        return None if spelling is None else spelling.words

    def spell(self, gray: np.ndarray, box: tuple[int, int, int, int], partly: bool = True) -> "Spelling | None":
        """A line spelled from known glyphs. With `partly`, a line some of whose words hold
        a glyph not known yet is spelled too when most of its glyphs are known: those
        words are left to Tesseract (Spelling.unread), which then reads a fraction of the
        line. None when too little is known, or the line fits in two ways."""
        if not self._pitches:
            return None
        line = _Line.of(gray, box, self.margin)
        if line is None:
            return None
        answers = self._answers(line, partly=False)
        if not answers and partly:
            answers = self._answers(line, partly=True)
        if len(answers) != 1:
            if answers:
                self.refused += 1
            return None
        _, words, unread = answers[0]
        self.spelled += 1
        if self.spelled % RECHECK_EVERY == 0:
            # Left to Tesseract anyway, whose reading is then learned: a glyph the table
            # got wrong loses its majority to the right readings and is read again.
            self.rechecked += 1
            return None
        if unread:
            self.partly += 1
        else:
            self.decoded += 1
        return Spelling([(text, (line.x0 + a, line.y0 + t, line.x0 + b, line.y0 + btm), conf)
                         for text, (a, t, b, btm), conf in words],
                        [[(line.x0 + a, line.x0 + b) for a, b in spans] for spans in unread])

    def _answers(self, line: "_Line", partly: bool) -> list:
        """The different spellings of the line over the pitches and phases it fits."""
        answers = []
        for p, _ in self._pitches.most_common():
            for phase in range(p):
                spelled = self._spell(line, p, phase, partly)
                if spelled is not None and all(spelled[0] != a[0] for a in answers):
                    answers.append(spelled)
        return answers

    def _spell(self, line: "_Line", p: int, phase: int, partly: bool):
        """The line read in cells of width p from `phase`: (a key that tells answers apart,
        [(word, ink box, confidence)...], the runs of words not known as [[(a, b) columns
        of each word]...]), all line-relative; or None if a cell is not known (unless `partly`, and enough are) or
        the known words disagree on the baseline."""
        cells = line.iter_cells(p, phase)
        if cells is None:
            return None
        options = []
        known = unknown = 0
        for cell in cells:     # one at a time: most phases and pitches miss at once
            if cell is None:     # blank (or a block cursor): a space
                options.append(None)
                continue
            if cell is FAINT_ONLY:
                return None
            readings = self._readings(cell.shape)
            if readings is None:
                if not partly:
                    return None
                unknown += 1
            else:
                known += 1
            options.append((cell, readings))
        if known == 0 or unknown > (1 - PARTLY_MIN_KNOWN) * (known + unknown):
            return None
        words_cells, run = [], []
        for o in options + [None]:
            if o is not None:
                run.append(o)
            elif run:
                words_cells.append(run)
                run = []
        spelled = [all(readings is not None for _, readings in w) for w in words_cells]
        # One baseline for the whole line; a shape that sits in two places against it
        # ('-' and '_' can be the same bar) is placed by the others.
        baselines = None
        for w in itertools.compress(words_cells, spelled):
            for cell, readings in w:
                here = {cell.top - r.top for r in readings}
                baselines = here if baselines is None else baselines & here
                if not baselines:
                    return None
        if baselines is None or len(baselines) != 1:
            return None
        baseline = baselines.pop()
        items = []      # per word: (ink box, spelled text or None if not known, confidence)
        for w, known_word in zip(words_cells, spelled):
            ink = (min(c.x0 for c, _ in w), min(c.top for c, _ in w), max(c.x1 for c, _ in w),
                   max(c.bottom for c, _ in w) + 1)
            if known_word:
                readings = [next(r for r in rs if cell.top - r.top == baseline) for cell, rs in w]
                items.append((ink, "".join(r.char for r in readings), min(r.conf_sum / r.votes for r in readings)))
            else:
                items.append((ink, None, 0.0))
        if partly:
            items = _with_context(items)
            spelled_text = "".join(text for _, text, _ in items if text is not None)
            if len(spelled_text) < PARTLY_MIN_KNOWN * (known + unknown) or sum(c.isalnum() for c in spelled_text) < PARTLY_MIN_LETTERS:
                return None     # too little left to spell to be worth it, or only marks that
                                # might be anything (the ticks of a clock face)
        words, runs = [], []       # runs: [words spelled before it, [(x0, x1) of each word]]
        for ink, text, conf in items:
            if text is not None:
                words.append((text, ink, conf))
            elif runs and runs[-1][0] == len(words):     # no spelled word since: the same run
                runs[-1][1].append((ink[0], ink[2]))
            else:
                runs.append((len(words), [(ink[0], ink[2])]))
        unread = [spans for _, spans in runs]
        key = tuple((text, box[0]) for text, box, _ in words) + tuple(tuple(spans) for spans in unread)
        return key, words, unread


@dataclass
class Spelling:
    """A line spelled from the glyph table: the words it spelled (text, box on the screen,
    confidence), and the runs of words it could not, left to Tesseract: each run is the
    screen columns [x0, x1) of its words, which are where the blank cells say they are
    (Tesseract, given a few words alone, can take the '.' of "README.md" for a space)."""
    words: list[tuple[str, tuple[int, int, int, int], float]]
    unread: list[list[tuple[int, int]]]


@dataclass
class _Cell:
    shape: bytes      # the trimmed non-background mask, with its size
    x0: int           # ink columns [x0, x1) and rows [top, bottom], line-relative
    x1: int
    top: int
    bottom: int


# A cell with no ink but faint pixels inside: a glyph too dim against the line's brightest.
FAINT_ONLY = _Cell(b"", 0, 0, 0, 0)


def _with_context(items: list) -> list:
    """Words of a line [(ink, text or None: not known, conf)], with each run of words not
    known widened to the nearest spelled word holding a tall glyph (or to its neighbours
    when none has one): Tesseract reads that word again, as the run's context."""
    unread = [text is None for _, text, _ in items]
    i = 0
    while i < len(items):
        if not unread[i] or (i > 0 and unread[i - 1]):
            i += 1
            continue
        j = i
        while j + 1 < len(items) and unread[j + 1]:
            j += 1
        # items[i..j] is a run; look outwards, nearest first, left before right.
        reach = None
        for d in range(1, len(items)):
            for k in (i - d, j + d):
                if 0 <= k < len(items) and items[k][1] is not None and TALL & set(items[k][1]):
                    reach = k
                    break
            if reach is not None:
                break
        lo, hi = (min(i, reach), max(j, reach)) if reach is not None else (max(i - 1, 0), min(j + 1, len(items) - 1))
        for k in range(lo, hi + 1):
            unread[k] = True
        i = hi + 1
    return [(ink, None, 0.0) if gone else (ink, text, conf) for (ink, text, conf), gone in zip(items, unread)]


def _one_per_reading(votes: list[list]) -> list[list]:
    """One vote per (shape, char, top) of a line: a line that holds a glyph five times
    was still read once, and one misreading must not be trusted as two."""
    seen, out = set(), []
    for vote in votes:
        key = (vote[0], vote[1], vote[2])
        if key not in seen:
            seen.add(key)
            out.append(vote)
    return out


class _Line:
    """A line box's pixels split into what is background and what is not."""

    def __init__(self, ink: np.ndarray, faint: np.ndarray, x0: int, y0: int):
        self.ink, self.faint, self.x0, self.y0 = ink, faint, x0, y0
        self.width = ink.shape[1]
        self.ink_cols = ink.any(axis=0)

    @classmethod
    def of(cls, gray: np.ndarray, box: tuple[int, int, int, int], margin: int) -> "_Line | None":
        x0, y0, x1, y1 = box
        # Columns of background on both sides, so that a cell at an end is whole; no rows
        # beyond the box, which would bring in the ascenders and descenders of the lines
        # above and below and make a glyph's shape depend on its neighbours (9x15 lines:
        # 0.30 of Tesseract's time with two rows, 0.27 and fewer shapes without).
        x0, x1 = max(x0 - margin, 0), min(x1 + margin, gray.shape[1])
        crop = gray[y0:y1, x0:x1]
        if crop.size == 0:
            return None
        # The commonest grey is the background; a terminal's is one flat colour, and
        # anything else (a gradient, a picture) gives shapes no table knows.
        background = int(np.bincount(crop.ravel(), minlength=256).argmax())
        # Ink is what stands out from it by more than half the strongest contrast: the
        # edge pixels of anti-aliased glyphs, which spill into the next cell ('w' in
        # DejaVu Sans Mono), do not count.
        # A glyph's shape keeps its faint pixels too, inside that box: without them a
        # small 'l' whose serif is faint is an 'L'.
        contrast = np.abs(crop.astype(np.int16) - background)
        return cls(contrast > max(INK_CONTRAST, int(contrast.max()) // 2), contrast > INK_CONTRAST, x0, y0)

    def cells(self, p: int, phase: int) -> list[_Cell | None] | None:
        cells = self.iter_cells(p, phase)
        return None if cells is None else list(cells)

    def iter_cells(self, p: int, phase: int):
        """The line cut into cells of width p, one starting at column `phase` (0 <= phase
        < p; when phase > 0, cells[0] is the part cell [0, phase)): a _Cell per inked
        cell, None for a blank one. None if ink touches the line's ends, where a glyph
        could be cut."""
        if self.ink_cols[0] or self.ink_cols[-1]:
            return None
        # A boundary between two inked columns cuts a glyph: not this phase.
        bounds = np.arange(phase if phase > 0 else p, self.width, p)
        if (self.ink_cols[bounds] & self.ink_cols[bounds - 1]).any():
            return None
        return self._cells(p, phase)

    def _cells(self, p: int, phase: int):
        height = self.ink.shape[0]
        first = phase - p if phase > 0 else 0           # where cells[0] would start
        count = -(-(self.width - first) // p)
        # All cells side by side as one (rows, cells, columns) array: their extents come
        # out of a few whole-array passes instead of numpy calls per cell.
        grid = np.zeros((2, height, count * p), bool)
        grid[0, :, -first:-first + self.width] = self.ink
        grid[1, :, -first:-first + self.width] = self.faint
        ink, faint = grid.reshape(2, height, count, p)
        columns = ink.any(axis=0)                       # (cells, columns)
        rows = ink.any(axis=2)                          # (rows, cells)
        inked = columns.any(axis=1)
        # Faint pixels away from a blank cell's edges (where an anti-aliased neighbour
        # spills in) are a glyph too dim to count as ink.
        faint_inside = faint[:, :, 1:-1].any(axis=(0, 2))
        lefts, rights = columns.argmax(axis=1), p - columns[:, ::-1].argmax(axis=1)
        tops, bottoms = rows.argmax(axis=0), height - 1 - rows[::-1].argmax(axis=0)
        for k in range(count):
            if not inked[k]:
                yield FAINT_ONLY if faint_inside[k] else None
                continue
            left, right, top, bottom = int(lefts[k]), int(rights[k]), int(tops[k]), int(bottoms[k])
            trimmed = ink[top:bottom + 1, k, left:right]
            if right - left >= 0.8 * p and bottom - top + 1 >= CURSOR_FILL * height and \
                    trimmed.mean() >= CURSOR_FILL:
                yield None             # a block cursor: the line's mask_cursor does the same
                continue
            shape = b"%d,%d:" % trimmed.shape + np.packbits(trimmed).tobytes() + \
                np.packbits(faint[top:bottom + 1, k, left:right]).tobytes()
            x = first + k * p
            yield _Cell(shape, x + left, x + right, top, bottom)


def _fitting_grids(spans: list[tuple[int, int, str]], width: int):
    """(pitch, phase) pairs under which each word's ink [a, b) lies in exactly as many
    consecutive cells as it has characters, with at least one blank cell (a space)
    between words, as in a terminal. Proportional text has spaces narrower than a
    character, so "Inbox (12)" does not fit and is not spelled "Inbox(12)" later."""
    longest = max(spans, key=lambda s: len(s[2]))
    n, ink_width = len(longest[2]), longest[1] - longest[0]
    for p in range(MIN_PITCH, MAX_PITCH + 1):
        # n cells hold the word's ink, so it is at most n*p wide and more than (n-2)*p.
        if not (ink_width <= n * p and ink_width > (n - 2) * p):
            continue
        for phase in range(p):
            last_cell = None
            for a, b, text in spans:
                first, final = (a - phase) // p, (b - 1 - phase) // p
                if final - first + 1 != len(text) or (last_cell is not None and first <= last_cell + 1):
                    break
                last_cell = final
            else:
                yield p, phase
