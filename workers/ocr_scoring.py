"""Scores of OCR words against known text, as ../shared/ocr-samples/README.md suggests:
word recall over the bag of words (exact tokens), and located-correct (the share of true
words with a box that an OCR word of the same text lies on: a model could click it).
Used by the tests and the benchmarks; words are (text, (x0, y0, x1, y1)) pairs."""
from __future__ import annotations

import collections
from collections.abc import Iterable


def recall(expected: Iterable[str], got: Iterable[str]) -> float:
    want, have = collections.Counter(expected), collections.Counter(got)
    return sum((want & have).values()) / max(sum(want.values()), 1)


def located_correct(truth: list[dict], words: list[tuple[str, tuple]]) -> float | None:
    """Share of true words with a box (dicts with "text" and "box") for which an OCR word
    with exactly that text has its box centre inside the true box; None if none is boxed."""
    boxed = [t for t in truth if t.get("box")]
    if not boxed:
        return None
    centres = collections.defaultdict(list)
    for text, (x0, y0, x1, y1) in words:
        centres[text].append(((x0 + x1) / 2, (y0 + y1) / 2))
    hits = 0
    for t in boxed:
        x0, y0, x1, y1 = t["box"]
        hits += any(x0 <= cx < x1 and y0 <= cy < y1 for cx, cy in centres[t["text"]])
    return hits / len(boxed)
