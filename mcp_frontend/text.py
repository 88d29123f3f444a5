"""Screen text as the tools see it: lines of words with boxes, and finding strings in them.

Pure data and functions; where the text comes from (the broker's OCR store, or the
in-process reader used by tests) is ocr.py's business. Boxes are (x0, y0, x1, y1) in
desktop pixels, x1/y1 exclusive, as the OCR engine and the broker give them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

Box = tuple[int, int, int, int]


@dataclass
class Word:
    text: str
    box: Box
    conf: float


@dataclass
class Line:
    text: str
    box: Box
    conf: float
    words: list[Word] = field(default_factory=list)


@dataclass
class Reading:
    """The text of the screen (or a region) as read from one frame."""
    lines: list[Line]
    version: int | None = None  # the mirror version it was read from, when known
    stale: bool = False         # the screen has changed since those pixels were read
    source: str = ""
    token: object = None        # the text source's position, for source.wait_update


@dataclass
class Match:
    text: str                   # the matched characters
    line: str                   # the whole line they are in
    box: Box
    whole_word: bool            # starts and ends at word boundaries

    @property
    def click(self) -> tuple[int, int]:
        return (self.box[0] + self.box[2] - 1) // 2, (self.box[1] + self.box[3] - 1) // 2


def box_union(boxes) -> Box:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def make_line(words: list[Word]) -> Line:
    """A line from its words: text joined by single spaces, confidence their mean."""
    return Line(" ".join(w.text for w in words), box_union(w.box for w in words),
                sum(w.conf for w in words) / len(words), words)


def lines_from_dicts(lines: list[dict]) -> list[Line]:
    """The broker's {"text", "box", "conf", "words": [...]} lines -> Line objects."""
    out = []
    for d in lines:
        words = [Word(w["text"], tuple(w["box"]), float(w.get("conf", 0))) for w in d.get("words") or []]
        if words:
            out.append(make_line(words))
        elif d.get("text", "").strip():
            out.append(Line(d["text"], tuple(d["box"]), float(d.get("conf", 0)), []))
    return out


def center_inside(box: Box, region: Box) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx < region[2] and region[1] <= cy < region[3]


def touches(box: Box, region: Box) -> bool:
    return box[0] < region[2] and region[0] < box[2] and box[1] < region[3] and region[1] < box[3]


def select(lines: list[Line], region: Box | None = None, min_confidence: float = 0.0) -> list[Line]:
    """The words whose centre lies in `region` with at least `min_confidence`, as lines."""
    out = []
    for line in lines:
        if not line.words:
            if line.conf >= min_confidence and (region is None or center_inside(line.box, region)):
                out.append(line)
            continue
        keep = [w for w in line.words if w.conf >= min_confidence and (region is None or center_inside(w.box, region))]
        if keep:
            out.append(line if len(keep) == len(line.words) else make_line(keep))
    return out


def lines_touching(lines: list[Line], regions: list[Box]) -> list[Line]:
    """Whole lines that overlap any of `regions`: the text a change put on the screen."""
    return [line for line in lines if any(touches(line.box, r) for r in regions)]


def plain_text(lines: list[Line]) -> str:
    """Lines in reading order; lines side by side on one row (columns) joined by wide gaps."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda l: (l.box[1], l.box[0])):
        cy = (line.box[1] + line.box[3]) / 2
        if rows and rows[-1][0].box[1] <= cy < rows[-1][0].box[3]:
            rows[-1].append(line)
        else:
            rows.append([line])
    return "\n".join("    ".join(l.text for l in sorted(row, key=lambda l: l.box[0])) for row in rows)


def compile_query(text: str, regex: bool) -> re.Pattern:
    """A pattern for find_text: a regex as given, or the text case-insensitively with any run
    of spaces matching any run of spaces. Raises ValueError with a readable reason."""
    if regex:
        try:
            return re.compile(text)
        except re.error as e:
            raise ValueError(f"invalid regular expression {text!r}: {e}") from None
    tokens = text.split()
    if not tokens:
        raise ValueError("text is empty")
    return re.compile(r"\s+".join(re.escape(t) for t in tokens), re.IGNORECASE)


def _char_x(word: Word, index: int) -> int:
    """x of the boundary before character `index` of a word, by even character widths."""
    x0, _, x1, _ = word.box
    return x0 + round((x1 - x0) * index / max(len(word.text), 1))


def find(lines: list[Line], pattern: re.Pattern) -> list[Match]:
    """Every match of `pattern` within a line, with the box of exactly the matched characters
    (whole words from their OCR boxes, parts of a word by even character widths)."""
    matches = []
    for line in lines:
        for m in pattern.finditer(line.text):
            a, b = m.span()
            if a == b:
                continue
            whole = (a == 0 or not line.text[a - 1].isalnum()) and (b == len(line.text) or not line.text[b].isalnum())
            if not line.words:
                matches.append(Match(m.group(), line.text, line.box, whole))
                continue
            pos, boxes = 0, []
            for w in line.words:
                start, end = pos, pos + len(w.text)
                pos = end + 1  # the joining space
                if start >= b or end <= a:
                    continue
                x0 = _char_x(w, max(a - start, 0))
                x1 = _char_x(w, min(b - start, len(w.text)))
                boxes.append((x0, w.box[1], max(x1, x0 + 1), w.box[3]))
            if boxes:
                matches.append(Match(m.group(), line.text, box_union(boxes), whole))
    matches.sort(key=lambda m: (m.box[1], m.box[0]))
    return matches


def pick(matches: list[Match]) -> Match | None:
    """The one match to act on without asking: the only match, or the only whole-word match
    ("OK" should not need a choice because "BOOK" is also on screen). None if ambiguous."""
    if len(matches) == 1:
        return matches[0]
    whole = [m for m in matches if m.whole_word]
    return whole[0] if len(whole) == 1 else None
